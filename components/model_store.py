"""The TF Serving model base path: versions, the served version, models.config, lineage.

Layout (TF Serving's own, so a `tensorflow/serving` container serves it as is):

    <model_base_path>/models.config                 TF Serving ModelServerConfig (text proto)
    <model_base_path>/<model_name>/<version>/       one SavedModel per integer version
        saved_model.pb, variables/, assets.extra/
        assets.extra/tf_serving_warmup_requests     PredictionLog TFRecords (warm-up)
        lineage.json                                where this version came from

Which version is served is what models.config says: the model's entry has a
`specific` version policy naming exactly one version and the label `stable`
pointing at it. push sets it to the version it just wrote; rollback sets it to
an earlier one. A server started with `--model_config_file=<base>/models.config
--model_config_file_poll_wait_seconds=N` (and the local dev server) follows it.
Without a models.config the newest version is the served one, which is TF
Serving's default `latest` policy.

lineage.json: model_name, version, pushed_at (UTC ISO), source_model,
model_fingerprint, git_commit (null outside git), git_dirty, data_manifest_sha256,
params (all of params.yaml), metrics ({mean_iou, pixel_accuracy, iou}), blessing
({blessed, reason, checks, baseline, thresholds}), data, infra_validation
({requests, load_seconds, total_seconds}); KFP runs may add their own keys.

Directories whose name is not all digits (`.staging-*`, `.deleting-*`) are
invisible to TF Serving; push writes and deletes through them so a polling
server never sees half a model. The base path may be local or any URI
tf.io.gfile understands (gs://, s3:// with the plugin); object stores cannot
rename a folder, so there a new version is copied into place object by object
and is served only once models.config (one object write) names it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from petseg.components import storage
from petseg.components.errors import PetsegError
from petseg.components.params import PushParams
from petseg.components.storage import is_uri, join

MODELS_CONFIG_FILE = "models.config"
SAVED_MODEL_FILE = "saved_model.pb"
LINEAGE_FILE = "lineage.json"
STABLE_LABEL = "stable"
STAGING_PREFIX = ".staging-"
DELETING_PREFIX = ".deleting-"


def model_root(params: PushParams) -> str:
    """`<model_base_path>/<model_name>`: the folder holding the model's version folders."""
    return join(params.model_base_path, params.model_name)


def version_path(params: PushParams, version: int) -> str:
    return join(model_root(params), str(version))


def config_path(params: PushParams) -> str:
    return join(params.model_base_path, MODELS_CONFIG_FILE)


def server_base_path(params: PushParams) -> str:
    """The model's base path as the model server sees it, written into models.config."""
    if params.server_model_base_path:
        return join(params.server_model_base_path, params.model_name)
    root = model_root(params)
    return root if is_uri(root) else str(Path(root).resolve())


def list_version_numbers(params: PushParams) -> list[int]:
    """The complete versions on disk, ascending (all-digit folder names, as TF Serving sees them)."""
    root = model_root(params)
    if not storage.isdir(root):
        return []
    versions = []
    for name in storage.listdir(root):
        if name.isdigit() and int(name) > 0 and storage.isdir(join(root, name)):
            versions.append(int(name))
    return sorted(versions)


# ------------------------------------------------------------------ models.config
def read_model_config(params: PushParams):
    """The ModelServerConfig proto in `<base>/models.config`, or None when there is none."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = config_path(params)
    if not storage.exists(path):
        return None
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(storage.read_text(path), config)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise PetsegError(f"{path}: not a TF Serving model config ({exc}); fix or delete it") from None
    return config


def configured_version(params: PushParams) -> int | None:
    """The version models.config serves for this model (its `stable` label, else its one specific version)."""
    config = read_model_config(params)
    if config is None:
        return None
    for entry in config.model_config_list.config:
        if entry.name != params.model_name:
            continue
        if STABLE_LABEL in entry.version_labels:
            return int(entry.version_labels[STABLE_LABEL])
        specific = list(entry.model_version_policy.specific.versions)
        if specific:
            return int(max(specific))
    return None


def served_version(params: PushParams) -> int | None:
    """The version a server following models.config serves now; None when nothing is pushed.

    The configured version if it is still on disk, else the newest on disk
    (TF Serving's default policy).
    """
    versions = list_version_numbers(params)
    configured = configured_version(params)
    if configured in versions:
        return configured
    return versions[-1] if versions else None


def write_served_version(params: PushParams, version: int) -> None:
    """Make `version` the served one: update this model's entry in models.config, keep the others.

    Written to a temporary file and renamed over the old one, so a server
    polling the config never reads half of it.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = read_model_config(params) or model_server_config_pb2.ModelServerConfig()
    entries = config.model_config_list.config
    entry = next((e for e in entries if e.name == params.model_name), None)
    if entry is None:
        entry = entries.add(name=params.model_name)
    entry.base_path = server_base_path(params)
    entry.model_platform = "tensorflow"
    entry.model_version_policy.Clear()
    entry.model_version_policy.specific.versions.append(version)
    entry.version_labels.clear()
    entry.version_labels[STABLE_LABEL] = version
    storage.write_text_atomically(config_path(params), text_format.MessageToString(config))


# ------------------------------------------------------------------------ lineage
def read_lineage(params: PushParams, version: int) -> dict | None:
    """The lineage record pushed beside a version, or None when it has none (or it is unreadable)."""
    path = join(version_path(params, version), LINEAGE_FILE)
    if not storage.exists(path):
        return None
    try:
        return json.loads(storage.read_text(path))
    except ValueError:
        return None


# --------------------------------------------------------------------- the model
def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over every file's relative path and content: which exact SavedModel was evaluated."""
    root = str(model_dir).rstrip("/")
    h = hashlib.sha256()
    for rel in storage.walk_files(root):
        h.update(rel.encode() + b"\0")
        with storage.open_file(join(root, rel), "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def require_savedmodel(model_dir: str | Path, what: str = "model") -> str:
    """The path as a string, or PetsegError when it is not a SavedModel folder."""
    path = str(model_dir)
    if not storage.exists(join(path, SAVED_MODEL_FILE)):
        raise PetsegError(f"{path}: no saved_model.pb, not a SavedModel; "
                          f"pass the {what} folder that `petseg train` exported")
    return path


# ------------------------------------------------- what a server follows (local)
@dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's ServableVersionPolicy: serve the latest N versions, all, or specific ones."""

    kind: str = "latest"  # latest | all | specific
    num_latest: int = 1
    specific: tuple[int, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)

    def choose(self, available: list[int]) -> list[int]:
        """The versions to serve out of `available` (sorted ascending), newest last."""
        if self.kind == "all":
            return sorted(available)
        if self.kind == "specific":
            return sorted(v for v in available if v in self.specific)
        return sorted(available)[-self.num_latest:]


def available_versions(model_base_path: str | Path, model_name: str) -> dict[int, Path]:
    """Complete version folders of the model: {version: path}, empty when there are none yet."""
    root = Path(model_base_path) / model_name
    if not root.is_dir():
        return {}
    found = {}
    for child in root.iterdir():
        if child.name.isdigit() and (child / SAVED_MODEL_FILE).is_file():
            found[int(child.name)] = child
    return found


def read_version_policy(model_base_path: str | Path, model_name: str) -> VersionPolicy:
    """The version policy models.config gives `model_name`; serve-the-latest when there is none.

    Raises PetsegError when models.config exists but is not a valid
    ModelServerConfig text proto (TF Serving refuses to start on one too).
    Only the version policy and labels are read: the local server always
    finds versions under `<model_base_path>/<model_name>`, whatever base_path
    the file gives for the production server's file system.
    """
    path = Path(model_base_path) / MODELS_CONFIG_FILE
    if not path.is_file():
        return VersionPolicy()
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    try:
        config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise PetsegError(f"{path}: not a valid ModelServerConfig text proto ({exc}); "
                          "fix it or let `petseg push` rewrite it") from None
    for entry in config.model_config_list.config:
        if entry.name == model_name:
            return _policy_of(entry)
    return VersionPolicy()


def _policy_of(entry) -> VersionPolicy:
    policy = entry.model_version_policy
    labels = dict(entry.version_labels)
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy(kind="all", labels=labels)
    if choice == "specific":
        return VersionPolicy(kind="specific", specific=tuple(policy.specific.versions), labels=labels)
    num = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions > 0 else 1
    return VersionPolicy(kind="latest", num_latest=num, labels=labels)
