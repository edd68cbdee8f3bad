"""`petseg preprocess`: the validated raw dataset as sharded TFRecords (components/preprocess.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from petseg.components.contracts import layout
from petseg.components.core.params import Params


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="resize, split and write the validated dataset as sharded TFRecords")
    p.add_argument("--raw", type=Path, default=layout.RAW_DIR, help="raw dataset folder (default: %(default)s)")
    p.add_argument(
        "--validation",
        type=Path,
        default=layout.VALIDATION_DIR,
        help="validate's report folder holding summary.json (default: %(default)s)",
    )
    p.add_argument("--out", type=Path, default=layout.RECORDS_DIR, help="records folder (default: %(default)s)")
    p.set_defaults(handler=_run_preprocess)


def _run_preprocess(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.preprocess import preprocess

    result = preprocess(args.raw, args.validation, params.preprocess, args.out)
    print(
        f"preprocess: {args.raw} -> {result.out_dir} ({result.image_size} px, {result.workers} workers): "
        + ", ".join(f"{split} {result.counts[split]} in {result.shards[split]} shards" for split in result.counts)
    )
