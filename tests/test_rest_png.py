"""REST for apps: serving_png over the local server's REST API, the REST client, `petseg predict --rest`, curl.

The REST answers are compared with the gRPC client's answer through
serving_bytes for the same files; refusals with the one-line messages and the
HTTP statuses TF Serving gives (model_servers/http_server.cc ToHTTPStatusCode).
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from helpers import REPO_ROOT, bomb_png
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petseg import cli
from petseg.components.contracts import signatures
from petseg.components.core.errors import PetsegError
from petseg.components.core.params import ServeParams
from petseg.components.ml.cluster import free_ports

tf = pytest.importorskip("tensorflow")
from PIL import Image  # noqa: E402

from petseg.serving import rest  # noqa: E402
from petseg.serving.client import SegmentationClient, ServingRequestError  # noqa: E402
from petseg.serving.rest_client import RestSegmentationClient, rest_base_url  # noqa: E402
from petseg.serving.server import start_server  # noqa: E402

SERVE = ServeParams(poll_seconds=0.5, workers=4, max_message_mb=1, max_image_pixels=1_000_000)
PARAMS_FILE = str(REPO_ROOT / "params.yaml")
DOCS = REPO_ROOT / "docs" / "rest.md"


def _serve(model_dir: Path, base: Path):
    shutil.copytree(model_dir, base / "petseg" / "1")
    return start_server(base, "petseg", SERVE, host="127.0.0.1", port=0, rest_port=0, log=lambda line: None)


@pytest.fixture(scope="module")
def server(tiny_savedmodel, tmp_path_factory):
    running = _serve(tiny_savedmodel, tmp_path_factory.mktemp("rest-png") / "models")
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def old_server(tiny_savedmodel, tmp_path_factory):
    """A version exported before serving_png existed: serving_default and serving_bytes only."""
    loaded = tf.saved_model.load(str(tiny_savedmodel))
    old = tmp_path_factory.mktemp("old-export") / "model"
    tf.saved_model.save(loaded, str(old), signatures={n: loaded.signatures[n] for n in signatures.SIGNATURES[:2]})
    running = _serve(old, tmp_path_factory.mktemp("rest-old") / "models")
    yield running
    running.stop(0)


def _rest(server) -> str:
    return f"127.0.0.1:{server.rest_port}"


def _encoded(height: int, width: int, fmt: str = "JPEG", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    photo = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    photo.save(out, format=fmt)
    return out.getvalue()


def _post(server, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://{_rest(server)}/v1/models/petseg:predict",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def _grpc_bytes_masks(server, encoded: list[bytes]) -> list[np.ndarray]:
    with SegmentationClient(server.target) as client:
        return [answer.mask for answer in client.segment_encoded(encoded)]


# ------------------------------------------------------- the REST JSON forms
def test_png_output_is_b64_in_row_and_columnar_answers_and_holds_the_bytes_mask(server):
    jpeg = _encoded(75, 100)
    (expected,) = _grpc_bytes_masks(server, [jpeg])
    sent = [{"b64": base64.b64encode(jpeg).decode()}] * 2
    row_status, row = _post(server, {"signature_name": signatures.SIGNATURE_PNG, "instances": sent})
    col_status, col = _post(server, {"signature_name": signatures.SIGNATURE_PNG, "inputs": sent})
    assert (row_status, col_status) == (200, 200)
    # one output: each row element is the value itself; the columnar form is the value (json_tensor.cc)
    assert set(row) == {"predictions"} and set(col) == {"outputs"}
    for answer in (*row["predictions"], *col["outputs"]):
        assert set(answer) == {"b64"}
        with Image.open(io.BytesIO(base64.b64decode(answer["b64"]))) as png:
            assert png.format == "PNG" and png.mode == "L"
            np.testing.assert_array_equal(np.asarray(png), expected)
    assert len(json.dumps(row)) < 4000  # kilobytes, not the megabytes of the pixel form


def test_string_outputs_are_b64_only_when_the_alias_ends_in_bytes():
    """json_tensor.cc IsNamedTensorBytes: DT_STRING and an alias ending "_bytes"; other strings are plain text."""
    outputs = {
        "label": np.array([b"cat", b"dog"], dtype=object),
        "x_bytes": np.array([b"\x89P", b"\x00"], dtype=object),
    }
    row = json.loads(rest._row_answer(outputs))
    assert row == {
        "predictions": [{"label": "cat", "x_bytes": {"b64": "iVA="}}, {"label": "dog", "x_bytes": {"b64": "AA=="}}]
    }
    col = json.loads(rest._columnar_answer({"mask_png_bytes": np.array([b"\x01\x02"], dtype=object)}))
    assert col == {"outputs": [{"b64": "AQI="}]}
    assert json.loads(rest._columnar_answer({"name": np.array([[b"ab"]], dtype=object)})) == {"outputs": [["ab"]]}


# ------------------------------------------------------------- the REST client
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.tuples(st.integers(1, 160), st.integers(1, 160)), min_size=1, max_size=4),
    fmt=st.sampled_from(["JPEG", "PNG"]),
)
def test_rest_client_answers_the_grpc_bytes_masks_for_any_sizes(server, sizes, fmt):
    encoded = [_encoded(h, w, fmt, seed=i) for i, (h, w) in enumerate(sizes)]
    with RestSegmentationClient(_rest(server), batch_size=2) as client:
        answers = client.segment_encoded(encoded)
    for (height, width), answer, expected in zip(sizes, answers, _grpc_bytes_masks(server, encoded), strict=True):
        assert answer.mask.shape == (height, width) and answer.mask.dtype == np.uint8
        np.testing.assert_array_equal(answer.mask, expected)
        assert answer.model_version == 1


@pytest.mark.parametrize(
    "case, code, status, message",
    [
        (
            "pixels",
            grpc.StatusCode.INVALID_ARGUMENT,
            400,
            r"INVALID_ARGUMENT: image_bytes\[0\] is a PNG of 2000x2000: ",
        ),
        ("model", grpc.StatusCode.NOT_FOUND, 404, r"refused the request: NOT_FOUND: .*\(HTTP 404\)$"),
        ("version", grpc.StatusCode.NOT_FOUND, 404, r"refused the request: NOT_FOUND: .*\(HTTP 404\)$"),
        (
            "body",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            413,
            r"RESOURCE_EXHAUSTED: request body of .* MiB is over the 1 MiB",
        ),
    ],
)
def test_rest_client_refusals_are_one_line_with_code_and_http_status(server, case, code, status, message):
    model, version, images = "petseg", None, [_encoded(32, 32)]
    if case == "pixels":
        images = [bomb_png(2000, 2000)]  # 4 MP declared, over max_image_pixels 1 MP; never decoded
    elif case == "model":
        model = "nope"
    elif case == "version":
        version = 9
    elif case == "body":
        noise = np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(noise).save(out, format="PNG")
        images = [out.getvalue()]  # ~1 MB of PNG, ~1.4 MB as base64
    with (
        RestSegmentationClient(_rest(server), model, version=version) as client,
        pytest.raises(ServingRequestError) as refused,
    ):
        client.predict_png(images) if case != "pixels" else client.segment_encoded(images)
    text = str(refused.value)
    assert "\n" not in text and text.startswith(f"{_rest(server)} ")
    assert re.search(message, text), text
    assert (refused.value.code, refused.value.http_status) == (code, status)


def test_a_version_without_serving_png_is_refused_with_400(old_server):
    with (
        RestSegmentationClient(_rest(old_server)) as client,
        pytest.raises(ServingRequestError, match=r'Serving signature name: "serving_png" not found') as refused,
    ):
        client.segment_encoded([_encoded(16, 16)])
    assert refused.value.http_status == 400


def test_rest_client_server_down_retries_then_fails_in_one_line():
    target = f"127.0.0.1:{free_ports(1)[0]}"
    with (
        RestSegmentationClient(target, timeout_seconds=1, backoff_seconds=0.1) as client,
        pytest.raises(
            ServingRequestError, match=r"cannot get an answer from a model server at .* attempt\(s\)"
        ) as down,
    ):
        client.segment_encoded([_encoded(8, 8)])
    assert down.value.code == grpc.StatusCode.UNAVAILABLE and "check --rest" in str(down.value)


@given(st.text(max_size=30))
def test_rest_base_url_takes_host_port_or_refuses_in_one_line(target):
    try:
        url = rest_base_url(target)
    except PetsegError as exc:
        assert "\n" not in str(exc) and "is not HOST:PORT" in str(exc)
    else:
        assert url.startswith(("http://", "https://")) and re.search(r":\d+", url)


# ------------------------------------------------------------ petseg predict --rest
def test_predict_rest_writes_what_the_grpc_path_writes_for_real_photos(server, sample_dir, tmp_path, capsys):
    photos = sorted((sample_dir / "images").glob("*.jpg"))[:3]
    outputs = {}
    for api, flags in (("rest", ["--rest", _rest(server)]), ("grpc", ["--target", server.target, "--bytes"])):
        out = tmp_path / api
        argv = ["predict", "--params", PARAMS_FILE, *flags, "--out", str(out), "--sheet", str(out / "sheet.png")]
        assert cli.main([*argv, *map(str, photos)]) == 0
        outputs[api] = (out, capsys.readouterr().out.strip().splitlines())
    (rest_out, rest_lines), (grpc_out, grpc_lines) = outputs["rest"], outputs["grpc"]
    assert rest_lines == [line.replace(str(grpc_out), str(rest_out)) for line in grpc_lines]
    assert all("[version 1]" in line for line in rest_lines)
    for photo in photos:
        for name in (f"{photo.stem}.mask.png", f"{photo.stem}.overlay.png"):
            with Image.open(rest_out / name) as by_rest, Image.open(grpc_out / name) as by_grpc:
                assert by_rest.mode == by_grpc.mode and by_rest.size == Image.open(photo).size
                np.testing.assert_array_equal(np.asarray(by_rest), np.asarray(by_grpc))
    with Image.open(rest_out / "sheet.png") as by_rest, Image.open(grpc_out / "sheet.png") as by_grpc:
        np.testing.assert_array_equal(np.asarray(by_rest), np.asarray(by_grpc))


@pytest.mark.parametrize(
    "flags, photo_bytes, error",
    [
        (["--rest", "{rest}", "--target", "127.0.0.1:1"], None, "--rest and --target name two servers; give --rest"),
        (["--rest", "localhost"], None, "--rest 'localhost' is not HOST:PORT (for example localhost:8501)"),
        (["--rest", "{rest}"], b"GIF89a\x10\x00\x10\x00\x00\x00\x00", "--rest sends JPEG or PNG files only"),
        (["--rest", "{rest}", "--model-name", "nope"], None, "refused the request: NOT_FOUND: "),
        (["--rest", "{down}", "--timeout", "1"], None, "cannot get an answer from a model server at 127.0.0.1:"),
    ],
    ids=["two-servers", "bad-address", "not-jpeg-or-png", "unknown-model", "server-down"],
)
def test_predict_rest_mistakes_are_one_line_and_nothing_is_written(server, tmp_path, capsys, flags, photo_bytes, error):
    photo = tmp_path / "photo.png"
    if photo_bytes is None:
        photo.write_bytes(_encoded(20, 30, "PNG"))
    else:
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(photo, format="GIF")
    values = {"rest": _rest(server), "down": f"127.0.0.1:{free_ports(1)[0]}"}
    argv = [f.format(**values) for f in flags]
    code = cli.main(["predict", "--params", PARAMS_FILE, *argv, "--out", str(tmp_path / "out"), str(photo)])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("petseg predict: error: ") and error in line, line
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------- curl
def _documented_curl_block() -> str:
    text = DOCS.read_text()
    marker = text.index("<!-- curl-example:")
    block = re.search(r"```bash\n(.*?)```", text[marker:], re.S)
    assert block is not None, f"no bash block after the curl-example marker in {DOCS}"
    return block.group(1)


def test_the_documented_curl_command_works_against_petseg_serve(server, sample_dir, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (scripts/setup.sh installs it where apt-get can)")
    script = _documented_curl_block()
    lines = script.splitlines()
    assert lines[0] == "SERVER=localhost:8501" and lines[1] == "PHOTO=photo.jpg"  # what the test substitutes
    photo = sorted((sample_dir / "images").glob("*.jpg"))[0]
    shutil.copy(photo, tmp_path / "photo.jpg")
    script = "\n".join([f"SERVER={_rest(server)}", *lines[1:]])
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, check=True, timeout=120)
    with Image.open(tmp_path / "mask.png") as mask:
        np.testing.assert_array_equal(np.asarray(mask), _grpc_bytes_masks(server, [photo.read_bytes()])[0])

    (tmp_path / "photo.jpg").write_bytes(b"not a photo")  # an error answer: curl exits non-zero, the body says why
    failed = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, timeout=120)
    assert failed.returncode != 0
    assert "error" in json.loads((tmp_path / "answer.json").read_text())
