"""`petseg push`: publish a blessed SavedModel as the next TF Serving version (components/push.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from petseg.components.contracts import layout
from petseg.components.core.params import Params


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="publish a blessed SavedModel as the next TF Serving version (declines unblessed)")
    p.add_argument(
        "--model",
        type=Path,
        default=layout.savedmodel_dir(layout.MODELS_DIR),
        help="SavedModel folder (default: %(default)s)",
    )
    p.add_argument(
        "--evaluation",
        type=Path,
        default=layout.EVALUATION_DIR,
        help=f"evaluate's output folder holding {layout.BLESSING_FILE} (default: %(default)s)",
    )
    p.add_argument(
        "--records",
        type=Path,
        default=layout.RECORDS_DIR,
        help="TFRecords folder whose manifest hash goes into the lineage (default: %(default)s)",
    )
    p.add_argument(
        "--validation",
        type=Path,
        default=None,
        help="accepted validation report of the data the model was trained on (e.g. reports/validation): "
        "kept with the version as the drift reference later validations compare with (default: none kept)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=layout.PUSH_RECORD,
        help="push record: the outcome as JSON, pushed, declined or failed (default: %(default)s)",
    )
    p.set_defaults(handler=_run_push)


def _run_push(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.contracts.lineage import collect_lineage
    from petseg.components.push import push

    lineage = collect_lineage(args.records, params)
    result = push(args.model, args.evaluation, params.push, lineage, args.out, drift_reference=args.validation)
    if result.status == "pushed":
        removed = f"; removed old versions {result.removed_versions}" if result.removed_versions else ""
        print(f"push: {result.path}: {result.reason}{removed}")
        if args.validation is None:
            print(f"push: no --validation given: version {result.version} keeps no drift reference")
    else:
        print(f"push: {result.status}: {result.reason}")
