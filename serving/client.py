"""A small client for the segmentation model over TF Serving's gRPC API.

Images in (uint8 H x W x 3 arrays of any sizes, or encoded JPEG/PNG bytes),
masks out. The same code talks to the local `petseg serve` and to a real
tensorflow/serving: it uses only PredictionService.Predict with the
signatures in components/contracts/signatures.py. Images are grouped by size and sent in
batches that fit the message limit; each call has a deadline, and a call
answered UNAVAILABLE (server starting, restarting, or a version not loaded
yet) is retried with backoff until the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from petseg.components.contracts import signatures
from petseg.components.core.errors import PetsegError, first_line
from petseg.serving.image_header import UnreadableHeader, declared_size

DEFAULT_BATCH_SIZE = 8
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_MESSAGE_MB = 64
ENCODED_FORMATS = ("JPEG", "PNG")  # what the bytes signature decodes (components/contracts/signatures.py)


class ServingRequestError(PetsegError):
    """The server refused a request or could not be reached.

    `code` is the grpc.StatusCode (over REST: the one the HTTP status stands for),
    `http_status` the HTTP status when the REST client got one.
    """

    def __init__(self, message: str, code=None, *, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.http_status = http_status


@dataclass(frozen=True)
class Segmentation:
    """The model's answer for one image: class ids at the image's size, and which version gave it."""

    mask: np.ndarray  # uint8 [H, W], values index signatures.CLASS_NAMES
    model_version: int | None  # None: not known (REST answers do not name it; see rest_client.py)
    probabilities: np.ndarray | None = None  # float32 [H, W, C] when asked for

    def class_fractions(self, class_names: Sequence[str] = signatures.CLASS_NAMES) -> dict[str, float]:
        """Share of the image's pixels given to each class."""
        counts = np.bincount(self.mask.ravel(), minlength=len(class_names))[: len(class_names)]
        return {name: float(n) / self.mask.size for name, n in zip(class_names, counts, strict=True)}


class SegmentationClient:
    """Talks to one model server; use as a context manager or call close()."""

    def __init__(
        self,
        target: str,
        model_name: str = "petseg",
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_message_mb: int = DEFAULT_MAX_MESSAGE_MB,
        batch_size: int = DEFAULT_BATCH_SIZE,
        backoff_seconds: float = 0.25,
        version: int | None = None,
        with_probabilities: bool = False,
    ):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        from petseg.serving.server import message_options

        self.target = target
        self.model_name = model_name
        self.timeout_seconds = timeout_seconds
        self.batch_size = batch_size
        self.backoff_seconds = backoff_seconds
        self.version = version
        self.with_probabilities = with_probabilities
        self._grpc = grpc
        # round_robin: a target that resolves to several servers (the headless Service,
        # dns:///petseg-serving-headless.petseg.svc.cluster.local:8500) gets calls spread over all
        # of them instead of pinned to the first; a single address behaves as before.
        options = [*message_options(max_message_mb), ("grpc.lb_policy_name", "round_robin")]
        self._channel = grpc.insecure_channel(target, options=options)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def __enter__(self) -> SegmentationClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    # ---------------------------------------------------------------- images
    def segment(self, images: Sequence[np.ndarray]) -> list[Segmentation]:
        """Masks for uint8 [H, W, 3] images (any sizes), in the order given, via the uint8 signature."""
        for i, image in enumerate(images):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise PetsegError(f"image {i} must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
        return self._in_batches(
            [image.shape[:2] for image in images], lambda idx: self._images_request(np.stack([images[i] for i in idx]))
        )

    def segment_encoded(self, encoded: Sequence[bytes]) -> list[Segmentation]:
        """Masks for encoded JPEG/PNG images via the bytes signature (much smaller requests)."""
        sizes = [encoded_size(data, i) for i, data in enumerate(encoded)]
        return self._in_batches(sizes, lambda idx: self._bytes_request([encoded[i] for i in idx]))

    def predict(self, request, timeout_seconds: float | None = None):
        """Send one PredictRequest with a deadline, retrying UNAVAILABLE with backoff until it passes."""
        grpc = self._grpc
        deadline = time.monotonic() + (timeout_seconds or self.timeout_seconds)
        delay, attempts = self.backoff_seconds, 0
        while True:
            attempts += 1
            try:
                return self._stub.Predict(request, timeout=max(0.001, deadline - time.monotonic()))
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.UNAVAILABLE and time.monotonic() + delay < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                raise self._error(exc, attempts) from None

    # --------------------------------------------------------------- helpers
    def _in_batches(self, sizes: list[tuple[int, int]], make_request: Callable) -> list[Segmentation]:
        """Send same-sized images together, at most batch_size per request; answers in input order."""
        import tensorflow as tf

        results: list[Segmentation | None] = [None] * len(sizes)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(sizes):
            groups.setdefault((size[0], size[1]), []).append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                response = self.predict(make_request(chunk))
                masks = tf.make_ndarray(response.outputs[signatures.OUTPUT_MASK])
                probabilities = (
                    tf.make_ndarray(response.outputs[signatures.OUTPUT_PROBABILITIES])
                    if self.with_probabilities
                    else None
                )
                for j, i in enumerate(chunk):
                    results[i] = Segmentation(
                        masks[j], response.model_spec.version.value, None if probabilities is None else probabilities[j]
                    )
        return results  # type: ignore[return-value]

    def _request(self, signature: str):
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = signature
        if self.version is not None:
            request.model_spec.version.value = self.version
        request.output_filter.append(signatures.OUTPUT_MASK)
        if self.with_probabilities:
            request.output_filter.append(signatures.OUTPUT_PROBABILITIES)
        return request

    def _images_request(self, batch: np.ndarray):
        import tensorflow as tf

        request = self._request(signatures.SIGNATURE_IMAGES)
        request.inputs[signatures.INPUT_IMAGES].CopyFrom(tf.make_tensor_proto(batch))
        return request

    def _bytes_request(self, encoded: list[bytes]):
        import tensorflow as tf

        request = self._request(signatures.SIGNATURE_BYTES)
        request.inputs[signatures.INPUT_BYTES].CopyFrom(tf.make_tensor_proto(encoded, dtype=tf.string))
        return request

    def _error(self, exc, attempts: int) -> ServingRequestError:
        grpc = self._grpc
        code = exc.code()
        detail = first_line(exc.details()) if (exc.details() or "").strip() else ""
        if code == grpc.StatusCode.UNAVAILABLE:
            message = (
                f"cannot get an answer from a model server at {self.target} after {attempts} "
                f"attempt(s) in {self.timeout_seconds:g}s ({detail}); start one with `petseg serve` "
                "or check --target"
            )
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = (
                f"no answer from {self.target} within {self.timeout_seconds:g}s; raise --timeout or send fewer images"
            )
        else:
            message = f"{self.target} refused the request: {code.name}: {detail}"
        return ServingRequestError(message, code)


def encoded_size(data: bytes, index: int) -> tuple[int, int]:
    """(height, width) of an encoded JPEG/PNG, read from its header (nothing is decoded)."""
    try:
        size = declared_size(data)
    except UnreadableHeader:
        raise PetsegError(f"image {index} is not a JPEG or PNG file") from None
    if size.format not in ENCODED_FORMATS:
        raise PetsegError(f"image {index} is {size.format}; the bytes signature takes JPEG or PNG")
    return size.height, size.width
