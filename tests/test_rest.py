"""TF Serving's REST API on the local server: status, metadata, predict (row, columnar, b64), errors.

Answers are compared with the gRPC answer for the same images; refusals with
the {"error": ...} body and the HTTP status TF Serving gives them
(model_servers/http_server.cc ToHTTPStatusCode: INVALID_ARGUMENT and
FAILED_PRECONDITION 400, NOT_FOUND 404).
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_status_codes import BATCHING_FILE, MODELS_CONFIG, Stubs, image, png, predict_request

from petseg.components.contracts import signatures
from petseg.components.core.params import ServeParams

tf = pytest.importorskip("tensorflow")

from petseg.serving import json_body, rest  # noqa: E402
from petseg.serving.server import start_server  # noqa: E402

SERVE = ServeParams(
    poll_seconds=0.5, workers=4, max_message_mb=4, max_image_pixels=4_000_000, batching_parameters_file=BATCHING_FILE
)


@pytest.fixture(scope="module")
def server(tiny_savedmodel, tmp_path_factory):
    base = tmp_path_factory.mktemp("rest") / "models"
    for version in (1, 2):
        shutil.copytree(tiny_savedmodel, base / "petseg" / str(version))
    (base / "models.config").write_text(MODELS_CONFIG)
    running = start_server(base, "petseg", SERVE, host="127.0.0.1", port=0, rest_port=0, log=lambda line: None)
    try:
        yield running
    finally:
        running.stop(0)


def call(server, method: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, dict]:
    """One request on a fresh connection; the status and the parsed JSON answer."""
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def grpc_mask(server, batch: np.ndarray) -> np.ndarray:
    answer = Stubs(server.target).calls["predict"](predict_request(batch), timeout=30)
    return tf.make_ndarray(answer.outputs[signatures.OUTPUT_MASK])


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


# ------------------------------------------------------------ status, metadata
@pytest.mark.slow
def test_status_and_metadata_as_tf_serving_writes_them(server):
    status, every = call(server, "GET", "/v1/models/petseg")
    _, one = call(server, "GET", "/v1/models/petseg/versions/1")
    _, by_label = call(server, "GET", "/v1/models/petseg/labels/stable")
    meta_status, metadata = call(server, "GET", "/v1/models/petseg/metadata")
    _, metadata_v1 = call(server, "GET", "/v1/models/petseg/versions/1/metadata")
    _, metadata_stable = call(server, "GET", "/V1/Models/petseg/labels/stable/metadata")  # the paths are case-blind

    healthy = {"error_code": "OK", "error_message": ""}
    assert status == 200 and every == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": healthy},
            {"version": "1", "state": "AVAILABLE", "status": healthy},
        ]
    }
    assert one == {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": healthy}]}
    assert by_label == every  # get_model_status_impl.cc ignores a label: every version
    assert meta_status == 200
    assert metadata["model_spec"] == {"name": "petseg", "signature_name": "", "version": "2"}
    defs = metadata["metadata"]["signature_def"]["signature_def"]
    images = defs[signatures.SIGNATURE_IMAGES]
    assert images["inputs"][signatures.INPUT_IMAGES]["dtype"] == "DT_UINT8"
    assert images["method_name"] == "tensorflow/serving/predict"
    assert defs[signatures.SIGNATURE_BYTES]["inputs"][signatures.INPUT_BYTES]["dtype"] == "DT_STRING"
    assert metadata_v1["model_spec"]["version"] == "1" and metadata_stable["model_spec"]["version"] == "1"


# ------------------------------------------------------------------- predict
@pytest.mark.slow
def test_predict_row_and_columnar_give_the_grpc_masks(server):
    batch = np.stack([image(40, 56), image(40, 56)])
    expected = grpc_mask(server, batch)
    row_status, row = call(server, "POST", "/v1/models/petseg:predict", {"instances": batch.tolist()})
    col_status, col = call(server, "POST", "/v1/models/petseg/versions/1:predict", {"inputs": batch.tolist()})
    named_status, named = call(
        server,
        "POST",
        "/v1/models/petseg/labels/stable:predict",
        {"signature_name": "serving_default", "instances": [{"images": im.tolist()} for im in batch]},
    )

    assert (row_status, col_status, named_status) == (200, 200, 200)
    assert len(row["predictions"]) == 2
    for i, prediction in enumerate(row["predictions"]):
        assert set(prediction) == {signatures.OUTPUT_MASK, signatures.OUTPUT_PROBABILITIES}  # REST has no output_filter
        np.testing.assert_array_equal(np.array(prediction[signatures.OUTPUT_MASK], np.uint8), expected[i])
        probabilities = np.array(prediction[signatures.OUTPUT_PROBABILITIES], np.float32)
        assert probabilities.shape == (40, 56, 3)
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(np.array(col["outputs"][signatures.OUTPUT_MASK], np.uint8), expected)
    assert np.array(col["outputs"][signatures.OUTPUT_PROBABILITIES]).shape == (2, 40, 56, 3)
    np.testing.assert_array_equal(np.array([p["mask"] for p in named["predictions"]], np.uint8), expected)


@pytest.mark.slow
def test_a_large_numeric_body_read_straight_into_numpy_gives_the_grpc_masks(server):
    """A body over json_body.MIN_ARRAY_BYTES takes the numpy path; its masks are those gRPC gives for the pixels."""
    batch = np.stack([image(96, 128), image(96, 128)])
    body = json.dumps({"instances": batch.tolist()}, indent=1).encode()  # whitespace and newlines, as some clients
    assert len(body) > 4 * json_body.MIN_ARRAY_BYTES

    status, answer = call(server, "POST", "/v1/models/petseg:predict", raw=body)

    assert status == 200
    masks = np.array([p[signatures.OUTPUT_MASK] for p in answer["predictions"]], np.uint8)
    np.testing.assert_array_equal(masks, grpc_mask(server, batch))


@pytest.mark.slow
def test_predict_b64_images_through_the_bytes_signature(server):
    pixels = np.stack([image(48, 64), image(48, 64)])
    encoded = [png(48, 64), png(48, 64)]
    expected = grpc_mask(server, pixels)
    row_status, row = call(
        server,
        "POST",
        "/v1/models/petseg:predict",
        {"signature_name": "serving_bytes", "instances": [b64(e) for e in encoded]},
    )
    col_status, col = call(
        server,
        "POST",
        "/v1/models/petseg:predict",
        {"signature_name": "serving_bytes", "inputs": {"image_bytes": [b64(e) for e in encoded]}},
    )

    assert (row_status, col_status) == (200, 200)
    masks = np.array([p[signatures.OUTPUT_MASK] for p in row["predictions"]], np.uint8)
    np.testing.assert_array_equal(masks, expected)  # PNG is lossless: the same pixels give the same masks
    np.testing.assert_array_equal(np.array(col["outputs"][signatures.OUTPUT_MASK], np.uint8), expected)


# ------------------------------------------------------------------ refusals
def _bad_requests():
    small = image(8, 8)[None].tolist()
    sig_bytes = {"signature_name": "serving_bytes"}
    return [
        # (case, method, path, body or raw bytes, HTTP status, error fragment)
        ("empty body", "POST", "/v1/models/petseg:predict", b"", 400, "JSON Parse error: The document is empty"),
        ("not JSON", "POST", "/v1/models/petseg:predict", b"{instances: [", 400, "JSON Parse error"),
        ("not an object", "POST", "/v1/models/petseg:predict", [1, 2], 400, "Is not object"),
        (
            "both keys",
            "POST",
            "/v1/models/petseg:predict",
            {"instances": small, "inputs": small},
            400,
            "expecting only one of 'inputs' or 'instances' keys to exist",
        ),
        (
            "neither key",
            "POST",
            "/v1/models/petseg:predict",
            {"images": small},
            400,
            "Missing 'inputs' or 'instances' key",
        ),
        (
            "instances not a list",
            "POST",
            "/v1/models/petseg:predict",
            {"instances": 3},
            400,
            "Expecting 'instances' to be an list/array",
        ),
        ("no instances", "POST", "/v1/models/petseg:predict", {"instances": []}, 400, "No values in 'instances' array"),
        (
            "signature_name not a string",
            "POST",
            "/v1/models/petseg:predict",
            {"signature_name": 1, "instances": small},
            400,
            "'signature_name' key must be a string value",
        ),
        (
            "floats for uint8",
            "POST",
            "/v1/models/petseg:predict",
            {"instances": [[[[0.5, 1, 2]]]]},
            400,
            "JSON Value: 0.5 Type: Number is not of expected type: uint8",
        ),
        (
            "strings for uint8",
            "POST",
            "/v1/models/petseg:predict",
            {"instances": [[[["a", "b", "c"]]]]},
            400,
            "is not of expected type: uint8",
        ),
        (
            "out of uint8 range",
            "POST",
            "/v1/models/petseg:predict",
            {"instances": [[[[300, 1, 2]]]]},
            400,
            "JSON Value: 300 Type: Number is not of expected type: uint8",
        ),
        (
            "ragged lists",
            "POST",
            "/v1/models/petseg:predict",
            {"instances": [[[[1, 2, 3]], [[1, 2]]]]},
            400,
            "Encountered list at unexpected size",
        ),
        (
            "wrong key in an instance",
            "POST",
            "/v1/models/petseg:predict",
            {"instances": [{"pixels": small[0]}]},
            400,
            "keys must be equal to: images",
        ),
        (
            "wrong key in inputs",
            "POST",
            "/v1/models/petseg:predict",
            {"inputs": {"pixels": small}},
            400,
            "Missing named input: images in 'inputs' object.",
        ),
        (
            "bad base64",
            "POST",
            "/v1/models/petseg:predict",
            {**sig_bytes, "instances": [{"b64": "***"}]},
            400,
            "Unable to base64 decode",
        ),
        (
            "base64 of no image",
            "POST",
            "/v1/models/petseg:predict",
            {**sig_bytes, "instances": [b64(b"hello")]},
            400,
            "Unknown image file format",
        ),
        (
            "unknown signature",
            "POST",
            "/v1/models/petseg:predict",
            {"signature_name": "fast", "instances": small},
            400,
            'Serving signature name: "fast" not found in signature def',
        ),
        (
            "batch over max_batch_size",
            "POST",
            "/v1/models/petseg:predict",
            {"instances": [image(4, 4).tolist()] * 9},
            400,
            "Task size 9 is larger than maximum input batch size 8",
        ),
        (
            "JSON nested 1000 deep",
            "POST",
            "/v1/models/petseg:predict",
            b'{"instances": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}",
            400,
            "JSON Parse error: nested deeper than 256 levels at offset: 269",  # the object is a level too
        ),
        (
            "one image without the batch dimension",
            "POST",
            "/v1/models/petseg:predict",
            {"instances": image(64, 64).tolist()},
            400,
            "got shape [64, 64, 3], which is one item without the batch dimension: send it as shape [1, 64, 64, 3]",
        ),
        (
            "floats for uint8 in a large numeric array",
            "POST",
            "/v1/models/petseg:predict",
            {"instances": [[[[0, 1, 2]] * 200] * 200 + [[[0.5, 1, 2]] * 200]]},
            400,
            "JSON Value: 0.5 Type: Number is not of expected type: uint8",
        ),
        (
            "out of uint8 range in a large numeric array",
            "POST",
            "/v1/models/petseg:predict",
            {"instances": [[[[0, 1, 2]] * 200] * 200 + [[[0, 300, 2]] * 200]]},
            400,
            "JSON Value: 300 Type: Number is not of expected type: uint8",
        ),
        (
            "ragged large numeric array",
            "POST",
            "/v1/models/petseg:predict",
            {"instances": [[[[0, 1, 2]] * 200] * 200 + [[[0, 1, 2]] * 199]]},
            400,
            "Encountered list at unexpected size",
        ),
        (
            "unknown model",
            "POST",
            "/v1/models/dogseg:predict",
            {"instances": small},
            404,
            "Servable not found for request: Latest(dogseg)",
        ),
        (
            "unknown version",
            "POST",
            "/v1/models/petseg/versions/9:predict",
            {"instances": small},
            404,
            "Servable not found for request: Specific(petseg, 9)",
        ),
        (
            "unknown label",
            "POST",
            "/v1/models/petseg/labels/canary:predict",
            {"instances": small},
            400,
            "Unrecognized servable version label: canary",
        ),
        (
            "status of an unknown model",
            "GET",
            "/v1/models/dogseg",
            None,
            404,
            "Could not find any versions of model dogseg",
        ),
        (
            "metadata of an unknown version",
            "GET",
            "/v1/models/petseg/versions/9/metadata",
            None,
            404,
            "Servable not found for request: Specific(petseg, 9)",
        ),
        ("no model name", "GET", "/v1/models", None, 400, "Missing model name in request."),
        (
            "malformed path",
            "GET",
            "/v1/models/petseg/versions/x",
            None,
            400,
            "Malformed request: GET /v1/models/petseg/versions/x",
        ),
        ("predict by GET", "GET", "/v1/models/petseg:predict", None, 400, "Malformed request"),
        ("not the API", "GET", "/healthz", None, 404, "the API is under /v1/models/"),
        (
            "body over the message limit",
            "POST",
            "/v1/models/petseg:predict",
            b" " * (5 * 2**20),
            413,
            "over the 4 MiB limit",
        ),
    ]


@pytest.mark.slow
def test_bad_bodies_get_400_unknown_models_404_with_an_error_object(server):
    wrong = []
    for case, method, path, body, want_status, fragment in _bad_requests():
        raw = body if isinstance(body, bytes) else None
        status, answer = call(server, method, path, None if raw is not None else body, raw=raw)
        if status != want_status or set(answer) != {"error"} or fragment not in answer["error"]:
            wrong.append(f"{case}: got {status} {answer}; want {want_status} {fragment!r}")
    assert wrong == [], "\n".join(wrong)
    assert call(server, "GET", "/v1/models/petseg")[0] == 200  # still serving


@pytest.mark.slow
def test_keep_alive_connection_serves_several_requests_and_concurrent_clients(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    for _ in range(3):
        connection.request("GET", "/v1/models/petseg")
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["model_version_status"]
    connection.close()
    results: list[int] = []
    body = {"instances": [image(32, 32).tolist()]}
    threads = [
        threading.Thread(target=lambda: results.append(call(server, "POST", "/v1/models/petseg:predict", body)[0]))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [200] * 6


def test_a_burst_of_clients_arriving_while_the_server_is_busy_are_all_answered():
    """64 clients connect and send before the server accepts any (as when every handler thread is busy)."""
    idle = rest.RestServer(("127.0.0.1", 0), SimpleNamespace(metrics=None))
    clients: list[socket.socket] = []
    serving = threading.Thread(target=idle.serve_forever, daemon=True)
    try:
        for _ in range(64):  # with socketserver's backlog of 5 the 7th connect timed out
            clients.append(socket.create_connection(idle.server_address[:2], timeout=5))
            clients[-1].sendall(b"GET /nope HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        serving.start()
        assert [client.recv(64).split(b"\r\n")[0] for client in clients] == [b"HTTP/1.1 404 Not Found"] * 64
    finally:
        if serving.is_alive():
            idle.shutdown()
        idle.server_close()
        for client in clients:
            client.close()


# ------------------------------------------------------------ any JSON body
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 300) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["instances", "inputs", "images", "b64", "signature_name", "x"]), children, max_size=3
        )
    ),
    max_leaves=12,
)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values)
def test_any_json_body_is_answered_or_refused_with_a_client_error_never_a_crash(server, body):
    context = server.rest.context
    status, answer = rest.handle(context, "POST", "/v1/models/petseg:predict", json.dumps(body).encode())
    parsed = json.loads(answer)
    assert status == 200 or (400 <= status < 500 and set(parsed) == {"error"} and parsed["error"]), (status, parsed)
