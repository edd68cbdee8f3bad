"""Progress for long steps: one policy for every step's bar."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm


def progress_bar(iterable: Iterable | None = None, *, total: int | None, desc: str, unit: str) -> tqdm:
    """A tqdm bar on stderr: live on a terminal, a line every 10 s when logged (DVC, CI, Kubeflow)."""
    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        mininterval=0.5 if interactive else 10.0,
        disable=None if interactive else False,
    )
