"""Warm-up requests and infra validation: would TF Serving load this SavedModel and answer it?

TF Serving replays `assets.extra/tf_serving_warmup_requests` (PredictionLog
TFRecords) when it loads a version, so the first client does not pay for graph
tracing. push writes those requests into each candidate and then infra-validates
the candidate the way a server would (load with the `serve` tag, answer every
warm-up request through its signature); the local server replays the same file
with answer_request. Kept apart from push as TFX keeps InfraValidator apart
from Pusher.
"""

from __future__ import annotations

import time

import numpy as np

from petseg.components.contracts import signatures
from petseg.components.core.errors import PetsegError, first_line
from petseg.components.store import storage
from petseg.components.store.model_store import SAVED_MODEL_FILE

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
DEFAULT_WARMUP_IMAGE_SIZE = 128


class InfraValidationError(PetsegError):
    """The candidate did not load or did not answer its warm-up requests as a server would need."""


def require_contract_signatures(model_dir: str) -> None:
    """InfraValidationError unless the SavedModel at `model_dir` has every signature of the contract.

    A version pushed before `serving_png` joined the contract lacks only that
    one; it is refused like any other incomplete model (apps calling
    serving_png over REST would get 400 from it), with a message that says so.
    """
    try:
        found = model_signatures(model_dir)
    except Exception as exc:
        raise InfraValidationError(f"infra validation: the model does not load ({first_line(exc)})") from None
    missing = set(signatures.SIGNATURES) - found
    if missing == {signatures.SIGNATURE_PNG}:
        raise InfraValidationError(
            f"{model_dir} lacks the contract's signature {signatures.SIGNATURE_PNG} (it was exported before "
            f"that signature existed; apps calling it over REST would get 400 from this version): serve a "
            "version exported by this release (see `petseg rollback --list`), or push a newly trained model"
        )
    if missing:
        raise InfraValidationError(
            f"{model_dir} lacks the contract's signature(s) {', '.join(sorted(missing))} "
            f"(has {', '.join(sorted(found)) or 'none'})"
        )


def model_signatures(model_dir: str) -> set[str]:
    """The signature names in the SavedModel's serving meta graph, read from saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(storage.read_bytes(storage.join(model_dir, SAVED_MODEL_FILE)))
    names: set[str] = set()
    for graph in saved.meta_graphs:
        if "serve" in graph.meta_info_def.tags:
            names.update(graph.signature_def.keys())
    return names


def warmup_requests(model_dir: str, model_name: str, count: int, image_size: int) -> list:
    """`count` (at least 1) PredictionLog records with PredictRequests for the model's signatures.

    They go round the contract's signatures (uint8 images, encoded bytes, PNG
    mask), at the model's input size and a wider photo-like size, so every code
    path and a resize are exercised before the first client. InfraValidationError
    when the model lacks one of the signatures.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    require_contract_signatures(model_dir)
    kinds = list(signatures.SIGNATURES)
    rng = np.random.default_rng(0)
    logs = []
    for i in range(max(1, count)):
        signature = kinds[i % len(kinds)]
        width = image_size if (i // len(kinds)) % 2 == 0 else image_size * 3 // 2
        image = rng.integers(0, 256, size=(1, image_size, width, 3), dtype=np.uint8)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        if signature == signatures.SIGNATURE_IMAGES:
            request.inputs[signatures.INPUT_IMAGES].CopyFrom(tf.make_tensor_proto(image))
        else:
            png = tf.io.encode_png(image[0]).numpy()
            request.inputs[signatures.INPUT_BYTES].CopyFrom(tf.make_tensor_proto([png], dtype=tf.string))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def covering_every_signature(logs: list, model_dir: str, model_name: str, image_size: int) -> list:
    """`logs`, plus a generated request for each contract signature none of them asks (infra validation's set).

    A warm-up file may hold fewer requests than there are signatures (push.warmup_requests
    below 3, or 0); infra validation still answers one request through every signature.
    """
    asked = {log.predict_log.request.model_spec.signature_name or signatures.SIGNATURE_IMAGES for log in logs}
    extra = [
        log
        for log in warmup_requests(model_dir, model_name, len(signatures.SIGNATURES), image_size)
        if log.predict_log.request.model_spec.signature_name not in asked
    ]
    return list(logs) + extra


def write_warmup_file(path: str, logs: list) -> None:
    import tensorflow as tf

    storage.makedirs(storage.parent(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


def read_warmup_file(path: str) -> list:
    """The PredictionLog records in a TF Serving warm-up file."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    return [prediction_log_pb2.PredictionLog.FromString(raw.numpy()) for raw in tf.data.TFRecordDataset([path])]


# --------------------------------------------------------- infra validation
def infra_validate(model_dir: str, logs: list) -> dict:
    """Load the model as a server does and answer every request; InfraValidationError on any failure."""
    import tensorflow as tf

    started = time.perf_counter()
    try:
        loaded = tf.saved_model.load(model_dir, tags=["serve"])
    except Exception as exc:
        raise InfraValidationError(f"infra validation: the model does not load ({first_line(exc)})") from None
    load_seconds = time.perf_counter() - started
    for i, log in enumerate(logs):
        request = log.predict_log.request
        name = request.model_spec.signature_name or signatures.SIGNATURE_IMAGES
        try:
            inputs, outputs = answer_request(loaded.signatures, request)
            _check_answer(outputs, _expected_mask_shape(inputs))
        except Exception as exc:
            raise InfraValidationError(
                f"infra validation: warm-up request {i} ({name}) failed ({first_line(exc)})"
            ) from None
    return {
        "requests": len(logs),
        "load_seconds": round(load_seconds, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
    }


def answer_request(loaded_signatures, request) -> tuple[dict, dict]:
    """Run a PredictRequest through a loaded SavedModel's signatures, as a server would: (inputs, outputs).

    Push's infra validation and the local server's warm-up both replay the warm-up file with it.
    """
    import tensorflow as tf

    signature = loaded_signatures[request.model_spec.signature_name or signatures.SIGNATURE_IMAGES]
    inputs = {key: tf.constant(tf.make_ndarray(proto)) for key, proto in request.inputs.items()}
    return inputs, signature(**inputs)


def _expected_mask_shape(inputs: dict) -> list[int]:
    import tensorflow as tf

    if signatures.INPUT_IMAGES in inputs:
        return inputs[signatures.INPUT_IMAGES].shape[:3].as_list()
    data = inputs[signatures.INPUT_BYTES]
    first = tf.io.decode_image(data[0], channels=3, expand_animations=False)
    return [int(data.shape[0]), int(first.shape[0]), int(first.shape[1])]


def _check_answer(outputs: dict, expected: list[int]) -> None:
    """ValueError unless the answer holds masks of the expected [N, H, W] (plain, or PNGs of one channel)."""
    import tensorflow as tf

    if signatures.OUTPUT_MASK in outputs:
        shape = outputs[signatures.OUTPUT_MASK].shape.as_list()
    elif signatures.OUTPUT_MASK_PNG in outputs:
        pngs = outputs[signatures.OUTPUT_MASK_PNG].numpy()
        decoded = [tf.io.decode_png(png).shape.as_list() for png in pngs]
        if any(d[2] != 1 for d in decoded) or len({tuple(d) for d in decoded}) > 1:
            raise ValueError(f"{signatures.OUTPUT_MASK_PNG} holds PNGs of shapes {decoded}, not one-channel masks")
        shape = [len(pngs), *decoded[0][:2]] if decoded else [0]
    else:
        raise ValueError(
            f"no '{signatures.OUTPUT_MASK}' or '{signatures.OUTPUT_MASK_PNG}' output (has {', '.join(outputs)})"
        )
    if shape != expected:
        raise ValueError(f"mask shape {shape}, expected {expected}")


def validate_served_copy(model_dir: str, model_name: str) -> dict:
    """Infra-validate a version already in the store (rollback's check before re-pointing).

    It must have the contract's signatures, load with the `serve` tag and answer
    its own warm-up requests, plus generated ones for each signature they miss.
    InfraValidationError otherwise.
    """
    if not storage.exists(storage.join(model_dir, SAVED_MODEL_FILE)):
        raise InfraValidationError(f"{model_dir} is not a SavedModel (no saved_model.pb)")
    require_contract_signatures(model_dir)
    with storage.local_copy(model_dir) as local:
        warmup = storage.join(local, WARMUP_FILE)
        try:
            logs = read_warmup_file(warmup) if storage.exists(warmup) else []
        except Exception as exc:
            raise InfraValidationError(f"{model_dir}: unreadable warm-up file ({first_line(exc)})") from None
        return infra_validate(local, covering_every_signature(logs, local, model_name, DEFAULT_WARMUP_IMAGE_SIZE))
