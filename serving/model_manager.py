"""Keeps the right versions of one model loaded while the server runs.

A background thread polls the model base path (as TF Serving's file-system
source does): a newly pushed version is loaded, warmed up and made
available before the versions it replaces are unloaded, so there is always
a version to answer with. Requests take a reference to the version they run
on; unloading only drops the manager's reference, so a request in flight
finishes on the version it started with.

models.config is applied by TF Serving's rules, so what passes here passes in
production: a config whose version labels TF Serving would refuse
(model_store.label_refusal, after server_core.cc UpdateModelVersionLabelMap,
with --allow_version_labels_for_unavailable_models as serving/deploy sets it)
is refused whole, logged, and retried on the next poll while the previous
config stays in force; a label therefore only ever names a loaded version.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from petseg.components.core.errors import first_line
from petseg.components.store import model_store
from petseg.components.store.warmup import WARMUP_FILE, answer_request, read_warmup_file
from petseg.serving.errors import ServingError

INIT_OP_SIGNATURE = "__saved_model_init_op"

# The deploy files start TF Serving with --allow_version_labels_for_unavailable_models=true
# (tests/test_deploy.py checks it): a new label may name a version still loading, a moved one may not.
ALLOW_VERSION_LABELS_FOR_UNAVAILABLE_MODELS = True

# ModelVersionStatus.State values (tensorflow_serving/apis/get_model_status.proto).
LOADING, AVAILABLE, UNLOADING, END = 20, 30, 40, 50


@dataclass
class LoadedVersion:
    """One loaded SavedModel version: its callable signatures and their declared tensors."""

    version: int
    path: Path
    signatures: dict[str, Any]  # name -> ConcreteFunction
    input_specs: dict[str, dict]  # name -> {input key: tf.TensorSpec}
    output_keys: dict[str, list[str]]  # name -> output keys
    signature_defs: Any  # tensorflow_serving GetModelMetadata SignatureDefMap
    saved_model: Any = field(repr=False)  # keeps the loaded object (and its variables) alive


@dataclass
class VersionState:
    state: int
    error: str = ""


def load_version(version: int, path: Path) -> LoadedVersion:
    """Load the SavedModel at `path` and replay its warm-up requests, if push wrote any."""
    import tensorflow as tf

    saved_model = tf.saved_model.load(str(path))
    signatures = dict(saved_model.signatures)
    loaded = LoadedVersion(
        version=version,
        path=path,
        signatures=signatures,
        input_specs={name: dict(fn.structured_input_signature[1]) for name, fn in signatures.items()},
        output_keys={name: sorted(fn.structured_outputs) for name, fn in signatures.items()},
        signature_defs=read_signature_defs(path),
        saved_model=saved_model,
    )
    warm_up(loaded)
    return loaded


def read_signature_defs(path: Path):
    """The SignatureDefMap GetModelMetadata returns: the SavedModel's signatures, as TF Serving reports them."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / model_store.SAVED_MODEL_FILE).read_bytes())
    result = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in saved.meta_graphs[0].signature_def.items():
        if name != INIT_OP_SIGNATURE:
            result.signature_def[name].CopyFrom(signature_def)
    return result


def warm_up(loaded: LoadedVersion) -> int:
    """Run the PredictionLog requests in assets.extra (TF Serving's warm-up format); return how many ran.

    The first call of a signature traces and allocates; doing it here keeps
    that cost off the first user request. A failing warm-up fails the load.
    """
    records = loaded.path / WARMUP_FILE
    if not records.is_file():
        return 0
    count = 0
    for log in read_warmup_file(str(records)):
        if log.WhichOneof("log_type") == "predict_log":
            answer_request(loaded.signatures, log.predict_log.request)
            count += 1
    return count


class ModelManager:
    """The loaded versions of `model_name` under `model_base_path`, kept in step with the disk."""

    def __init__(
        self,
        model_base_path: str | Path,
        model_name: str,
        poll_seconds: float,
        log: Callable[[str], None] = print,
        loader: Callable[[int, Path], LoadedVersion] = load_version,
    ):
        self.model_base_path = Path(model_base_path)
        self.model_name = model_name
        self._store = model_store.ModelStore(str(self.model_base_path), model_name)
        self.poll_seconds = poll_seconds
        self._log = log
        self._load = loader
        self._lock = threading.Lock()
        self._loaded: dict[int, LoadedVersion] = {}
        self._states: dict[int, VersionState] = {}
        self._failed: dict[int, float] = {}  # version -> mtime of the folder that failed to load
        self._policy = self._store.version_policy()
        self._refusal: str | None = None  # why the current models.config is refused (logged once)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lookups
    def resolve(
        self, version: int | None = None, label: str | None = None, *, model_name: str | None = None
    ) -> LoadedVersion:
        """The loaded version a request asks for (newest when it names none), or TF Serving's refusal.

        Mirrors ServerCore::ServableRequestFromModelSpec (server_core.cc), then
        the serving map lookup (core/basic_manager.cc, request names from
        core/manager.h ServableRequest::DebugString):
        - a label is looked up first: one the model lacks, or any label of a
          model not served, is INVALID_ARGUMENT "Unrecognized servable version label: L";
        - a model not served, or a version not loaded, is NOT_FOUND
          "Servable not found for request: Specific(M, V)" (or "Latest(M)").
        Before any version has loaded TF Serving has not opened its ports
        (Server::BuildAndStart waits in ServerCore::Create), so its clients get
        UNAVAILABLE; this server listens early and answers UNAVAILABLE itself.
        """
        name = self.model_name if model_name is None else model_name
        with self._lock:
            if not self._loaded:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"no version of model {self.model_name} is loaded yet "
                    f"(waiting for one under {self.model_base_path / self.model_name})",
                )
            if label is not None:
                labels = self._policy.labels if name == self.model_name else {}
                if label not in labels:
                    raise ServingError(
                        grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}"
                    )
                version = labels[label]
            wanted = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            if name != self.model_name or (version is not None and version not in self._loaded):
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {wanted}")
            return self._loaded[max(self._loaded) if version is None else version]

    def states(self) -> dict[int, VersionState]:
        """Every version seen so far and where it is in its life (LOADING ... END)."""
        with self._lock:
            return dict(self._states)

    def loaded_versions(self) -> list[int]:
        with self._lock:
            return sorted(self._loaded)

    # ------------------------------------------------------------------ polling
    def refresh(self) -> None:
        """One poll: load the versions the policy wants, then unload the ones it no longer wants."""
        self._policy = self._current_policy()
        available = {v: Path(path) for v, path in self._store.available_versions().items()}
        wanted = self._policy.choose([v for v in available if not self._failed_before(v, available[v])])
        for version in wanted:
            if version not in self._loaded:
                self._load_one(version, available[version])
        keep = set(wanted) & set(self._loaded)
        if not keep:
            return  # availability first: never unload the last answering version for nothing
        for version in sorted(set(self._loaded) - keep):
            self._unload_one(version)

    def start(self) -> None:
        """Poll in a daemon thread every poll_seconds until stop()."""
        self._thread = threading.Thread(target=self._poll_forever, name="petseg-model-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.poll_seconds * 2))

    def _poll_forever(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception as exc:  # keep serving what is loaded; say what went wrong once per poll
                self._log(f"petseg serve: polling {self.model_base_path} failed: {exc}")

    def _current_policy(self) -> model_store.VersionPolicy:
        """The policy of models.config if TF Serving would accept it now, else the one in force."""
        try:
            policy = self._store.version_policy()
        except Exception as exc:  # TF Serving keeps its last good config too
            self._log(f"petseg serve: keeping the previous version policy: {exc}")
            return self._policy
        with self._lock:
            loaded = set(self._loaded)
        refusal = model_store.label_refusal(
            self.model_name, policy.labels, self._policy.labels, loaded, ALLOW_VERSION_LABELS_FOR_UNAVAILABLE_MODELS
        )
        if refusal is not None:
            if refusal != self._refusal:
                self._log(
                    f"petseg serve: refused models.config, keeping the previous one: FAILED_PRECONDITION: {refusal}"
                )
            self._refusal = refusal
            return self._policy
        self._refusal = None
        return policy

    def _failed_before(self, version: int, path: Path) -> bool:
        return self._failed.get(version) == _mtime(path)

    def _load_one(self, version: int, path: Path) -> None:
        with self._lock:
            self._states[version] = VersionState(LOADING)
        started = time.perf_counter()
        try:
            loaded = self._load(version, path)
        except Exception as exc:
            message = first_line(exc)
            self._failed[version] = _mtime(path)
            with self._lock:
                self._states[version] = VersionState(END, message)
            self._log(f"petseg serve: failed to load {self.model_name} version {version} from {path}: {message}")
            return
        with self._lock:
            self._loaded[version] = loaded
            self._states[version] = VersionState(AVAILABLE)
        self._log(
            f"petseg serve: loaded {self.model_name} version {version} from {path} "
            f"in {time.perf_counter() - started:.1f}s (signatures: {', '.join(sorted(loaded.signatures))})"
        )

    def _unload_one(self, version: int) -> None:
        with self._lock:
            self._states[version] = VersionState(UNLOADING)
            self._loaded.pop(version, None)  # requests in flight still hold their reference
            self._states[version] = VersionState(END)
        self._log(f"petseg serve: unloaded {self.model_name} version {version}")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0
