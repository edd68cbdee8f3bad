"""validate's Great Expectations suite: one expectation per name of core/expectations.py.

Built and run in an ephemeral GX 1.x context on the per-example table (a pandas
dataframe asset), with COMPLETE results so that offending rows are named by id, and
Data Docs written into the report folder. Each expectation's severity comes from
validate.critical.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from petseg.components.checks.drift import drift_expectations
from petseg.components.checks.scan import TRIMAP_VALUES
from petseg.components.contracts.rawdata import SPLITS
from petseg.components.core.errors import PetsegError
from petseg.components.core.params import ValidateParams

SUITE_NAME = "petseg_raw_dataset"


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
