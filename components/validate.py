"""Step 2, validate: check the raw dataset with Great Expectations before anything trains on it.

The run, in three parts that live in components/checks/:

1. the scan (checks/scan.py): one row of statistics per example, written as examples.csv;
2. the suite (checks/suite.py): one Great Expectations expectation per name in
   core/expectations.py, run on that table; validate.critical says which names stop
   the pipeline, the others only warn;
3. against a reference (the report folder of an earlier accepted validation, chosen by
   the drift_reference step), the no_drift_* expectations (checks/drift.py).

Outputs (written whole, even when validation fails, so a person can inspect them):
`examples.csv` (the table), `gx_result.json` (GX's validation result, COMPLETE format,
offending rows named by id), `data_docs/` (GX Data Docs; `data_docs_page` names the page
to open) and `summary.json` (the contract preprocess checks, contracts/validation.py). A
failed critical expectation then raises DataValidationError with a one-line summary
naming each failed expectation, a few offending ids and where the Data Docs are.

Policy for the real dataset's known corrupt files (TFDS lists a dozen non-RGB or
non-JPEG images, and the archives have a few undecodable files): they are handled
once, at download, so that a real run is not stopped by them: an image that decodes
but is not an RGB JPEG is repaired (re-encoded as RGB JPEG) and an example whose
image or trimap does not decode is dropped; download.json lists both. Validation does
not repair or drop anything itself: it is the check that download's policy held, so
any undecodable, non-RGB or malformed example that reaches it fails a critical
expectation. Non-JPEG bytes that still decode are only flagged (image_is_jpeg is a
warning by default) because every decoder downstream reads them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from petseg.components.checks.drift import read_reference
from petseg.components.checks.scan import example_table
from petseg.components.checks.suite import run_suite, stable_gx_result
from petseg.components.contracts.rawdata import dataset_fingerprint, read_index
from petseg.components.contracts.validation import (
    SUMMARY_FILE,
    TABLE_FILE,
    DriftComparison,
    ValidationSummary,
    write_summary,
)
from petseg.components.core.errors import DataValidationError
from petseg.components.core.expectations import DRIFT_CHECKS, EXPECTATION_NAMES, check_critical_names
from petseg.components.core.fsutil import atomic_directory, check_output_dir, io_errors_named, write_json
from petseg.components.core.params import ValidateParams
from petseg.components.store.credentials import require_store_access

log = logging.getLogger(__name__)


GX_RESULT_FILE = "gx_result.json"


DATA_DOCS_DIR = "data_docs"


@dataclass(frozen=True)
class ValidationResult:
    """What validation found; returned when no critical expectation failed."""

    out_dir: Path
    success: bool
    examples: int
    counts: dict[str, int] = field(default_factory=dict)
    failed_critical: list[str] = field(default_factory=list)
    failed_warnings: list[str] = field(default_factory=list)
    offending_ids: dict[str, list[str]] = field(default_factory=dict)

    @property
    def data_docs(self) -> Path:
        return data_docs_page(self.out_dir)


def data_docs_page(report_dir: str | Path) -> Path:
    """The Data Docs page of the validation run in `report_dir`, the one to open.

    It reads offline, unlike GX's index.html, whose listing is filled in by
    JavaScript from public CDNs; the index is the fallback.
    """
    docs = Path(report_dir) / DATA_DOCS_DIR
    pages = sorted((docs / "validations").rglob("*.html"))
    return pages[-1] if pages else docs / "index.html"


def validate_dataset(
    raw_dir: str | Path, params: ValidateParams, out_dir: str | Path, reference: str | Path | None = None
) -> ValidationResult:
    """Validate the raw dataset in `raw_dir`, write the reports to `out_dir`, stop on a critical failure.

    `reference` is the report folder (local or an object-store URI) of an
    earlier accepted validation: the no_drift_* expectations compare this data
    with it. None runs no drift check. Runners choose it with drift_reference.

    Raises DataValidationError (after the reports are written) when a critical
    expectation fails, ParamsError when `params.critical` names no expectation,
    PetsegError when the reference is not an accepted validation's report.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    check_critical_names(params.critical)
    check_output_dir(out_dir, SUMMARY_FILE, "validate")
    reference = str(reference) if reference else None
    if reference:
        require_store_access(reference)  # a reference on a store: its credentials, checked first
    reference_table, reference_fingerprint = read_reference(reference) if reference else (None, "")
    # (read whole before out_dir is replaced: it may be the reference)
    with io_errors_named(out_dir, "validate"):
        examples = read_index(raw_dir)
        fingerprint = dataset_fingerprint(raw_dir)
        table = example_table(raw_dir, examples, workers=params.workers)
        with atomic_directory(out_dir) as staging:
            table.to_csv(staging / TABLE_FILE, index=False)
            gx_result = run_suite(table, params, staging / DATA_DOCS_DIR, reference_table)
            write_json(staging / GX_RESULT_FILE, stable_gx_result(gx_result))
            result = summarise(gx_result, params, out_dir, table)
            write_summary(
                staging,
                ValidationSummary(
                    success=result.success,
                    fingerprint=fingerprint,
                    failed_critical=tuple(result.failed_critical),
                    failed_warnings=tuple(result.failed_warnings),
                    drift_reference=DriftComparison(reference, reference_fingerprint) if reference else None,
                ),
            )
    for name in result.failed_warnings:
        log.warning("validate: warning: %s", _describe_failure(name, result, gx_result, params))
    if not result.success:
        raise DataValidationError(failure_message(result, gx_result, params))
    return result


def summarise(gx_result: dict, params: ValidateParams, out_dir: Path, table: pd.DataFrame) -> ValidationResult:
    """Failed expectation names (critical / warning) and their offending ids, from GX's result JSON."""
    failed: dict[str, list[str]] = {}
    for item in gx_result["results"]:
        if item["success"]:
            continue
        name = item["expectation_config"]["meta"]["name"]
        ids = failed.setdefault(name, [])
        for row in item.get("result", {}).get("unexpected_index_list") or []:
            if isinstance(row, dict) and row.get("id") not in ids:
                ids.append(str(row.get("id")))
    failed_critical = [n for n in EXPECTATION_NAMES if n in failed and n in params.critical]
    failed_warnings = [n for n in EXPECTATION_NAMES if n in failed and n not in params.critical]
    return ValidationResult(
        out_dir=out_dir,
        success=not failed_critical,
        examples=len(table),
        counts={split: int(n) for split, n in table["split"].value_counts().sort_index().items()},
        failed_critical=failed_critical,
        failed_warnings=failed_warnings,
        offending_ids=failed,
    )


def failure_message(result: ValidationResult, gx_result: dict, params: ValidateParams) -> str:
    """One line: each failed critical expectation with a few offending ids, and where the Data Docs are."""
    parts = [_describe_failure(name, result, gx_result, params) for name in result.failed_critical]
    n = len(result.failed_critical)
    line = f"{n} critical expectation{'s' if n != 1 else ''} failed: " + "; ".join(parts)
    if result.failed_warnings:
        line += f" (warnings: {', '.join(result.failed_warnings)})"
    return line + f"; details in {result.data_docs}"


def _describe_failure(name: str, result: ValidationResult, gx_result: dict, params: ValidateParams) -> str:
    ids = result.offending_ids.get(name, [])
    if ids:
        shown = ids[: params.unexpected_examples_shown]
        more = f" and {len(ids) - len(shown)} more" if len(ids) > len(shown) else ""
        return f"{name} ({len(ids)} example{'s' if len(ids) != 1 else ''}: {', '.join(shown)}{more})"
    if name in DRIFT_CHECKS:
        return _describe_drift(name, gx_result)
    observed = [
        item["result"].get("observed_value")
        for item in gx_result["results"]
        if not item["success"] and item["expectation_config"]["meta"]["name"] == name
    ]
    if observed and observed[0] is not None:
        kwargs = next(
            item["expectation_config"]["kwargs"]
            for item in gx_result["results"]
            if item["expectation_config"]["meta"]["name"] == name
        )
        return f"{name} (observed {observed[0]}, expected {kwargs.get('min_value')}-{kwargs.get('max_value')})"
    return name


def _describe_drift(name: str, gx_result: dict) -> str:
    """no_drift_x (column: KL divergence 1.2 > 0.25, ...): each drifted column and how far."""
    parts = []
    for item in gx_result["results"]:
        config = item["expectation_config"]
        if item["success"] or config["meta"]["name"] != name:
            continue
        observed = item.get("result", {}).get("observed_value")
        shown = "infinite" if observed is None else f"{observed:.3g}"
        parts.append(f"{config['kwargs']['column']}: KL divergence {shown} > {config['kwargs']['threshold']:g}")
    return f"{name} ({', '.join(parts)} against the reference)" if parts else name
