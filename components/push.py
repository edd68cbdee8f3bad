"""Step 6, push: publish a blessed SavedModel as the next version TF Serving serves.

push(model_dir, blessing_file, params, lineage, drift_reference=None):

1. Declines a model evaluate did not bless (a result, not an error: the
   declined record says why), and refuses a blessing that is stale: made for
   a different model, a different push target, or against a served version
   that has changed since.
2. Takes the model store's lock (one push or rollback per model at a time; a
   second one waits up to push.lock_timeout_seconds, then is refused in one
   line, recorded as "busy", never as a fault of the model).
3. Copies the model into `<model_root>/.staging-<v>-<id>/` (invisible to TF
   Serving, which only sees all-digit folder names), adds TF Serving warm-up
   requests (`assets.extra/tf_serving_warmup_requests`, PredictionLog
   TFRecords) and infra-validates the copy (components/store/warmup.py). A copy that
   fails is deleted and nothing is published; the reason is recorded. With
   `drift_reference` (the accepted validation report of the data the model was
   trained on) the copy also keeps that report's summary.json and examples.csv
   in `drift_reference/`: what a later `petseg validate` compares new data with
   while this version is served.
4. Hands the copy to the model store (components/store/model_store.py), which
   publishes it as the next integer version (one rename), points models.config
   at it in the steps TF Serving accepts, and applies retention.

Killed at any point, a push leaves nothing that counts as a version: before
the store records the version as published it is not listed, not named by
models.config, and the next push removes it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from petseg.components.contracts.blessing import Blessing, read_blessing
from petseg.components.contracts.validation import DRIFT_REFERENCE_FILES, require_drift_reference
from petseg.components.core.errors import PetsegError, first_line
from petseg.components.core.fsutil import write_json
from petseg.components.core.params import PushParams
from petseg.components.store import model_store, storage
from petseg.components.store.model_store import ModelStore
from petseg.components.store.storage import join
from petseg.components.store.warmup import (
    DEFAULT_WARMUP_IMAGE_SIZE,
    WARMUP_FILE,
    InfraValidationError,
    infra_validate,
    read_warmup_file,
    warmup_requests,
    write_warmup_file,
)

PushStatus = Literal["pushed", "declined", "unchanged"]
# What reports/push.json may say besides a PushStatus, when push raised instead.
FailedPushStatus = Literal["failed", "infra_validation_failed", "busy"]


@dataclass(frozen=True)
class PushResult:
    """status: "pushed", "declined" (not blessed) or "unchanged" (this exact model is already served)."""

    status: PushStatus
    reason: str
    version: int | None = None
    path: str | None = None
    served_version: int | None = None
    removed_versions: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "reason": self.reason,
            "version": self.version,
            "path": self.path,
            "served_version": self.served_version,
            "removed_versions": self.removed_versions,
        }


# -------------------------------------------------------------------- the step
def push(
    model_dir: Path,
    blessing_file: Path,
    params: PushParams,
    lineage: dict,
    record_file: Path | None = None,
    drift_reference: str | Path | None = None,
) -> PushResult:
    """Publish `model_dir` as the next served version if its blessing says so; see the module docstring.

    `lineage` (see collect_lineage) is stored with the version; `record_file`,
    if given, receives the outcome as JSON whether pushed, declined or failed.
    `drift_reference`, the validation report folder of the model's training
    data, is kept with the version (it must be accepted and, when the lineage
    knows the data's fingerprint, of that data).
    """
    blessing = read_blessing(blessing_file)
    store = ModelStore.from_params(params)
    try:
        result = _push(str(model_dir), blessing, params, store, lineage, drift_reference)
    except PetsegError as exc:
        status: FailedPushStatus = (
            "infra_validation_failed"
            if isinstance(exc, InfraValidationError)
            else "busy"
            if isinstance(exc, model_store.StoreBusyError)
            else "failed"
        )
        served = None
        with contextlib.suppress(OSError, PetsegError):  # an unreachable store: the record says so without it
            served = store.served_version()
        with contextlib.suppress(OSError, PetsegError):  # e.g. a full disk: the error itself is what the user must see
            _write_record(
                record_file,
                store,
                {
                    "status": status,
                    "reason": str(exc),
                    "version": None,
                    "path": None,
                    "served_version": served,
                    "removed_versions": [],
                },
            )
        raise
    _write_record(record_file, store, result.to_dict())
    return result


def _push(
    model_dir: str,
    blessing: Blessing,
    params: PushParams,
    store: ModelStore,
    lineage: dict,
    drift_reference: str | Path | None,
) -> PushResult:
    if not blessing.blessed:
        return PushResult(
            "declined",
            f"model not blessed: {blessing.reason or 'no reason recorded'}",
            served_version=store.served_version(),
        )
    model_store.require_savedmodel(model_dir)
    fingerprint = model_store.model_fingerprint(model_dir)
    if blessing.model_fingerprint != fingerprint:
        raise PetsegError(
            f"the blessing is for a different model than {model_dir} (it changed since it "
            "was evaluated); run `petseg evaluate` again"
        )
    if drift_reference is not None:
        lineage = {**lineage, "drift_reference": _checked_drift_reference(drift_reference, lineage)}
    storage.makedirs(store.root)
    with store.lock():
        store.remove_leftovers()
        served = store.served_version()
        if served is not None and (store.read_lineage(served) or {}).get("model_fingerprint") == fingerprint:
            return PushResult(
                "unchanged",
                f"this model is already served as version {served}",
                version=served,
                path=store.version_path(served),
                served_version=served,
            )
        _require_fresh_blessing(blessing, store, served)
        version = store.claim_version()
        final = _stage_and_publish(
            model_dir,
            params,
            store,
            version,
            served,
            {
                **lineage,
                "model_name": params.model_name,
                "version": version,
                "source_model": model_dir,
                "model_fingerprint": fingerprint,
                "metrics": blessing.candidate,
                "blessing": {
                    "blessed": blessing.blessed,
                    "reason": blessing.reason,
                    "checks": list(blessing.checks),
                    "baseline": blessing.baseline,
                    "thresholds": blessing.thresholds,
                },
                "data": blessing.data,
            },
        )
        try:
            store.serve_version(version)
        except PetsegError as exc:
            raise PetsegError(f"version {version} was published but is not served: {exc}") from None
        except Exception as exc:
            if not _is_io_error(exc):
                raise
            raise PetsegError(
                f"version {version} was written but {store.config_path} could not be "
                f"updated ({first_line(exc)}); version {served} is still served; "
                f"run `petseg rollback --to {version}` to serve it"
            ) from None
        removed = store.apply_retention()
    return PushResult(
        "pushed",
        f"version {version} is now served (was {served})",
        version=version,
        path=final,
        served_version=version,
        removed_versions=removed,
    )


def _stage_and_publish(
    model_dir: str, params: PushParams, store: ModelStore, version: int, served: int | None, lineage: dict
) -> str:
    """Stage, validate and publish one version; on failure nothing is left and the cause is one line.

    TensorFlow writes the warm-up file and loads the staged copy, and it cannot
    reach s3:// (or any fsspec store): for a store the version is staged in a
    local folder and publish uploads it; locally it is staged beside its final
    place, so publishing is one rename.
    """
    with storage.local_workdir(store.version_path(version)) as work:
        staging = store.staging_path(version, folder=work)
        print(f"push: staging version {version} in {staging}", flush=True)
        try:
            validation = stage_version(model_dir, staging, params, lineage)
            print(
                f"push: infra validation passed ({validation['requests']} requests); publishing version {version}",
                flush=True,
            )
            final = store.publish(
                staging,
                version,
                {
                    "pushed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "model_fingerprint": lineage["model_fingerprint"],
                },
            )
        except BaseException as exc:
            storage.remove_tree(staging)
            if isinstance(exc, InfraValidationError):
                raise InfraValidationError(f"{exc}; not pushed") from None
            if isinstance(exc, PetsegError) or not _is_io_error(exc):
                raise
            raise PetsegError(
                f"push of version {version} failed ({first_line(exc)}); nothing was published and "
                f"version {served} is still served"
            ) from None
    print(f"push: published {final}; pointing models.config at it", flush=True)
    return final


def _checked_drift_reference(report_dir: str | Path, lineage: dict) -> dict:
    """What lineage.json records of the drift reference push keeps: its source folder and data fingerprint.

    PetsegError (one line) when the folder is not an accepted report, or is the
    report of other data than the model's records came from.
    """
    what = f"push --validation {report_dir}"
    validated = str(require_drift_reference(report_dir, what).get("fingerprint", ""))
    trained_on = lineage.get("validation_fingerprint")
    if trained_on and validated != trained_on:
        raise PetsegError(
            f"{what}: that report validated other data (fingerprint {validated[:12]}) than the records "
            f"the model was trained on came from ({trained_on[:12]}); pass the validation report of "
            "that data"
        )
    return {"dir": model_store.DRIFT_REFERENCE_DIR, "source": str(report_dir), "fingerprint": validated}


def stage_version(model_dir: str, staging: str, params: PushParams, lineage: dict) -> dict:
    """Copy the model into `staging`, add warm-up requests, infra-validate it, then write its lineage.

    When the lineage names a drift reference, its report files are copied into
    `staging/drift_reference/` too. Raises InfraValidationError when the copy
    does not load or answer.
    """
    storage.copy_tree(model_dir, staging, last=model_store.SAVED_MODEL_FILE)
    reference = lineage.get("drift_reference")
    if reference:
        storage.makedirs(join(staging, reference["dir"]))
        for name in DRIFT_REFERENCE_FILES:
            storage.copy_file(join(str(reference["source"]), name), join(staging, reference["dir"], name))
    image_size = int((lineage.get("data") or {}).get("image_size") or DEFAULT_WARMUP_IMAGE_SIZE)
    requests = warmup_requests(staging, params.model_name, params.warmup_requests, image_size)
    if params.warmup_requests:
        write_warmup_file(join(staging, WARMUP_FILE), requests)
        requests = read_warmup_file(join(staging, WARMUP_FILE))  # validate what a server will replay
    validation = infra_validate(staging, requests)
    _write_json_file(
        join(staging, model_store.LINEAGE_FILE),
        {
            **lineage,
            "pushed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "infra_validation": validation,
        },
    )
    return validation


def _is_io_error(exc: BaseException) -> bool:
    import tensorflow as tf

    return isinstance(exc, (OSError, tf.errors.OpError))


def _require_fresh_blessing(blessing: Blessing, store: ModelStore, served: int | None) -> None:
    """The blessing's regression check must have been against what is served at this target now."""
    target = store.root
    if blessing.push_target not in (None, target):
        raise PetsegError(
            f"the blessing compared against the model served at {blessing.push_target}, "
            f"but push targets {target}; run `petseg evaluate` with the same push params"
        )
    compared = blessing.baseline_version
    if compared != served:
        raise PetsegError(
            f"the served version changed since evaluation (evaluated against {compared}, "
            f"now {served}); run `petseg evaluate` again"
        )


def _write_record(record_file: Path | None, store: ModelStore, outcome: dict) -> None:
    if record_file is None:
        return
    write_json(
        record_file,
        {
            **outcome,
            "model_name": store.model_name,
            "model_root": store.root,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )


def _write_json_file(path: str, data: dict) -> None:
    import json

    storage.write_text_atomically(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
