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
    p.add_argument(
        "--training",
        type=Path,
        default=layout.MODELS_DIR,
        help=f"train's output folder, whose {layout.TRAIN_METRICS_FILE} the model card shows (default: %(default)s)",
    )
    p.add_argument(
        "--live",
        type=Path,
        default=layout.LIVE_DIR,
        help="DVCLive folder whose per-epoch curves the model card draws (default: %(default)s)",
    )
    p.add_argument(
        "--card-out",
        type=Path,
        default=layout.MODEL_CARD_REPORT,
        help="folder that receives a copy of the model card, whatever the outcome; the store keeps the "
        f"pushed version's in <version>/{layout.MODEL_CARD_DIR}/ (default: %(default)s)",
    )
    p.set_defaults(handler=_run_push)


def _run_push(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.card.sources import CardSources
    from petseg.components.contracts.lineage import collect_lineage
    from petseg.components.contracts.serving_runtime import TF_SERVING_VERSION
    from petseg.components.push import push

    lineage = collect_lineage(args.records, params)
    card = CardSources(
        records_dir=args.records,
        train_metrics=layout.train_metrics_file(args.training),
        live_dir=args.live,
        tf_serving_release=TF_SERVING_VERSION,
        use=params.card,
    )
    result = push(
        args.model,
        args.evaluation,
        params.push,
        lineage,
        args.out,
        drift_reference=args.validation,
        card=card,
        card_out=args.card_out,
    )
    if result.status == "pushed":
        removed = f"; removed old versions {result.removed_versions}" if result.removed_versions else ""
        print(f"push: {result.path}: {result.reason}{removed}")
        if args.validation is None:
            print(f"push: no --validation given: version {result.version} keeps no drift reference")
    else:
        print(f"push: {result.status}: {result.reason}")
    if result.card:
        print(f"push: model card: {result.card}/{layout.MODEL_CARD_HTML}")
    print(f"push: model card copy: {args.card_out / layout.MODEL_CARD_HTML}")
