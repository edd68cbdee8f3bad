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
add a dependency and an event loop without serving more. JSON is read and
written with orjson, which parses a 500x375 image's 562,500 numbers and
writes float32 arrays (at their shortest exact form, as TF Serving does)
several times faster than the json module.
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import grpc
import numpy as np
import orjson

from petseg.components.contracts import signatures
from petseg.serving import servicer
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
_MAX_DEBUG_CHARS = 256  # json_tensor.cc kMaxJsonDebugStringBytes
_INT_RANGES = {
    np.dtype(t): (np.iinfo(t).min, np.iinfo(t).max)
    for t in (np.uint8, np.int8, np.int16, np.int32, np.int64, np.uint16, np.uint32, np.uint64)
}


@dataclass
class RestContext:
    """What every REST request needs: the models, the limits, and the count of requests in flight."""

    manager: ModelManager
    limits: servicer.RequestLimits
    inflight: servicer.InflightCounter
    model_runs: threading.BoundedSemaphore
    metrics: ServerMetrics | None = None  # None: nothing counted, no /monitoring/prometheus/metrics


# ----------------------------------------------------------------- dispatch
def handle(context: RestContext, method: str, path: str, body: bytes, call: Call | None = None) -> tuple[int, bytes]:
    """(HTTP status, JSON body) for one request, as HttpRestApiHandler::ProcessRequest answers it.

    With a Call, the request is counted in context.metrics under the canonical
    code it was answered with (OK, INVALID_ARGUMENT, ...), as TF Serving counts.
    """
    call = Call(REST) if call is None else call
    code = grpc.StatusCode.UNKNOWN  # a bug escaping from here; the handler answers it 500
    try:
        answer = 200, _dispatch(context, method, path, body, call)
        code = grpc.StatusCode.OK
        return answer
    except ServingError as exc:
        code = exc.code
        return http_status(exc.code), orjson.dumps({"error": exc.message})
    finally:
        if context.metrics is not None:
            context.metrics.record(call, code)


def _dispatch(context: RestContext, method: str, path: str, body: bytes, call: Call) -> bytes:
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
        with context.inflight, context.model_runs:
            return predict(context, spec, body, call)
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
def predict(context: RestContext, spec, body: bytes, call: Call | None = None) -> bytes:
    """A predict request in JSON -> PredictRequest -> servicer.predict -> JSON (json_tensor.cc)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    document = _parse_json(body)
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
    request = predict_pb2.PredictRequest(model_spec=spec)
    for alias, array in arrays.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(array, dtype=input_dtypes[alias]))
    response = servicer.predict(context.manager, request, context.limits)
    if call is not None:
        call.answered_by(response.model_spec.version.value)
    outputs = {alias: tf.make_ndarray(tensor) for alias, tensor in sorted(response.outputs.items())}
    return _row_answer(outputs) if row else _columnar_answer(outputs)


def _parse_json(body: bytes) -> dict:
    if not body:
        raise ServingError(_INVALID, "JSON Parse error: The document is empty")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServingError(_INVALID, f"JSON Parse error: {exc.msg} at offset: {exc.pos}") from None
    if not isinstance(document, dict):
        raise ServingError(_INVALID, f"JSON Value: {_debug(document)} Is not object")
    return document


def _row_inputs(instances: Any, dtypes: dict) -> dict[str, np.ndarray]:
    """json_tensor.cc FillTensorMapFromInstancesList: one list item per batch element."""
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
        raise ServingError(
            _INVALID, f"JSON Value: {_debug(item)} Type: {_json_type(item)} is not of expected type: string"
        )

    def walk(item):
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
    text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode(errors="replace")
    return text if len(text) <= _MAX_DEBUG_CHARS else text[:_MAX_DEBUG_CHARS] + "..."


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
        self._reply(*self._answer("GET"))

    def do_POST(self):
        self._reply(*self._answer("POST"))

    def _answer(self, method: str) -> tuple[int, bytes]:
        context: RestContext = self.server.context  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        if not API_PATH.fullmatch(path):  # http_server.cc: only /v1/... is dispatched
            return 404, orjson.dumps({"error": f"no handler for {path}; the API is under /v1/models/"})
        call = Call(REST)
        predict_path = PREDICT_PATH.fullmatch(path) if method == "POST" else None
        if predict_path is not None:  # named now, so a refusal before the body is read still says which model
            call.api, call.model_name = predict_path.group(4).capitalize(), unquote(predict_path.group(1))
        refusal = self._transport_refusal(context, path)
        if refusal is not None:
            code, status, message = refusal
            if context.metrics is not None:
                context.metrics.record(call, code)
            return status, orjson.dumps({"error": message})
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            return handle(context, method, path, body, call)
        except Exception as exc:  # a bug: answer INTERNAL (500) as TF Serving would, and keep the traceback
            traceback.print_exc(file=sys.stderr)
            return 500, orjson.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"})

    def _transport_refusal(self, context: RestContext, path: str) -> tuple[grpc.StatusCode, int, str] | None:
        """(code, HTTP status, message) for a body this server will not read, else None."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return _INVALID, 411, "send the body with a Content-Length (chunked bodies are not read)"
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            return _INVALID, 400, "Content-Length is not a number of bytes"
        if length > context.limits.max_message_bytes:  # local: transport limit, like gRPC's message limit
            self.close_connection = True
            self._discard(length)  # read (and drop) it, so the client gets the answer rather than a reset
            return (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                413,
                f"request body of {length / 2**20:.1f} MiB is over the "
                f"{context.limits.max_message_bytes / 2**20:.0f} MiB limit (serve.max_message_mb); send fewer "
                "or smaller images",
            )
        return None

    def _discard(self, length: int, chunk: int = 2**16) -> None:
        while length > 0:
            got = self.rfile.read(min(chunk, length))
            if not got:
                return
            length -= len(got)

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
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


def start_rest_server(host: str, port: int, context: RestContext) -> tuple[RestServer, threading.Thread]:
    """Listen on host:port (0 = a free port) and serve in a daemon thread."""
    server = RestServer((host.strip("[]"), port), context)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="petseg-rest", daemon=True
    )
    thread.start()
    return server, thread
