"""The model store: the one owner of `<model_base_path>/<model_name>/` and of models.config.

Layout (TF Serving's own, so a `tensorflow/serving` container serves it as is):

    <model_base_path>/models.config                 TF Serving ModelServerConfig (text proto)
    <model_base_path>/<model_name>/<version>/       one SavedModel per integer version
        saved_model.pb, variables/, assets.extra/
        assets.extra/tf_serving_warmup_requests     PredictionLog TFRecords (warm-up)
        lineage.json                                where this version came from
        model_card/                                 model_card.html, .md, .json (components/card/)
        drift_reference/                            summary.json + examples.csv of the accepted
                                                    validation of the data it was trained on
                                                    (components/contracts/validation.py), when push got it
    <model_base_path>/<model_name>/.petseg-store.json   which versions push published (retention
                                                        deletes only those), which one is being
                                                        published, the history of served versions
    <model_base_path>/<model_name>/.petseg-store.lock   push/rollback lock: a flock'd file (local base
                                                        paths) or an object created if absent (stores)
    <model_base_path>/<model_name>/.petseg-claims/<N>   version N claimed by a push (created if absent)

Names that are not all digits are invisible to TF Serving. Everything that
lists versions, reads or writes models.config, publishes, deletes or rolls back
goes through this module: push, rollback, evaluate's baseline lookup and the
local `petseg serve`.

How the served version changes (the label rule). TF Serving's
`ServerCore::ReloadConfig` (tensorflow_serving/model_servers/server_core.cc)
calls `UpdateModelVersionLabelMap` before it applies a new models.config; that
refuses the whole config (FAILED_PRECONDITION "Request to assign label to
version N of model M, which is not currently available for inference") when a
label names a version that is not AVAILABLE on that server. The flag
`--allow_version_labels_for_unavailable_models` (set in serving/deploy) lifts
this only for a label the server does not have yet (start-up) or one that keeps
its version. A refused config is retried on every poll
(`Server::PollFilesystemAndReloadConfig`, server.cc) and nothing of it applies
meanwhile. Changing the `specific` version policy alone is always accepted, and
the aspired-versions manager's AvailabilityPreservingPolicy
(core/availability_preserving_policy.cc) unloads an old version only once a new
aspired one is ready. So the store moves the served version like this:

- no label (`push.version_label: ""`): one write, `specific {versions: [new]}`;
  the old version answers until the new one is AVAILABLE.
- with a label: (1) `specific [old, new]`, the label stays on old; (2) wait until
  every `push.serving_target` reports the new version AVAILABLE
  (ModelService.GetModelStatus); (3) `specific [new]`, label on new. A
  models.config that names no model yet gets `specific [new]` and the label at
  once (a new label, accepted by a starting server with the flag above).

Several machines (docs/model-store.md). A push claims its version number by
creating `.petseg-claims/<N>` only if it does not exist (S3 `If-None-Match: *`,
GCS `ifGenerationMatch=0`, O_EXCL locally: storage.create_exclusive), so two
pushes never write one version, whatever else happens. The record, the history
and models.config are read-modify-written under the store's lock: a flock for
local base paths; on object stores a lock object created the same way, deleted
when the holder is done (a holder killed before it could delete it is named in
the refusal, with the object to delete).

Rollback history. The record keeps `history`, the versions served in order
(push and rollback append; a plain rollback removes the entry it leaves). A
plain `rollback` returns to the entry before the current one that is still
kept: the version served before the current one, not the newest older number.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from petseg.components.contracts.layout import MODEL_CARD_DIR
from petseg.components.core.errors import PetsegError, first_line
from petseg.components.core.params import PushParams
from petseg.components.store import storage
from petseg.components.store.storage import is_uri, join

MODELS_CONFIG_FILE = "models.config"
SAVED_MODEL_FILE = "saved_model.pb"
LINEAGE_FILE = "lineage.json"
DRIFT_REFERENCE_DIR = "drift_reference"
RECORD_FILE = ".petseg-store.json"
LOCK_FILE = ".petseg-store.lock"
CLAIMS_DIR = ".petseg-claims"
MAX_CLAIM_TRIES = 20
LOCK_POLL_SECONDS = 0.5
STAGING_PREFIX = ".staging-"
DELETING_PREFIX = ".deleting-"

# ModelVersionStatus.State (tensorflow_serving/apis/get_model_status.proto)
STATE_AVAILABLE, STATE_END = 30, 50


class StoreBusyError(PetsegError):
    """Another push or rollback holds the model store's lock (not a fault of the model)."""


# ------------------------------------------------------------- models.config
@dataclass(frozen=True)
class ServingConfig:
    """This model's entry in models.config: the `specific` versions to load and the version labels."""

    versions: tuple[int, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)


def read_model_server_config(path: str):
    """The ModelServerConfig in the file at `path`, None when there is none; PetsegError when unreadable."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    if not storage.exists(path):
        return None
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(storage.read_text(path), config)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise PetsegError(
            f"{path}: not a TF Serving ModelServerConfig text proto ({first_line(exc)}); "
            "fix it or delete it and push again"
        ) from None
    return config


# --------------------------------------------------------- TF Serving's label rule
def label_refusal(
    model_name: str,
    labels: dict[str, int],
    previous_labels: dict[str, int],
    available: set[int],
    allow_unavailable: bool,
) -> str | None:
    """Why a server would refuse these version labels, or None when it accepts them.

    The decision of `ServerCore::UpdateModelVersionLabelMap` (server_core.cc):
    each label must name an AVAILABLE version, unless
    `--allow_version_labels_for_unavailable_models` is on and the label is new
    or keeps its version. The local server applies it to every models.config.
    """
    for label, version in sorted(labels.items()):
        keeps = previous_labels.get(label, version) == version
        if version in available or (allow_unavailable and keeps):
            continue
        return (
            f"Request to assign label to version {version} of model {model_name}, "
            "which is not currently available for inference"
        )
    return None


def version_state(target: str, model_name: str, version: int, timeout: float = 5.0) -> tuple[int, str]:
    """(state, error message) of one version on a model server, from ModelService.GetModelStatus."""
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model_name
    request.model_spec.version.value = version
    with grpc.insecure_channel(target) as channel:
        response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=timeout)
    for status in response.model_version_status:
        if status.version == version:
            return status.state, status.status.error_message
    return 0, ""


@dataclass(frozen=True)
class VersionInfo:
    version: int
    path: str
    served: bool
    lineage: dict | None
    rollback_target: bool = False  # a plain `petseg rollback` would serve this version


@dataclass(frozen=True)
class RollbackResult:
    previous: int | None
    served: int
    config_file: str


# --------------------------------------------------------------------- the store
@dataclass(frozen=True)
class ModelStore:
    """One model's store: `<base_path>/<model_name>/`, models.config beside it, and the settings that govern them.

    Built once from the push section (`ModelStore.from_params`); every
    operation on the store is a method, so no caller hands the whole push
    section around. The fields are push.* under shorter names.
    """

    base_path: str
    model_name: str = "petseg"
    keep_versions: int = 3
    version_label: str = ""
    server_model_base_path: str = ""
    serving_targets: tuple[str, ...] = ()
    promote_timeout_seconds: float = 300.0
    lock_timeout_seconds: float = 600.0

    @classmethod
    def from_params(cls, params: PushParams) -> ModelStore:
        """The store push.* describes (the settings are checked by PushParams.check at load)."""
        return cls(
            base_path=str(params.model_base_path),
            model_name=params.model_name,
            keep_versions=params.keep_versions,
            version_label=params.version_label,
            server_model_base_path=params.server_model_base_path,
            serving_targets=tuple(t.strip() for t in params.serving_target.split(",") if t.strip()),
            promote_timeout_seconds=params.promote_timeout_seconds,
            lock_timeout_seconds=params.lock_timeout_seconds,
        )

    # ---------------------------------------------------------------- paths
    @property
    def root(self) -> str:
        """`<base_path>/<model_name>`: the folder holding the model's version folders."""
        return join(self.base_path, self.model_name)

    @property
    def config_path(self) -> str:
        """`<base_path>/models.config`."""
        return join(self.base_path, MODELS_CONFIG_FILE)

    @property
    def record_path(self) -> str:
        return join(self.root, RECORD_FILE)

    def version_path(self, version: int) -> str:
        return join(self.root, str(version))

    def server_root(self) -> str:
        """The model's base path as the model server sees it, written into models.config."""
        if self.server_model_base_path:
            return join(self.server_model_base_path, self.model_name)
        return self.root if is_uri(self.root) else str(Path(self.root).resolve())

    # ------------------------------------------------------------- versions
    def version_numbers(self) -> list[int]:
        """The versions that count, ascending: complete all-digit folders not being published right now."""
        return sorted(self._complete_versions() - set(self.read_record()["publishing"]))

    def _complete_versions(self) -> set[int]:
        root = self.root
        if not storage.isdir(root):
            return set()
        return {
            int(name)
            for name in storage.listdir(root)
            if name.isdigit() and int(name) > 0 and storage.exists(join(root, name, SAVED_MODEL_FILE))
        }

    def available_versions(self) -> dict[int, str]:
        """{version: path} of the versions that count (see version_numbers)."""
        return {v: self.version_path(v) for v in self.version_numbers()}

    # -------------------------------------------------------- models.config
    def read_serving_config(self) -> ServingConfig | None:
        """This model's entry of models.config, None when the file or the entry is missing."""
        config = read_model_server_config(self.config_path)
        if config is None:
            return None
        for entry in config.model_config_list.config:
            if entry.name == self.model_name:
                return ServingConfig(
                    tuple(sorted(entry.model_version_policy.specific.versions)), dict(entry.version_labels)
                )
        return None

    def write_serving_config(self, versions: tuple[int, ...] | list[int], labels: dict[str, int]) -> None:
        """Rewrite this model's entry (specific versions + labels), keep the other models' entries.

        Written to a temporary file and renamed over the old one, so a polling
        server reads the old config or the new one, never half.
        """
        from google.protobuf import text_format
        from tensorflow_serving.config import model_server_config_pb2

        config = read_model_server_config(self.config_path) or model_server_config_pb2.ModelServerConfig()
        entries = config.model_config_list.config
        entry = next((e for e in entries if e.name == self.model_name), None) or entries.add(name=self.model_name)
        entry.base_path = self.server_root()
        entry.model_platform = "tensorflow"
        entry.model_version_policy.Clear()
        entry.model_version_policy.specific.versions.extend(sorted(set(versions)))
        entry.version_labels.clear()
        entry.version_labels.update(labels)
        storage.write_text_atomically(self.config_path, text_format.MessageToString(config))

    def served_version(self) -> int | None:
        """The version the store serves; None when nothing is pushed.

        The labelled version when version_label is in models.config, else the
        newest `specific` version on disk, else (no models.config) the newest
        version, TF Serving's default `latest` policy.
        """
        versions = self.version_numbers()
        config = self.read_serving_config()
        if config is not None:
            labelled = config.labels.get(self.version_label) if self.version_label else None
            if labelled in versions:
                return labelled
            named = [v for v in config.versions if v in versions]
            if named:
                return named[-1]
        return versions[-1] if versions else None

    def version_policy(self) -> VersionPolicy:
        """The version policy models.config gives this model; serve-the-latest when there is none.

        Raises PetsegError when models.config exists but is not a valid
        ModelServerConfig text proto (TF Serving refuses to start on one too).
        Only the version policy and labels are read: the local server always
        finds versions under `<base_path>/<model_name>`, whatever base_path
        the file gives for the production server's file system.
        """
        config = read_model_server_config(self.config_path)
        if config is None:
            return VersionPolicy()
        for entry in config.model_config_list.config:
            if entry.name == self.model_name:
                return _policy_of(entry)
        return VersionPolicy()

    # ------------------------------------------------------ moving the label
    def wait_until_available(self, version: int, log: Callable[[str], None] = print) -> None:
        """Return once every serving target reports `version` AVAILABLE; PetsegError on failure or timeout."""
        import grpc

        deadline = time.monotonic() + self.promote_timeout_seconds
        for target in self.serving_targets:
            last = "no answer yet"
            while True:
                try:
                    state, error = version_state(target, self.model_name, version)
                except grpc.RpcError as exc:
                    state, error, last = 0, "", f"{exc.code().name}: {exc.details()}"
                if state == STATE_AVAILABLE:
                    log(f"store: {target} serves {self.model_name} version {version}")
                    break
                if state == STATE_END and error:
                    raise PetsegError(f"{target} failed to load version {version}: {error}")
                if state:
                    last = f"state {state}"
                if time.monotonic() > deadline:
                    raise PetsegError(
                        f"{target} did not report version {version} AVAILABLE within "
                        f"{self.promote_timeout_seconds:g}s (push.promote_timeout_seconds; {last})"
                    )
                time.sleep(0.2)

    def serve_version(
        self, version: int, log: Callable[[str], None] = print, *, recorded_as: str | None = "push"
    ) -> None:
        """Point models.config at `version` in the steps TF Serving accepts (see the module docstring).

        On a failed wait the previous models.config is written back and PetsegError raised.
        Once served, `version` is appended to the record's history as served by
        `recorded_as` (None: the caller writes the history itself).
        """
        self._point_config_at(version, log)
        if recorded_as is not None:
            record = self.read_record()
            self._write_record({**record, "history": _appended(record["history"], version, recorded_as)})

    def _point_config_at(self, version: int, log: Callable[[str], None]) -> None:
        current = self.read_serving_config()
        label = self.version_label
        if not label:
            self.write_serving_config((version,), {})
            return
        labelled = current.labels.get(label) if current else None
        if current is None or labelled is None or labelled == version:
            self.write_serving_config((version,), {label: version})
            return
        if not self.serving_targets:
            raise PetsegError(
                f"moving label '{label}' from version {labelled} to {version} needs "
                "push.serving_target (TF Serving refuses a label on a version it has not loaded)"
            )
        self.write_serving_config((labelled, version), {label: labelled})
        log(f"store: models.config loads version {version} beside {labelled}; waiting for it to be AVAILABLE")
        try:
            self.wait_until_available(version, log)
        except BaseException as exc:
            self.write_serving_config(current.versions, current.labels)
            if isinstance(exc, PetsegError):
                raise PetsegError(f"{exc}; models.config serves version {labelled} again") from None
            raise
        self.write_serving_config((version,), {label: version})

    # --------------------------------------------------------------- record
    def read_record(self) -> dict:
        """{"published": {version: {...}}, "publishing": [versions], "rolled_back_to": version | None,
        "history": [{"version": v, "at": iso time, "by": "push" | "rollback"}, ...] (oldest first)}."""
        path = self.record_path
        record: dict[str, Any] = {"published": {}, "publishing": [], "rolled_back_to": None, "history": []}
        if storage.exists(path):
            try:
                loaded = json.loads(storage.read_text(path))
            except ValueError as exc:
                raise PetsegError(
                    f"{path}: unreadable store record ({first_line(exc)}); restore it or delete it "
                    "(retention then deletes nothing it cannot prove push wrote)"
                ) from None
            record.update(loaded)
        record["published"] = {int(k): v for k, v in record["published"].items()}
        return record

    def _write_record(self, record: dict) -> None:
        data = {**record, "published": {str(k): v for k, v in sorted(record["published"].items())}}
        storage.write_text_atomically(self.record_path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    # ----------------------------------------------------------------- lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the model's push/rollback lock; StoreBusyError after lock_timeout_seconds.

        Local base paths: a flock on `<root>/.petseg-store.lock`; the kernel
        drops it when the holder dies, so a killed push never leaves it stuck.
        Object stores (s3://, gs://): the lock object `<root>/.petseg-store.lock`,
        created only if absent, so one holder across every machine; deleted on
        exit. In-process stores (memory://, ram://) use a flock named after the URI.
        """
        if storage.scheme(self.root) in storage.REMOTE_SCHEMES:
            with self._object_lock():
                yield
        else:
            with self._file_lock():
                yield

    def _busy(self, holder: str, extra: str = "") -> StoreBusyError:
        return StoreBusyError(
            f"{self.root} is locked by another push or rollback ({holder}); waited "
            f"{self.lock_timeout_seconds:g}s (push.lock_timeout_seconds); try again when it has finished{extra}"
        )

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        root = self.root
        if is_uri(root):
            folder = Path(tempfile.gettempdir()) / "petseg-locks"
            path = folder / (hashlib.sha256(root.encode()).hexdigest()[:16] + ".lock")
        else:
            folder = Path(root)
            path = folder / LOCK_FILE
        folder.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_seconds
        with open(path, "a+") as fh:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        fh.seek(0)
                        raise self._busy(fh.read().strip() or "another process") from None
                    time.sleep(0.1)
            fh.seek(0)
            fh.truncate()
            fh.write(_holder())
            fh.flush()
            try:
                yield
            finally:
                fh.seek(0)
                fh.truncate()
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _object_lock(self) -> Iterator[None]:
        path = join(self.root, LOCK_FILE)
        token = uuid.uuid4().hex
        body = json.dumps({"holder": _holder(), "token": token}).encode()
        deadline = time.monotonic() + self.lock_timeout_seconds
        while True:
            try:
                storage.create_exclusive(path, body)
                break
            except storage.AlreadyExistsError:
                if time.monotonic() >= deadline:
                    holder = _lock_holder(path)
                    raise self._busy(
                        holder, f"; if no push or rollback is running (one was killed), delete {path}"
                    ) from None
                time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # the error being raised matters more than a lock left behind
                if _lock_token(path) == token:
                    storage.remove_file(path)

    # -------------------------------------------------------------- publish
    def next_version(self) -> int:
        """One more than any version folder, claim or record entry (numbers are never reused)."""
        root = self.root
        names = storage.listdir(root) if storage.isdir(root) else []
        claims = join(root, CLAIMS_DIR)
        claimed = storage.listdir(claims) if CLAIMS_DIR in names else []
        taken = {int(n) for n in [*names, *claimed] if n.isdigit()} | set(self.read_record()["published"])
        return max(taken, default=0) + 1

    def claim_version(self) -> int:
        """A version number no other push has or will get: `.petseg-claims/<N>` created only if absent.

        Starts at next_version and moves up past numbers another push claimed
        meanwhile; StoreBusyError after MAX_CLAIM_TRIES numbers were all taken.
        """
        version = self.next_version()
        for _ in range(MAX_CLAIM_TRIES):
            claim = join(self.root, CLAIMS_DIR, str(version))
            try:
                storage.create_exclusive(claim, json.dumps({"holder": _holder()}).encode())
                return version
            except storage.AlreadyExistsError:
                version = max(version + 1, self.next_version())
        raise StoreBusyError(
            f"{self.root}: {MAX_CLAIM_TRIES} version numbers up to {version} were claimed by other pushes "
            "while this one tried; try again when they have finished"
        )

    def staging_path(self, version: int, folder: str | None = None) -> str:
        """A fresh staging folder name for `version`: hidden from TF Serving (not all digits), in `folder`
        (default: the model's own folder, so publishing is a rename)."""
        return join(folder or self.root, f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")

    def remove_leftovers(self) -> None:
        """Undo what a killed push left: staging/deleting folders, and versions it was still publishing.

        Call under lock(). A version still marked publishing was never named
        by models.config (push writes it only after the record says published),
        so it was never served; it is removed, as push created it.
        """
        root = self.root
        if not storage.isdir(root):
            return
        for name in storage.listdir(root):
            if name.startswith((STAGING_PREFIX, DELETING_PREFIX)):
                storage.remove_tree(join(root, name))
        record = self.read_record()
        if record["publishing"]:
            for version in record["publishing"]:
                self._delete_version(version)
            self._write_record({**record, "publishing": []})

    def publish(self, staging: str, version: int, facts: dict) -> str:
        """Give a staged, validated version its number, recorded as published by push; return its path.

        The record marks the version `publishing` first: killed before the record
        says `published`, it is not listed as a version and the next push removes it.
        """
        final = self.version_path(version)
        if storage.exists(final):
            raise PetsegError(f"{final} already exists; another writer is using {self.root}")
        record = self.read_record()
        self._write_record({**record, "publishing": sorted({*record["publishing"], version})})
        try:
            _publish_directory(staging, final)
        except BaseException:
            if not storage.supports_rename(final):  # an object-store copy broken off: ours to remove
                storage.remove_tree(final)
            storage.remove_tree(staging)
            self._write_record(record)
            raise
        record["published"][version] = facts
        self._write_record({**record, "publishing": [v for v in record["publishing"] if v != version]})
        return final

    # ------------------------------------------------------------ retention
    def apply_retention(self) -> list[int]:
        """Delete the published versions beyond the newest keep_versions; return the deleted ones.

        Only versions in the record (push created them) are candidates; never the
        served one, any version models.config names, or the last rollback target.
        """
        keep = self.keep_versions
        record = self.read_record()
        on_disk = set(self.version_numbers())
        ours = sorted(v for v in record["published"] if v in on_disk)
        config = self.read_serving_config()
        protected = {self.served_version(), record["rolled_back_to"]}
        if config is not None:
            protected |= set(config.versions) | set(config.labels.values())
        doomed = [v for v in ours[:-keep] if v not in protected] if keep < len(ours) else []
        for version in doomed:
            self._delete_version(version)
            storage.remove_file(join(self.root, CLAIMS_DIR, str(version)))
            record["published"].pop(version, None)
        if doomed:
            self._write_record(record)
        return doomed

    def _delete_version(self, version: int) -> None:
        """Remove a version folder; locally renamed to `.deleting-*` first so no server sees it half-deleted."""
        path = self.version_path(version)
        if not storage.exists(path):
            return
        if not storage.supports_rename(path):
            storage.remove_tree(path)
            return
        hidden = join(self.root, f"{DELETING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
        storage.rename_dir(path, hidden)
        storage.remove_tree(hidden)

    # -------------------------------------------------------------- lineage
    def read_lineage(self, version: int) -> dict | None:
        """The lineage record pushed beside a version, or None when it has none (or it is unreadable)."""
        path = join(self.version_path(version), LINEAGE_FILE)
        if not storage.exists(path):
            return None
        try:
            return json.loads(storage.read_text(path))
        except ValueError:
            return None

    def drift_reference_path(self, version: int) -> str:
        """Where push keeps the validation report of a version's training data (its drift reference)."""
        return join(self.version_path(version), DRIFT_REFERENCE_DIR)

    def served_drift_reference(self) -> tuple[int | None, str | None]:
        """(the served version, its drift reference folder); the folder is None when that version has none.

        (None, None) when nothing is served. A version has none when push was not
        given the validation report (or it was pushed by a petseg before this).
        """
        served = self.served_version()
        if served is None:
            return None, None
        folder = self.drift_reference_path(served)
        return served, folder if storage.isdir(folder) else None

    def list_versions(self) -> list[VersionInfo]:
        """The kept versions, newest first: which one is served, which one a plain rollback serves, lineage."""
        served = self.served_version()
        versions = self.version_numbers()
        target = _history_rollback(self.read_record()["history"], served, set(versions))[0]
        return [
            VersionInfo(v, self.version_path(v), v == served, self.read_lineage(v), rollback_target=v == target)
            for v in reversed(versions)
        ]

    # ------------------------------------------------------------- rollback
    def rollback(
        self,
        to_version: int | None = None,
        log: Callable[[str], None] = print,
        *,
        infra_check: Callable[[str, str], object],
    ) -> RollbackResult:
        """Serve `to_version` (default: the newest version older than the served one) after infra-validating it.

        `infra_check(version_dir, model_name)` (warmup.validate_served_copy) raises
        PetsegError when the target does not load and answer its warm-up requests
        through the contract's signatures; models.config is then left as it was.
        It is passed in rather than imported so that reading the store (validate's
        drift reference) does not depend on the serving contract and TensorFlow.
        """
        with self.lock():
            versions = self.version_numbers()
            root = self.root
            if not versions:
                raise PetsegError(f"no versions under {root}; nothing to roll back (run `petseg push` first)")
            current = self.served_version()
            kept = ", ".join(map(str, versions))
            record = self.read_record()
            history = record["history"]
            if to_version is None:
                to_version, history = _history_rollback(history, current, set(versions))
                if to_version is None:
                    raise PetsegError(
                        f"version {current} is the first served version still kept under {root} (kept: {kept}); "
                        "nothing served before it to roll back to (pick one with --to)"
                    )
            elif to_version not in versions:
                raise PetsegError(
                    f"version {to_version} is not under {root} (kept: {kept}); see `petseg rollback --list`"
                )
            else:
                history = _appended(history, to_version, "rollback")
            try:
                infra_check(self.version_path(to_version), self.model_name)
            except PetsegError as exc:
                raise PetsegError(
                    f"rollback to version {to_version} refused: {exc}; models.config unchanged "
                    f"(version {current} is still served)"
                ) from None
            self.serve_version(to_version, log, recorded_as=None)
            self._write_record({**self.read_record(), "rolled_back_to": to_version, "history": history})
        return RollbackResult(previous=current, served=to_version, config_file=self.config_path)


HISTORY_LIMIT = 200  # history entries kept in the record (the oldest are dropped)


def _appended(history: list[dict], version: int, by: str) -> list[dict]:
    """`history` with `version` served now by `by` ("push" or "rollback") at its end."""
    entry = {"version": version, "at": datetime.now(UTC).isoformat(timespec="seconds"), "by": by}
    return [*history, entry][-HISTORY_LIMIT:]


def _history_rollback(history: list[dict], current: int | None, kept: set[int]) -> tuple[int | None, list[dict]]:
    """(the version a plain rollback serves, the history after it) for `current` served and `kept` versions.

    The entries of the current version at the end are dropped, then those of
    versions no longer kept; the last entry left is the version served before
    the current one. A store with no usable history (written before petseg
    kept one) falls back to the newest kept version older than the current one.
    """
    left = list(history)
    while left and left[-1].get("version") == current:
        left.pop()
    while left and left[-1].get("version") not in kept:
        left.pop()
    if left:
        return int(left[-1]["version"]), left
    older = [v for v in sorted(kept) if current is not None and v < current]
    if history or not older:
        return None, left
    return older[-1], [{"version": older[-1], "at": datetime.now(UTC).isoformat(timespec="seconds"), "by": "rollback"}]


def _holder() -> str:
    """Who holds a lock or a claim: host, process and since when."""
    return f"host {socket.gethostname()} pid {os.getpid()} since {datetime.now(UTC).isoformat(timespec='seconds')}"


def _lock_holder(path: str) -> str:
    try:
        return str(json.loads(storage.read_text(path)).get("holder") or "another process")
    except (OSError, ValueError, PetsegError):
        return "another process"


def _lock_token(path: str) -> str | None:
    try:
        return json.loads(storage.read_text(path)).get("token")
    except (OSError, ValueError):
        return None


def _publish_directory(staging: str, final: str) -> None:
    """Locally one rename (atomic); object stores copy file by file, saved_model.pb last."""
    if storage.supports_rename(final):
        storage.rename_dir(staging, final)
        return
    storage.copy_tree(staging, final, last=SAVED_MODEL_FILE)
    storage.remove_tree(staging)


def write_model_card(version_dir: str, files: dict[str, bytes]) -> str:
    """Write the model card's files into `<version_dir>/model_card/` (local or a store); that folder.

    Push calls it on the staged copy, so the card is published with the version.
    """
    folder = join(version_dir, MODEL_CARD_DIR)
    storage.makedirs(folder)
    for name, data in files.items():
        storage.write_bytes_atomically(join(folder, name), data)
    return folder


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
        raise PetsegError(
            f"{path}: no saved_model.pb, not a SavedModel; pass the {what} folder that `petseg train` exported"
        )
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
        return sorted(available)[-self.num_latest :]


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
