"""The `petseg` command: one subcommand per pipeline step, each a thin wrapper.

A subcommand parses its arguments, loads its section of params.yaml and calls
the step function in `petseg.components`; it holds no step logic. DVC stages
(dvc.yaml) and Kubeflow components call the same functions.

A user's mistake (PetsegError) ends with one line on stderr and a non-zero
exit; anything else is a bug and keeps its traceback. Heavy imports
(TensorFlow, Great Expectations) happen inside the handlers so that
`petseg --help` is instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from petseg.components.model_store import VersionInfo

from petseg.components.errors import PetsegError
from petseg.components.layout import BLESSING_FILE, savedmodel_dir
from petseg.components.params import DEFAULT_PARAMS_FILE, Params, load_params

Handler = Callable[[argparse.Namespace, Params], int | None]


DEFAULT_MODELS = Path("models")  # train's output folder, as dvc.yaml runs it
DEFAULT_SAVEDMODEL = savedmodel_dir(DEFAULT_MODELS)


def _quiet_libraries() -> None:
    """Keep TensorFlow's C++ start-up chatter out of the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def _split_counts(counts: dict[str, int]) -> str:
    """'test 60, trainval 240': examples per split, for one-line results."""
    return ", ".join(f"{split} {n}" for split, n in sorted(counts.items()))


# ------------------------------------------------------------------------ download
def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="fetch the dataset (TFDS, archives or synthetic) into the raw layout")
    p.add_argument("--out", type=Path, default=Path("data/raw"), help="raw dataset folder (default: data/raw)")
    p.set_defaults(handler=_run_download)


def _run_download(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.download import download

    result = download(params.data, args.out)
    print(
        f"download: {result.source} -> {result.out_dir}: {_split_counts(result.counts)}; "
        f"{len(result.repaired)} repaired, {len(result.dropped)} dropped"
    )


# ------------------------------------------------------------------------ validate
def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check the raw dataset with Great Expectations; stop on a critical failure")
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="raw dataset folder (default: data/raw)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("reports/validation"),
        help="report folder: table, GX result, Data Docs, summary (default: reports/validation)",
    )
    p.add_argument(
        "--reference",
        default=None,
        help="report folder (or URI) of an earlier accepted validation to run the no_drift_* expectations "
        'against; "served": the one push kept with the served version; "" = none '
        "(default: validate.drift.reference)",
    )
    p.set_defaults(handler=_run_validate)


def _run_validate(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.validate import drift_reference, validate_dataset

    choice = params.validate.drift.reference if args.reference is None else args.reference
    reference = drift_reference(choice, params.push)
    result = validate_dataset(args.raw, params.validate, args.out, reference=reference)
    warnings = f"; warnings: {', '.join(result.failed_warnings)}" if result.failed_warnings else ""
    print(
        f"validate: {args.raw} passed ({result.examples} examples: {_split_counts(result.counts)})"
        f"{warnings}; report {result.data_docs}"
    )


# ---------------------------------------------------------------------- preprocess
def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="resize, split and write the validated dataset as sharded TFRecords")
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="raw dataset folder (default: data/raw)")
    p.add_argument(
        "--validation",
        type=Path,
        default=Path("reports/validation"),
        help="validate's report folder holding summary.json (default: reports/validation)",
    )
    p.add_argument("--out", type=Path, default=Path("data/records"), help="records folder (default: data/records)")
    p.set_defaults(handler=_run_preprocess)


def _run_preprocess(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.preprocess import preprocess

    result = preprocess(args.raw, args.validation, params.preprocess, args.out)
    print(
        f"preprocess: {args.raw} -> {result.out_dir} ({result.image_size} px, {result.workers} workers): "
        + ", ".join(f"{split} {result.counts[split]} in {result.shards[split]} shards" for split in result.counts)
    )


# --------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the U-Net on the records and export the best model as a SavedModel")
    p.add_argument(
        "--records",
        type=Path,
        default=Path("data/records"),
        help="records folder from preprocess (default: data/records)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("models"), help="model folder: savedmodel/ and checkpoints/ (default: models)"
    )
    p.add_argument(
        "--live", type=Path, default=Path("dvclive"), help="DVCLive metrics and plots folder (default: dvclive)"
    )
    p.add_argument(
        "--local-workers",
        type=int,
        default=None,
        metavar="N",
        help="start N worker processes on 127.0.0.1 (TF_CONFIG each, MultiWorkerMirroredStrategy; "
        "worker 0 writes) for development and tests; default: one process, or the cluster "
        "TF_CONFIG describes",
    )
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.train import train

    if args.local_workers is not None:
        return _run_local_workers(args)
    result = train(args.records, params.model, params.train, args.out, args.live)
    best = result.best_metrics
    print(
        f"train: {params.model.architecture} {result.epochs_run} epochs"
        + (f" (resumed after epoch {result.resumed_from_epoch})" if result.resumed_from_epoch else "")
        + (", stopped early" if result.stopped_early else "")
        + f"; best epoch {result.best_epoch}: val mean IoU {best.get('val_mean_iou', float('nan')):.4f}, "
        + f"pixel accuracy {best.get('val_accuracy', float('nan')):.4f} -> {result.savedmodel}"
    )


def _run_local_workers(args: argparse.Namespace) -> None:
    """`petseg train --local-workers N`: this same command N times on 127.0.0.1, one TF_CONFIG each."""
    from petseg.components.cluster import TF_CONFIG, run_local_workers

    if args.local_workers < 1:
        raise PetsegError(f"--local-workers must be at least 1, got {args.local_workers}")
    if os.environ.get(TF_CONFIG, "").strip():
        raise PetsegError(
            f"--local-workers starts its own workers, but {TF_CONFIG} is already set; "
            f"unset {TF_CONFIG} or drop --local-workers"
        )
    command = [
        sys.executable,
        "-m",
        "petseg",
        "train",
        "--records",
        str(args.records),
        "--out",
        str(args.out),
        "--live",
        str(args.live),
        "--params",
        str(args.params),
    ]
    run = run_local_workers(command, args.local_workers)
    print(f"train: {args.local_workers} local workers finished in {run.seconds:.1f} s")


# ------------------------------------------------------------------------ evaluate
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score the SavedModel (and the served one) on the test shards; bless it or not")
    p.add_argument(
        "--model", type=Path, default=DEFAULT_SAVEDMODEL, help=f"SavedModel folder (default: {DEFAULT_SAVEDMODEL})"
    )
    p.add_argument(
        "--records", type=Path, default=Path("data/records"), help="TFRecords folder (default: data/records)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("reports/evaluate"),
        help="metrics, blessing and plots folder (default: reports/evaluate)",
    )
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.evaluate import evaluate

    result = evaluate(args.model, args.records, params.evaluate, params.push, args.out)
    served = (
        f", served v{result.baseline_version} {result.baseline_mean_iou:.4f}"
        if result.baseline_mean_iou is not None
        else ""
    )
    print(
        f"evaluate: {result.test_examples} test images: mean IoU {result.mean_iou:.4f}, "
        f"pixel accuracy {result.pixel_accuracy:.4f}{served} -> "
        f"{'BLESSED' if result.blessed else 'NOT BLESSED'} ({result.reason}); see {result.out_dir}"
    )


# ---------------------------------------------------------------------------- push
def _add_push(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="publish a blessed SavedModel as the next TF Serving version (declines unblessed)")
    p.add_argument(
        "--model", type=Path, default=DEFAULT_SAVEDMODEL, help=f"SavedModel folder (default: {DEFAULT_SAVEDMODEL})"
    )
    p.add_argument(
        "--evaluation",
        type=Path,
        default=Path("reports/evaluate"),
        help=f"evaluate's output folder holding {BLESSING_FILE} (default: reports/evaluate)",
    )
    p.add_argument(
        "--records",
        type=Path,
        default=Path("data/records"),
        help="TFRecords folder whose manifest hash goes into the lineage (default: data/records)",
    )
    p.add_argument(
        "--validation",
        type=Path,
        default=None,
        help="accepted validation report of the data the model was trained on (e.g. reports/validation): "
        "kept with the version as the drift reference later validations compare with (default: none kept)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("reports/push.json"),
        help="push record: the outcome as JSON, pushed, declined or failed (default: reports/push.json)",
    )
    p.set_defaults(handler=_run_push)


def _run_push(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.lineage import collect_lineage
    from petseg.components.push import push

    lineage = collect_lineage(args.records, params)
    result = push(args.model, args.evaluation, params.push, lineage, args.out, drift_reference=args.validation)
    if result.status == "pushed":
        removed = f"; removed old versions {result.removed_versions}" if result.removed_versions else ""
        print(f"push: {result.path}: {result.reason}{removed}")
        if args.validation is None:
            print(f"push: no --validation given: version {result.version} keeps no drift reference")
    else:
        print(f"push: {result.status}: {result.reason}")


# ------------------------------------------------------------------------ rollback
def _add_rollback(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rollback",
        help="serve an earlier pushed version again after infra-validating it (models.config), or --list them",
    )
    p.add_argument(
        "--to",
        type=int,
        default=None,
        metavar="VERSION",
        help="version to serve (default: the newest one older than the served one)",
    )
    p.add_argument("--list", action="store_true", help="list the kept versions with their lineage; change nothing")
    _add_rollback_target(p)
    p.set_defaults(handler=_run_rollback)


def _run_rollback(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.model_store import list_versions, rollback
    from petseg.components.warmup import validate_served_copy

    if args.target == "kserve":
        return _run_kserve_rollback(args, params)
    if args.list:
        print(format_versions(list_versions(params.push)))
        return
    result = rollback(params.push, args.to, infra_check=validate_served_copy)
    print(
        f"rollback: {params.push.model_name} now serves version {result.served} (was {result.previous}); "
        f"{result.config_file} updated"
    )


def _add_rollback_target(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        choices=("store", "kserve"),
        default="store",
        help="store: serve an earlier version by models.config (TF Serving, petseg serve; default); "
        "kserve: send the KServe InferenceService's traffic back to its previously rolled-out "
        "revision (pipeline.kserve.namespace, name push.model_name)",
    )


def _run_kserve_rollback(args: argparse.Namespace, params: Params) -> None:
    """`petseg rollback --target kserve`: canaryTrafficPercent 0 on the InferenceService (petseg.serving.kserve)."""
    from petseg.serving.kserve import custom_objects_api, rollback_traffic

    if args.to is not None or args.list:
        raise PetsegError(
            "--to and --list pick model versions in the store; with --target kserve, rollback "
            "moves traffic to the previously rolled-out revision (drop --to/--list)"
        )
    result = rollback_traffic(custom_objects_api(), params.pipeline.kserve.namespace, params.push.model_name)
    print(
        f"rollback: InferenceService {result.namespace}/{result.name} sends all traffic to revision "
        f"{result.to_revision} (was {result.from_revision}); canaryTrafficPercent is 0 until the next deploy"
    )


def format_versions(infos: list[VersionInfo]) -> str:
    """The table `petseg rollback --list` prints."""
    header = f"{'version':>7}  {'served':6}  {'pushed_at':25}  {'commit':10}  {'mean_iou':>8}  {'accuracy':>8}  data"
    lines = [header]
    for info in infos:
        lin = info.lineage or {}
        metrics = lin.get("metrics") or {}
        commit = (lin.get("git_commit") or "-")[:8] + ("+" if lin.get("git_dirty") else "")
        data = (lin.get("data_manifest_sha256") or "-")[:12]
        lines.append(
            f"{info.version:>7}  {'*' if info.served else '':6}  {lin.get('pushed_at', '-'):25}  "
            f"{commit:10}  {_fmt(metrics.get('mean_iou')):>8}  {_fmt(metrics.get('pixel_accuracy')):>8}  {data}"
        )
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


# --------------------------------------------------------------------------- serve
def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="local server speaking TF Serving's gRPC and REST APIs (development and CI; production: serving/deploy)",
    )
    p.add_argument("--port", type=int, default=None, help="gRPC port (default: serve.grpc_port; 0 = a free one)")
    p.add_argument(
        "--rest-port",
        type=int,
        default=None,
        help="REST port, TF Serving's /v1/models API (default: serve.rest_port; 0 = a free one)",
    )
    p.add_argument("--host", default=None, help="address to listen on (default: serve.host)")
    p.add_argument(
        "--model-base-path",
        type=Path,
        default=None,
        help="folder holding <model-name>/<version>/ and models.config (default: push.model_base_path)",
    )
    p.add_argument("--model-name", default=None, help="model to serve (default: push.model_name)")
    p.add_argument(
        "--batching-parameters-file",
        default=None,
        metavar="FILE",
        help="TF Serving batching parameters whose max_batch_size bounds one request "
        '(default: serve.batching_parameters_file; "" = no bound)',
    )
    p.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace, params: Params) -> None:
    import dataclasses

    from petseg.components.params import check_model_name
    from petseg.serving.server import serve

    if args.model_name is not None:
        check_model_name(args.model_name, "--model-name")
    serve_params = params.serve
    if args.batching_parameters_file is not None:
        serve_params = dataclasses.replace(serve_params, batching_parameters_file=args.batching_parameters_file)
    for flag, value in (("--port", args.port), ("--rest-port", args.rest_port)):
        if value is not None and not 0 <= value <= 65535:
            raise PetsegError(f"{flag} {value} is not a port; give 0 (a free one) to 65535")
    serve(
        args.model_base_path or Path(params.push.model_base_path),
        args.model_name or params.push.model_name,
        serve_params,
        host=args.host,
        port=args.port,
        rest_port=args.rest_port,
        log=lambda line: print(line, flush=True),
    )


# ------------------------------------------------------------------------- predict
def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment images on a model server; write mask and overlay PNGs")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="JPEG/PNG photos of any size")
    p.add_argument("--target", default=None, help="server HOST:PORT (default: localhost:serve.grpc_port)")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: predictions)")
    p.add_argument("--model-name", default=None, help="model to ask (default: push.model_name)")
    p.add_argument(
        "--bytes", action="store_true", help="send the files' encoded bytes (serving_bytes signature) instead of pixels"
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer (default: 30)")
    p.add_argument(
        "--sheet", type=Path, default=None, help="also write one PNG with a row per image: photo, mask, overlay"
    )
    p.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace, params: Params) -> None:
    from petseg.serving.predict_files import format_result, predict_files

    results = predict_files(
        args.target or f"localhost:{params.serve.grpc_port}",
        args.images,
        args.out,
        model_name=args.model_name or params.push.model_name,
        max_message_mb=params.serve.max_message_mb,
        encoded=args.bytes,
        timeout_seconds=args.timeout,
        sheet=args.sheet,
    )
    for result in results:
        print(format_result(result))


# ------------------------------------------------------------------------ pipeline
def _add_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="Kubeflow Pipelines: compile, submit to a cluster, or run here")
    actions = p.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    compile_ = actions.add_parser("compile", help="write the pipeline as a KFP YAML package")
    compile_.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("petseg-pipeline.yaml"),
        help="pipeline package to write (default: petseg-pipeline.yaml)",
    )
    compile_.set_defaults(handler=_run_pipeline_compile)
    submit = actions.add_parser(
        "submit",
        help="start a run on a Kubeflow Pipelines cluster",
        description="Compile and submit the pipeline through kfp.Client; a bearer "
        "token is read from $KF_PIPELINES_TOKEN if set.",
    )
    submit.add_argument("--host", required=True, help="the KFP API's URL, e.g. http://localhost:8080")
    submit.add_argument("--namespace", help="Kubernetes namespace (multi-user Kubeflow)")
    submit.add_argument("--experiment", default="petseg", help="experiment to file the run under (default: petseg)")
    submit.add_argument("--run-name", help="run name (default: KFP's, from the package name and time)")
    submit.set_defaults(handler=_run_pipeline_submit)
    run_local = actions.add_parser(
        "run-local",
        help="run the whole pipeline here with KFP's local runner",
        description="Runs every step with kfp.local's SubprocessRunner in this "
        "environment, on the synthetic set unless --param data.source=...",
    )
    run_local.add_argument(
        "--workdir",
        type=Path,
        default=Path("kfp-local"),
        help="where runs, workspace and cache go (default: kfp-local)",
    )
    run_local.add_argument(
        "--cache", action="store_true", help="reuse outputs of unchanged data/train steps from earlier local runs"
    )
    run_local.set_defaults(handler=_run_pipeline_run_local)
    image = actions.add_parser("image", help="print the image name the pipeline uses (params.yaml pipeline.image)")
    image.add_argument("--gpu", action="store_true", help="the training image (pipeline.gpu_image) instead")
    image.set_defaults(handler=_run_pipeline_image)
    tfjob = actions.add_parser(
        "tfjob",
        help="write the train step as a Kubeflow TFJob of pipeline.train_workers "
        "workers (ConfigMap + TFJob YAML for kubectl apply)",
    )
    tfjob.add_argument(
        "--pvc", required=True, help="PersistentVolumeClaim (ReadWriteMany) every worker mounts: records in, models out"
    )
    tfjob.add_argument(
        "--namespace",
        default="kubeflow-user-example-com",
        help="namespace of the TFJob (default: kubeflow-user-example-com)",
    )
    tfjob.add_argument("--name", default="petseg-train", help="TFJob name (default: petseg-train)")
    tfjob.add_argument(
        "--records", default="data/records", help="records folder inside the PVC (default: data/records)"
    )
    tfjob.add_argument("--out", default="models", help="model folder inside the PVC (default: models)")
    tfjob.add_argument("--live", default="dvclive", help="DVCLive folder inside the PVC (default: dvclive)")
    tfjob.add_argument("-o", "--output", type=Path, default=None, help="file to write (default: print to stdout)")
    tfjob.set_defaults(handler=_run_pipeline_tfjob)
    for action in (compile_, submit, run_local, tfjob):
        action.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a params.yaml value, dotted key, YAML value (repeatable)",
        )
    for action in actions.choices.values():
        action.add_argument(
            "--params", type=Path, default=argparse.SUPPRESS, help="parameters file (default: params.yaml)"
        )


def _run_pipeline_compile(args: argparse.Namespace, params: Params) -> None:
    from petseg.pipeline.pipeline import compile_pipeline
    from petseg.pipeline.run import apply_overrides

    out = compile_pipeline(apply_overrides(params, args.param), args.output)
    print(f"pipeline compile: wrote {out}")


def _run_pipeline_submit(args: argparse.Namespace, params: Params) -> None:
    from petseg.pipeline.run import apply_overrides, submit

    run = submit(
        apply_overrides(params, args.param),
        args.host,
        namespace=args.namespace,
        experiment=args.experiment,
        run_name=args.run_name,
    )
    print(f"pipeline submit: run {run.run_id} in experiment {run.experiment}: {run.url}")


def _run_pipeline_run_local(args: argparse.Namespace, params: Params) -> None:
    from petseg.pipeline.run import LOCAL_DEFAULTS, apply_overrides, run_local

    run = run_local(apply_overrides(params, args.param, LOCAL_DEFAULTS), args.workdir, cache=args.cache)
    print(f"pipeline run-local: finished; run folder {run.run_dir}")
    for step, name, path in run.artifacts:
        reused = "" if run.run_dir in path.parents else "  (cached)"
        print(f"  {step:<10}  {name:<18}  {path}{reused}")
    if run.pushed:
        print(f"  {'push':<10}  {run.pushed['status']:<18}  {run.pushed['path']} (version {run.pushed['version']})")
    else:
        print(f"  {'push':<10}  {'skipped':<18}  not blessed: {run.reason}")


def _run_pipeline_image(args: argparse.Namespace, params: Params) -> None:
    from petseg.pipeline.images import code_tag, resolve_image

    print(resolve_image(params.pipeline.gpu_image if args.gpu else params.pipeline.image, code_tag()))


def _run_pipeline_tfjob(args: argparse.Namespace, params: Params) -> None:
    from petseg.pipeline.images import code_tag, resolve_image
    from petseg.pipeline.run import apply_overrides
    from petseg.pipeline.tfjob import manifests_yaml, tfjob_manifests, write_manifests

    params = apply_overrides(params, args.param)
    image = resolve_image(params.pipeline.gpu_image, code_tag())
    manifests = tfjob_manifests(
        params, image, args.pvc, args.namespace, args.name, records=args.records, out=args.out, live=args.live
    )
    if args.output is None:
        print(manifests_yaml(manifests), end="")
        return
    write_manifests(manifests, args.output)
    print(
        f"pipeline tfjob: wrote {args.output}: TFJob {args.namespace}/{args.name}, "
        f"{params.pipeline.train_workers} worker(s) of {image}; run `kubectl apply -f {args.output}`"
    )


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_download,
    _add_validate,
    _add_preprocess,
    _add_train,
    _add_evaluate,
    _add_push,
    _add_rollback,
    _add_serve,
    _add_predict,
    _add_pipeline,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="petseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    for command in sub.choices.values():
        command.add_argument(
            "--params", type=Path, default=DEFAULT_PARAMS_FILE, help="parameters file (default: params.yaml)"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    if hasattr(signal, "SIGXFSZ"):  # past a file size limit (ulimit -f): an EFBIG error, one line, not a kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        params = load_params(args.params)
        return args.handler(args, params) or 0
    except PetsegError as exc:
        print(f"petseg {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"petseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
