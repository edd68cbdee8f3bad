"""What several test modules share besides fixtures: paths, tiny params, tiny records, metric references.

Fixtures stay in conftest.py; test modules import these with `from helpers import ...`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from petseg.components.contracts.manifest import MANIFEST_FILE
from petseg.components.contracts.records import CLASS_NAMES
from petseg.components.core.params import Params, params_to_dict
from petseg.components.ml.metrics import SegmentationMetrics, confusion_counts

NAMES = CLASS_NAMES


def reference_metrics(true: np.ndarray, pred: np.ndarray, k: int = 3) -> tuple[list, float, float]:
    """Per-class IoU from boolean masks (None when the class is in neither), mean over the rest, accuracy."""
    ious = []
    for c in range(k):
        inter = np.logical_and(true == c, pred == c).sum()
        union = np.logical_or(true == c, pred == c).sum()
        ious.append(inter / union if union else None)
    present = [v for v in ious if v is not None]
    return ious, float(np.mean(present)), float(np.mean(true == pred))


def metrics_of(true, pred) -> SegmentationMetrics:
    return SegmentationMetrics(NAMES, confusion_counts(true, pred, 3))


REPO_ROOT = Path(__file__).resolve().parents[1]
# The real photos beside the checkout; PETSEG_SAMPLE_DIR names them where the checkout sits elsewhere (a worktree).
SAMPLE_DIR = Path(os.environ.get("PETSEG_SAMPLE_DIR") or REPO_ROOT.parent / "shared" / "data" / "oxford-pet-sample")

TINY_OVERRIDES = {
    "data": {
        "source": "synthetic",
        "synthetic": {"train_examples": 24, "test_examples": 8, "min_side": 96, "max_side": 160},
    },
    "validate": {"min_train_examples": 10, "min_test_examples": 4},
    "preprocess": {"image_size": 64, "examples_per_shard": 8, "workers": 1},
}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) else value
    return out


def tiny_params_dict(extra: dict | None = None) -> dict:
    """params.yaml contents for a tiny, fast synthetic run (plain dict, for writing YAML)."""
    return _merge(_merge(params_to_dict(Params()), TINY_OVERRIDES), extra or {})


def write_synthetic_records(
    out_dir: Path, image_size: int, counts: dict[str, int], examples_per_shard: int = 8, seed: int = 0
) -> Path:
    """Shards + a minimal manifest (image_size, counts, class pixel fractions) of synthetic scenes.

    Written directly with records.serialize_example, without download/validate/preprocess,
    so model and input tests stay fast.
    """
    import numpy as np
    import tensorflow as tf

    from petseg.components.contracts import records
    from petseg.components.core.fsutil import write_json
    from petseg.components.preprocess import trimap_to_classes
    from petseg.components.sources.synthetic import synthetic_scene

    out_dir.mkdir(parents=True, exist_ok=True)
    pixels = {}
    for split_index, (split, count) in enumerate(counts.items()):
        rng = np.random.default_rng([seed, split_index])
        shards = max(1, -(-count // examples_per_shard))
        class_pixels = np.zeros(len(records.CLASS_NAMES), np.int64)
        for shard in range(shards):
            with tf.io.TFRecordWriter(str(out_dir / records.shard_name(split, shard, shards))) as writer:
                for i in range(shard * examples_per_shard, min(count, (shard + 1) * examples_per_shard)):
                    image, trimap = synthetic_scene(rng, image_size, image_size)
                    mask = trimap_to_classes(trimap)
                    class_pixels += np.bincount(mask.ravel(), minlength=len(records.CLASS_NAMES))
                    writer.write(records.serialize_example(f"{split}_{i:05d}", image, mask))
        pixels[split] = {
            name: float(n / class_pixels.sum()) for name, n in zip(records.CLASS_NAMES, class_pixels, strict=True)
        }
    write_json(
        out_dir / MANIFEST_FILE,
        {
            "image_size": image_size,
            "class_names": list(records.CLASS_NAMES),
            "counts": dict(counts),
            "class_pixel_fractions": pixels,
        },
    )
    return out_dir


def assert_mask_is_a_most_likely_class(mask: np.ndarray, probabilities: np.ndarray) -> None:
    """Each mask pixel names a class of highest probability there (on a tie either class is right)."""
    chosen = np.take_along_axis(probabilities, mask[..., None].astype(np.int64), axis=-1)[..., 0]
    np.testing.assert_allclose(chosen, probabilities.max(axis=-1), rtol=0, atol=1e-6)


def write_blessing(
    model_dir, params, folder: Path, blessed: bool = True, mean_iou: float = 0.9, image_size: int = 32
) -> Path:
    """A blessing.json in evaluate's format for `model_dir`, compared against what `params`' store serves now."""
    import uuid

    from petseg.components.core.fsutil import write_json
    from petseg.components.store import model_store
    from petseg.components.store.model_store import ModelStore

    served = ModelStore.from_params(params).served_version()
    path = Path(folder) / f"blessing-{uuid.uuid4().hex[:6]}.json"
    write_json(
        path,
        {
            "blessed": blessed,
            "reason": "given by the test",
            "checks": [],
            "candidate": {"mean_iou": mean_iou, "pixel_accuracy": 0.95, "iou": {}},
            "baseline": {"version": served} if served else None,
            "model": {"path": str(model_dir), "fingerprint": model_store.model_fingerprint(model_dir)},
            "data": {"image_size": image_size, "manifest_sha256": "d" * 64},
            "push_target": ModelStore.from_params(params).root,
        },
    )
    return path


def bomb_png(width: int = 12000, height: int = 12000) -> bytes:
    """A small PNG whose header declares width x height pixels (one row of data, then nothing)."""
    import io
    import zlib

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (width, 1)).save(out, format="PNG")
    data = bytearray(out.getvalue())
    data[20:24] = height.to_bytes(4, "big")  # IHDR height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # the IHDR chunk's CRC, so decoders accept it
    return bytes(data)


# ------------------------------------------------------------ a local S3 server
def _moto_server() -> str:
    """The `moto_server` of the moto this interpreter imports (the test extra's), else one on PATH.

    Not PATH first: without the venv activated, PATH can hold another Python's moto_server (a pyenv
    shim, say) with an older moto. moto 5.2.1 in server mode checks signatures against a wrong
    canonical query: moto/core/authorization.py (_authenticate_and_authorize_action) rebuilds the
    URL from `self.uri`, whose query werkzeug has already percent-decoded, and botocore's
    _canonical_query_string_url does not re-encode it, so `delimiter=%2F` (every s3fs listing) or a
    prefix with a `/` is canonicalised as `delimiter=/` and a correctly signed ListObjectsV2 gets
    SignatureDoesNotMatch. moto 5.2.6 uses the raw path and query there, as S3 does.
    """
    beside = Path(sys.executable).parent / "moto_server"
    return str(beside) if beside.exists() else (shutil.which("moto_server") or str(beside))


MOTO_SERVER = _moto_server()


@contextlib.contextmanager
def moto_server(log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """http://127.0.0.1:PORT of a `moto_server` (S3, IAM...) running for the block, as tests/test_s3.py starts one."""
    from petseg.components.ml.cluster import free_ports

    port = free_ports(1)[0]
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.3)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def require_signed_requests(endpoint: str, bucket: str) -> tuple[str, str]:
    """Turn on moto's authentication: (access key id, secret) of an IAM user allowed everything.

    moto checks keys and signatures only after /moto-api/reset-auth; the user is made first,
    while any key is accepted. Then the key is shown to work on `bucket` through s3fs (the
    client the code uses) and a wrong secret to be refused, so a test expecting a refusal
    cannot pass merely because this server refuses every request.
    """
    import json

    import boto3

    iam = boto3.client(
        "iam", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
    )
    iam.create_user(UserName="petseg-admin")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="petseg-admin", PolicyName="all", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="petseg-admin")["AccessKey"]
    request = urllib.request.Request(
        endpoint + "/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request, timeout=10).close()
    _require_s3fs_signing_works(endpoint, bucket, key["AccessKeyId"], key["SecretAccessKey"])
    return key["AccessKeyId"], key["SecretAccessKey"]


def _require_s3fs_signing_works(endpoint: str, bucket: str, key_id: str, secret: str) -> None:
    """The signed server takes s3fs's requests with the right key (a `/` in prefix and delimiter
    included: see _moto_server) and refuses them with a wrong secret."""
    import s3fs

    def filesystem(secret_key: str) -> s3fs.S3FileSystem:
        return s3fs.S3FileSystem(
            key=key_id,
            secret=secret_key,
            endpoint_url=endpoint,
            client_kwargs={"region_name": "us-east-1"},
            skip_instance_cache=True,
        )

    good = filesystem(secret)
    probe = f"{bucket}/signing-probe/nested/file.txt"
    good.pipe_file(probe, b"probe")
    try:
        assert good.ls(f"{bucket}/signing-probe/", detail=False) == [f"{bucket}/signing-probe/nested"]
        assert good.cat_file(probe) == b"probe"
    finally:
        good.rm(f"{bucket}/signing-probe", recursive=True)
    try:
        filesystem(secret + "x").ls(f"{bucket}/", refresh=True)
    except PermissionError as refused:
        assert "signature" in str(refused).lower(), refused
    else:
        raise AssertionError(f"moto_server at {endpoint} accepts a wrong secret: signatures are not checked")
