"""Training end to end on tiny synthetic shards: it learns, logs, checkpoints, resumes and exports."""

from __future__ import annotations

import csv
import dataclasses
import json

import h5py
import numpy as np
import pytest
import tensorflow as tf
import yaml
from helpers import tiny_params_dict

from petseg import cli
from petseg.components import train as train_module
from petseg.components.contracts import signatures
from petseg.components.core.params import ModelParams, TrainParams, UnetParams, params_from_dict
from petseg.components.ml.inputs import evaluation_dataset
from petseg.components.train import loss_function, sparse_ce_dice, train

MODEL = ModelParams(architecture="unet", encoder_weights="none", unet=UnetParams(base_filters=8, depth=3))
TINY_MODEL = ModelParams(architecture="unet", encoder_weights="none", unet=UnetParams(base_filters=4, depth=2))


def _train_params(**overrides) -> TrainParams:
    values = dict(epochs=8, batch_size=8, learning_rate=1e-2, early_stopping_patience=0, reduce_lr_patience=3, seed=1)
    values.update(overrides)
    return TrainParams(**values)


def _tsv_column(path, column: str) -> list[float]:
    with open(path) as f:
        return [float(row[column]) for row in csv.DictReader(f, delimiter="\t")]


def _served_mean_iou(savedmodel, records_dir, image_size: int) -> float:
    """Mean IoU of the exported model's masks on the val split, from a confusion matrix."""
    loaded = tf.saved_model.load(str(savedmodel))
    confusion = np.zeros((3, 3), np.int64)
    for images, masks in evaluation_dataset(records_dir, "val", image_size, batch_size=8):
        served = loaded.signatures[signatures.SIGNATURE_IMAGES](images=tf.cast(images, tf.uint8))
        predicted = served[signatures.OUTPUT_MASK].numpy().astype(np.int64).ravel()
        confusion += np.bincount(masks.numpy().ravel() * 3 + predicted, minlength=9).reshape(3, 3)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return float(np.mean(intersection / np.maximum(union, 1)))


@pytest.mark.slow
def test_short_run_lowers_loss_beats_chance_and_exports(tiny_records, tmp_path):
    result = train(tiny_records, MODEL, _train_params(), tmp_path / "models", tmp_path / "dvclive")

    losses = _tsv_column(tmp_path / "dvclive/plots/metrics/loss/train.tsv", "train")
    assert len(losses) == 8 and losses[-1] < 0.85 * losses[0]

    manifest = json.loads((tiny_records / "manifest.json").read_text())
    chance = max(manifest["class_pixel_fractions"]["val"].values()) / 3  # best constant mask's mean IoU
    assert result.best_metrics["val_mean_iou"] > chance + 0.05, (result.best_metrics, chance)
    served = _served_mean_iou(result.savedmodel, tiny_records, manifest["image_size"])
    assert served == pytest.approx(result.best_metrics["val_mean_iou"], abs=0.02)

    headline = json.loads((tmp_path / "models/metrics.json").read_text())
    assert headline == {
        "best_val": {
            "accuracy": pytest.approx(result.best_metrics["val_accuracy"]),
            "loss": pytest.approx(result.best_metrics["val_loss"]),
            "mean_iou": pytest.approx(result.best_metrics["val_mean_iou"]),
        },
        "best_epoch": result.best_epoch,
        "epochs_run": 8,
    }
    everything = json.loads((tmp_path / "dvclive/metrics.json").read_text())
    for metric in ("loss", "accuracy", "mean_iou"):
        assert set(everything[metric]) == {"train", "val"}
    assert set(everything["iou_val"]) == set(everything["iou_train"]) == {"pet", "background", "border"}
    assert (tmp_path / "dvclive/plots/metrics/mean_iou/val.tsv").is_file()
    assert result.epochs_run == 8 and 1 <= result.best_epoch <= 8 and result.resumed_from_epoch == 0


@pytest.mark.slow
def test_resumes_after_an_interruption_through_the_cli(tiny_records, tmp_path, monkeypatch, capsys):
    raw = tiny_params_dict(
        {
            "model": {"architecture": "unet", "encoder_weights": "none", "unet": {"base_filters": 4, "depth": 2}},
            "train": {"epochs": 3, "batch_size": 16, "learning_rate": 0.01, "seed": 1},
        }
    )
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    params = params_from_dict(raw)
    out, live = tmp_path / "models", tmp_path / "dvclive"
    real_save = train_module.save_checkpoint

    def crash_in_epoch_2(model, state, checkpoints):
        if state.epoch == 2:  # logged to DVCLive, checkpoint not yet written: the worst moment
            raise KeyboardInterrupt
        real_save(model, state, checkpoints)

    monkeypatch.setattr(train_module, "save_checkpoint", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_records, params.model, params.train, out, live)
    assert not (out / "savedmodel").exists()  # nothing for evaluate to pick up
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)

    assert "fresh run" in capsys.readouterr().err
    code = cli.main(
        ["train", "--records", str(tiny_records), "--out", str(out), "--live", str(live), "--params", str(params_file)]
    )
    captured = capsys.readouterr()
    assert code == 0 and "3 epochs (resumed after epoch 1)" in captured.out and "val mean IoU" in captured.out
    assert "train: resuming epoch 2 of run " in captured.err
    assert (out / "savedmodel/saved_model.pb").is_file()
    assert _tsv_column(live / "plots/metrics/loss/train.tsv", "step") == [0, 1, 2]  # epoch 2 logged once
    steps_per_epoch = 48 // 16
    with h5py.File(out / "checkpoints/last/model.weights.h5") as weights:
        iterations = int(np.asarray(weights["optimizer/vars/0"]))
    assert iterations == 3 * steps_per_epoch  # the optimizer state came back, not a fresh Adam


def _killed_mid_epoch(monkeypatch, epoch: int):
    """Make training raise KeyboardInterrupt in the middle of 1-based `epoch` (after its first batch), once."""
    real_class = train_module.epoch_controller_class

    def killing_class():
        class Killing(real_class()):
            def on_train_batch_end(self, batch, logs=None):
                if self.state.epoch == epoch - 1 and batch == 1:
                    monkeypatch.setattr(train_module, "epoch_controller_class", real_class)
                    raise KeyboardInterrupt

        return Killing

    monkeypatch.setattr(train_module, "epoch_controller_class", killing_class)


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_but_not_after_a_params_change(tiny_records, tmp_path, monkeypatch, capsys):
    out, live = tmp_path / "models", tmp_path / "dvclive"
    params = _train_params(epochs=3, batch_size=16)
    _killed_mid_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_records, TINY_MODEL, params, out, live)
    assert json.loads((out / "checkpoints/last/state.json").read_text())["epoch"] == 1
    capsys.readouterr()

    _killed_mid_epoch(monkeypatch, 3)  # the resumed run is killed too, so a kill precedes the params change
    with pytest.raises(KeyboardInterrupt):
        train(tiny_records, TINY_MODEL, params, out, live)
    err = capsys.readouterr().err
    assert "train: resuming epoch 2 of run " in err and "interrupted after epoch 1" in err
    assert json.loads((out / "checkpoints/last/state.json").read_text())["epoch"] == 2
    assert _tsv_column(live / "plots/metrics/loss/train.tsv", "step") == [0, 1]  # epoch 1 kept, epoch 2 added

    changed = train(tiny_records, TINY_MODEL, dataclasses.replace(params, learning_rate=5e-3), out, live)
    err = capsys.readouterr().err
    assert changed.resumed_from_epoch == 0 and changed.epochs_run == 3
    assert "train: fresh run " in err and "other params, data or code" in err
    assert _tsv_column(live / "plots/metrics/loss/train.tsv", "step") == [0, 1, 2]


@pytest.mark.slow
def test_a_finished_run_is_never_resumed(tiny_records, tmp_path, capsys):
    """The `dvc exp run -S train.epochs=1` case: a finished 2-epoch run, then 1 epoch, trains one fresh epoch."""
    out, live = tmp_path / "models", tmp_path / "dvclive"
    first = train(tiny_records, TINY_MODEL, _train_params(epochs=2, batch_size=16), out, live)
    assert first.epochs_run == 2
    assert json.loads((out / "checkpoints/last/state.json").read_text())["finished"] is True
    capsys.readouterr()

    shorter = train(tiny_records, TINY_MODEL, _train_params(epochs=1, batch_size=16), out, live)
    err = capsys.readouterr().err
    assert shorter.resumed_from_epoch == 0 and shorter.epochs_run == 1
    assert "train: fresh run " in err and "other params, data or code" in err
    assert _tsv_column(live / "plots/metrics/loss/train.tsv", "step") == [0]  # DVCLive step 0: a new history
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 1
    # The same params once more: that run finished, so it is not resumed either (a unit test below).


def _write_checkpoint(checkpoints, **state) -> None:
    last = checkpoints / "last"
    last.mkdir(parents=True)
    (last / "model.weights.h5").write_bytes(b"weights")
    (last / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize(
    ("state", "resumed", "reason"),
    [
        (None, False, "no checkpoint in"),
        ({"signature": "s" * 64, "epoch": 2}, True, "interrupted after epoch 2"),
        ({"signature": "s" * 64, "epoch": 2, "finished": True}, False, "finished after epoch 2"),
        ({"signature": "o" * 64, "epoch": 2}, False, "from run oooooooooooo, other params, data or code"),
        ({"signature": "s" * 64, "epoch": 2, "unknown_field": 1}, False, "unreadable"),
    ],
)
def test_only_an_interrupted_checkpoint_of_the_same_run_resumes(tmp_path, state, resumed, reason):
    checkpoints = tmp_path / "checkpoints"
    if state is not None:
        _write_checkpoint(checkpoints, **state)
    found, why = train_module.resumable_state(checkpoints, "s" * 64)
    assert (found is not None) == resumed and reason in why
    if resumed:
        assert found.epoch == 2 and not found.finished


def test_run_signature_follows_every_param_the_data_and_the_code():
    manifest = {"image_size": 32, "sha256": {"train-0.tfrecord": "ab"}}
    base = train_module.run_signature(MODEL, _train_params(), manifest, False, code="c1")
    assert base == train_module.run_signature(MODEL, _train_params(), manifest, False, code="c1")
    others = [
        train_module.run_signature(MODEL, _train_params(epochs=9), manifest, False, code="c1"),
        train_module.run_signature(MODEL, _train_params(learning_rate=0.5), manifest, False, code="c1"),
        train_module.run_signature(TINY_MODEL, _train_params(), manifest, False, code="c1"),
        train_module.run_signature(MODEL, _train_params(), {**manifest, "image_size": 64}, False, code="c1"),
        train_module.run_signature(MODEL, _train_params(), manifest, True, code="c1"),
        train_module.run_signature(MODEL, _train_params(), manifest, False, code="c2"),
    ]
    assert len({base, *others}) == 7


def test_the_code_a_run_belongs_to_includes_the_serving_contract():
    from petseg.components.core.codedeps import import_closure

    closure = import_closure(train_module.CODE_MODULE)
    assert {
        "petseg.components.contracts.signatures",
        "petseg.components.train",
        "petseg.components.core.params",
    } <= set(closure)


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("loss", "loss/train"),
        ("val_loss", "loss/val"),
        ("mean_iou", "mean_iou/train"),
        ("val_accuracy", "accuracy/val"),
        ("iou_pet", "iou_train/pet"),
        ("val_iou_border", "iou_val/border"),
        ("learning_rate", None),
    ],
)
def test_live_metric_names_never_start_with_a_params_section(key, name):
    from petseg.components.core.params import Params

    assert train_module.live_metric_name(key) == name
    sections = {f.name for f in dataclasses.fields(Params)}
    assert name is None or name.split("/")[0] not in sections


def test_cli_without_records_is_one_line_and_exit_1(tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params_dict()))
    code = cli.main(
        [
            "train",
            "--records",
            str(tmp_path / "nothing"),
            "--out",
            str(tmp_path / "models"),
            "--params",
            str(params_file),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "petseg preprocess" in err
    assert not (tmp_path / "models").exists()


def test_dice_loss_rewards_the_right_mask():
    y_true = np.zeros((1, 4, 4), np.int32)
    y_true[0, :2] = 1
    right = np.where(np.eye(3)[y_true] > 0, 8.0, -8.0).astype(np.float32)
    wrong = np.roll(right, 1, axis=-1)
    assert float(sparse_ce_dice(y_true, right)[0]) < 0.01
    assert float(sparse_ce_dice(y_true, wrong)[0]) > 1.0
    assert loss_function("sparse_ce_dice") is sparse_ce_dice


def test_fine_tuning_phase_is_planned_only_for_a_frozen_encoder():
    frozen_params = _train_params(epochs=5, unfreeze_after_epochs=2, fine_tune_learning_rate=1e-4)
    unet_model = train_module.build_model(MODEL, 32)
    assert [p.name for p in train_module.plan_phases(unet_model, frozen_params)] == ["train"]
    random_encoder = train_module.build_model(ModelParams(encoder_weights="none"), 32)
    assert [p.name for p in train_module.plan_phases(random_encoder, frozen_params)] == ["train"]


@pytest.mark.slow
def test_fine_tuning_unfreezes_the_encoder_but_not_its_batch_norm(tmp_path):
    import keras
    from helpers import write_synthetic_records

    from petseg.components.ml.model import encoder_of

    records_dir = write_synthetic_records(tmp_path / "records", 32, {"train": 16, "val": 8})
    weights = tmp_path / "encoder.weights.h5"
    keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None).save_weights(weights)
    model_params = ModelParams(encoder_weights=str(weights))
    params = _train_params(epochs=2, batch_size=8, unfreeze_after_epochs=1, fine_tune_learning_rate=1e-3)
    result = train(records_dir, model_params, params, tmp_path / "models", tmp_path / "dvclive")
    assert result.epochs_run == 2
    state = json.loads((tmp_path / "models/checkpoints/last/state.json").read_text())
    assert state["phase"] == "fine_tune"
    assert _tsv_column(tmp_path / "dvclive/plots/metrics/learning_rate.tsv", "learning_rate") == pytest.approx(
        [1e-2, 1e-3]
    )

    trained = train_module.build_model(model_params, 32)
    trained.load_weights(tmp_path / "models/checkpoints/last/model.weights.h5")
    start = train_module.build_model(model_params, 32)
    conv = encoder_of(trained).get_layer("Conv1").get_weights()[0]
    assert not np.allclose(conv, encoder_of(start).get_layer("Conv1").get_weights()[0])  # the encoder learned
    bn_trained = encoder_of(trained).get_layer("bn_Conv1").get_weights()
    bn_start = encoder_of(start).get_layer("bn_Conv1").get_weights()
    for after, before in zip(bn_trained, bn_start, strict=True):
        np.testing.assert_array_equal(after, before)  # its batch norm kept the pretrained statistics


# ------------------------------------------------------------ require_gpu (issue 13)
@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="this machine has a GPU")
def test_require_gpu_without_a_gpu_stops_in_one_line_and_writes_nothing(tiny_records, tmp_path, capsys):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params_dict({"train": {"require_gpu": True}})))
    out = tmp_path / "models"
    code = cli.main(
        [
            "train",
            "--records",
            str(tiny_records),
            "--out",
            str(out),
            "--live",
            str(tmp_path / "live"),
            "--params",
            str(params_file),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    [line] = [text for text in err.splitlines() if text.startswith("petseg train: error:")]
    assert "train.require_gpu is true but TensorFlow sees no GPU" in line and "train.require_gpu=false" in line


def test_training_logs_the_devices_it_uses(capsys):
    _strategy, mixed = train_module.distribution()
    err = capsys.readouterr().err
    if tf.config.list_physical_devices("GPU"):
        assert mixed and "train: training on " in err and "GPU(s)" in err
    else:
        assert not mixed and "train: training on the CPU" in err and "no GPU visible" in err


def test_train_refuses_an_out_folder_it_did_not_write(tmp_path):
    """A mistyped --out holding the user's files: nothing in it is removed (metrics.json included)."""
    from petseg.components.core.errors import PetsegError
    from petseg.components.core.params import ModelParams, TrainParams
    from petseg.components.train import train

    out = tmp_path / "my-results"
    out.mkdir()
    (out / "metrics.json").write_text('{"mine": 1}')
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PetsegError, match=r"--out .*my-results: holds 'notes.txt' and no checkpoints"):
        train(tmp_path / "records", ModelParams(), TrainParams(), out, tmp_path / "live")
    assert (out / "metrics.json").read_text() == '{"mine": 1}' and (out / "notes.txt").read_text() == "mine"
