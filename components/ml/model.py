"""The segmentation networks: a MobileNetV2-encoder U-Net (default) and the classic U-Net.

Both take float pixels in 0-255, [N, S, S, 3], and return per-pixel class
logits [N, S, S, 3] in float32 (also under mixed precision). The
normalisation the encoder expects (MobileNetV2: [-1, 1]) is the model's first
layer, so training, evaluation and the exported SavedModel share it and no
caller has to know it.
"""

from __future__ import annotations

from pathlib import Path

from petseg.components.contracts.records import CLASS_NAMES
from petseg.components.core.errors import PetsegError, first_line
from petseg.components.core.params import ModelParams

NUM_CLASSES = len(CLASS_NAMES)
ENCODER_NAME = "encoder"

# MobileNetV2 activations used as skips, from 1/2 down to 1/32 of the input side.
MOBILENET_SKIPS = (
    "block_1_expand_relu",  # S/2
    "block_3_expand_relu",  # S/4
    "block_6_expand_relu",  # S/8
    "block_13_expand_relu",  # S/16
    "block_16_project",  # S/32 (the bottleneck)
)
MOBILENET_DECODER_FILTERS = (512, 256, 128, 64)


def build_model(params: ModelParams, image_size: int):
    """An uncompiled keras.Model for `params.architecture` at `image_size` x `image_size`."""
    if params.architecture == "mobilenetv2_unet":
        return mobilenetv2_unet(
            image_size, params.encoder_weights, params.freeze_encoder, params.dropout, params.batch_norm_momentum
        )
    if params.architecture == "unet":
        return unet(
            image_size,
            params.unet.base_filters,
            params.unet.depth,
            params.unet.batch_norm,
            params.dropout,
            params.batch_norm_momentum,
        )
    raise PetsegError(f"model.architecture {params.architecture!r} is unknown")  # params validation stops this first


def encoder_of(model):
    """The pretrained encoder sub-model (MobileNetV2), or None for architectures without one."""
    try:
        return model.get_layer(ENCODER_NAME)
    except ValueError:
        return None


def set_encoder_trainable(model, trainable: bool) -> bool:
    """Freeze or unfreeze the encoder in place; False when the model has no separate encoder.

    Unfreezing trains the encoder's weights but keeps its batch norm layers
    frozen (inference mode, pretrained statistics), as fine-tuning a
    pretrained network on a small dataset wants. Recompile after calling.
    """
    import keras

    encoder = encoder_of(model)
    if encoder is None:
        return False
    encoder.trainable = trainable
    if trainable:
        for layer in encoder.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return True


# ------------------------------------------------------------------- MobileNetV2
def mobilenetv2_unet(
    image_size: int,
    encoder_weights: str = "imagenet",
    freeze_encoder: bool = True,
    dropout: float = 0.0,
    batch_norm_momentum: float = 0.9,
):
    """The seed's architecture: MobileNetV2 encoder, four upsample blocks, transposed conv to classes.

    The encoder is frozen only when it carries pretrained weights (imagenet or
    a file); a randomly initialised encoder is always trained, since frozen
    random features would leave the decoder nothing to learn from. A random
    encoder's batch norm layers get `batch_norm_momentum` (MobileNetV2's own
    0.999 needs thousands of steps before its moving statistics are usable);
    a pretrained encoder keeps its statistics.
    """
    import keras

    _check_divisible(image_size, 32, "mobilenetv2_unet")
    encoder = _mobilenet_encoder(image_size, encoder_weights)
    encoder.trainable = not (freeze_encoder and encoder_weights != "none")
    if encoder_weights == "none":
        _set_batch_norm_momentum(encoder, batch_norm_momentum)

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_unit_range")(inputs)
    *skips, x = encoder(x)
    for filters, skip in zip(MOBILENET_DECODER_FILTERS, reversed(skips), strict=True):
        x = upsample_block(x, filters, dropout, batch_norm_momentum, name=f"up_{filters}")
        x = keras.layers.Concatenate(name=f"skip_{filters}")([x, skip])
    logits = keras.layers.Conv2DTranspose(NUM_CLASSES, 3, strides=2, padding="same", dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name="mobilenetv2_unet")


def _mobilenet_encoder(image_size: int, encoder_weights: str):
    """MobileNetV2 cut into a model that returns the five skip activations."""
    import keras

    weights = _resolve_weights(encoder_weights)
    try:
        base = keras.applications.MobileNetV2(
            input_shape=(image_size, image_size, 3), include_top=False, weights=weights
        )
    except Exception as exc:  # Keras raises a bare Exception for a failed download
        if encoder_weights == "imagenet":
            reason = first_line(exc)
            raise PetsegError(
                f"could not download the ImageNet weights for MobileNetV2 ({reason}); "
                "set model.encoder_weights to none or to a local weights file"
            ) from None
        raise PetsegError(
            f"model.encoder_weights {encoder_weights}: not a MobileNetV2 weights file "
            f"({type(exc).__name__}: {first_line(exc)})"
        ) from None
    outputs = [base.get_layer(name).output for name in MOBILENET_SKIPS]
    return keras.Model(base.input, outputs, name=ENCODER_NAME)


def _resolve_weights(encoder_weights: str) -> str | None:
    if encoder_weights == "none":
        return None
    if encoder_weights == "imagenet":
        return "imagenet"
    path = Path(encoder_weights)
    if not path.is_file():
        raise PetsegError(
            f"model.encoder_weights {encoder_weights}: no such file "
            "(use imagenet, none, or a path to MobileNetV2 no-top weights)"
        )
    return str(path)


def upsample_block(x, filters: int, dropout: float = 0.0, batch_norm_momentum: float = 0.9, name: str = "up"):
    """Double the spatial size: transposed conv (stride 2), batch norm, optional dropout, ReLU."""
    import keras

    x = keras.layers.Conv2DTranspose(
        filters,
        3,
        strides=2,
        padding="same",
        use_bias=False,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
        name=f"{name}_deconv",
    )(x)
    x = keras.layers.BatchNormalization(momentum=batch_norm_momentum, name=f"{name}_bn")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


# ---------------------------------------------------------------------- U-Net
def unet(
    image_size: int,
    base_filters: int = 32,
    depth: int = 4,
    batch_norm: bool = True,
    dropout: float = 0.0,
    batch_norm_momentum: float = 0.9,
):
    """Ronneberger et al. (2015): `depth` poolings, widths base * 2**level, 'same' padding."""
    import keras

    _check_divisible(image_size, 2**depth, f"unet with depth {depth}")
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_unit_range")(inputs)
    skips = []
    for level in range(depth):
        x = _double_conv(x, base_filters * 2**level, batch_norm, batch_norm_momentum, name=f"down{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    x = _double_conv(x, base_filters * 2**depth, batch_norm, batch_norm_momentum, name="bottom")
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="bottom_dropout")(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = keras.layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"up{level}_deconv")(x)
        x = keras.layers.Concatenate(name=f"up{level}_skip")([x, skips[level]])
        x = _double_conv(x, filters, batch_norm, batch_norm_momentum, name=f"up{level}")
    logits = keras.layers.Conv2D(NUM_CLASSES, 1, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name="unet")


def _double_conv(x, filters: int, batch_norm: bool, batch_norm_momentum: float, name: str):
    import keras

    for i in (1, 2):
        x = keras.layers.Conv2D(
            filters, 3, padding="same", use_bias=not batch_norm, kernel_initializer="he_normal", name=f"{name}_conv{i}"
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(momentum=batch_norm_momentum, name=f"{name}_bn{i}")(x)
        x = keras.layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def _set_batch_norm_momentum(model, momentum: float) -> None:
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _check_divisible(image_size: int, factor: int, what: str) -> None:
    if image_size % factor:
        raise PetsegError(
            f"image size {image_size} does not suit {what}: it must be a multiple of {factor} "
            "(change preprocess.image_size)"
        )
