"""The train step as a Kubeflow Training Operator TFJob (kubeflow.org/v1) of `pipeline.train_workers` workers.

This is the route for clusters that still run the Training Operator (release 1.9, maintenance only;
Kubeflow's distribution drops it after 26.03.1). Current Kubeflow clusters run Trainer v2 instead:
`petseg pipeline trainjob` (pipeline/trainjob.py).

`petseg pipeline tfjob --pvc NAME` writes two Kubernetes objects, generated from params.yaml:

- a ConfigMap holding the run's params.yaml (with `train.require_gpu` on when a
  GPU is asked for, as the pipeline's train step does), mounted read-only at
  /etc/petseg/params.yaml;
- a TFJob whose `Worker` replicas (`pipeline.train_workers`) run
  `petseg train` in the GPU image (`pipeline.gpu_image`, tagged like the
  pipeline's, pipeline/images.py) with the train step's resources, GPU
  request, node selector and toleration. The operator gives each pod a
  TF_CONFIG; with no Chief replica, worker 0 is the chief, which is the rule
  components/ml/cluster.py follows, so worker 0 alone writes the checkpoints,
  DVCLive and the SavedModel.

Every worker mounts the same PersistentVolumeClaim (ReadWriteMany) at
WORKSPACE: it reads the records from there and resumes from the chief's
checkpoint there. `restartPolicy: OnFailure` with `backoffLimit` lets a
failed worker come back; its peers' collectives fail (bounded by the
strategy's timeout), they restart too, and all resume from the last
checkpoint. The Istio sidecar is turned off for the worker pods: Kubeflow
profiles inject it, and it breaks the workers' direct gRPC to each other.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from petseg.components.core.errors import PetsegError
from petseg.components.core.k8s import check_dns1123_label, check_dns1123_subdomain
from petseg.components.core.params import Params, params_to_dict

API_VERSION = "kubeflow.org/v1"
KIND = "TFJob"
CONTAINER = "tensorflow"  # the container the operator gives TF_CONFIG and the port to (TFJobDefaultContainerName)
PORT_NAME, PORT = "tfjob-port", 2222  # the operator's defaults
WORKSPACE = "/mnt/petseg"  # where the shared PVC is mounted
PARAMS_DIR = "/etc/petseg"
BACKOFF_LIMIT = 3
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def tfjob_manifests(
    params: Params,
    image: str,
    pvc: str,
    namespace: str,
    name: str = "petseg-train",
    records: str = "data/records",
    out: str = "models",
    live: str = "dvclive",
) -> list[dict]:
    """[ConfigMap, TFJob]: `pipeline.train_workers` workers training from params on the PVC `pvc`.

    `records`, `out` and `live` are paths inside the PVC; PetsegError names a
    name or path the API server or the workers would refuse (the PVC and
    namespace names by the same checks as params.yaml's, components/core/k8s.py).
    """
    check_job_inputs(KIND, name, pvc, namespace, {"--records": records, "--out": out, "--live": live})
    settings = params.pipeline
    gpu = settings.accelerator_limit > 0
    config_map = params_config_map(params, name, namespace)
    container = {
        "name": CONTAINER,
        "image": image,
        "command": train_command(records, out, live),
        "workingDir": WORKSPACE,
        "ports": [{"name": PORT_NAME, "containerPort": PORT}],
        "resources": train_resources(params),
        "volumeMounts": [
            {"name": "workspace", "mountPath": WORKSPACE},
            {"name": "params", "mountPath": PARAMS_DIR, "readOnly": True},
        ],
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [
            {"name": "workspace", "persistentVolumeClaim": {"claimName": pvc}},
            {"name": "params", "configMap": {"name": f"{name}-params"}},
        ],
    }
    if gpu and settings.gpu_node_selector_key and settings.gpu_node_selector_value:
        pod_spec["nodeSelector"] = {settings.gpu_node_selector_key: settings.gpu_node_selector_value}
    if gpu and settings.gpu_toleration_key:
        pod_spec["tolerations"] = [
            {"key": settings.gpu_toleration_key, "operator": "Exists", "effect": settings.gpu_toleration_effect}
        ]
    tfjob = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": job_labels(name)},
        "spec": {
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": BACKOFF_LIMIT},
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": settings.train_workers,
                    "restartPolicy": "OnFailure",
                    "template": {
                        "metadata": {"labels": job_labels(name), "annotations": {"sidecar.istio.io/inject": "false"}},
                        "spec": pod_spec,
                    },
                },
            },
        },
    }
    return [config_map, tfjob]


def check_job_inputs(kind: str, name: str, pvc: str, namespace: str, paths: dict[str, str]) -> None:
    """PetsegError (one line) for a job name, claim, namespace or in-claim path the cluster would refuse.

    The name is a DNS-1035 label (TFJob and TrainJob both require it) short enough for the pods'
    names: TFJob's `<name>-worker-<i>`, JobSet's `<name>-node-0-<i>` hostnames stay within 63.
    """
    if not _DNS1035.fullmatch(name) or len(name) > 52:
        raise PetsegError(
            f"{kind} name {name!r} must be lower-case letters, digits and '-', start with a letter, "
            "at most 52 characters"
        )
    check_dns1123_subdomain(pvc, "--pvc (the PersistentVolumeClaim every worker mounts)")
    check_dns1123_label(namespace, "--namespace")
    for key, path in paths.items():
        if path.startswith("/") or ".." in Path(path).parts or not path.strip():
            raise PetsegError(f"{key} {path!r} must be a relative path inside the PVC, without '..'")


def params_config_map(params: Params, name: str, namespace: str) -> dict:
    """The ConfigMap `<name>-params` holding the params.yaml every worker reads (mounted at PARAMS_DIR)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-params", "namespace": namespace, "labels": job_labels(name)},
        "data": {"params.yaml": job_params_yaml(params, require_gpu=params.pipeline.accelerator_limit > 0)},
    }


def train_command(records: str, out: str, live: str) -> list[str]:
    """`petseg train` on the PVC's folders with the mounted params: every worker's command."""
    return [
        "petseg",
        "train",
        "--records",
        f"{WORKSPACE}/{records}",
        "--out",
        f"{WORKSPACE}/{out}",
        "--live",
        f"{WORKSPACE}/{live}",
        "--params",
        f"{PARAMS_DIR}/params.yaml",
    ]


def job_params_yaml(params: Params, require_gpu: bool) -> str:
    """params.yaml as the workers read it: these params, with train.require_gpu on when GPUs are requested."""
    raw = params_to_dict(params)
    raw["train"]["require_gpu"] = raw["train"]["require_gpu"] or require_gpu
    return yaml.safe_dump(raw, sort_keys=False)


def train_resources(params: Params) -> dict:
    settings, train = params.pipeline, params.pipeline.resources.train
    resources: dict[str, dict[str, str | int]] = {
        "requests": {"cpu": train.cpu_request, "memory": train.memory_request},
        "limits": {"cpu": train.cpu_limit, "memory": train.memory_limit},
    }
    if settings.accelerator_limit > 0:
        resources["limits"][settings.accelerator_type] = settings.accelerator_limit
    return resources


def job_labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "petseg",
        "app.kubernetes.io/component": "train",
        "app.kubernetes.io/instance": name,
    }


class _BlockDumper(yaml.SafeDumper):
    """Safe YAML with multi-line strings (the embedded params.yaml) as readable `|` blocks."""


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)


def manifests_yaml(manifests: list[dict]) -> str:
    """The objects as one multi-document YAML file (`kubectl apply -f` takes it)."""
    return yaml.dump_all(manifests, Dumper=_BlockDumper, sort_keys=False)


def write_manifests(manifests: list[dict], path: Path) -> Path:
    """Write the YAML whole (a temporary file renamed into place), so no half-written file is left."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(manifests_yaml(manifests))
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise PetsegError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path
