"""The two architectures: shapes, normalisation inside the model, encoder weights and freezing."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest

from petseg.components.core.errors import PetsegError
from petseg.components.core.params import ModelParams, UnetParams
from petseg.components.ml.model import (
    MOBILENET_SKIPS,
    build_model,
    encoder_of,
    mobilenetv2_unet,
    set_encoder_trainable,
    unet,
)


def _no_network(monkeypatch, tmp_path):
    """Keras with an empty weights cache and a download that fails like an offline machine's."""
    import keras.src.backend.config as keras_config
    import keras.src.utils.file_utils as file_utils

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras-home"))
    monkeypatch.setattr(file_utils, "urlretrieve", offline)


def test_mobilenetv2_unet_maps_images_to_logits_at_full_resolution():
    model = build_model(ModelParams(encoder_weights="none"), 64)
    assert model.input_shape == (None, 64, 64, 3)
    assert model.output_shape == (None, 64, 64, 3)
    encoder = encoder_of(model)
    assert [t.shape[1] for t in encoder.outputs] == [32, 16, 8, 4, 2]
    assert len(encoder.outputs) == len(MOBILENET_SKIPS)
    logits = model(np.zeros((2, 64, 64, 3), np.float32), training=False)
    assert logits.shape == (2, 64, 64, 3) and logits.dtype.name == "float32"


def test_unet_shapes_follow_depth_and_width():
    model = build_model(
        ModelParams(architecture="unet", encoder_weights="none", unet=UnetParams(base_filters=4, depth=3)), 32
    )
    assert model.output_shape == (None, 32, 32, 3)
    assert encoder_of(model) is None
    assert model.get_layer("bottom_conv2").output.shape == (None, 4, 4, 32)  # 32 / 2**3 px, 4 * 2**3 filters
    assert model(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 32, 32, 3)


def test_unet_without_batch_norm_has_none():
    model = unet(32, base_filters=4, depth=2, batch_norm=False)
    assert not [layer for layer in model.layers if "bn" in layer.name]


def test_model_normalises_pixels_itself():
    model = unet(32, base_filters=4, depth=1)
    rescale = model.get_layer("to_unit_range")
    out = np.asarray(rescale(np.array([[0.0, 127.5, 255.0]], np.float32)))
    np.testing.assert_allclose(out, [[-1.0, 0.0, 1.0]], atol=1e-6)


@pytest.mark.parametrize("size,builder", [(48, lambda s: mobilenetv2_unet(s, "none")), (36, lambda s: unet(s, 4, 3))])
def test_image_size_the_architecture_cannot_halve_is_a_user_error(size, builder):
    with pytest.raises(PetsegError, match="multiple of"):
        builder(size)


def test_imagenet_download_failure_is_one_clear_line(monkeypatch, tmp_path):
    _no_network(monkeypatch, tmp_path)
    with pytest.raises(PetsegError) as info:
        build_model(ModelParams(encoder_weights="imagenet"), 64)
    message = str(info.value)
    assert "\n" not in message
    assert "could not download the ImageNet weights" in message and "encoder_weights to none" in message


def test_missing_weights_file_is_a_user_error(tmp_path):
    with pytest.raises(PetsegError, match="no such file"):
        build_model(ModelParams(encoder_weights=str(tmp_path / "missing.weights.h5")), 64)


def test_weights_file_is_loaded_and_frozen_then_unfreezing_keeps_batch_norm_frozen(tmp_path):
    import keras

    source = keras.applications.MobileNetV2(input_shape=(64, 64, 3), include_top=False, weights=None)
    path = tmp_path / "mobilenetv2.weights.h5"
    source.save_weights(path)

    model = build_model(ModelParams(encoder_weights=str(path)), 64)
    encoder = encoder_of(model)
    assert encoder.trainable is False
    expected = source.get_layer("Conv1").get_weights()[0]
    np.testing.assert_array_equal(encoder.get_layer("Conv1").get_weights()[0], expected)

    assert set_encoder_trainable(model, True)
    assert encoder.get_layer("Conv1").trainable
    assert not any(layer.trainable for layer in encoder.layers if isinstance(layer, keras.layers.BatchNormalization))


def test_random_encoder_trains_even_when_freezing_is_asked():
    model = build_model(ModelParams(encoder_weights="none", freeze_encoder=True, batch_norm_momentum=0.8), 64)
    import keras

    assert encoder_of(model).trainable
    norms = [
        layer for layer in model.layers + encoder_of(model).layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert norms and all(layer.momentum == 0.8 for layer in norms)


def test_dropout_adds_dropout_layers():
    model = build_model(ModelParams(encoder_weights="none", dropout=0.3), 64)
    assert [layer.rate for layer in model.layers if layer.name.endswith("_dropout")] == [0.3] * 4
