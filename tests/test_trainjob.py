"""The Kubeflow Trainer v2 route: `petseg pipeline trainjob` manifests, and TF_CONFIG built inside a JobSet pod.

The pod environment in these tests is not written by hand: it is what Kubernetes
makes of the generated TrainingRuntime and TrainJob. `_jobset_pod_env` resolves the
runtime container's downward-API fields against the labels and annotation a pod of
that TrainJob carries, following the upstream code at the tags the manifests target:

- Trainer v2.3.0 names the JobSet after the TrainJob (pkg/runtime/framework/plugins/jobset/jobset.go,
  (*JobSet).Build) and, for PlainML, adds the TrainJob's `spec.trainer.env` to the `node` container
  (pkg/runtime/framework/plugins/plainml/plainml.go);
- JobSet v0.12.0 names child Jobs `<jobset>-<replicatedJob>-<jobIndex>` (pkg/util/placement/placement.go,
  GenJobName), labels their pods with jobset-name, replicatedjob-name and job-index
  (pkg/controllers/jobset_controller.go, labelAndAnnotateObject) and sets the pods' subdomain to the JobSet
  name (GetSubdomain), the name of its headless Service (createHeadlessSvcIfNecessary);
- an Indexed Job annotates pod i with `batch.kubernetes.io/job-completion-index: i` and names its
  hostname `<job>-<i>` (Kubernetes; as used by Trainer's torch plugin and JobSet's docs).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml
from crd_schema import problems
from helpers import REPO_ROOT
from hypothesis import given
from hypothesis import strategies as st
from test_multiworker import _assert_serves_the_contract, worker_run  # noqa: F401 (a fixture)

from petseg import cli
from petseg.components.core.errors import PetsegError
from petseg.components.core.params import load_params, params_from_yaml, with_overrides
from petseg.components.ml import cluster
from petseg.components.ml.cluster import export_jobset_tf_config, jobset_tf_config, worker_role
from petseg.pipeline import trainjob
from petseg.pipeline.images import code_tag, resolve_image

KUBERNETES_VERSION = "1.37.0"
TRAINJOB_NAME_CEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # trainjob_types.go XValidation, with size <= 63


def _params(**overrides):
    return with_overrides(load_params(REPO_ROOT / "params.yaml"), overrides)


def _manifests(workers: int = 2, **kwargs):
    params = _params(**{"pipeline.train_workers": workers})
    return trainjob.trainjob_manifests(params, "registry/petseg-gpu:1", "shared-work", "team-a", **kwargs)


def _jobset_pod_env(runtime: dict, job: dict, completion_index: int) -> dict[str, str]:
    """The environment of trainer pod `completion_index` of `job`, as Kubernetes resolves the manifests."""
    (rjob,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    jobset, job_index = job["metadata"]["name"], 0  # Trainer: JobSet named after the TrainJob; one `node` Job
    labels = {
        "jobset.sigs.k8s.io/jobset-name": jobset,
        "jobset.sigs.k8s.io/replicatedjob-name": rjob["name"],
        "jobset.sigs.k8s.io/job-index": str(job_index),
    }
    annotations = {"batch.kubernetes.io/job-completion-index": str(completion_index)}
    fields = {f"metadata.labels['{k}']": v for k, v in labels.items()}
    fields |= {f"metadata.annotations['{k}']": v for k, v in annotations.items()}
    (container,) = rjob["template"]["spec"]["template"]["spec"]["containers"]
    env = {"JOB_COMPLETION_INDEX": str(completion_index)}  # Kubernetes sets it in Indexed Job pods too
    for var in container["env"]:
        env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
    env |= {var["name"]: var["value"] for var in job["spec"]["trainer"]["env"]}  # PlainML: the TrainJob's env
    return env


def _pod_fqdn(job: dict, runtime: dict, completion_index: int) -> str:
    """JobSet's DNS name for the pod: `<jobset>-<rjob>-<jobIndex>-<podIndex>.<subdomain>` (subdomain = JobSet name)."""
    jobset = job["metadata"]["name"]
    (rjob,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    return f"{jobset}-{rjob['name']}-0-{completion_index}.{jobset}"


# ------------------------------------------------------------------ TF_CONFIG from the pod
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_each_jobset_pod_builds_the_same_cluster_and_its_own_task(workers):
    _, runtime, job = _manifests(workers)
    port = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
        "containers"
    ][0]["ports"][0]["containerPort"]
    expected = [f"{_pod_fqdn(job, runtime, i)}:{port}" for i in range(workers)]
    roles = []
    for i in range(workers):
        config = json.loads(jobset_tf_config(_jobset_pod_env(runtime, job, i)))
        assert config == {"cluster": {"worker": expected}, "task": {"type": "worker", "index": i}}
        roles.append(worker_role({"TF_CONFIG": json.dumps(config)}))
    assert [r.is_chief for r in roles] == [True] + [False] * (workers - 1)
    assert {r.workers for r in roles} == {workers}
    assert expected[0] == f"petseg-train-node-0-0.petseg-train:{cluster.WORKER_PORT}"


def test_the_completion_index_env_serves_when_the_annotation_is_not_mapped():
    _, runtime, job = _manifests(3)
    env = _jobset_pod_env(runtime, job, 2)
    del env[cluster.NODE_RANK_ENV]
    assert json.loads(jobset_tf_config(env))["task"]["index"] == 2


def test_outside_a_jobset_pod_nothing_is_built_and_a_set_tf_config_is_kept():
    assert jobset_tf_config({}) is None
    assert export_jobset_tf_config({}) is None
    _, runtime, job = _manifests(2)
    env = _jobset_pod_env(runtime, job, 1)
    mine = dict(env, TF_CONFIG='{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}')
    assert export_jobset_tf_config(mine) is None and mine["TF_CONFIG"].startswith('{"cluster": {"worker": ["a:1"]')
    built = export_jobset_tf_config(env)
    assert built is not None and env["TF_CONFIG"] == built


def _broken(**changes):
    _, runtime, job = _manifests(2)
    env = _jobset_pod_env(runtime, job, 1)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({cluster.NUM_NODES_ENV: None}, "PETSEG_NUM_NODES must be a whole number of at least 1"),
        ({cluster.NUM_NODES_ENV: "two"}, "PETSEG_NUM_NODES must be a whole number"),
        ({cluster.NODE_RANK_ENV: "2"}, "PETSEG_NODE_RANK 2 is not one of the 2 node(s)"),
        ({cluster.NODE_RANK_ENV: None, "JOB_COMPLETION_INDEX": None}, "JOB_COMPLETION_INDEX must be a whole number"),
        ({cluster.REPLICATED_JOB_ENV: "Node_1"}, "PETSEG_REPLICATED_JOB must be a DNS label"),
        ({cluster.JOB_INDEX_ENV: "-1"}, "PETSEG_JOB_INDEX must be a whole number of at least 0"),
        ({cluster.ADDRESS_MAP_ENV: "{oops"}, "PETSEG_WORKER_ADDRESS_MAP is not JSON"),
        ({cluster.ADDRESS_MAP_ENV: '{"x:1": "127.0.0.1:2"}'}, "maps no local address for petseg-train-node-0-0"),
    ],
)
def test_a_broken_pod_environment_is_one_line_naming_the_variable(changes, says):
    with pytest.raises(PetsegError) as err:
        jobset_tf_config(_broken(**changes))
    assert says in str(err.value) and "\n" not in str(err.value)


@given(nodes=st.integers(1, 64), data=st.data())
def test_any_node_count_gives_one_chief_and_distinct_addresses(nodes, data):
    rank = data.draw(st.integers(0, nodes - 1))
    env = {
        cluster.JOBSET_NAME_ENV: "job",
        cluster.REPLICATED_JOB_ENV: "node",
        cluster.JOB_INDEX_ENV: "0",
        cluster.NODE_RANK_ENV: str(rank),
        cluster.NUM_NODES_ENV: str(nodes),
    }
    config = json.loads(jobset_tf_config(env))
    assert len(set(config["cluster"]["worker"])) == nodes
    role = worker_role({"TF_CONFIG": json.dumps(config)})
    assert (role.index, role.is_chief, role.workers) == (rank, rank == 0, nodes)


# ------------------------------------------------------------------ the manifests
@pytest.mark.parametrize("cluster_runtime", [False, True])
@pytest.mark.parametrize("workers", [1, 3])
def test_manifests_validate_strictly_against_trainer_v2_3_crds(workers, cluster_runtime):
    config_map, runtime, job = _manifests(workers, cluster_runtime=cluster_runtime)
    kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)
    assert problems(runtime) == [] and problems(job) == []
    assert runtime["kind"] == ("ClusterTrainingRuntime" if cluster_runtime else "TrainingRuntime")
    assert ("namespace" in runtime["metadata"]) is not cluster_runtime
    name = job["metadata"]["name"]
    assert TRAINJOB_NAME_CEL.match(name) and len(name) <= 63


def test_the_runtime_is_plainml_and_the_job_runs_train_on_the_gpu_image():
    params = _params(**{"pipeline.train_workers": 3})
    config_map, runtime, job = _manifests(3)
    policy = runtime["spec"]["mlPolicy"]
    assert not {"torch", "mpi", "jax"} & set(policy)  # PlainML acts only without these (plainml.go)
    (rjob,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert rjob["name"] == "node" and rjob["template"]["metadata"]["labels"] == {
        "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"
    }
    assert [c["name"] for c in rjob["template"]["spec"]["template"]["spec"]["containers"]] == ["node"]
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] == params.pipeline.train_workers == 3
    assert trainer["image"] == "registry/petseg-gpu:1"
    assert trainer["command"][:2] == ["petseg", "train"]
    assert trainer["resourcesPerNode"]["limits"][params.pipeline.accelerator_type] == params.pipeline.accelerator_limit
    assert job["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
        "name": runtime["metadata"]["name"],
    }
    (patch,) = job["spec"]["runtimePatches"]
    pod = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert {"name": "workspace", "persistentVolumeClaim": {"claimName": "shared-work"}} in pod["volumes"]
    assert {"name": "params", "configMap": {"name": config_map["metadata"]["name"]}} in pod["volumes"]
    assert "env" not in pod["containers"][0]  # Trainer's webhook refuses env in a node container patch
    assert params_from_yaml(config_map["data"]["params.yaml"].encode()).train.require_gpu


def test_a_misspelt_field_in_the_trainjob_fails_the_crd_check():
    _, runtime, job = _manifests(2)
    job["spec"]["trainer"]["numNode"] = job["spec"]["trainer"].pop("numNodes")
    runtime["spec"]["mlPolicy"]["plainml"] = {}
    assert problems(job) == ['spec.trainer: unknown field "numNode"']
    assert problems(runtime) == ['spec.mlPolicy: unknown field "plainml"']


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"name": "Petseg_Train"}, "TrainJob name"),
        ({"name": "x" * 53}, "TrainJob name"),
        ({"runtime_name": "9runtime"}, "TrainingRuntime name"),
        ({"pvc": "Work Space"}, "'Work Space' is not a valid Kubernetes name"),
        ({"namespace": "Team-A"}, "--namespace 'Team-A'"),
        ({"records": "/abs"}, "--records"),
        ({"live": "a/../../b"}, "--live"),
    ],
)
def test_bad_names_and_paths_are_refused_in_one_line(kwargs, says):
    args = {"image": "img:1", "pvc": "work", "namespace": "ns", **kwargs}
    with pytest.raises(PetsegError) as err:
        trainjob.trainjob_manifests(_params(), **args)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_cli_writes_the_three_objects(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    out = tmp_path / "trainjob.yaml"
    code = cli.main(
        ["pipeline", "trainjob", "--pvc", "petseg-work", "--param", "pipeline.train_workers=2", "-o", str(out)]
    )
    said = capsys.readouterr().out
    assert code == 0 and f"kubectl apply -f {out}" in said and "TrainingRuntime petseg-tensorflow" in said
    config_map, runtime, job = yaml.safe_load_all(out.read_text())
    assert [config_map["kind"], runtime["kind"], job["kind"]] == ["ConfigMap", "TrainingRuntime", "TrainJob"]
    assert problems(runtime) == [] and problems(job) == []
    params = load_params(REPO_ROOT / "params.yaml")
    assert job["spec"]["trainer"]["image"] == resolve_image(params.pipeline.gpu_image, code_tag())
    assert job["spec"]["trainer"]["numNodes"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["trainjob.yaml"]


def test_cli_refuses_a_bad_namespace_in_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    out = tmp_path / "trainjob.yaml"
    code = cli.main(
        ["pipeline", "trainjob", "--pvc", "w", "--namespace", "Bad_NS", "--cluster-runtime", "-o", str(out)]
    )
    err = capsys.readouterr().err.strip()
    assert code != 0 and "\n" not in err and "--namespace 'Bad_NS' is not a valid Kubernetes name" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ two JobSet pods, end to end (slow)
@pytest.mark.slow
def test_two_processes_given_only_a_jobset_pod_environment_train_and_export(worker_run):  # noqa: F811
    """Two `petseg train` processes with the environment Kubernetes gives the TrainJob's pods, and no TF_CONFIG.

    The pods' DNS names do not resolve here, so PETSEG_WORKER_ADDRESS_MAP points each at a local port. Its
    keys are the names JobSet gives the pods (_pod_fqdn); a builder that made other names would find no
    mapping and stop, so the run also checks the names.
    """
    root, _, env = worker_run
    _, runtime, job = _manifests(2)
    ports = cluster.free_ports(2)
    address_map = {f"{_pod_fqdn(job, runtime, i)}:{cluster.WORKER_PORT}": f"127.0.0.1:{ports[i]}" for i in range(2)}
    command = [sys.executable, "-m", "petseg", "train", "--records", "records", "--out", "models", "--live", "dvclive"]
    processes = []
    for i in range(2):
        pod_env = {**env, **_jobset_pod_env(runtime, job, i), cluster.ADDRESS_MAP_ENV: json.dumps(address_map)}
        assert "TF_CONFIG" not in pod_env
        processes.append(
            subprocess.Popen(command, cwd=root, env=pod_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    try:
        outputs = [p.communicate(timeout=540) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    for i, (_, err) in enumerate(outputs):
        built = json.loads(err.split("train: TF_CONFIG from this JobSet pod: ", 1)[1].splitlines()[0])
        assert built == {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": i},
        }
    assert "MultiWorkerMirroredStrategy): worker 0 of 2 (chief)" in outputs[0][1]
    assert "unet 2 epochs; best epoch" in outputs[0][0]  # the chief's result line
    _assert_serves_the_contract(root / "models/savedmodel")
    assert list((root / "tmp").iterdir()) == []  # the non-chief deleted its scratch folder
    assert not os.environ.get("TF_CONFIG")
