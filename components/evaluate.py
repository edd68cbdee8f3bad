"""Step 5, evaluate: score the SavedModel on the test shards and decide whether to bless it.

The model is scored through its serving signature (uint8 images in, class
mask out), exactly as TF Serving will run it, one batch at a time: only a
confusion matrix (and a few sample predictions for the plot) is kept, never
the test set. The metric math is components/ml/metrics.py.

Blessing, like TFX's Evaluator: blessed when mean IoU >= evaluate.min_mean_iou,
pixel accuracy >= evaluate.min_accuracy, and, when a model is already served at
the push target (components/store/model_store.py), candidate mean IoU >= served mean
IoU - evaluate.max_regression, both scored in the same pass over the same test
set. A served model that cannot be loaded is reported and not compared, so a
broken deployment can be fixed forward. An unblessed model is a result, not an
error: evaluate succeeds and push declines.

Outputs (written whole or not at all): metrics.json, blessing.json,
confusion_matrix.png, sample_predictions.png.

metrics.json: mean_iou, pixel_accuracy, iou {class: float|null}, pixels,
test_examples, confusion_matrix {labels, rows_true_columns_predicted}.
blessing.json: see components/contracts/blessing.py, the contract push and the Kubeflow
pipeline read.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from petseg.components.contracts import signatures
from petseg.components.contracts.blessing import Blessing, write_blessing
from petseg.components.contracts.layout import CONFUSION_PLOT, METRICS_FILE, SAMPLES_PLOT
from petseg.components.contracts.manifest import load_manifest, manifest_path
from petseg.components.contracts.rawdata import sha256_file
from petseg.components.core.errors import PetsegError, first_line
from petseg.components.core.fsutil import atomic_directory, write_json
from petseg.components.core.params import EvaluateParams, PushParams
from petseg.components.core.progress import progress_bar
from petseg.components.ml import inputs
from petseg.components.ml.export import read_class_names
from petseg.components.ml.metrics import SegmentationMetrics, confusion_counts
from petseg.components.ml.plots import plot_confusion_matrix, plot_samples
from petseg.components.store import model_store, storage
from petseg.components.store.credentials import require_store_access
from petseg.components.store.model_store import ModelStore

TEST_SPLIT = "test"


# --------------------------------------------------------------------- blessing
def decide_blessing(
    candidate: SegmentationMetrics,
    baseline: SegmentationMetrics | None,
    params: EvaluateParams,
    baseline_version: int | None = None,
    baseline_error: str | None = None,
) -> dict:
    """{"blessed", "reason", "checks"}: the thresholds, and no regression against the served model.

    `baseline_error` says why a served model could not be compared (it is then left out).
    """
    checks: list[dict[str, Any]] = [
        {
            "name": "min_mean_iou",
            "value": candidate.mean_iou,
            "threshold": params.min_mean_iou,
            "passed": candidate.mean_iou >= params.min_mean_iou,
            "text": f"mean IoU {candidate.mean_iou:.4f} %s min_mean_iou {params.min_mean_iou:.4f}",
        },
        {
            "name": "min_accuracy",
            "value": candidate.pixel_accuracy,
            "threshold": params.min_accuracy,
            "passed": candidate.pixel_accuracy >= params.min_accuracy,
            "text": f"pixel accuracy {candidate.pixel_accuracy:.4f} %s min_accuracy {params.min_accuracy:.4f}",
        },
    ]
    if baseline is not None:
        floor = baseline.mean_iou - params.max_regression
        checks.append(
            {
                "name": "max_regression",
                "value": candidate.mean_iou,
                "threshold": floor,
                "baseline_version": baseline_version,
                "baseline_mean_iou": baseline.mean_iou,
                "passed": candidate.mean_iou >= floor,
                "text": (
                    f"mean IoU {candidate.mean_iou:.4f} %s served version {baseline_version}'s "
                    f"{baseline.mean_iou:.4f} - max_regression {params.max_regression:.4f}"
                ),
            }
        )
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


# ------------------------------------------------------------------- the model
class ServingModel:
    """A SavedModel loaded as a server loads it; predict_masks runs its uint8-image signature."""

    def __init__(self, path: str, what: str = "model"):
        import tensorflow as tf

        self.path = model_store.require_savedmodel(path, what)
        try:
            self._loaded = tf.saved_model.load(self.path, tags=["serve"])
        except Exception as exc:
            raise PetsegError(f"{self.path}: cannot load the SavedModel ({first_line(exc)})") from None
        signature = self._loaded.signatures.get(signatures.SIGNATURE_IMAGES)
        if signature is None:
            raise PetsegError(
                f"{self.path}: no '{signatures.SIGNATURE_IMAGES}' signature; export it with components/ml/export.py"
            )
        self._signature = signature
        self.class_names = read_class_names(self.path)

    def predict_masks(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> class ids [N, H, W]."""
        outputs = self._signature(**{signatures.INPUT_IMAGES: images})
        if signatures.OUTPUT_MASK not in outputs:
            raise PetsegError(
                f"{self.path}: signature '{signatures.SIGNATURE_IMAGES}' has no "
                f"'{signatures.OUTPUT_MASK}' output (has {', '.join(outputs)})"
            )
        mask = outputs[signatures.OUTPUT_MASK].numpy()
        if mask.shape != images.shape[:3]:
            raise PetsegError(
                f"{self.path}: mask shape {list(mask.shape)} does not match the images' {list(images.shape[:3])}"
            )
        return mask


@dataclass
class _Scores:
    """Running confusion matrices per model, and the first few candidate predictions."""

    confusion: dict[str, np.ndarray]
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    examples: int = 0


def score_models(
    models: dict[str, ServingModel], batches, num_classes: int, samples: int, total: int | None = None
) -> _Scores:
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
                    raise PetsegError(
                        f"{model.path}: {exc}; do the model and the records agree on the classes?"
                    ) from None
                if name == candidate and len(scores.samples) < samples:
                    take = samples - len(scores.samples)
                    scores.samples.extend(zip(images[:take], masks[:take], pred[:take], strict=True))
            scores.examples += len(images)
            bar.update(len(images))
    if scores.examples == 0:
        raise PetsegError("the test split is empty; run `petseg preprocess` with test examples")
    return scores


# --------------------------------------------------------------------- the step
@dataclass(frozen=True)
class Baseline:
    """The model served at the push target when evaluate ran: loaded for comparison, or why it was not."""

    version: int
    path: str
    model: ServingModel | None = None
    error: str | None = None


@dataclass(frozen=True)
class EvaluationResult:
    """The blessing and the candidate's metrics; the files are in out_dir."""

    out_dir: Path
    blessing: Blessing
    metrics: SegmentationMetrics
    test_examples: int
    baseline_metrics: SegmentationMetrics | None = None

    @property
    def blessed(self) -> bool:
        return self.blessing.blessed

    @property
    def reason(self) -> str:
        return self.blessing.reason

    @property
    def mean_iou(self) -> float:
        return self.metrics.mean_iou

    @property
    def pixel_accuracy(self) -> float:
        return self.metrics.pixel_accuracy

    @property
    def baseline_version(self) -> int | None:
        return self.blessing.baseline_version

    @property
    def baseline_mean_iou(self) -> float | None:
        return self.baseline_metrics.mean_iou if self.baseline_metrics is not None else None

    def metrics_record(self) -> dict:
        """metrics.json's content."""
        return {**self.metrics.to_dict(), "test_examples": self.test_examples}


def evaluate(
    model_dir: Path, records_dir: Path, params: EvaluateParams, push: PushParams, out_dir: Path
) -> EvaluationResult:
    """Score `model_dir` (and the served model, if any) on the test shards; write metrics, plots, blessing."""
    records_dir, out_dir = Path(records_dir), Path(out_dir)
    require_store_access(push.model_base_path)  # first: a refused key in one line, before minutes of scoring
    manifest = load_manifest(records_dir)
    candidate = ServingModel(str(model_dir), "model")
    fingerprint = model_store.model_fingerprint(model_dir)  # of what was loaded: push checks it is unchanged
    class_names = candidate.class_names
    if manifest.class_names and manifest.class_names != class_names:
        raise PetsegError(
            f"{model_dir} predicts classes {list(class_names)} but {records_dir} holds "
            f"{list(manifest.class_names)}; train and evaluate on the same records"
        )

    store = ModelStore.from_params(push)
    baseline = load_baseline(store, class_names)
    models = {"candidate": candidate}
    if baseline is not None and baseline.model is not None:
        models["baseline"] = baseline.model
    batches = inputs.numpy_batches(records_dir, TEST_SPLIT, manifest.image_size, params.batch_size)
    scores = score_models(
        models, batches, len(class_names), params.sample_predictions, total=manifest.counts.get(TEST_SPLIT)
    )
    metrics = SegmentationMetrics(class_names, scores.confusion["candidate"])
    baseline_metrics = SegmentationMetrics(class_names, scores.confusion["baseline"]) if "baseline" in models else None
    decision = decide_blessing(
        metrics,
        baseline_metrics,
        params,
        baseline.version if baseline else None,
        baseline_error=baseline.error if baseline else None,
    )
    blessing = Blessing(
        blessed=decision["blessed"],
        reason=decision["reason"],
        checks=tuple(decision["checks"]),
        candidate=metrics.summary(),
        baseline=_baseline_record(baseline, baseline_metrics),
        thresholds={
            "min_mean_iou": params.min_mean_iou,
            "min_accuracy": params.min_accuracy,
            "max_regression": params.max_regression,
        },
        model_path=str(model_dir),
        model_fingerprint=fingerprint,
        data={
            "records": str(records_dir),
            "image_size": manifest.image_size,
            "test_examples": scores.examples,
            "manifest_sha256": sha256_file(manifest_path(records_dir)),
            "counts": dict(manifest.counts),  # examples per split in that manifest (the model card shows them)
        },
        push_target=store.root,
    )
    result = EvaluationResult(
        out_dir=out_dir,
        blessing=blessing,
        metrics=metrics,
        test_examples=scores.examples,
        baseline_metrics=baseline_metrics,
    )
    with atomic_directory(out_dir) as staging:
        write_json(staging / METRICS_FILE, result.metrics_record())
        write_blessing(staging, blessing)
        plot_confusion_matrix(metrics, staging / CONFUSION_PLOT)
        plot_samples(scores.samples, class_names, staging / SAMPLES_PLOT)
    return result


def _baseline_record(baseline: Baseline | None, metrics: SegmentationMetrics | None) -> dict | None:
    """The blessing's `baseline` entry: version and path, then its metrics or why it was not compared."""
    if baseline is None:
        return None
    record: dict = {"version": baseline.version, "path": baseline.path}
    if baseline.error is not None:
        record["error"] = baseline.error
    if metrics is not None:
        record.update(metrics.summary())
    return record


def load_baseline(store: ModelStore, class_names: tuple[str, ...]) -> Baseline | None:
    """The served model at the push target, loaded; None when nothing is served.

    A served model that does not load, or predicts other classes, comes back
    with `error` set and no model: it is reported, not compared.
    """
    version = store.served_version()
    if version is None:
        return None
    path = store.version_path(version)
    try:
        model = _load_served_model(path)
    except PetsegError as exc:
        return _not_compared(version, path, str(exc))
    except OSError as exc:
        raise PetsegError(
            f"cannot read the served model at {path} ({first_line(exc)}); check the store's credentials and endpoint"
        ) from None
    if model.class_names != class_names:
        return _not_compared(
            version, path, f"served model predicts classes {list(model.class_names)}, the candidate {list(class_names)}"
        )
    return Baseline(version, path, model=model)


def _not_compared(version: int, path: str, error: str) -> Baseline:
    print(f"evaluate: warning: served version {version} not compared: {error}", file=sys.stderr)
    return Baseline(version, path, error=error)


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
