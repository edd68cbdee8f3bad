"""The contract between validate and the steps after it: a summary that says the data passed.

validate writes `<report>/summary.json` with `success` and the fingerprint of the
raw dataset it checked; preprocess refuses to run unless that summary exists,
says success, and matches the raw dataset it is given now.

An accepted report's summary.json and examples.csv (the per-example statistics)
are also the drift reference of a model trained on that data: push keeps them
with the version it publishes, and a later validate compares new data with them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from petseg.components.contracts.rawdata import dataset_fingerprint
from petseg.components.core.errors import PetsegError
from petseg.components.core.fsutil import read_json, write_json

SUMMARY_FILE = "summary.json"
TABLE_FILE = "examples.csv"
# The files of a report that a drift comparison reads (what push keeps with a version).
DRIFT_REFERENCE_FILES = (SUMMARY_FILE, TABLE_FILE)


@dataclass(frozen=True)
class DriftComparison:
    """The accepted validation this data was compared with: its report folder (or URI) and data fingerprint."""

    dir: str
    fingerprint: str


@dataclass(frozen=True)
class ValidationSummary:
    """summary.json: did the data pass, which data it was (fingerprint), what failed, what it was compared with."""

    success: bool
    fingerprint: str
    failed_critical: tuple[str, ...] = ()
    failed_warnings: tuple[str, ...] = ()
    drift_reference: DriftComparison | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "fingerprint": self.fingerprint,
            "failed_critical": list(self.failed_critical),
            "failed_warnings": list(self.failed_warnings),
            "drift_reference": asdict(self.drift_reference) if self.drift_reference else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> ValidationSummary:
        """The summary in `data` (summary.json's content); ValueError naming what does not fit."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if not isinstance(data.get("success"), bool):
            raise ValueError("'success' is not true or false")
        names = {key: data.get(key) or [] for key in ("failed_critical", "failed_warnings")}
        for key, value in names.items():
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                raise ValueError(f"'{key}' is not a list of expectation names")
        reference = data.get("drift_reference")
        if reference is not None and not (isinstance(reference, dict) and {"dir", "fingerprint"} <= set(reference)):
            raise ValueError("'drift_reference' is not {dir, fingerprint}")
        return cls(
            success=data["success"],
            fingerprint=str(data.get("fingerprint") or ""),
            failed_critical=tuple(names["failed_critical"]),
            failed_warnings=tuple(names["failed_warnings"]),
            drift_reference=DriftComparison(str(reference["dir"]), str(reference["fingerprint"]))
            if reference
            else None,
        )


def write_summary(report_dir: str | Path, summary: ValidationSummary) -> None:
    """Write `<report_dir>/summary.json`."""
    write_json(Path(report_dir) / SUMMARY_FILE, summary.to_json())


def read_summary(report_dir: str | Path, shown_as: str | None = None) -> ValidationSummary:
    """A validation report's summary.json, or PetsegError naming the folder when there is none or it is malformed.

    `shown_as` is the folder's name in messages when `report_dir` is a local copy of it.
    """
    path = Path(report_dir) / SUMMARY_FILE
    shown = shown_as or str(report_dir)
    if not path.is_file():
        raise PetsegError(
            f"{shown} is not a validation report ({SUMMARY_FILE} missing); pass the --out "
            "folder of an accepted `petseg validate`"
        )
    try:
        content = read_json(path)
    except (OSError, ValueError) as exc:
        raise PetsegError(
            f"{shown}/{SUMMARY_FILE} is unreadable ({exc}); pass the --out folder of an accepted `petseg validate`"
        ) from None
    try:
        return ValidationSummary.from_json(content)
    except ValueError as exc:
        raise PetsegError(
            f"{shown}/{SUMMARY_FILE} is not a validation summary ({exc}); pass the --out folder of an "
            "accepted `petseg validate`"
        ) from None


def require_validated(raw_dir: str | Path, report_dir: str | Path) -> None:
    """Raise PetsegError unless `raw_dir`, exactly as it is now, passed validation."""
    summary_path = Path(report_dir) / SUMMARY_FILE
    if not summary_path.is_file():
        raise PetsegError(f"{raw_dir} has not been validated ({summary_path} missing); run `petseg validate` first")
    summary = read_summary(report_dir)
    if not summary.success:
        failed = ", ".join(summary.failed_critical) or "unknown"
        raise PetsegError(f"{raw_dir} failed validation ({failed}); fix the data and run `petseg validate` again")
    if summary.fingerprint != dataset_fingerprint(raw_dir):
        raise PetsegError(f"{raw_dir} changed since it was validated; run `petseg validate` again")


def require_drift_reference(report_dir: str | Path, what: str, shown_as: str | None = None) -> ValidationSummary:
    """The summary of `report_dir` when it can be a drift reference (an accepted report with its table).

    `what` names where the folder came from in the one-line PetsegError (e.g.
    "--reference reports/old"); `shown_as` as in read_summary.
    """
    summary = read_summary(report_dir, shown_as)
    if not summary.success:
        raise PetsegError(f"{what}: that validation failed; pass the report folder of an accepted `petseg validate`")
    if not (Path(report_dir) / TABLE_FILE).is_file():
        raise PetsegError(
            f"{what}: {TABLE_FILE} missing from {shown_as or report_dir}; pass the whole report folder of an "
            "accepted `petseg validate`"
        )
    return summary
