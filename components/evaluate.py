"""Step 5, evaluate: score the SavedModel on the test shards and decide whether to bless it.

The model is scored through its serving signature (uint8 images in, class
mask out), exactly as TF Serving will run it, one batch at a time: only a
confusion matrix (and a few sample predictions for the plot) is kept, never
the test set. From the confusion matrix C (rows true class, columns predicted):

    IoU_k          = C[k,k] / (row_k + col_k - C[k,k])
    mean IoU       = mean of IoU_k over the classes that occur in truth or prediction
    pixel accuracy = trace(C) / sum(C)

A class absent from both the truth and the predictions has no IoU (null in
metrics.json) and is left out of the mean, as Keras' MeanIoU does: an empty
class is neither right nor wrong.

Blessing, like TFX's Evaluator: blessed when mean IoU >= evaluate.min_mean_iou,
pixel accuracy >= evaluate.min_accuracy, and, when a model is already served at
the push target (components/model_store.py), candidate mean IoU >= served mean
IoU - evaluate.max_regression, both scored in the same pass over the same test
set. A served model that cannot be loaded is reported and not compared, so a
broken deployment can be fixed forward. An unblessed model is a result, not an
error: evaluate succeeds and push declines.

Outputs (written whole or not at all): metrics.json, blessing.json,
confusion_matrix.png, sample_predictions.png.

metrics.json: mean_iou, pixel_accuracy, iou {class: float|null}, pixels,
test_examples, confusion_matrix {labels, rows_true_columns_predicted}.
blessing.json (what push and the Kubeflow pipeline read):
    blessed       bool
    reason        one line: the failed checks, or all checks when blessed
    checks        [{name: min_mean_iou|min_accuracy|max_regression, passed, value, threshold, text}]
    candidate     {mean_iou, pixel_accuracy, iou}
    baseline      null (nothing served) | {version, path, mean_iou, pixel_accuracy, iou}
                  | {version, path, error} (served model could not be compared)
    thresholds    {min_mean_iou, min_accuracy, max_regression}
    model         {path, fingerprint}: sha256 of the SavedModel's files; push refuses another model
    data          {records, image_size, test_examples, manifest_sha256}
    push_target   <model_base_path>/<model_name> the baseline was looked up at
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from petseg.components import contract, model_store, records, storage
from petseg.components.errors import PetsegError, first_line
from petseg.components.progress import progress_bar
from petseg.components.fsutil import atomic_directory, read_step_json, write_json
from petseg.components.export import read_class_names
from petseg.components.params import EvaluateParams, PushParams
from petseg.components.rawdata import sha256_file

METRICS_FILE = "metrics.json"
BLESSING_FILE = "blessing.json"
CONFUSION_PLOT = "confusion_matrix.png"
SAMPLES_PLOT = "sample_predictions.png"
TEST_SPLIT = "test"


# ------------------------------------------------------------------ metric math
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
    return np.bincount(true * num_classes + pred, minlength=num_classes * num_classes) \
        .reshape(num_classes, num_classes)


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
        return {name: (float(tp[k] / union[k]) if union[k] > 0 else None)
                for k, name in enumerate(self.class_names)}

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
            "confusion_matrix": {"labels": list(self.class_names),
                                 "rows_true_columns_predicted": self.confusion.tolist()},
        }


# --------------------------------------------------------------------- blessing
def decide_blessing(candidate: SegmentationMetrics, baseline: SegmentationMetrics | None,
                    params: EvaluateParams, baseline_version: int | None = None,
                    baseline_error: str | None = None) -> dict:
    """{"blessed", "reason", "checks"}: the thresholds, and no regression against the served model.

    `baseline_error` says why a served model could not be compared (it is then left out).
    """
    checks = [
        {"name": "min_mean_iou", "value": candidate.mean_iou, "threshold": params.min_mean_iou,
         "passed": candidate.mean_iou >= params.min_mean_iou,
         "text": f"mean IoU {candidate.mean_iou:.4f} %s min_mean_iou {params.min_mean_iou:.4f}"},
        {"name": "min_accuracy", "value": candidate.pixel_accuracy, "threshold": params.min_accuracy,
         "passed": candidate.pixel_accuracy >= params.min_accuracy,
         "text": f"pixel accuracy {candidate.pixel_accuracy:.4f} %s min_accuracy {params.min_accuracy:.4f}"},
    ]
    if baseline is not None:
        floor = baseline.mean_iou - params.max_regression
        checks.append({
            "name": "max_regression", "value": candidate.mean_iou, "threshold": floor,
            "baseline_version": baseline_version, "baseline_mean_iou": baseline.mean_iou,
            "passed": candidate.mean_iou >= floor,
            "text": (f"mean IoU {candidate.mean_iou:.4f} %s served version {baseline_version}'s "
                     f"{baseline.mean_iou:.4f} - max_regression {params.max_regression:.4f}"),
        })
    for check in checks:
        check["text"] = check["text"] % (">=" if check["passed"] else "<")
    blessed = all(c["passed"] for c in checks)
    shown = checks if blessed else [c for c in checks if not c["passed"]]
    reason = "; ".join(c["text"] for c in shown)
    if baseline_error:
        reason += f"; served version {baseline_version} not compared ({baseline_error})"
    elif baseline is None:
        reason += "; no served model to compare with"
    return {"blessed": blessed, "reason": reason, "checks": checks}


def read_blessing(path: str | Path) -> dict:
    """blessing.json as evaluate wrote it, or PetsegError saying to run evaluate."""
    path = Path(path)
    if path.is_dir():
        path = path / BLESSING_FILE
    blessing = read_step_json(path, "evaluate", missing="no blessing")
    if not isinstance(blessing, dict) or not isinstance(blessing.get("blessed"), bool):
        raise PetsegError(f"{path}: not a blessing file (no 'blessed'); run `petseg evaluate` again")
    return blessing


# ------------------------------------------------------------------- the model
class ServingModel:
    """A SavedModel loaded as a server loads it; predict_masks runs its uint8-image signature."""

    def __init__(self, path: str, what: str = "model"):
        import tensorflow as tf

        self.path = model_store.require_savedmodel(path, what)
        try:
            self._loaded = tf.saved_model.load(self.path, tags=["serve"])
        except Exception as exc:  # noqa: BLE001 - any load failure means "not servable"
            raise PetsegError(f"{self.path}: cannot load the SavedModel ({first_line(exc)})") from None
        signature = self._loaded.signatures.get(contract.SIGNATURE_IMAGES)
        if signature is None:
            raise PetsegError(f"{self.path}: no '{contract.SIGNATURE_IMAGES}' signature; "
                              "export it with components/export.py")
        self._signature = signature
        self.class_names = read_class_names(self.path)

    def predict_masks(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> class ids [N, H, W]."""
        outputs = self._signature(**{contract.INPUT_IMAGES: images})
        if contract.OUTPUT_MASK not in outputs:
            raise PetsegError(f"{self.path}: signature '{contract.SIGNATURE_IMAGES}' has no "
                              f"'{contract.OUTPUT_MASK}' output (has {', '.join(outputs)})")
        mask = outputs[contract.OUTPUT_MASK].numpy()
        if mask.shape != images.shape[:3]:
            raise PetsegError(f"{self.path}: mask shape {list(mask.shape)} does not match the images' "
                              f"{list(images.shape[:3])}")
        return mask


# ------------------------------------------------------------------ test data
def test_batches(records_dir: Path, image_size: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(uint8 images [B, S, S, 3], masks [B, S, S]) from the test shards, one batch at a time."""
    import tensorflow as tf

    files = records.shard_paths(records_dir, TEST_SPLIT)
    if not files:
        raise PetsegError(f"{records_dir}: no {TEST_SPLIT} shards; run `petseg preprocess` first")
    dataset = (tf.data.TFRecordDataset([str(f) for f in files])
               .map(lambda s: records.parse_example(s, image_size), num_parallel_calls=tf.data.AUTOTUNE)
               .map(lambda ex: (ex["image"], ex["mask"]))
               .batch(batch_size)
               .prefetch(2))
    iterator = dataset.as_numpy_iterator()
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as exc:
            raise PetsegError(f"{records_dir}: unreadable test shard ({first_line(exc)}); "
                              "run `petseg preprocess` again") from None


@dataclass
class _Scores:
    """Running confusion matrices per model, and the first few candidate predictions."""

    confusion: dict[str, np.ndarray]
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    examples: int = 0


def score_models(models: dict[str, ServingModel], batches, num_classes: int, samples: int,
                 total: int | None = None) -> _Scores:
    """Stream the batches through every model once; keep only confusion matrices and `samples` examples.

    The first model is the candidate (its predictions feed the sample sheet).
    """
    scores = _Scores(confusion={name: np.zeros((num_classes, num_classes), np.int64) for name in models})
    candidate = next(iter(models))
    with progress_bar(total=total, desc="evaluate", unit="img") as bar:
        for images, masks in batches:
            for name, model in models.items():
                pred = model.predict_masks(images)
                try:
                    scores.confusion[name] += confusion_counts(masks, pred, num_classes)
                except ValueError as exc:
                    raise PetsegError(f"{model.path}: {exc}; do the model and the records agree "
                                      "on the classes?") from None
                if name == candidate and len(scores.samples) < samples:
                    take = samples - len(scores.samples)
                    scores.samples.extend(zip(images[:take], masks[:take], pred[:take]))
            scores.examples += len(images)
            bar.update(len(images))
    if scores.examples == 0:
        raise PetsegError("the test split is empty; run `petseg preprocess` with test examples")
    return scores


# --------------------------------------------------------------------- the step
@dataclass
class EvaluationResult:
    """The blessing decision and the headline numbers; the files are in out_dir."""

    out_dir: Path
    blessed: bool
    reason: str
    mean_iou: float
    pixel_accuracy: float
    test_examples: int
    baseline_version: int | None = None
    baseline_mean_iou: float | None = None


def evaluate(model_dir: Path, records_dir: Path, params: EvaluateParams, push: PushParams,
             out_dir: Path) -> EvaluationResult:
    """Score `model_dir` (and the served model, if any) on the test shards; write metrics, plots, blessing."""
    from petseg.components.preprocess import load_manifest

    records_dir, out_dir = Path(records_dir), Path(out_dir)
    manifest = load_manifest(records_dir)
    image_size = int(manifest["image_size"])
    candidate = ServingModel(str(model_dir), "model")
    fingerprint = model_store.model_fingerprint(model_dir)  # of what was loaded: push checks it is unchanged
    class_names = candidate.class_names
    if manifest.get("class_names") and tuple(manifest["class_names"]) != class_names:
        raise PetsegError(f"{model_dir} predicts classes {list(class_names)} but {records_dir} holds "
                          f"{manifest['class_names']}; train and evaluate on the same records")

    models = {"candidate": candidate}
    baseline_info = _load_baseline(push, class_names)
    baseline_version = baseline_info["version"] if baseline_info else None
    if baseline_info is not None and "model" in baseline_info:
        models["baseline"] = baseline_info.pop("model")

    scores = score_models(models, test_batches(records_dir, image_size, params.batch_size), len(class_names),
                         params.sample_predictions, total=manifest.get("counts", {}).get(TEST_SPLIT))
    metrics = SegmentationMetrics(class_names, scores.confusion["candidate"])
    baseline = SegmentationMetrics(class_names, scores.confusion["baseline"]) if "baseline" in models else None
    if baseline is not None:
        baseline_info.update(baseline.summary())
    decision = decide_blessing(metrics, baseline, params, baseline_version,
                               baseline_error=(baseline_info or {}).get("error"))

    blessing = {
        **decision,
        "candidate": metrics.summary(),
        "baseline": baseline_info,
        "thresholds": {"min_mean_iou": params.min_mean_iou, "min_accuracy": params.min_accuracy,
                       "max_regression": params.max_regression},
        "model": {"path": str(model_dir), "fingerprint": fingerprint},
        "data": {"records": str(records_dir), "image_size": image_size, "test_examples": scores.examples,
                 "manifest_sha256": sha256_file(records_dir / records.MANIFEST_FILE)},
        "push_target": model_store.model_root(push),
    }
    with atomic_directory(out_dir) as staging:
        write_json(staging / METRICS_FILE, {**metrics.to_dict(), "test_examples": scores.examples})
        write_json(staging / BLESSING_FILE, blessing)
        plot_confusion_matrix(metrics, staging / CONFUSION_PLOT)
        plot_samples(scores.samples, class_names, staging / SAMPLES_PLOT)
    return EvaluationResult(
        out_dir=out_dir, blessed=decision["blessed"], reason=decision["reason"],
        mean_iou=metrics.mean_iou, pixel_accuracy=metrics.pixel_accuracy, test_examples=scores.examples,
        baseline_version=baseline_version,
        baseline_mean_iou=baseline.mean_iou if baseline is not None else None,
    )


def _load_baseline(push: PushParams, class_names: tuple[str, ...]) -> dict | None:
    """None when nothing is served; else {"version", "path", "model"} or {"version", "path", "error"}."""
    version = model_store.served_version(push)
    if version is None:
        return None
    path = model_store.version_path(push, version)
    info: dict = {"version": version, "path": path}
    try:
        model = _load_served_model(path)
    except PetsegError as exc:
        print(f"evaluate: warning: served version {version} not compared: {exc}", file=sys.stderr)
        return {**info, "error": str(exc)}
    except OSError as exc:
        raise PetsegError(f"cannot read the served model at {path} ({first_line(exc)}); "
                          "check the store's credentials and endpoint") from None
    if model.class_names != class_names:
        error = f"served model predicts classes {list(model.class_names)}, the candidate {list(class_names)}"
        print(f"evaluate: warning: served version {version} not compared: {error}", file=sys.stderr)
        return {**info, "error": error}
    return {**info, "model": model}


def _load_served_model(path: str) -> ServingModel:
    """The served SavedModel at `path`, a local folder or a store URI.

    TensorFlow cannot read s3:// (nor any fsspec store), so a URI is first
    copied to a temporary local folder (storage.local_copy); loading restores
    the variables into memory, so the copy is not needed once loaded.
    """
    with storage.local_copy(path) as local:
        try:
            return ServingModel(local, "served model")
        except PetsegError as exc:
            raise PetsegError(str(exc).replace(local, path)) from None


# ------------------------------------------------------------------------ plots
def plot_confusion_matrix(metrics: SegmentationMetrics, path: Path) -> None:
    """Row-normalised confusion matrix (recall per true class) with pixel counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = metrics.confusion
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, np.float64), where=rows > 0)
    k = len(metrics.class_names)
    fig, ax = plt.subplots(figsize=(1.6 * k + 2.4, 1.4 * k + 1.6))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), metrics.class_names)
    ax.set_yticks(range(k), metrics.class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{share[i, j]:.1%}\n{counts[i, j]:,}", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_title(f"mean IoU {metrics.mean_iou:.3f}, pixel accuracy {metrics.pixel_accuracy:.3f}")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_samples(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], class_names: tuple[str, ...],
                 path: Path) -> None:
    """One row per example: input image, true mask, predicted mask (the TF tutorial's display())."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = ("Input Image", "True Mask", "Predicted Mask")
    if not samples:
        fig, ax = plt.subplots(figsize=(6, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no samples (evaluate.sample_predictions is 0)", ha="center", va="center")
    else:
        fig, axes = plt.subplots(len(samples), 3, figsize=(9, 3 * len(samples)), squeeze=False)
        for row, example in zip(axes, samples):
            for col, (ax, picture) in enumerate(zip(row, example)):
                if col == 0:
                    ax.imshow(picture)
                else:
                    ax.imshow(picture, vmin=0, vmax=len(class_names) - 1, cmap="viridis", interpolation="nearest")
                ax.set_title(titles[col])
                ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
