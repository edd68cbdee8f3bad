"""A seeded synthetic stand-in for Oxford-IIIT Pet, for offline demos and CI.

Each scene is a textured, animal-like shape (body, head, ears, legs, tail)
on a cluttered background, with a soft fur-like edge, and a trimap whose
border band is a few pixels wide around the outline, as in the real
annotations. Sizes and aspect ratios vary like the real photos. Colours of
pet and clutter overlap on purpose, so the task is learnable but not
trivial, and the thin border class is the hardest.

Every example is a pure function of (seed, split, index): the same params
give byte-identical data, and adding examples does not change earlier ones.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from petseg.components.contracts.rawdata import BREEDS, RawRecord, species_of_breed
from petseg.components.core.params import SyntheticParams

PET, BACKGROUND, BORDER = 1, 2, 3

_FUR_COLOURS = np.array(
    [
        [120, 85, 50],
        [200, 160, 110],
        [60, 55, 50],
        [230, 225, 215],
        [190, 110, 40],
        [150, 150, 155],
        [95, 70, 55],
        [30, 28, 30],
        [215, 190, 150],
    ],
    dtype=np.float32,
)


def synthetic_records(params: SyntheticParams, seed: int) -> Iterator[RawRecord]:
    """Yield the synthetic dataset: train_examples `trainval` then test_examples `test` records."""
    for split, count in (("trainval", params.train_examples), ("test", params.test_examples)):
        for index in range(count):
            yield synthetic_record(params, seed, split, index)


def synthetic_record(params: SyntheticParams, seed: int, split: str, index: int) -> RawRecord:
    """One synthetic example, encoded like the real data (JPEG image, PNG trimap)."""
    rng = np.random.default_rng([seed, zlib.crc32(split.encode()), index])
    class_id = int(rng.integers(1, len(BREEDS) + 1))
    breed = BREEDS[class_id - 1]
    image, trimap = synthetic_scene(rng, params.min_side, params.max_side, species_of_breed(breed))
    return RawRecord(
        id=f"synthetic_{split}_{index:05d}",
        split=split,
        image_bytes=_encode(Image.fromarray(image), "JPEG", quality=90),
        trimap_bytes=_encode(Image.fromarray(trimap), "PNG"),
        class_id=class_id,
        breed=breed,
        species=species_of_breed(breed),
    )


def synthetic_scene(
    rng: np.random.Generator, min_side: int, max_side: int, species: str = "cat"
) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 image [H, W, 3] and its trimap uint8 [H, W] with values 1, 2, 3."""
    height, width = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
    background = _cluttered_background(rng, height, width)
    silhouette = _pet_silhouette(rng, height, width, species)
    fur = _fur_texture(rng, height, width)
    alpha = np.asarray(silhouette.filter(ImageFilter.GaussianBlur(1.2)), np.float32)[..., None] / 255.0
    image = fur * alpha + background * (1.0 - alpha)
    image += rng.normal(0.0, 6.0, size=image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image, _trimap(silhouette, band=int(rng.integers(1, 3)))


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    # Half the clutter borrows fur colours, so colour alone cannot separate pet from background.
    if rng.random() < 0.5:
        base = _FUR_COLOURS[rng.integers(len(_FUR_COLOURS))] + rng.normal(0, 20, 3)
    else:
        base = rng.uniform(0, 255, 3)
    red, green, blue = (int(c) for c in np.clip(base, 0, 255))
    return red, green, blue


def _low_frequency_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid upsampled bicubically."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    smooth = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(smooth, np.float32) / 255.0


def _cluttered_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    top, bottom = np.array(_random_colour(rng), np.float32), np.array(_random_colour(rng), np.float32)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    canvas = Image.fromarray(np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(8, 25))):
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        shape = rng.integers(3)
        if shape == 0:
            draw.rectangle([x0, y0, x1, y1], fill=_random_colour(rng))
        elif shape == 1:
            draw.ellipse([x0, y0, x1, y1], fill=_random_colour(rng))
        else:
            draw.line([x0, y0, x1, y1], fill=_random_colour(rng), width=int(rng.integers(2, 12)))
    shade = 0.75 + 0.5 * _low_frequency_noise(rng, height, width, 6)[..., None]
    return np.asarray(canvas, np.float32) * shade


def _fur_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base = _FUR_COLOURS[rng.integers(len(_FUR_COLOURS))] + rng.normal(0, 15, 3)
    second = _FUR_COLOURS[rng.integers(len(_FUR_COLOURS))]
    pattern = rng.integers(3)
    if pattern == 0:  # tabby stripes
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(8, 20)
        weight = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0.3).astype(np.float32)
    elif pattern == 1:  # patches
        weight = (_low_frequency_noise(rng, height, width, 8) > 0.6).astype(np.float32)
    else:  # plain
        weight = np.zeros((height, width), np.float32)
    fur = base * (1 - weight[..., None]) + second * weight[..., None]
    grain = _low_frequency_noise(rng, height, width, max(4, min(height, width) // 4))
    return fur * (0.8 + 0.4 * grain[..., None])


def _pet_silhouette(rng: np.random.Generator, height: int, width: int, species: str) -> Image.Image:
    """An 'L' image, 255 inside the pet: body, head, ears, legs and tail, in a random pose."""
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    side = min(height, width)
    cx, cy = width * rng.uniform(0.35, 0.65), height * rng.uniform(0.4, 0.65)
    bw, bh = side * rng.uniform(0.22, 0.38), side * rng.uniform(0.12, 0.22)
    draw.ellipse([cx - bw, cy - bh, cx + bw, cy + bh], fill=255)
    direction = 1 if rng.random() < 0.5 else -1
    hr = side * rng.uniform(0.09, 0.15)
    hx, hy = cx + direction * bw * rng.uniform(0.7, 1.0), cy - bh * rng.uniform(0.6, 1.2)
    draw.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=255)
    for side_sign in (-1, 1):
        ex = hx + side_sign * hr * 0.55
        if species == "cat":  # pointed ears
            draw.polygon(
                [(ex - hr * 0.35, hy - hr * 0.6), (ex + hr * 0.35, hy - hr * 0.6), (ex, hy - hr * 1.5)], fill=255
            )
        else:  # floppy ears
            draw.ellipse([ex - hr * 0.3, hy - hr * 0.4, ex + hr * 0.3, hy + hr * 0.7], fill=255)
    leg_w = bw * 0.12
    for lx in np.linspace(cx - bw * 0.7, cx + bw * 0.7, 4):
        top, length = cy + bh * 0.5, bh * rng.uniform(0.9, 1.6)
        draw.rectangle([lx - leg_w, top, lx + leg_w, top + length], fill=255)
    tx = cx - direction * bw
    tail_end = (tx - direction * bw * rng.uniform(0.4, 0.8), cy - bh * rng.uniform(0.2, 1.5))
    draw.line([(tx, cy), tail_end], fill=255, width=max(2, int(leg_w * 1.2)))
    return mask


def _trimap(silhouette: Image.Image, band: int) -> np.ndarray:
    """Trimap from a silhouette: a border band of about `band` pixels each side of the outline."""
    size = 2 * band + 1
    inside = np.asarray(silhouette.filter(ImageFilter.MinFilter(size))) > 127
    reach = np.asarray(silhouette.filter(ImageFilter.MaxFilter(size))) > 127
    trimap = np.full(inside.shape, BACKGROUND, np.uint8)
    trimap[reach] = BORDER
    trimap[inside] = PET
    return trimap
