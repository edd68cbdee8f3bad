"""`petseg train`: train and export the SavedModel (components/train.py), one process or N local workers."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from petseg.components.contracts import layout
from petseg.components.core.errors import PetsegError
from petseg.components.core.params import Params


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the U-Net on the records and export the best model as a SavedModel")
    p.add_argument(
        "--records",
        type=Path,
        default=layout.RECORDS_DIR,
        help="records folder from preprocess (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=layout.MODELS_DIR,
        help="model folder: savedmodel/ and checkpoints/ (default: %(default)s)",
    )
    p.add_argument(
        "--live", type=Path, default=layout.LIVE_DIR, help="DVCLive metrics and plots folder (default: %(default)s)"
    )
    p.add_argument(
        "--local-workers",
        type=int,
        default=None,
        metavar="N",
        help="start N worker processes on 127.0.0.1 (TF_CONFIG each, MultiWorkerMirroredStrategy; "
        "worker 0 writes) for development and tests; default: one process, or the cluster "
        "TF_CONFIG describes (in a Kubeflow Trainer pod, built from the JobSet pod's names)",
    )
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.ml.cluster import export_jobset_tf_config
    from petseg.components.train import train

    if args.local_workers is not None:
        return _run_local_workers(args)
    # A Kubeflow Trainer (JobSet) pod has no TF_CONFIG: build it from the pod's own names first.
    built = export_jobset_tf_config()
    if built is not None:
        print(f"train: TF_CONFIG from this JobSet pod: {built}", file=sys.stderr, flush=True)
    result = train(args.records, params.model, params.train, args.out, args.live)
    best = result.best_metrics
    print(
        f"train: {params.model.architecture} {result.epochs_run} epochs"
        + (f" (resumed after epoch {result.resumed_from_epoch})" if result.resumed_from_epoch else "")
        + (", stopped early" if result.stopped_early else "")
        + f"; best epoch {result.best_epoch}: val mean IoU {best.get('val_mean_iou', float('nan')):.4f}, "
        + f"pixel accuracy {best.get('val_accuracy', float('nan')):.4f} -> {result.savedmodel}"
    )


def _run_local_workers(args: argparse.Namespace) -> None:
    """`petseg train --local-workers N`: this same command N times on 127.0.0.1, one TF_CONFIG each."""
    from petseg.components.ml.cluster import TF_CONFIG, run_local_workers

    if args.local_workers < 1:
        raise PetsegError(f"--local-workers must be at least 1, got {args.local_workers}")
    if os.environ.get(TF_CONFIG, "").strip():
        raise PetsegError(
            f"--local-workers starts its own workers, but {TF_CONFIG} is already set; "
            f"unset {TF_CONFIG} or drop --local-workers"
        )
    command = [
        sys.executable,
        "-m",
        "petseg",
        "train",
        "--records",
        str(args.records),
        "--out",
        str(args.out),
        "--live",
        str(args.live),
        "--params",
        str(args.params),
    ]
    run = run_local_workers(command, args.local_workers)
    print(f"train: {args.local_workers} local workers finished in {run.seconds:.1f} s")
