"""TF Serving's batching parameters file, read the way tensorflow_model_server reads it.

The deployment starts TF Serving with --enable_batching
--batching_parameters_file=serving/deploy/batching.config. Its max_batch_size
bounds the images one request may carry: the batch scheduler refuses a
larger request with INVALID_ARGUMENT "Task size N is larger than maximum
input batch size M" (tensorflow/core/kernels/batching_util/
shared_batch_scheduler.h, ValidateBatchTaskQueueCapacity). The local server
reads the same file so that a request it answers is one production answers.

The file is a text-format BatchingParameters message
(tensorflow_serving/servables/tensorflow/session_bundle_config.proto). That
proto is not in the tensorflow-serving-api wheel, so its fields are declared
here and the file is parsed with protobuf's own text_format: a misspelt or
unknown field fails here as it fails TF Serving's start-up.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from petseg.components.core.errors import PetsegError

# BatchingParameters fields: (name, number, type); "int64" fields are google.protobuf wrappers.
_FIELDS = [
    ("max_batch_size", 1, "Int64Value"),
    ("batch_timeout_micros", 2, "Int64Value"),
    ("max_enqueued_batches", 3, "Int64Value"),
    ("num_batch_threads", 4, "Int64Value"),
    ("thread_pool_name", 5, "StringValue"),
    ("allowed_batch_sizes", 6, "repeated int64"),
    ("pad_variable_length_inputs", 7, "bool"),
    ("enable_large_batch_splitting", 8, "BoolValue"),
    ("max_execution_batch_size", 9, "Int64Value"),
]


@lru_cache(maxsize=1)
def _message_class():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="petseg_batching.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = file.message_type.add(name="BatchingParameters")
    F = descriptor_pb2.FieldDescriptorProto
    for name, number, kind in _FIELDS:
        field = message.field.add(name=name, number=number)
        if kind == "repeated int64":
            field.type, field.label = F.TYPE_INT64, F.LABEL_REPEATED
        elif kind == "bool":
            field.type, field.label = F.TYPE_BOOL, F.LABEL_OPTIONAL
        else:
            field.type, field.label, field.type_name = F.TYPE_MESSAGE, F.LABEL_OPTIONAL, f".google.protobuf.{kind}"
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def read_max_batch_size(path: str | Path) -> int | None:
    """max_batch_size of a BatchingParameters text file; None when the file leaves it unset.

    Raises PetsegError naming the file when it is missing or not a valid BatchingParameters.
    """
    from google.protobuf import text_format

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PetsegError(
            f"cannot read the batching parameters file {path}: {exc.strerror}; fix "
            'serve.batching_parameters_file ("" = no batch limit)'
        ) from None
    params = _message_class()()
    try:
        text_format.Parse(text, params)
    except text_format.ParseError as exc:
        raise PetsegError(f"{path} is not a valid TF Serving BatchingParameters file: {exc}") from None
    if not params.HasField("max_batch_size"):
        return None
    if params.max_batch_size.value < 1:
        raise PetsegError(f"{path}: max_batch_size must be at least 1, got {params.max_batch_size.value}")
    return params.max_batch_size.value
