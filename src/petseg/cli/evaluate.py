"""`petseg evaluate`: score the SavedModel and the served one; bless it or not (components/evaluate.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from petseg.components.contracts import layout
from petseg.components.core.params import Params


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score the SavedModel (and the served one) on the test shards; bless it or not")
    p.add_argument(
        "--model",
        type=Path,
        default=layout.savedmodel_dir(layout.MODELS_DIR),
        help="SavedModel folder (default: %(default)s)",
    )
    p.add_argument("--records", type=Path, default=layout.RECORDS_DIR, help="TFRecords folder (default: %(default)s)")
    p.add_argument(
        "--out",
        type=Path,
        default=layout.EVALUATION_DIR,
        help="metrics, blessing and plots folder (default: %(default)s)",
    )
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.evaluate import evaluate

    result = evaluate(args.model, args.records, params.evaluate, params.push, args.out)
    served = (
        f", served v{result.baseline_version} {result.baseline_mean_iou:.4f}"
        if result.baseline_mean_iou is not None
        else ""
    )
    print(
        f"evaluate: {result.test_examples} test images: mean IoU {result.mean_iou:.4f}, "
        f"pixel accuracy {result.pixel_accuracy:.4f}{served} -> "
        f"{'BLESSED' if result.blessed else 'NOT BLESSED'} ({result.reason}); see {result.out_dir}"
    )
