"""Step 6, push: publish a blessed SavedModel as the next version TF Serving serves.

push(model_dir, blessing_file, params, lineage, record_file=None, drift_reference=None, card=None, card_out=None):

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
   Beside the lineage it writes the model card (components/card/):
   `model_card/model_card.html`, `.md` and `.json`, what a reviewer reads
   before approving the version; it travels with the version from then on.
4. Hands the copy to the model store (components/store/model_store.py), which
   publishes it as the next integer version (one rename), points models.config
   at it in the steps TF Serving accepts, and applies retention.
5. With `card_out`, also writes the card into that local folder (DVC's output,
   the Kubeflow artifact), whatever the outcome: a declined model's card says
   it was not pushed and why; an unchanged one is the served version's.

Killed at any point, a push leaves nothing that counts as a version: before
the store records the version as published it is not listed, not named by
models.config, and the next push removes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from petseg.components.card.build import model_card
from petseg.components.card.sources import CardSources
from petseg.components.contracts.blessing import Blessing, blessing_path, read_blessing
from petseg.components.contracts.layout import MODEL_CARD_DIR, MODEL_CARD_FILES
from petseg.components.contracts.lineage import KeptDriftReference, Lineage, VersionRecord, version_record
from petseg.components.contracts.validation import DRIFT_REFERENCE_FILES, require_drift_reference
from petseg.components.core.errors import PetsegError, first_line
from petseg.components.core.fsutil import atomic_directory, write_json
from petseg.components.core.params import PushParams
from petseg.components.store import model_store, storage
from petseg.components.store.credentials import require_store_access
from petseg.components.store.model_store import ModelStore
from petseg.components.store.storage import join
from petseg.components.store.warmup import (
    DEFAULT_WARMUP_IMAGE_SIZE,
    WARMUP_FILE,
    InfraValidationError,
    covering_every_signature,
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
    card: str | None = None  # the version's model card folder in the store (pushed, or unchanged with a card)

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "reason": self.reason,
            "version": self.version,
            "path": self.path,
            "served_version": self.served_version,
            "removed_versions": self.removed_versions,
            "card": self.card,
        }


@dataclass(frozen=True)
class _Outcome:
    """_push's result and the card of the model it handled (to copy to card_out)."""

    result: PushResult
    card_files: dict[str, bytes]


# -------------------------------------------------------------------- the step
def push(
    model_dir: Path,
    blessing_file: Path,
    params: PushParams,
    lineage: Lineage,
    record_file: Path | None = None,
    drift_reference: str | Path | None = None,
    card: CardSources | None = None,
    card_out: Path | None = None,
) -> PushResult:
    """Publish `model_dir` as the next served version if its blessing says so; see the module docstring.

    `lineage` (see collect_lineage) is stored with the version; `record_file`,
    if given, receives the outcome as JSON whether pushed, declined or failed.
    `drift_reference`, the validation report folder of the model's training
    data, is kept with the version (it must be accepted and, when the lineage
    knows the data's fingerprint, of that data). `card` says where the model
    card's other inputs are (evaluate's folder defaults to the blessing's, the
    validation report to `drift_reference`); `card_out` receives a copy of the card.
    """
    blessing = read_blessing(blessing_file)
    if card_out is not None:
        check_card_out(card_out)  # before anything is published
    sources = card_sources(card or CardSources(), blessing_file, drift_reference)
    store = ModelStore.from_params(params)
    try:
        require_store_access(params.model_base_path)  # first: a refused key in one line naming its Secret
        outcome = _push(str(model_dir), blessing, params, store, lineage, drift_reference, sources)
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
                    "card": None,
                },
            )
        raise
    _write_record(record_file, store, outcome.result.to_dict())
    if card_out is not None:
        try:
            write_card_copy(card_out, outcome.card_files)
        except OSError as exc:
            where = f"; the store's copy is {outcome.result.card}" if outcome.result.card else ""
            raise PetsegError(
                f"push {outcome.result.status}, but the model card could not be written to {card_out} "
                f"({first_line(exc)}){where}"
            ) from None
    return outcome.result


def check_card_out(card_out: Path) -> None:
    """Refuse a card folder that is a file, or a folder holding anything but a card push wrote (it is replaced)."""
    card_out = Path(card_out)
    if card_out.is_symlink() or (card_out.exists() and not card_out.is_dir()):
        raise PetsegError(f"--card-out {card_out}: exists and is not a folder; choose another --card-out")
    if card_out.is_dir():
        foreign = sorted(p.name for p in card_out.iterdir() if p.name not in MODEL_CARD_FILES)
        if foreign:
            raise PetsegError(
                f"--card-out {card_out}: holds {foreign[0]!r}, which push did not write (push replaces the "
                "folder); choose another --card-out or empty it yourself"
            )


def card_sources(card: CardSources, blessing_file: Path, drift_reference: str | Path | None) -> CardSources:
    """`card` with evaluate's folder (where the blessing is) and the validation report filled in when not given."""
    evaluation = card.evaluation_dir or blessing_path(blessing_file).parent
    validation = card.validation_dir or (Path(drift_reference) if drift_reference is not None else None)
    return dataclasses.replace(card, evaluation_dir=evaluation, validation_dir=validation)


def write_card_copy(card_out: Path, files: dict[str, bytes]) -> None:
    """Replace the folder `card_out` (push's own output) with the card's files, whole or not at all."""
    with atomic_directory(card_out) as staging:
        for name, data in files.items():
            (staging / name).write_bytes(data)


def _push(
    model_dir: str,
    blessing: Blessing,
    params: PushParams,
    store: ModelStore,
    lineage: Lineage,
    drift_reference: str | Path | None,
    sources: CardSources,
) -> _Outcome:
    if not blessing.blessed:
        reason = f"model not blessed: {blessing.reason or 'no reason recorded'}"
        record = version_record(lineage, blessing, params.model_name, model_dir)
        _, files = model_card(record, blessing, Path(model_dir), sources, "declined", reason)
        return _Outcome(
            PushResult("declined", reason, served_version=store.served_version()),
            files,
        )
    model_store.require_savedmodel(model_dir)
    fingerprint = model_store.model_fingerprint(model_dir)
    if blessing.model_fingerprint != fingerprint:
        raise PetsegError(
            f"the blessing is for a different model than {model_dir} (it changed since it "
            "was evaluated); run `petseg evaluate` again"
        )
    kept = _checked_drift_reference(drift_reference, lineage) if drift_reference is not None else None
    record = version_record(lineage, blessing, params.model_name, model_dir, kept)
    storage.makedirs(store.root)
    with store.lock():
        store.remove_leftovers()
        served = store.served_version()
        served_record = _version_record(store, served)
        if served is not None and served_record is not None and served_record.model_fingerprint == fingerprint:
            reason = f"this model is already served as version {served}"
            _, files = model_card(served_record, blessing, Path(model_dir), sources, "unchanged", reason)
            card_dir = card_path(store, served)
            return _Outcome(
                PushResult(
                    "unchanged",
                    reason,
                    version=served,
                    path=store.version_path(served),
                    served_version=served,
                    card=card_dir if storage.isdir(card_dir) else None,
                ),
                files,
            )
        _require_fresh_blessing(blessing, store, served)
        version = store.claim_version()
        final, files = _stage_and_publish(
            model_dir, params, store, version, served, dataclasses.replace(record, version=version), blessing, sources
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
    return _Outcome(
        PushResult(
            "pushed",
            f"version {version} is now served (was {served})",
            version=version,
            path=final,
            served_version=version,
            removed_versions=removed,
            card=card_path(store, version),
        ),
        files,
    )


def card_path(store: ModelStore, version: int) -> str:
    """Where the model card of `version` is in the store (`<version>/model_card/`)."""
    return join(store.version_path(version), MODEL_CARD_DIR)


def _version_record(store: ModelStore, version: int | None) -> VersionRecord | None:
    """The lineage.json push wrote beside `version`, typed; None when there is none."""
    raw = store.read_lineage(version) if version is not None else None
    return VersionRecord.from_json(raw) if raw is not None else None


def _stage_and_publish(
    model_dir: str,
    params: PushParams,
    store: ModelStore,
    version: int,
    served: int | None,
    record: VersionRecord,
    blessing: Blessing,
    sources: CardSources,
) -> tuple[str, dict[str, bytes]]:
    """Stage, validate and publish one version; its path and card files. On failure nothing is left, the cause one line.

    TensorFlow writes the warm-up file and loads the staged copy, and it cannot
    reach s3:// (or any fsspec store): for a store the version is staged in a
    local folder and publish uploads it; locally it is staged beside its final
    place, so publishing is one rename.
    """
    with storage.local_workdir(store.version_path(version)) as work:
        staging = store.staging_path(version, folder=work)
        print(f"push: staging version {version} in {staging}", flush=True)
        try:
            published = stage_version(model_dir, staging, params, record)
            files = _write_card(staging, published, blessing, sources)
            print(
                f"push: infra validation passed ({published.infra_validation['requests']} requests); "
                f"publishing version {version}",
                flush=True,
            )
            final = store.publish(
                staging,
                version,
                {"pushed_at": published.pushed_at, "model_fingerprint": published.model_fingerprint},
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
    return final, files


def _write_card(staging: str, record: VersionRecord, blessing: Blessing, sources: CardSources) -> dict[str, bytes]:
    """Render the version's model card and write it into the staged copy (`model_card/`); its files."""
    card, files = model_card(
        record, blessing, Path(staging), sources, "pushed", f"version {record.version} passed infra validation"
    )
    model_store.write_model_card(staging, files)
    if card.missing:
        print(f"push: the model card names {len(card.missing)} input(s) it could not show", flush=True)
    return files


def _checked_drift_reference(report_dir: str | Path, lineage: Lineage) -> KeptDriftReference:
    """What lineage.json records of the drift reference push keeps: its source folder and data fingerprint.

    PetsegError (one line) when the folder is not an accepted report, or is the
    report of other data than the model's records came from.
    """
    what = f"push --validation {report_dir}"
    validated = require_drift_reference(report_dir, what).fingerprint
    trained_on = lineage.validation_fingerprint
    if trained_on and validated != trained_on:
        raise PetsegError(
            f"{what}: that report validated other data (fingerprint {validated[:12]}) than the records "
            f"the model was trained on came from ({trained_on[:12]}); pass the validation report of "
            "that data"
        )
    return KeptDriftReference(model_store.DRIFT_REFERENCE_DIR, str(report_dir), validated)


def stage_version(model_dir: str, staging: str, params: PushParams, record: VersionRecord) -> VersionRecord:
    """Copy the model into `staging`, add warm-up requests, infra-validate it, then write its lineage.json.

    When the record names a drift reference, its report files are copied into
    `staging/drift_reference/` too. Returns the record as written (with
    pushed_at and the infra validation). Raises InfraValidationError when the
    copy does not load or answer.
    """
    storage.copy_tree(model_dir, staging, last=model_store.SAVED_MODEL_FILE)
    reference = record.drift_reference
    if reference:
        storage.makedirs(join(staging, reference.dir))
        for name in DRIFT_REFERENCE_FILES:
            storage.copy_file(join(reference.source, name), join(staging, reference.dir, name))
    image_size = record.data.get("image_size")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
        image_size = DEFAULT_WARMUP_IMAGE_SIZE
    requests = warmup_requests(staging, params.model_name, params.warmup_requests, image_size)
    if params.warmup_requests:
        write_warmup_file(join(staging, WARMUP_FILE), requests)
        requests = read_warmup_file(join(staging, WARMUP_FILE))  # validate what a server will replay
    validation = infra_validate(staging, covering_every_signature(requests, staging, params.model_name, image_size))
    published = record.published(datetime.now(UTC).isoformat(timespec="seconds"), validation)
    storage.write_text_atomically(join(staging, model_store.LINEAGE_FILE), published.to_text())
    return published


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
