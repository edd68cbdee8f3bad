"""components/deploy.py: the InferenceService body, and canary, promote and rollback as the requests they send.

No cluster here. Each test drives the real kubernetes client (CustomObjectsApi
over an ApiClient) whose transport is replaced by a recorder: it keeps every
request the client would put on the wire (method, path, content type, JSON body)
and answers from a script of InferenceService states. The assertions are on the
recorded requests, so they check what the deploy step would send.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlparse

import pytest
from helpers import REPO_ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.client import ApiClient, Configuration, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from kubernetes.client.rest import RESTClientObject, RESTResponse

from petseg.cli import main
from petseg.components import deploy as kserve
from petseg.components.core.errors import ParamsError
from petseg.components.core.params import load_params, with_overrides
from petseg.components.deploy import (
    KServeError,
    canary_patch,
    deploy,
    inference_service,
    rollback_target,
    rollback_traffic,
    storage_uri,
)

PARAMS = with_overrides(load_params(REPO_ROOT / "params.yaml"), {"push.model_base_path": "gs://bucket/serving"})
SETTINGS = PARAMS.pipeline.kserve
NS, NAME = SETTINGS.namespace, PARAMS.push.model_name
ISVC_PATH = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/{NAME}"
COLLECTION_PATH = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices"
MERGE_PATCH = "application/merge-patch+json"


@dataclass
class Sent:
    method: str
    path: str
    content_type: str | None
    body: object


class _Answer:
    """What urllib3 would hand back: enough for RESTResponse and ApiException."""

    def __init__(self, status: int, payload: object):
        self.status, self.reason = status, {200: "OK", 201: "Created", 403: "Forbidden", 404: "Not Found"}[status]
        self.data = json.dumps(payload).encode() if not isinstance(payload, str) else payload.encode()

    def getheaders(self):
        return {"content-type": "application/json"}

    def getheader(self, name, default=None):
        return self.getheaders().get(name.lower(), default)


class Recorder(RESTClientObject):
    """The kubernetes client's transport, recording each request and answering from `answers` in order."""

    def __init__(self, answers: list[tuple[int, object]]):  # no pool: nothing leaves the process
        self.sent: list[Sent] = []
        self.answers = list(answers)

    def request(
        self,
        method,
        url,
        query_params=None,
        headers=None,
        body=None,
        post_params=None,
        _preload_content=True,
        _request_timeout=None,
    ):
        wire_body = json.loads(json.dumps(body)) if body is not None else None  # what json.dumps would send
        self.sent.append(Sent(method, urlparse(url).path, (headers or {}).get("Content-Type"), wire_body))
        assert self.answers, f"unexpected {method} {url}: the script has no answer left"
        status, payload = self.answers.pop(0)
        answer = _Answer(status, payload)
        if not 200 <= status < 300:
            raise ApiException(http_resp=RESTResponse(answer))
        return RESTResponse(answer)


def _api(answers) -> tuple[CustomObjectsApi, Recorder]:
    client = ApiClient(Configuration(host="https://kubernetes.test"))
    recorder = Recorder(answers)
    client.rest_client = recorder
    return CustomObjectsApi(client), recorder


class Clock:
    """A fake monotonic clock that sleep() advances, so timeouts pass instantly."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _isvc(
    version: int | None,
    generation: int,
    observed: int,
    ready: bool,
    latest_ready: str | None,
    latest_created: str | None = None,
    rolled_out: str | None = None,
    previous: str | None = None,
    message: str = "",
) -> dict:
    body = inference_service(PARAMS.push, PARAMS.serve, PARAMS.pipeline, version)
    body["metadata"]["generation"] = generation
    predictor = {
        "latestReadyRevision": latest_ready,
        "latestCreatedRevision": latest_created or latest_ready,
        "latestRolledoutRevision": rolled_out,
        "previousRolledoutRevision": previous,
    }
    body["status"] = {
        "observedGeneration": observed,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False", "message": message}],
        "components": {"predictor": {k: v for k, v in predictor.items() if v}},
    }
    return body


NOT_FOUND = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}


def _deploy(api, version=7, **overrides):
    clock = Clock()
    settings = (
        SETTINGS
        if not overrides
        else with_overrides(PARAMS, {f"pipeline.kserve.{k}": v for k, v in overrides.items()}).pipeline.kserve
    )
    body = inference_service(PARAMS.push, PARAMS.serve, PARAMS.pipeline, version)
    return deploy(api, body, settings, version, sleep=clock.sleep, clock=clock, log=lambda line: None)


# ------------------------------------------------------------------- the body
def test_body_serves_push_model_folder_with_tensorflow_runtime_and_params_limits():
    body = inference_service(PARAMS.push, PARAMS.serve, PARAMS.pipeline, 7)
    assert body["apiVersion"] == "serving.kserve.io/v1beta1" and body["kind"] == "InferenceService"
    assert body["metadata"]["name"] == PARAMS.push.model_name
    assert body["metadata"]["namespace"] == SETTINGS.namespace
    predictor = body["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "tensorflow"}
    assert model["storageUri"] == "gs://bucket/serving/petseg"
    assert model["ports"] == [{"name": "h2c", "containerPort": 9000, "protocol": "TCP"}]
    assert model["protocolVersion"] == "grpc-v1"
    limit = PARAMS.serve.max_message_mb * 2**20
    assert model["args"] == [
        f"--grpc_channel_arguments=grpc.max_send_message_length={limit},grpc.max_receive_message_length={limit}"
    ]
    assert model["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    assert predictor["serviceAccountName"] == SETTINGS.service_account
    assert predictor["annotations"] == {kserve.VERSION_ANNOTATION: "7"}
    assert "canaryTrafficPercent" not in predictor


def test_rest_protocol_routes_the_runtime_rest_port():
    params = with_overrides(PARAMS, {"pipeline.kserve.protocol": "rest"})
    model = inference_service(params.push, params.serve, params.pipeline)["spec"]["predictor"]["model"]
    assert model["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert model["protocolVersion"] == "v1"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"push.model_base_path": "s3://b/m/"}, "s3://b/m/petseg"),
        ({"pipeline.serving_pvc": "claim", "push.model_base_path": "/serving/models"}, "pvc://claim/petseg"),
        ({"pipeline.serving_pvc": "claim", "push.model_base_path": "/serving/models/prod"}, "pvc://claim/prod/petseg"),
    ],
)
def test_storage_uri_is_where_push_writes_as_the_cluster_reads_it(overrides, expected):
    params = with_overrides(PARAMS, overrides)
    assert storage_uri(params.push, params.pipeline) == expected


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"push.model_base_path": "serving/models"}, "a path only one machine sees"),
        ({"push.model_base_path": "ftp://host/models"}, "does not read ftp://"),
        ({"pipeline.serving_pvc": "claim", "push.model_base_path": "/elsewhere"}, "must lie under"),
    ],
)
def test_storage_uri_refuses_what_kserve_cannot_read(overrides, message):
    params = with_overrides(PARAMS, overrides)
    with pytest.raises(ParamsError, match=message):
        storage_uri(params.push, params.pipeline)


# ----------------------------------------------------- canary, promote, rollback
def test_first_deploy_creates_the_service_and_waits_for_ready():
    api, wire = _api(
        [
            (404, NOT_FOUND),
            (201, _isvc(7, 1, 0, False, None)),
            (200, _isvc(7, 1, 1, False, None)),
            (200, _isvc(7, 1, 1, True, "petseg-predictor-00001")),
        ]
    )
    result = _deploy(api)
    assert [(s.method, s.path) for s in wire.sent] == [
        ("GET", ISVC_PATH),
        ("POST", COLLECTION_PATH),
        ("GET", ISVC_PATH),
        ("GET", ISVC_PATH),
    ]
    assert wire.sent[1].body == inference_service(PARAMS.push, PARAMS.serve, PARAMS.pipeline, 7)
    assert result.status == "created" and result.revision == "petseg-predictor-00001"


def test_new_version_goes_out_on_canary_then_is_promoted_to_all_traffic():
    old = _isvc(6, 3, 3, True, "petseg-predictor-00001", rolled_out="petseg-predictor-00001")
    api, wire = _api(
        [
            (200, old),
            (200, _isvc(7, 4, 3, True, "petseg-predictor-00001")),  # the patch's answer
            (200, _isvc(7, 4, 4, False, "petseg-predictor-00001", "petseg-predictor-00002")),  # new revision starting
            (200, _isvc(7, 4, 4, True, "petseg-predictor-00002")),  # Ready
            (200, _isvc(7, 5, 4, True, "petseg-predictor-00002")),  # promotion's answer
        ]
    )
    result = _deploy(api)
    assert [(s.method, s.path, s.content_type) for s in wire.sent] == [
        ("GET", ISVC_PATH, None),
        ("PATCH", ISVC_PATH, MERGE_PATCH),
        ("GET", ISVC_PATH, None),
        ("GET", ISVC_PATH, None),
        ("PATCH", ISVC_PATH, MERGE_PATCH),
    ]
    canary = wire.sent[1].body
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == SETTINGS.canary_traffic_percent == 10
    assert canary["spec"]["predictor"]["annotations"] == {kserve.VERSION_ANNOTATION: "7"}  # a new revision
    assert canary["spec"]["predictor"]["model"]["storageUri"] == "gs://bucket/serving/petseg"
    assert wire.sent[4].body == {"spec": {"predictor": {"canaryTrafficPercent": 100}}}
    assert (result.status, result.revision, result.previous_revision) == (
        "promoted",
        "petseg-predictor-00002",
        "petseg-predictor-00001",
    )


def test_canary_not_ready_in_time_rolls_traffic_back_and_fails_in_one_line():
    old = _isvc(6, 3, 3, True, "petseg-predictor-00001", rolled_out="petseg-predictor-00001")
    failing = _isvc(
        7,
        4,
        4,
        False,
        "petseg-predictor-00001",
        "petseg-predictor-00002",
        rolled_out="petseg-predictor-00001",
        message="Revision failed: model did not load",
    )
    polls = int(SETTINGS.ready_timeout_seconds / SETTINGS.poll_seconds) + 1
    api, wire = _api([(200, old), (200, failing)] + [(200, failing)] * polls + [(200, failing), (200, failing)])
    with pytest.raises(KServeError) as error:
        _deploy(api)
    message = str(error.value)
    assert "\n" not in message
    assert "version 7" in message and "600s" in message and "model did not load" in message
    assert "rolled back to petseg-predictor-00001" in message
    assert wire.sent[-1].method == "PATCH" and wire.sent[-1].content_type == MERGE_PATCH
    assert wire.sent[-1].body == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    assert not any(s.body == canary_patch(100) for s in wire.sent)  # never promoted
    assert sum(s.method == "GET" for s in wire.sent) == 1 + polls + 1  # + the status the rollback reads


def test_failed_version_with_nothing_rolled_out_before_sends_no_rollback():
    never = _isvc(None, 1, 1, False, None, "rev-1")
    failing = _isvc(7, 2, 2, False, None, "rev-2", message="model did not load")
    api, wire = _api([(200, never), (200, failing)] + [(200, failing)] * 200)
    with pytest.raises(KServeError, match="no earlier rolled-out revision to send traffic back to"):
        _deploy(api, ready_timeout_seconds=10)
    assert [s.method for s in wire.sent].count("PATCH") == 1  # the canary only


@pytest.mark.parametrize(
    "ready, created, rolled_out, previous, target",
    [
        ("rev-2", "rev-2", "rev-1", "rev-0", "rev-1"),  # canary Ready, not promoted: back to the rolled-out one
        ("rev-1", "rev-2", "rev-1", "rev-0", "rev-1"),  # new revision never Ready: traffic stays where it was
        ("rev-2", "rev-2", "rev-2", "rev-1", "rev-1"),  # promoted: KServe steps back to the previous rollout
        ("rev-2", "rev-2", "rev-2", None, None),  # promoted, nothing before it
        ("rev-1", "rev-1", None, None, None),  # never rolled out
    ],
)
def test_rollback_target_follows_kserve_status_rules(ready, created, rolled_out, previous, target):
    assert rollback_target(_isvc(7, 4, 4, True, ready, created, rolled_out, previous)) == target


def test_full_canary_share_needs_no_separate_promotion():
    old = _isvc(6, 3, 3, True, "rev-1", rolled_out="rev-1")
    api, wire = _api([(200, old), (200, _isvc(7, 4, 3, True, "rev-1")), (200, _isvc(7, 4, 4, True, "rev-2"))])
    assert _deploy(api, canary_traffic_percent=100).status == "promoted"
    assert [s.method for s in wire.sent] == ["GET", "PATCH", "GET"]
    assert wire.sent[1].body["spec"]["predictor"]["canaryTrafficPercent"] == 100


def test_the_version_already_deployed_sends_nothing_but_the_read():
    api, wire = _api([(200, _isvc(7, 4, 4, True, "rev-2"))])
    assert _deploy(api).status == "unchanged"
    assert [s.method for s in wire.sent] == ["GET"]


def test_the_version_deployed_but_never_ready_fails_instead_of_claiming_success():
    api, wire = _api([(200, _isvc(7, 4, 4, False, "rev-1", "rev-2", "rev-1", message="model did not load"))])
    with pytest.raises(KServeError, match=r"version 7 is already on .* not Ready \(model did not load\)"):
        _deploy(api)
    assert [s.method for s in wire.sent] == ["GET"]


def test_forbidden_names_the_role_to_bind():
    api, _ = _api([(403, {"kind": "Status", "reason": "Forbidden", "code": 403})])
    with pytest.raises(
        KServeError,
        match=r"HTTP 403 Forbidden; the deploying account needs the Role in "
        r"serving/deploy/kserve/rbac.yaml",
    ):
        _deploy(api)


def test_no_kserve_crd_is_told_apart_from_no_service():
    api, _ = _api([(404, "404 page not found")])
    with pytest.raises(KServeError, match="is KServe installed"):
        _deploy(api)


def test_rollback_after_promotion_pins_traffic_to_the_previous_rollout():
    promoted = _isvc(7, 5, 5, True, "rev-2", rolled_out="rev-2", previous="rev-1")
    api, wire = _api([(200, promoted), (200, promoted)])
    result = rollback_traffic(api, NS, NAME)
    assert [(s.method, s.path, s.content_type, s.body) for s in wire.sent] == [
        ("GET", ISVC_PATH, None, None),
        ("PATCH", ISVC_PATH, MERGE_PATCH, canary_patch(0)),
    ]
    assert (result.to_revision, result.from_revision) == ("rev-1", "rev-2")


def test_rollback_with_nothing_earlier_sends_no_patch():
    api, wire = _api([(200, _isvc(1, 1, 1, True, "rev-1", rolled_out="rev-1"))])
    with pytest.raises(KServeError, match="no earlier rolled-out revision"):
        rollback_traffic(api, NS, NAME)
    assert [s.method for s in wire.sent] == ["GET"]


def test_rollback_of_a_missing_service_names_namespace_and_name():
    api, wire = _api([(404, NOT_FOUND)])
    with pytest.raises(KServeError, match=f"no InferenceService {NS}/{NAME}"):
        rollback_traffic(api, NS, NAME)
    assert [s.method for s in wire.sent] == ["GET"]


def test_cli_rollback_kserve_prints_the_revisions(monkeypatch, capsys):
    promoted = _isvc(7, 5, 5, True, "rev-2", rolled_out="rev-2", previous="rev-1")
    api, wire = _api([(200, promoted), (200, promoted)])
    monkeypatch.setattr(kserve, "custom_objects_api", lambda: api)
    assert main(["rollback", "--target", "kserve", "--params", str(REPO_ROOT / "params.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"InferenceService {NS}/{NAME} sends all traffic to revision rev-1 (was rev-2)" in out
    assert wire.sent[-1].body == canary_patch(0)


# ------------------------------------------------------------ property-based

SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)
K8S_NAME = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    scheme=st.sampled_from(["gs", "s3", "pvc"]),
    parts=st.lists(SEGMENT, min_size=1, max_size=4),
    name=K8S_NAME,
    slash=st.booleans(),
)
def test_object_store_storage_uri_is_base_then_model_name(scheme, parts, name, slash):
    base = f"{scheme}://" + "/".join(parts) + ("/" if slash else "")
    params = with_overrides(PARAMS, {"push.model_base_path": base, "push.model_name": name})
    uri = storage_uri(params.push, params.pipeline)
    assert uri == f"{scheme}://{'/'.join(parts)}/{name}"
    assert "//" not in uri.split("://", 1)[1]


@settings(max_examples=60, deadline=None)
@given(inside=st.lists(SEGMENT, max_size=3), name=K8S_NAME, claim=K8S_NAME)
def test_pvc_storage_uri_is_the_path_inside_the_claim(inside, name, claim):
    mount = "/serving/models"
    params = with_overrides(
        PARAMS,
        {"pipeline.serving_pvc": claim, "push.model_name": name, "push.model_base_path": "/".join([mount, *inside])},
    )
    assert storage_uri(params.push, params.pipeline) == "/".join([f"pvc://{claim}", *inside, name])


@settings(max_examples=60, deadline=None)
@given(version=st.integers(1, 10**9), percent=st.integers(1, 100), protocol=st.sampled_from(["grpc", "rest"]))
def test_every_rollout_body_stamps_its_version_and_keeps_the_model(version, percent, protocol):
    params = with_overrides(PARAMS, {"pipeline.kserve.protocol": protocol})
    body = inference_service(params.push, params.serve, params.pipeline, version)
    staged = kserve.with_canary(body, percent)
    assert staged["spec"]["predictor"]["canaryTrafficPercent"] == percent
    assert "canaryTrafficPercent" not in body["spec"]["predictor"]  # the original is not changed
    assert kserve.deployed_version(staged) == version
    assert staged["spec"]["predictor"]["model"] == body["spec"]["predictor"]["model"]
