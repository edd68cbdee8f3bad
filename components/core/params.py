"""Typed, frozen parameters parsed once from params.yaml.

params.yaml is the single source of parameters (DVC tracks it key by key).
It is parsed here into frozen dataclasses, one section per step, and
validated at the edge: an unknown key, a wrong type or an out-of-range value
raises ParamsError naming the key, so no step ever sees a bad value.
Steps receive only their own section.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from petseg.components.core.errors import ParamsError, first_line, utf8_text
from petseg.components.core.expectations import DEFAULT_CRITICAL, check_critical_names
from petseg.components.core.k8s import (
    QuantityKind,
    check_dns1123_label,
    check_dns1123_subdomain,
    check_quantity,
    check_request_within_limit,
)

DEFAULT_PARAMS_FILE = Path("params.yaml")
_MAX_INT = 2**63 - 1  # every integer parameter fits in 64 bits


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict:
    """Field metadata declaring the allowed numeric range (inclusive unless lo_open)."""
    return {"min": lo, "max": hi, "lo_open": lo_open}


def _num(default: float, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    return field(default=default, metadata=_range(lo, hi, lo_open=lo_open))


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class TfdsParams:
    """Where TFDS keeps its download and prepared copy of oxford_iiit_pet."""

    data_dir: str = field(default="data/tfds", metadata={"path": "folder"})
    version: str = "4.*.*"


@dataclass(frozen=True)
class ArchivesParams:
    """A folder holding the official images.tar.gz + annotations.tar.gz (or their extracts)."""

    path: str = field(default="data/archives", metadata={"path": "folder"})
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
# validate.drift.reference naming the served model's training data instead of a folder.
SERVED_REFERENCE = "served"


@dataclass(frozen=True)
class DriftParams:
    """How this dataset's statistics are compared with a reference validation's (`petseg validate --reference`).

    Each no_drift_* expectation fails when the KL divergence of this data's
    histogram of a statistic from the reference's exceeds its threshold (nats).
    """

    # "served": the report push kept with the served version (push.model_base_path; none served = no
    # drift check); else a report folder or URI; "" = none. `petseg validate --reference` overrides it.
    reference: str = SERVED_REFERENCE
    bins: int = _num(10, 2, 1000)  # histogram bins of a continuous statistic, over the reference's range
    smoothing: float = _num(0.5, 0.0, lo_open=True)  # pseudo-count added to each reference bin (no empty bin)
    max_kl_image_size: float = _num(0.25, 0.0, lo_open=True)
    max_kl_brightness: float = _num(0.25, 0.0, lo_open=True)
    max_kl_colour: float = _num(0.25, 0.0, lo_open=True)
    max_kl_class_balance: float = _num(0.1, 0.0, lo_open=True)
    max_kl_pet_area: float = _num(0.25, 0.0, lo_open=True)
    max_kl_border_area: float = _num(0.25, 0.0, lo_open=True)
    new_class_weight: float = _num(0.01, 0.0, 1.0, lo_open=True)  # reference weight given to a class it lacks


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
    critical: tuple[str, ...] = DEFAULT_CRITICAL
    unexpected_examples_shown: int = _num(5, 1)
    workers: int = _num(0, 0)  # 0 = one per CPU core
    drift: DriftParams = DriftParams()

    def check(self) -> None:
        for key in ("train", "test"):
            if getattr(self, f"min_{key}_examples") > getattr(self, f"max_{key}_examples"):
                raise ParamsError(f"validate.min_{key}_examples must not exceed validate.max_{key}_examples")
        if self.min_pet_fraction > self.max_pet_fraction:
            raise ParamsError("validate.min_pet_fraction must not exceed validate.max_pet_fraction")
        check_critical_names(self.critical)


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
    require_gpu: bool = False  # stop (one line) instead of training on the CPU when no GPU is visible


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
    # Version label kept on the served version ("" = none). Moving it needs serving_target:
    # TF Serving refuses a label on a version it has not loaded (components/store/model_store.py).
    version_label: str = ""
    # HOST:PORT[,HOST:PORT...] of the model servers following this base path; push and
    # rollback wait there until the new version is AVAILABLE before moving the label.
    serving_target: str = ""
    promote_timeout_seconds: float = _num(300.0, 1.0, 3600.0)
    lock_timeout_seconds: float = _num(600.0, 0.0, 86400.0)  # how long a push waits for another one

    def check(self) -> None:
        """Refuse names and paths that would leave the model base path or break TF Serving's layout."""
        check_model_name(self.model_name, "push.model_name")
        for key in ("model_base_path", "server_model_base_path"):
            problem = _unsafe_path(getattr(self, key), required=key == "model_base_path")
            if problem:
                raise ParamsError(f"'push.{key}' {problem}; got {getattr(self, key)!r}")
        if self.version_label and not _SAFE_LABEL.fullmatch(self.version_label):
            raise ParamsError(
                f"'push.version_label' must be a letter followed by letters, digits, '_' or '-'; "
                f"got {self.version_label!r}"
            )
        if self.version_label and not self.serving_target.strip():
            raise ParamsError(
                "'push.version_label' needs 'push.serving_target' (HOST:PORT of the model servers): "
                "a label may only move to a version the server reports AVAILABLE"
            )


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SAFE_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def check_model_name(name: str, key: str) -> None:
    """ParamsError unless `name` is safe as a folder name and URL path segment (no '/', '..', spaces)."""
    if not _SAFE_NAME.fullmatch(name):
        raise ParamsError(
            f"'{key}' must be letters, digits, '.', '_' or '-' and start with a "
            f"letter or digit (it names a folder and a URL path); got {name!r}"
        )


def _unsafe_path(path: str, required: bool) -> str | None:
    """Why a base path is unsafe ('..' parts, control characters, the root), or None."""
    if not path:
        return "must not be empty" if required else None
    if any(ord(c) < 32 for c in path):
        return "must not contain control characters"
    body = path.split("://", 1)[1] if "://" in path else path
    if ".." in body.replace("\\", "/").split("/"):
        return "must not contain '..' (it would leave the folder it names)"
    if body.strip("/") == "":
        return "must name a folder, not the root"
    return None


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
    rest_body_budget_mb: int = _num(512, 1, 65536)  # REST bodies read and parsed at once (docs/rest-server-limits.md)
    rest_max_json_depth: int = _num(256, 8, 1024)  # REST JSON nested deeper is refused before parsing (TF Serving 2.22)


# --------------------------------------------------------------------------- card
@dataclass(frozen=True)
class CardParams:
    """What the model card says of the model's use (push writes the card): the user's words, shown as given."""

    intended_use: str = (
        "Segmenting the one cat or dog in a photo into pet, background and border pixels, "
        "for research, teaching and demonstrations of an MLOps pipeline."
    )
    limitations: tuple[str, ...] = (
        "Trained and tested only on Oxford-IIIT Pet photos (37 cat and dog breeds, one pet per photo, "
        "mostly centred): other animals, several pets in one photo, drawings or unusual viewpoints were "
        "never measured.",
        "The evaluation numbers come from one test split of the same dataset; no robustness, fairness or "
        "calibration evaluation was run.",
        "Images are resized to the model's input size, so thin structures (whiskers, tails, fur edges) "
        "are lost and the border class is the least accurate.",
        "Not for safety-relevant, medical or surveillance decisions.",
    )

    def check(self) -> None:
        if not self.intended_use.strip():
            raise ParamsError("'card.intended_use' must say what the model is for (it heads the card's Use section)")
        for i, text in enumerate(self.limitations):
            if not text.strip():
                raise ParamsError(f"'card.limitations[{i}]' is empty; write the limitation or remove the entry")


# ----------------------------------------------------------------------- pipeline
def _quantity(default: str, kind: QuantityKind):
    """A str field holding a Kubernetes quantity of `kind`, checked at load (components/core/k8s.py)."""
    return field(default=default, metadata={"quantity": kind})


@dataclass(frozen=True)
class StepResources:
    """Kubernetes CPU/memory requests and limits of one pipeline step (Kubernetes quantities).

    Each is checked against Kubernetes' quantity grammar when params load, and each
    request against its limit, so no generator writes what the API server refuses.
    """

    cpu_request: str = _quantity("1", "cpu")
    cpu_limit: str = _quantity("2", "cpu")
    memory_request: str = _quantity("2Gi", "memory")
    memory_limit: str = _quantity("4Gi", "memory")

    def check_at(self, prefix: str) -> None:
        """Request <= limit for CPU and memory; `prefix` is where this block sits (e.g. "pipeline.resources.train.")."""
        kinds: tuple[QuantityKind, ...] = ("cpu", "memory")
        for kind in kinds:
            check_request_within_limit(
                getattr(self, f"{kind}_request"),
                getattr(self, f"{kind}_limit"),
                f"{prefix}{kind}_request",
                f"{prefix}{kind}_limit",
                kind,
            )


@dataclass(frozen=True)
class PipelineResources:
    download: StepResources = StepResources("1", "2", "2Gi", "8Gi")
    drift_reference: StepResources = StepResources("100m", "500m", "256Mi", "1Gi")
    validate: StepResources = StepResources("1", "2", "2Gi", "8Gi")
    preprocess: StepResources = StepResources("2", "4", "4Gi", "8Gi")
    train: StepResources = StepResources("4", "8", "16Gi", "32Gi")
    evaluate: StepResources = StepResources("2", "4", "4Gi", "16Gi")
    push: StepResources = StepResources("1", "2", "2Gi", "4Gi")
    deploy: StepResources = StepResources("100m", "500m", "256Mi", "512Mi")


@dataclass(frozen=True)
class KServeParams:
    """The KServe InferenceService the pipeline's deploy step creates or updates (pipeline.deploy: kserve)."""

    namespace: str = "kubeflow-user-example-com"  # where the InferenceService lives (a Kubeflow profile)
    # KServe's deployment mode, written into the InferenceService's annotation (which wins over the cluster's
    # default): knative = canaryTrafficPercent on Knative revisions; standard = spec.canary (KServe >= 0.20).
    mode: Literal["knative", "standard"] = "knative"
    protocol: Literal["grpc", "rest"] = "grpc"  # what the ingress routes to TF Serving (Knative: one port)
    canary_traffic_percent: int = _num(10, 1, 100)  # knative: traffic share; standard: the canary's trafficPercent
    ready_timeout_seconds: float = _num(600.0, 1.0, 86400.0)  # how long a new revision may take to be Ready
    poll_seconds: float = _num(5.0, 0.1, 600.0)  # how often the deploy step reads the InferenceService status
    min_replicas: int = _num(1, 0, 100)  # 0 = scale to zero when idle
    max_replicas: int = _num(3, 1, 100)
    service_account: str = "petseg-kserve"  # predictor pods' account, holding the object-store credentials
    runner_service_account: str = "default-editor"  # the account pipeline pods run as (bound to the deploy Role)
    resources: StepResources = StepResources("1", "2", "2Gi", "4Gi")  # each predictor pod

    def check(self) -> None:
        if self.min_replicas > self.max_replicas:
            raise ParamsError("pipeline.kserve.min_replicas must not exceed pipeline.kserve.max_replicas")
        check_dns1123_label(self.namespace, "'pipeline.kserve.namespace'")
        for key in ("service_account", "runner_service_account"):
            check_dns1123_subdomain(getattr(self, key), f"'pipeline.kserve.{key}'")
        if self.mode == "standard" and self.min_replicas < 1:
            # KServe v0.20.0 sizes a canary as ceil(stable minReplicas x trafficPercent / 100) and refuses a canary
            # minReplicas above the stable one (components/predictor.go canaryReplicaCount,
            # inference_service_validation.go validateCanarySpecs): with 0 the canary gets no pod.
            raise ParamsError(
                "pipeline.kserve.min_replicas must be at least 1 with pipeline.kserve.mode: standard "
                "(a Standard-mode canary gets a share of the stable replicas); use mode knative to scale to zero"
            )


# A key in a Secret's data is letters, digits, '-', '_', '.' (a Secret's name is a DNS-1123 subdomain).
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def check_secret_name(name: str, key: str) -> None:
    """ParamsError unless `name` is "" or a valid Kubernetes Secret name (a DNS-1123 subdomain)."""
    if name:
        check_dns1123_subdomain(name, f"'{key}' (a Secret name)")


def check_secret_key(name: str, key: str) -> None:
    """ParamsError unless `name` can be a key of a Secret's data (Kubernetes' IsConfigMapKey rule)."""
    if len(name) > 253 or not _SECRET_KEY.fullmatch(name) or name in (".", "..") or name.startswith(".."):
        raise ParamsError(
            f"'{key}' must be a key of a Kubernetes Secret: letters, digits, '-', '_' and '.', "
            f"not '.', '..' or starting with '..', at most 253 characters; got {_shown(name)}"
        )


def check_endpoint_url(url: str, key: str) -> None:
    """ParamsError unless `url` is "" or http(s)://HOST[:PORT], the form S3 clients, TF Serving and KServe all take."""
    if not url:
        return
    from urllib.parse import urlsplit

    problem = None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        parts, port, problem = None, None, str(exc)
    if parts is not None and problem is None:
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problem = "it must start with http:// or https:// and name a host"
        elif parts.username or parts.password:
            problem = "credentials do not belong in it (they come from pipeline.object_store.secret)"
        elif parts.path not in ("", "/") or parts.query or parts.fragment:
            problem = "it must be scheme://host[:port] with no path, query or fragment"
        elif any(c.isspace() for c in url):
            problem = "it must not contain spaces"
        elif port == 0:
            problem = "port 0 is not a port"
    if problem:
        raise ParamsError(f"'{key}' is not an S3 endpoint URL ({problem}); got {_shown(url)}")


@dataclass(frozen=True)
class ObjectStoreKeys:
    """Which keys of pipeline.object_store.secret hold the S3 access key id and secret access key."""

    access_key_id: str = "accesskey"  # Kubeflow's mlpipeline-minio-artifact names them so
    secret_access_key: str = "secretkey"

    def check(self) -> None:
        check_secret_key(self.access_key_id, "pipeline.object_store.keys.access_key_id")
        check_secret_key(self.secret_access_key, "pipeline.object_store.keys.secret_access_key")
        if self.access_key_id == self.secret_access_key:
            raise ParamsError(
                "pipeline.object_store.keys.access_key_id and .secret_access_key name the same key "
                f"({self.access_key_id!r}); the access key id and the secret are two keys of the Secret"
            )


@dataclass(frozen=True)
class ObjectStoreParams:
    """Where the pods that touch the model store get its credentials (petseg.components.contracts.object_store).

    S3: the keys of Secret `secret` become AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, `endpoint`
    (an S3-compatible store: MinIO, SeaweedFS, Ceph) and `region` plain variables. GCS: Secret
    `gcs_secret` is mounted and GOOGLE_APPLICATION_CREDENTIALS names its key file `gcs_key`.
    "" for a Secret means the pods' own identity (IRSA on EKS, Workload Identity on GKE).
    KServe's storage initializer reads other key names, so it gets its own Secret, `kserve_secret`.
    """

    secret: str = ""
    keys: ObjectStoreKeys = ObjectStoreKeys()
    endpoint: str = ""  # http(s)://host[:port] of an S3-compatible store; "" = AWS
    region: str = ""  # "" = the client's default (us-east-1); MinIO and SeaweedFS accept us-east-1
    gcs_secret: str = ""
    gcs_key: str = "gcloud-application-credentials.json"  # KServe's file name, so one Secret serves both
    kserve_secret: str = "petseg-kserve-s3"  # data keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (KServe's)

    def check(self) -> None:
        for name in ("secret", "gcs_secret", "kserve_secret"):
            check_secret_name(getattr(self, name), f"pipeline.object_store.{name}")
        if not self.kserve_secret:
            raise ParamsError("'pipeline.object_store.kserve_secret' must name a Secret (KServe reads S3 keys there)")
        check_secret_key(self.gcs_key, "pipeline.object_store.gcs_key")
        check_endpoint_url(self.endpoint, "pipeline.object_store.endpoint")
        if self.region and not _REGION.fullmatch(self.region):
            raise ParamsError(
                f"'pipeline.object_store.region' must be a region name such as us-east-1 (lower-case letters, "
                f"digits and '-'); got {_shown(self.region)}"
            )
        if self.secret and self.secret == self.gcs_secret:
            raise ParamsError(
                "pipeline.object_store.secret and .gcs_secret name the same Secret; S3 keys and a GCS key file "
                "are read from different Secrets"
            )


@dataclass(frozen=True)
class PipelineParams:
    """How the Kubeflow pipeline is built (compile-time settings, not run parameters)."""

    # Image repositories; without a tag, the tag is derived: <package version>-<git commit> (pipeline/images.py).
    image: str = "ghcr.io/petseg/petseg"
    gpu_image: str = "ghcr.io/petseg/petseg-gpu"
    pipeline_root: str = ""  # "" = the cluster's default artifact store
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_limit: int = _num(1, 0, 16)  # 0 = train on CPU, no GPU node
    train_workers: int = _num(1, 1, 64)  # nodes of the TrainJob / workers of the TFJob (pipeline/trainjob.py, tfjob.py)
    gpu_node_selector_key: str = ""  # "" = no node selector (the GPU request alone places the pod)
    gpu_node_selector_value: str = ""
    gpu_toleration_key: str = "nvidia.com/gpu"  # "" = no toleration
    gpu_toleration_effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"
    serving_pvc: str = ""  # PVC holding push.model_base_path for evaluate and push; "" = none
    serving_mount_path: str = "/serving/models"
    resources: PipelineResources = PipelineResources()
    deploy: Literal["none", "kserve"] = "none"  # after push: nothing, or roll the model out on KServe
    kserve: KServeParams = KServeParams()
    object_store: ObjectStoreParams = ObjectStoreParams()  # credentials of the store steps that touch it

    def check(self) -> None:
        """The serving PVC's name is one Kubernetes accepts (a DNS-1123 subdomain), when one is set."""
        if self.serving_pvc:
            check_dns1123_subdomain(self.serving_pvc, "'pipeline.serving_pvc'")


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
    card: CardParams = CardParams()


# ------------------------------------------------------------------------ parsing
def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read params.yaml into a validated Params, or raise ParamsError (one line) naming the bad key.

    Refused: a file that is not UTF-8, not YAML, empty (or only comments: an empty file would
    silently mean every default, the network `tfds` source included), or that repeats a key.
    A file that leaves whole sections out gets those sections' defaults.
    """
    path = Path(path)
    if path.is_dir():
        raise ParamsError(f"{path}: is a folder, not a params file (pass --params FILE)")
    if path.exists() and not path.is_file():
        raise ParamsError(f"{path}: not a regular file (pass --params FILE)")
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file (run from the project root or pass --params FILE)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return params_from_yaml(data, source=str(path))


def params_from_yaml(data: bytes, source: str = "params") -> Params:
    """Params from the bytes of a params file, with load_params' rules (see there)."""
    text = utf8_text(data, source, "save it as UTF-8", ParamsError)
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except ParamsError as exc:
        raise ParamsError(f"{source} {exc}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{source}: not valid YAML ({_yaml_problem(exc)})") from None
    except RecursionError:
        raise ParamsError(f"{source}: nested too deeply to be a params file") from None
    if raw is None:
        raise ParamsError(
            f"{source}: empty; it must set at least data.source (copy the project's params.yaml and edit it)"
        )
    return params_from_dict(raw, source=source)


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key repeated in one mapping is an error, not 'last one wins'."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first_seen
                except TypeError:  # an unhashable key: the base class says so as a YAML error
                    continue
                line = key_node.start_mark.line + 1
                if seen:
                    raise ParamsError(
                        f"line {line}: duplicate key {_shown(key)} (first on line {first_seen[key]}); keep one"
                    )
                first_seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """YAML's complaint in one line, with the line number when it has one."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or first_line(exc)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def _shown(value: Any, limit: int = 60) -> str:
    """repr(value), cut short, for one-line messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def require_writable_folder(path: str | Path, key: str) -> Path:
    """ParamsError unless `path` is a folder this process can write, or one it can create."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ParamsError(f"'{key}' {path}: is a file, not a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ParamsError(f"'{key}' {path}: {existing} is a file, so the folder cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ParamsError(f"'{key}' {path}: {existing} is not writable")
    return path


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
    unknown = [key for key in raw if not isinstance(key, str) or key not in fields]
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ParamsError(f"unknown key {_shown(key)} (known under {where}: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _convert(hints[name], raw[name], f"{prefix}{name}", f.metadata)
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check()
    check_at = getattr(obj, "check_at", None)  # a block whose keys depend on where it sits (StepResources)
    if check_at is not None:
        check_at(prefix)
    return obj


def _convert(tp: Any, value: Any, key: str, meta: typing.Mapping) -> Any:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, prefix=f"{key}.")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ParamsError(f"'{key}' must be one of {', '.join(map(str, choices))}; got {_shown(value)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, key, meta)
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"'{key}' must be a list, got {_shown(value)}")
        return tuple(_convert(item_tp, v, f"{key}[{i}]", {}) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"'{key}' must be true or false, got {_shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"'{key}' must be an integer, got {_shown(value)}")
        if abs(value) > _MAX_INT:
            raise ParamsError(f"'{key}' is too large ({_shown(value, 24)})")
        return _check_range(value, key, meta)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"'{key}' must be a number, got {_shown(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ParamsError(f"'{key}' must be a finite number, got {_shown(value, 24)}")
        return _check_range(number, key, meta)
    if tp is str:
        if meta.get("quantity") and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # `cpu_limit: 2` in YAML: Kubernetes takes a number as a quantity too
        if not isinstance(value, str):
            raise ParamsError(f"'{key}' must be a string, got {_shown(value)}")
        if "\x00" in value:
            raise ParamsError(f"'{key}' holds a NUL character")
        if meta.get("path") and not value.strip():
            raise ParamsError(f"'{key}' must be a {meta['path']} path, got an empty string")
        if meta.get("quantity"):
            check_quantity(value, key, meta["quantity"])
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
