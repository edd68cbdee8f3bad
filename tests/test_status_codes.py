"""TF Serving's status codes and messages, as a table run against the local server (and a real one).

Each row is a request, the code TF Serving answers it with, a fragment of its
message, and the TF Serving source that decides it (tensorflow/serving unless
the path starts with tensorflow/, which is TensorFlow's core). Rows marked
"local" are rules TF Serving does not have (it would decode a 12000 x 12000
PNG) or whose TF Serving message names a node of this model's graph; their
code is checked everywhere, their message only here.

With TF_SERVING_TARGET=HOST:PORT the same table also runs against a real
tensorflow_model_server serving this project's model as `petseg` with
versions 1 and 2 loaded, the label stable -> 1, and the deployment's
batching flags (--enable_batching
--batching_parameters_file=serving/deploy/batching.config); without it those
tests are skipped. Every request goes through the stock stubs generated in
tensorflow_serving.apis.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from helpers import bomb_png

from petseg.components.contracts import signatures
from petseg.components.core.params import ServeParams

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from petseg.serving.server import message_options, start_server  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCHING_FILE = os.path.join(REPO_ROOT, "serving", "deploy", "batching.config")
SERVE = ServeParams(poll_seconds=0.5, workers=4, max_image_pixels=4_000_000, batching_parameters_file=BATCHING_FILE)
AVAILABLE = 30
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
MODELS_CONFIG = """model_config_list {
  config {
    name: "petseg"
    base_path: "/models/petseg"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
  }
}
"""


# ------------------------------------------------------------------ requests
def image(height=64, width=64) -> np.ndarray:
    return np.random.default_rng(height * 1000 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png(height=64, width=64) -> bytes:
    return tf.io.encode_png(image(height, width)).numpy()


def predict_request(
    batch=None,
    *,
    name="petseg",
    signature=signatures.SIGNATURE_IMAGES,
    version=None,
    label=None,
    outputs=(signatures.OUTPUT_MASK,),
    key=signatures.INPUT_IMAGES,
):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.output_filter.extend(outputs)
    if batch is not None:
        request.inputs[key].CopyFrom(tf.make_tensor_proto(batch))
    return request


def bytes_request(encoded: list[bytes], **kwargs):
    request = predict_request(signature=signatures.SIGNATURE_BYTES, **kwargs)
    request.inputs[signatures.INPUT_BYTES].CopyFrom(tf.make_tensor_proto(encoded, dtype=tf.string))
    return request


def metadata_request(name="petseg", fields=("signature_def",), spec=True):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    if spec:
        request.model_spec.name = name
    return request


def status_request(name="petseg", version=None, spec=True):
    request = get_model_status_pb2.GetModelStatusRequest()
    if spec:
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
    return request


def no_spec():
    request = predict_request(image()[None])
    request.ClearField("model_spec")
    return request


def two_inputs():
    request = predict_request(image()[None])
    request.inputs["masks"].CopyFrom(tf.make_tensor_proto(image()[None]))
    return request


# --------------------------------------------------------------------- table
@dataclass(frozen=True)
class Row:
    case: str
    rpc: str  # predict | metadata | status
    request: Callable[[], object]
    code: grpc.StatusCode
    fragment: str
    source: str
    local: bool = False  # message (or the whole rule, when tf_serving is False) is this server's
    tf_serving: bool = True  # TF Serving has this rule (False: skipped against a real one)


TABLE = [
    Row(
        "no ModelSpec",
        "predict",
        no_spec,
        INVALID,
        "Missing ModelSpec",
        "servables/tensorflow/predict_impl.cc TensorflowPredictor::Predict",
    ),
    Row(
        "empty model name",
        "predict",
        lambda: predict_request(image()[None], name=""),
        INVALID,
        "ModelSpec has no name specified.",
        "model_servers/server_core.cc ServableRequestFromModelSpec",
    ),
    Row(
        "unknown model",
        "predict",
        lambda: predict_request(image()[None], name="dogseg"),
        NOT_FOUND,
        "Servable not found for request: Latest(dogseg)",
        "core/basic_manager.cc ServingMap::GetUntypedServableHandle; core/manager.h ServableRequest::DebugString",
    ),
    Row(
        "unknown model, a version",
        "predict",
        lambda: predict_request(image()[None], name="dogseg", version=1),
        NOT_FOUND,
        "Servable not found for request: Specific(dogseg, 1)",
        "core/basic_manager.cc",
    ),
    Row(
        "unknown version",
        "predict",
        lambda: predict_request(image()[None], version=7),
        NOT_FOUND,
        "Servable not found for request: Specific(petseg, 7)",
        "core/basic_manager.cc",
    ),
    Row(
        "unknown label",
        "predict",
        lambda: predict_request(image()[None], label="canary"),
        INVALID,
        "Unrecognized servable version label: canary",
        "model_servers/server_core.cc GetModelVersionForLabel",
    ),
    Row(
        "label of an unknown model",
        "predict",
        lambda: predict_request(image()[None], name="dogseg", label="stable"),
        INVALID,
        "Unrecognized servable version label: stable",
        "model_servers/server_core.cc GetModelVersionForLabel",
    ),
    Row(
        "unknown signature",
        "predict",
        lambda: predict_request(image()[None], signature="serving_fast"),
        FAILED_PRECONDITION,
        'Serving signature key "serving_fast" not found.',
        "servables/tensorflow/predict_util.cc RunPredict",
    ),
    Row(
        "an input too many",
        "predict",
        two_inputs,
        INVALID,
        "input size does not match signature: 2!=1 len({images,masks}) != len({images}). Sent extra: {masks}.",
        "servables/tensorflow/predict_util.cc VerifyRequestInputsSize",
    ),
    Row(
        "no input",
        "predict",
        lambda: predict_request(None),
        INVALID,
        "input size does not match signature: 0!=1",
        "servables/tensorflow/predict_util.cc VerifyRequestInputsSize",
    ),
    Row(
        "input under the wrong key",
        "predict",
        lambda: predict_request(image()[None], key="image"),
        INVALID,
        "Signature input alias: images(feed name: serving_default_images:0) not found in request",
        "tensorflow/cc/saved_model/util.cc GetInputValues",
    ),
    Row(
        "unknown output_filter alias",
        "predict",
        lambda: predict_request(image()[None], outputs=["logits"]),
        INVALID,
        "output tensor alias not found in signature: logits Outputs expected to be in the set {mask,probabilities}.",
        "servables/tensorflow/predict_util.cc PreProcessPrediction",
    ),
    Row(
        "output_filter alias twice",
        "predict",
        lambda: predict_request(image()[None], outputs=["mask", "mask"]),
        INVALID,
        "duplicate output tensor alias: mask",
        "servables/tensorflow/predict_util.cc PreProcessPrediction",
    ),
    Row(
        "wrong dtype",
        "predict",
        lambda: predict_request(image()[None].astype(np.float32)),
        INVALID,
        "Expects arg[0] to be uint8 but float is provided",
        "tensorflow/core/framework/function.cc FunctionCallFrame::SetArgs (in Session::Run)",
    ),
    Row(
        "wrong rank",
        "predict",
        lambda: predict_request(np.zeros((2, 64, 3), np.uint8)),
        INVALID,
        "must have rank 4",
        "the graph's first op refuses it (TF Serving does not check shapes)",
        local=True,
    ),
    Row(
        "one image without the batch dimension",
        "predict",
        lambda: predict_request(image(64, 64)),
        INVALID,
        "got shape [64, 64, 3], which is one item without the batch dimension: send it as shape [1, 64, 64, 3]",
        "with --enable_batching, batching/batching_session.cc ComputeInputSize takes dim 0 (64) as the task "
        'size and tensorflow/core/kernels/batching_util/shared_batch_scheduler.h answers "Task size 64 is larger '
        "than maximum input batch size 8\"; without it the graph's first op refuses it",
        local=True,
    ),
    Row(
        "wrong channel count",
        "predict",
        lambda: predict_request(np.zeros((1, 64, 64, 4), np.uint8)),
        INVALID,
        "must have 3 in dimension 3",
        "the graph's first conv refuses it",
        local=True,
    ),
    Row(
        "batch over max_batch_size",
        "predict",
        lambda: predict_request(np.stack([image(32, 32)] * 9)),
        INVALID,
        "Task size 9 is larger than maximum input batch size 8",
        "tensorflow/core/kernels/batching_util/shared_batch_scheduler.h ValidateBatchTaskQueueCapacity "
        "(batching/batching_session.cc, --enable_batching)",
    ),
    Row(
        "bytes that are no image",
        "predict",
        lambda: bytes_request([b"not an image"]),
        INVALID,
        "Unknown image file format. One of JPEG",
        "tensorflow/core/kernels/image/decode_image_op.cc",
    ),
    Row(
        "error inside the graph keeps its cause",
        "predict",
        lambda: bytes_request([png()[:60]]),
        INVALID,
        "Invalid PNG data, size 60",
        "tensorflow/core/kernels/image/decode_image_op.cc (through Session::Run)",
    ),
    Row(
        "images of two sizes in one bytes request",
        "predict",
        lambda: bytes_request([png(64, 64), png(32, 32)]),
        INVALID,
        "Incompatible shapes during merge: [64,64,3] vs. [32,32,3]",
        "the graph's TensorListStack (through Session::Run)",
    ),
    Row(
        "PNG declaring 12000 x 12000",
        "predict",
        lambda: bytes_request([bomb_png()]),
        INVALID,
        "is a PNG of 12000x12000: 144.0 MP decoded, over this server's limit",
        "serving/image_header.py",
        local=True,
        tf_serving=False,
    ),
    Row(
        "empty batch",
        "predict",
        lambda: predict_request(np.zeros((0, 64, 64, 3), np.uint8)),
        INVALID,
        "empty batch",
        "this server",
        local=True,
        tf_serving=False,
    ),
    Row(
        "metadata: no ModelSpec",
        "metadata",
        lambda: metadata_request(spec=False),
        INVALID,
        "Missing ModelSpec",
        "servables/tensorflow/get_model_metadata_impl.cc GetModelMetadata",
    ),
    Row(
        "metadata: no metadata_field",
        "metadata",
        lambda: metadata_request(fields=()),
        INVALID,
        "GetModelMetadataRequest must specify at least one metadata_field",
        "servables/tensorflow/get_model_metadata_impl.cc ValidateGetModelMetadataRequest",
    ),
    Row(
        "metadata: unknown metadata_field",
        "metadata",
        lambda: metadata_request(fields=("signature_def", "x")),
        INVALID,
        "Metadata field x is not supported",
        "servables/tensorflow/get_model_metadata_impl.cc ValidateGetModelMetadataRequest",
    ),
    Row(
        "metadata: unknown model",
        "metadata",
        lambda: metadata_request("dogseg"),
        NOT_FOUND,
        "Servable not found for request: Latest(dogseg)",
        "core/basic_manager.cc",
    ),
    Row(
        "status: no ModelSpec",
        "status",
        lambda: status_request(spec=False),
        INVALID,
        "Missing ModelSpec",
        "model_servers/get_model_status_impl.cc GetModelStatus",
    ),
    Row(
        "status: unknown model",
        "status",
        lambda: status_request("dogseg"),
        NOT_FOUND,
        "Could not find any versions of model dogseg",
        "model_servers/get_model_status_impl.cc",
    ),
    Row(
        "status: unknown version",
        "status",
        lambda: status_request(version=7),
        NOT_FOUND,
        "Could not find version 7 of model petseg",
        "model_servers/get_model_status_impl.cc",
    ),
]


class Stubs:
    """The stock generated stubs: what any TF Serving client uses."""

    def __init__(self, target: str):
        self.channel = grpc.insecure_channel(target, options=message_options(64))
        prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.calls = {
            "predict": prediction.Predict,
            "metadata": prediction.GetModelMetadata,
            "status": model_service_pb2_grpc.ModelServiceStub(self.channel).GetModelStatus,
        }

    def refusal(self, row: Row) -> tuple[grpc.StatusCode, str]:
        try:
            self.calls[row.rpc](row.request(), timeout=30)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""


@pytest.fixture(scope="module")
def local_server(tiny_savedmodel, tmp_path_factory):
    """The local server over versions 1 and 2 of the tiny model, stable -> 1, the deployment's batching file."""
    base = tmp_path_factory.mktemp("status-codes") / "models"
    for version in (1, 2):
        shutil.copytree(tiny_savedmodel, base / "petseg" / str(version))
    (base / "models.config").write_text(MODELS_CONFIG)
    server = start_server(base, "petseg", SERVE, host="127.0.0.1", port=0, rest_port=0, log=lambda line: None)
    try:
        yield server
    finally:
        server.stop(0)


def _check_table(target: str, real_tf_serving: bool) -> None:
    stubs = Stubs(target)
    wrong = []
    for row in TABLE:
        if real_tf_serving and not row.tf_serving:
            continue
        code, message = stubs.refusal(row)
        check_message = not (real_tf_serving and row.local)
        if code != row.code or (check_message and row.fragment not in message) or "Graph execution error" in message:
            wrong.append(
                f"{row.case}: got {code.name}: {message!r}; want {row.code.name}: {row.fragment!r} ({row.source})"
            )
    assert wrong == [], "\n".join(wrong)


@pytest.mark.slow
def test_every_bad_request_gets_tf_servings_code_and_message_from_the_local_server(local_server):
    _check_table(local_server.target, real_tf_serving=False)
    answer = Stubs(local_server.target).calls["predict"](predict_request(image()[None]), timeout=30)
    assert answer.model_spec.version.value == 2  # still answering, the newest version


@pytest.mark.skipif(
    not os.environ.get("TF_SERVING_TARGET"),
    reason="set TF_SERVING_TARGET=HOST:PORT to run the table against a real TF Serving",
)
def test_every_bad_request_gets_the_same_code_from_a_real_tf_serving():
    _check_table(os.environ["TF_SERVING_TARGET"], real_tf_serving=True)


def test_the_table_cites_a_source_for_every_row_and_covers_each_rpc():
    assert all(row.source for row in TABLE)
    assert {row.rpc for row in TABLE} == {"predict", "metadata", "status"}
    assert len({row.case for row in TABLE}) == len(TABLE)


# ------------------------------------------------------------ what is answered
@pytest.mark.slow
def test_versions_labels_status_order_and_signature_map_as_tf_serving_answers_them(local_server):
    stubs = Stubs(local_server.target)
    latest = stubs.calls["predict"](predict_request(image()[None]), timeout=30)
    pinned = stubs.calls["predict"](predict_request(image()[None], version=1), timeout=30)
    labelled = stubs.calls["predict"](predict_request(image()[None], label="stable"), timeout=30)
    status = stubs.calls["status"](status_request(), timeout=10)
    one = stubs.calls["status"](status_request(version=1), timeout=10)
    metadata = stubs.calls["metadata"](metadata_request(), timeout=10)

    assert (latest.model_spec.version.value, pinned.model_spec.version.value, labelled.model_spec.version.value) == (
        2,
        1,
        1,
    )
    assert latest.model_spec.signature_name == signatures.SIGNATURE_IMAGES and latest.model_spec.name == "petseg"
    assert list(latest.outputs) == [signatures.OUTPUT_MASK]  # output_filter honoured
    # newest first (ServableStateMonitor::VersionMap is std::greater), each with an OK status
    assert [(s.version, s.state, s.status.error_code) for s in status.model_version_status] == [
        (2, AVAILABLE, 0),
        (1, AVAILABLE, 0),
    ]
    assert all(s.HasField("status") for s in status.model_version_status)
    assert [s.version for s in one.model_version_status] == [1]
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert metadata.metadata["signature_def"].Unpack(signature_defs)
    assert metadata.model_spec.name == "petseg" and metadata.model_spec.version.value == 2
    assert {signatures.SIGNATURE_IMAGES, signatures.SIGNATURE_BYTES} <= set(signature_defs.signature_def)
    images = signature_defs.signature_def[signatures.SIGNATURE_IMAGES]
    assert images.inputs[signatures.INPUT_IMAGES].dtype == tf.uint8.as_datatype_enum
    assert set(images.outputs) == {signatures.OUTPUT_MASK, signatures.OUTPUT_PROBABILITIES}


@pytest.mark.slow
def test_an_input_key_sent_twice_on_the_wire_is_read_as_protobuf_reads_it_the_last_one_wins(local_server):
    """A map entry repeated on the wire is legal protobuf: every parser, TF Serving's included, keeps the last."""
    good, bad = predict_request(image()[None]), predict_request(image()[None].astype(np.float32))
    wire = bad.SerializeToString() + predict_pb2.PredictRequest(inputs=good.inputs).SerializeToString()
    request = predict_pb2.PredictRequest.FromString(wire)
    answer = Stubs(local_server.target).calls["predict"](request, timeout=30)
    assert answer.outputs[signatures.OUTPUT_MASK].tensor_shape.dim[1].size == 64
