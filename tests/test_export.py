"""The exported SavedModel: both signatures, any input size, same answer as the Keras model."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from petseg.components.contracts import signatures
from petseg.components.ml.export import export_serving_model, read_class_names, resize_for_model
from petseg.components.ml.model import unet
from petseg.components.preprocess import resize_image

SIZE = 64


@pytest.fixture(scope="module")
def keras_and_exported(tmp_path_factory):
    """A tiny U-Net with non-trivial weights, and its export."""
    import keras

    keras.utils.set_random_seed(3)
    model = unet(SIZE, base_filters=4, depth=2)
    # Shift the logits' biases apart so the mask is not decided by near-ties.
    logits = model.get_layer("logits")
    kernel, _ = logits.get_weights()
    logits.set_weights([kernel * 4.0, np.array([0.3, 0.0, -0.3], np.float32)])
    export_dir = export_serving_model(model, tmp_path_factory.mktemp("export") / "savedmodel", SIZE)
    return model, export_dir, tf.saved_model.load(str(export_dir))


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random 'photo' (so resizing is well behaved), uint8 [H, W, 3]."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


def _keras_answer(model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mask and probabilities from the Keras model, resized back with TF's bilinear resize."""
    pixels = resize_for_model(tf.constant(images), SIZE)
    logits = model.predict(pixels, verbose=0)
    logits = tf.image.resize(logits, images.shape[1:3], method="bilinear").numpy()
    probs = tf.nn.softmax(logits).numpy()
    return logits.argmax(-1).astype(np.uint8), probs


def _assert_same_mask(served: np.ndarray, expected: np.ndarray, probs: np.ndarray) -> None:
    top2 = np.sort(probs, axis=-1)[..., -2:]
    decided = (top2[..., 1] - top2[..., 0]) > 1e-4  # away from exact ties, where float order may differ
    assert decided.mean() > 0.99
    np.testing.assert_array_equal(served[decided], expected[decided])


def test_signatures_follow_the_contract(keras_and_exported):
    _, export_dir, loaded = keras_and_exported
    assert set(loaded.signatures) == set(signatures.SIGNATURES)
    images_sig = loaded.signatures[signatures.SIGNATURE_IMAGES]
    (_, inputs) = images_sig.structured_input_signature
    assert inputs[signatures.INPUT_IMAGES].dtype == tf.uint8
    assert inputs[signatures.INPUT_IMAGES].shape.as_list() == [None, None, None, 3]
    (_, byte_inputs) = loaded.signatures[signatures.SIGNATURE_BYTES].structured_input_signature
    assert byte_inputs[signatures.INPUT_BYTES].dtype == tf.string
    assert set(images_sig.structured_outputs) == {signatures.OUTPUT_MASK, signatures.OUTPUT_PROBABILITIES}
    png_sig = loaded.signatures[signatures.SIGNATURE_PNG]
    (_, png_inputs) = png_sig.structured_input_signature
    assert {k: (v.dtype, v.shape.as_list()) for k, v in png_inputs.items()} == {
        signatures.INPUT_BYTES: (tf.string, [None])
    }
    # one output and nothing else (REST returns every output), named so that TF Serving sends it as {"b64": ...}
    assert set(png_sig.structured_outputs) == {signatures.OUTPUT_MASK_PNG}
    assert signatures.OUTPUT_MASK_PNG.endswith(signatures.BYTES_SUFFIX)
    assert png_sig.structured_outputs[signatures.OUTPUT_MASK_PNG].dtype == tf.string
    assert read_class_names(export_dir) == tuple(signatures.CLASS_NAMES)
    assert (export_dir / "saved_model.pb").is_file()


def test_round_trip_on_a_333_by_500_image_matches_keras(keras_and_exported):
    model, _, loaded = keras_and_exported
    images = np.stack([_photo(333, 500, seed) for seed in (1, 2)])
    out = loaded.signatures[signatures.SIGNATURE_IMAGES](images=tf.constant(images))
    mask = out[signatures.OUTPUT_MASK].numpy()
    probs = out[signatures.OUTPUT_PROBABILITIES].numpy()
    assert mask.shape == (2, 333, 500) and mask.dtype == np.uint8
    assert probs.shape == (2, 333, 500, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    expected_mask, expected_probs = _keras_answer(model, images)
    np.testing.assert_allclose(probs, expected_probs, atol=1e-5)
    _assert_same_mask(mask, expected_mask, expected_probs)
    assert len(np.unique(mask)) > 1  # a non-trivial mask, so the comparison means something


def test_bytes_signature_gives_the_images_signature_answer(keras_and_exported):
    _, _, loaded = keras_and_exported
    photo = _photo(333, 500, seed=5)
    png, jpeg = io.BytesIO(), io.BytesIO()
    Image.fromarray(photo).save(png, format="PNG")
    Image.fromarray(photo).save(jpeg, format="JPEG", quality=90)
    by_bytes = loaded.signatures[signatures.SIGNATURE_BYTES](image_bytes=tf.constant([png.getvalue(), png.getvalue()]))
    by_pixels = loaded.signatures[signatures.SIGNATURE_IMAGES](images=tf.constant(photo[None]))
    assert by_bytes[signatures.OUTPUT_MASK].shape == (2, 333, 500)
    np.testing.assert_array_equal(by_bytes[signatures.OUTPUT_MASK][0], by_pixels[signatures.OUTPUT_MASK][0])

    decoded = tf.io.decode_jpeg(jpeg.getvalue(), channels=3)[None]
    by_jpeg = loaded.signatures[signatures.SIGNATURE_BYTES](image_bytes=tf.constant([jpeg.getvalue()]))
    expected = loaded.signatures[signatures.SIGNATURE_IMAGES](images=decoded)
    np.testing.assert_array_equal(by_jpeg[signatures.OUTPUT_MASK], expected[signatures.OUTPUT_MASK])


def _png_masks(loaded, encoded: list[bytes]) -> np.ndarray:
    """serving_png's answer decoded: uint8 [N, H, W], after checking each PNG is one 8-bit channel."""
    out = loaded.signatures[signatures.SIGNATURE_PNG](image_bytes=tf.constant(encoded))
    pngs = out[signatures.OUTPUT_MASK_PNG].numpy()
    assert pngs.shape == (len(encoded),)
    masks = []
    for png in pngs:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(png)) as image:
            assert image.mode == "L"  # 8-bit greyscale: the pixel values are the class ids
            masks.append(np.asarray(image))
    return np.stack(masks)


def _bytes_masks(loaded, encoded: list[bytes]) -> np.ndarray:
    return loaded.signatures[signatures.SIGNATURE_BYTES](image_bytes=tf.constant(encoded))[
        signatures.OUTPUT_MASK
    ].numpy()


def test_png_signature_equals_the_bytes_mask_on_real_photos(keras_and_exported, sample_dir):
    _, _, loaded = keras_and_exported
    photos = sorted((sample_dir / "images").glob("*.jpg"))[:6]
    assert photos
    for photo in photos:
        jpeg = photo.read_bytes()
        by_png, by_bytes = _png_masks(loaded, [jpeg]), _bytes_masks(loaded, [jpeg])
        with Image.open(photo) as image:
            assert by_png.shape == (1, image.height, image.width)
        np.testing.assert_array_equal(by_png, by_bytes)
        assert len(np.unique(by_png)) > 1, photo.name  # a non-trivial mask, so the comparison means something


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    batch=st.integers(1, 3),
    as_jpeg=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_png_signature_equals_the_bytes_mask_at_any_size(keras_and_exported, height, width, batch, as_jpeg, seed):
    _, _, loaded = keras_and_exported
    encoded = []
    for i in range(batch):
        buffer = io.BytesIO()
        Image.fromarray(_photo(height, width, seed + i)).save(buffer, format="JPEG" if as_jpeg else "PNG")
        encoded.append(buffer.getvalue())
    by_png = _png_masks(loaded, encoded)
    assert by_png.shape == (batch, height, width)
    np.testing.assert_array_equal(by_png, _bytes_masks(loaded, encoded))


def test_png_signature_refuses_undecodable_bytes_as_the_bytes_one_does(keras_and_exported):
    _, _, loaded = keras_and_exported
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures[signatures.SIGNATURE_PNG](image_bytes=tf.constant([b"not an image"]))


def test_grayscale_png_is_served_as_rgb(keras_and_exported):
    _, _, loaded = keras_and_exported
    gray = io.BytesIO()
    Image.fromarray(_photo(40, 30)[..., 0]).save(gray, format="PNG")
    out = loaded.signatures[signatures.SIGNATURE_BYTES](image_bytes=tf.constant([gray.getvalue()]))
    assert out[signatures.OUTPUT_MASK].shape == (1, 40, 30)


def test_undecodable_bytes_fail_with_invalid_argument(keras_and_exported):
    _, _, loaded = keras_and_exported
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures[signatures.SIGNATURE_BYTES](image_bytes=tf.constant([b"not an image"]))


def test_in_graph_resize_matches_preprocess_within_rounding(sample_dir):
    photo_path = sorted((sample_dir / "images").glob("*.jpg"))[0]
    image = Image.open(photo_path).convert("RGB")
    expected = resize_image(image, 128).astype(int)
    got = resize_for_model(tf.constant(np.asarray(image)[None]), 128).numpy()[0].astype(int)
    assert np.abs(got - expected).max() <= 1


def test_export_replaces_an_old_export_whole(tmp_path):
    export_dir = tmp_path / "savedmodel"
    export_dir.mkdir()
    (export_dir / "stale.txt").write_text("old")
    export_serving_model(unet(32, base_filters=4, depth=1), export_dir, 32)
    assert not (export_dir / "stale.txt").exists()
    assert (export_dir / "saved_model.pb").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name != "savedmodel"]  # no staging left behind


def test_tiny_savedmodel_fixture_serves_any_size(tiny_savedmodel):
    loaded = tf.saved_model.load(str(tiny_savedmodel))
    out = loaded.signatures[signatures.SIGNATURE_IMAGES](images=tf.zeros([3, 21, 37, 3], tf.uint8))
    assert out[signatures.OUTPUT_MASK].shape == (3, 21, 37)
    assert out[signatures.OUTPUT_PROBABILITIES].shape == (3, 21, 37, 3)
