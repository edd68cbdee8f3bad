"""What several commands print the same way."""

from __future__ import annotations


def split_counts(counts: dict[str, int]) -> str:
    """'test 60, trainval 240': examples per split, for one-line results."""
    return ", ".join(f"{split} {n}" for split, n in sorted(counts.items()))
