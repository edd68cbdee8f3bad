"""Shared fixtures: tiny synthetic data built in temporary folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from helpers import SAMPLE_DIR, tiny_params_dict, write_blessing, write_synthetic_records

from petseg.components.contracts.manifest import MANIFEST_FILE
from petseg.components.core.params import Params, params_from_dict


@pytest.fixture
def tiny_params() -> Params:
    return params_from_dict(tiny_params_dict())


@pytest.fixture(scope="session")
def synthetic_raw_master(tmp_path_factory) -> Path:
    """A tiny synthetic raw dataset, built once per session; copy it before changing it."""
    from petseg.components.download import download

    params = params_from_dict(tiny_params_dict())
    out = tmp_path_factory.mktemp("raw-master") / "raw"
    download(params.data, out)
    return out


@pytest.fixture
def synthetic_raw(synthetic_raw_master, tmp_path) -> Path:
    """A private copy of the tiny synthetic raw dataset that a test may change."""
    out = tmp_path / "raw"
    shutil.copytree(synthetic_raw_master, out)
    return out


@pytest.fixture
def sample_dir() -> Path:
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"real sample data not found at {SAMPLE_DIR}")
    return SAMPLE_DIR


TINY_MODEL_IMAGE_SIZE = 64


@pytest.fixture(scope="session")
def tiny_savedmodel(tmp_path_factory) -> Path:
    """An untrained tiny U-Net (base 4, depth 2, 64 px) exported with the real export code.

    Serves the contract in components/contracts/signatures.py (any H x W in, mask at H x W out);
    its predictions are meaningless. Read-only: copy it before changing it.
    """
    from petseg.components.core.params import ModelParams, UnetParams
    from petseg.components.ml.export import export_serving_model
    from petseg.components.ml.model import build_model

    model = build_model(
        ModelParams(architecture="unet", encoder_weights="none", unet=UnetParams(base_filters=4, depth=2)),
        TINY_MODEL_IMAGE_SIZE,
    )
    return export_serving_model(model, tmp_path_factory.mktemp("tiny-model") / "savedmodel", TINY_MODEL_IMAGE_SIZE)


@pytest.fixture(scope="session")
def synthetic_records(synthetic_raw_master, tmp_path_factory) -> Path:
    """TFRecords preprocessed (tiny params: 64 px, 8 per shard) from the tiny synthetic raw set; read-only.

    The validation summary here is written directly through the validation contract (contracts/validation.py),
    so this fixture does not depend on the validate step.
    """
    from petseg.components.contracts.rawdata import dataset_fingerprint
    from petseg.components.contracts.validation import ValidationSummary, write_summary
    from petseg.components.preprocess import preprocess

    base = tmp_path_factory.mktemp("records-master")
    write_summary(
        base / "validation", ValidationSummary(success=True, fingerprint=dataset_fingerprint(synthetic_raw_master))
    )
    params = params_from_dict(tiny_params_dict())
    return preprocess(synthetic_raw_master, base / "validation", params.preprocess, base / "records").out_dir


@pytest.fixture(scope="session")
def tiny_records(tmp_path_factory) -> Path:
    """Read-only records folder: 64 px synthetic scenes, train 48 / val 16 / test 16, 8 per shard."""
    return write_synthetic_records(
        tmp_path_factory.mktemp("tiny-records") / "records", TINY_MODEL_IMAGE_SIZE, {"train": 48, "val": 16, "test": 16}
    )


# ------------------------------------------------ models whose answer is known exactly
CODED_RED = (40, 120, 200)  # red channel value per class id in coded_records; red // 80 gives the class back


def write_rule_savedmodel(path: Path, wrong_fraction: float = 0.0, broken: bool = False) -> Path:
    """A SavedModel serving the contract (its three signatures) whose mask is a known rule of the pixels.

    Class = min(red // 80, 2), so on `coded_records` it is exact; pixels whose green
    value is >= 256 * (1 - wrong_fraction) are answered (class + 1) % 3 instead, so on
    uniformly random green about that fraction of pixels is wrong. `broken=True`
    answers a mask of the wrong shape ([N, 8, 8]), which infra validation must catch.
    """
    import tensorflow as tf

    from petseg.components.contracts import signatures
    from petseg.components.ml.export import encode_masks_png

    threshold = round(256 * (1.0 - wrong_fraction))

    def answer(images):
        cls = tf.minimum(tf.cast(images[..., 0], tf.int32) // 80, 2)
        wrong = tf.cast(images[..., 1], tf.int32) >= threshold
        mask = tf.where(wrong, (cls + 1) % 3, cls)
        if broken:
            mask = mask[:, :8, :8] * 0
        return {
            signatures.OUTPUT_MASK: tf.cast(mask, tf.uint8),
            signatures.OUTPUT_PROBABILITIES: tf.one_hot(mask, 3, dtype=tf.float32),
        }

    module = tf.Module()
    module.serve_images = tf.function(
        answer, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=signatures.INPUT_IMAGES)]
    )
    module.serve_bytes = tf.function(
        lambda image_bytes: answer(
            tf.map_fn(
                lambda b: tf.ensure_shape(tf.io.decode_image(b, channels=3, expand_animations=False), [None, None, 3]),
                image_bytes,
                fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
            )
        ),
        input_signature=[tf.TensorSpec([None], tf.string, name=signatures.INPUT_BYTES)],
    )
    module.serve_png = tf.function(
        lambda image_bytes: {
            signatures.OUTPUT_MASK_PNG: encode_masks_png(module.serve_bytes(image_bytes)[signatures.OUTPUT_MASK])
        },
        input_signature=[tf.TensorSpec([None], tf.string, name=signatures.INPUT_BYTES)],
    )
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            signatures.SIGNATURE_IMAGES: module.serve_images,
            signatures.SIGNATURE_BYTES: module.serve_bytes,
            signatures.SIGNATURE_PNG: module.serve_png,
        },
    )
    names = Path(path) / signatures.CLASS_NAMES_FILE
    names.parent.mkdir(parents=True, exist_ok=True)
    names.write_text("".join(f"{n}\n" for n in signatures.CLASS_NAMES))
    return Path(path)


@pytest.fixture(scope="session")
def rule_savedmodels(tmp_path_factory) -> dict[str, Path]:
    """Read-only rule SavedModels (see write_rule_savedmodel): perfect, wrong_10 (10% wrong),
    wrong_30, wrong_70 and broken (wrong mask shape)."""
    base = tmp_path_factory.mktemp("rule-models")
    specs = {
        "perfect": (0.0, False),
        "wrong_10": (0.1, False),
        "wrong_30": (0.3, False),
        "wrong_70": (0.7, False),
        "broken": (0.0, True),
    }
    return {name: write_rule_savedmodel(base / name, frac, broken) for name, (frac, broken) in specs.items()}


@pytest.fixture(scope="session")
def coded_records(tmp_path_factory) -> Path:
    """Read-only 32 px records whose red channel encodes each pixel's class (CODED_RED), green uniform random.

    test: 10 examples in 2 shards (so batches of 4 end with a partial one); train/val: 2 each.
    """
    import numpy as np
    import tensorflow as tf

    from petseg.components.contracts import records
    from petseg.components.core.fsutil import write_json

    size, rng = 32, np.random.default_rng(7)
    out = tmp_path_factory.mktemp("coded-records") / "records"
    out.mkdir()
    counts = {"train": 2, "val": 2, "test": 10}
    for split, count in counts.items():
        shards = 2 if count > 2 else 1
        per_shard = -(-count // shards)
        for shard in range(shards):
            with tf.io.TFRecordWriter(str(out / records.shard_name(split, shard, shards))) as writer:
                for i in range(shard * per_shard, min(count, (shard + 1) * per_shard)):
                    coarse = rng.integers(0, 3, size=(4, 4))
                    mask = np.kron(coarse, np.ones((8, 8), np.int64)).astype(np.uint8)
                    image = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                    image[..., 0] = np.asarray(CODED_RED, np.uint8)[mask]
                    writer.write(records.serialize_example(f"{split}_{i:03d}", image, mask))
    write_json(out / MANIFEST_FILE, {"image_size": size, "class_names": list(records.CLASS_NAMES), "counts": counts})
    return out


@pytest.fixture(scope="session")
def second_savedmodel(tmp_path_factory) -> Path:
    """Another untrained tiny model (different architecture and weights from tiny_savedmodel), same contract.

    For tests that need a second, distinguishable version to push. Read-only.
    """
    from petseg.components.core.params import ModelParams, UnetParams
    from petseg.components.ml.export import export_serving_model
    from petseg.components.ml.model import build_model

    model = build_model(
        ModelParams(
            architecture="unet", encoder_weights="none", unet=UnetParams(base_filters=4, depth=1, batch_norm=False)
        ),
        TINY_MODEL_IMAGE_SIZE,
    )
    return export_serving_model(model, tmp_path_factory.mktemp("second-model") / "savedmodel", TINY_MODEL_IMAGE_SIZE)


@pytest.fixture
def push_version(tmp_path):
    """push_version(model_dir, push_params) -> version: publish a SavedModel through the real `push`.

    Writes the blessing evaluate would give a passing model (no evaluation run),
    so push copies, warms up, infra-validates, renames the version into place
    and points models.config at it, exactly as in the pipeline.
    """
    from petseg.components.contracts.lineage import Lineage
    from petseg.components.push import push

    def _push(model_dir: Path, push_params) -> int:
        blessing_file = write_blessing(model_dir, push_params, tmp_path, image_size=TINY_MODEL_IMAGE_SIZE)
        result = push(Path(model_dir), blessing_file, push_params, lineage=Lineage())
        assert result.status == "pushed", result.reason
        return result.version

    return _push
