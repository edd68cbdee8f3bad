"""Step 6, push: publish a blessed SavedModel as the next version TF Serving serves; roll back.

push(model_dir, blessing_file, params, lineage):

1. Declines a model evaluate did not bless (a result, not an error: the
   declined record says why), and refuses a blessing that is stale: made for
   a different model, a different push target, or against a served version
   that has changed since.
2. Copies the model into `<model_root>/.staging-<v>-<id>/` (invisible to TF
   Serving, which only sees all-digit folder names), adds TF Serving warm-up
   requests (`assets.extra/tf_serving_warmup_requests`, PredictionLog
   TFRecords) and infra-validates the copy: loaded with tf.saved_model.load and
   the `serve` tag, as a server loads it, it must answer every warm-up request
   through its signature with a mask of the right shape. A copy that fails is
   deleted and nothing is published; the reason is recorded.
3. Writes lineage.json into the copy and renames it to `<model_root>/<v>/`,
   the next integer version: one rename, so a polling server sees the whole
   version or none. (Object stores have no folder rename: see publish_directory.)
4. Points models.config at the new version (components/model_store.py) and
   deletes the oldest versions beyond `push.keep_versions`, never the served one;
   a version is renamed to `.deleting-*` before it is deleted.

A failure anywhere before step 3 (disk full, interrupted) leaves the previous
versions and models.config untouched and no version folder behind.
One push at a time per model: a push clears staging folders left by a killed one.

rollback(params, to_version) re-points models.config's `stable` label and
specific version policy at an earlier (or any kept) version; nothing is copied.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path


from petseg.components import model_store, storage
from petseg.components.errors import PetsegError, first_line
from petseg.components.blessing import Blessing, read_blessing
from petseg.components.fsutil import write_json
from petseg.components.storage import join
from petseg.components.params import PushParams
from petseg.components.warmup import (
    DEFAULT_WARMUP_IMAGE_SIZE,
    WARMUP_FILE,
    InfraValidationError,
    infra_validate,
    read_warmup_file,
    warmup_requests,
    write_warmup_file,
)

@dataclass
class PushResult:
    """status: "pushed", "declined" (not blessed) or "unchanged" (this exact model is already served)."""

    status: str
    reason: str
    version: int | None = None
    path: str | None = None
    served_version: int | None = None
    removed_versions: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"status": self.status, "reason": self.reason, "version": self.version, "path": self.path,
                "served_version": self.served_version, "removed_versions": self.removed_versions}


# -------------------------------------------------------------------- the step
def push(model_dir: Path, blessing_file: Path, params: PushParams, lineage: dict,
         record_file: Path | None = None) -> PushResult:
    """Publish `model_dir` as the next served version if its blessing says so; see the module docstring.

    `lineage` (see collect_lineage) is stored with the version; `record_file`,
    if given, receives the outcome as JSON whether pushed, declined or failed.
    """
    blessing = read_blessing(blessing_file)
    try:
        result = _push(str(model_dir), blessing, params, lineage)
    except PetsegError as exc:
        status = "infra_validation_failed" if isinstance(exc, InfraValidationError) else "failed"
        try:
            _write_record(record_file, params, {"status": status, "reason": str(exc), "version": None,
                                                "path": None, "served_version": model_store.served_version(params),
                                                "removed_versions": []})
        except (OSError, PetsegError):
            pass  # e.g. the disk is full: the error itself is what the user must see
        raise
    _write_record(record_file, params, result.to_dict())
    return result


def _push(model_dir: str, blessing: Blessing, params: PushParams, lineage: dict) -> PushResult:
    served = model_store.served_version(params)
    if not blessing.blessed:
        return PushResult("declined", f"model not blessed: {blessing.reason or 'no reason recorded'}",
                          served_version=served)
    model_store.require_savedmodel(model_dir)
    fingerprint = model_store.model_fingerprint(model_dir)
    if blessing.model_fingerprint != fingerprint:
        raise PetsegError(f"the blessing is for a different model than {model_dir} (it changed since it "
                          "was evaluated); run `petseg evaluate` again")
    if served is not None and (model_store.read_lineage(params, served) or {}).get("model_fingerprint") == fingerprint:
        return PushResult("unchanged", f"this model is already served as version {served}",
                          version=served, path=model_store.version_path(params, served), served_version=served)
    _require_fresh_blessing(blessing, params, served)

    root = model_store.model_root(params)
    storage.makedirs(root)
    _remove_leftovers(root)
    version = max(model_store.list_version_numbers(params), default=0) + 1
    staging = join(root, f"{model_store.STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
    final = model_store.version_path(params, version)
    publishing = False
    try:
        stage_version(model_dir, staging, params, {
            **lineage,
            "model_name": params.model_name,
            "version": version,
            "source_model": model_dir,
            "model_fingerprint": fingerprint,
            "metrics": blessing.candidate,
            "blessing": {"blessed": blessing.blessed, "reason": blessing.reason, "checks": list(blessing.checks),
                         "baseline": blessing.baseline, "thresholds": blessing.thresholds},
            "data": blessing.data,
        })
        if storage.exists(final):
            raise PetsegError(f"{final} appeared during the push; is another push running?")
        publishing = True
        publish_directory(staging, final)
    except BaseException as exc:
        # `final` is ours to remove only once publishing started (an object-store copy broken off)
        for leftover in (staging, final) if publishing else (staging,):
            storage.remove_tree(leftover)
        if isinstance(exc, PetsegError) or not _is_io_error(exc):
            raise
        raise PetsegError(f"push of version {version} failed ({first_line(exc)}); nothing was published and "
                          f"version {served} is still served") from None
    try:
        model_store.write_served_version(params, version)
    except Exception as exc:  # noqa: BLE001 - the version is whole; say how to finish the switch
        if not _is_io_error(exc):
            raise
        raise PetsegError(f"version {version} was written but {model_store.config_path(params)} could not be "
                          f"updated ({first_line(exc)}); version {served} is still served; "
                          f"run `petseg rollback --to {version}` to serve it") from None
    removed = apply_retention(params, params.keep_versions)
    return PushResult("pushed", f"version {version} is now served (was {served})", version=version, path=final,
                      served_version=version, removed_versions=removed)


def stage_version(model_dir: str, staging: str, params: PushParams, lineage: dict) -> None:
    """Copy the model into `staging`, add warm-up requests, infra-validate it, then write its lineage.

    Raises InfraValidationError when the copy does not load or answer.
    """
    storage.copy_tree(model_dir, staging, last=model_store.SAVED_MODEL_FILE)
    image_size = int((lineage.get("data") or {}).get("image_size") or DEFAULT_WARMUP_IMAGE_SIZE)
    requests = warmup_requests(staging, params.model_name, params.warmup_requests, image_size)
    if params.warmup_requests:
        write_warmup_file(join(staging, WARMUP_FILE), requests)
        requests = read_warmup_file(join(staging, WARMUP_FILE))  # validate what a server will replay
    validation = infra_validate(staging, requests)
    _write_json_file(join(staging, model_store.LINEAGE_FILE), {
        **lineage,
        "pushed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "infra_validation": validation,
    })


def _is_io_error(exc: BaseException) -> bool:
    import tensorflow as tf

    return isinstance(exc, (OSError, tf.errors.OpError))


def _require_fresh_blessing(blessing: Blessing, params: PushParams, served: int | None) -> None:
    """The blessing's regression check must have been against what is served at this target now."""
    target = model_store.model_root(params)
    if blessing.push_target not in (None, target):
        raise PetsegError(f"the blessing compared against the model served at {blessing.push_target}, "
                          f"but push targets {target}; run `petseg evaluate` with the same push params")
    compared = blessing.baseline_version
    if compared != served:
        raise PetsegError(f"the served version changed since evaluation (evaluated against {compared}, "
                          f"now {served}); run `petseg evaluate` again")


def _remove_leftovers(root: str) -> None:
    """Delete staging/deleting folders a killed push left behind (invisible to TF Serving, but they take space)."""
    for name in storage.listdir(root):
        if name.startswith((model_store.STAGING_PREFIX, model_store.DELETING_PREFIX)):
            storage.remove_tree(join(root, name))


def _write_record(record_file: Path | None, params: PushParams, outcome: dict) -> None:
    if record_file is None:
        return
    write_json(record_file, {**outcome, "model_name": params.model_name,
                             "model_root": model_store.model_root(params),
                             "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def _write_json_file(path: str, data: dict) -> None:
    import json

    storage.write_text_atomically(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


# ------------------------------------------------------------------ copying
def publish_directory(staging: str, final: str) -> None:
    """Give the staged version its final name.

    Locally one rename: atomic, a polling server sees all of it or nothing.
    Object stores have no folder rename (gfile's moves objects one by one, or on
    some file systems only the folder marker), so there the copy is made file by
    file with saved_model.pb last and the staging copy deleted; a server that
    follows models.config loads the version only after push points the config
    at it, and that is one object write.
    """
    if storage.supports_rename(final):
        storage.rename_dir(staging, final)
        return
    storage.copy_tree(staging, final, last=model_store.SAVED_MODEL_FILE)
    storage.remove_tree(staging)


# ---------------------------------------------------------------- retention
def apply_retention(params: PushParams, keep: int) -> list[int]:
    """Delete all but the newest `keep` versions, never the served one; return the deleted versions."""
    served = model_store.served_version(params)
    versions = model_store.list_version_numbers(params)
    doomed = [v for v in versions[:-keep] if v != served] if keep < len(versions) else []
    root = model_store.model_root(params)
    for version in doomed:
        path = model_store.version_path(params, version)
        if not storage.supports_rename(path):  # no folder rename there; the version is not served any more
            storage.remove_tree(path)
            continue
        hidden = join(root, f"{model_store.DELETING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
        storage.rename_dir(path, hidden)
        storage.remove_tree(hidden)
    return doomed


# ----------------------------------------------------------------- rollback
@dataclass
class VersionInfo:
    version: int
    path: str
    served: bool
    lineage: dict | None


def list_versions(params: PushParams) -> list[VersionInfo]:
    """The kept versions, newest first, with which one is served and each one's lineage record."""
    served = model_store.served_version(params)
    return [VersionInfo(v, model_store.version_path(params, v), v == served, model_store.read_lineage(params, v))
            for v in reversed(model_store.list_version_numbers(params))]


@dataclass
class RollbackResult:
    previous: int | None
    served: int
    config_file: str


def rollback(params: PushParams, to_version: int | None = None) -> RollbackResult:
    """Serve `to_version` (default: the newest version older than the served one) via models.config."""
    versions = model_store.list_version_numbers(params)
    root = model_store.model_root(params)
    if not versions:
        raise PetsegError(f"no versions under {root}; nothing to roll back (run `petseg push` first)")
    current = model_store.served_version(params)
    kept = ", ".join(map(str, versions))
    if to_version is None:
        older = [v for v in versions if current is not None and v < current]
        if not older:
            raise PetsegError(f"version {current} is the oldest kept under {root} (kept: {kept}); "
                              "nothing earlier to roll back to")
        to_version = older[-1]
    elif to_version not in versions:
        raise PetsegError(f"version {to_version} is not under {root} (kept: {kept}); "
                          "see `petseg rollback --list`")
    model_store.write_served_version(params, to_version)
    return RollbackResult(previous=current, served=to_version, config_file=model_store.config_path(params))
