"""`petseg validate`: the drift reference, then Great Expectations on the raw dataset (components/validate.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from petseg.cli.common import split_counts
from petseg.components.contracts import layout
from petseg.components.core.params import Params


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check the raw dataset with Great Expectations; stop on a critical failure")
    p.add_argument("--raw", type=Path, default=layout.RAW_DIR, help="raw dataset folder (default: %(default)s)")
    p.add_argument(
        "--out",
        type=Path,
        default=layout.VALIDATION_DIR,
        help="report folder: table, GX result, Data Docs, summary (default: %(default)s)",
    )
    p.add_argument(
        "--reference",
        default=None,
        help="report folder (or URI) of an earlier accepted validation to run the no_drift_* expectations "
        'against; "served": the one push kept with the served version; "" = none '
        "(default: validate.drift.reference)",
    )
    p.set_defaults(handler=_run_validate)


def _run_validate(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.drift_reference import drift_reference
    from petseg.components.store.model_store import ModelStore
    from petseg.components.validate import validate_dataset

    choice = params.validate.drift.reference if args.reference is None else args.reference
    reference = drift_reference(choice, ModelStore.from_params(params.push))
    result = validate_dataset(args.raw, params.validate, args.out, reference=reference)
    warnings = f"; warnings: {', '.join(result.failed_warnings)}" if result.failed_warnings else ""
    print(
        f"validate: {args.raw} passed ({result.examples} examples: {split_counts(result.counts)})"
        f"{warnings}; report {result.data_docs}"
    )
