"""Typed, frozen parameters parsed once from params.yaml.

params.yaml is the single source of parameters (DVC tracks it key by key).
It is parsed here into frozen dataclasses, one section per step, and
validated at the edge: an unknown key, a wrong type or an out-of-range value
raises ParamsError naming the key, so no step ever sees a bad value.
Steps receive only their own section.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from petseg.components.errors import ParamsError

DEFAULT_PARAMS_FILE = Path("params.yaml")


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict:
    """Field metadata declaring the allowed numeric range (inclusive unless lo_open)."""
    return {"min": lo, "max": hi, "lo_open": lo_open}


def _num(default: float, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    return field(default=default, metadata=_range(lo, hi, lo_open=lo_open))


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class TfdsParams:
    """Where TFDS keeps its download and prepared copy of oxford_iiit_pet."""

    data_dir: str = "data/tfds"
    version: str = "4.*.*"


@dataclass(frozen=True)
class ArchivesParams:
    """A folder holding the official images.tar.gz + annotations.tar.gz (or their extracts)."""

    path: str = "data/archives"
    verify_checksums: bool = True


@dataclass(frozen=True)
class SyntheticParams:
    """Size of the seeded synthetic stand-in for Oxford-IIIT Pet."""

    train_examples: int = _num(240, 1)
    test_examples: int = _num(60, 1)
    min_side: int = _num(200, 32)
    max_side: int = _num(500, 32)


@dataclass(frozen=True)
class DataParams:
    source: Literal["tfds", "archives", "synthetic"] = "tfds"
    seed: int = _num(42, 0)
    tfds: TfdsParams = TfdsParams()
    archives: ArchivesParams = ArchivesParams()
    synthetic: SyntheticParams = SyntheticParams()

    def check(self) -> None:
        if self.synthetic.min_side > self.synthetic.max_side:
            raise ParamsError("data.synthetic.min_side must not exceed data.synthetic.max_side")


# ----------------------------------------------------------------------- validate
@dataclass(frozen=True)
class ValidateParams:
    """Bounds for the Great Expectations suite and which expectations stop the run."""

    min_train_examples: int = _num(100, 0)
    max_train_examples: int = _num(100_000, 1)
    min_test_examples: int = _num(20, 0)
    max_test_examples: int = _num(100_000, 1)
    min_pet_fraction: float = _num(0.01, 0.0, 1.0)
    max_pet_fraction: float = _num(0.95, 0.0, 1.0)
    max_border_fraction: float = _num(0.5, 0.0, 1.0)
    critical: tuple[str, ...] = (
        "ids_unique",
        "split_is_known",
        "image_decodes",
        "mask_decodes",
        "image_is_rgb",
        "mask_is_single_channel",
        "mask_size_matches_image",
        "mask_values_in_trimap_set",
        "train_count_in_bounds",
        "test_count_in_bounds",
        "no_train_test_leakage",
    )
    unexpected_examples_shown: int = _num(5, 1)
    workers: int = _num(0, 0)  # 0 = one per CPU core

    def check(self) -> None:
        for key in ("train", "test"):
            if getattr(self, f"min_{key}_examples") > getattr(self, f"max_{key}_examples"):
                raise ParamsError(f"validate.min_{key}_examples must not exceed validate.max_{key}_examples")
        if self.min_pet_fraction > self.max_pet_fraction:
            raise ParamsError("validate.min_pet_fraction must not exceed validate.max_pet_fraction")


# --------------------------------------------------------------------- preprocess
@dataclass(frozen=True)
class PreprocessParams:
    image_size: int = _num(128, 32, 1024)
    val_fraction: float = _num(0.1, 0.0, 0.5)
    examples_per_shard: int = _num(256, 1)
    workers: int = _num(0, 0)  # 0 = one per CPU core
    seed: int = _num(42, 0)


# -------------------------------------------------------------------------- model
@dataclass(frozen=True)
class UnetParams:
    base_filters: int = _num(32, 4, 256)
    depth: int = _num(4, 1, 6)
    batch_norm: bool = True


@dataclass(frozen=True)
class ModelParams:
    architecture: Literal["mobilenetv2_unet", "unet"] = "mobilenetv2_unet"
    encoder_weights: str = "imagenet"  # "imagenet", "none", or a path to a weights file
    freeze_encoder: bool = True
    dropout: float = _num(0.0, 0.0, 0.9)
    batch_norm_momentum: float = _num(0.9, 0.0, 1.0)  # moving-statistics momentum of trained batch norm layers
    unet: UnetParams = UnetParams()


# -------------------------------------------------------------------------- train
@dataclass(frozen=True)
class AugmentParams:
    flip: bool = True
    brightness: float = _num(0.0, 0.0, 1.0)
    contrast: float = _num(0.0, 0.0, 1.0)


@dataclass(frozen=True)
class TrainParams:
    epochs: int = _num(20, 1)
    batch_size: int = _num(64, 1)
    learning_rate: float = _num(1e-3, 0.0, 1.0, lo_open=True)
    loss: Literal["sparse_ce", "sparse_ce_dice"] = "sparse_ce"
    unfreeze_after_epochs: int = _num(0, 0)  # 0 = never unfreeze
    fine_tune_learning_rate: float = _num(1e-4, 0.0, 1.0, lo_open=True)
    early_stopping_patience: int = _num(5, 0)  # 0 = no early stopping
    reduce_lr_patience: int = _num(3, 0)  # 0 = constant learning rate
    shuffle_buffer: int = _num(1000, 1)
    cache: bool = True
    seed: int = _num(42, 0)
    deterministic: bool = False  # TF op determinism: bitwise repeatable runs, slower
    augment: AugmentParams = AugmentParams()


# ----------------------------------------------------------------------- evaluate
@dataclass(frozen=True)
class EvaluateParams:
    min_mean_iou: float = _num(0.5, 0.0, 1.0)
    min_accuracy: float = _num(0.8, 0.0, 1.0)
    max_regression: float = _num(0.01, 0.0, 1.0)
    batch_size: int = _num(32, 1)
    sample_predictions: int = _num(6, 0, 64)


# --------------------------------------------------------------------------- push
@dataclass(frozen=True)
class PushParams:
    model_base_path: str = "serving/models"
    model_name: str = "petseg"
    keep_versions: int = _num(3, 1)
    warmup_requests: int = _num(4, 0, 100)
    # model_base_path as the model server sees it (e.g. /models in the tensorflow/serving
    # container); written into models.config. Empty: model_base_path itself, made absolute.
    server_model_base_path: str = ""


# -------------------------------------------------------------------------- serve
@dataclass(frozen=True)
class ServeParams:
    host: str = "0.0.0.0"
    grpc_port: int = _num(8500, 1, 65535)
    rest_port: int = _num(8501, 1, 65535)
    max_message_mb: int = _num(64, 4, 2047)
    poll_seconds: float = _num(2.0, 0.1, 3600.0)
    workers: int = _num(4, 1, 64)
    drain_seconds: float = _num(30.0, 0.0, 3600.0)  # SIGTERM: how long in-flight requests may finish
    max_image_pixels: int = _num(16_777_216, 1, 2**31 - 1)  # bytes signature: largest decoded image (W x H)
    batching_parameters_file: str = "serving/deploy/batching.config"  # its max_batch_size bounds a request


# ----------------------------------------------------------------------- pipeline
@dataclass(frozen=True)
class StepResources:
    """Kubernetes CPU/memory requests and limits of one pipeline step (Kubernetes quantities)."""

    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "2Gi"
    memory_limit: str = "4Gi"


@dataclass(frozen=True)
class PipelineResources:
    download: StepResources = StepResources("1", "2", "2Gi", "8Gi")
    validate: StepResources = StepResources("1", "2", "2Gi", "8Gi")
    preprocess: StepResources = StepResources("2", "4", "4Gi", "8Gi")
    train: StepResources = StepResources("4", "8", "16Gi", "32Gi")
    evaluate: StepResources = StepResources("2", "4", "4Gi", "16Gi")
    push: StepResources = StepResources("1", "2", "2Gi", "4Gi")


@dataclass(frozen=True)
class PipelineParams:
    """How the Kubeflow pipeline is built (compile-time settings, not run parameters)."""

    image: str = "ghcr.io/petseg/petseg:0.1.0"
    gpu_image: str = "ghcr.io/petseg/petseg-gpu:0.1.0"
    pipeline_root: str = ""  # "" = the cluster's default artifact store
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_limit: int = _num(1, 0, 16)  # 0 = train on CPU, no GPU node
    gpu_node_selector_key: str = "cloud.google.com/gke-accelerator"
    gpu_node_selector_value: str = "nvidia-tesla-t4"
    gpu_toleration_key: str = "nvidia.com/gpu"  # "" = no toleration
    gpu_toleration_effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"
    serving_pvc: str = ""  # PVC holding push.model_base_path for evaluate and push; "" = none
    serving_mount_path: str = "/serving/models"
    resources: PipelineResources = PipelineResources()


@dataclass(frozen=True)
class Params:
    data: DataParams = DataParams()
    validate: ValidateParams = ValidateParams()
    preprocess: PreprocessParams = PreprocessParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    push: PushParams = PushParams()
    serve: ServeParams = ServeParams()
    pipeline: PipelineParams = PipelineParams()


# ------------------------------------------------------------------------ parsing
def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read params.yaml into a validated Params, or raise ParamsError naming the bad key."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file (run from the project root or pass --params FILE)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        first_line = str(exc).splitlines()[0]
        raise ParamsError(f"{path}: not valid YAML ({first_line})") from None
    return params_from_dict(raw, source=str(path))


def params_from_dict(raw: Any, source: str = "params") -> Params:
    """Build Params from a plain mapping (as read from YAML), validating every key."""
    try:
        return _build(Params, raw, prefix="")
    except ParamsError as exc:
        raise ParamsError(f"{source}: {exc}") from None


def with_overrides(params: Params, overrides: dict[str, Any]) -> Params:
    """A copy of params with dotted keys replaced (e.g. {"train.epochs": 2}), validated again."""
    raw = params_to_dict(params)
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ParamsError(f"unknown key '{dotted}'")
            node = node[part]
        if leaf not in node:
            raise ParamsError(f"unknown key '{dotted}'")
        node[leaf] = value
    return params_from_dict(raw)


def params_to_dict(obj: Any) -> Any:
    """Plain dict/list form of a params object, as it would be written to YAML or JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: params_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [params_to_dict(v) for v in obj]
    return obj


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"'{where}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ParamsError(f"unknown key '{key}' (known under {where}: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _convert(hints[name], raw[name], f"{prefix}{name}", f.metadata)
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check()
    return obj


def _convert(tp: Any, value: Any, key: str, meta: typing.Mapping) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, prefix=f"{key}.")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ParamsError(f"'{key}' must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, key, meta)
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"'{key}' must be a list, got {value!r}")
        return tuple(_convert(item_tp, v, f"{key}[{i}]", {}) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"'{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"'{key}' must be an integer, got {value!r}")
        return _check_range(value, key, meta)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"'{key}' must be a number, got {value!r}")
        return _check_range(float(value), key, meta)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"'{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"params: unsupported type {tp!r} for {key}")  # a bug in this module


def _check_range(value: float, key: str, meta: typing.Mapping) -> Any:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value <= lo if meta.get("lo_open") else value < lo):
        bound = f"greater than {lo}" if meta.get("lo_open") else f"at least {lo}"
        raise ParamsError(f"'{key}' must be {bound}, got {value}")
    if hi is not None and value > hi:
        raise ParamsError(f"'{key}' must be at most {hi}, got {value}")
    return value
