"""The pipeline's steps as Kubeflow Pipelines v2 lightweight Python components.

Each function below is the body of one component: it rebuilds its params section
from a pipeline parameter, calls the same step function as its DVC stage (the
`petseg` CLI), and records the step's outputs as typed KFP artifacts. No step
logic lives here. KFP ships a function's source (not this module) into the
container, so every import happens inside the body, from the `petseg` package
that the image has installed.

They are lightweight components whose `base_image` is the project's own image
(params.yaml `pipeline.image`, `pipeline.gpu_image` for train, tagged by pipeline/images.py): on a cluster they
run in that image, and KFP's local SubprocessRunner, which runs only lightweight
components, runs the very same functions in the current environment.
`install_kfp_package=False` because the image already has kfp (a petseg
dependency), so a pod never needs to reach PyPI.

Artifacts are folders or files under the pipeline root, moved between steps by
KFP (see petseg.pipeline.pipeline for why no PVC).

(No `from __future__ import annotations` here: KFP reads these annotations as types.)
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


# Component bodies. Their parameter names are the names the pipeline and the KFP UI show.
def download(data: dict, raw: Output[Dataset]):
    """Step 1: fetch the dataset into the raw layout (a Dataset folder)."""
    from petseg.components.download import download as download_step
    from petseg.pipeline.component_io import section_params

    result = download_step(section_params("data", data), raw.path)
    raw.metadata.update(
        {
            "source": result.source,
            "examples": dict(result.counts),
            "repaired": len(result.repaired),
            "dropped": len(result.dropped),
        }
    )


def drift_reference(validate: dict, push: dict, push_target: dict) -> str:
    """Before step 2: the report folder validate compares the data with ("" = no drift check).

    For validate.drift.reference "served", the report push kept with the version
    served at push.model_base_path (read from the model store now, so this step
    is never cached); else that folder or URI as it is. Its own step so that
    validate stays cacheable: validate's input is the folder's name, and a
    version folder never changes once published. `push_target` holds the
    compile-time settings the run's push.model_base_path is checked against
    (component_io.check_push_target), so a run parameter changed in the KFP UI
    cannot point the model store at the pod's own disk.
    """
    from petseg.components.drift_reference import drift_reference as choose_reference
    from petseg.components.store.model_store import ModelStore
    from petseg.pipeline.component_io import check_push_target, section_params

    validate_params = section_params("validate", validate)
    push_params = section_params("push", push)
    check_push_target(push_params.model_base_path, **push_target, where="this run's push parameter: ")
    return choose_reference(validate_params.drift.reference, ModelStore.from_params(push_params)) or ""


def validate(raw: Input[Dataset], validate: dict, reference: str, validation: Output[Artifact], report: Output[HTML]):
    """Step 2: Great Expectations on the raw dataset; a failed critical expectation fails the run.

    `reference` is the drift reference the drift_reference step chose ("" = none).
    The HTML report is written before the step fails, and on a failure also
    uploaded to its artifact URI when that is an object store: Kubeflow uploads
    no outputs of a failed step.
    """
    from petseg.components.validate import validate_dataset
    from petseg.pipeline.component_io import keep_validation_report, section_params

    try:
        result = validate_dataset(
            raw.path, section_params("validate", validate), validation.path, reference=reference or None
        )
    except Exception:
        keep_validation_report(validation.path, report.path, report.uri, failed=True)
        raise
    keep_validation_report(validation.path, report.path, report.uri, failed=False)
    validation.metadata.update(
        {"success": result.success, "examples": result.examples, "failed_warnings": list(result.failed_warnings)}
    )


def preprocess(raw: Input[Dataset], validation: Input[Artifact], preprocess: dict, records: Output[Dataset]):
    """Step 3: the validated raw dataset as sharded TFRecords (train/val/test) with a manifest."""
    from petseg.components.preprocess import preprocess as preprocess_step
    from petseg.pipeline.component_io import section_params

    result = preprocess_step(raw.path, validation.path, section_params("preprocess", preprocess), records.path)
    records.metadata.update({"image_size": result.image_size, "examples": dict(result.counts)})


def train(
    records: Input[Dataset],
    model: dict,
    train: dict,
    require_gpu: bool,
    trained_model: Output[Model],
    checkpoints: Output[Artifact],
    training_metrics: Output[Metrics],
    training_log: Output[Artifact],
):
    """Step 4: train the U-Net. The Model artifact is the SavedModel alone; the checkpoints (and the
    rest of train's output folder) are their own artifact, used only to resume a run."""
    import dataclasses
    import shutil

    from petseg.components.contracts.layout import train_metrics_file
    from petseg.components.train import train as train_step
    from petseg.pipeline.component_io import log_metrics, section_params, split_savedmodel

    train_params = section_params("train", train)
    if require_gpu:  # the step was scheduled onto a GPU: training on the CPU would be a silent failure
        train_params = dataclasses.replace(train_params, require_gpu=True)
    result = train_step(records.path, section_params("model", model), train_params, checkpoints.path, training_log.path)
    split_savedmodel(checkpoints.path, trained_model.path)
    log_metrics(training_metrics, dataclasses.asdict(result))
    # The artifact's file is train's own metrics.json (best_val, best_epoch, epochs_run), as under DVC:
    # the model card reads it in push; the UI shows the logged scalars (metadata).
    shutil.copyfile(train_metrics_file(checkpoints.path), training_metrics.path)
    trained_model.metadata.update(
        {"image_size": result.image_size, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run}
    )


def evaluate(
    trained_model: Input[Model],
    records: Input[Dataset],
    evaluate: dict,
    push: dict,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion_matrix: Output[ClassificationMetrics],
    predictions: Output[HTML],
) -> bool:
    """Step 5: test-set metrics, plots and the blessing (against the served model, if any).

    Returns whether the model is blessed: the pipeline's push runs only then.
    """
    from pathlib import Path

    from petseg.components.contracts.layout import CONFUSION_PLOT, SAMPLES_PLOT
    from petseg.components.evaluate import evaluate as evaluate_step
    from petseg.pipeline.component_io import log_metrics, section_params, write_image_sheet, write_metadata_file

    result = evaluate_step(
        Path(trained_model.path),
        records.path,
        section_params("evaluate", evaluate),
        section_params("push", push),
        evaluation.path,
    )
    scores = result.metrics_record()
    log_metrics(metrics, scores)
    matrix = scores["confusion_matrix"]
    confusion_matrix.log_confusion_matrix(matrix["labels"], matrix["rows_true_columns_predicted"])
    write_metadata_file(confusion_matrix)
    write_image_sheet(
        f"Test set: {'blessed' if result.blessed else 'not blessed'} ({result.reason})",
        [Path(evaluation.path) / SAMPLES_PLOT, Path(evaluation.path) / CONFUSION_PLOT],
        predictions.path,
    )
    evaluation.metadata.update({"blessed": result.blessed, "reason": result.reason})
    return bool(result.blessed)


def push(
    trained_model: Input[Model],
    evaluation: Input[Artifact],
    validation: Input[Artifact],
    training_metrics: Input[Metrics],
    training_log: Input[Artifact],
    data: dict,
    validate: dict,
    preprocess: dict,
    model: dict,
    train: dict,
    evaluate: dict,
    push: dict,
    push_target: dict,
    card: dict,
    code: dict,
    serving_release: str,
    run_name: str,
    run_id: str,
    model_card: Output[HTML],
) -> str:
    """Step 6, only when blessed: publish the SavedModel as the next TF Serving version, with its model card.

    Returns push's outcome as JSON (status, version, path, card). The lineage record is
    the CLI's (components/contracts/lineage.py): the code commit and images, every params
    section of this run, the data manifest hash and metrics from the blessing,
    and the pipeline run. The run's validation report is kept with the version
    as its drift reference. The model card (components/card/) is written beside the
    version and is this step's HTML artifact, which the KFP UI renders: it reads
    evaluate's folder, the validation report, train's metrics and DVCLive curves (small
    files; the records and checkpoints are not downloaded here: the examples per split
    are evaluate's copy of the manifest's counts in the blessing). `serving_release` is the TF
    Serving release the deployment runs, read when the pipeline was compiled. The run's
    push.model_base_path is checked first against `push_target`, as drift_reference does.
    """
    import json
    import tempfile
    from pathlib import Path

    from petseg.components.card.sources import CardSources
    from petseg.components.contracts.blessing import blessing_path
    from petseg.components.contracts.layout import MODEL_CARD_HTML
    from petseg.components.contracts.lineage import collect_lineage
    from petseg.components.push import push as push_step
    from petseg.pipeline.component_io import check_push_target, run_params

    params = run_params(
        {
            "data": data,
            "validate": validate,
            "preprocess": preprocess,
            "model": model,
            "train": train,
            "evaluate": evaluate,
            "push": push,
            "card": card,
        }
    )
    check_push_target(params.push.model_base_path, **push_target, where="this run's push parameter: ")
    blessing_file = blessing_path(evaluation.path)
    lineage = collect_lineage(
        None,
        params,
        blessing_file=blessing_file,
        runner="kubeflow",
        run_id=run_id,
        run_name=run_name,
        code_commit=code.get("commit"),
        code_images=code.get("images"),
        artifacts={
            "model_artifact": trained_model.uri,
            "evaluation_artifact": evaluation.uri,
            "validation_artifact": validation.uri,
        },
    )
    sources = CardSources(
        train_metrics=Path(training_metrics.path),
        live_dir=Path(training_log.path),
        tf_serving_release=serving_release or None,
        use=params.card,
    )
    with tempfile.TemporaryDirectory() as scratch:
        card_dir = Path(scratch) / "model_card"
        result = push_step(
            Path(trained_model.path),
            blessing_file,
            params.push,
            lineage,
            drift_reference=validation.path,
            card=sources,
            card_out=card_dir,
        )
        page = Path(model_card.path)
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_bytes((card_dir / MODEL_CARD_HTML).read_bytes())
    model_card.metadata.update({"version": result.version, "store": result.card or ""})
    print(f"push: {result.status}: {result.reason}")
    if result.card:
        print(f"push: model card: {result.card}/{MODEL_CARD_HTML}")
    return json.dumps(result.to_dict())


def deploy_kserve(push_result: str, push: dict, serve: dict, pipeline: dict) -> str:
    """Step 7, with pipeline.deploy: kserve, after a push: roll the pushed version out on KServe.

    Creates or patches the InferenceService (petseg.components.deploy) in
    pipeline.kserve.mode: a canary, Ready within the timeout, then promotion;
    otherwise the previous version keeps the traffic (Knative: canaryTrafficPercent 0;
    Standard: the canary removed) and the step fails. Returns the outcome as JSON.
    """
    import dataclasses
    import json

    from petseg.components.deploy import custom_objects_api, deploy, inference_service
    from petseg.pipeline.component_io import section_params

    pushed = json.loads(push_result)
    version = pushed.get("version") or pushed.get("served_version")
    if pushed.get("status") not in ("pushed", "unchanged") or version is None:
        print(f"deploy: nothing to roll out (push {pushed.get('status')}: {pushed.get('reason')})")
        return json.dumps({"status": "skipped", "reason": pushed.get("reason")})
    push_params = section_params("push", push)
    pipeline_params = section_params("pipeline", pipeline)
    body = inference_service(push_params, section_params("serve", serve), pipeline_params, int(version))
    result = deploy(custom_objects_api(), body, pipeline_params.kserve, int(version))
    print(
        f"deploy: {result.status}: {result.namespace}/{result.name} version {result.version} "
        f"on revision {result.revision}"
    )
    return json.dumps(dataclasses.asdict(result))


@dataclass(frozen=True)
class Components:
    """The KFP components, built for one pair of images."""

    download: Callable[..., Any]
    drift_reference: Callable[..., Any]
    validate: Callable[..., Any]
    preprocess: Callable[..., Any]
    train: Callable[..., Any]
    evaluate: Callable[..., Any]
    push: Callable[..., Any]
    deploy_kserve: Callable[..., Any]


def make_components(image: str, gpu_image: str) -> Components:
    """The components run in `image`, train in `gpu_image` (pipeline/images.py resolves both from params.yaml)."""

    def component(func: Callable, base_image: str) -> Any:
        return dsl.component(func, base_image=base_image, install_kfp_package=False)

    return Components(
        download=component(download, image),
        drift_reference=component(drift_reference, image),
        validate=component(validate, image),
        preprocess=component(preprocess, image),
        train=component(train, gpu_image),
        evaluate=component(evaluate, image),
        push=component(push, image),
        deploy_kserve=component(deploy_kserve, image),
    )
