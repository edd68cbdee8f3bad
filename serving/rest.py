"""TF Serving's REST API (g3doc/api_rest.md) over the same ModelManager as the gRPC services.

Paths, JSON forms and error answers follow tensorflow_serving/model_servers/
http_rest_api_handler.cc, http_rest_api_util.cc and util/json_tensor.cc:

- GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status
- GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature map
- POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict     row ("instances") or
  columnar ("inputs") JSON; a string input is a JSON string or {"b64": "..."};
  the answer is "predictions" (row) or "outputs" (columnar), every output of
  the signature (REST has no output_filter); a string output whose alias ends
  in "_bytes" (serving_png's mask_png_bytes) is written as {"b64": "..."}.

A refusal is {"error": "..."} with the HTTP status http_server.cc maps the
canonical code to (INVALID_ARGUMENT and FAILED_PRECONDITION 400, NOT_FOUND
404, UNAVAILABLE 503, ...). The request itself goes through servicer.predict,
so REST and gRPC refuse the same things with the same messages.

Served by the standard library's ThreadingHTTPServer (HTTP/1.1, keep-alive, one
thread per connection): the work per request is the model run, which is
bounded by a semaphore of serve.workers, so an asynchronous framework would
add a dependency and an event loop without serving more. JSON is written with
orjson (float32 at its shortest exact form, as TF Serving writes it) and read
by serving/json_body.py: numeric arrays straight into numpy, the rest with
orjson, nesting refused past serve.rest_max_json_depth before anything is
parsed. The memory bodies take is bounded by serve.rest_body_budget_mb
(serving/body_budget.py): a body is refused at once when it does not fit,
never queued (docs/rest-server-limits.md).
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import grpc
import numpy as np
import orjson

from petseg.components.contracts import signatures
from petseg.serving import json_body, servicer
from petseg.serving.body_budget import BodyBudget, Reservation
from petseg.serving.errors import ServingError, http_status
from petseg.serving.metrics import METRICS_PATH, REST, Call, ServerMetrics
from petseg.serving.model_manager import ModelManager

# http_rest_api_util.cc kPredictionApiGegex / kModelStatusApiRegex (case-insensitive, whole path).
PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE
)
STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE
)
API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
_INVALID = grpc.StatusCode.INVALID_ARGUMENT
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
MIB = 2**20
BODY_SECONDS = 60.0  # a body must arrive within this long, so a slow sender cannot hold its reservation forever
READ_CHUNK = 2**20
_MAX_DEBUG_CHARS = 256  # json_tensor.cc kMaxJsonDebugStringBytes
_INT_RANGES = {
    np.dtype(t): (np.iinfo(t).min, np.iinfo(t).max)
    for t in (np.uint8, np.int8, np.int16, np.int32, np.int64, np.uint16, np.uint32, np.uint64)
}


def _log_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class RestContext:
    """What every REST request needs: the models, the limits, and the count of requests in flight."""

    manager: ModelManager
    limits: servicer.RequestLimits
    inflight: servicer.InflightCounter
    model_runs: threading.BoundedSemaphore
    metrics: ServerMetrics | None = None  # None: nothing counted, no /monitoring/prometheus/metrics
    budget: BodyBudget = field(default_factory=lambda: BodyBudget(256 * MIB))  # serve.rest_body_budget_mb
    max_json_depth: int = 256  # serve.rest_max_json_depth
    log: Callable[[str], None] = _log_to_stderr  # the server's log: one line per event


class BodyTooLarge(ServingError):
    """RESOURCE_EXHAUSTED for a body no budget left free would take: answered 413, as the message-size limit is."""

    def __init__(self, message: str):
        super().__init__(_EXHAUSTED, message)


# ----------------------------------------------------------------- dispatch
def handle(
    context: RestContext,
    method: str,
    path: str,
    body: bytes | bytearray,
    call: Call | None = None,
    reservation: Reservation | None = None,
) -> tuple[int, bytes]:
    """(HTTP status, JSON body) for one request, as HttpRestApiHandler::ProcessRequest answers it.

    With a Call, the request is counted in context.metrics under the canonical
    code it was answered with (OK, INVALID_ARGUMENT, ...), as TF Serving counts.
    The parse's memory is reserved on `reservation` (the one the body was read
    under); without one, a reservation of the body's size is taken here.
    """
    call = Call(REST) if call is None else call
    code = grpc.StatusCode.UNKNOWN  # a bug escaping from here; the handler answers it 500
    own = None
    try:
        if reservation is None:
            reservation = own = reserve_body(context.budget, len(body))
        answer = 200, _dispatch(context, method, path, body, call, reservation)
        code = grpc.StatusCode.OK
        return answer
    except ServingError as exc:
        code = exc.code
        return 413 if isinstance(exc, BodyTooLarge) else http_status(exc.code), orjson.dumps({"error": exc.message})
    except MemoryError:  # the process's address space is full: refuse this one, keep serving the rest
        code = _EXHAUSTED
        context.log(f"petseg serve: out of memory answering {method} {path} ({len(body)} body bytes); refused")
        message = "the server ran out of memory for this request; send fewer or smaller images per request"
        return http_status(code), orjson.dumps({"error": message})
    finally:
        if own is not None:
            own.release()
        if context.metrics is not None:
            context.metrics.record(call, code)


def reserve_body(budget: BodyBudget, size: int) -> Reservation:
    """A reservation of size bytes of the body budget, or the refusal: 413 over the whole budget, else 503."""
    if size > budget.largest:
        raise BodyTooLarge(
            f"request body of {size / MIB:.1f} MiB is over the {budget.largest / MIB:.0f} MiB one request may take "
            f"of the REST body budget ({budget.capacity / MIB:.0f} MiB, serve.rest_body_budget_mb); send fewer or "
            "smaller images per request"
        )
    reservation = budget.reserve(size)
    if reservation is None:
        raise ServingError(_UNAVAILABLE, _busy_message(budget, size))
    return reservation


def _busy_message(budget: BodyBudget, size: int) -> str:
    return (
        f"the server is busy: {budget.used / MIB:.0f} of its {budget.capacity / MIB:.0f} MiB for request bodies "
        f"(serve.rest_body_budget_mb) are in use and this request needs {size / MIB:.1f} MiB; retry shortly"
    )


def _afford(reservation: Reservation) -> Callable[[int], None]:
    """What json_body.parse_document calls with a parse's cost: grow the reservation, or refuse the request."""

    def afford(cost: int) -> None:
        budget = reservation.budget
        if reservation.held + cost > budget.largest:
            raise BodyTooLarge(
                f"parsing this body would take {(reservation.held + cost) / MIB:.0f} MiB, over the "
                f"{budget.largest / MIB:.0f} MiB one request may take of the REST body budget "
                f"({budget.capacity / MIB:.0f} MiB, serve.rest_body_budget_mb); send the images as plain numeric "
                "arrays or as b64 strings, or fewer per request"
            )
        if not reservation.grow(cost):
            raise ServingError(_UNAVAILABLE, _busy_message(budget, reservation.held + cost))

    return afford


def _dispatch(
    context: RestContext, method: str, path: str, body: bytes | bytearray, call: Call, reservation: Reservation
) -> bytes:
    match = (PREDICT_PATH if method == "POST" else STATUS_PATH).fullmatch(path) if method in ("POST", "GET") else None
    if match is None:
        raise ServingError(_INVALID, f"Malformed request: {method} {path}")
    name, version_text, label = (unquote(match.group(1) or ""), match.group(2), match.group(3))
    call.model_name = name
    spec = _model_spec(name, version_text, None if label is None else unquote(label))
    if method == "POST":
        verb = match.group(4).lower()
        call.describe(verb.capitalize(), spec, servicer.DEFAULT_SIGNATURE)
        if verb != "predict":
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{verb} is not served here: this model has predict signatures only; use :predict",
            )
        with context.inflight:
            return predict(context, spec, body, call, reservation)
    call.describe("GetModelMetadata" if match.group(4) else "GetModelStatus", spec)
    if not name:
        raise ServingError(_INVALID, "Missing model name in request.")
    with context.inflight:
        if match.group(4):
            return model_metadata(context.manager, spec, call)
        return model_status(context.manager, spec)


def _model_spec(name: str, version_text: str | None, label: str | None):
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=name)
    if version_text is not None:
        version = int(version_text)
        if version >= 2**63:
            raise ServingError(_INVALID, f"Failed to convert version: {version_text} to numeric.")
        spec.version.value = version
    if label is not None:
        spec.version_label = label
    return spec


# ------------------------------------------------------------ status, metadata
def model_status(manager: ModelManager, spec) -> bytes:
    """GetModelStatus as JSON (json_name field names, every field printed), as ToJsonString writes it."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
    response = servicer.model_status(manager, request)
    return json_format.MessageToJson(response, always_print_fields_with_no_presence=True, indent=1).encode()


def model_metadata(manager: ModelManager, spec, call: Call | None = None) -> bytes:
    """GetModelMetadata (signature_def) as JSON, proto field names kept, as ToJsonString writes it."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=["signature_def"])
    response = servicer.model_metadata(manager, request)
    if call is not None:
        call.answered_by(response.model_spec.version.value)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_defs)

    def as_dict(message) -> dict:
        return json_format.MessageToDict(
            message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
        )

    return orjson.dumps(
        {"model_spec": as_dict(response.model_spec), "metadata": {"signature_def": as_dict(signature_defs)}},
        option=orjson.OPT_INDENT_2,
    )


# ------------------------------------------------------------------- predict
def predict(
    context: RestContext,
    spec,
    body: bytes | bytearray,
    call: Call | None = None,
    reservation: Reservation | None = None,
) -> bytes:
    """A predict request in JSON -> PredictRequest -> servicer.predict -> JSON (json_tensor.cc).

    The body is parsed outside the model-run semaphore (its memory is bounded
    by the body budget instead), so a small request is not held behind a large
    body's parse; only the model run waits for one of serve.workers.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    afford = _afford(reservation) if reservation is not None else (lambda cost: None)
    document = _parse_json(body, context.max_json_depth, afford)
    signature_name = document.get("signature_name")
    if signature_name is not None and not isinstance(signature_name, str):
        raise ServingError(
            _INVALID,
            f"JSON Value: {_debug(document)} not formatted correctly. 'signature_name' key must be a string value.",
        )
    if signature_name:
        spec.signature_name = signature_name
        if call is not None:
            call.signature = signature_name
    loaded = servicer.resolve_spec(context.manager, spec)  # http_rest_api_handler.cc GetInfoMap
    signature = signature_name or servicer.DEFAULT_SIGNATURE
    if signature not in loaded.signature_defs.signature_def:
        raise ServingError(_INVALID, f'Serving signature name: "{signature}" not found in signature def')
    input_dtypes = {
        alias: tf.dtypes.as_dtype(info.dtype)
        for alias, info in sorted(loaded.signature_defs.signature_def[signature].inputs.items())
    }
    if not input_dtypes:
        raise ServingError(_INVALID, f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    if ("instances" in document and "inputs" in document) or not ("instances" in document or "inputs" in document):
        if "instances" in document:
            raise ServingError(
                _INVALID,
                f"JSON Value: {_debug(document)} Not formatted correctly expecting only "
                "one of 'inputs' or 'instances' keys to exist ",
            )
        raise ServingError(_INVALID, "Missing 'inputs' or 'instances' key")
    row = "instances" in document
    arrays = (
        _row_inputs(document["instances"], input_dtypes) if row else _columnar_inputs(document["inputs"], input_dtypes)
    )
    del document  # the parsed numbers are in arrays now
    request = predict_pb2.PredictRequest(model_spec=spec)
    for alias, array in arrays.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(array, dtype=input_dtypes[alias]))
    del arrays
    with context.model_runs:
        response = servicer.predict(context.manager, request, context.limits)
    if call is not None:
        call.answered_by(response.model_spec.version.value)
    outputs = {alias: tf.make_ndarray(tensor) for alias, tensor in sorted(response.outputs.items())}
    return _row_answer(outputs) if row else _columnar_answer(outputs)


def _parse_json(body: bytes | bytearray, max_depth: int, afford: Callable[[int], None]) -> dict:
    document = json_body.parse_document(body, max_depth, afford)
    if not isinstance(document, dict):
        raise ServingError(_INVALID, f"JSON Value: {_debug(document)} Is not object")
    return document


def _row_inputs(instances: Any, dtypes: dict) -> dict[str, np.ndarray]:
    """json_tensor.cc FillTensorMapFromInstancesList: one list item per batch element."""
    if isinstance(instances, json_body.ParsedArray) and instances.values.ndim:  # a numeric batch, read already
        if len(dtypes) > 1:
            raise ServingError(
                _INVALID,
                "instances is a plain list, but expecting list of objects as multiple "
                "input tensors required as per tensorinfo_map",
            )
        alias = next(iter(dtypes))
        return {alias: _dense(instances, dtypes[alias], f"'instances' list, input {alias}")}
    if not isinstance(instances, list):
        raise ServingError(
            _INVALID, f"JSON Value: {_debug({'instances': instances})} Expecting 'instances' to be an list/array"
        )
    if not instances:
        raise ServingError(_INVALID, f"JSON Value: {_debug({'instances': instances})} No values in 'instances' array")
    as_objects = _is_named(instances[0])
    if not as_objects and len(dtypes) > 1:
        raise ServingError(
            _INVALID,
            "instances is a plain list, but expecting list of objects as multiple "
            "input tensors required as per tensorinfo_map",
        )
    if not as_objects:
        alias = next(iter(dtypes))
        for i, item in enumerate(instances):
            if _is_named(item):
                raise ServingError(_INVALID, f"Expecting value/list but got object at item {i} of input list")
        return {alias: _dense(instances, dtypes[alias], f"'instances' list, input {alias}")}
    columns: dict[str, list] = {alias: [] for alias in dtypes}
    for i, item in enumerate(instances):
        if not _is_named(item):
            raise ServingError(_INVALID, f"Expecting object but got list at item {i} of input list")
        if set(item) != set(dtypes):
            raise ServingError(
                _INVALID,
                f"Failed to process element: {i} of 'instances' list. JSON object: "
                f"{_debug(item)} keys must be equal to: {','.join(dtypes)}",
            )
        for alias in dtypes:
            columns[alias].append(item[alias])
    return {
        alias: _dense(values, dtypes[alias], f"'instances' list, input {alias}") for alias, values in columns.items()
    }


def _columnar_inputs(inputs: Any, dtypes: dict) -> dict[str, np.ndarray]:
    """json_tensor.cc FillTensorMapFromInputsMap: a value for the one input, or an object of named values."""
    if not _is_named(inputs):
        if len(dtypes) > 1:
            raise ServingError(
                _INVALID,
                "inputs is a plain value/list, but expecting an object as multiple "
                "input tensors required as per tensorinfo_map",
            )
        alias = next(iter(dtypes))
        return {alias: _dense(inputs, dtypes[alias], f"'inputs' value for {alias}")}
    arrays = {}
    for alias, dtype in dtypes.items():
        if alias not in inputs:
            raise ServingError(_INVALID, f"Missing named input: {alias} in 'inputs' object.")
        arrays[alias] = _dense(inputs[alias], dtype, f"'inputs' value for {alias}")
    return arrays


def _is_named(value: Any) -> bool:
    """A JSON object that is not a {"b64": "..."} value."""
    return isinstance(value, dict) and not _is_b64(value)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _dense(value: Any, dtype, where: str) -> np.ndarray:
    """A nested JSON list as a dense array of the signature's dtype, or TF Serving's kind of refusal."""
    import tensorflow as tf

    if dtype == tf.string:
        return _strings(value, where)
    if isinstance(value, json_body.ParsedArray):
        return _parsed_numbers(value, dtype)
    if isinstance(value, list) and any(isinstance(item, json_body.ParsedArray) for item in value):
        value = [_parsed_numbers(item, dtype) if isinstance(item, json_body.ParsedArray) else item for item in value]
    try:
        array = np.array(value)
    except ValueError:
        raise ServingError(
            _INVALID,
            f"{where}: Encountered list at unexpected size (the lists of a tensor must all have the same length)",
        ) from None
    want = dtype.as_numpy_dtype
    kind = array.dtype.kind
    if array.size and (kind not in "iuf" or (kind == "f" and not dtype.is_floating)):
        bad = _first_of_wrong_type(value, dtype.is_floating)
        raise ServingError(
            _INVALID, f"JSON Value: {_debug(bad)} Type: {_json_type(bad)} is not of expected type: {dtype.name}"
        )
    if array.size and np.dtype(want) in _INT_RANGES:
        low, high = _INT_RANGES[np.dtype(want)]
        if array.min() < low or array.max() > high:
            bad = array.min() if array.min() < low else array.max()
            raise ServingError(
                _INVALID, f"JSON Value: {int(bad)} Type: Number is not of expected type: {dtype.name} (out of range)"
            )
    return array.astype(want, copy=False)


def _parsed_numbers(parsed: json_body.ParsedArray, dtype) -> np.ndarray:
    """A numeric array read by json_body as the signature's dtype, refused as _dense refuses the same JSON."""
    if parsed.first_float is not None and not dtype.is_floating:
        raise ServingError(
            _INVALID, f"JSON Value: {parsed.first_float} Type: Number is not of expected type: {dtype.name}"
        )
    if parsed.first_long_int is not None and not dtype.is_floating:
        raise ServingError(
            _INVALID,
            f"JSON Value: {parsed.first_long_int} Type: Number is not of expected type: {dtype.name} (out of range)",
        )
    array = parsed.values
    want = np.dtype(dtype.as_numpy_dtype)
    if array.size and want in _INT_RANGES:
        low, high = _INT_RANGES[want]
        if array.min() < low or array.max() > high:
            bad = array.min() if array.min() < low else array.max()
            raise ServingError(
                _INVALID, f"JSON Value: {int(bad)} Type: Number is not of expected type: {dtype.name} (out of range)"
            )
    return array.astype(want, copy=False)


def _strings(value: Any, where: str) -> np.ndarray:
    """A (nested) list of JSON strings or {"b64": ...} objects as a bytes array."""

    def leaf(item):
        if isinstance(item, str):
            return item.encode()
        if _is_b64(item):
            try:
                return base64.b64decode(item["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise ServingError(_INVALID, "Unable to base64 decode") from None
        if isinstance(item, dict):
            raise ServingError(_INVALID, f"JSON Value: {_debug(item)} not formatted correctly for base64 data")
        if isinstance(item, json_body.ParsedArray):
            raise ServingError(_INVALID, f"JSON Value: {item.first_token} Type: Number is not of expected type: string")
        raise ServingError(
            _INVALID, f"JSON Value: {_debug(item)} Type: {_json_type(item)} is not of expected type: string"
        )

    def walk(item):  # the depth is bounded by serve.rest_max_json_depth, checked before parsing
        return [walk(x) for x in item] if isinstance(item, list) else leaf(item)

    nested = walk(value)
    try:
        array = np.array(nested, dtype=object)
    except ValueError:
        raise ServingError(
            _INVALID,
            f"{where}: Encountered list at unexpected size (the lists of a tensor must all have the same length)",
        ) from None
    if array.size and not all(isinstance(x, bytes) for x in array.ravel()):
        raise ServingError(
            _INVALID,
            f"{where}: Encountered list at unexpected size (the lists of a tensor must all have the same length)",
        )
    return array


def _first_of_wrong_type(value: Any, floats_ok: bool) -> Any:
    stack = [value]
    while stack:
        item = stack.pop(0)
        if isinstance(item, list):
            stack[:0] = item
        elif (
            isinstance(item, bool) or not isinstance(item, (int, float)) or (isinstance(item, float) and not floats_ok)
        ):
            return item
    return value


def _json_type(value: Any) -> str:
    return {
        type(None): "Null",
        bool: "True" if value is True else "False",
        dict: "Object",
        list: "Array",
        str: "String",
    }.get(type(value), "Number")


def _debug(value: Any) -> str:
    text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=_debug_default).decode(errors="replace")
    return text if len(text) <= _MAX_DEBUG_CHARS else text[:_MAX_DEBUG_CHARS] + "..."


def _debug_default(value: Any) -> Any:
    if isinstance(value, json_body.ParsedArray):
        return orjson.Fragment(value.excerpt)  # the array as it was written (its first 256 characters)
    raise TypeError


# ------------------------------------------------------------------ answers
def _json_value(alias: str, array: np.ndarray) -> Any:
    """An output as orjson writes it: numbers as they are; strings as text, or {"b64"} for *_bytes outputs.

    json_tensor.cc IsNamedTensorBytes (tag 2.20.0, unchanged on master): a DT_STRING
    output is written as {"b64": base64} only when its alias ends in "_bytes"
    (serving_png's mask_png_bytes); any other string goes out as a JSON string.
    TF Serving writes those raw bytes unescaped (invalid JSON for binary data);
    here they are decoded as UTF-8 with replacement, so the answer stays JSON.
    """
    if array.dtype == object:
        if alias.endswith(signatures.BYTES_SUFFIX):
            return np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()}, otypes=[object])(array).tolist()
        return np.vectorize(lambda b: b.decode(errors="replace"), otypes=[object])(array).tolist()
    return np.ascontiguousarray(array)


def _row_answer(outputs: dict[str, np.ndarray]) -> bytes:
    """json_tensor.cc MakeRowFormatJsonFromTensors: {"predictions": [per batch element]}."""
    sizes = {alias: a.shape[0] for alias, a in outputs.items() if a.ndim}
    if len(sizes) != len(outputs) or len(set(sizes.values())) > 1:
        raise ServingError(
            _INVALID, f"Tensor name: {next(iter(outputs))} has inconsistent batch size (outputs' batch sizes: {sizes})"
        )
    batch = next(iter(sizes.values()), 0)
    values = {alias: _json_value(alias, a) for alias, a in outputs.items()}
    if len(outputs) == 1:
        (only,) = values.values()
        predictions = list(only)
    else:
        predictions = [{alias: v[i] for alias, v in values.items()} for i in range(batch)]
    return orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)


def _columnar_answer(outputs: dict[str, np.ndarray]) -> bytes:
    """json_tensor.cc MakeColumnarFormatJsonFromTensors: {"outputs": value or {alias: value}}."""
    values = {alias: _json_value(alias, a) for alias, a in outputs.items()}
    body = next(iter(values.values())) if len(values) == 1 else values
    return orjson.dumps({"outputs": body}, option=orjson.OPT_SERIALIZE_NUMPY)


# ------------------------------------------------------------------- server
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "petseg-serve"
    timeout = 60  # an idle keep-alive connection is closed after this long
    disable_nagle_algorithm = True  # headers and body go out as two writes; don't hold the second for an ACK

    def do_GET(self):
        context: RestContext = self.server.context
        if context.metrics is not None and urlsplit(self.path).path == METRICS_PATH:
            body, content_type = context.metrics.exposition(self.headers.get("Accept"))
            self._reply(200, body, content_type)
            return
        self._respond("GET")

    def do_POST(self):
        self._respond("POST")

    def _respond(self, method: str) -> None:
        """Answer one request: refuse what will not be read, reserve the body's memory, read it, answer it."""
        context: RestContext = self.server.context  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        if not API_PATH.fullmatch(path):  # http_server.cc: only /v1/... is dispatched
            self.close_connection = True  # its body (if any) is not read
            self._reply(404, orjson.dumps({"error": f"no handler for {path}; the API is under /v1/models/"}))
            return
        call = Call(REST)
        predict_path = PREDICT_PATH.fullmatch(path) if method == "POST" else None
        if predict_path is not None:  # named now, so a refusal before the body is read still says which model
            call.api, call.model_name = predict_path.group(4).capitalize(), unquote(predict_path.group(1))
        refusal = self._transport_refusal(context)
        length = 0 if refusal else int(self.headers.get("Content-Length") or 0)
        reservation = None
        if refusal is None:
            try:
                reservation = reserve_body(context.budget, length)
            except ServingError as exc:  # over the whole budget (413), or no room now (503): refused at once
                status = 413 if isinstance(exc, BodyTooLarge) else http_status(exc.code)
                refusal = exc.code, status, exc.message
        if refusal is not None or reservation is None:
            code, status, message = refusal  # type: ignore[misc]
            if context.metrics is not None:
                context.metrics.record(call, code)
            self.close_connection = True
            self._reply(status, orjson.dumps({"error": message}))
            self._discard(self._declared_length())  # so the client reads the answer rather than a reset
            return
        with reservation:
            body = self._read_body(length)
            if body is None:  # the client went away (or stalled) mid-body: one line, no answer to send
                self.close_connection = True
                if context.metrics is not None:
                    context.metrics.record(call, grpc.StatusCode.CANCELLED)
                return
            self._reply(*self._answer(context, method, path, body, call, reservation))

    def _answer(
        self, context: RestContext, method: str, path: str, body: bytearray, call: Call, reservation: Reservation
    ) -> tuple[int, bytes]:
        try:
            return handle(context, method, path, body, call, reservation)
        except Exception as exc:  # a bug: answer INTERNAL (500) as TF Serving would, and keep the traceback
            traceback.print_exc(file=sys.stderr)
            return 500, orjson.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"})

    def _declared_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            return 0

    def _transport_refusal(self, context: RestContext) -> tuple[grpc.StatusCode, int, str] | None:
        """(code, HTTP status, message) for a body this server will not read, else None."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return _INVALID, 411, "send the body with a Content-Length (chunked bodies are not read)"
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            return _INVALID, 400, "Content-Length is not a number of bytes"
        if length > context.limits.max_message_bytes:  # local: transport limit, like gRPC's message limit
            return (
                _EXHAUSTED,
                413,
                f"request body of {length / MIB:.1f} MiB is over the "
                f"{context.limits.max_message_bytes / MIB:.0f} MiB limit (serve.max_message_mb); send fewer "
                "or smaller images",
            )
        return None

    def _read_body(self, length: int) -> bytearray | None:
        """The body's length bytes; None (after one log line) when the client closes or stalls before sending them.

        The whole body must arrive within BODY_SECONDS: its reservation is held meanwhile.
        """
        body = bytearray(length)
        view = memoryview(body)
        got = 0
        deadline = time.monotonic() + BODY_SECONDS
        reason = ""
        while got < length and not reason:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = f"did not send it within {BODY_SECONDS:.0f} s"
                break
            self.connection.settimeout(min(self.timeout, remaining))
            try:
                count = self.rfile.readinto(view[got : got + READ_CHUNK])
            except TimeoutError:
                reason = f"sent nothing for {min(self.timeout, remaining):.0f} s"
            except OSError as exc:
                reason = f"reset the connection ({type(exc).__name__})"
            else:
                if not count:
                    reason = "closed the connection"
                got += count or 0
        view.release()
        if reason:
            host, port = self.client_address[:2]
            self.server.context.log(  # type: ignore[attr-defined]
                f"petseg serve: REST client {host}:{port} {reason} after {got} of {length} body bytes "
                f"({self.command} {urlsplit(self.path).path}); request dropped"
            )
            return None
        self.connection.settimeout(self.timeout)
        return body

    def _discard(self, length: int, chunk: int = 2**16) -> None:
        """Read and drop up to length bytes, for at most BODY_SECONDS."""
        deadline = time.monotonic() + BODY_SECONDS
        try:
            while length > 0 and time.monotonic() < deadline:
                got = self.rfile.read(min(chunk, length))
                if not got:
                    return
                length -= len(got)
        except OSError:
            return  # the client went away: nothing more to read, and the connection closes anyway

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 503:  # busy now (body budget full, no version loaded yet): worth retrying
            self.send_header("Retry-After", "1")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass  # one line per request is noise here; refusals reach the client with their reason


class RestServer(ThreadingHTTPServer):
    """ThreadingHTTPServer holding the RestContext its handlers answer from."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's listen backlog is 5: while handler threads hold the GIL decoding JSON, a burst
    # of new clients overflowed it and got resets. The system's maximum, as gRPC's listener uses.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address: tuple[str, int], context: RestContext):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.context = context

    def handle_error(self, request, client_address) -> None:
        """A client that went away is one log line; anything else is a bug, with its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log = getattr(self.context, "log", _log_to_stderr)
            log(f"petseg serve: REST client {client_address[0]}:{client_address[1]} went away ({type(error).__name__})")
            return
        super().handle_error(request, client_address)


def start_rest_server(host: str, port: int, context: RestContext) -> tuple[RestServer, threading.Thread]:
    """Listen on host:port (0 = a free port) and serve in a daemon thread."""
    server = RestServer((host.strip("[]"), port), context)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="petseg-rest", daemon=True
    )
    thread.start()
    return server, thread
