"""serving/deploy/kserve: the InferenceService manifests agree with params.yaml, KServe's own models, checkov,
and the compiled pipeline deploys after push under the blessing.

No cluster here: nothing below applies anything. The schema check runs the
kserve SDK's generated models in .venv-kserve (scripts/setup-kserve-check.sh),
because every kserve release pins pandas<3 and the project's venv has pandas 3.
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
KSERVE_PYTHON = REPO_ROOT / ".venv-kserve" / "bin" / "python"
SCHEMA_CHECK = REPO_ROOT / "tests" / "kserve_schema.py"
PARAMS = load_params(REPO_ROOT / "params.yaml")
# The manifest reads push's model folder from the claim serving/deploy/k8s declares (push writes at its root).
K8S_CLAIM = yaml.safe_load((REPO_ROOT / "serving" / "deploy" / "k8s" / "pvc.yaml").read_text())["metadata"]["name"]
MANIFEST_PARAMS = with_overrides(
    PARAMS, {"pipeline.serving_pvc": K8S_CLAIM, "push.model_base_path": PARAMS.pipeline.serving_mount_path}
)
HTTP_VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    """The objects kustomization.yaml lists, by kind."""
    kustomization = yaml.safe_load((KSERVE_DIR / "kustomization.yaml").read_text())
    found = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((KSERVE_DIR / resource).read_text()):
            assert doc["kind"] not in found, f"two {doc['kind']} objects"
            found[doc["kind"]] = doc
    return found


def _schema_check(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    if not KSERVE_PYTHON.exists():
        pytest.fail(f"{KSERVE_PYTHON} is missing: run `bash scripts/setup-kserve-check.sh` (setup.sh does)")
    return subprocess.run(
        [str(KSERVE_PYTHON), str(SCHEMA_CHECK), *args], input=stdin, capture_output=True, text=True, timeout=120
    )


# ------------------------------------------------------------ params agreement
def test_kustomization_lists_every_manifest_in_the_folder(objects):
    listed = set(yaml.safe_load((KSERVE_DIR / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in KSERVE_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(objects) == {"InferenceService", "ServiceAccount", "Role", "RoleBinding"}
    assert {o["metadata"]["namespace"] for o in objects.values()} == {PARAMS.pipeline.kserve.namespace}


def test_inference_service_is_what_the_deploy_step_builds_from_params_yaml(objects):
    built = kserve.inference_service(MANIFEST_PARAMS.push, MANIFEST_PARAMS.serve, MANIFEST_PARAMS.pipeline)
    assert objects["InferenceService"] == built
    assert built["spec"]["predictor"]["model"]["storageUri"] == f"pvc://{K8S_CLAIM}/{PARAMS.push.model_name}"


def test_predictor_account_is_the_shipped_service_account(objects):
    account = objects["ServiceAccount"]
    assert account["metadata"]["name"] == PARAMS.pipeline.kserve.service_account
    assert objects["InferenceService"]["spec"]["predictor"]["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False


def test_role_grants_exactly_the_verbs_the_deploy_step_and_rollback_use(objects):
    """Verbs from the requests a create, a canary rollout with rollback, and a promotion send."""
    first = [
        (404, {"kind": "Status", "reason": "NotFound", "code": 404}),
        (201, _isvc(1, 1, 0, False, None)),
        (200, _isvc(1, 1, 1, True, "rev-1")),
    ]
    promote = [
        (200, _isvc(1, 1, 1, True, "rev-1", rolled_out="rev-1")),
        (200, _isvc(2, 2, 1, True, "rev-1")),
        (200, _isvc(2, 2, 2, True, "rev-2")),
        (200, _isvc(2, 3, 2, True, "rev-2")),
    ]
    used = set()
    for version, answers in ((1, first), (2, promote)):
        api, wire = _api(answers)
        _deploy(api, version)
        used |= {(HTTP_VERBS[s.method], s.path.rsplit("/", 1)[-1]) for s in wire.sent}
    name = PARAMS.push.model_name
    assert used == {("get", name), ("create", "inferenceservices"), ("patch", name)}

    rules = objects["Role"]["rules"]
    for rule in rules:
        assert rule["apiGroups"] == ["serving.kserve.io"] and rule["resources"] == ["inferenceservices"]
    granted = {(verb, tuple(rule.get("resourceNames", ["*"]))) for rule in rules for verb in rule["verbs"]}
    # create cannot be limited by name (the object has none when RBAC decides); the rest is the one service.
    assert granted == {("get", (name,)), ("patch", (name,)), ("create", ("*",))}


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


# ------------------------------------------------------- KServe's own models
def test_manifests_parse_as_the_kserve_sdk_models():
    result = _schema_check(*sorted(str(p) for p in KSERVE_DIR.glob("*.yaml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(result.stdout.split("\n")[:-1]) == [
        "ok InferenceService petseg",
        "ok Role petseg-kserve-deployer",
        "ok RoleBinding petseg-kserve-deployer",
        "ok ServiceAccount petseg-kserve",
    ]


def test_every_body_the_deploy_step_sends_parses_as_v1beta1_inference_service():
    params = with_overrides(PARAMS, {"push.model_base_path": "s3://bucket/models"})
    bodies = []
    for protocol in ("grpc", "rest"):
        p = with_overrides(params, {"pipeline.kserve.protocol": protocol})
        body = kserve.inference_service(p.push, p.serve, p.pipeline, 12)
        bodies += [
            body,
            kserve.with_canary(body, 10),
            {**kserve.canary_patch(0), **{k: body[k] for k in ("apiVersion", "kind", "metadata")}},
        ]
    result = _schema_check("-", stdin="\n".join(json.dumps(b) for b in bodies))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok InferenceService petseg") == len(bodies)


MUTATIONS = [  # (what is wrong, what the check must say); each is a mistake the API server would refuse
    (lambda m: m["spec"]["predictor"]["model"].__setitem__("storageURI", "gs://x"), "model.storageURI: not a field"),
    (lambda m: m["spec"]["predictor"].__setitem__("canaryTrafficPercent", "10"), "expected int"),
    (lambda m: m["spec"]["predictor"]["model"]["ports"][0].__setitem__("port", 9000), "not a field of V1ContainerPort"),
    (lambda m: m["spec"]["predictor"]["model"]["ports"][0].pop("containerPort"), "containerPort"),
]


def test_schema_check_rejects_what_kserve_would_not_accept():
    """One document per mistake, checked in one run (importing the SDK takes seconds)."""
    documents = []
    for mutate, _ in MUTATIONS:
        manifest = kserve.inference_service(MANIFEST_PARAMS.push, MANIFEST_PARAMS.serve, MANIFEST_PARAMS.pipeline)
        mutate(manifest)
        documents.append(json.dumps(manifest))
    result = _schema_check("-", stdin="\n".join(documents))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == len(MUTATIONS)
    for line, (_, complaint) in zip(lines, MUTATIONS, strict=True):
        assert line.startswith("stdin: InferenceService.spec.predictor") and complaint in line, line


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
