"""The local TF Serving-compatible server: answers, version changes, refusals, draining.

Models are published into the model base path with the real `push` (the
push_version fixture), the server runs on a free port, and requests go
through TF Serving's generated gRPC stubs or the project's client.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from helpers import REPO_ROOT, tiny_params_dict

from petseg.components.contracts import signatures
from petseg.components.core.errors import PetsegError
from petseg.components.core.params import PushParams, ServeParams
from petseg.components.ml.cluster import free_ports
from petseg.components.store.warmup import validate_served_copy

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from petseg.serving.client import SegmentationClient  # noqa: E402
from petseg.serving.server import message_options, start_server  # noqa: E402

SERVE = ServeParams(poll_seconds=0.2, workers=8, drain_seconds=5.0)
AVAILABLE, END = 30, 50
RNG = np.random.default_rng(3)


# ------------------------------------------------------------------ helpers
@pytest.fixture
def push_params(tmp_path) -> PushParams:
    return PushParams(model_base_path=str(tmp_path / "models"), model_name="petseg", warmup_requests=2)


@contextmanager
def running(base, params: ServeParams = SERVE, name: str = "petseg"):
    """An in-process server on a free port; yields (server, log lines)."""
    lines: list[str] = []
    server = start_server(base, name, params, host="127.0.0.1", port=0, log=lines.append)
    try:
        yield server, lines
    finally:
        server.stop(0)


class Stubs:
    def __init__(self, target: str, max_message_mb: int = 64):
        self.channel = grpc.insecure_channel(target, options=message_options(max_message_mb))
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel).Predict
        self.metadata = prediction_service_pb2_grpc.PredictionServiceStub(self.channel).GetModelMetadata
        self.status = model_service_pb2_grpc.ModelServiceStub(self.channel).GetModelStatus


def images_request(
    images: np.ndarray,
    *,
    name="petseg",
    signature=signatures.SIGNATURE_IMAGES,
    version=None,
    outputs=(signatures.OUTPUT_MASK,),
):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    request.output_filter.extend(outputs)
    request.inputs[signatures.INPUT_IMAGES].CopyFrom(tf.make_tensor_proto(images))
    return request


def status_request(name="petseg"):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    return request


def version_states(stubs: Stubs) -> dict[int, int]:
    response = stubs.status(status_request(), timeout=5)
    return {s.version: s.state for s in response.model_version_status}


def in_process_masks(model_dir: Path, images: np.ndarray) -> np.ndarray:
    """The floor: the same SavedModel's mask, computed in this process without a server."""
    signature = tf.saved_model.load(str(model_dir)).signatures[signatures.SIGNATURE_IMAGES]
    return signature(**{signatures.INPUT_IMAGES: tf.constant(images)})[signatures.OUTPUT_MASK].numpy()


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def photo(height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


# --------------------------------------------------------------- end to end
@pytest.mark.slow
def test_pushed_model_answers_like_in_process_inference(tiny_savedmodel, push_params, push_version):
    push_version(tiny_savedmodel, push_params)
    images = [photo(64, 80), photo(100, 60), photo(64, 80), photo(375, 500)]
    with running(push_params.model_base_path) as (server, lines):
        with SegmentationClient(server.target, timeout_seconds=20) as client:
            answers = client.segment(images)
            encoded = client.segment_encoded([tf.io.encode_png(image).numpy() for image in images])
        stubs = Stubs(server.target)
        metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        metadata_request.model_spec.name = "petseg"
        metadata = stubs.metadata(metadata_request, timeout=5)
        states = version_states(stubs)

    assert any(re.match(r"petseg serve: loaded petseg version 1 ", line) for line in lines)
    assert any(line.startswith("petseg serve: listening on 127.0.0.1:") for line in lines)
    for image, answer, from_bytes in zip(images, answers, encoded, strict=True):
        assert answer.mask.shape == image.shape[:2] and answer.mask.dtype == np.uint8
        assert answer.model_version == 1
        np.testing.assert_array_equal(answer.mask, in_process_masks(tiny_savedmodel, image[None])[0])
        np.testing.assert_array_equal(from_bytes.mask, answer.mask)  # PNG is lossless: same pixels, same mask

    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signature_defs)
    assert set(signature_defs.signature_def) == set(signatures.SIGNATURES)
    images_input = signature_defs.signature_def[signatures.SIGNATURE_IMAGES].inputs[signatures.INPUT_IMAGES]
    assert images_input.dtype == tf.uint8.as_datatype_enum
    assert metadata.model_spec.version.value == 1
    assert states == {1: AVAILABLE}


@pytest.mark.slow
@pytest.mark.parametrize("label", [None, "stable"])
def test_push_while_12_clients_query_swaps_versions_without_a_failed_request(
    label, tiny_savedmodel, second_savedmodel, push_params, push_version
):
    """With a label, push stages v2 beside v1, waits for the server to report it AVAILABLE, then moves the label."""
    if label:
        push_params = dataclasses.replace(push_params, version_label=label, serving_target="unused-for-v1:1")
    push_version(tiny_savedmodel, push_params)  # the first label is new: written at once, no server asked
    images = [photo(64, 64 + 8 * i) for i in range(12)]
    expected = {
        1: [in_process_masks(tiny_savedmodel, im[None])[0] for im in images],
        2: [in_process_masks(second_savedmodel, im[None])[0] for im in images],
    }
    answers: list[list[tuple[int, np.ndarray]]] = [[] for _ in images]
    failures: list[str] = []
    stop = threading.Event()

    def query(i: int, target: str) -> None:
        stubs = Stubs(target)  # each client has its own connection
        request = images_request(images[i][None])
        if label:
            request.model_spec.version_label = label
        while not stop.is_set():
            try:
                response = stubs.predict(request, timeout=20)
            except grpc.RpcError as exc:
                failures.append(f"client {i}: {exc.code().name}: {exc.details()}")
                return
            answers[i].append(
                (response.model_spec.version.value, tf.make_ndarray(response.outputs[signatures.OUTPUT_MASK])[0])
            )

    with running(push_params.model_base_path) as (server, lines):
        if label:
            push_params = dataclasses.replace(push_params, serving_target=server.target)
        threads = [threading.Thread(target=query, args=(i, server.target)) for i in range(len(images))]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: all(len(a) >= 2 for a in answers) or failures, 30, "every client answered by v1")
            assert push_version(second_savedmodel, push_params) == 2
            wait_until(
                lambda: all(any(v == 2 for v, _ in a[-3:]) and a[-1][0] == 2 for a in answers) or failures,
                30,
                "every client answered by v2",
            )
            settled = [len(a) for a in answers]
            wait_until(
                lambda: all(len(a) >= n + 2 for a, n in zip(answers, settled, strict=True)) or failures,
                30,
                "more answers after the swap",
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        wait_until(lambda: version_states(Stubs(server.target)) == {1: END, 2: AVAILABLE}, 15, "v1 unloaded")

    assert failures == []
    for i, client_answers in enumerate(answers):
        versions = [v for v, _ in client_answers]
        assert versions == sorted(versions), f"client {i} went back to an old version: {versions}"
        assert versions[0] == 1 and versions[-1] == 2
        for version, mask in client_answers:
            np.testing.assert_array_equal(mask, expected[version][i])
    assert any(line.startswith("petseg serve: loaded petseg version 2 ") for line in lines)
    assert "petseg serve: unloaded petseg version 1" in lines
    assert not [line for line in lines if "refused models.config" in line]


@pytest.mark.slow
def test_models_config_pins_the_served_version_and_rollback_follows(
    tiny_savedmodel, second_savedmodel, push_params, push_version
):
    from petseg.components.store.model_store import ModelStore

    labelled_params = dataclasses.replace(push_params, version_label="stable", serving_target="not-asked:1")
    push_version(tiny_savedmodel, labelled_params)
    image = photo(64, 64)[None]
    labelled = images_request(image)
    labelled.model_spec.version_label = "stable"
    with running(push_params.model_base_path) as (server, _):
        stubs = Stubs(server.target)
        params = dataclasses.replace(labelled_params, serving_target=server.target)
        push_version(second_savedmodel, params)
        wait_until(lambda: version_states(stubs) == {1: END, 2: AVAILABLE}, 15, "v2 alone")
        assert stubs.predict(images_request(image), timeout=10).model_spec.version.value == 2
        assert stubs.predict(labelled, timeout=10).model_spec.version.value == 2

        # returns once the server has v1 AVAILABLE and the label is written
        assert ModelStore.from_params(params).rollback(1, infra_check=validate_served_copy).served == 1
        wait_until(
            lambda: stubs.predict(labelled, timeout=10).model_spec.version.value == 1,
            10,
            "the label to follow at the next poll",
        )
        wait_until(lambda: version_states(stubs) == {1: AVAILABLE, 2: END}, 15, "the rollback to v1")
        assert stubs.predict(images_request(image), timeout=10).model_spec.version.value == 1
        with pytest.raises(grpc.RpcError) as refused:
            stubs.predict(images_request(image, version=2), timeout=10)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.slow
def test_a_config_tf_serving_would_refuse_is_refused_and_the_previous_one_kept(
    tiny_savedmodel, second_savedmodel, push_params, push_version
):
    from petseg.components.store.model_store import ModelStore

    push_version(tiny_savedmodel, push_params)
    push_version(second_savedmodel, push_params)
    ModelStore.from_params(push_params).write_serving_config((1,), {"stable": 1})
    labelled = images_request(photo(64, 64)[None])
    labelled.model_spec.version_label = "stable"
    with running(push_params.model_base_path) as (server, lines):
        stubs = Stubs(server.target)
        ModelStore.from_params(push_params).write_serving_config((2,), {"stable": 2})  # label and version moved at once
        wait_until(lambda: any("refused models.config" in line for line in lines), 10, "the refusal")
        time.sleep(5 * SERVE.poll_seconds)  # refused on every poll, logged once, nothing of it applied
        assert version_states(stubs) == {1: AVAILABLE}
        assert stubs.predict(labelled, timeout=10).model_spec.version.value == 1

        ModelStore.from_params(push_params).write_serving_config((1, 2), {"stable": 1})  # the store's way: stage ...
        wait_until(lambda: version_states(stubs) == {1: AVAILABLE, 2: AVAILABLE}, 15, "v2 loaded beside v1")
        assert stubs.predict(labelled, timeout=10).model_spec.version.value == 1
        ModelStore.from_params(push_params).write_serving_config((2,), {"stable": 2})  # ... then promote
        wait_until(lambda: version_states(stubs) == {1: END, 2: AVAILABLE}, 15, "v1 unloaded")
        assert stubs.predict(labelled, timeout=10).model_spec.version.value == 2

    refusals = [line for line in lines if "refused models.config" in line]
    assert refusals == [
        "petseg serve: refused models.config, keeping the previous one: FAILED_PRECONDITION: "
        "Request to assign label to version 2 of model petseg, which is not currently available "
        "for inference"
    ]


@pytest.mark.slow
def test_a_version_that_fails_to_load_is_reported_and_the_old_one_keeps_serving(tiny_savedmodel, tmp_path):
    root = tmp_path / "models" / "petseg"
    root.mkdir(parents=True)
    shutil.copytree(tiny_savedmodel, root / "1")
    with running(tmp_path / "models") as (server, lines):
        shutil.copytree(tiny_savedmodel, root / ".staging-2")
        (root / ".staging-2" / "saved_model.pb").write_bytes(b"not a SavedModel")
        (root / ".staging-2").rename(root / "2")
        stubs = Stubs(server.target)
        wait_until(lambda: 2 in version_states(stubs), 15, "the server to try version 2")
        time.sleep(3 * SERVE.poll_seconds)  # later polls neither retry it nor drop version 1
        status = {s.version: s for s in stubs.status(status_request(), timeout=5).model_version_status}
        answer = stubs.predict(images_request(photo(64, 64)[None]), timeout=10)

    assert status[1].state == AVAILABLE
    assert status[2].state == END and status[2].status.error_message
    assert answer.model_spec.version.value == 1
    assert sum("failed to load petseg version 2" in line for line in lines) == 1


# ----------------------------------------------------------------- refusals
def _bad_requests() -> dict[str, tuple[predict_pb2.PredictRequest, grpc.StatusCode]]:
    good = photo(64, 64)[None]
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    cases = {
        "wrong dtype": (images_request(good.astype(np.float32)), invalid),
        "wrong rank": (images_request(good[0]), invalid),
        "wrong channel count": (images_request(np.zeros((1, 64, 64, 4), np.uint8)), invalid),
        "empty batch": (images_request(np.zeros((0, 64, 64, 3), np.uint8)), invalid),
        "unknown output": (images_request(good, outputs=["logits"]), invalid),
        "unknown model": (images_request(good, name="dogseg"), not_found),
        "unknown version": (images_request(good, version=7), not_found),
        "unknown signature": (images_request(good, signature="serving_fast"), grpc.StatusCode.FAILED_PRECONDITION),
        "over the request size limit": (images_request(photo(1300, 1300)[None]), grpc.StatusCode.RESOURCE_EXHAUSTED),
        "answer over the size limit": (
            images_request(photo(600, 600)[None], outputs=[signatures.OUTPUT_MASK, signatures.OUTPUT_PROBABILITIES]),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
    }
    missing = images_request(good)
    del missing.inputs[signatures.INPUT_IMAGES]
    cases["missing input"] = (missing, invalid)
    extra = images_request(good)
    extra.inputs["masks"].CopyFrom(tf.make_tensor_proto(good))
    cases["unknown input"] = (extra, invalid)
    garbage = images_request(good, signature=signatures.SIGNATURE_BYTES)
    del garbage.inputs[signatures.INPUT_IMAGES]
    garbage.inputs[signatures.INPUT_BYTES].CopyFrom(tf.make_tensor_proto([b"not an image"], dtype=tf.string))
    cases["undecodable image bytes"] = (garbage, invalid)
    huge = images_request(good)
    declared = huge.inputs[signatures.INPUT_IMAGES]
    declared.ClearField("tensor_content")
    declared.tensor_shape.dim[1].size = declared.tensor_shape.dim[2].size = 100_000
    declared.int_val.append(0)  # one value "filling" 30 GB
    cases["a tiny message declaring a huge tensor"] = (huge, grpc.StatusCode.RESOURCE_EXHAUSTED)
    short = images_request(good)
    short.inputs[signatures.INPUT_IMAGES].tensor_content = short.inputs[signatures.INPUT_IMAGES].tensor_content[:100]
    cases["values not filling the shape"] = (short, invalid)
    return cases


@pytest.mark.slow
def test_every_bad_request_gets_tf_servings_status_and_the_server_keeps_answering(
    tiny_savedmodel, push_params, push_version
):
    push_version(tiny_savedmodel, push_params)
    small_limit = ServeParams(poll_seconds=0.2, workers=4, max_message_mb=4)
    with running(push_params.model_base_path, small_limit) as (server, _):
        stubs = Stubs(server.target, max_message_mb=64)  # the client may send more than the server takes
        got = {}
        for case, (request, _) in _bad_requests().items():
            try:
                stubs.predict(request, timeout=20)
                got[case] = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                got[case] = exc.code()
                assert exc.details(), f"{case}: no message"
        good = stubs.predict(images_request(photo(64, 64)[None]), timeout=20)
        with pytest.raises(grpc.RpcError) as no_model:
            stubs.status(status_request("dogseg"), timeout=5)

    assert got == {case: code for case, (_, code) in _bad_requests().items()}
    assert good.model_spec.version.value == 1
    assert no_model.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.slow
def test_unavailable_until_a_version_is_pushed_then_the_client_gets_it(tiny_savedmodel, push_params, push_version):
    with running(push_params.model_base_path) as (server, lines):
        stubs = Stubs(server.target)
        with pytest.raises(grpc.RpcError) as nothing_loaded:
            stubs.predict(images_request(photo(64, 64)[None]), timeout=5)
        with pytest.raises(grpc.RpcError) as no_status:
            stubs.status(status_request(), timeout=5)
        answers = []
        with SegmentationClient(server.target, timeout_seconds=30) as client:
            waiting = threading.Thread(target=lambda: answers.extend(client.segment([photo(64, 64)])))
            waiting.start()  # retries UNAVAILABLE until the push lands
            time.sleep(0.5)
            push_version(tiny_savedmodel, push_params)
            waiting.join(timeout=40)

    assert nothing_loaded.value.code() == grpc.StatusCode.UNAVAILABLE
    assert no_status.value.code() == grpc.StatusCode.NOT_FOUND
    assert lines[0].startswith("petseg serve: no version under ") and "versions loaded: none yet" in lines[1]
    assert [a.model_version for a in answers] == [1]


def test_port_already_in_use_is_one_clear_error(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PetsegError, match=f"port {port} on 127.0.0.1 is already in use"):
            start_server(tmp_path, "petseg", SERVE, host="127.0.0.1", port=port)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "petseg",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--model-base-path",
                str(tmp_path),
                "--params",
                str(REPO_ROOT / "params.yaml"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"petseg serve: error: port {port} on 127.0.0.1 is already in use; stop the other server or pass --port PORT"
    ]


# ----------------------------------------------------------------- draining
@pytest.mark.slow
def test_sigterm_drains_requests_in_flight_then_exits(tmp_path, tiny_savedmodel):
    base = tmp_path / "models"
    (base / "petseg").mkdir(parents=True)
    shutil.copytree(tiny_savedmodel, base / "petseg" / "1")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params_dict({"serve": {"drain_seconds": 20.0, "workers": 4}})))
    port = free_ports(1)[0]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "petseg",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--rest-port",
            "0",
            "--model-base-path",
            str(base),
            "--params",
            str(params_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: any("listening on" in line for line in lines) or proc.poll() is not None, 60, "the server to listen"
        )
        batch = np.stack([photo(375, 500) for _ in range(4)])
        request = images_request(batch, outputs=[signatures.OUTPUT_MASK, signatures.OUTPUT_PROBABILITIES])
        outcomes: list[tuple[float, float, str]] = []  # (sent, answered, status)

        def query():
            stubs = Stubs(f"127.0.0.1:{port}")
            while True:
                sent = time.monotonic()
                try:
                    stubs.predict(request, timeout=30)
                    outcomes.append((sent, time.monotonic(), "OK"))
                except grpc.RpcError as exc:
                    outcomes.append((sent, time.monotonic(), exc.code().name))
                    return

        clients = [threading.Thread(target=query, daemon=True) for _ in range(4)]
        for client in clients:
            client.start()
        wait_until(lambda: sum(status == "OK" for *_, status in outcomes) >= 4, 60, "the clients' first answers")
        sigterm_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
        for client in clients:
            client.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=5)

    assert any("SIGTERM received, draining" in line for line in lines)
    assert lines[-1].strip() == "petseg serve: stopped"
    sent_before = [(answered, status) for sent, answered, status in outcomes if sent < sigterm_at]
    sent_after = [status for sent, _, status in outcomes if sent >= sigterm_at]
    assert {status for _, status in sent_before} == {"OK"}  # nothing already sent was cut off
    assert any(answered > sigterm_at for answered, _ in sent_before)  # some were answered while draining
    assert set(sent_after) <= {"OK", "UNAVAILABLE", "CANCELLED"}  # later ones answered or refused
    assert sent_after and sent_after[-1] in ("UNAVAILABLE", "CANCELLED")  # and the server is gone
