"""evaluate: streaming over the test shards, plots, blessing, baseline (metric math: test_metrics.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tensorflow as tf
from helpers import metrics_of, reference_metrics

from petseg.cli import main
from petseg.components.contracts import records
from petseg.components.contracts.layout import BLESSING_FILE, CONFUSION_PLOT, METRICS_FILE, SAMPLES_PLOT
from petseg.components.core.errors import PetsegError
from petseg.components.core.fsutil import read_json
from petseg.components.core.params import EvaluateParams, PushParams
from petseg.components.evaluate import decide_blessing, evaluate

NAMES = records.CLASS_NAMES
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------- blessing
@pytest.mark.parametrize(
    "pred, baseline_pred, blessed, failing",
    [
        ([0, 1, 2, 1], None, True, []),  # perfect, nothing served
        ([0, 0, 0, 0], None, False, ["min_mean_iou", "min_accuracy"]),  # mean IoU .08, accuracy .25
        ([0, 1, 2, 1], [0, 1, 2, 2], True, []),  # better than the served .67
        ([0, 1, 2, 2], [0, 1, 2, 1], False, ["max_regression"]),  # .67 against a perfect served model
        ([0, 1, 2, 2], [0, 1, 2, 2], True, []),  # equal to the served one
    ],
)
def test_decide_blessing(pred, baseline_pred, blessed, failing):
    true = np.array([0, 1, 2, 1])
    params = EvaluateParams(min_mean_iou=0.3, min_accuracy=0.5, max_regression=0.0)
    baseline = metrics_of(true, np.array(baseline_pred)) if baseline_pred else None
    decision = decide_blessing(metrics_of(true, np.array(pred)), baseline, params, baseline_version=7)
    assert decision["blessed"] is blessed
    assert [c["name"] for c in decision["checks"] if not c["passed"]] == failing
    assert ("no served model" in decision["reason"]) is (baseline is None)


def test_decide_blessing_regression_and_accuracy_gates():
    true = np.array([0, 0, 1, 1, 2, 2])
    served = metrics_of(true, true)  # perfect
    worse = metrics_of(true, np.array([0, 0, 1, 1, 2, 1]))
    params = EvaluateParams(min_mean_iou=0.1, min_accuracy=0.1, max_regression=0.05)
    decision = decide_blessing(worse, served, params, baseline_version=4)
    assert not decision["blessed"]
    assert "served version 4's 1.0000" in decision["reason"]
    assert decide_blessing(
        worse, served, EvaluateParams(min_mean_iou=0.1, min_accuracy=0.1, max_regression=0.5), baseline_version=4
    )["blessed"]
    strict = decide_blessing(worse, None, EvaluateParams(min_mean_iou=0.1, min_accuracy=0.9), None)
    assert not strict["blessed"] and "pixel accuracy 0.8333 < min_accuracy 0.9000" in strict["reason"]


# --------------------------------------------------------------- the step
def coded_test_set(records_dir) -> tuple[np.ndarray, np.ndarray]:
    """All test images and masks of coded_records, read with NumPy only (the reference side)."""
    images, masks = [], []
    for shard in records.shard_paths(records_dir, "test"):
        for raw in tf.data.TFRecordDataset([str(shard)]):
            feature = tf.train.Example.FromString(raw.numpy()).features.feature
            size = feature["size"].int64_list.value[0]
            images.append(np.frombuffer(feature["image"].bytes_list.value[0], np.uint8).reshape(size, size, 3))
            masks.append(np.frombuffer(feature["mask"].bytes_list.value[0], np.uint8).reshape(size, size))
    return np.stack(images), np.stack(masks)


def rule_answer(images: np.ndarray, wrong_fraction: float) -> np.ndarray:
    cls = np.minimum(images[..., 0] // 80, 2).astype(np.int64)
    wrong = images[..., 1].astype(np.int64) >= round(256 * (1 - wrong_fraction))
    return np.where(wrong, (cls + 1) % 3, cls)


def serve_version(model_dir, base, version=1):
    """Put a model where a server would serve it (no models.config: the newest version is served)."""
    target = base / "petseg" / str(version)
    shutil.copytree(model_dir, target)
    return target


def test_evaluate_streams_test_shards_and_matches_the_numpy_reference(rule_savedmodels, coded_records, tmp_path):
    out = tmp_path / "reports" / "evaluate"
    params = EvaluateParams(min_mean_iou=0.5, min_accuracy=0.5, batch_size=4, sample_predictions=3)
    result = evaluate(
        rule_savedmodels["wrong_30"], coded_records, params, PushParams(model_base_path=str(tmp_path / "serving")), out
    )

    images, masks = coded_test_set(coded_records)
    assert np.array_equal(np.minimum(images[..., 0] // 80, 2), masks)  # the coding is what the rule assumes
    ious, mean_iou, accuracy = reference_metrics(masks, rule_answer(images, 0.3))
    metrics = read_json(out / METRICS_FILE)
    assert metrics["test_examples"] == 10 == result.test_examples
    assert metrics["pixels"] == masks.size
    assert [metrics["iou"][n] for n in NAMES] == pytest.approx(ious)
    assert metrics["mean_iou"] == pytest.approx(mean_iou) == result.mean_iou
    assert metrics["pixel_accuracy"] == pytest.approx(accuracy)
    assert 0.6 < accuracy < 0.8  # about 30% wrong
    assert np.array(metrics["confusion_matrix"]["rows_true_columns_predicted"]).sum() == masks.size

    blessing = read_json(out / BLESSING_FILE)
    assert blessing["blessed"] is True is result.blessed
    assert blessing["baseline"] is None and "no served model" in blessing["reason"]
    assert blessing["data"]["image_size"] == 32 and len(blessing["model"]["fingerprint"]) == 64
    for plot in (CONFUSION_PLOT, SAMPLES_PLOT):
        assert (out / plot).read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in out.parent.iterdir()) == ["evaluate"]  # no staging left beside it


def test_unblessed_model_is_a_result_not_an_error(rule_savedmodels, coded_records, tmp_path, capsys, monkeypatch):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        f"push:\n  model_base_path: {tmp_path / 'serving'}\nevaluate:\n  min_mean_iou: 0.5\n  min_accuracy: 0.8\n"
    )
    out = tmp_path / "evaluate"
    code = main(
        [
            "evaluate",
            "--model",
            str(rule_savedmodels["wrong_70"]),
            "--records",
            str(coded_records),
            "--out",
            str(out),
            "--params",
            str(params_file),
        ]
    )
    assert code == 0
    blessing = read_json(out / BLESSING_FILE)
    assert blessing["blessed"] is False
    assert "min_mean_iou 0.5000" in blessing["reason"] and "min_accuracy 0.8000" in blessing["reason"]
    assert "NOT BLESSED" in capsys.readouterr().out


def test_regression_against_the_served_model_is_not_blessed(rule_savedmodels, coded_records, tmp_path):
    base = tmp_path / "serving"
    serve_version(rule_savedmodels["perfect"], base, version=3)
    params = EvaluateParams(min_mean_iou=0.5, min_accuracy=0.5, max_regression=0.05, batch_size=8)
    result = evaluate(
        rule_savedmodels["wrong_10"],
        coded_records,
        params,
        PushParams(model_base_path=str(base)),
        tmp_path / "evaluate",
    )
    assert not result.blessed
    assert result.baseline_version == 3 and result.baseline_mean_iou == pytest.approx(1.0)
    blessing = read_json(tmp_path / "evaluate" / BLESSING_FILE)
    assert blessing["baseline"]["version"] == 3 and blessing["baseline"]["mean_iou"] == pytest.approx(1.0)
    assert [c["name"] for c in blessing["checks"] if not c["passed"]] == ["max_regression"]
    assert "served version 3's 1.0000" in blessing["reason"]

    lenient = evaluate(
        rule_savedmodels["wrong_10"],
        coded_records,
        EvaluateParams(min_mean_iou=0.5, min_accuracy=0.5, max_regression=0.5, batch_size=8),
        PushParams(model_base_path=str(base)),
        tmp_path / "evaluate",
    )
    assert lenient.blessed


def test_a_served_model_that_does_not_load_is_reported_not_compared(rule_savedmodels, coded_records, tmp_path, capsys):
    base = tmp_path / "serving"
    broken = serve_version(rule_savedmodels["perfect"], base, version=2)
    (broken / "saved_model.pb").write_bytes(b"not a protobuf")
    result = evaluate(
        rule_savedmodels["wrong_10"],
        coded_records,
        EvaluateParams(min_mean_iou=0.5),
        PushParams(model_base_path=str(base)),
        tmp_path / "evaluate",
    )
    assert result.blessed and result.baseline_mean_iou is None
    blessing = read_json(tmp_path / "evaluate" / BLESSING_FILE)
    assert blessing["baseline"]["version"] == 2 and "cannot load" in blessing["baseline"]["error"]
    assert "served version 2 not compared" in blessing["reason"]
    assert "warning: served version 2 not compared" in capsys.readouterr().err


def test_evaluate_scores_the_real_export(tiny_savedmodel, tiny_records, tmp_path):
    result = evaluate(
        tiny_savedmodel,
        tiny_records,
        EvaluateParams(min_mean_iou=0.0, min_accuracy=0.0, batch_size=8, sample_predictions=2),
        PushParams(model_base_path=str(tmp_path / "serving")),
        tmp_path / "evaluate",
    )
    assert result.blessed and result.test_examples == 16
    metrics = read_json(tmp_path / "evaluate" / METRICS_FILE)
    assert metrics["pixels"] == 16 * 64 * 64
    assert 0.0 <= metrics["mean_iou"] <= 1.0


def test_a_failed_evaluation_leaves_the_previous_output_whole(rule_savedmodels, coded_records, tmp_path):
    out = tmp_path / "evaluate"
    out.mkdir()
    (out / BLESSING_FILE).write_text('{"blessed": true}')
    records_dir = tmp_path / "records"
    shutil.copytree(coded_records, records_dir)
    shard = records.shard_paths(records_dir, "test")[-1]
    shard.write_bytes(shard.read_bytes()[:-40])  # truncated: a data-loss error mid-stream
    with pytest.raises(PetsegError, match="unreadable test shard"):
        evaluate(
            rule_savedmodels["perfect"],
            records_dir,
            EvaluateParams(batch_size=2),
            PushParams(model_base_path=str(tmp_path / "serving")),
            out,
        )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert read_json(out / BLESSING_FILE) == {"blessed": True}


def test_user_mistakes_are_one_line_errors(rule_savedmodels, coded_records, tmp_path):
    push = PushParams(model_base_path=str(tmp_path / "serving"))
    with pytest.raises(PetsegError, match=r"no saved_model\.pb"):
        evaluate(tmp_path / "nope", coded_records, EvaluateParams(), push, tmp_path / "out")
    with pytest.raises(PetsegError, match=r"manifest\.json"):
        evaluate(rule_savedmodels["perfect"], tmp_path, EvaluateParams(), push, tmp_path / "out")
    with pytest.raises(PetsegError, match="mask shape"):
        evaluate(rule_savedmodels["broken"], coded_records, EvaluateParams(), push, tmp_path / "out")
    assert not (tmp_path / "out").exists()
