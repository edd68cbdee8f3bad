"""Step 4, train: fit the U-Net on the TFRecord shards and export the best model as a SavedModel.

What it does:

- Reads the image size and split counts from the records manifest, builds the
  model (components/ml/model.py) and the tf.data pipelines (components/ml/inputs.py).
- Adam on sparse categorical cross-entropy from logits (optionally + soft Dice);
  pixel accuracy, mean IoU and per-class IoU on train and val every epoch.
- After every epoch (EpochController): keeps the best weights by val mean IoU,
  halves the learning rate after `reduce_lr_patience` epochs without a val
  loss improvement, stops after `early_stopping_patience` such epochs, logs
  to DVCLive, and writes a resumable checkpoint (weights + optimizer state +
  controller state). Keras' own EarlyStopping/ReduceLROnPlateau/ModelCheckpoint keep
  their counters in memory only, so a restart would forget them; one small
  controller whose state is saved with the weights resumes exactly.
- Resume only what was interrupted: a checkpoint continues only when it is
  the same run, i.e. its run signature (all model and train params, epochs
  included, the records manifest, the precision, and the code: the hash of
  train's import closure, components/core/codedeps.py) matches and the run did not
  finish. Anything else, a finished run included, is discarded and training
  starts fresh. DVC keeps `models/checkpoints` between runs (persist), so
  `dvc exp run -S train.epochs=1` after a finished run finds that checkpoint;
  the signature, not the folder's presence, decides. The first line training
  prints says which: "resuming epoch 3 of run <id>" or "fresh run <id>: why".
- Fine-tuning: with a frozen pretrained encoder and `unfreeze_after_epochs` k,
  epochs k+1.. train the whole network at `fine_tune_learning_rate`.
- GPU: MirroredStrategy over all visible GPUs and mixed_float16 (the logits
  layer stays float32). `batch_size` is the global batch. CPU: plain Keras.
- Several workers (a multi-worker TF_CONFIG: set by a TFJob, built by `petseg
  train` in a Kubeflow Trainer JobSet pod, or by `petseg train --local-workers
  N`): MultiWorkerMirroredStrategy; only the chief writes checkpoints, DVCLive
  and the export, the others resume from a copy of its checkpoint and write to
  scratch (components/ml/cluster.py).
- Exports `<out_dir>/savedmodel` from the best weights (float32) via
  components/ml/export.py.

Determinism: Python, NumPy and TF seeds come from `train.seed` (one call to
keras.utils.set_random_seed), tf.data shuffling and augmentation use seeded
stateless ops in a fixed order, so data order and augmentation repeat
exactly. Kernel arithmetic is not bitwise repeatable by default (multi-thread
reductions on CPU, cuDNN algorithm choice on GPU); `train.deterministic: true`
turns on TF op determinism for bitwise repeatable runs, at some speed cost.
A resumed run restarts the shuffle/augmentation streams at the resume epoch,
so it is equivalent to, not bitwise equal to, an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from petseg.components.contracts.layout import (
    CHECKPOINT_DIR,
    SAVEDMODEL_DIR,
    TRAIN_METRICS_FILE,
    checkpoint_dir,
    savedmodel_dir,
    train_metrics_file,
)
from petseg.components.contracts.manifest import Manifest, load_manifest
from petseg.components.contracts.records import CLASS_NAMES
from petseg.components.core.codedeps import code_fingerprint
from petseg.components.core.errors import PetsegError
from petseg.components.core.fsutil import atomic_directory, check_output_dir, read_json, remove_output, write_json
from petseg.components.core.params import ModelParams, TrainParams, params_to_dict
from petseg.components.ml import inputs, keras_multiworker
from petseg.components.ml.cluster import WorkerRole, scratch_dir, worker_role
from petseg.components.ml.export import export_serving_model
from petseg.components.ml.model import build_model, encoder_of, set_encoder_trainable

MONITOR = "val_mean_iou"  # the best checkpoint
PLATEAU_MONITOR = "val_loss"  # learning-rate cuts and early stopping (smoother early in training)
MIN_IMPROVEMENT = 1e-4
LR_FACTOR = 0.5
MIN_LEARNING_RATE = 1e-6
LAST_DIR = "last"
WEIGHTS_FILE = "model.weights.h5"
STATE_FILE = "state.json"
BEST_WEIGHTS_FILE = "best.weights.h5"
COLLECTIVE_TIMEOUT_SECONDS = 600.0  # a multi-worker all-reduce waiting longer than this fails the run


@dataclass(frozen=True)
class TrainResult:
    """What training produced: the SavedModel, and how the run went (epochs are 1-based)."""

    savedmodel: Path
    checkpoints: Path
    image_size: int
    epochs_run: int
    best_epoch: int
    best_metrics: dict[str, float]
    resumed_from_epoch: int
    stopped_early: bool


@dataclass
class RunState:
    """The controller's state, saved with every checkpoint so a restart continues exactly."""

    signature: str
    epoch: int = 0  # epochs completed
    phase: str = "train"  # "train", or "fine_tune" once the encoder is unfrozen
    best_value: float = -1.0
    best_epoch: int = 0
    best_metrics: dict = dataclasses.field(default_factory=dict)
    best_loss: float = float("inf")
    wait: int = 0  # epochs since val loss last improved (early stopping)
    plateau_wait: int = 0  # epochs since val loss last improved or the learning rate was cut
    stopped_early: bool = False
    finished: bool = False  # training ended (all epochs, or stopped early): never resumed


@dataclass(frozen=True)
class Phase:
    name: str
    end_epoch: int
    learning_rate: float
    encoder_trainable: bool | None  # None: leave as built


# ------------------------------------------------------------------ the step
def train(
    records_dir: Path, model_params: ModelParams, params: TrainParams, out_dir: Path, live_dir: Path
) -> TrainResult:
    """Train on `records_dir`'s shards, checkpointing under out_dir; export out_dir/savedmodel.

    Under a multi-worker TF_CONFIG every worker runs this; only the chief writes
    out_dir and live_dir, the others resume from a copy of the chief's checkpoint
    and write to a scratch folder they delete (components/ml/cluster.py).
    """
    records_dir, out_dir, live_dir = Path(records_dir), Path(out_dir), Path(live_dir)
    role = worker_role()
    if role.is_chief:  # it replaces savedmodel/, metrics.json and checkpoints/: never in a folder it did not write
        check_output_dir(out_dir, CHECKPOINT_DIR, "train", owned=(SAVEDMODEL_DIR, TRAIN_METRICS_FILE, ".gitignore"))
    manifest = load_manifest(records_dir)
    for split in ("train", "val"):
        inputs.split_files(records_dir, split)  # fail early, with a message saying how to fix it

    strategy, mixed = distribution(params.require_gpu, role)
    scratch = None
    if not role.is_chief:  # writes go to a private scratch copy, deleted at the end; the chief's stay whole
        scratch = scratch_dir(role)
        out_dir, live_dir = copy_checkpoints(out_dir, scratch / "models"), scratch / "dvclive"
    try:
        return _train(records_dir, model_params, params, out_dir, live_dir, manifest, strategy, mixed)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _train(
    records_dir: Path,
    model_params: ModelParams,
    params: TrainParams,
    out_dir: Path,
    live_dir: Path,
    manifest: Manifest,
    strategy,
    mixed: bool,
) -> TrainResult:
    """train() once the strategy is chosen and out_dir/live_dir are this worker's to write."""
    import keras
    import tensorflow as tf

    image_size, counts = manifest.image_size, manifest.counts
    checkpoints = checkpoint_dir(out_dir)
    signature = run_signature(model_params, params, manifest.to_dict(), mixed)
    state, why = resumable_state(checkpoints, signature)
    resumed_from = state.epoch if state else 0
    remove_output(savedmodel_dir(out_dir))  # no stale model for evaluate while this one trains
    remove_output(train_metrics_file(out_dir))
    if state is None:
        remove_output(checkpoints)  # DVCLive clears its own files in live_dir on a fresh start
        state = RunState(signature=signature)
        _say(f"fresh run {run_id(signature)}: {why}")
    else:
        _say(f"resuming epoch {state.epoch + 1} of run {run_id(signature)} ({why})")

    keras.utils.set_random_seed(params.seed)
    if params.deterministic:
        tf.config.experimental.enable_op_determinism()
    train_ds = inputs.training_dataset(records_dir, image_size, params, counts.get("train"))
    val_ds = inputs.evaluation_dataset(
        records_dir, "val", image_size, params.batch_size, params.cache, counts.get("val")
    )
    train_ds, val_ds = shard_by_example(train_ds, strategy), shard_by_example(val_ds, strategy)

    previous_policy = keras.config.dtype_policy()
    try:
        if mixed:
            keras.config.set_dtype_policy("mixed_float16")
        with strategy.scope():
            model = build_model(model_params, image_size)
        phases = plan_phases(model, params)
        if state.epoch < params.epochs and not state.stopped_early:
            _fit_phases(model, phases, state, params, strategy, (train_ds, val_ds), checkpoints, live_dir)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    mark_finished(checkpoints, state)  # from here on, a rerun trains fresh

    best = checkpoints / BEST_WEIGHTS_FILE
    if not best.is_file():
        raise PetsegError(f"{checkpoints}: no best weights after training; delete {checkpoints} and train again")
    export_model = build_model(model_params, image_size)
    export_model.load_weights(best)
    savedmodel = export_serving_model(export_model, savedmodel_dir(out_dir), image_size, CLASS_NAMES)
    write_json(train_metrics_file(out_dir), headline_metrics(state))
    return TrainResult(
        savedmodel=savedmodel,
        checkpoints=checkpoints,
        image_size=image_size,
        epochs_run=state.epoch,
        best_epoch=state.best_epoch,
        best_metrics=dict(state.best_metrics),
        resumed_from_epoch=resumed_from,
        stopped_early=state.stopped_early,
    )


def headline_metrics(state: RunState) -> dict:
    """The training metrics worth a column in `dvc exp show`: the exported (best) epoch's val scores.

    The rest, every metric per split and per class at the last epoch, is DVCLive's
    <live_dir>/metrics.json, and per epoch its plots.
    """
    best = {
        k[4:]: v for k, v in sorted(state.best_metrics.items()) if k in ("val_loss", "val_mean_iou", "val_accuracy")
    }
    return {"best_val": best, "best_epoch": state.best_epoch, "epochs_run": state.epoch}


def _fit_phases(
    model,
    phases: list[Phase],
    state: RunState,
    params: TrainParams,
    strategy,
    datasets: tuple,
    checkpoints: Path,
    live_dir: Path,
) -> None:
    """Run the remaining epochs phase by phase, restoring the last checkpoint first if there is one."""
    from dvclive import Live

    if state.epoch > 0:
        trim_live_history(live_dir, state.epoch)
    live = Live(str(live_dir), resume=state.epoch > 0, report=None, save_dvc_exp=False, dvcyaml=None)
    live.step = state.epoch
    try:
        current = next(p for p in phases if p.name == state.phase)
        _configure(model, current, strategy, params)
        if state.epoch > 0:
            with strategy.scope():
                model.optimizer.build(model.trainable_variables)
                model.load_weights(checkpoints / LAST_DIR / WEIGHTS_FILE)
        controller = epoch_controller_class()(state, params, checkpoints, live)
        for phase in phases:
            if state.epoch >= phase.end_epoch or state.stopped_early:
                continue
            if phase.name != state.phase:
                _say(f"epoch {state.epoch + 1}: unfreezing the encoder, learning rate {phase.learning_rate:g}")
                state.phase, state.plateau_wait, state.wait = phase.name, 0, 0
                _configure(model, phase, strategy, params)
            model.fit(
                datasets[0],
                validation_data=datasets[1],
                epochs=phase.end_epoch,
                initial_epoch=state.epoch,
                callbacks=[controller],
                shuffle=False,
                verbose=_verbosity(),
            )
    finally:
        live.end()


# ------------------------------------------------------------ the controller
def epoch_controller_class():
    """EpochController, defined on first use so importing this module does not import Keras."""
    import keras

    class EpochController(keras.callbacks.Callback):
        """Per epoch: best weights, LR plateau cuts, early stopping, DVCLive, resumable checkpoint."""

        def __init__(self, state: RunState, params: TrainParams, checkpoints: Path, live):
            super().__init__()
            self.state, self.train_params, self.checkpoints, self.live = state, params, checkpoints, live

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            if MONITOR not in logs or PLATEAU_MONITOR not in logs:
                raise RuntimeError(f"{MONITOR} missing from the epoch logs {sorted(logs)}")  # a bug: no val data
            state, params = self.state, self.train_params
            state.epoch = epoch + 1
            learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            if float(logs[MONITOR]) > state.best_value + MIN_IMPROVEMENT:
                state.best_value, state.best_epoch = float(logs[MONITOR]), epoch + 1
                state.best_metrics = {k: float(v) for k, v in sorted(logs.items()) if k.startswith("val_")}
                _save_weights_atomically(self.model, self.checkpoints / BEST_WEIGHTS_FILE)
            if float(logs[PLATEAU_MONITOR]) < state.best_loss - MIN_IMPROVEMENT:
                state.best_loss, state.wait, state.plateau_wait = float(logs[PLATEAU_MONITOR]), 0, 0
            else:
                state.wait += 1
                state.plateau_wait += 1
            if params.reduce_lr_patience and state.plateau_wait >= params.reduce_lr_patience:
                new_rate = max(learning_rate * LR_FACTOR, MIN_LEARNING_RATE)
                if new_rate < learning_rate:
                    self.model.optimizer.learning_rate.assign(new_rate)
                    _say(
                        f"epoch {epoch + 1}: val loss flat for {state.plateau_wait} epochs, "
                        f"learning rate {learning_rate:g} -> {new_rate:g}"
                    )
                state.plateau_wait = 0
            if params.early_stopping_patience and state.wait >= params.early_stopping_patience:
                state.stopped_early = True
                self.model.stop_training = True
                _say(
                    f"epoch {epoch + 1}: stopping early, val loss flat for {state.wait} epochs "
                    f"(best val mean IoU {state.best_value:.4f} at epoch {state.best_epoch})"
                )
            self._log(logs, learning_rate)  # before the checkpoint: a resume trims what a crash left past it
            save_checkpoint(self.model, state, self.checkpoints)

        def _log(self, logs: dict, learning_rate: float) -> None:
            for key, value in sorted(logs.items()):
                name = live_metric_name(key)
                if name is not None:
                    self.live.log_metric(name, float(value))
            self.live.log_metric("learning_rate", learning_rate)
            self.live.next_step()

    return EpochController


def live_metric_name(key: str) -> str | None:
    """The DVCLive name of a Keras epoch log key, None for keys not logged per split.

    `<metric>/train` and `<metric>/val` (loss, accuracy, mean_iou), `iou_train/<class>` and
    `iou_val/<class>`: each plot file (dvclive/plots/metrics/<name>.tsv) has a column named
    for its split or class, so dvc.yaml's top-level plots draw train against val, and the
    classes, on shared axes. No name starts with a params.yaml section (`train/...` did, and
    `dvc exp show` then had a metric `train.loss` beside the param `train.loss`).
    """
    split, metric = ("val", key[4:]) if key.startswith("val_") else ("train", key)
    if metric == "learning_rate":
        return None
    if metric.startswith("iou_"):
        return f"iou_{split}/{metric[4:]}"
    return f"{metric}/{split}"


# ----------------------------------------------------------- model and phases
def plan_phases(model, params: TrainParams) -> list[Phase]:
    """The frozen phase and, when the encoder is frozen and unfreezing is asked for, the fine-tuning phase."""
    encoder = encoder_of(model)
    frozen = encoder is not None and not encoder.trainable
    k = params.unfreeze_after_epochs
    if frozen and 0 < k < params.epochs:
        return [
            Phase("train", k, params.learning_rate, None),
            Phase("fine_tune", params.epochs, params.fine_tune_learning_rate, True),
        ]
    if k and not frozen:
        _say("train.unfreeze_after_epochs ignored: the model has no frozen pretrained encoder")
    return [Phase("train", params.epochs, params.learning_rate, None)]


def _configure(model, phase: Phase, strategy, params: TrainParams) -> None:
    """Set the encoder's trainability for `phase` and compile with a fresh Adam at its learning rate."""
    import keras

    if phase.encoder_trainable is not None:
        set_encoder_trainable(model, phase.encoder_trainable)
    with strategy.scope():
        model.compile(
            optimizer=keras.optimizers.Adam(phase.learning_rate),
            loss=loss_function(params.loss),
            metrics=segmentation_metrics(),
        )


def loss_function(name: str):
    """`sparse_ce`: per-pixel cross-entropy from logits; `sparse_ce_dice`: that plus soft Dice loss."""
    import keras

    if name == "sparse_ce":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if name == "sparse_ce_dice":
        return sparse_ce_dice
    raise PetsegError(f"train.loss {name!r} is unknown")  # params validation stops this first


def sparse_ce_dice(y_true, logits):
    """Per example: mean pixel cross-entropy + (1 - soft Dice averaged over classes)."""
    import keras
    from keras import ops

    logits = ops.cast(logits, "float32")
    y_true = ops.cast(y_true, "int32")
    ce = ops.mean(keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True), axis=(1, 2))
    probs = ops.softmax(logits, axis=-1)
    onehot = ops.one_hot(y_true, ops.shape(logits)[-1])
    overlap = ops.sum(probs * onehot, axis=(1, 2))
    total = ops.sum(probs + onehot, axis=(1, 2))
    dice = (2.0 * overlap + 1.0) / (total + 1.0)
    return ce + 1.0 - ops.mean(dice, axis=-1)


def segmentation_metrics() -> list:
    """Pixel accuracy, mean IoU and one IoU per class, computed from logits."""
    import keras

    n = len(CLASS_NAMES)
    return [
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        keras.metrics.MeanIoU(num_classes=n, sparse_y_true=True, sparse_y_pred=False, name="mean_iou"),
        *[
            keras.metrics.IoU(
                num_classes=n, target_class_ids=[i], sparse_y_true=True, sparse_y_pred=False, name=f"iou_{name}"
            )
            for i, name in enumerate(CLASS_NAMES)
        ],
    ]


def distribution(require_gpu: bool = False, role: WorkerRole | None = None):
    """(strategy, mixed precision?) for this process's devices and, under TF_CONFIG, its fellow workers.

    One worker: MirroredStrategy + mixed_float16 over the node's GPUs, the default
    strategy on the CPU. Several workers (TF_CONFIG, as TFJob sets it):
    MultiWorkerMirroredStrategy, which also mirrors over each node's GPUs; its
    collectives time out after COLLECTIVE_TIMEOUT_SECONDS, so a dead peer ends
    the run instead of hanging it. Logs the devices it trains on. With
    `require_gpu`, no visible GPU is an error: a GPU image whose CUDA/cuDNN do
    not match TensorFlow shows no GPU, and training would otherwise run on the
    CPU, many times slower, unnoticed.
    """
    import tensorflow as tf

    role = role or WorkerRole()
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and require_gpu:
        raise PetsegError(
            "train.require_gpu is true but TensorFlow sees no GPU (CUDA build: "
            f"{tf.test.is_built_with_cuda()}); check the node's NVIDIA driver and the image's "
            "CUDA/cuDNN, or set train.require_gpu=false to train on the CPU"
        )
    if gpus:
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        devices = f"{len(gpus)} GPU(s): {', '.join(names)} (mixed_float16"
    else:
        devices = f"the CPU ({len(tf.config.list_physical_devices('CPU'))} device(s), float32"
    if role.multi_worker:
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        keras_multiworker.apply()  # keras-team/keras#20585: Keras 3's fit under several workers
        _say(
            f"training on {devices}, MultiWorkerMirroredStrategy): worker {role.index} of {role.workers}"
            + (" (chief)" if role.is_chief else "")
        )
        return strategy, bool(gpus)
    if gpus:
        _say(f"training on {devices}, MirroredStrategy)")
        return tf.distribute.MirroredStrategy(), True
    _say(f"training on {devices}): no GPU visible")
    return tf.distribute.get_strategy(), False


def shard_by_example(dataset, strategy):
    """Under several workers, split the batches by example (DATA), so every worker steps the same count.

    Sharding by file (TensorFlow's AUTO choice) gives workers unequal shard counts
    and so unequal steps per epoch, which deadlocks the all-reduce; by example each
    worker reads all shards and keeps its share of every global batch.
    """
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return dataset.with_options(options)
    return dataset


def copy_checkpoints(out_dir: Path, scratch_out: Path) -> Path:
    """A non-chief worker's out_dir: scratch_out holding a copy of the chief's checkpoints, to resume from.

    Every worker must resume from the same checkpoint, so out_dir has to be on
    storage all workers read (a shared volume in a cluster).
    """
    source, copy = checkpoint_dir(out_dir), checkpoint_dir(scratch_out)
    try:
        if source.is_dir():
            shutil.copytree(source, copy)
    except (shutil.Error, FileNotFoundError):  # the chief is deleting a stale checkpoint: it starts afresh too
        shutil.rmtree(copy, ignore_errors=True)
    return scratch_out


# -------------------------------------------------------------- checkpoints
CODE_MODULE = "petseg.components.train"  # its import closure is the code a checkpoint belongs to


def run_signature(
    model_params: ModelParams, params: TrainParams, manifest: dict, mixed: bool, code: str | None = None
) -> str:
    """What makes two runs the same run: model and train params (epochs too), the data, precision, the code.

    `code` defaults to the hash of train's import closure (components/core/codedeps.py).
    """
    train = params_to_dict(params)
    train.pop("require_gpu")  # where it runs, not what it trains: a GPU run may resume a CPU run's checkpoint
    identity = {
        "model": params_to_dict(model_params),
        "train": train,
        "manifest": manifest,
        "mixed": mixed,
        "code": code if code is not None else code_fingerprint(CODE_MODULE),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def run_id(signature: str) -> str:
    """The short name of a run, as the start-of-training line prints it."""
    return signature[:12]


def resumable_state(checkpoints: Path, signature: str) -> tuple[RunState | None, str]:
    """(the last checkpoint's state, why) if it is this very run and not finished, else (None, why not)."""
    path = Path(checkpoints) / LAST_DIR / STATE_FILE
    if not path.is_file() or not (path.parent / WEIGHTS_FILE).is_file():
        return None, f"no checkpoint in {checkpoints}"
    try:
        state = RunState(**read_json(path))
    except (ValueError, TypeError):
        return None, f"{path} is unreadable"
    if state.signature != signature:
        return None, (
            f"the checkpoint in {checkpoints} is from run {run_id(state.signature)}, other params, data or code"
        )
    if state.finished:
        return None, f"run {run_id(state.signature)} in {checkpoints} finished after epoch {state.epoch}"
    return state, f"interrupted after epoch {state.epoch}, checkpoint in {checkpoints / LAST_DIR}"


def mark_finished(checkpoints: Path, state: RunState) -> None:
    """Record in the last checkpoint that its run ended, so no later run resumes it."""
    state.finished = True
    path = Path(checkpoints) / LAST_DIR / STATE_FILE
    if path.is_file():
        write_json(path, dataclasses.asdict(state))


def save_checkpoint(model, state: RunState, checkpoints: Path) -> None:
    """Write weights (with optimizer state) and the run state together, replacing the last checkpoint whole."""
    with atomic_directory(Path(checkpoints) / LAST_DIR) as staging:
        model.save_weights(staging / WEIGHTS_FILE)
        write_json(staging / STATE_FILE, dataclasses.asdict(state))


def trim_live_history(live_dir: Path, epochs: int) -> None:
    """Drop DVCLive plot rows of epochs after the checkpoint (logged, then interrupted before saving)."""
    for tsv in (Path(live_dir) / "plots" / "metrics").rglob("*.tsv"):
        header, *rows = tsv.read_text().splitlines(keepends=True)
        step = header.rstrip("\n").split("\t").index("step")
        kept = [row for row in rows if int(row.split("\t")[step]) < epochs]
        if len(kept) < len(rows):
            tsv.write_text(header + "".join(kept))


def _save_weights_atomically(model, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial.{path.name}")  # still ends in .weights.h5, as Keras requires
    model.save_weights(partial)
    partial.replace(path)


# --------------------------------------------------------------------- output
def _verbosity() -> int:
    """Keras' progress bar on a terminal, one line per epoch in logs and CI."""
    return 1 if sys.stdout.isatty() else 2


def _say(message: str) -> None:
    print(f"train: {message}", file=sys.stderr, flush=True)
