"""The pipeline's steps as Kubeflow Pipelines v2 lightweight Python components.

Each function below is the body of one component: it rebuilds its params section
from a pipeline parameter, calls the same step function as its DVC stage (the
`petseg` CLI), and records the step's outputs as typed KFP artifacts. No step
logic lives here. KFP ships a function's source (not this module) into the
container, so every import happens inside the body, from the `petseg` package
that the image has installed.

They are lightweight components whose `base_image` is the project's own image
(params.yaml `pipeline.image`, `pipeline.gpu_image` for train): on a cluster they
run in that image, and KFP's local SubprocessRunner, which runs only lightweight
components, runs the very same functions in the current environment.
`install_kfp_package=False` because the image already has kfp (a petseg
dependency), so a pod never needs to reach PyPI.

Artifacts are folders or files under the pipeline root, moved between steps by
KFP (see petseg.pipeline.pipeline for why no PVC).

(No `from __future__ import annotations` here: KFP reads these annotations as types.)
"""
from dataclasses import dataclass
from typing import Any, Callable

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from petseg.components.params import PipelineParams


# Component bodies. Their parameter names are the names the pipeline and the KFP UI show.
def download(data: dict, raw: Output[Dataset]):
    """Step 1: fetch the dataset into the raw layout (a Dataset folder)."""
    from petseg.components.download import download as download_step
    from petseg.pipeline.component_io import section_params

    result = download_step(section_params("data", data), raw.path)
    raw.metadata.update({"source": result.source, "examples": dict(result.counts),
                         "repaired": len(result.repaired), "dropped": len(result.dropped)})


def validate(raw: Input[Dataset], validate: dict, validation: Output[Artifact], report: Output[HTML]):
    """Step 2: Great Expectations on the raw dataset; a failed critical expectation fails the run."""
    from petseg.components.validate import validate_dataset
    from petseg.pipeline.component_io import copy_validation_report, section_params

    result = validate_dataset(raw.path, section_params("validate", validate), validation.path)
    copy_validation_report(validation.path, report.path)
    validation.metadata.update({"success": result.success, "examples": result.examples,
                                "failed_warnings": list(result.failed_warnings)})


def preprocess(raw: Input[Dataset], validation: Input[Artifact], preprocess: dict, records: Output[Dataset]):
    """Step 3: the validated raw dataset as sharded TFRecords (train/val/test) with a manifest."""
    from petseg.components.preprocess import preprocess as preprocess_step
    from petseg.pipeline.component_io import section_params

    result = preprocess_step(raw.path, validation.path, section_params("preprocess", preprocess), records.path)
    records.metadata.update({"image_size": result.image_size, "examples": dict(result.counts)})


def train(records: Input[Dataset], model: dict, train: dict, trained_model: Output[Model],
          training_metrics: Output[Metrics], training_log: Output[Artifact]):
    """Step 4: train the U-Net. The Model artifact is train's output folder: the SavedModel is
    its SavedModel at petseg.components.layout.savedmodel_dir, next to the checkpoints."""
    import dataclasses

    from petseg.components.layout import SAVEDMODEL_DIR
    from petseg.components.train import train as train_step
    from petseg.pipeline.component_io import log_metrics, section_params

    result = train_step(records.path, section_params("model", model), section_params("train", train),
                        trained_model.path, training_log.path)
    log_metrics(training_metrics, dataclasses.asdict(result))
    trained_model.metadata.update({"savedmodel": SAVEDMODEL_DIR, "image_size": result.image_size,
                                   "best_epoch": result.best_epoch, "epochs_run": result.epochs_run})


def evaluate(trained_model: Input[Model], records: Input[Dataset], evaluate: dict, push: dict,
             evaluation: Output[Artifact], metrics: Output[Metrics],
             confusion_matrix: Output[ClassificationMetrics], predictions: Output[HTML]) -> bool:
    """Step 5: test-set metrics, plots and the blessing (against the served model, if any).

    Returns whether the model is blessed: the pipeline's push runs only then.
    """
    from pathlib import Path

    from petseg.components.evaluate import evaluate as evaluate_step
    from petseg.components.layout import CONFUSION_PLOT, SAMPLES_PLOT, savedmodel_dir
    from petseg.pipeline.component_io import (log_metrics, section_params, write_image_sheet,
                                               write_metadata_file)

    result = evaluate_step(savedmodel_dir(trained_model.path), records.path,
                           section_params("evaluate", evaluate), section_params("push", push), evaluation.path)
    scores = result.metrics_record()
    log_metrics(metrics, scores)
    matrix = scores["confusion_matrix"]
    confusion_matrix.log_confusion_matrix(matrix["labels"], matrix["rows_true_columns_predicted"])
    write_metadata_file(confusion_matrix)
    write_image_sheet(f"Test set: {'blessed' if result.blessed else 'not blessed'} ({result.reason})",
                      [Path(evaluation.path) / SAMPLES_PLOT, Path(evaluation.path) / CONFUSION_PLOT],
                      predictions.path)
    evaluation.metadata.update({"blessed": result.blessed, "reason": result.reason})
    return bool(result.blessed)


def push(trained_model: Input[Model], evaluation: Input[Artifact], push: dict, code_images: dict,
         run_name: str, run_id: str) -> str:
    """Step 6, only when blessed: publish the SavedModel as the next TF Serving version.

    Returns push's outcome as JSON (status, version, path). Lineage names the
    pipeline run and the images (the code) that made the model; the blessing adds
    the data manifest and metrics.
    """
    import json
    from pathlib import Path

    from petseg.components.blessing import blessing_path
    from petseg.components.layout import savedmodel_dir
    from petseg.components.push import push as push_step
    from petseg.pipeline.component_io import section_params

    lineage = {"runner": "kubeflow", "pipeline_run": run_name, "pipeline_run_id": run_id,
               "code_images": dict(code_images), "model_artifact": trained_model.uri,
               "evaluation_artifact": evaluation.uri}
    result = push_step(savedmodel_dir(trained_model.path), blessing_path(evaluation.path),
                       section_params("push", push), lineage)
    print(f"push: {result.status}: {result.reason}")
    return json.dumps(result.to_dict())


def deploy_kserve(push_result: str, push: dict, serve: dict, pipeline: dict) -> str:
    """Step 7, with pipeline.deploy: kserve, after a push: roll the pushed version out on KServe.

    Creates or patches the InferenceService (petseg.serving.kserve): canary,
    Ready within the timeout, promotion to 100%; otherwise traffic goes back to
    the last rolled-out revision and the step fails. Returns the outcome as JSON.
    """
    import json

    from petseg.pipeline.component_io import section_params
    from petseg.serving.kserve import custom_objects_api, deploy, inference_service

    pushed = json.loads(push_result)
    version = pushed.get("version") or pushed.get("served_version")
    if pushed.get("status") not in ("pushed", "unchanged") or version is None:
        print(f"deploy: nothing to roll out (push {pushed.get('status')}: {pushed.get('reason')})")
        return json.dumps({"status": "skipped", "reason": pushed.get("reason")})
    push_params = section_params("push", push)
    pipeline_params = section_params("pipeline", pipeline)
    body = inference_service(push_params, section_params("serve", serve), pipeline_params, int(version))
    result = deploy(custom_objects_api(), body, pipeline_params.kserve, int(version))
    print(f"deploy: {result.status}: {result.namespace}/{result.name} version {result.version} "
          f"on revision {result.revision}")
    return json.dumps(result.__dict__)


@dataclass(frozen=True)
class Components:
    """The KFP components, built for one pair of images."""

    download: Callable[..., Any]
    validate: Callable[..., Any]
    preprocess: Callable[..., Any]
    train: Callable[..., Any]
    evaluate: Callable[..., Any]
    push: Callable[..., Any]
    deploy_kserve: Callable[..., Any]


def make_components(settings: PipelineParams) -> Components:
    """The components with their images taken from params.yaml `pipeline` (the one place they are named)."""
    def component(func: Callable, image: str) -> Any:
        return dsl.component(func, base_image=image, install_kfp_package=False)

    return Components(
        download=component(download, settings.image),
        validate=component(validate, settings.image),
        preprocess=component(preprocess, settings.image),
        train=component(train, settings.gpu_image),
        evaluate=component(evaluate, settings.image),
        push=component(push, settings.image),
        deploy_kserve=component(deploy_kserve, settings.image),
    )
