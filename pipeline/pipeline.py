"""The Kubeflow pipeline: download → validate → preprocess → train → evaluate → push if blessed.

Parameters. The run parameters mirror params.yaml: one pipeline parameter per
section a step reads (`data`, `validate`, `preprocess`, `model`, `train`,
`evaluate`, `push`, `card`), each a JSON object holding that whole section, with
params.yaml's values as defaults. Each component rebuilds its section and
validates it with the same code as the CLI, so a bad value fails the step naming
the key. The `pipeline` section is not a run parameter: images, GPU, resources and
the serving PVC shape the compiled pipeline itself (change them and compile
again). `serve` is not used by the pipeline.

Where the data goes. Every output is a KFP artifact in the pipeline root (the
cluster's object store, or `pipeline.pipeline_root`): raw dataset and records
are folders, the Model artifact is the SavedModel alone (evaluate and push
download it), train's checkpoints are a separate artifact kept only to resume. KFP copies an input artifact
into the pod that reads it and uploads outputs when a step ends. A PVC is not
used for data because the largest payloads (the raw Oxford-IIIT Pet, ~800 MB; the
TFRecords, a few hundred MB at 128 px) move in seconds to a minute, artifacts keep
every run's data for lineage and caching, and nothing ties the steps to one node
or zone. The one shared place is where TF Serving reads models: push writes to
`push.model_base_path`, which must outlive the pod: an object store URI (gs://,
s3://, reached through fsspec, components/store/storage.py) or, with
`pipeline.serving_pvc`, a PVC mounted in every step that reads the model store:
drift_reference and validate (the served version's drift reference), evaluate
(the served model, its baseline) and push. Compiling for a cluster with anything else is refused;
run-local may push to a local folder.

Drift. Before validate, the uncached drift_reference step names the report
folder validate compares the data with: with validate.drift.reference "served",
the one push kept beside the served version (components/validate.py
drift_reference), else that setting as it is. Validate takes the folder's name
as a parameter, so it stays cacheable (a published version folder never
changes). Push keeps this run's validation report with the version it publishes.

Caching. On for download, validate, preprocess and train when the images' tags
name fixed code (pipeline/images.py: `<version>-g<commit>` of a clean checkout,
or tags pinned by hand; off for every step otherwise): same code image and
same inputs give the same outputs, so a re-run with only evaluate's or push's
parameters changed skips them. Off for evaluate (its baseline is whatever model is
being served now, which caching cannot see) and push (it writes a new version
every time it runs).

GPU. Train runs on `pipeline.gpu_image` and asks for `pipeline.accelerator_limit`
accelerators of `pipeline.accelerator_type` (the NVIDIA device plugin's
`nvidia.com/gpu` by default, which places the pod on a GPU node on any
cluster), tolerating the `gpu_toleration_key` taint, and, when set, only on
nodes labelled `gpu_node_selector_key=gpu_node_selector_value` (docs/kubeflow.md: GKE,
EKS, AKS). With a GPU asked for, train runs with `train.require_gpu` on, so
it stops instead of training on the CPU. accelerator_limit 0 trains on an
ordinary node.

(No `from __future__ import annotations` here: KFP reads the pipeline's annotations as types.)
"""

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model

from petseg.components.core.errors import ParamsError
from petseg.components.core.params import Params, PipelineParams, StepResources, params_to_dict
from petseg.pipeline.component_io import check_push_target, push_target_settings

PIPELINE_NAME = "petseg"
PIPELINE_DESCRIPTION = (
    "Pet segmentation: download, validate (Great Expectations), preprocess (TFRecords), "
    "train U-Net (GPU), evaluate, push to TF Serving when blessed"
)
# The params.yaml sections that are run parameters, in step order.
RUN_SECTIONS = ("data", "validate", "preprocess", "model", "train", "evaluate", "push", "card")
STEPS = ("download", "drift_reference", "validate", "preprocess", "train", "evaluate", "push")
CACHED_STEPS = frozenset({"download", "validate", "preprocess", "train"})
# Steps that read or write the model store (push.model_base_path): they mount pipeline.serving_pvc and get
# pipeline.object_store's credentials. Not deploy: it sends KServe the storageUri and reads nothing there.
SERVING_STORE_STEPS = frozenset({"drift_reference", "validate", "evaluate", "push"})
BLESSED_CONDITION = "blessed"


class PipelineOutputs(NamedTuple):
    """The run's outputs, listed on the run page (and what `run_local` reports); push's are in its task."""

    raw: Dataset
    validation: Artifact
    validation_report: HTML
    records: Dataset
    trained_model: Model
    checkpoints: Artifact
    training_metrics: Metrics
    training_log: Artifact
    evaluation: Artifact
    metrics: Metrics
    confusion_matrix: ClassificationMetrics
    predictions: HTML
    blessed: bool


def pipeline_arguments(params: Params) -> dict[str, dict]:
    """The run parameters for `params`: one plain dict per section in RUN_SECTIONS."""
    return {section: params_to_dict(getattr(params, section)) for section in RUN_SECTIONS}


def build_pipeline(params: Params, *, for_cluster: bool = True) -> Callable[..., Any]:
    """The KFP pipeline function for `params` (its parameter defaults are `params`' sections).

    `for_cluster` (compile, submit) also requires a push target that outlives
    the pod and makes the GPU step require its GPU; run-local passes False: it
    may push to a local folder and trains on whatever this machine has (unless
    params.yaml sets train.require_gpu).
    """
    from kfp import dsl

    from petseg.components.contracts.serving_runtime import TF_SERVING_VERSION
    from petseg.components.deploy import check_deploy_settings
    from petseg.pipeline.components import make_components
    from petseg.pipeline.images import code_tag, has_tag, resolve_image

    settings = params.pipeline
    check_deploy_settings(params)  # first: with pipeline.deploy=kserve its message is the more specific
    check_settings(params, for_cluster=for_cluster)
    tag = code_tag()
    images = {"components": resolve_image(settings.image, tag), "train": resolve_image(settings.gpu_image, tag)}
    # Caching is keyed on the images: safe when their tags name fixed code (a clean commit, or pinned by hand).
    cacheable = tag.cacheable or (has_tag(settings.image) and has_tag(settings.gpu_image))
    ops = make_components(images["components"], images["train"])
    defaults = pipeline_arguments(params)
    push_target = push_target_settings(params, on_cluster=for_cluster)

    @dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION, pipeline_root=settings.pipeline_root or None)
    def petseg_pipeline(
        data: dict = defaults["data"],
        validate: dict = defaults["validate"],
        preprocess: dict = defaults["preprocess"],
        model: dict = defaults["model"],
        train: dict = defaults["train"],
        evaluate: dict = defaults["evaluate"],
        push: dict = defaults["push"],
        card: dict = defaults["card"],
    ) -> PipelineOutputs:
        download_task = ops.download(data=data)
        reference_task = ops.drift_reference(validate=validate, push=push, push_target=push_target)
        validate_task = ops.validate(
            raw=download_task.outputs["raw"], validate=validate, reference=reference_task.output
        )
        preprocess_task = ops.preprocess(
            raw=download_task.outputs["raw"], validation=validate_task.outputs["validation"], preprocess=preprocess
        )
        train_task = ops.train(
            records=preprocess_task.outputs["records"],
            model=model,
            train=train,
            require_gpu=for_cluster and settings.accelerator_limit > 0,
        )
        evaluate_task = ops.evaluate(
            trained_model=train_task.outputs["trained_model"],
            records=preprocess_task.outputs["records"],
            evaluate=evaluate,
            push=push,
        )
        tasks = {
            "download": download_task,
            "drift_reference": reference_task,
            "validate": validate_task,
            "preprocess": preprocess_task,
            "train": train_task,
            "evaluate": evaluate_task,
        }
        # A single bool return is the component's "Output"; KFP's local runner resolves conditions on it.
        with dsl.If(evaluate_task.outputs["Output"] == True, name=BLESSED_CONDITION):  # noqa: E712 (a KFP expression)
            tasks["push"] = ops.push(
                trained_model=train_task.outputs["trained_model"],
                evaluation=evaluate_task.outputs["evaluation"],
                validation=validate_task.outputs["validation"],
                training_metrics=train_task.outputs["training_metrics"],
                training_log=train_task.outputs["training_log"],
                data=data,
                validate=validate,
                preprocess=preprocess,
                model=model,
                train=train,
                evaluate=evaluate,
                push=push,
                push_target=push_target,
                card=card,
                code={"commit": tag.commit or "", "images": images},
                serving_release=TF_SERVING_VERSION,
                run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            )
            if settings.deploy == "kserve":  # roll the pushed version out on KServe (petseg.components.deploy)
                tasks["deploy"] = ops.deploy_kserve(
                    push_result=tasks["push"].outputs["Output"],  # push also outputs its model card
                    push=push,
                    serve=params_to_dict(params.serve),
                    pipeline=params_to_dict(settings),
                )
        for step, task in tasks.items():
            configure_task(step, task, settings, cache=cacheable)
        return PipelineOutputs(
            raw=download_task.outputs["raw"],
            validation=validate_task.outputs["validation"],
            validation_report=validate_task.outputs["report"],
            records=preprocess_task.outputs["records"],
            trained_model=train_task.outputs["trained_model"],
            checkpoints=train_task.outputs["checkpoints"],
            training_metrics=train_task.outputs["training_metrics"],
            training_log=train_task.outputs["training_log"],
            evaluation=evaluate_task.outputs["evaluation"],
            metrics=evaluate_task.outputs["metrics"],
            confusion_matrix=evaluate_task.outputs["confusion_matrix"],
            predictions=evaluate_task.outputs["predictions"],
            blessed=evaluate_task.outputs["Output"],
        )

    return petseg_pipeline


def configure_task(step: str, task: Any, settings: PipelineParams, cache: bool = True) -> None:
    """Resources, caching, (train) the GPU, node selector and toleration, and the serving PVC where it is read."""
    from kfp import kubernetes

    from petseg.pipeline.store_credentials import give_store_credentials

    task.set_display_name(step)
    task.set_caching_options(cache and step in CACHED_STEPS)
    set_resources(task, getattr(settings.resources, step), f"pipeline.resources.{step}")
    if step == "train" and settings.accelerator_limit > 0:
        task.set_accelerator_type(settings.accelerator_type)
        task.set_accelerator_limit(settings.accelerator_limit)
        if settings.gpu_node_selector_key and settings.gpu_node_selector_value:
            kubernetes.add_node_selector(
                task, label_key=settings.gpu_node_selector_key, label_value=settings.gpu_node_selector_value
            )
        if settings.gpu_toleration_key:
            kubernetes.add_toleration(
                task, key=settings.gpu_toleration_key, operator="Exists", effect=settings.gpu_toleration_effect
            )
    if step in SERVING_STORE_STEPS and settings.serving_pvc:
        kubernetes.mount_pvc(task, pvc_name=settings.serving_pvc, mount_path=settings.serving_mount_path)
    if step in SERVING_STORE_STEPS:
        give_store_credentials(task, settings.object_store)


def set_resources(task: Any, resources: StepResources, key: str) -> None:
    """Apply CPU/memory requests and limits, naming the params key KFP rejects a quantity for.

    Params have already passed Kubernetes' own grammar (components/core/k8s.py); KFP's
    setters take a narrower one (no exponents; memory without decimals or `k`).
    """
    for field, setter in (
        ("cpu_request", task.set_cpu_request),
        ("cpu_limit", task.set_cpu_limit),
        ("memory_request", task.set_memory_request),
        ("memory_limit", task.set_memory_limit),
    ):
        value = getattr(resources, field)
        try:
            setter(value)
        except ValueError:
            raise ParamsError(
                f"'{key}.{field}' {value!r} is a Kubernetes quantity KFP cannot compile; write it as KFP "
                'takes it (e.g. "500m" or "2" CPUs, "512Mi" or "4Gi" memory: digits and a suffix)'
            ) from None


def check_settings(params: Params, *, for_cluster: bool = True) -> None:
    """Raise ParamsError for `pipeline` settings that would compile into a pipeline that cannot work."""
    settings = params.pipeline
    for key in ("image", "gpu_image"):
        if not getattr(settings, key).strip():
            raise ParamsError(f"'pipeline.{key}' must name a container image")
    if bool(settings.gpu_node_selector_key) != bool(settings.gpu_node_selector_value):
        raise ParamsError("set both pipeline.gpu_node_selector_key and pipeline.gpu_node_selector_value, or neither")
    # Push must write where the model server (and the next run's evaluate) can read it; the push and
    # drift_reference components check the run's own push parameter again by the same rule.
    check_push_target(params.push.model_base_path, **push_target_settings(params, on_cluster=for_cluster))


def compile_pipeline(params: Params, out_file: str | Path) -> Path:
    """Compile the pipeline for `params` to a KFP IR YAML file; its path."""
    from kfp import compiler

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_file.parent) as tmp:
        staged = Path(tmp) / out_file.name
        compiler.Compiler().compile(build_pipeline(params), str(staged))
        staged.replace(out_file)
    return out_file
