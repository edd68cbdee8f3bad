"""`petseg download`: fetch the dataset into the raw layout (components/download.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from petseg.cli.common import split_counts
from petseg.components.contracts import layout
from petseg.components.core.params import Params


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="fetch the dataset (TFDS, archives or synthetic) into the raw layout")
    p.add_argument("--out", type=Path, default=layout.RAW_DIR, help="raw dataset folder (default: %(default)s)")
    p.set_defaults(handler=_run_download)


def _run_download(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.download import download

    result = download(params.data, args.out)
    print(
        f"download: {result.source} -> {result.out_dir}: {split_counts(result.counts)}; "
        f"{len(result.repaired)} repaired, {len(result.dropped)} dropped"
    )
