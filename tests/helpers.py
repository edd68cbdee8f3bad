"""Helpers that several test modules share (fixtures stay in conftest.py)."""

from __future__ import annotations

import numpy as np

from petseg.components.metrics import SegmentationMetrics, confusion_counts
from petseg.components.records import CLASS_NAMES

NAMES = CLASS_NAMES


def reference_metrics(true: np.ndarray, pred: np.ndarray, k: int = 3) -> tuple[list, float, float]:
    """Per-class IoU from boolean masks (None when the class is in neither), mean over the rest, accuracy."""
    ious = []
    for c in range(k):
        inter = np.logical_and(true == c, pred == c).sum()
        union = np.logical_or(true == c, pred == c).sum()
        ious.append(inter / union if union else None)
    present = [v for v in ious if v is not None]
    return ious, float(np.mean(present)), float(np.mean(true == pred))


def metrics_of(true, pred) -> SegmentationMetrics:
    return SegmentationMetrics(NAMES, confusion_counts(true, pred, 3))
