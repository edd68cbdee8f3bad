"""The model card as a typed record: the facts of one pushed version, each taken from the artifact that owns it.

Sections follow Mitchell et al., "Model Cards for Model Reporting" (2019), as
TFX's ModelCardGenerator lays them out: model, training data, training,
evaluation, lineage, use. model_card.json is `ModelCard.to_json()`; the HTML
and Markdown pages are rendered from the same object (components/card/render.py).

Where each fact comes from (never recomputed):

| fact | artifact |
|---|---|
| version, model fingerprint, pushed at, lineage | the version record push writes (lineage.json) |
| architecture, training params, data source | the run's params, as recorded in the lineage |
| TF version, signatures, weight counts, classes | the SavedModel (saved_model.pb, assets.extra) |
| input size | the blessing's data record (evaluate), else the manifest |
| counts per split | the records manifest (preprocess), else evaluate's copy of it in the blessing |
| data fingerprint, validation outcome, drift | validate's summary.json |
| epochs run, best epoch, best validation scores | train's metrics.json |
| curves | DVCLive's per-epoch TSVs |
| metrics, per-class IoU, confusion matrix | evaluate's metrics.json |
| baseline and deltas, blessing, thresholds | evaluate's blessing.json |
| intended use, limitations | params.yaml `card` |
| TF Serving release | the caller (contracts/serving_runtime.py TF_SERVING_VERSION) |

A missing input leaves its fields None and adds one sentence to `missing`;
the pages print that sentence where the fact would be.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from petseg.components.card.sources import (
    CardSources,
    SavedModelFacts,
    SignatureSpec,
    manifest_counts,
    read_json_file,
    read_manifest,
    read_validation,
)
from petseg.components.contracts.blessing import Blessing
from petseg.components.contracts.layout import METRICS_FILE
from petseg.components.contracts.lineage import VersionRecord
from petseg.components.core.expectations import DRIFT_CHECKS

SCHEMA_VERSION = 1
SYNTHETIC_SOURCE = "synthetic"
# The train and model params a reviewer compares runs by (the rest is in the lineage record).
TRAINING_KEYS = {
    "train": (
        "epochs",
        "batch_size",
        "learning_rate",
        "loss",
        "unfreeze_after_epochs",
        "fine_tune_learning_rate",
        "early_stopping_patience",
        "reduce_lr_patience",
        "augment",
        "seed",
    ),
    "model": ("encoder_weights", "freeze_encoder", "dropout"),
    "preprocess": ("image_size", "val_fraction"),
}
# TF Serving's standard ports (the deployment files and `petseg serve` use them too).
GRPC_PORT = 8500
REST_PORT = 8501

PushStatus = Literal["pushed", "declined", "unchanged"]
DriftStatus = Literal["no_drift", "drift", "not_checked"]


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    shape: list[int | None] | None  # None in a dimension: any size; None for the whole: unknown rank


@dataclass(frozen=True)
class Signature:
    name: str
    in_contract: bool  # one push and rollback require (components/contracts/signatures.py)
    inputs: list[Tensor]
    outputs: list[Tensor]


@dataclass(frozen=True)
class ModelSection:
    name: str
    version: int | None
    status: PushStatus
    status_reason: str
    architecture: str | None
    architecture_params: dict[str, Any]
    parameters: int | None
    trainable_parameters: int | None
    input_size: int | None
    classes: list[str]
    signatures: list[Signature]
    tensorflow_version: str | None
    tf_serving_release: str | None
    fingerprint: str


@dataclass(frozen=True)
class ValidationOutcome:
    success: bool | None
    failed_critical: list[str]
    failed_warnings: list[str]
    critical: list[str]  # the expectations params.yaml `validate.critical` made critical


@dataclass(frozen=True)
class DriftOutcome:
    status: DriftStatus
    text: str
    reference_dir: str | None = None
    reference_fingerprint: str | None = None
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DataSection:
    source: str | None
    synthetic: bool
    counts: dict[str, int]
    data_fingerprint: str | None
    manifest_sha256: str | None
    validation: ValidationOutcome | None
    drift: DriftOutcome


@dataclass(frozen=True)
class TrainingSection:
    params: dict[str, Any]
    epochs_run: int | None
    best_epoch: int | None
    best_val: dict[str, float]


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool | None
    value: float | None
    threshold: float | None
    text: str


@dataclass(frozen=True)
class Baseline:
    """The version served when the candidate was evaluated, and the candidate's deltas against it."""

    version: int | None
    compared: bool
    error: str | None
    mean_iou: float | None
    pixel_accuracy: float | None
    iou: dict[str, float | None]
    delta_mean_iou: float | None
    delta_pixel_accuracy: float | None
    delta_iou: dict[str, float | None]


@dataclass(frozen=True)
class EvaluationSection:
    test_examples: int | None
    mean_iou: float | None
    pixel_accuracy: float | None
    iou: dict[str, float | None]
    confusion_labels: list[str]
    confusion_rows: list[list[int]]
    baseline: Baseline | None
    baseline_text: str
    blessed: bool | None
    blessing_reason: str
    thresholds: dict[str, Any]
    checks: list[Check]


@dataclass(frozen=True)
class LineageSection:
    git_commit: str | None
    git_dirty: bool | None
    params_sha256: str | None
    data_manifest_sha256: str | None
    run_id: str
    run_name: str | None
    runner: str
    code_images: dict[str, str]
    pushed_at: str | None
    model_fingerprint: str


@dataclass(frozen=True)
class QueryExample:
    signature: str
    grpc: str  # Python, tensorflow-serving-api
    rest: str  # curl


@dataclass(frozen=True)
class UseSection:
    intended_use: str
    limitations: list[str]
    grpc_port: int
    rest_port: int
    rest_path: str | None  # None when the model was not pushed (no version to pin)
    queries: list[QueryExample]


@dataclass(frozen=True)
class ModelCard:
    """The facts of one version's card; `warnings` head the page, `missing` names every input not at hand."""

    schema_version: int
    title: str
    warnings: list[str]
    missing: list[str]
    model: ModelSection
    data: DataSection
    training: TrainingSection
    evaluation: EvaluationSection
    lineage: LineageSection
    use: UseSection

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n"


# ------------------------------------------------------------------ building
def build_card(
    record: VersionRecord,
    blessing: Blessing,
    model: SavedModelFacts | None,
    sources: CardSources,
    status: PushStatus,
    status_reason: str,
    missing: tuple[str, ...] = (),
) -> ModelCard:
    """The card of the model `record` describes (`model`: its SavedModel's facts, None when unreadable).

    `status` says whether push published it (a declined model's card has no
    version); `missing` adds sentences the caller already has (e.g. why the
    SavedModel's facts are absent).
    """
    gaps = list(missing)
    params = record.lineage.params
    metrics_read = read_json_file(
        sources.evaluation_dir / METRICS_FILE if sources.evaluation_dir else None, "evaluation metrics.json"
    )
    if metrics_read.missing:
        gaps.append(metrics_read.missing)
    data, data_gaps = _data_section(record, blessing, sources)
    gaps += data_gaps
    training, training_gaps = _training_section(params, sources)
    gaps += training_gaps
    evaluation, evaluation_gaps = _evaluation_section(
        metrics_read.value if isinstance(metrics_read.value, dict) else None, blessing
    )
    gaps += evaluation_gaps
    if sources.tf_serving_release is None:
        gaps.append("TF Serving release: not given to push (read from the deployment files, see docs/model-card.md)")
    name = record.model_name or "model"
    warnings = []
    if data.synthetic:
        warnings.append(
            "TRAINED ON SYNTHETIC DATA. This model never saw a real photo: data.source was 'synthetic' "
            "(generated shapes standing in for Oxford-IIIT Pet). Its metrics say nothing about real pets."
        )
    if status != "pushed":
        warnings.append(f"NOT PUSHED ({status}): {status_reason}")
    return ModelCard(
        schema_version=SCHEMA_VERSION,
        title=f"{name} version {record.version}" if record.version is not None else f"{name} (not pushed)",
        warnings=warnings,
        missing=gaps,
        model=_model_section(record, blessing, model, sources, status, status_reason),
        data=data,
        training=training,
        evaluation=evaluation,
        lineage=_lineage_section(record),
        use=_use_section(record, model, sources),
    )


def _model_section(
    record: VersionRecord,
    blessing: Blessing,
    model: SavedModelFacts | None,
    sources: CardSources,
    status: PushStatus,
    status_reason: str,
) -> ModelSection:
    model_params = record.lineage.params.get("model") or {}
    architecture = model_params.get("architecture")
    return ModelSection(
        name=record.model_name,
        version=record.version,
        status=status,
        status_reason=status_reason,
        architecture=architecture if isinstance(architecture, str) else None,
        architecture_params=dict(model_params.get("unet") or {}) if architecture == "unet" else {},
        parameters=model.parameters if model else None,
        trainable_parameters=model.trainable_parameters if model else None,
        input_size=_input_size(blessing, sources),
        classes=list(model.class_names) if model else [],
        signatures=[_signature(s) for s in model.signatures] if model else [],
        tensorflow_version=model.tensorflow_version if model else None,
        tf_serving_release=sources.tf_serving_release,
        fingerprint=record.model_fingerprint,
    )


def _input_size(blessing: Blessing, sources: CardSources) -> int | None:
    size = blessing.data.get("image_size")
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    manifest = read_manifest(sources.records_dir).value
    return manifest.image_size if manifest is not None else None


def _signature(spec: SignatureSpec) -> Signature:
    def tensors(specs) -> list[Tensor]:
        return [Tensor(t.name, t.dtype, list(t.shape) if t.shape is not None else None) for t in specs]

    return Signature(spec.name, spec.in_contract, tensors(spec.inputs), tensors(spec.outputs))


def _data_section(record: VersionRecord, blessing: Blessing, sources: CardSources) -> tuple[DataSection, list[str]]:
    gaps: list[str] = []
    source = (record.lineage.params.get("data") or {}).get("source")
    if not isinstance(source, str):
        source = None
        gaps.append("data source: the lineage records no params (pushed without them)")
    manifest_read = read_manifest(sources.records_dir)
    counts: dict[str, int] = {}
    if manifest_read.value is not None:
        counts = manifest_counts(manifest_read.value.counts)
    elif isinstance(blessing.data.get("counts"), dict):  # evaluate's copy of the same manifest's counts
        counts = manifest_counts({str(k): v for k, v in blessing.data["counts"].items() if _as_int(v) is not None})
    else:
        gaps.append(f"{manifest_read.missing}; examples per split not shown")
    validation_read = read_validation(sources.validation_dir)
    summary = validation_read.value
    critical = (record.lineage.params.get("validate") or {}).get("critical")
    validation = None
    if summary is not None:
        validation = ValidationOutcome(
            success=summary.success,
            failed_critical=list(summary.failed_critical),
            failed_warnings=list(summary.failed_warnings),
            critical=[str(c) for c in critical] if isinstance(critical, list) else [],
        )
    else:
        gaps.append(str(validation_read.missing))
    return (
        DataSection(
            source=source,
            synthetic=source == SYNTHETIC_SOURCE,
            counts=counts,
            data_fingerprint=summary.fingerprint if summary is not None else None,
            manifest_sha256=record.lineage.data_manifest_sha256,
            validation=validation,
            drift=_drift_outcome(summary, validation_read.missing),
        ),
        gaps,
    )


def _drift_outcome(summary, missing: str | None) -> DriftOutcome:
    """The drift result validate recorded: compared with which report, and which no_drift_* failed."""
    if summary is None:
        return DriftOutcome("not_checked", f"Drift unknown: {missing}.")
    reference = summary.drift_reference
    if reference is None:
        return DriftOutcome(
            "not_checked",
            "Drift not checked: validate had no reference to compare with (no version was served, "
            "or validate.drift.reference was empty).",
        )
    failed = [n for n in (*summary.failed_critical, *summary.failed_warnings) if n in DRIFT_CHECKS]
    if failed:
        text = f"Drift found against the reference: {', '.join(failed)} failed."
    else:
        text = "No drift: every drift check passed against the reference."
    return DriftOutcome("drift" if failed else "no_drift", text, reference.dir, reference.fingerprint, failed)


def _training_section(params: dict[str, Any], sources: CardSources) -> tuple[TrainingSection, list[str]]:
    gaps: list[str] = []
    shown = {
        f"{section}.{key}": (params.get(section) or {})[key]
        for section, keys in TRAINING_KEYS.items()
        for key in keys
        if key in (params.get(section) or {})
    }
    read = read_json_file(sources.train_metrics, "train's metrics.json")
    found = read.value if isinstance(read.value, dict) else {}
    if read.missing:
        gaps.append(f"{read.missing}; epochs run and best epoch not shown")
    best_val = found.get("best_val")
    return (
        TrainingSection(
            params=shown,
            epochs_run=_as_int(found.get("epochs_run")),
            best_epoch=_as_int(found.get("best_epoch")),
            best_val={k: float(v) for k, v in best_val.items() if _is_number(v)} if isinstance(best_val, dict) else {},
        ),
        gaps,
    )


def _evaluation_section(metrics: dict[str, Any] | None, blessing: Blessing) -> tuple[EvaluationSection, list[str]]:
    gaps: list[str] = []
    numbers = metrics if metrics is not None else blessing.candidate
    if metrics is None and blessing.candidate:
        gaps.append("evaluation metrics: the blessing's copy is shown (metrics.json not at hand); no confusion matrix")
    confusion = (metrics or {}).get("confusion_matrix") or {}
    iou = _iou(numbers.get("iou"))
    baseline, baseline_text = _baseline(blessing, numbers, iou)
    checks = [
        Check(
            name=str(c.get("name", "")),
            passed=c.get("passed") if isinstance(c.get("passed"), bool) else None,
            value=_as_float(c.get("value")),
            threshold=_as_float(c.get("threshold")),
            text=str(c.get("text", "")),
        )
        for c in blessing.checks
    ]
    return (
        EvaluationSection(
            test_examples=_as_int((metrics or {}).get("test_examples") or blessing.data.get("test_examples")),
            mean_iou=_as_float(numbers.get("mean_iou")),
            pixel_accuracy=_as_float(numbers.get("pixel_accuracy")),
            iou=iou,
            confusion_labels=[str(x) for x in confusion.get("labels") or []],
            confusion_rows=[[int(v) for v in row] for row in confusion.get("rows_true_columns_predicted") or []],
            baseline=baseline,
            baseline_text=baseline_text,
            blessed=blessing.blessed,
            blessing_reason=blessing.reason,
            thresholds=dict(blessing.thresholds),
            checks=checks,
        ),
        gaps,
    )


def _baseline(
    blessing: Blessing, candidate: dict[str, Any], candidate_iou: dict[str, float | None]
) -> tuple[Baseline | None, str]:
    """The served version the blessing compared with, deltas = candidate - baseline; or why there is none."""
    served = blessing.baseline
    if not served:
        return None, "No baseline: no version was served when this model was evaluated, so nothing to compare with."
    version = _as_int(served.get("version"))
    error = served.get("error")
    if error or served.get("mean_iou") is None:
        why = error or "the blessing recorded no metrics for it"
        return (
            Baseline(version, False, str(why), None, None, {}, None, None, {}),
            f"Served version {version} was not compared: {why}.",
        )
    iou = _iou(served.get("iou"))
    base_miou, base_acc = _as_float(served.get("mean_iou")), _as_float(served.get("pixel_accuracy"))
    return (
        Baseline(
            version=version,
            compared=True,
            error=None,
            mean_iou=base_miou,
            pixel_accuracy=base_acc,
            iou=iou,
            delta_mean_iou=_delta(_as_float(candidate.get("mean_iou")), base_miou),
            delta_pixel_accuracy=_delta(_as_float(candidate.get("pixel_accuracy")), base_acc),
            delta_iou={name: _delta(candidate_iou.get(name), iou.get(name)) for name in candidate_iou},
        ),
        f"Compared with version {version}, the version served when this model was evaluated (same test set).",
    )


def _lineage_section(record: VersionRecord) -> LineageSection:
    lineage = record.lineage
    return LineageSection(
        git_commit=lineage.git_commit,
        git_dirty=lineage.git_dirty,
        params_sha256=lineage.params_sha256,
        data_manifest_sha256=lineage.data_manifest_sha256,
        run_id=lineage.run_id,
        run_name=lineage.run_name,
        runner=lineage.runner,
        code_images=dict(lineage.code_images),
        pushed_at=record.pushed_at,
        model_fingerprint=record.model_fingerprint,
    )


def _use_section(record: VersionRecord, model: SavedModelFacts | None, sources: CardSources) -> UseSection:
    name, version = record.model_name, record.version
    return UseSection(
        intended_use=sources.use.intended_use,
        limitations=list(sources.use.limitations),
        grpc_port=GRPC_PORT,
        rest_port=REST_PORT,
        rest_path=f"/v1/models/{name}/versions/{version}:predict" if version is not None else None,
        queries=[_query(name, version, s) for s in model.signatures] if version is not None and model else [],
    )


def _query(model_name: str, version: int, signature: SignatureSpec) -> QueryExample:
    """How to call `signature` of this exact version: gRPC (model_spec.version) and REST (/versions/<v>)."""
    grpc_inputs = "\n".join(
        f'request.inputs["{t.name}"].CopyFrom(tf.make_tensor_proto({_grpc_value(t.dtype)}))' for t in signature.inputs
    )
    grpc = (
        "import grpc, tensorflow as tf\n"
        "from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc\n\n"
        "request = predict_pb2.PredictRequest()\n"
        f'request.model_spec.name = "{model_name}"\n'
        f"request.model_spec.version.value = {version}  # this version, whatever is served by default\n"
        f'request.model_spec.signature_name = "{signature.name}"\n'
        f"{grpc_inputs}\n"
        f'stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel("SERVER:{GRPC_PORT}"))\n'
        "reply = stub.Predict(request, timeout=30)"
    )
    body = ", ".join(f'"{t.name}": {_rest_value(t.dtype, t.shape)}' for t in signature.inputs)
    rest = (
        f'curl -sS -X POST "$SERVER:{REST_PORT}/v1/models/{model_name}/versions/{version}:predict" \\\n'
        f"  -H 'Content-Type: application/json' \\\n"
        f'  -d \'{{"signature_name": "{signature.name}", "inputs": {{{body}}}}}\''
    )
    return QueryExample(signature.name, grpc, rest)


def _grpc_value(dtype: str) -> str:
    if dtype == "string":
        return '[open("pet.jpg", "rb").read()]'
    return f"images, dtype=tf.{dtype}"  # a numpy array of the shape the signature lists


def _rest_value(dtype: str, shape: tuple[int | None, ...] | None) -> str:
    if dtype == "string":
        return '[{"b64": "\'"$(base64 -w0 pet.jpg)"\'"}]'
    rank = len(shape) if shape is not None else 1
    return "[" * rank + f"<{dtype} values>" + "]" * rank


# ------------------------------------------------------------------ helpers
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_float(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def _as_int(value: Any) -> int | None:
    return int(value) if _is_number(value) and float(value).is_integer() else None


def _iou(value: Any) -> dict[str, float | None]:
    return {str(k): _as_float(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _delta(candidate: float | None, baseline: float | None) -> float | None:
    return candidate - baseline if candidate is not None and baseline is not None else None
