"""The train step as a Kubeflow Trainer v2 TrainJob (trainer.kubeflow.org/v1alpha1) of `pipeline.train_workers` nodes.

`petseg pipeline trainjob --pvc NAME` writes three Kubernetes objects, generated from params.yaml:

- a ConfigMap holding the run's params.yaml (as `petseg pipeline tfjob` does, pipeline/tfjob.py);
- a TrainingRuntime (namespaced; a ClusterTrainingRuntime with `--cluster-runtime`) on the
  PlainML policy: `mlPolicy` names no torch, mpi or jax, so Trainer's PlainML plugin only sets
  the node count and passes the TrainJob's env (kubeflow/trainer v2.3.0
  pkg/runtime/framework/plugins/plainml/plainml.go). Trainer v2.3.0 ships no TensorFlow runtime
  (manifests/base/runtimes/ has torch, deepspeed, jax, mlx, xgboost), and its maintainers point
  TensorFlow users at PlainML with TF_CONFIG built by the job (kubeflow/trainer issue 2699). The
  runtime follows the stock runtimes' shape (manifests/base/runtimes/torch_distributed.yaml): one
  replicated Job named `node` labelled `trainer.kubeflow.org/trainjob-ancestor-step: trainer`,
  whose container named `node` Trainer fills with the TrainJob's image, command and resources
  (pkg/runtime/framework/plugins/jobset/builder.go, (*Builder).Trainer; constants in
  pkg/constants/constants.go). It holds nothing job-specific, so one runtime serves many jobs;
- a TrainJob referring to it, with `numNodes = pipeline.train_workers`, the GPU image
  (`pipeline.gpu_image`, tagged like the pipeline's), the train step's resources, and the claim,
  params, node selector and toleration as a `runtimePatches` entry.

Trainer does not set TF_CONFIG. The runtime maps what a JobSet pod knows into its environment
(the downward API on the labels JobSet v0.12.0 puts on every pod, and the Indexed Job's
completion index; components/ml/cluster.py names the sources), the TrainJob adds the node count,
and `petseg train` builds TF_CONFIG from them before TensorFlow starts
(components/ml/cluster.py, jobset_tf_config): node i is `<name>-node-0-<i>.<name>:2222`, the
hostname and subdomain JobSet gives Indexed Job pods behind its headless Service. Node 0 is the
chief and alone writes checkpoints, DVCLive and the SavedModel.

Failure: any pod that fails fails its Job (backoffLimit 0, restartPolicy Never), and the JobSet
restarts all nodes together up to BACKOFF_LIMIT times (failurePolicy.maxRestarts), so the
collectives never wait for a dead peer; every node resumes from the chief's checkpoint on the PVC.
"""

from __future__ import annotations

from typing import Any

from petseg.components.core.params import Params
from petseg.components.ml.cluster import (
    JOB_INDEX_ENV,
    JOBSET_NAME_ENV,
    NODE_RANK_ENV,
    NUM_NODES_ENV,
    REPLICATED_JOB_ENV,
    WORKER_PORT,
)
from petseg.pipeline.tfjob import (
    BACKOFF_LIMIT,
    PARAMS_DIR,
    WORKSPACE,
    check_job_inputs,
    job_labels,
    params_config_map,
    train_command,
    train_resources,
)

GROUP, VERSION = "trainer.kubeflow.org", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainJob"
RUNTIME_KIND, CLUSTER_RUNTIME_KIND = "TrainingRuntime", "ClusterTrainingRuntime"
NODE = "node"  # the replicated Job's and the container's name (Trainer's constants.Node)
ANCESTOR_LABEL, ANCESTOR_TRAINER = "trainer.kubeflow.org/trainjob-ancestor-step", "trainer"
PATCH_MANAGER = "petseg.io/trainjob"  # who owns the runtimePatches entry
PORT_NAME = "tf-worker"
DEFAULT_RUNTIME = "petseg-tensorflow"
# JobSet's pod labels (kubernetes-sigs/jobset v0.12.0 api/jobset/v1alpha2/jobset_types.go) and the Indexed
# Job's completion-index annotation, read through the downward API.
_DOWNWARD = {
    JOBSET_NAME_ENV: "metadata.labels['jobset.sigs.k8s.io/jobset-name']",
    REPLICATED_JOB_ENV: "metadata.labels['jobset.sigs.k8s.io/replicatedjob-name']",
    JOB_INDEX_ENV: "metadata.labels['jobset.sigs.k8s.io/job-index']",
    NODE_RANK_ENV: "metadata.annotations['batch.kubernetes.io/job-completion-index']",
}


def training_runtime(image: str, namespace: str, name: str = DEFAULT_RUNTIME, cluster: bool = False) -> dict:
    """The PlainML runtime: one `node` Job of Indexed pods whose env lets `petseg train` build TF_CONFIG."""
    container = {
        "name": NODE,
        "image": image,  # the TrainJob's spec.trainer.image replaces it
        "workingDir": WORKSPACE,
        "ports": [{"name": PORT_NAME, "containerPort": WORKER_PORT, "protocol": "TCP"}],
        "env": [{"name": key, "valueFrom": {"fieldRef": {"fieldPath": path}}} for key, path in _DOWNWARD.items()],
    }
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {"app.kubernetes.io/name": "petseg", "trainer.kubeflow.org/framework": "tensorflow"},
    }
    if not cluster:
        metadata["namespace"] = namespace
    return {
        "apiVersion": API_VERSION,
        "kind": CLUSTER_RUNTIME_KIND if cluster else RUNTIME_KIND,
        "metadata": metadata,
        "spec": {
            "mlPolicy": {"numNodes": 1},  # PlainML: no torch, mpi or jax; the TrainJob's numNodes wins
            "template": {
                "spec": {
                    "failurePolicy": {"maxRestarts": BACKOFF_LIMIT},
                    "replicatedJobs": [
                        {
                            "name": NODE,
                            "replicas": 1,
                            "template": {
                                "metadata": {"labels": {ANCESTOR_LABEL: ANCESTOR_TRAINER}},
                                "spec": {
                                    "backoffLimit": 0,
                                    "template": {
                                        # Kubeflow profiles inject Istio; its sidecar breaks the nodes' direct gRPC.
                                        "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
                                        "spec": {"restartPolicy": "Never", "containers": [container]},
                                    },
                                },
                            },
                        }
                    ],
                }
            },
        },
    }


def _pod_patch(params: Params, name: str, pvc: str) -> dict:
    """What this job adds to the runtime's pods: the claim, the params, and where GPUs are."""
    settings = params.pipeline
    gpu = settings.accelerator_limit > 0
    pod: dict[str, Any] = {
        "volumes": [
            {"name": "workspace", "persistentVolumeClaim": {"claimName": pvc}},
            {"name": "params", "configMap": {"name": f"{name}-params"}},
        ],
        "containers": [
            {
                "name": NODE,
                "volumeMounts": [
                    {"name": "workspace", "mountPath": WORKSPACE},
                    {"name": "params", "mountPath": PARAMS_DIR, "readOnly": True},
                ],
            }
        ],
    }
    if gpu and settings.gpu_node_selector_key and settings.gpu_node_selector_value:
        pod["nodeSelector"] = {settings.gpu_node_selector_key: settings.gpu_node_selector_value}
    if gpu and settings.gpu_toleration_key:
        pod["tolerations"] = [
            {"key": settings.gpu_toleration_key, "operator": "Exists", "effect": settings.gpu_toleration_effect}
        ]
    return pod


def train_job(
    params: Params,
    image: str,
    pvc: str,
    namespace: str,
    name: str,
    runtime: dict,
    records: str,
    out: str,
    live: str,
) -> dict:
    """The TrainJob: `pipeline.train_workers` nodes of `image` running `petseg train` on the claim."""
    nodes = params.pipeline.train_workers
    node_patch = {"name": NODE, "template": {"spec": {"template": {"spec": _pod_patch(params, name, pvc)}}}}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": job_labels(name)},
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": runtime["kind"], "name": runtime["metadata"]["name"]},
            "trainer": {
                "image": image,
                "command": train_command(records, out, live),
                "numNodes": nodes,
                "resourcesPerNode": train_resources(params),
                "env": [{"name": NUM_NODES_ENV, "value": str(nodes)}],
            },
            "runtimePatches": [
                {
                    "manager": PATCH_MANAGER,
                    "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node_patch]}}},
                }
            ],
        },
    }


def trainjob_manifests(
    params: Params,
    image: str,
    pvc: str,
    namespace: str,
    name: str = "petseg-train",
    runtime_name: str = DEFAULT_RUNTIME,
    cluster_runtime: bool = False,
    records: str = "data/records",
    out: str = "models",
    live: str = "dvclive",
) -> list[dict]:
    """[ConfigMap, TrainingRuntime or ClusterTrainingRuntime, TrainJob]; PetsegError names what the cluster refuses."""
    check_job_inputs(KIND, name, pvc, namespace, {"--records": records, "--out": out, "--live": live})
    check_job_inputs(f"{CLUSTER_RUNTIME_KIND if cluster_runtime else RUNTIME_KIND}", runtime_name, pvc, namespace, {})
    runtime = training_runtime(image, namespace, runtime_name, cluster_runtime)
    job = train_job(params, image, pvc, namespace, name, runtime, records, out, live)
    return [params_config_map(params, name, namespace), runtime, job]
