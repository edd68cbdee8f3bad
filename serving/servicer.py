"""TF Serving's gRPC services (PredictionService, ModelService) over a ModelManager.

Each refusal carries the code and message TF Serving answers the same request
with; the file and function each rule comes from is named where it is
checked, and tests/test_status_codes.py holds the table. Where TF Serving
gives no answer of its own (it would run the graph on a 30 GB tensor, or
decode a 12000 x 12000 PNG), this server refuses first and says why; those
rules are marked "local" here and in the table.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from petseg.components.core.errors import first_line
from petseg.serving.errors import ServingError, graph_error_cause, status_code
from petseg.serving.image_header import UnreadableHeader, declared_size
from petseg.serving.metrics import GRPC, Call, ServerMetrics
from petseg.serving.model_manager import LoadedVersion, ModelManager

DEFAULT_SIGNATURE = "serving_default"
METADATA_FIELD = "signature_def"
_INVALID = grpc.StatusCode.INVALID_ARGUMENT
# tensorflow/core/framework/types.cc DataTypeString, where it differs from tf.DType.name.
_TF_TYPE_NAMES = {"float32": "float", "float64": "double", "float16": "half"}


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask of the server."""

    max_message_bytes: int
    max_image_pixels: int | None = None  # encoded images (string inputs) declaring more are refused
    max_batch_size: int | None = None  # the batching config's max_batch_size; None = no bound


class InflightCounter:
    """How many requests are being handled right now, and when one last started or ended (for draining)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._count = 0
        self._last_change = time.monotonic()

    def __enter__(self):
        with self._lock:
            self._count += 1
            self._last_change = time.monotonic()

    def __exit__(self, *exc):
        with self._lock:
            self._count -= 1
            self._last_change = time.monotonic()

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def idle_for(self, seconds: float) -> bool:
        """True when nothing is being handled and nothing started or ended for `seconds`."""
        with self._lock:
            return self._count == 0 and time.monotonic() - self._last_change >= seconds


# ------------------------------------------------------------------- predict
def predict(manager: ModelManager, request, limits: RequestLimits):
    """Answer one PredictRequest with a PredictResponse, or raise ServingError.

    The checks run in TF Serving's order (predict_impl.cc TensorflowPredictor::Predict,
    then predict_util.cc RunPredict / PreProcessPrediction), so a request
    with several faults gets the same first complaint from both servers.
    """
    import tensorflow as tf

    if not request.HasField("model_spec"):
        raise ServingError(_INVALID, "Missing ModelSpec")  # predict_impl.cc
    loaded = resolve_spec(manager, request.model_spec)
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    if signature_name not in loaded.signatures:  # predict_util.cc RunPredict
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{signature_name}" not found.')
    specs = loaded.input_specs[signature_name]
    _check_input_keys(request.inputs, loaded.signature_defs.signature_def[signature_name])
    arrays_in = {key: _parse_tensor(key, request.inputs[key], limits.max_message_bytes) for key in sorted(specs)}
    outputs_wanted = _check_output_filter(request.output_filter, loaded.output_keys[signature_name])
    for key, array in arrays_in.items():  # local, before the batch size: a [64, 64, 3] image is not a batch of 64
        _check_rank(key, array, specs[key])
    _check_batch_size(arrays_in, limits.max_batch_size)
    inputs = {
        key: _check_against_signature(key, array, specs[key], arg_index, limits)
        for arg_index, (key, array) in enumerate(arrays_in.items())
    }
    try:
        results = loaded.signatures[signature_name](**inputs)
    except tf.errors.OpError as exc:  # the graph's own error: keep its code and cause, as the session does
        raise ServingError(status_code(exc.error_code), graph_error_cause(exc.message)) from None
    except (TypeError, ValueError) as exc:  # the signature's Python binding refused the inputs
        raise ServingError(_INVALID, first_line(exc)) from None
    arrays = {key: results[key].numpy() for key in outputs_wanted}
    answer_bytes = sum(_payload_bytes(a) for a in arrays.values())
    if answer_bytes > limits.max_message_bytes:  # local: gRPC would fail to send it anyway
        raise ServingError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the answer would be {answer_bytes / 2**20:.1f} MiB, over the "
            f"{limits.max_message_bytes / 2**20:.0f} MiB message limit; send fewer images per "
            f"request or ask for fewer outputs (output_filter)",
        )
    response = predict_pb2.PredictResponse()
    _fill_model_spec(response.model_spec, manager.model_name, loaded.version, signature_name)
    for key, array in arrays.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(array))
    return response


def _payload_bytes(array) -> int:
    """The bytes an output takes in a response: its strings' lengths (serving_png's PNGs), else its buffer."""
    if array.dtype == object:
        return sum(len(value) for value in array.ravel())
    return array.nbytes


def resolve_spec(manager: ModelManager, spec) -> LoadedVersion:
    """The version a ModelSpec names (server_core.cc ServableRequestFromModelSpec)."""
    if not spec.name:
        raise ServingError(_INVALID, "ModelSpec has no name specified.")
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return manager.resolve(version=spec.version.value, model_name=spec.name)
    if choice == "version_label":
        return manager.resolve(label=spec.version_label, model_name=spec.name)
    return manager.resolve(model_name=spec.name)


def _check_input_keys(given, signature_def) -> None:
    """predict_util.cc VerifyRequestInputsSize, then tensorflow/cc/saved_model/util.cc GetInputValues."""
    wanted = signature_def.inputs
    sent, declared = sorted(given), sorted(wanted)
    if len(sent) != len(declared):
        extra = sorted(set(sent) - set(declared))
        missing = sorted(set(declared) - set(sent))
        raise ServingError(
            _INVALID,
            f"input size does not match signature: {len(sent)}!={len(declared)} "
            f"len({{{','.join(sent)}}}) != len({{{','.join(declared)}}}). "
            f"Sent extra: {{{','.join(extra)}}}. "
            f"Missing but required: {{{','.join(missing)}}}.",
        )
    for alias in declared:
        if alias not in given:
            raise ServingError(
                _INVALID,
                f"Signature input alias: {alias}(feed name: {wanted[alias].name}) not "
                f"found in request and no default value provided. Inputs expected to "
                f"be in the request {{{','.join(sent)}}}, or default input alias set: ",
            )


def _check_output_filter(output_filter, output_keys: list[str]) -> list[str]:
    """predict_util.cc PreProcessPrediction: every alias known, none twice; none asked = all outputs."""
    seen: list[str] = []
    for alias in output_filter:
        if alias not in output_keys:
            raise ServingError(
                _INVALID,
                f"output tensor alias not found in signature: {alias} Outputs "
                f"expected to be in the set {{{','.join(sorted(output_keys))}}}.",
            )
        if alias in seen:
            raise ServingError(_INVALID, f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen or list(output_keys)


def _parse_tensor(key: str, proto, max_bytes: int):
    """The TensorProto as a numpy array (TF's Tensor::FromProto in GetInputValues).

    A proto that is not a tensor is TF's INVALID_ARGUMENT "tensor parsing error: KEY".
    local: a proto may declare a huge shape with one value to repeat; TF Serving
    would allocate all of it, so the size is checked against the message limit first.
    """
    import tensorflow as tf

    shape = [d.size for d in proto.tensor_shape.dim]
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:
        dtype = None
    if dtype is None or proto.tensor_shape.unknown_rank or any(n < 0 for n in shape):
        raise ServingError(_INVALID, f"tensor parsing error: {key}")
    elements = math.prod(shape)
    if dtype == tf.string:
        if len(proto.string_val) != elements:
            raise ServingError(
                _INVALID, f"tensor parsing error: {key} ({len(proto.string_val)} strings for shape {shape})"
            )
    else:
        needed = elements * dtype.size
        if needed > max_bytes:
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"input {key} of shape {shape} would take {needed / 2**20:.1f} MiB, over the "
                f"{max_bytes / 2**20:.0f} MiB limit",
            )
        if proto.tensor_content and len(proto.tensor_content) != needed:
            raise ServingError(
                _INVALID,
                f"tensor parsing error: {key} (tensor_content has "
                f"{len(proto.tensor_content)} bytes, shape {shape} needs {needed})",
            )
    try:
        return tf.make_ndarray(proto)
    except (ValueError, TypeError):
        raise ServingError(_INVALID, f"tensor parsing error: {key}") from None


def _check_batch_size(arrays: dict, max_batch_size: int | None) -> None:
    """The batch scheduler's bound (TF core shared_batch_scheduler.h ValidateBatchTaskQueueCapacity).

    TF Serving's BatchingSession takes the task size from the inputs' 0th dimension.
    """
    if max_batch_size is None:
        return
    size = max((a.shape[0] for a in arrays.values() if a.ndim), default=0)
    if size > max_batch_size:
        raise ServingError(_INVALID, f"Task size {size} is larger than maximum input batch size {max_batch_size}")


def _check_against_signature(key: str, array, spec, arg_index: int, limits: RequestLimits):
    """The input as a tensor, after the checks TF Serving makes (dtype) or this server adds (marked local)."""
    import tensorflow as tf

    dtype = tf.dtypes.as_dtype(array.dtype) if array.dtype != object else tf.string
    if dtype != spec.dtype:  # function.cc FunctionCallFrame::SetArgs, inside Session::Run
        raise ServingError(
            _INVALID, f"Expects arg[{arg_index}] to be {_type_name(spec.dtype)} but {_type_name(dtype)} is provided"
        )
    # local: TF Serving feeds any shape and the graph fails on it, naming a node of this model;
    # checking first gives the same code with a message that says what to send.
    shape = list(array.shape)
    for axis, (want, got) in enumerate(zip(spec.shape.as_list(), shape, strict=True)):
        if want is not None and want != got:
            raise ServingError(
                _INVALID,
                f"input {key} must have {want} in dimension {axis} "
                f"(shape {_shape_text(spec.shape)}), got shape {shape}",
            )
    if shape and shape[0] == 0:  # local
        raise ServingError(_INVALID, f"input {key} is an empty batch (shape {shape}); send at least one image")
    if dtype == tf.string and limits.max_image_pixels:
        _check_encoded_images(key, array.ravel(), limits.max_image_pixels)
    return tf.constant(array)


def _check_rank(key: str, array, spec) -> None:
    """local: an input of the wrong rank, refused with the shape to send (TF Serving: the same code, see below).

    TF Serving with --enable_batching takes dim 0 of whatever it is sent as the
    batch size (batching_session.cc ComputeInputSize), so one [64, 64, 3]
    image is "Task size 64 is larger than maximum input batch size 8";
    without batching the graph's first op refuses it. Both are INVALID_ARGUMENT.
    """
    import tensorflow as tf

    shape = list(array.shape)
    if spec.shape.rank is None or len(shape) == spec.shape.rank:
        return
    wanted = spec.shape.as_list()
    dtype = _type_name(tf.dtypes.as_dtype(spec.dtype))
    batch = "[" + ", ".join(["N", *("?" if d is None else str(d) for d in wanted[1:])]) + "]"
    message = f"input {key} must have rank {len(wanted)}: a batch of shape {batch} {dtype}; got shape {shape}"
    one_item = len(shape) == len(wanted) - 1 and all(w in (None, g) for w, g in zip(wanted[1:], shape, strict=True))
    if one_item:
        message += f", which is one item without the batch dimension: send it as shape {[1, *shape]}"
    raise ServingError(_INVALID, message)


def _type_name(dtype) -> str:
    return _TF_TYPE_NAMES.get(dtype.name, dtype.name)


def _check_encoded_images(key: str, encoded, max_pixels: int) -> None:
    """local: every encoded image's declared size, from its header, before anything decodes it."""
    for i, data in enumerate(encoded):
        try:
            size = declared_size(bytes(data))
        except UnreadableHeader as exc:
            raise ServingError(_INVALID, f"{key}[{i}]: {exc}") from None
        if size.decoded_pixels > max_pixels:
            frames = f" in {size.frames} frames" if size.frames > 1 else ""
            raise ServingError(
                _INVALID,
                f"{key}[{i}] is a {size.format} of {size.width}x{size.height}{frames}: "
                f"{size.decoded_pixels / 1e6:.1f} MP decoded, over this server's limit "
                f"of {max_pixels / 1e6:.1f} MP (serve.max_image_pixels); send a "
                "smaller image",
            )


def _shape_text(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape.as_list()) + "]"


def _fill_model_spec(spec, name: str, version: int, signature_name: str | None = None) -> None:
    spec.name = name
    spec.version.value = version
    if signature_name is not None:
        spec.signature_name = signature_name


# ------------------------------------------------------------------ services
class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference stay UNIMPLEMENTED."""

    def __init__(
        self,
        manager: ModelManager,
        limits: RequestLimits,
        inflight: InflightCounter,
        metrics: ServerMetrics | None = None,
    ):
        self._manager = manager
        self._limits = limits
        self._inflight = inflight
        self._metrics = metrics

    def Predict(self, request, context):
        with self._inflight:
            call = Call(GRPC)
            call.describe("Predict", request.model_spec, DEFAULT_SIGNATURE)
            return _answer(context, self._metrics, call, predict, self._manager, request, self._limits)

    def GetModelMetadata(self, request, context):
        with self._inflight:
            call = Call(GRPC)
            call.describe("GetModelMetadata", request.model_spec)
            return _answer(context, self._metrics, call, model_metadata, self._manager, request)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus; HandleReloadConfigRequest stays UNIMPLEMENTED (push rewrites models.config instead)."""

    def __init__(self, manager: ModelManager, inflight: InflightCounter, metrics: ServerMetrics | None = None):
        self._manager = manager
        self._inflight = inflight
        self._metrics = metrics

    def GetModelStatus(self, request, context):
        with self._inflight:
            call = Call(GRPC)
            call.describe("GetModelStatus", request.model_spec)
            return _answer(context, self._metrics, call, model_status, self._manager, request)


def _answer(context, metrics: ServerMetrics | None, call: Call, handler, *args) -> Any:
    """The handler's response, or its refusal as the RPC's status; either way counted once in metrics."""
    code = grpc.StatusCode.UNKNOWN  # what gRPC answers when a handler raises anything else (a bug)
    try:
        response = handler(*args)
        code = grpc.StatusCode.OK
        spec = getattr(response, "model_spec", None)  # GetModelStatusResponse has none
        if spec is not None and spec.HasField("version"):
            call.answered_by(spec.version.value)
        return response
    except ServingError as exc:
        code = exc.code
        context.abort(exc.code, exc.message)
    finally:
        if metrics is not None:
            metrics.record(call, code)


def model_metadata(manager: ModelManager, request):
    """GetModelMetadataResponse with the signature_def map (get_model_metadata_impl.cc).

    Order as there: ModelSpec present, then metadata_field (at least one, each
    "signature_def"), then the servable.
    """
    if not request.HasField("model_spec"):
        raise ServingError(_INVALID, "Missing ModelSpec")
    fields = list(request.metadata_field)
    if not fields:
        raise ServingError(_INVALID, "GetModelMetadataRequest must specify at least one metadata_field")
    for field_name in fields:
        if field_name != METADATA_FIELD:
            raise ServingError(_INVALID, f"Metadata field {field_name} is not supported")
    loaded = resolve_spec(manager, request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _fill_model_spec(response.model_spec, manager.model_name, loaded.version)
    response.metadata[METADATA_FIELD].Pack(loaded.signature_defs)
    return response


def model_status(manager: ModelManager, request):
    """GetModelStatusResponse as get_model_status_impl.cc builds it.

    Every version the server has seen, newest first (ServableStateMonitor's
    VersionMap is ordered by std::greater), or only the one asked for; a
    version_label is ignored there, so it is here. Each entry carries a
    status: OK, or the error the version failed to load with.
    """
    if not request.HasField("model_spec"):
        raise ServingError(_INVALID, "Missing ModelSpec")
    spec = request.model_spec
    states = manager.states() if spec.name == manager.model_name else {}
    if spec.WhichOneof("version_choice") == "version":
        if spec.version.value not in states:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Could not find version {spec.version.value} of model {spec.name}"
            )
        states = {spec.version.value: states[spec.version.value]}
    elif not states:
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, state in sorted(states.items(), reverse=True):
        entry = response.model_version_status.add()
        entry.version = version
        entry.state = state.state
        entry.status.SetInParent()  # error_code OK (0), as ToStatusProto writes for a healthy version
        if state.error:
            entry.status.error_code = 13  # INTERNAL: the load's own code is not kept by the manager
            entry.status.error_message = state.error
    return response
