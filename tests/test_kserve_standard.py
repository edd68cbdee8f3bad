"""components/deploy.py in KServe's Standard mode (spec.canary, KServe >= 0.20), as the requests it sends.

Like tests/test_kserve.py: the real kubernetes client over a recording transport,
answered from a script. Each body sent is also checked against the rules KServe's
admission webhook applies (kserve/kserve v0.20.0
pkg/apis/serving/v1beta1/inference_service_validation.go, validateCanarySpecs,
validateDeploymentMode, validatePredictorNameChange), replayed on the object the
API server would hold after the request (tests/test_crds.py checks the same objects
against the CRD's schema).
"""

from __future__ import annotations

import json
import re

import pytest
from crd_schema import load_crd, merge_patch
from helpers import REPO_ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kserve import ISVC_PATH, MERGE_PATCH, NAME, NOT_FOUND, NS, Clock, _api

from petseg.cli import main
from petseg.components import deploy as kserve
from petseg.components.contracts.serving_runtime import TF_SERVING_VERSION
from petseg.components.core.errors import ParamsError
from petseg.components.core.params import load_params, with_overrides
from petseg.components.deploy import KServeError, deploy, inference_service, rollback_traffic

PARAMS = with_overrides(
    load_params(REPO_ROOT / "params.yaml"),
    {"push.model_base_path": "gs://bucket/serving", "pipeline.kserve.mode": "standard"},
)
SETTINGS = PARAMS.pipeline.kserve
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/inferenceservices.serving.kserve.io"
COLLECTION_PATH = ISVC_PATH.rsplit("/", 1)[0]
CRD_V020 = load_crd("serving.kserve.io_inferenceservices.yaml")
CRD_V019 = load_crd("serving.kserve.io_inferenceservices.v0.19.0.yaml")
STABLE, PREDICTOR_NAME = f"{NAME}-predictor", re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _body(version: int | None, params=PARAMS) -> dict:
    return inference_service(params.push, params.serve, params.pipeline, version)


def _isvc(
    version: int,
    generation: int,
    observed: int,
    ready: bool = True,
    canary: int | None = None,
    canary_ready: bool = False,
    message: str = "",
    mode: str = "Standard",
) -> dict:
    """The InferenceService as KServe reports it in Standard mode: stable at `version`, maybe a canary."""
    body = _body(version)
    body["metadata"]["generation"] = generation
    if canary is not None:
        body["spec"].update(
            kserve.standard_canary_patch(_body(canary), canary, SETTINGS.canary_traffic_percent)["spec"]
        )
    body["status"] = {
        "observedGeneration": observed,
        "deploymentMode": mode,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False", "message": message}],
    }
    if canary is not None:
        body["status"]["canaryStatuses"] = [
            {"name": f"v{canary}", "ready": canary_ready, "trafficPercent": SETTINGS.canary_traffic_percent}
        ]
    return body


def _deploy(api, version=7, **overrides):
    clock = Clock()
    params = with_overrides(PARAMS, {f"pipeline.kserve.{k}": v for k, v in overrides.items()})
    return deploy(
        api, _body(version, params), params.pipeline.kserve, version, sleep=clock.sleep, clock=clock, log=lambda _: None
    )


# ------------------------------------------------- KServe's admission rules, replayed
def webhook_problems(old: dict | None, new: dict) -> list[str]:
    """What KServe v0.20.0's validating webhook would refuse in `new` (an update of `old`, or a create)."""
    found = []
    mode = new["metadata"].get("annotations", {}).get(kserve.DEPLOYMENT_MODE_ANNOTATION)
    if old is not None and (old.get("status") or {}).get("deploymentMode"):
        was = kserve.LEGACY_MODE_NAMES.get(old["status"]["deploymentMode"], old["status"]["deploymentMode"])
        if mode is not None and mode != was:
            found.append(f"update rejected: deploymentMode cannot be changed from '{was}' to '{mode}'")
    stable = new["spec"]["predictor"]
    renamed = old is not None and old["spec"]["predictor"].get("name") != stable.get("name")
    if renamed and old["spec"]["predictor"]["model"]["storageUri"] == stable["model"]["storageUri"]:
        found.append("predictor.name change requires a model change (e.g. storageUri)")
    canaries = new["spec"].get("canary") or []
    if not canaries:
        return found
    if mode != "Standard":
        return [*found, "canary is only supported in Standard deployment mode"]
    if not stable.get("model", {}).get("storageUri"):
        found.append("canary requires a stable predictor with a model")
    names = set()
    for i, canary in enumerate(canaries):
        predictor, name = canary["predictor"], canary["predictor"].get("name")
        if not name:
            found.append(f"canary[{i}] predictor.name is required")
            continue
        if name in names or name == stable.get("name") or not PREDICTOR_NAME.match(name):
            found.append(f"canary predictor.name {name!r} is duplicated, the stable one's, or not a DNS label")
        names.add(name)
        if not 0 <= canary["trafficPercent"] <= 100:
            found.append(f"canary {name!r} trafficPercent must be between 0 and 100")
        if "model" not in predictor:
            found.append(f"canary {name!r} predictor: exactly one implementation")
        for field in ("workerSpec", "maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
            if field in predictor:
                found.append(f"canary {name!r} must not set {field}")
        if predictor.get("minReplicas", 0) > stable.get("minReplicas", 1):
            found.append(f"canary {name!r} minReplicas must not exceed stable predictor minReplicas")
    if sum(c["trafficPercent"] for c in canaries) > 100:
        found.append("sum of canary trafficPercent values must be <= 100")
    return found


def _replay_writes(wire, start: dict | None) -> list[dict]:
    """The objects the API server holds after each POST and merge PATCH sent; each passes KServe's webhook."""
    held, objects = start, []
    for sent in wire.sent:
        if sent.method == "POST":
            new = sent.body
        elif sent.method == "PATCH":
            assert sent.content_type == MERGE_PATCH
            new = merge_patch(held, sent.body)
        else:
            continue
        assert webhook_problems(held, new) == [], (sent.method, sent.body)
        held = {**new, "status": (held or {}).get("status", {"deploymentMode": "Standard"})}
        objects.append(new)
    return objects


# ------------------------------------------------------------------- the body
def test_standard_body_names_the_mode_and_the_tf_serving_release():
    body = _body(7)
    assert body["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "Standard"}
    assert body["spec"]["predictor"]["model"]["runtimeVersion"] == TF_SERVING_VERSION
    assert "canary" not in body["spec"] and "canaryTrafficPercent" not in body["spec"]["predictor"]
    knative = with_overrides(PARAMS, {"pipeline.kserve.mode": "knative"})
    assert _body(7, knative)["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "Knative"}


def test_no_deprecated_mode_name_is_written_anywhere():
    shipped = (REPO_ROOT / "serving/deploy/kserve/inferenceservice.yaml").read_text()
    bodies = json.dumps([_body(1), _body(1, with_overrides(PARAMS, {"pipeline.kserve.mode": "knative"}))])
    for text in (shipped, bodies):
        assert "Serverless" not in text and "RawDeployment" not in text


def test_standard_mode_refuses_scale_to_zero_in_params():
    with pytest.raises(ParamsError, match=r"min_replicas must be at least 1 with pipeline.kserve.mode: standard"):
        with_overrides(PARAMS, {"pipeline.kserve.min_replicas": 0})


# ------------------------------------------------- create, canary, promote, timeout
def test_first_deploy_checks_the_crd_then_creates_and_waits_for_ready():
    api, wire = _api(
        [
            (200, CRD_V020),
            (404, NOT_FOUND),
            (201, _isvc(7, 1, 0, False)),
            (200, _isvc(7, 1, 1, False)),
            (200, _isvc(7, 1, 1)),
        ]
    )
    result = _deploy(api)
    assert [(s.method, s.path) for s in wire.sent] == [
        ("GET", CRD_PATH),
        ("GET", ISVC_PATH),
        ("POST", COLLECTION_PATH),
        ("GET", ISVC_PATH),
        ("GET", ISVC_PATH),
    ]
    assert wire.sent[2].body == _body(7)
    assert (result.status, result.revision) == ("created", STABLE)
    _replay_writes(wire, None)


def test_new_version_runs_as_a_named_canary_then_becomes_the_stable_predictor():
    api, wire = _api(
        [
            (200, CRD_V020),
            (200, _isvc(6, 3, 3)),
            (200, _isvc(6, 4, 3, canary=7)),  # the canary patch's answer
            (200, _isvc(6, 4, 4, canary=7, canary_ready=False)),
            (200, _isvc(6, 4, 4, canary=7, canary_ready=True)),
            (200, _isvc(7, 5, 4)),  # the promotion's answer
        ]
    )
    result = _deploy(api)
    assert [(s.method, s.path, s.content_type) for s in wire.sent] == [
        ("GET", CRD_PATH, None),
        ("GET", ISVC_PATH, None),
        ("PATCH", ISVC_PATH, MERGE_PATCH),
        ("GET", ISVC_PATH, None),
        ("GET", ISVC_PATH, None),
        ("PATCH", ISVC_PATH, MERGE_PATCH),
    ]
    model = {**_body(7)["spec"]["predictor"]["model"], "name": "kserve-container"}  # the CRD requires it here
    assert wire.sent[2].body == {
        "spec": {
            "canary": [
                {
                    "predictor": {"name": "v7", "annotations": {kserve.VERSION_ANNOTATION: "7"}, "model": model},
                    "trafficPercent": SETTINGS.canary_traffic_percent,
                }
            ]
        }
    }
    assert wire.sent[5].body == {"spec": {"predictor": _body(7)["spec"]["predictor"], "canary": None}}
    assert (result.status, result.revision, result.previous_revision) == ("promoted", STABLE, f"{NAME}-v7-predictor")
    canary_object, promoted = _replay_writes(wire, _isvc(6, 3, 3))
    assert [c["predictor"]["name"] for c in canary_object["spec"]["canary"]] == ["v7"]
    assert "canary" not in promoted["spec"] and kserve.deployed_version(promoted) == 7
    assert promoted["spec"]["predictor"].get("name") is None  # the stable predictor keeps its name (and Deployment)


def test_canary_not_ready_in_time_is_removed_and_the_step_fails_in_one_line():
    waiting = _isvc(6, 4, 4, canary=7, canary_ready=False, message="0/1 replicas available")
    polls = int(SETTINGS.ready_timeout_seconds / SETTINGS.poll_seconds) + 1
    api, wire = _api(
        [(200, CRD_V020), (200, _isvc(6, 3, 3)), (200, waiting)] + [(200, waiting)] * polls + [(200, _isvc(6, 5, 4))]
    )
    with pytest.raises(KServeError) as error:
        _deploy(api)
    message = str(error.value)
    assert "\n" not in message
    assert f"canary {NAME}-v7-predictor" in message and "600s" in message
    assert f"removed the canary, {STABLE} still serves version 6" in message
    assert wire.sent[-1].method == "PATCH" and wire.sent[-1].body == {"spec": {"canary": None}}
    assert [s.method for s in wire.sent].count("PATCH") == 2  # the canary and its removal; never a promotion
    _, removed = _replay_writes(wire, _isvc(6, 3, 3))
    assert "canary" not in removed["spec"] and kserve.deployed_version(removed) == 6


def test_the_version_already_stable_sends_only_reads():
    api, wire = _api([(200, CRD_V020), (200, _isvc(7, 4, 4))])
    assert _deploy(api).status == "unchanged"
    assert [s.method for s in wire.sent] == ["GET", "GET"]


# ------------------------------------------------- what the cluster cannot do
def test_a_kserve_without_spec_canary_is_refused_before_any_write():
    api, wire = _api([(200, CRD_V019)])
    with pytest.raises(KServeError) as error:
        _deploy(api)
    message = str(error.value)
    assert "\n" not in message
    assert "older than v0.20.0" in message and "a v1beta1 spec without canary" in message
    assert "upgrade KServe, or set pipeline.kserve.mode: knative" in message
    assert [(s.method, s.path) for s in wire.sent] == [("GET", CRD_PATH)]


@pytest.mark.parametrize(
    ("status", "payload", "says"),
    [
        (
            403,
            {"kind": "Status", "reason": "Forbidden", "code": 403},
            "needs the ClusterRole in serving/deploy/kserve/rbac.yaml",
        ),
        (404, {"kind": "Status", "reason": "NotFound", "code": 404}, "KServe is not installed"),
    ],
)
def test_an_unreadable_crd_names_the_fix(status, payload, says):
    api, wire = _api([(status, payload)])
    with pytest.raises(KServeError, match=re.escape(says)):
        _deploy(api)
    assert len(wire.sent) == 1


@pytest.mark.parametrize("reported", ["Knative", "Serverless"])
def test_an_existing_knative_service_is_not_switched_to_standard(reported):
    api, wire = _api([(200, CRD_V020), (200, _isvc(6, 3, 3, mode=reported))])
    with pytest.raises(KServeError) as error:
        _deploy(api)
    assert str(error.value) == (
        f"InferenceService {NS}/{NAME} runs in Knative mode but pipeline.kserve.mode is standard, and KServe "
        "refuses to change an InferenceService's mode; set pipeline.kserve.mode: knative, or delete the "
        "InferenceService to recreate it in Standard mode"
    )
    assert [s.method for s in wire.sent] == ["GET", "GET"]


def test_a_kserve_that_ran_the_new_service_in_another_mode_stops_the_wait():
    api, wire = _api(
        [(200, CRD_V020), (404, NOT_FOUND), (201, _isvc(7, 1, 0, False)), (200, _isvc(7, 1, 1, False, mode="Knative"))]
    )
    with pytest.raises(KServeError, match=r"in Knative mode, not Standard as its serving.kserve.io/deploymentMode"):
        _deploy(api)
    assert [s.method for s in wire.sent] == ["GET", "GET", "POST", "GET"]


# ----------------------------------------------------------------- rollback
def test_rollback_removes_the_canary():
    api, wire = _api([(200, _isvc(6, 4, 4, canary=7, canary_ready=True)), (200, _isvc(6, 5, 4))])
    result = rollback_traffic(api, NS, NAME, "standard")
    assert [(s.method, s.content_type, s.body) for s in wire.sent] == [
        ("GET", None, None),
        ("PATCH", MERGE_PATCH, {"spec": {"canary": None}}),
    ]
    assert (result.to_revision, result.from_revision, result.how) == (
        STABLE,
        f"{NAME}-v7-predictor",
        "the canary is removed",
    )


def test_rollback_after_a_promotion_says_kserve_kept_nothing_and_sends_no_patch():
    api, wire = _api([(200, _isvc(7, 5, 5))])
    with pytest.raises(KServeError, match="has no canary to remove, and KServe keeps no earlier Deployment"):
        rollback_traffic(api, NS, NAME, "standard")
    assert [s.method for s in wire.sent] == ["GET"]


def test_cli_rollback_uses_the_mode_from_params(tmp_path, monkeypatch, capsys):
    raw = (REPO_ROOT / "params.yaml").read_text().replace("    mode: knative\n", "    mode: standard\n")
    (tmp_path / "params.yaml").write_text(raw)
    api, wire = _api([(200, _isvc(6, 4, 4, canary=7)), (200, _isvc(6, 5, 4))])
    monkeypatch.setattr(kserve, "custom_objects_api", lambda: api)
    assert main(["rollback", "--target", "kserve", "--params", str(tmp_path / "params.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"sends all traffic to revision {STABLE} (was {NAME}-v7-predictor); the canary is removed" in out
    assert wire.sent[-1].body == {"spec": {"canary": None}}


# ------------------------------------------------------------ property-based
@settings(max_examples=40, deadline=None)
@given(old=st.integers(1, 10**6), step=st.integers(1, 1000), percent=st.integers(1, 100))
def test_every_standard_rollout_passes_kserve_admission(old, step, percent):
    new = old + step
    start = _isvc(old, 3, 3)
    canary = merge_patch(start, kserve.standard_canary_patch(_body(new), new, percent))
    assert webhook_problems(start, canary) == []
    assert canary["spec"]["canary"][0]["predictor"]["name"] == f"v{new}"
    promoted = merge_patch(canary, kserve.standard_promote_patch(_body(new)))
    assert webhook_problems(canary, promoted) == [] and kserve.deployed_version(promoted) == new
    assert "canary" not in merge_patch(canary, kserve.remove_canary_patch())["spec"]
