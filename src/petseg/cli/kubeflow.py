"""`petseg pipeline ...`: compile, submit or run the Kubeflow pipeline here; write the training job manifests."""

from __future__ import annotations

import argparse
from pathlib import Path

from petseg.components.contracts import layout
from petseg.components.core.params import Params


def add(sub: argparse._SubParsersAction) -> None:
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
        help="write the train step as a Training Operator v1.9 TFJob of pipeline.train_workers "
        "workers, for clusters that still run it (ConfigMap + TFJob YAML for kubectl apply)",
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
        "--records", default=layout.RECORDS_DIR.as_posix(), help="records folder inside the PVC (default: %(default)s)"
    )
    tfjob.add_argument(
        "--out", default=layout.MODELS_DIR.as_posix(), help="model folder inside the PVC (default: %(default)s)"
    )
    tfjob.add_argument(
        "--live", default=layout.LIVE_DIR.as_posix(), help="DVCLive folder inside the PVC (default: %(default)s)"
    )
    tfjob.add_argument("-o", "--output", type=Path, default=None, help="file to write (default: print to stdout)")
    tfjob.set_defaults(handler=_run_pipeline_tfjob)
    trainjob = actions.add_parser(
        "trainjob",
        help="write the train step as a Kubeflow Trainer v2 TrainJob of pipeline.train_workers nodes "
        "(ConfigMap + PlainML TrainingRuntime + TrainJob YAML for kubectl apply)",
        description="Kubeflow Trainer v2 (trainer.kubeflow.org/v1alpha1): a TrainingRuntime on the "
        "PlainML policy and a TrainJob using it; each node builds TF_CONFIG from its JobSet pod's names.",
    )
    _add_job_arguments(trainjob, "TrainJob")
    trainjob.add_argument(
        "--runtime-name",
        default="petseg-tensorflow",
        help="name of the TrainingRuntime to write and use (default: %(default)s)",
    )
    trainjob.add_argument(
        "--cluster-runtime",
        action="store_true",
        help="write a cluster-wide ClusterTrainingRuntime instead of a TrainingRuntime in --namespace",
    )
    trainjob.set_defaults(handler=_run_pipeline_trainjob)
    kserve_credentials = actions.add_parser(
        "kserve-credentials",
        help="print the KServe predictor's ServiceAccount and S3 Secret (for kubectl apply -f -)",
        description="The ServiceAccount pipeline.kserve.service_account lists the Secrets KServe's storage "
        "initializer reads; with pipeline.object_store.secret set, also the Secret pipeline.object_store."
        "kserve_secret, annotated with the endpoint and region and holding $AWS_ACCESS_KEY_ID and "
        "$AWS_SECRET_ACCESS_KEY under the key names KServe reads (docs/object-store-credentials.md).",
    )
    kserve_credentials.set_defaults(handler=_run_pipeline_kserve_credentials)
    for action in (compile_, submit, run_local, tfjob, trainjob, kserve_credentials):
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
    from petseg.components.core.k8s import check_dns1123_label
    from petseg.pipeline.run import apply_overrides, submit

    if args.namespace is not None:
        check_dns1123_label(args.namespace, "--namespace")
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
        if run.pushed.get("card"):
            print(f"  {'push':<10}  {'model_card':<18}  {run.pushed['card']}/model_card.html")
    else:
        print(f"  {'push':<10}  {'skipped':<18}  not blessed: {run.reason}")


def _run_pipeline_image(args: argparse.Namespace, params: Params) -> None:
    from petseg.pipeline.images import code_tag, resolve_image

    print(resolve_image(params.pipeline.gpu_image if args.gpu else params.pipeline.image, code_tag()))


def _add_job_arguments(action: argparse.ArgumentParser, kind: str) -> None:
    """--pvc, --namespace, --name, the folders inside the claim, and -o: what a training job manifest needs."""
    action.add_argument(
        "--pvc", required=True, help="PersistentVolumeClaim (ReadWriteMany) every worker mounts: records in, models out"
    )
    action.add_argument(
        "--namespace",
        default="kubeflow-user-example-com",
        help=f"namespace of the {kind} (default: %(default)s)",
    )
    action.add_argument("--name", default="petseg-train", help=f"{kind} name (default: %(default)s)")
    action.add_argument(
        "--records", default=layout.RECORDS_DIR.as_posix(), help="records folder inside the PVC (default: %(default)s)"
    )
    action.add_argument(
        "--out", default=layout.MODELS_DIR.as_posix(), help="model folder inside the PVC (default: %(default)s)"
    )
    action.add_argument(
        "--live", default=layout.LIVE_DIR.as_posix(), help="DVCLive folder inside the PVC (default: %(default)s)"
    )
    action.add_argument("-o", "--output", type=Path, default=None, help="file to write (default: print to stdout)")


def _run_pipeline_trainjob(args: argparse.Namespace, params: Params) -> None:
    from petseg.pipeline.images import code_tag, resolve_image
    from petseg.pipeline.run import apply_overrides
    from petseg.pipeline.tfjob import manifests_yaml, write_manifests
    from petseg.pipeline.trainjob import trainjob_manifests

    params = apply_overrides(params, args.param)
    image = resolve_image(params.pipeline.gpu_image, code_tag())
    manifests = trainjob_manifests(
        params,
        image,
        args.pvc,
        args.namespace,
        args.name,
        runtime_name=args.runtime_name,
        cluster_runtime=args.cluster_runtime,
        records=args.records,
        out=args.out,
        live=args.live,
    )
    if args.output is None:
        print(manifests_yaml(manifests), end="")
        return
    write_manifests(manifests, args.output)
    runtime = manifests[1]
    print(
        f"pipeline trainjob: wrote {args.output}: TrainJob {args.namespace}/{args.name} on {runtime['kind']} "
        f"{runtime['metadata']['name']}, {params.pipeline.train_workers} node(s) of {image}; "
        f"run `kubectl apply -f {args.output}`"
    )


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


def _run_pipeline_kserve_credentials(args: argparse.Namespace, params: Params) -> None:
    import os

    import yaml

    from petseg.components.contracts.object_store import (
        ACCESS_KEY_ENV,
        SECRET_KEY_ENV,
        kserve_s3_secret,
        kserve_service_account,
    )
    from petseg.components.core.errors import PetsegError
    from petseg.pipeline.run import apply_overrides

    params = apply_overrides(params, args.param)
    store, kserve = params.pipeline.object_store, params.pipeline.kserve
    objects = [kserve_service_account(store, kserve)]
    if store.secret:
        missing = [name for name in (ACCESS_KEY_ENV, SECRET_KEY_ENV) if not os.environ.get(name)]
        if missing:
            raise PetsegError(
                f"{' and '.join(missing)} not set: export the store's keys (those in Secret {store.secret}, keys "
                f"{store.keys.access_key_id} and {store.keys.secret_access_key}) to write KServe's Secret"
            )
        objects.append(
            kserve_s3_secret(store, kserve.namespace, os.environ[ACCESS_KEY_ENV], os.environ[SECRET_KEY_ENV])
        )
    print(yaml.safe_dump_all(objects, sort_keys=False), end="")
