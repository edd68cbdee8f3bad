"""A request the server refuses, with the status TF Serving would answer it with (gRPC code and HTTP code)."""

from __future__ import annotations

import re

import grpc


class ServingError(Exception):
    """Raised while handling a request; the servicer turns it into `code` and `message`."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# tensorflow_serving/model_servers/http_server.cc ToHTTPStatusCode: the HTTP status of each canonical code.
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_CODES_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status TF Serving's REST API answers for a canonical status code."""
    return _HTTP_STATUS.get(code, 500)


def status_code(value: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a canonical code number (tf.errors.OpError.error_code), UNKNOWN if none."""
    return _CODES_BY_VALUE.get(value, grpc.StatusCode.UNKNOWN)


_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\]\s*$")
_ROOT_ERROR = re.compile(r"^\s*\(\d+\) ")


def graph_error_cause(message: str) -> str:
    """The cause of an error raised while a signature ran, as TF Serving reports it.

    Eager TensorFlow wraps a graph error as "Graph execution error:", then
    "Detected at node N defined at (most recent call last):" and the Python
    frames (or "<stack traces unavailable>"), then the cause and the node
    ("Invalid PNG data, size 60\\n\\t [[{{node DecodeImage}}]]") and an
    "[Op:...]" suffix. TF Serving's session reports only the cause and the
    node; so does this.
    """
    kept = []
    for line in message.strip().splitlines():
        if not line.strip() or line.startswith(("Graph execution error:", "Detected at node", "<stack traces")):
            continue
        if line.startswith("  ") and not _ROOT_ERROR.match(line):
            continue  # a Python frame of the traceback
        kept.append(line)
    cause = "\n".join(kept) if kept else message.strip()
    return _OP_SUFFIX.sub("", cause).strip() or "the model failed without a message"
