"""The gRPC client and `petseg predict`: images in, masks out, clear failures.

Runs against the local server here, and against a real TF Serving when
TF_SERVING_TARGET=HOST:PORT names one serving the `petseg` model.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
from helpers import REPO_ROOT, assert_mask_is_a_most_likely_class, bomb_png

from petseg import cli
from petseg.components.contracts import signatures
from petseg.components.core.errors import PetsegError
from petseg.components.core.params import ServeParams
from petseg.components.ml.cluster import free_ports

tf = pytest.importorskip("tensorflow")
from petseg.serving.client import Segmentation, SegmentationClient, ServingRequestError  # noqa: E402
from petseg.serving.predict_files import CLASS_COLOURS  # noqa: E402
from petseg.serving.server import start_server  # noqa: E402

SERVE = ServeParams(poll_seconds=0.2, workers=4)
PARAMS_FILE = str(REPO_ROOT / "params.yaml")
RNG = np.random.default_rng(11)


def _publish(model_dir, base, version: int = 1):
    """Lay a version out as push does: copy beside, then rename into place."""
    staging = base / "petseg" / f".staging-{version}"
    shutil.copytree(model_dir, staging)
    staging.rename(base / "petseg" / str(version))


@pytest.fixture(scope="module")
def server(tiny_savedmodel, tmp_path_factory):
    base = tmp_path_factory.mktemp("client-models")
    _publish(tiny_savedmodel, base)
    running = start_server(base, "petseg", SERVE, host="127.0.0.1", port=0, log=lambda line: None)
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def reference(tiny_savedmodel):
    """In-process masks of the served SavedModel, for uint8 images [H, W, 3]."""
    signature = tf.saved_model.load(str(tiny_savedmodel)).signatures[signatures.SIGNATURE_IMAGES]
    return lambda image: signature(**{signatures.INPUT_IMAGES: tf.constant(image[None])})[signatures.OUTPUT_MASK][
        0
    ].numpy()


def _photo_files(tmp_path, sizes, fmt="PNG"):
    from PIL import Image

    paths = []
    for i, (height, width) in enumerate(sizes):
        path = tmp_path / f"photo{i}.{fmt.lower()}"
        Image.fromarray(RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, format=fmt)
        paths.append(path)
    return paths


# --------------------------------------------------------------------- the API
@pytest.mark.slow
def test_segment_returns_masks_in_order_for_mixed_sizes_in_batches(server, reference):
    images = [
        RNG.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(64, 64), (90, 120), (64, 64), (64, 64), (90, 120)]
    ]
    with SegmentationClient(server.target, batch_size=2, with_probabilities=True) as client:
        answers = client.segment(images)
    for image, answer in zip(images, answers, strict=True):
        assert answer.mask.shape == image.shape[:2]
        np.testing.assert_array_equal(answer.mask, reference(image))
        assert answer.probabilities.shape == (*image.shape[:2], 3)
        assert_mask_is_a_most_likely_class(answer.mask, answer.probabilities)
        assert answer.model_version == 1


def test_class_fractions_share_out_every_pixel():
    mask = np.array([[0, 0, 1, 2]], dtype=np.uint8)
    fractions = Segmentation(mask, model_version=1).class_fractions()
    assert fractions == {"pet": 0.5, "background": 0.25, "border": 0.25}


def test_client_refuses_images_that_are_not_uint8_rgb():
    with SegmentationClient("localhost:1") as client:
        with pytest.raises(PetsegError, match=r"image 0 must be uint8 \[H, W, 3\], got float32"):
            client.segment([np.zeros((4, 4, 3), np.float32)])
        with pytest.raises(PetsegError, match="image 0 is not a JPEG or PNG file"):
            client.segment_encoded([b"not an image at all"])


def test_server_down_fails_after_retries_with_unavailable():
    started = time.monotonic()
    with (
        SegmentationClient(f"127.0.0.1:{free_ports(1)[0]}", timeout_seconds=1.0, backoff_seconds=0.1) as client,
        pytest.raises(ServingRequestError, match="cannot get an answer from a model server") as failure,
    ):
        client.segment([np.zeros((8, 8, 3), np.uint8)])
    assert failure.value.code == grpc.StatusCode.UNAVAILABLE
    assert "attempt(s)" in str(failure.value) and "petseg serve" in str(failure.value)
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_client_retries_unavailable_until_the_server_starts(tiny_savedmodel, tmp_path):
    _publish(tiny_savedmodel, tmp_path)
    port = free_ports(1)[0]
    answers, errors = [], []

    def ask():
        try:
            with SegmentationClient(f"127.0.0.1:{port}", timeout_seconds=30, backoff_seconds=0.1) as client:
                answers.extend(client.segment([np.zeros((16, 16, 3), np.uint8)]))
        except PetsegError as exc:
            errors.append(exc)

    asking = threading.Thread(target=ask)
    asking.start()
    time.sleep(1.0)  # the client is retrying against nothing
    running = start_server(tmp_path, "petseg", SERVE, host="127.0.0.1", port=port, log=lambda line: None)
    try:
        asking.join(timeout=40)
    finally:
        running.stop(0)
    assert errors == [] and [a.model_version for a in answers] == [1]


@pytest.mark.slow
def test_refusals_are_reported_with_their_status_not_retried(server):
    with (
        SegmentationClient(server.target, version=9) as client,
        pytest.raises(ServingRequestError, match="refused the request: NOT_FOUND") as refused,
    ):
        client.segment([np.zeros((8, 8, 3), np.uint8)])
    assert refused.value.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.slow
def test_a_missed_deadline_is_reported_as_such(server):
    with (
        SegmentationClient(server.target, timeout_seconds=0.001) as client,
        pytest.raises(ServingRequestError, match="no answer from") as late,
    ):
        client.segment([np.zeros((375, 500, 3), np.uint8)])
    assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


# --------------------------------------------------------------- petseg predict
@pytest.mark.slow
@pytest.mark.parametrize("encoded", [False, True], ids=["pixels", "bytes"])
def test_predict_cli_writes_masks_overlays_and_prints_fractions(server, reference, tmp_path, capsys, encoded):
    from PIL import Image

    photos = _photo_files(tmp_path, [(64, 96), (120, 80)])
    out = tmp_path / "out"
    argv = [
        "predict",
        "--params",
        PARAMS_FILE,
        "--target",
        server.target,
        "--out",
        str(out),
        "--sheet",
        str(out / "sheets" / "sheet.png"),  # a folder that does not exist yet: created, like --out
        *map(str, photos),
    ] + (["--bytes"] if encoded else [])
    assert cli.main(argv) == 0
    with Image.open(out / "sheets" / "sheet.png") as sheet:
        # one 160 px row per photo (4 px apart), three tiles per row: photo, mask, overlay
        assert sheet.height == 2 * 160 + 4
        assert sheet.width == max(3 * round(w * 160 / h) + 8 for h, w in [(64, 96), (120, 80)])

    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2
    for path, line in zip(photos, printed, strict=True):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        with Image.open(out / f"{path.stem}.mask.png") as mask_png:
            assert mask_png.mode == "P"
            mask = np.asarray(mask_png)
        np.testing.assert_array_equal(mask, reference(pixels))  # the PNG holds the class ids
        with Image.open(out / f"{path.stem}.overlay.png") as overlay:
            assert overlay.size == (pixels.shape[1], pixels.shape[0]) and overlay.mode == "RGB"
            blended = np.asarray(overlay).astype(float)
        expected = 0.55 * pixels + 0.45 * CLASS_COLOURS[mask]
        assert np.abs(blended - expected).max() <= 1.0
        shares = {name: float(share) for name, share in re.findall(r"(\w+) ([\d.]+)%", line)}
        assert line.startswith(f"{path.name} ({pixels.shape[1]}x{pixels.shape[0]}): ")
        assert "[version 1]" in line
        for class_id, name in enumerate(signatures.CLASS_NAMES):
            # printed to one decimal: off by up to half a unit, plus float noise at x.x5
            assert shares[name] == pytest.approx(100 * np.mean(mask == class_id), abs=0.0501)


def test_predict_cli_server_down_is_one_line_and_nonzero(tmp_path, capsys):
    (photo,) = _photo_files(tmp_path, [(16, 16)])
    code = cli.main(
        [
            "predict",
            "--params",
            PARAMS_FILE,
            "--target",
            f"127.0.0.1:{free_ports(1)[0]}",
            "--timeout",
            "1",
            "--out",
            str(tmp_path / "out"),
            str(photo),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("petseg predict: error: cannot get an answer from a model server at 127.0.0.1:")
    assert not (tmp_path / "out").exists()


def test_predict_cli_missing_image_is_named_and_nothing_is_sent(tmp_path, capsys):
    code = cli.main(
        [
            "predict",
            "--params",
            PARAMS_FILE,
            "--target",
            "127.0.0.1:1",
            "--out",
            str(tmp_path / "out"),
            str(tmp_path / "nope.jpg"),
        ]
    )
    assert code == 1
    assert capsys.readouterr().err.strip() == f"petseg predict: error: {tmp_path / 'nope.jpg'}: no such image file"
    assert not (tmp_path / "out").exists()


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make_args, error",
    [
        (
            lambda tmp, photo: ["--out", str(tmp), str(photo), str(tmp / "photo0.mask.png")],
            "photo0.mask.png is one of the input images; choose another --out or --sheet",
        ),
        (
            lambda tmp, photo: ["--out", str(tmp / "out"), "--sheet", str(photo), str(photo)],
            "photo0.png is one of the input images; choose another --out or --sheet",
        ),
        (
            lambda tmp, photo: ["--out", str(tmp / "out"), str(_write(tmp / "bomb.png", bomb_png(20000, 20000)))],
            "bomb.png: too large to decode here",
        ),
    ],
    ids=["mask-over-an-input", "sheet-over-an-input", "decompression-bomb"],
)
def test_predict_cli_refuses_before_sending_and_never_overwrites_an_input(tmp_path, capsys, make_args, error):
    (photo,) = _photo_files(tmp_path, [(16, 16)])
    (tmp_path / "photo0.mask.png").write_bytes(photo.read_bytes())  # the user's own file, named like an output
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code = cli.main(["predict", "--params", PARAMS_FILE, "--target", "127.0.0.1:1", *make_args(tmp_path, photo)])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and line.startswith("petseg predict: error: ") and error in line
    assert {p: p.read_bytes() for p in before} == before and not (tmp_path / "out").exists()


def test_encoded_size_is_read_from_the_header_without_decoding(tmp_path):
    from petseg.serving.client import encoded_size

    assert encoded_size(bomb_png(20000, 20000), 0) == (20000, 20000)
    with pytest.raises(PetsegError, match="image 0 is GIF; the bytes signature takes JPEG or PNG"):
        encoded_size(b"GIF89a\x10\x00\x10\x00\x00\x00\x00", 0)


# -------------------------------------------------------------- real TF Serving
@pytest.mark.skipif(
    not os.environ.get("TF_SERVING_TARGET"),
    reason="set TF_SERVING_TARGET=HOST:PORT to a tensorflow/serving serving the petseg model",
)
def test_against_a_real_tf_serving():
    target = os.environ["TF_SERVING_TARGET"]
    images = [RNG.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(375, 500), (64, 64)]]
    with SegmentationClient(
        target, model_name=os.environ.get("TF_SERVING_MODEL", "petseg"), with_probabilities=True
    ) as client:
        answers = client.segment(images)
        encoded = client.segment_encoded([tf.io.encode_png(image).numpy() for image in images])
    with SegmentationClient(target, version=987654) as missing_version, pytest.raises(ServingRequestError) as refused:
        missing_version.segment(images[:1])
    for image, answer, from_bytes in zip(images, answers, encoded, strict=True):
        assert answer.mask.shape == image.shape[:2] and answer.model_version > 0
        assert_mask_is_a_most_likely_class(answer.mask, answer.probabilities)
        np.testing.assert_array_equal(from_bytes.mask, answer.mask)
    assert refused.value.code == grpc.StatusCode.NOT_FOUND
