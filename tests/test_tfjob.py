"""The TFJob manifest `petseg pipeline tfjob` writes, checked against params.yaml and the Kubernetes/TFJob APIs."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from petseg import cli
from petseg.components.core.errors import PetsegError
from petseg.components.core.params import load_params, params_from_yaml, params_to_dict, with_overrides
from petseg.components.ml.cluster import worker_role
from petseg.pipeline import tfjob
from petseg.pipeline.images import code_tag, resolve_image

REPO_ROOT = Path(__file__).resolve().parents[1]
KUBERNETES_VERSION = "1.37.0"

# The TFJob API (kubeflow/training-operator pkg/apis/kubeflow.org/v1: tensorflow_types.go, common_types.go,
# tensorflow_validation.go). kubernetes-validate has no schema for this CRD, so its fields are checked here.
TFJOB_SPEC_FIELDS = {"runPolicy", "successPolicy", "tfReplicaSpecs", "enableDynamicWorker"}
RUN_POLICY_FIELDS = {
    "cleanPodPolicy",
    "ttlSecondsAfterFinished",
    "activeDeadlineSeconds",
    "backoffLimit",
    "schedulingPolicy",
    "suspend",
    "managedBy",
}
CLEAN_POD_POLICIES = {"All", "Running", "None"}
REPLICA_TYPES = {"PS", "Worker", "Chief", "Master", "Evaluator"}
REPLICA_SPEC_FIELDS = {"replicas", "template", "restartPolicy"}
RESTART_POLICIES = {"Always", "OnFailure", "Never", "ExitCode"}


def _project_params(**overrides):
    return with_overrides(load_params(REPO_ROOT / "params.yaml"), overrides)


def _check_tfjob_api(job: dict) -> None:
    """What the operator's CRD and ValidateV1TFJob require of a TFJob."""
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "TFJob"
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])
    spec = job["spec"]
    assert set(spec) <= TFJOB_SPEC_FIELDS and "tfReplicaSpecs" in spec
    assert set(spec["runPolicy"]) <= RUN_POLICY_FIELDS
    assert spec["runPolicy"]["cleanPodPolicy"] in CLEAN_POD_POLICIES
    replicas = spec["tfReplicaSpecs"]
    assert set(replicas) <= REPLICA_TYPES
    assert sum(kind in ("Chief", "Master") for kind in replicas) <= 1
    for replica in replicas.values():
        assert set(replica) <= REPLICA_SPEC_FIELDS and replica["restartPolicy"] in RESTART_POLICIES
        assert isinstance(replica["replicas"], int) and replica["replicas"] >= 1
        containers = replica["template"]["spec"]["containers"]
        assert all(c.get("image") for c in containers)
        assert [c["name"] for c in containers].count("tensorflow") == 1


def _pod_of(job: dict) -> dict:
    template = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "worker-0", **template["metadata"]},
        "spec": template["spec"],
    }


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_manifest_follows_params_yaml(workers):
    params = _project_params(**{"pipeline.train_workers": workers})
    config_map, job = tfjob.tfjob_manifests(params, "registry/petseg-gpu:1", "shared-work", "team-a")

    kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)
    kubernetes_validate.validate(_pod_of(job), KUBERNETES_VERSION, strict=True)
    _check_tfjob_api(job)

    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == params.pipeline.train_workers == workers
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry/petseg-gpu:1"
    train = params.pipeline.resources.train
    assert container["resources"] == {
        "requests": {"cpu": train.cpu_request, "memory": train.memory_request},
        "limits": {
            "cpu": train.cpu_limit,
            "memory": train.memory_limit,
            params.pipeline.accelerator_type: params.pipeline.accelerator_limit,
        },
    }
    assert pod["tolerations"] == [
        {
            "key": params.pipeline.gpu_toleration_key,
            "operator": "Exists",
            "effect": params.pipeline.gpu_toleration_effect,
        }
    ]
    assert "nodeSelector" not in pod  # params.yaml sets no node selector
    assert container["command"][:2] == ["petseg", "train"]
    assert pod["volumes"][0] == {"name": "workspace", "persistentVolumeClaim": {"claimName": "shared-work"}}
    assert job["metadata"]["namespace"] == config_map["metadata"]["namespace"] == "team-a"

    shipped = params_from_yaml(config_map["data"]["params.yaml"].encode())  # what the workers will read
    assert shipped.train.require_gpu  # a GPU is requested: training on the CPU must stop, as in the pipeline
    assert params_to_dict(dataclasses.replace(shipped, train=params.train)) == params_to_dict(params)


def test_a_cpu_job_asks_for_no_gpu_and_keeps_require_gpu_as_set():
    params = _project_params(
        **{
            "pipeline.accelerator_limit": 0,
            "pipeline.gpu_node_selector_key": "pool",
            "pipeline.gpu_node_selector_value": "gpu",
        }
    )
    config_map, job = tfjob.tfjob_manifests(params, "img:1", "work", "ns")
    pod = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "tolerations" not in pod and "nodeSelector" not in pod
    assert not params_from_yaml(config_map["data"]["params.yaml"].encode()).train.require_gpu


def test_node_selector_comes_from_params():
    params = _project_params(
        **{
            "pipeline.gpu_node_selector_key": "cloud.google.com/gke-accelerator",
            "pipeline.gpu_node_selector_value": "nvidia-l4",
        }
    )
    _, job = tfjob.tfjob_manifests(params, "img:1", "work", "ns")
    pod = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    kubernetes_validate.validate(_pod_of(job), KUBERNETES_VERSION, strict=True)


def test_the_tf_config_the_operator_sets_makes_worker_0_the_only_chief():
    """The operator's TF_CONFIG for Worker replicas only (no Chief): cluster.worker, task worker:i."""
    params = _project_params(**{"pipeline.train_workers": 3})
    _, job = tfjob.tfjob_manifests(params, "img:1", "work", "ns", name="petseg-train")
    n = job["spec"]["tfReplicaSpecs"]["Worker"]["replicas"]
    hosts = [f"petseg-train-worker-{i}.ns.svc:{tfjob.PORT}" for i in range(n)]
    roles = [
        worker_role({"TF_CONFIG": json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})})
        for i in range(n)
    ]
    assert [r.is_chief for r in roles] == [True, False, False] and {r.workers for r in roles} == {3}


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"name": "Petseg_Train"}, "TFJob name"),
        ({"name": "x" * 60}, "TFJob name"),
        ({"pvc": " "}, "--pvc"),
        ({"records": "/abs/records"}, "--records"),
        ({"out": "../outside"}, "--out"),
    ],
)
def test_bad_names_and_paths_are_refused_in_one_line(kwargs, says):
    args = {"image": "img:1", "pvc": "work", "namespace": "ns", **kwargs}
    with pytest.raises(PetsegError) as err:
        tfjob.tfjob_manifests(_project_params(), **args)
    assert says in str(err.value) and "\n" not in str(err.value)


@given(st.integers(min_value=-5, max_value=200))
def test_train_workers_is_validated_in_params(workers):
    raw = params_to_dict(load_params(REPO_ROOT / "params.yaml"))
    raw["pipeline"]["train_workers"] = workers
    if 1 <= workers <= 64:
        assert params_from_yaml(yaml.safe_dump(raw).encode()).pipeline.train_workers == workers
    else:
        with pytest.raises(PetsegError, match=r"pipeline\.train_workers"):
            params_from_yaml(yaml.safe_dump(raw).encode())


def test_cli_writes_the_manifest_from_params_yaml(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    out = tmp_path / "tfjob.yaml"
    code = cli.main(
        ["pipeline", "tfjob", "--pvc", "petseg-work", "--param", "pipeline.train_workers=2", "-o", str(out)]
    )
    assert code == 0 and f"kubectl apply -f {out}" in capsys.readouterr().out
    config_map, job = yaml.safe_load_all(out.read_text())
    _check_tfjob_api(job)
    assert job["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 2
    params = load_params(REPO_ROOT / "params.yaml")
    image = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["image"]
    assert image == resolve_image(params.pipeline.gpu_image, code_tag())
    assert params_from_yaml(config_map["data"]["params.yaml"].encode()).pipeline.train_workers == 2
    assert [p.name for p in tmp_path.iterdir()] == ["tfjob.yaml"]  # no partial file left


def test_cli_prints_to_stdout_and_refuses_zero_workers(capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    assert cli.main(["pipeline", "tfjob", "--pvc", "w"]) == 0
    kinds = [doc["kind"] for doc in yaml.safe_load_all(capsys.readouterr().out)]
    assert kinds == ["ConfigMap", "TFJob"]
    code = cli.main(["pipeline", "tfjob", "--pvc", "w", "--param", "pipeline.train_workers=0"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "\n" not in err and "'pipeline.train_workers' must be at least 1" in err
