"""`petseg predict`: photos on disk in, masks and overlays on disk out, via a model server.

For each image it writes `<stem>.mask.png` (a palette PNG whose pixel values
are the class ids, so it opens as a coloured picture and reads back as the
mask) and `<stem>.overlay.png` (the photo with the mask blended over it),
and reports the share of pixels in each class. Optionally all of them go on
one sheet (photo, mask, overlay per row) for a person to look at.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petseg.components.core.errors import PetsegError
from petseg.serving.client import DEFAULT_TIMEOUT_SECONDS, ENCODED_FORMATS, SegmentationClient
from petseg.serving.image_header import UnreadableHeader, declared_size
from petseg.serving.rest_client import RestSegmentationClient, rest_base_url

# pet, background, border
CLASS_COLOURS = np.array([[230, 60, 50], [40, 40, 40], [250, 210, 60]], dtype=np.uint8)
OVERLAY_ALPHA = 0.45


@dataclass(frozen=True)
class ImageResult:
    image: Path
    mask_png: Path
    overlay_png: Path
    fractions: dict[str, float]
    height: int
    width: int
    model_version: int | None


def predict_files(
    target: str,
    images: Sequence[Path],
    out_dir: Path,
    *,
    model_name: str,
    max_message_mb: int,
    encoded: bool = False,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    sheet: Path | None = None,
    rest: bool = False,
) -> list[ImageResult]:
    """Segment `images` on the server at `target`; write mask and overlay PNGs into out_dir.

    Every image is read before anything is sent, so a bad path fails at once
    and nothing is written. `encoded` sends the files' JPEG/PNG bytes through
    the bytes signature instead of decoded pixels. `rest` talks to a REST
    endpoint (`target` is its HOST:PORT) through the serving_png signature:
    JPEG/PNG bytes in, PNG masks back (serving/rest_client.py).
    """
    paths = [Path(p) for p in images]
    _check_unique_stems(paths)
    out_dir = Path(out_dir)
    _check_outputs_spare_inputs(paths, out_dir, sheet)
    if rest:
        rest_base_url(target)  # a malformed address fails before any file is read
    pixels = [read_rgb(p) for p in paths]
    if rest:
        payloads = [_encoded_bytes(p, "--rest") for p in paths]
        with RestSegmentationClient(target, model_name, timeout_seconds=timeout_seconds) as rest_client:
            answers = rest_client.segment_encoded(payloads)
    else:
        payloads = [_encoded_bytes(p, "--bytes") for p in paths] if encoded else []
        with SegmentationClient(
            target, model_name, timeout_seconds=timeout_seconds, max_message_mb=max_message_mb
        ) as client:
            answers = client.segment_encoded(payloads) if encoded else client.segment(pixels)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for path, image, answer in zip(paths, pixels, answers, strict=True):
        mask_png, overlay_png = _output_pngs(path, out_dir)
        _write_png(mask_png, mask_image(answer.mask))
        _write_png(overlay_png, overlay_image(image, answer.mask))
        results.append(
            ImageResult(
                path,
                mask_png,
                overlay_png,
                answer.class_fractions(),
                image.shape[0],
                image.shape[1],
                answer.model_version,
            )
        )
    if sheet is not None:
        Path(sheet).parent.mkdir(parents=True, exist_ok=True)  # like --out, created when missing
        _write_png(
            Path(sheet), prediction_sheet([(image, answer.mask) for image, answer in zip(pixels, answers, strict=True)])
        )
    return results


def prediction_sheet(rows: Sequence[tuple[np.ndarray, np.ndarray]], row_height: int = 160):
    """One picture with a row per image: the photo, its predicted mask, and the overlay."""
    from PIL import Image

    tiles = []
    for image, mask in rows:
        width = max(1, round(image.shape[1] * row_height / image.shape[0]))
        tiles.append(
            [
                picture.convert("RGB").resize((width, row_height))
                for picture in (Image.fromarray(image), mask_image(mask), overlay_image(image, mask))
            ]
        )
    gap = 4
    sheet_width = max(sum(t.width for t in row) + gap * (len(row) - 1) for row in tiles)
    sheet = Image.new("RGB", (sheet_width, len(tiles) * (row_height + gap) - gap), "white")
    for index, row in enumerate(tiles):
        x = 0
        for tile in row:
            sheet.paste(tile, (x, index * (row_height + gap)))
            x += tile.width + gap
    return sheet


def read_rgb(path: Path) -> np.ndarray:
    """The image at `path` as uint8 [H, W, 3], or PetsegError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise PetsegError(f"{path}: no such image file") from None
    except Image.DecompressionBombError as exc:
        raise PetsegError(f"{path}: too large to decode here ({exc}); send a smaller image") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise PetsegError(f"{path}: not a readable image ({exc})") from None


def mask_image(mask: np.ndarray):
    """A palette PNG image whose pixel values are the class ids (coloured when viewed)."""
    from PIL import Image

    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(CLASS_COLOURS)] = CLASS_COLOURS
    image.putpalette(palette.ravel().tolist())
    return image


def overlay_image(image: np.ndarray, mask: np.ndarray):
    """The photo with each pixel's class colour blended over it."""
    from PIL import Image

    colours = CLASS_COLOURS[np.clip(mask, 0, len(CLASS_COLOURS) - 1)].astype(np.float32)
    blended = (1 - OVERLAY_ALPHA) * image.astype(np.float32) + OVERLAY_ALPHA * colours
    return Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8), mode="RGB")


def format_result(result: ImageResult) -> str:
    """One line per image: its size, the class fractions and the model version that answered."""
    shares = ", ".join(f"{name} {share:.1%}" for name, share in result.fractions.items())
    version = "version not known" if result.model_version is None else f"version {result.model_version}"
    return f"{result.image.name} ({result.width}x{result.height}): {shares} [{version}] -> {result.mask_png}"


def _encoded_bytes(path: Path, flag: str) -> bytes:
    """The file's bytes, or PetsegError when it is not a JPEG or PNG (what the bytes signatures decode)."""
    data = path.read_bytes()
    try:
        encoded_format = declared_size(data).format
    except UnreadableHeader:
        encoded_format = None
    if encoded_format not in ENCODED_FORMATS:
        instead = (
            "drop --bytes to send decoded pixels"
            if flag == "--bytes"
            else "convert it to PNG, or send it over gRPC (--target, without --rest)"
        )
        raise PetsegError(f"{path}: {flag} sends JPEG or PNG files only; {instead}")
    return data


def _output_pngs(path: Path, out_dir: Path) -> tuple[Path, Path]:
    """The mask and overlay PNGs written for the image at `path`."""
    return out_dir / f"{path.stem}.mask.png", out_dir / f"{path.stem}.overlay.png"


def _check_outputs_spare_inputs(paths: list[Path], out_dir: Path, sheet: Path | None) -> None:
    """PetsegError, before anything is sent, when an output would replace one of the input images."""
    inputs = {p.resolve() for p in paths}
    outputs = [png for p in paths for png in _output_pngs(p, out_dir)] + ([Path(sheet)] if sheet else [])
    for output in outputs:
        if output.resolve() in inputs:
            raise PetsegError(f"{output} is one of the input images; choose another --out or --sheet")


def _check_unique_stems(paths: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise PetsegError(
                f"{seen[path.stem]} and {path} would write the same {path.stem}.mask.png; "
                "predict them in separate runs or with --out folders"
            )
        seen[path.stem] = path


def _write_png(path: Path, image) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
