"""serving/deploy/kserve: the InferenceService manifests agree with params.yaml, the Kubernetes API, checkov,
and the compiled pipeline deploys after push under the blessing.

No cluster here: nothing below applies anything. The InferenceService is checked
against KServe v0.20.0's CRD in tests/test_crds.py; the core kinds here against the
Kubernetes API schemas (kubernetes-validate, strict).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT
from test_kserve import _api, _deploy, _isvc

from petseg.cli import main
from petseg.components import deploy as kserve
from petseg.components.core.errors import ParamsError
from petseg.components.core.params import load_params, with_overrides
from petseg.pipeline.pipeline import compile_pipeline

KSERVE_DIR = REPO_ROOT / "serving" / "deploy" / "kserve"
KUBERNETES_VERSION = "1.37.0"
PARAMS = load_params(REPO_ROOT / "params.yaml")
# The manifest reads push's model folder from the claim serving/deploy/k8s declares (push writes at its root).
K8S_CLAIM = yaml.safe_load((REPO_ROOT / "serving" / "deploy" / "k8s" / "pvc.yaml").read_text())["metadata"]["name"]
MANIFEST_PARAMS = with_overrides(
    PARAMS, {"pipeline.serving_pvc": K8S_CLAIM, "push.model_base_path": PARAMS.pipeline.serving_mount_path}
)
HTTP_VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    """The objects kustomization.yaml lists, by kind (one of each)."""
    kustomization = yaml.safe_load((KSERVE_DIR / "kustomization.yaml").read_text())
    found = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((KSERVE_DIR / resource).read_text()):
            assert doc["kind"] not in found, f"two {doc['kind']} objects"
            found[doc["kind"]] = doc
    return found


# ------------------------------------------------------------ params agreement
def test_kustomization_lists_every_manifest_in_the_folder(objects):
    listed = set(yaml.safe_load((KSERVE_DIR / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in KSERVE_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(objects) == {
        "InferenceService",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
    }
    namespaced = [o for kind, o in objects.items() if not kind.startswith("Cluster")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {PARAMS.pipeline.kserve.namespace}


def test_inference_service_is_what_the_deploy_step_builds_from_params_yaml(objects):
    built = kserve.inference_service(MANIFEST_PARAMS.push, MANIFEST_PARAMS.serve, MANIFEST_PARAMS.pipeline)
    assert objects["InferenceService"] == built
    assert built["spec"]["predictor"]["model"]["storageUri"] == f"pvc://{K8S_CLAIM}/{PARAMS.push.model_name}"


def test_predictor_account_is_the_shipped_service_account(objects):
    account = objects["ServiceAccount"]
    assert account["metadata"]["name"] == PARAMS.pipeline.kserve.service_account
    assert objects["InferenceService"]["spec"]["predictor"]["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False


def _verbs_sent(wire) -> set[tuple[str, str, str]]:
    """(API group, verb, resource or name) for every request recorded."""
    used = set()
    for sent in wire.sent:
        group = sent.path.split("/")[2]
        used.add((group, HTTP_VERBS[sent.method], sent.path.rsplit("/", 1)[-1]))
    return used


def test_roles_grant_exactly_the_verbs_the_deploy_step_and_rollback_use(objects):
    """Verbs from the requests a create, a rollout with promotion and a rollback send, in both modes."""
    from test_kserve_standard import CRD_V020
    from test_kserve_standard import _deploy as _deploy_standard
    from test_kserve_standard import _isvc as _std

    knative_first = [
        (404, {"kind": "Status", "reason": "NotFound", "code": 404}),
        (201, _isvc(1, 1, 0, False, None)),
        (200, _isvc(1, 1, 1, True, "rev-1")),
    ]
    knative_promote = [
        (200, _isvc(1, 1, 1, True, "rev-1", rolled_out="rev-1")),
        (200, _isvc(2, 2, 1, True, "rev-1")),
        (200, _isvc(2, 2, 2, True, "rev-2")),
        (200, _isvc(2, 3, 2, True, "rev-2")),
    ]
    standard_first = [
        (200, CRD_V020),
        (404, {"kind": "Status", "reason": "NotFound", "code": 404}),
        (201, _std(1, 1, 0, False)),
        (200, _std(1, 1, 1)),
    ]
    standard_promote = [
        (200, CRD_V020),
        (200, _std(1, 1, 1)),
        (200, _std(1, 2, 1, canary=2)),
        (200, _std(1, 2, 2, canary=2, canary_ready=True)),
        (200, _std(2, 3, 2)),
    ]
    used = set()
    for deploy_fn, version, answers in (
        (_deploy, 1, knative_first),
        (_deploy, 2, knative_promote),
        (_deploy_standard, 1, standard_first),
        (_deploy_standard, 2, standard_promote),
    ):
        api, wire = _api(answers)
        deploy_fn(api, version)
        used |= _verbs_sent(wire)
    promoted = _isvc(2, 3, 3, True, "rev-2", rolled_out="rev-2", previous="rev-1")
    for mode, answers in (("knative", [promoted, promoted]), ("standard", [_std(1, 2, 2, canary=2), _std(1, 3, 2)])):
        api, wire = _api([(200, a) for a in answers])
        kserve.rollback_traffic(api, PARAMS.pipeline.kserve.namespace, PARAMS.push.model_name, mode)
        used |= _verbs_sent(wire)
    name = PARAMS.push.model_name
    assert used == {
        ("serving.kserve.io", "get", name),
        ("serving.kserve.io", "create", "inferenceservices"),
        ("serving.kserve.io", "patch", name),
        ("apiextensions.k8s.io", "get", kserve.CRD_NAME),
    }

    granted = set()
    for kind in ("Role", "ClusterRole"):
        for rule in objects[kind]["rules"]:
            (group,) = rule["apiGroups"]
            (resource,) = rule["resources"]
            for verb in rule["verbs"]:
                for target in rule.get("resourceNames", [resource]):
                    granted.add((group, verb, target))
    # create cannot be limited by name (the object has none when RBAC decides); the rest names the one object.
    assert granted == used
    assert objects["ClusterRole"]["rules"][0]["resources"] == ["customresourcedefinitions"]


def test_cluster_role_binding_binds_the_crd_read_to_the_pipeline_runner(objects):
    binding = objects["ClusterRoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": objects["ClusterRole"]["metadata"]["name"],
    }
    assert binding["subjects"] == objects["RoleBinding"]["subjects"]


def test_core_objects_are_valid_kubernetes_objects_strictly(objects):
    import kubernetes_validate

    for kind, obj in objects.items():
        if kind != "InferenceService":
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_role_binding_binds_the_role_to_the_pipeline_runner(objects):
    binding = objects["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": objects["Role"]["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": PARAMS.pipeline.kserve.runner_service_account,
            "namespace": PARAMS.pipeline.kserve.namespace,
        }
    ]


# ------------------------------------------------------------------- checkov
def _checkov() -> str | None:
    for candidate in (
        os.environ.get("CHECKOV"),
        str(REPO_ROOT / ".venv-checkov" / "bin" / "checkov"),
        shutil.which("checkov"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.mark.skipif(_checkov() is None, reason="checkov not installed (CHECKOV=path, .venv-checkov or PATH)")
def test_checkov_passes_the_kserve_manifests():
    result = subprocess.run(
        [
            _checkov(),
            "-d",
            str(KSERVE_DIR),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert result.returncode == 0 and summary["failed"] == 0, result.stdout[-2000:]
    assert summary["passed"] > 0


# ------------------------------------------------------------------- pipeline
def _tasks_in_blessed_condition(spec: dict) -> tuple[dict, dict]:
    [condition] = [t for n, t in spec["root"]["dag"]["tasks"].items() if n.startswith("condition")]
    return condition, spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]


def test_compiled_pipeline_deploys_after_push_under_the_blessing(tmp_path):
    params = with_overrides(PARAMS, {"pipeline.deploy": "kserve", "push.model_base_path": "gs://bucket/models"})
    spec, *_ = yaml.safe_load_all(compile_pipeline(params, tmp_path / "p.yaml").read_text())
    condition, inner = _tasks_in_blessed_condition(spec)
    assert condition["taskInfo"]["name"] == "blessed"
    assert (
        condition["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    )
    assert set(inner) == {"push", "deploy-kserve"}
    deploy = inner["deploy-kserve"]
    assert deploy["dependentTasks"] == ["push"]
    assert deploy["inputs"]["parameters"]["push_result"]["taskOutputParameter"] == {
        "producerTask": "push",
        "outputParameterKey": "Output",
    }
    assert deploy["taskInfo"]["name"] == "deploy"
    assert not deploy["cachingOptions"].get("enableCache")
    settings = deploy["inputs"]["parameters"]["pipeline"]["runtimeValue"]["constant"]
    assert settings["kserve"]["canary_traffic_percent"] == PARAMS.pipeline.kserve.canary_traffic_percent
    container = spec["deploymentSpec"]["executors"]["exec-deploy-kserve"]["container"]
    wanted = PARAMS.pipeline.resources.deploy
    assert (container["resources"]["resourceCpuLimit"], container["resources"]["resourceMemoryLimit"]) == (
        wanted.cpu_limit,
        wanted.memory_limit,
    )
    from petseg.pipeline.images import code_tag, resolve_image

    assert container["image"] == resolve_image(PARAMS.pipeline.image, code_tag())  # the components' image


def test_compiled_pipeline_without_deploy_has_no_deploy_task(tmp_path):
    params = with_overrides(PARAMS, {"push.model_base_path": "gs://bucket/models"})
    spec, *_ = yaml.safe_load_all(compile_pipeline(params, tmp_path / "p.yaml").read_text())
    assert set(_tasks_in_blessed_condition(spec)[1]) == {"push"}
    assert "exec-deploy-kserve" not in spec["deploymentSpec"]["executors"]


def test_compile_cli_with_deploy_kserve(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    code = main(
        [
            "pipeline",
            "compile",
            "-o",
            str(out),
            "--params",
            str(REPO_ROOT / "params.yaml"),
            "--param",
            "pipeline.deploy=kserve",
            "--param",
            "pipeline.serving_pvc=petseg-models",
            "--param",
            "push.model_base_path=/serving/models",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "deploy-kserve" in out.read_text()


def test_compile_refuses_kserve_with_a_model_path_the_cluster_cannot_read(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    code = main(
        [
            "pipeline",
            "compile",
            "-o",
            str(out),
            "--params",
            str(REPO_ROOT / "params.yaml"),
            "--param",
            "pipeline.deploy=kserve",
        ]
    )
    err = capsys.readouterr().err
    assert code == ParamsError.exit_code and not out.exists()
    assert err.count("\n") == 1 and "pipeline.deploy: kserve needs push.model_base_path" in err


def test_deploy_component_skips_a_declined_push(capsys):
    from petseg.components.core.params import params_to_dict
    from petseg.pipeline.components import deploy_kserve

    outcome = json.loads(
        deploy_kserve(
            json.dumps({"status": "declined", "reason": "not blessed", "version": None}),
            params_to_dict(PARAMS.push),
            params_to_dict(PARAMS.serve),
            params_to_dict(PARAMS.pipeline),
        )
    )
    assert outcome == {"status": "skipped", "reason": "not blessed"}
    assert "nothing to roll out" in capsys.readouterr().out


def _as_struct(value):
    """A dict as a KFP dict parameter arrives in the pod: through a protobuf Struct, every number a float."""
    if isinstance(value, dict):
        return {k: _as_struct(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_struct(v) for v in value]
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def test_deploy_component_creates_the_service_from_its_parameters(monkeypatch, capsys):
    from petseg.components.core.params import params_to_dict
    from petseg.pipeline.components import deploy_kserve

    params = with_overrides(
        PARAMS,
        {
            "pipeline.deploy": "kserve",
            "push.model_base_path": "s3://bucket/models",
            "pipeline.kserve.ready_timeout_seconds": 1,
            "pipeline.kserve.poll_seconds": 0.1,
        },
    )
    api, wire = _api(
        [
            (404, {"kind": "Status", "reason": "NotFound", "code": 404}),
            (201, _isvc(3, 1, 0, False, None)),
            (200, _isvc(3, 1, 1, True, "petseg-predictor-00001")),
        ]
    )
    monkeypatch.setattr(kserve, "custom_objects_api", lambda: api)
    pushed = {"status": "pushed", "reason": "blessed", "version": 3, "path": "s3://bucket/models/petseg/3"}
    outcome = json.loads(
        deploy_kserve(
            json.dumps(pushed),
            _as_struct(params_to_dict(params.push)),
            _as_struct(params_to_dict(params.serve)),
            _as_struct(params_to_dict(params.pipeline)),
        )
    )
    assert outcome["status"] == "created" and outcome["version"] == 3
    assert outcome["revision"] == "petseg-predictor-00001"
    (post,) = [s for s in wire.sent if s.method == "POST"]
    assert post.body == kserve.inference_service(params.push, params.serve, params.pipeline, 3)
    assert post.body["spec"]["predictor"]["model"]["storageUri"] == "s3://bucket/models/petseg"
    assert "deploy: created" in capsys.readouterr().out
