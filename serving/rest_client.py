"""A client for the segmentation model over TF Serving's REST API, through the `serving_png` signature.

What a web or mobile app does, in Python: POST each photo's JPEG/PNG bytes as
{"b64": ...} to /v1/models/{name}:predict with signature_name `serving_png`,
and read the mask back as a base64 PNG (TF Serving writes the `mask_png_bytes`
output as {"b64": ...} because its alias ends in `_bytes`:
tensorflow_serving/util/json_tensor.cc IsNamedTensorBytes). A request is a
few tens of kilobytes and its answer a few kilobytes, where the pixel form of
REST carries megabytes of numbers as text each way.

It answers like the gRPC client (serving/client.py): Segmentation objects in
input order, images grouped by size (the signature decodes one size per
request) in batches, one deadline per call, retries with backoff while the
server is unreachable or answers 503, and ServingRequestError with the same
one-line messages, the HTTP status beside the canonical code it stands for
(http_server.cc ToHTTPStatusCode, read backwards).

HTTP through `requests` (one keep-alive Session per client).
"""

from __future__ import annotations

import base64
import binascii
import io
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from petseg.components.contracts import signatures
from petseg.components.core.errors import PetsegError, first_line
from petseg.serving.client import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_TIMEOUT_SECONDS,
    Segmentation,
    ServingRequestError,
    encoded_size,
)

# The canonical code each HTTP status of TF Serving's REST API stands for (http_server.cc ToHTTPStatusCode;
# 400 is also FAILED_PRECONDITION and OUT_OF_RANGE there, 409 also ABORTED, 500 also UNKNOWN and DATA_LOSS).
# 413 and 411 are this project's server's transport refusals (serving/rest.py).
CODE_OF_HTTP_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    411: "INVALID_ARGUMENT",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MAX_SHOWN_BODY = 200


def rest_base_url(target: str) -> str:
    """http://HOST:PORT for a `HOST:PORT` target (or the URL itself when one is given); PetsegError otherwise."""
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    text = target.strip()
    url = text if text.startswith(("http://", "https://")) else f"http://{text}"
    try:
        parsed = parse_url(url)
    except LocationParseError:
        parsed = None
    if parsed is None or not parsed.host or parsed.port is None or parsed.query or parsed.fragment:
        raise PetsegError(f"--rest {target!r} is not HOST:PORT (for example localhost:8501)")
    return url.rstrip("/")


class RestSegmentationClient:
    """Talks to one TF Serving REST endpoint; use as a context manager or call close()."""

    def __init__(
        self,
        target: str,
        model_name: str = "petseg",
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        backoff_seconds: float = 0.25,
        version: int | None = None,
    ):
        import requests

        self.target = target
        self.base_url = rest_base_url(target)
        self.model_name = model_name
        self.timeout_seconds = timeout_seconds
        self.batch_size = batch_size
        self.backoff_seconds = backoff_seconds
        self.version = version
        self._requests = requests
        self._session = requests.Session()

    def __enter__(self) -> RestSegmentationClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    # ---------------------------------------------------------------- images
    def segment_encoded(self, encoded: Sequence[bytes]) -> list[Segmentation]:
        """Masks for encoded JPEG/PNG images, in the order given, via serving_png.

        Each Segmentation's model_version is the version the model status
        reported as the one available before and after the calls (REST's
        predict answer does not name it), or None when that was not one
        version throughout (a rollout in between, several versions served).
        """
        sizes = [encoded_size(data, i) for i, data in enumerate(encoded)]
        version_before = self.served_version()
        results: list[Segmentation | None] = [None] * len(encoded)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(sizes):
            groups.setdefault(size, []).append(i)
        masks: dict[int, np.ndarray] = {}
        for size, indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                pngs = self.predict_png([encoded[i] for i in chunk])
                for i, png in zip(chunk, pngs, strict=True):
                    masks[i] = self._mask_from_png(png, size, i)
        version = version_before if version_before == self.served_version() else None
        for i, mask in masks.items():
            results[i] = Segmentation(mask, version)
        return results  # type: ignore[return-value]

    def predict_png(self, encoded: Sequence[bytes]) -> list[bytes]:
        """One serving_png request for same-sized JPEG/PNG images: the mask PNGs, in order."""
        body = orjson.dumps(
            {
                "signature_name": signatures.SIGNATURE_PNG,
                "instances": [{"b64": base64.b64encode(data).decode()} for data in encoded],
            }
        )
        answer = self._call("POST", f"{self._model_path()}:predict", body)
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(predictions, list) or len(predictions) != len(encoded):
            raise ServingRequestError(
                f"{self.target} answered without one prediction per image ({_shown(answer)}); "
                f"is it serving a model with the {signatures.SIGNATURE_PNG} signature?"
            )
        return [self._png_of(prediction, i) for i, prediction in enumerate(predictions)]

    def served_version(self) -> int | None:
        """The one AVAILABLE version of the model (GET /v1/models/{name}), or None when it is not exactly one."""
        answer = self._call("GET", self._model_path(), None)
        statuses = answer.get("model_version_status") if isinstance(answer, dict) else None
        available = {
            _version_number(status.get("version"))
            for status in statuses or []
            if isinstance(status, dict) and status.get("state") == "AVAILABLE"
        } - {None}
        return available.pop() if len(available) == 1 else None

    # --------------------------------------------------------------- helpers
    def _model_path(self) -> str:
        version = f"/versions/{self.version}" if self.version is not None else ""
        return f"{self.base_url}/v1/models/{self.model_name}{version}"

    def _call(self, method: str, url: str, body: bytes | None):
        """The JSON answer of one call with a deadline; connection failures and 503 are retried with backoff."""
        requests = self._requests
        deadline = time.monotonic() + self.timeout_seconds
        delay, attempts = self.backoff_seconds, 0
        while True:
            attempts += 1
            try:
                response = self._session.request(
                    method,
                    url,
                    data=body,
                    headers={"Content-Type": "application/json"} if body is not None else None,
                    timeout=max(0.001, deadline - time.monotonic()),
                )
            except requests.Timeout:
                raise self._deadline_error() from None
            except requests.ConnectionError as exc:
                if time.monotonic() + delay < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                raise self._unreachable_error(attempts, _connection_detail(exc)) from None
            if response.status_code == 503 and time.monotonic() + delay < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            return self._answer(response, attempts)

    def _answer(self, response, attempts: int):
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = None
        if response.status_code == 200 and answer is not None:
            return answer
        detail = answer.get("error") if isinstance(answer, dict) else None
        if not isinstance(detail, str) or not detail.strip():
            detail = _shown(response.text) if response.text.strip() else response.reason or "no message"
        if response.status_code == 200:
            raise ServingRequestError(f"{self.target} answered HTTP 200 with a body that is not JSON ({detail})")
        code = CODE_OF_HTTP_STATUS.get(response.status_code, "UNKNOWN")
        if code == "UNAVAILABLE":
            raise self._unreachable_error(attempts, first_line(detail), response.status_code)
        if code == "DEADLINE_EXCEEDED":
            raise self._deadline_error(response.status_code)
        raise ServingRequestError(
            f"{self.target} refused the request: {code}: {first_line(detail)} (HTTP {response.status_code})",
            _grpc_code(code),
            http_status=response.status_code,
        )

    def _unreachable_error(self, attempts: int, detail: str, status: int | None = None) -> ServingRequestError:
        return ServingRequestError(
            f"cannot get an answer from a model server at {self.target} after {attempts} "
            f"attempt(s) in {self.timeout_seconds:g}s ({detail}); start one with `petseg serve` "
            "or check --rest",
            _grpc_code("UNAVAILABLE"),
            http_status=status,
        )

    def _deadline_error(self, status: int | None = None) -> ServingRequestError:
        return ServingRequestError(
            f"no answer from {self.target} within {self.timeout_seconds:g}s; raise --timeout or send fewer images",
            _grpc_code("DEADLINE_EXCEEDED"),
            http_status=status,
        )

    def _png_of(self, prediction, index: int) -> bytes:
        if not (isinstance(prediction, dict) and set(prediction) == {"b64"} and isinstance(prediction["b64"], str)):
            raise ServingRequestError(
                f'{self.target} answered prediction {index} as {_shown(prediction)}, not {{"b64": ...}}; '
                f"is its {signatures.SIGNATURE_PNG} output named {signatures.OUTPUT_MASK_PNG}?"
            )
        try:
            return base64.b64decode(prediction["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise ServingRequestError(f"{self.target} answered prediction {index} with invalid base64") from None

    def _mask_from_png(self, png: bytes, size: tuple[int, int], index: int) -> np.ndarray:
        """The class-id mask in a serving_png answer, checked to be one channel at the image's size."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(png)) as image:
                mask = np.asarray(image)
        except (UnidentifiedImageError, OSError) as exc:
            raise ServingRequestError(
                f"{self.target} answered image {index} with a mask that is not a PNG ({first_line(exc)})"
            ) from None
        if mask.ndim != 2 or mask.dtype != np.uint8 or mask.shape != size:
            raise ServingRequestError(
                f"{self.target} answered image {index} ({size[1]}x{size[0]}) with a mask of shape "
                f"{list(mask.shape)} {mask.dtype}, not an 8-bit one-channel mask at the image's size"
            )
        return mask


def _grpc_code(name: str):
    import grpc

    return grpc.StatusCode[name]


def _connection_detail(exc: BaseException) -> str:
    """The innermost reason of a requests ConnectionError (for example 'Connection refused'), on one line."""
    reason: BaseException | None = exc
    while reason is not None and (reason.__cause__ or reason.__context__) is not None:
        reason = reason.__cause__ or reason.__context__
    text = first_line(reason or exc)
    return text.split("] ", 1)[-1] if text.startswith("[Errno") else text


def _shown(value) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= _MAX_SHOWN_BODY else text[:_MAX_SHOWN_BODY] + "..."


def _version_number(value: Any) -> int | None:
    """A version as GetModelStatus over REST writes it (a decimal string), or None for anything else."""
    try:
        number = int(str(value), 10)
    except ValueError:
        return None
    return number if number > 0 else None
