"""The REST server's intake limits: JSON depth, the body budget, numeric arrays read into numpy, dropped clients.

json_body is checked against orjson on any JSON (property-based): it must
read the same values, refuse the same bodies, and never raise anything but
a ServingError. The HTTP tests run a RestServer over a context without a
model: every refusal here happens before a model would be asked.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petseg.components.core.params import ParamsError, params_from_dict
from petseg.serving import json_body, rest
from petseg.serving.body_budget import BodyBudget
from petseg.serving.errors import ServingError

pytest.importorskip("tensorflow_serving")
MIB = 2**20


# ------------------------------------------------------------------ json_body
def as_plain(value):
    """A parsed document with its ParsedArrays turned back into lists (to compare with orjson's)."""
    if isinstance(value, json_body.ParsedArray):
        return value.values.tolist()
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_plain(v) for v in value]
    return value


@pytest.fixture
def small_arrays(monkeypatch):
    """Numeric arrays of any size take the numpy path, so that small generated bodies exercise it."""
    monkeypatch.setattr(json_body, "MIN_ARRAY_BYTES", 1)


def test_a_large_image_batch_is_read_into_one_int64_array_with_its_shape():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 100, 120, 3), dtype=np.uint8)
    body = orjson.dumps({"instances": pixels, "signature_name": "serving_default"}, option=orjson.OPT_SERIALIZE_NUMPY)

    document = json_body.parse_document(body, 256)

    parsed = document["instances"]
    assert isinstance(parsed, json_body.ParsedArray)
    assert parsed.values.dtype == np.int64 and parsed.values.shape == (2, 100, 120, 3)
    np.testing.assert_array_equal(parsed.values, pixels)
    assert document["signature_name"] == "serving_default"
    assert parsed.first_float is None and parsed.first_token == str(pixels.flat[0])


@pytest.mark.parametrize(
    ("text", "first_float", "first_long"),
    [
        (b"[[1, 2.5], [3, 4]]", "2.5", None),
        (b"[[1e3, 2], [3, -4E-2]]", "1e3", None),
        (b"[123456789012345678901234, 1]", None, "123456789012345678901234"),
    ],
)
def test_fractions_exponents_and_long_integers_are_read_as_floats_and_named(
    small_arrays, text, first_float, first_long
):
    parsed = json_body.parse_document(b'{"x": ' + text + b"}", 256)["x"]
    assert parsed.values.dtype == np.float64
    np.testing.assert_array_equal(parsed.values, np.array(json.loads(text), dtype=np.float64))
    assert (parsed.first_float, parsed.first_long_int) == (first_float, first_long)


@pytest.mark.parametrize(
    "text",
    [b"[01, 2]", b"[1, +2]", b"[1., 2]", b"[.5, 2]", b"[1.2.3, 4]", b"[1e, 2]", b"[-, 1]", b"[1 2]", b"[1,, 2]"],
)
def test_a_malformed_number_is_refused_with_the_json_parsers_own_message(small_arrays, text):
    with pytest.raises(ServingError) as refused:
        json_body.parse_document(b'{"x": ' + text + b"}", 256)
    assert refused.value.message.startswith("JSON Parse error: ") and " at offset: " in refused.value.message
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(b'{"x": ' + text + b"}")


@pytest.mark.parametrize("text", [b"[[1, 2], [3]]", b"[[1, 2, 3], [4]]", b"[[], []]", b"[[1], 2]", b"[1, [2]]"])
def test_ragged_or_empty_arrays_are_left_as_lists_for_the_shape_rules(small_arrays, text):
    assert json_body.parse_document(b'{"x": ' + text + b"}", 256) == {"x": json.loads(text)}


def test_depth_over_the_limit_is_refused_before_parsing_naming_the_offset():
    body = b'{"instances": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}"
    with pytest.raises(ServingError) as refused:
        json_body.parse_document(body, 256)
    assert refused.value.code.name == "INVALID_ARGUMENT"
    assert refused.value.message.startswith("JSON Parse error: nested deeper than 256 levels at offset: 269;")
    assert "\n" not in refused.value.message
    assert json_body.parse_document(b"[" * 256 + b"]" * 256, 256) == json.loads(b"[" * 256 + b"]" * 256)


def test_brackets_inside_strings_and_after_escaped_quotes_do_not_count_as_depth():
    inside = json.dumps({"s": "[" * 600 + '\\"' + "{" * 600, "t": ["\\", "]]]"]}).encode()
    assert json_body.scan_structure(inside, 256).max_depth == 2
    assert json_body.parse_document(inside, 256) == json.loads(inside)


def test_the_depth_scan_follows_strings_across_its_chunks(monkeypatch):
    monkeypatch.setattr(json_body, "CHUNK_BYTES", 7)  # every string, escape and run crosses a chunk edge
    body = json.dumps({"a": 'x\\"[[[[' * 5, "b": [[[1, 2]], [[3, 4]]], "c": "\\\\" * 3}).encode()
    assert json_body.scan_structure(body, 256).max_depth == 4
    with pytest.raises(ServingError):
        json_body.scan_structure(b'{"a": "\\\\", "b": ' + b"[" * 10 + b"]" * 10 + b"}", 8)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab[]{}",:\\ 0123456789-.eE'), max_size=8),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=40,
)
rectangular = st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3)).flatmap(
    lambda shape: st.lists(
        st.integers(-1000, 1000) | st.floats(-1e6, 1e6, allow_nan=False),
        min_size=int(np.prod(shape)),
        max_size=int(np.prod(shape)),
    ).map(lambda flat: np.array(flat, dtype=object).reshape(shape).tolist())
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values | rectangular, indent=st.booleans())
def test_any_json_is_read_as_orjson_reads_it(small_arrays, value, indent):
    body = json.dumps(value, indent=1 if indent else None).encode()
    parsed = json_body.parse_document(body, 256)
    assert as_plain(parsed) == orjson.loads(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300) | st.text(alphabet='[]{}",:\\ 0123456789-.eE+tfn', max_size=300).map(str.encode))
def test_any_bytes_are_parsed_or_refused_with_a_serving_error_never_a_crash(small_arrays, data):
    try:
        parsed = json_body.parse_document(data, 16)
    except ServingError as exc:
        assert exc.code.name == "INVALID_ARGUMENT" and "\n" not in exc.message
        return
    assert as_plain(parsed) == orjson.loads(data)  # whatever is accepted is what orjson reads


def test_the_parse_cost_counts_objects_for_json_that_is_not_a_numeric_array():
    numbers = orjson.dumps({"instances": np.zeros((1, 200, 200, 3), np.uint8)}, option=orjson.OPT_SERIALIZE_NUMPY)
    objects = b'{"instances": [' + b",".join([b"[[]]"] * 40_000) + b"]}"
    number_cost = json_body.split_body(numbers, 256).cost_bytes
    object_cost = json_body.split_body(objects, 256).cost_bytes
    assert number_cost <= 8 * 120_000 + 1000  # 8 bytes per number, plus the few bytes of keys
    assert object_cost >= 40_000 * 3 * json_body.OBJECT_BYTES_PER_TOKEN  # [ [ , per element


# ------------------------------------------------------------------- budget
def test_the_budget_refuses_what_does_not_fit_and_gives_back_on_release():
    budget = BodyBudget(800)  # small requests: up to 100; one request: up to 700
    first = budget.reserve(600)
    assert first is not None and budget.reserve(150) is None  # a large one may not take the last eighth
    assert first.grow(100) and not first.grow(1) and budget.used == 700
    smalls = [budget.reserve(50), budget.reserve(50)]  # the eighth kept for small requests
    assert all(smalls) and budget.reserve(1) is None and budget.used == 800
    first.release()
    for small in smalls:
        small.release()  # type: ignore[union-attr]
    with budget.reserve(700) as whole:  # type: ignore[union-attr]
        assert whole.held == 700 and budget.used == 700 and budget.reserve(101) is None
    assert budget.used == 0 and budget.reserve(701) is None


def test_the_budget_and_depth_are_params_validated_at_load():
    for key, value in (("rest_body_budget_mb", 0), ("rest_max_json_depth", 4), ("rest_max_json_depth", 5000)):
        with pytest.raises(ParamsError, match=key):
            params_from_dict({"serve": {key: value}})
    serve = params_from_dict({"serve": {"rest_body_budget_mb": 96, "rest_max_json_depth": 64}}).serve
    assert (serve.rest_body_budget_mb, serve.rest_max_json_depth) == (96, 64)


# --------------------------------------------------------------------- HTTP
@pytest.fixture
def intake():
    """A RestServer over a context with no model, a 8 MiB budget and a 4 MiB message limit; its log lines."""
    from petseg.serving.servicer import InflightCounter

    lines: list[str] = []
    context = SimpleNamespace(
        metrics=None,
        limits=SimpleNamespace(max_message_bytes=4 * MIB),
        budget=BodyBudget(8 * MIB),
        max_json_depth=256,
        inflight=InflightCounter(),
        log=lines.append,
    )
    server = rest.RestServer(("127.0.0.1", 0), context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(port=server.server_address[1], context=context, lines=lines)
    finally:
        server.shutdown()
        server.server_close()


def released(budget: BodyBudget) -> bool:
    """Whether every reservation is given back within 5 s (the server releases it just after writing its answer)."""
    deadline = time.monotonic() + 5
    while budget.used and time.monotonic() < deadline:
        time.sleep(0.01)
    return budget.used == 0


def post(port: int, body: bytes) -> tuple[int, dict, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/v1/models/petseg:predict", body=body)
        response = connection.getresponse()
        return response.status, json.loads(response.read()), dict(response.getheaders())
    finally:
        connection.close()


def test_deep_json_gets_400_with_one_line_and_nothing_in_the_log(intake, capfd):
    status, answer, _ = post(intake.port, b'{"instances": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}")
    assert status == 400 and set(answer) == {"error"} and "\n" not in answer["error"]
    assert "nested deeper than 256 levels" in answer["error"]
    assert intake.lines == [] and "Traceback" not in capfd.readouterr().err
    assert released(intake.context.budget)


def test_a_body_that_does_not_fit_the_budget_now_is_refused_at_once_with_503(intake):
    held = intake.context.budget.reserve(6 * MIB)  # as bodies in flight would
    try:
        started = time.perf_counter()
        status, answer, headers = post(intake.port, b"[" + b"1," * (1_500_000) + b"1]")
        seconds = time.perf_counter() - started
    finally:
        held.release()
    assert status == 503 and headers.get("Retry-After") == "1"
    assert answer["error"].startswith(
        "the server is busy: 6 of its 8 MiB for request bodies (serve.rest_body_budget_mb)"
    )
    assert seconds < 10 and released(intake.context.budget)


def test_a_body_over_the_whole_budget_is_refused_with_413(intake):
    intake.context.limits.max_message_bytes = 64 * MIB
    status, answer, _ = post(intake.port, b" " * (9 * MIB))
    assert status == 413
    assert answer["error"] == (
        "request body of 9.0 MiB is over the 7 MiB one request may take of the REST body budget "
        "(8 MiB, serve.rest_body_budget_mb); send fewer or smaller images per request"
    )


def test_a_body_whose_objects_would_overflow_the_budget_is_refused_before_they_are_built(intake):
    objects = b'{"instances": [' + b",".join([b"[[]]"] * 100_000) + b"]}"  # 0.6 MiB, ~19 MiB as objects
    status, answer, _ = post(intake.port, objects)
    assert status == 413 and answer["error"].startswith("parsing this body would take ")
    assert (
        "over the 7 MiB one request may take of the REST body budget (8 MiB, serve.rest_body_budget_mb)"
        in (answer["error"])
    )
    assert released(intake.context.budget)


@pytest.mark.parametrize("reset", [False, True])
def test_a_client_that_drops_mid_body_is_one_log_line_and_the_server_goes_on(intake, capfd, reset):
    with socket.create_connection(("127.0.0.1", intake.port)) as sock:
        sock.sendall(b"POST /v1/models/petseg:predict HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n[[1,2")
        time.sleep(0.2)
        if reset:  # an abortive close: the server sees ECONNRESET rather than an end of file
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    deadline = time.monotonic() + 10
    while not intake.lines and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert len(intake.lines) == 1, intake.lines
    assert intake.lines[0].startswith("petseg serve: REST client 127.0.0.1:")
    # the 5 bytes sent are counted, unless the reset discarded them before the read returned
    assert re.search(
        r" after [05] of 1000000 body bytes \(POST /v1/models/petseg:predict\); request dropped$", intake.lines[0]
    )
    assert ("reset the connection (ConnectionResetError)" if reset else "closed the connection") in intake.lines[0]
    assert "Traceback" not in capfd.readouterr().err
    assert released(intake.context.budget)
    status, answer, _ = post(intake.port, b"[1]")  # still serving
    assert status == 400 and answer == {"error": "JSON Value: [1] Is not object"}


def test_an_arrays_memory_is_afforded_once_its_shape_is_known_before_its_numbers_are_read():
    costs: list[int] = []

    def refuse(cost: int) -> None:
        costs.append(cost)
        raise ServingError(rest._UNAVAILABLE, "busy")

    body = orjson.dumps({"instances": np.ones((1, 200, 200, 3), np.uint8)}, option=orjson.OPT_SERIALIZE_NUMPY)
    with pytest.raises(ServingError, match="busy"):
        json_body.parse_document(body, 256, refuse)
    assert costs == [120_000 * json_body.NUMBER_BYTES]
