"""Metric math: the confusion matrix and IoU/accuracy against NumPy and Keras references."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import NAMES, metrics_of, reference_metrics

from petseg.components.ml.metrics import SegmentationMetrics, confusion_counts


def test_metrics_match_numpy_reference_and_chunks_add_up():
    rng = np.random.default_rng(1)
    true = rng.integers(0, 3, size=(5, 17, 23))
    pred = np.where(rng.random(true.shape) < 0.3, rng.integers(0, 3, size=true.shape), true)

    whole = confusion_counts(true, pred, 3)
    chunked = sum(confusion_counts(true[i : i + 2], pred[i : i + 2], 3) for i in range(0, 5, 2))
    np.testing.assert_array_equal(whole, chunked)
    for t in range(3):
        for p in range(3):
            assert whole[t, p] == np.sum((true == t) & (pred == p))

    ious, mean_iou, accuracy = reference_metrics(true, pred)
    metrics = SegmentationMetrics(NAMES, whole)
    assert list(metrics.class_iou.values()) == pytest.approx(ious)
    assert metrics.mean_iou == pytest.approx(mean_iou)
    assert metrics.pixel_accuracy == pytest.approx(accuracy)

    keras_miou = tf.keras.metrics.MeanIoU(num_classes=3)
    keras_miou.update_state(true.reshape(-1), pred.reshape(-1))
    assert metrics.mean_iou == pytest.approx(float(keras_miou.result()), abs=1e-6)


def test_class_absent_from_truth_and_prediction_has_no_iou_and_is_left_out_of_the_mean():
    true = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1]])  # class 2 (border) in neither
    metrics = metrics_of(true, pred)
    assert metrics.class_iou == {"pet": pytest.approx(0.5), "background": pytest.approx(2 / 3), "border": None}
    assert metrics.mean_iou == pytest.approx((0.5 + 2 / 3) / 2)
    assert metrics.to_dict()["iou"]["border"] is None


def test_class_predicted_but_absent_from_truth_counts_as_zero_iou():
    metrics = metrics_of(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 2]))
    assert metrics.class_iou["border"] == 0.0
    assert metrics.mean_iou == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert metrics.pixel_accuracy == pytest.approx(0.75)


def test_confusion_counts_rejects_class_ids_out_of_range():
    with pytest.raises(ValueError, match="predicted class id 3"):
        confusion_counts(np.array([0, 1]), np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="pixels"):
        confusion_counts(np.array([0, 1]), np.array([0]), 3)
