"""Where the card's facts come from: one small reader per artifact, each returning what it found or why not.

Every reader takes a local path (push runs on a local copy of what it reads,
in both runners) and never raises for a missing or damaged input: the card
says in words what it could not read (`Missing`), so a reviewer sees the gap
named instead of a blank.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petseg.components.contracts import signatures
from petseg.components.contracts.manifest import load_manifest
from petseg.components.contracts.validation import SUMMARY_FILE, ValidationSummary, read_summary
from petseg.components.core.errors import PetsegError, first_line
from petseg.components.core.params import CardParams

# The DVCLive plot files train writes per epoch (components/train.py live_metric_name): metric -> splits.
CURVE_METRICS = {"loss": ("train", "val"), "mean_iou": ("train", "val"), "accuracy": ("train", "val")}
# A SavedModel's signature that is TF's own, not an endpoint a client calls.
INIT_OP_SIGNATURE = "__saved_model_init_op"


@dataclass(frozen=True)
class CardSources:
    """The artifacts push reads for the card besides the model, the blessing and the lineage it has anyway.

    None means "not given": the card says so. `tf_serving_release` is the
    tensorflow/serving release the deployment runs (the caller passes
    contracts.serving_runtime.TF_SERVING_VERSION); `use` is params.yaml's `card` section.
    """

    evaluation_dir: Path | None = None  # evaluate's folder: metrics.json, confusion_matrix.png, sample_predictions.png
    validation_dir: Path | None = None  # validate's report: summary.json
    records_dir: Path | None = None  # preprocess's folder: manifest.json
    train_metrics: Path | None = None  # train's metrics.json (models/metrics.json)
    live_dir: Path | None = None  # DVCLive's folder: plots/metrics/<metric>/<split>.tsv
    tf_serving_release: str | None = None
    use: CardParams = field(default_factory=CardParams)


@dataclass(frozen=True)
class Read:
    """What a reader found (`value`), or None and `missing`: one sentence saying what is not there and why."""

    value: Any = None
    missing: str | None = None


# ------------------------------------------------------------------ JSON files
def read_json_file(path: Path | None, what: str) -> Read:
    """A JSON file's content; `what` names it in the sentence when it is absent or unreadable."""
    if path is None:
        return Read(missing=f"{what}: not given to push")
    if not path.is_file():
        return Read(missing=f"{what}: {path} not found")
    try:
        return Read(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        return Read(missing=f"{what}: {path} is unreadable ({first_line(exc)})")


def read_manifest(records_dir: Path | None) -> Read:
    """The records manifest (preprocess), as a Manifest."""
    if records_dir is None:
        return Read(missing="records manifest: no records folder given to push")
    try:
        return Read(load_manifest(records_dir))
    except PetsegError as exc:
        return Read(missing=f"records manifest: {exc}")


def read_validation(validation_dir: Path | None) -> Read:
    """validate's summary.json, as a ValidationSummary."""
    if validation_dir is None:
        return Read(missing="validation report: not given to push (petseg push --validation)")
    if not (validation_dir / SUMMARY_FILE).is_file():
        return Read(missing=f"validation report: {validation_dir / SUMMARY_FILE} not found")
    try:
        summary: ValidationSummary = read_summary(validation_dir)
    except PetsegError as exc:
        return Read(missing=f"validation report: {exc}")
    return Read(summary)


def manifest_counts(counts: dict[str, int]) -> dict[str, int]:
    """A manifest's examples per split, in run order (train, val, test, then any other)."""
    order = ("train", "val", "test")
    splits = [s for s in order if s in counts] + sorted(set(counts) - set(order))
    return {split: int(counts[split]) for split in splits}


# ------------------------------------------------------------------ SavedModel
@dataclass(frozen=True)
class TensorSpec:
    """One signature input or output: its name, dtype ("uint8") and shape (None for any size)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None  # None: unknown rank


@dataclass(frozen=True)
class SignatureSpec:
    name: str
    method: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def in_contract(self) -> bool:
        """One of the signatures push and rollback require (components/contracts/signatures.py)."""
        return self.name in signatures.SIGNATURES


@dataclass(frozen=True)
class SavedModelFacts:
    """What the exported SavedModel says of itself (saved_model.pb and assets.extra)."""

    tensorflow_version: str | None
    signatures: tuple[SignatureSpec, ...]
    parameters: int | None
    trainable_parameters: int | None
    class_names: tuple[str, ...] = field(default_factory=tuple)


def read_savedmodel(model_dir: Path) -> Read:
    """TF version, serving signatures and weight counts from saved_model.pb; class names from assets.extra.

    The counts are the SavedModel's variables (its object graph), each counted
    once however many paths reach it: trainable ones, and all of them (batch
    norm statistics included).
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    pb = model_dir / "saved_model.pb"
    try:
        model = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    except Exception as exc:  # OSError, or protobuf's DecodeError
        return Read(missing=f"model facts: {pb} is unreadable ({first_line(exc)})")
    if not model.meta_graphs:
        return Read(missing=f"model facts: {pb} holds no graph")
    graph = model.meta_graphs[0]

    def spec(name: str, info) -> TensorSpec:
        dtype = tf.dtypes.as_dtype(info.dtype).name if info.dtype else "unknown"
        shape = (
            None
            if info.tensor_shape.unknown_rank
            else tuple(d.size if d.size >= 0 else None for d in info.tensor_shape.dim)
        )
        return TensorSpec(name, dtype, shape)

    found = tuple(
        SignatureSpec(
            name,
            sig.method_name,
            tuple(spec(k, v) for k, v in sorted(sig.inputs.items())),
            tuple(spec(k, v) for k, v in sorted(sig.outputs.items())),
        )
        for name, sig in sorted(graph.signature_def.items())
        if name != INIT_OP_SIGNATURE
    )
    sizes: dict[str, tuple[int, bool]] = {}
    for node in graph.object_graph_def.nodes:
        if node.WhichOneof("kind") == "variable":
            count = 1
            for dim in node.variable.shape.dim:
                count *= max(dim.size, 0)
            sizes[node.variable.name] = (count, node.variable.trainable)
    return Read(
        SavedModelFacts(
            tensorflow_version=graph.meta_info_def.tensorflow_version or None,
            signatures=found,
            parameters=sum(c for c, _ in sizes.values()) if sizes else None,
            trainable_parameters=sum(c for c, t in sizes.values() if t) if sizes else None,
            class_names=_class_names(model_dir),
        )
    )


def _class_names(model_dir: Path) -> tuple[str, ...]:
    """The class names that travel with the model; the contract's when the file is absent (as evaluate reads them)."""
    path = model_dir / signatures.CLASS_NAMES_FILE
    if not path.is_file():
        return tuple(signatures.CLASS_NAMES)
    return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


# ------------------------------------------------------------ training curves
def read_curves(live_dir: Path | None) -> Read:
    """{metric: {split: [(epoch from 1, value)]}} from DVCLive's plot TSVs (columns step and the split name)."""
    if live_dir is None:
        return Read(missing="training curves: no DVCLive folder given to push")
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for metric, splits in CURVE_METRICS.items():
        for split in splits:
            path = live_dir / "plots" / "metrics" / metric / f"{split}.tsv"
            points = _tsv_points(path, split)
            if points:
                curves.setdefault(metric, {})[split] = points
    if not curves:
        return Read(missing=f"training curves: no DVCLive plots under {live_dir / 'plots' / 'metrics'}")
    return Read(curves)


def _tsv_points(path: Path, column: str) -> list[tuple[int, float]]:
    """(epoch, value) rows of one DVCLive TSV; DVCLive's step counts from 0, the card's epochs from 1."""
    if not path.is_file():
        return []
    points = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                try:
                    points.append((int(row["step"]) + 1, float(row[column])))
                except (KeyError, TypeError, ValueError):
                    continue  # a damaged row: drawn without it
    except OSError:
        return []
    return points
