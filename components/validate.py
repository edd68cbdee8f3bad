"""Step 2, validate: check the raw dataset with Great Expectations before anything trains on it.

First a per-example table is built from the raw dataset (one row per example: id,
split, image size/channels/format, whether image and trimap decode, trimap size and
the set of its values, class pixel fractions, breed/species, sha256 of the image
bytes). Then a Great Expectations 1.x suite runs on that table. Each expectation
carries a stable name in its `meta` (the names below); `params.critical` says which
names stop the pipeline, the others only warn:

    ids_unique                  every id appears once
    split_is_known              split is `trainval` or `test`
    image_decodes               the image file exists and decodes fully (a truncated JPEG does not)
    mask_decodes                the trimap file exists and decodes fully
    image_is_rgb                the image has 3 channels
    image_is_jpeg               the image bytes are a JPEG (the raw layout names them .jpg)
    mask_is_single_channel      the trimap is one channel
    mask_size_matches_image     trimap height x width equals the image's
    mask_values_in_trimap_set   trimap values are only 1 pet, 2 background, 3 border
    train_count_in_bounds       number of `trainval` examples within params bounds
    test_count_in_bounds        number of `test` examples within params bounds
    no_train_test_leakage       no id and no image content appears in both splits
    pet_fraction_in_range       pet pixel fraction within [min_pet_fraction, max_pet_fraction]
    border_fraction_in_range    border pixel fraction at most max_border_fraction

Against a reference (`--reference` or validate.drift.reference: the report folder
of an earlier accepted validation; "served", the default, is the one push kept with
the served version, the data the served model was trained on; see drift_reference),
the distribution of each statistic below is compared with the reference table's by
Great Expectations' ExpectColumnKLDivergenceToBeLessThan, the partition built from the
reference (validate.drift.bins bins over its range plus two open tails, smoothed; the
breeds' own fractions for class_id):

    no_drift_image_size         image_height and image_width
    no_drift_brightness         brightness: per-image mean luma, 0.299 R + 0.587 G + 0.114 B
    no_drift_colour             red_share, green_share, blue_share: each channel's share of the mean colour
    no_drift_class_balance      class_id (the breed) fractions
    no_drift_pet_area           pet_fraction
    no_drift_border_area        border_fraction

The scan computes these columns in its one pass and writes them into examples.csv, so
this run's report can be the next run's reference.

Outputs (written whole, even when validation fails, so a person can inspect them):
`examples.csv` (the table), `gx_result.json` (GX's validation result, COMPLETE format,
offending rows named by id), `data_docs/` (GX Data Docs; `data_docs_page` names the page to open) and `summary.json`
(the contract preprocess checks, see validation_gate). A failed critical expectation
then raises DataValidationError with a one-line summary naming each failed
expectation, a few offending ids and where the Data Docs are.

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

import contextlib
import hashlib
import io
import logging
import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from petseg.components import model_store, storage
from petseg.components.errors import DataValidationError, ParamsError, PetsegError, stable_text
from petseg.components.fsutil import atomic_directory, check_output_dir, io_errors_named, write_json
from petseg.components.params import SERVED_REFERENCE, DriftParams, PushParams, ValidateParams
from petseg.components.progress import progress_bar
from petseg.components.rawdata import SPLITS, RawExample, dataset_fingerprint, read_index
from petseg.components.validation_gate import (
    DRIFT_REFERENCE_FILES,
    SUMMARY_FILE,
    TABLE_FILE,
    require_drift_reference,
    write_summary,
)

log = logging.getLogger(__name__)

GX_RESULT_FILE = "gx_result.json"
DATA_DOCS_DIR = "data_docs"
SUITE_NAME = "petseg_raw_dataset"
TRIMAP_VALUES = (1, 2, 3)  # pet, background, border
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")
# no_drift_* name -> (the table columns compared, the DriftParams threshold field)
DRIFT_CHECKS: dict[str, tuple[tuple[str, ...], str]] = {
    "no_drift_image_size": (("image_height", "image_width"), "max_kl_image_size"),
    "no_drift_brightness": (("brightness",), "max_kl_brightness"),
    "no_drift_colour": (("red_share", "green_share", "blue_share"), "max_kl_colour"),
    "no_drift_class_balance": (("class_id",), "max_kl_class_balance"),
    "no_drift_pet_area": (("pet_fraction",), "max_kl_pet_area"),
    "no_drift_border_area": (("border_fraction",), "max_kl_border_area"),
}
CATEGORICAL_DRIFT_COLUMNS = ("class_id",)
DRIFT_NAMES = tuple(DRIFT_CHECKS)

EXPECTATION_NAMES = (
    "ids_unique",
    "split_is_known",
    "image_decodes",
    "mask_decodes",
    "image_is_rgb",
    "image_is_jpeg",
    "mask_is_single_channel",
    "mask_size_matches_image",
    "mask_values_in_trimap_set",
    "train_count_in_bounds",
    "test_count_in_bounds",
    "no_train_test_leakage",
    "pet_fraction_in_range",
    "border_fraction_in_range",
    *DRIFT_NAMES,
)

# Each worker process costs about a second to start, so give it at least this many examples.
_MIN_EXAMPLES_PER_WORKER = 128


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
                success=result.success,
                fingerprint=fingerprint,
                failed_critical=result.failed_critical,
                failed_warnings=result.failed_warnings,
                reference={"dir": reference, "fingerprint": reference_fingerprint} if reference else None,
            )
    for name in result.failed_warnings:
        log.warning("validate: warning: %s", _describe_failure(name, result, gx_result, params))
    if not result.success:
        raise DataValidationError(failure_message(result, gx_result, params))
    return result


def check_critical_names(critical: Iterable[str]) -> None:
    """ParamsError naming the first entry of validate.critical that is not an expectation of the suite."""
    for name in critical:
        if name not in EXPECTATION_NAMES:
            raise ParamsError(
                f"'validate.critical' names unknown expectation {name!r} (known: {', '.join(EXPECTATION_NAMES)})"
            )


# -------------------------------------------------------------------- reference
def drift_reference(choice: str, store: PushParams) -> str | None:
    """The report folder the no_drift_* expectations compare with, or None for no drift check.

    `choice` is `--reference` or validate.drift.reference: "" (none), a report
    folder or object-store URI, or "served": the report push kept with the
    version the model store at push.model_base_path serves (the data the served
    model was trained on). Nothing served yet, or a version pushed without a
    report, means no drift check; a line says which.
    """
    if choice != SERVED_REFERENCE:
        return choice or None
    where = model_store.model_root(store)
    try:
        version, folder = model_store.served_drift_reference(store)
    except OSError as exc:
        raise PetsegError(
            f"cannot read which version is served at {where} ({stable_text(exc)}), the drift reference "
            'validate.drift.reference "served" asks for; fix access to the store, or pass --reference '
            'with a report folder ("" for none)'
        ) from None
    if version is None:
        print(f"validate: no version served at {where} yet: no drift check", flush=True)
    elif folder is None:
        print(
            f"validate: served version {version} at {where} has no drift reference (pushed without its "
            "validation report): no drift check",
            flush=True,
        )
    else:
        print(f"validate: drift reference: the data served version {version} was trained on ({folder})", flush=True)
    return folder


def read_reference(reference: str) -> tuple[pd.DataFrame, str]:
    """The per-example table of an accepted validation (local folder or URI), and its data's fingerprint.

    Raises PetsegError (one line) when the folder is not such a report: no
    summary or table, a validation that failed, or a table from before the
    columns the drift checks compare.
    """
    what = f"--reference {reference}"
    with storage.local_copy(reference, only=DRIFT_REFERENCE_FILES) as local:
        summary = require_drift_reference(local, what, shown_as=reference)
        try:
            table = pd.read_csv(Path(local) / TABLE_FILE)
        except (OSError, ValueError) as exc:
            raise PetsegError(
                f"{what}: cannot read {TABLE_FILE} ({stable_text(exc)}); pass the "
                "report folder of an accepted `petseg validate`"
            ) from None
    missing = [c for names, _ in DRIFT_CHECKS.values() for c in names if c not in table.columns]
    if missing:
        raise PetsegError(
            f"{what}: {TABLE_FILE} has no {', '.join(missing)} column (written "
            "by an older petseg); run `petseg validate` on the reference data again"
        )
    return table, str(summary.get("fingerprint", ""))


def drift_partition(reference: pd.Series, column: str, drift: DriftParams) -> dict:
    """GX's partition_object for `column` built from the reference's values.

    class_id: the breeds' fractions ({"values", "weights"}). Otherwise
    drift.bins equal bins over the reference's range with an open bin at each end
    ({"bins": [-inf, ..., inf], "weights"}); every bin gets drift.smoothing
    pseudo-counts, so a value where the reference has none gives a finite divergence.
    """
    values = pd.to_numeric(reference, errors="coerce").dropna().to_numpy(dtype=float)
    if values.size == 0:
        raise PetsegError(f"--reference: {TABLE_FILE} has no value in column {column}; it cannot be a reference")
    if column in CATEGORICAL_DRIFT_COLUMNS:
        classes, class_counts = np.unique(values.astype(int), return_counts=True)
        return {"values": classes.tolist(), "weights": (class_counts / class_counts.sum()).tolist()}
    low, high = float(values.min()), float(values.max())
    if high <= low:  # one value: a bin around it
        low, high = low - 0.5, high + 0.5
    # GX counts [edge, next edge), numpy closes its last bin: lift the top edge so the maximum is inside for both.
    inner = np.linspace(low, np.nextafter(high, np.inf), drift.bins + 1)
    inside, _ = np.histogram(values, bins=inner)
    counts = np.concatenate(([0], inside, [0])).astype(float) + drift.smoothing
    return {"bins": [-np.inf, *inner.tolist(), np.inf], "weights": (counts / counts.sum()).tolist()}


# ------------------------------------------------------------------------ table
def example_table(raw_dir: Path, examples: list[RawExample], workers: int = 0) -> pd.DataFrame:
    """One row of statistics per example, in index order, plus the cross-example leakage columns."""
    stats = partial(example_stats, raw_dir)
    n_workers = min(workers or os.cpu_count() or 1, len(examples) // _MIN_EXAMPLES_PER_WORKER)
    if n_workers <= 1:
        rows = list(progress_bar(map(stats, examples), total=len(examples), desc="validate (scan)", unit="ex"))
    else:
        # spawn, not fork: the caller may have threads (TensorFlow, KFP) that fork would copy broken.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(n_workers, mp_context=context) as pool:
            chunk = max(1, min(32, len(examples) // (4 * n_workers)))
            rows = list(
                progress_bar(
                    pool.map(stats, examples, chunksize=chunk), total=len(examples), desc="validate (scan)", unit="ex"
                )
            )
    table = pd.DataFrame(rows, columns=list(_EMPTY_ROW))
    for column in ("image_height", "image_width", "image_channels", "mask_height", "mask_width", "mask_channels"):
        table[column] = table[column].astype("Int64")
    table["id_split_count"] = table.groupby("id")["split"].transform("nunique").astype("Int64")
    table["image_sha256_split_count"] = (
        table.groupby("image_sha256", dropna=True)["split"].transform("nunique").astype("Int64")
    )
    return table


_EMPTY_ROW: dict[str, Any] = {
    "id": "",
    "split": "",
    "class_id": 0,
    "breed": "",
    "species": "",
    "image_decodes": False,
    "image_error": "",
    "image_format": None,
    "image_mode": None,
    "image_height": None,
    "image_width": None,
    "image_channels": None,
    "image_size": None,
    "mask_decodes": False,
    "mask_error": "",
    "mask_height": None,
    "mask_width": None,
    "mask_channels": None,
    "mask_size": None,
    "mask_values": None,
    "pet_fraction": np.nan,
    "background_fraction": np.nan,
    "border_fraction": np.nan,
    "brightness": np.nan,
    "red_share": np.nan,
    "green_share": np.nan,
    "blue_share": np.nan,
    "image_sha256": None,
}


def example_stats(raw_dir: Path, example: RawExample) -> dict[str, Any]:
    """The table row of one example; a file that is missing or does not decode gives `*_decodes` False."""
    row = dict(
        _EMPTY_ROW,
        id=example.id,
        split=example.split,
        class_id=example.class_id,
        breed=example.breed,
        species=example.species,
    )
    row.update(_image_stats(Path(raw_dir) / example.image))
    row.update(_mask_stats(Path(raw_dir) / example.trimap))
    return row


def _image_stats(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return {"image_error": f"cannot read: {exc.strerror or exc}"}
    out: dict[str, Any] = {"image_sha256": hashlib.sha256(data).hexdigest()}
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decodes every pixel; PIL raises on a truncated file
            width, height = image.size
            out.update(
                image_decodes=True,
                image_format=image.format,
                image_mode=image.mode,
                image_height=height,
                image_width=width,
                image_channels=len(image.getbands()),
                image_size=f"{height}x{width}",
                **_colour_stats(image),
            )
    except Exception as exc:  # PIL raises many exception types for a broken file
        out["image_error"] = f"{type(exc).__name__}: {stable_text(exc)}"
    return out


def _colour_stats(image: Image.Image) -> dict[str, float]:
    """Mean luma (0-255) and each channel's share of the mean colour, from the pixels already decoded.

    The means come from PIL's per-channel histograms (counted in C, about as
    fast as the decode itself; a numpy mean over the pixels took twice as long again).
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    histograms = np.asarray(rgb.histogram(), dtype=np.float64).reshape(3, 256)
    means = histograms @ np.arange(256) / histograms.sum(axis=1)
    total = float(means.sum())
    shares = means / total if total > 0 else np.full(3, 1 / 3)
    return {
        "brightness": float(np.dot(means, LUMA_WEIGHTS)),
        "red_share": float(shares[0]),
        "green_share": float(shares[1]),
        "blue_share": float(shares[2]),
    }


def _mask_stats(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return {"mask_error": f"cannot read: {exc.strerror or exc}"}
    try:
        with Image.open(io.BytesIO(data)) as mask:
            pixels = np.asarray(mask)
    except Exception as exc:  # PIL raises many exception types for a broken file
        return {"mask_error": f"{type(exc).__name__}: {stable_text(exc)}"}
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    plane = pixels if pixels.ndim == 2 else pixels[..., 0]
    height, width = plane.shape
    values, value_counts = np.unique(plane, return_counts=True)
    counts = dict(zip(values.tolist(), value_counts.tolist(), strict=True))
    return {
        "mask_decodes": True,
        "mask_height": height,
        "mask_width": width,
        "mask_channels": channels,
        "mask_size": f"{height}x{width}",
        "mask_values": " ".join(str(v) for v in values.tolist()),
        "pet_fraction": counts.get(1, 0) / plane.size,
        "background_fraction": counts.get(2, 0) / plane.size,
        "border_fraction": counts.get(3, 0) / plane.size,
    }


# ------------------------------------------------------------------------ suite
def build_expectations(params: ValidateParams, reference: pd.DataFrame | None = None) -> list:
    """The suite's GX expectations, each named in meta["name"], severity set from params.critical.

    With a reference table, the no_drift_* expectations too (one per compared column).
    """
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    def named(name: str, expectation_cls, description: str, **kwargs):
        severity = "critical" if name in params.critical else "warning"
        return expectation_cls(
            meta={"name": name}, severity=severity, description=f"{name} ({severity}): {description}", **kwargs
        )

    def count_in_bounds(name: str, split: str, lo: int, hi: int):
        return named(
            name,
            gxe.ExpectTableRowCountToBeBetween,
            f"between {lo} and {hi} examples in split {split}",
            min_value=lo,
            max_value=hi,
            row_condition=Column("split") == split,
        )

    trimap_digits = "".join(str(v) for v in TRIMAP_VALUES)
    return [
        named("ids_unique", gxe.ExpectColumnValuesToBeUnique, "every id appears once", column="id"),
        named(
            "split_is_known",
            gxe.ExpectColumnValuesToBeInSet,
            f"split is one of {', '.join(SPLITS)}",
            column="split",
            value_set=list(SPLITS),
        ),
        named(
            "image_decodes",
            gxe.ExpectColumnValuesToBeInSet,
            "the image exists and decodes fully",
            column="image_decodes",
            value_set=[True],
        ),
        named(
            "mask_decodes",
            gxe.ExpectColumnValuesToBeInSet,
            "the trimap exists and decodes fully",
            column="mask_decodes",
            value_set=[True],
        ),
        named(
            "image_is_rgb",
            gxe.ExpectColumnValuesToBeInSet,
            "the image has 3 channels",
            column="image_channels",
            value_set=[3],
        ),
        named(
            "image_is_jpeg",
            gxe.ExpectColumnValuesToBeInSet,
            "the image bytes are a JPEG",
            column="image_format",
            value_set=["JPEG"],
        ),
        named(
            "mask_is_single_channel",
            gxe.ExpectColumnValuesToBeInSet,
            "the trimap has one channel",
            column="mask_channels",
            value_set=[1],
        ),
        named(
            "mask_size_matches_image",
            gxe.ExpectColumnPairValuesToBeEqual,
            "trimap height x width equals the image's",
            column_A="image_size",
            column_B="mask_size",
            ignore_row_if="either_value_is_missing",
        ),
        named(
            "mask_values_in_trimap_set",
            gxe.ExpectColumnValuesToMatchRegex,
            "trimap values are only 1 (pet), 2 (background), 3 (border)",
            column="mask_values",
            regex=f"^[{trimap_digits}](?: [{trimap_digits}])*$",
        ),
        count_in_bounds("train_count_in_bounds", "trainval", params.min_train_examples, params.max_train_examples),
        count_in_bounds("test_count_in_bounds", "test", params.min_test_examples, params.max_test_examples),
        named(
            "no_train_test_leakage",
            gxe.ExpectColumnValuesToBeInSet,
            "no id appears in more than one split",
            column="id_split_count",
            value_set=[1],
        ),
        named(
            "no_train_test_leakage",
            gxe.ExpectColumnValuesToBeInSet,
            "no image content (sha256) appears in more than one split",
            column="image_sha256_split_count",
            value_set=[1],
        ),
        named(
            "pet_fraction_in_range",
            gxe.ExpectColumnValuesToBeBetween,
            f"pet pixel fraction between {params.min_pet_fraction} and {params.max_pet_fraction}",
            column="pet_fraction",
            min_value=params.min_pet_fraction,
            max_value=params.max_pet_fraction,
        ),
        named(
            "border_fraction_in_range",
            gxe.ExpectColumnValuesToBeBetween,
            f"border pixel fraction at most {params.max_border_fraction}",
            column="border_fraction",
            min_value=0.0,
            max_value=params.max_border_fraction,
        ),
        *(drift_expectations(reference, params.drift, named) if reference is not None else []),
    ]


def drift_expectations(reference: pd.DataFrame, drift: DriftParams, named) -> list:
    """One ExpectColumnKLDivergenceToBeLessThan per compared column, its partition from the reference."""
    import great_expectations.expectations as gxe

    expectations = []
    for name, (columns, threshold_field) in DRIFT_CHECKS.items():
        threshold = getattr(drift, threshold_field)
        for column in columns:
            categorical = column in CATEGORICAL_DRIFT_COLUMNS
            expectations.append(
                named(
                    name,
                    gxe.ExpectColumnKLDivergenceToBeLessThan,
                    f"KL divergence of {column} from the reference at most {threshold} "
                    f"(validate.drift.{threshold_field})",
                    column=column,
                    partition_object=drift_partition(reference[column], column, drift),
                    threshold=threshold,
                    tail_weight_holdout=drift.new_class_weight if categorical else 0.0,
                    bucketize_data=not categorical,
                )
            )
    return expectations


def run_suite(
    table: pd.DataFrame, params: ValidateParams, docs_dir: Path, reference: pd.DataFrame | None = None
) -> dict:
    """Run the suite on `table` in an ephemeral GX context; build Data Docs into `docs_dir`; the result as JSON."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    site = {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(Path(docs_dir).resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={"petseg": site},
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    context = gx.get_context(project_config=config, mode="ephemeral")
    batch = (
        context.data_sources.add_pandas("raw_dataset")
        .add_dataframe_asset("examples")
        .add_batch_definition_whole_dataframe("all_examples")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME))
    for expectation in build_expectations(params, reference):
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="validate_raw_dataset", data=batch, suite=suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": table},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["id"]},
        run_id=gx.RunIdentifier(run_name="petseg-validate"),
    )
    with _data_docs_errors_raised(docs_dir):
        context.build_data_docs(site_names=["petseg"])
    return result.to_json_dict()


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _data_docs_errors_raised(docs_dir: Path) -> Iterator[None]:
    """Raise, instead of logging a traceback and going on, when GX fails to write a Data Docs page.

    GX's site builder catches every exception (a full disk included), logs it with its traceback
    and leaves the docs incomplete. Here the log stays quiet and the first failure is raised: an
    OSError (so the step reports it in one line, like its own I/O errors) or a PetsegError.
    """
    logger = logging.getLogger("great_expectations.render.renderer.site_builder")
    handler, propagate = _ErrorRecords(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    if handler.messages:
        os_error = re.search(r"\[Errno (\d+)\] ([^\"]+)", handler.messages[0])
        if os_error:
            raise OSError(int(os_error[1]), os_error[2].strip(), str(docs_dir))
        detail = next(
            (
                line.strip()
                for line in handler.messages[0].splitlines()
                if line.strip() and "Detailed information follows" not in line
            ),
            "unknown error",
        )
        raise PetsegError(f"{docs_dir}: Great Expectations could not write the Data Docs ({detail[:200]})")


GX_TIMESTAMP_FIELDS = ("meta.run_id.run_time", "meta.validation_time", "meta.batch_markers.ge_load_time")


def stable_gx_result(gx_result: dict) -> dict:
    """GX's result without its random ids (result, validation and expectation UUIDs of an ephemeral
    context, meaningless outside it), so two runs on the same data differ only in GX_TIMESTAMP_FIELDS."""
    stable = {k: v for k, v in gx_result.items() if k != "id"}
    stable["meta"] = {k: v for k, v in gx_result.get("meta", {}).items() if k != "validation_id"}
    stable["results"] = [
        {**item, "expectation_config": {k: v for k, v in item["expectation_config"].items() if k != "id"}}
        for item in gx_result.get("results", [])
    ]
    return stable


# ---------------------------------------------------------------------- summary
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
