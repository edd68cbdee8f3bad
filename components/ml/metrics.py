"""Segmentation metrics from a confusion matrix: per-class IoU, mean IoU, pixel accuracy.

From the confusion matrix C (rows true class, columns predicted):

    IoU_k          = C[k,k] / (row_k + col_k - C[k,k])
    mean IoU       = mean of IoU_k over the classes that occur in truth or prediction
    pixel accuracy = trace(C) / sum(C)

A class absent from both the truth and the predictions has no IoU (None) and
is left out of the mean, as Keras' MeanIoU does: an empty class is neither
right nor wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_counts(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[K, K] int64 pixel counts, rows true class, columns predicted class.

    Raises ValueError when a class id is outside 0..K-1 or the shapes differ.
    """
    true = np.asarray(true).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    if true.shape != pred.shape:
        raise ValueError(f"truth has {true.size} pixels, prediction {pred.size}")
    for name, values in (("true", true), ("predicted", pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            bad = values[(values < 0) | (values >= num_classes)][0]
            raise ValueError(f"{name} class id {bad} is outside 0..{num_classes - 1}")
    return np.bincount(true * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class SegmentationMetrics:
    """Per-class IoU, mean IoU and pixel accuracy of one confusion matrix."""

    class_names: tuple[str, ...]
    confusion: np.ndarray

    @property
    def class_iou(self) -> dict[str, float | None]:
        """IoU per class name; None for a class absent from both truth and prediction."""
        c = self.confusion.astype(np.float64)
        tp = np.diag(c)
        union = c.sum(axis=0) + c.sum(axis=1) - tp
        return {name: (float(tp[k] / union[k]) if union[k] > 0 else None) for k, name in enumerate(self.class_names)}

    @property
    def mean_iou(self) -> float:
        present = [v for v in self.class_iou.values() if v is not None]
        return float(np.mean(present)) if present else 0.0

    @property
    def pixel_accuracy(self) -> float:
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else 0.0

    @property
    def pixels(self) -> int:
        return int(self.confusion.sum())

    def summary(self) -> dict:
        return {"mean_iou": self.mean_iou, "pixel_accuracy": self.pixel_accuracy, "iou": self.class_iou}

    def to_dict(self) -> dict:
        return {
            **self.summary(),
            "pixels": self.pixels,
            "confusion_matrix": {
                "labels": list(self.class_names),
                "rows_true_columns_predicted": self.confusion.tolist(),
            },
        }
