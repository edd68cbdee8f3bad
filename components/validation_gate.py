"""The contract between validate and preprocess: a summary that says the data passed.

validate writes `<report>/summary.json` with `success` and the fingerprint of the
raw dataset it checked; preprocess refuses to run unless that summary exists,
says success, and matches the raw dataset it is given now.
"""

from __future__ import annotations

from pathlib import Path

from petseg.components.errors import PetsegError
from petseg.components.fsutil import read_json, write_json
from petseg.components.rawdata import dataset_fingerprint

SUMMARY_FILE = "summary.json"


def write_summary(
    report_dir: str | Path,
    *,
    success: bool,
    fingerprint: str,
    failed_critical: list[str],
    failed_warnings: list[str],
    reference: dict | None = None,
) -> None:
    """summary.json; `reference` ({"dir", "fingerprint"}) names the validation the data was compared with."""
    write_json(
        Path(report_dir) / SUMMARY_FILE,
        {
            "success": success,
            "fingerprint": fingerprint,
            "failed_critical": failed_critical,
            "failed_warnings": failed_warnings,
            "drift_reference": reference,
        },
    )


def read_summary(report_dir: str | Path) -> dict:
    """A validation report's summary.json, or PetsegError naming the folder when there is none."""
    path = Path(report_dir) / SUMMARY_FILE
    if not path.is_file():
        raise PetsegError(
            f"{report_dir} is not a validation report ({SUMMARY_FILE} missing); pass the --out "
            "folder of an accepted `petseg validate`"
        )
    try:
        summary = read_json(path)
    except (OSError, ValueError) as exc:
        raise PetsegError(
            f"{path} is unreadable ({exc}); pass the --out folder of an accepted `petseg validate`"
        ) from None
    if not isinstance(summary, dict):
        raise PetsegError(f"{path} is not a validation summary; pass the --out folder of an accepted `petseg validate`")
    return summary


def require_validated(raw_dir: str | Path, report_dir: str | Path) -> None:
    """Raise PetsegError unless `raw_dir`, exactly as it is now, passed validation."""
    summary_path = Path(report_dir) / SUMMARY_FILE
    if not summary_path.is_file():
        raise PetsegError(f"{raw_dir} has not been validated ({summary_path} missing); run `petseg validate` first")
    summary = read_json(summary_path)
    if not summary.get("success"):
        failed = ", ".join(summary.get("failed_critical", [])) or "unknown"
        raise PetsegError(f"{raw_dir} failed validation ({failed}); fix the data and run `petseg validate` again")
    if summary.get("fingerprint") != dataset_fingerprint(raw_dir):
        raise PetsegError(f"{raw_dir} changed since it was validated; run `petseg validate` again")
