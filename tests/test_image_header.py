"""serving/image_header.py: the size an encoded image declares, read without decoding, checked against Pillow."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from petseg.serving.image_header import UnreadableHeader, declared_size

FORMATS = {"JPEG": "RGB", "PNG": "RGB", "GIF": "P", "BMP": "RGB", "WEBP": "RGB"}


def encode(width: int, height: int, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    Image.new(FORMATS[fmt], (width, height)).save(out, format=fmt, **options)
    return out.getvalue()


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 700),
    height=st.integers(1, 700),
    fmt=st.sampled_from(sorted(FORMATS)),
    progressive=st.booleans(),
)
def test_declared_size_is_the_size_pillow_reads(width, height, fmt, progressive):
    options = {"progressive": True} if fmt == "JPEG" and progressive else {}
    options |= {"lossless": True} if fmt == "WEBP" and progressive else {}
    data = encode(width, height, fmt, **options)
    size = declared_size(data)
    with Image.open(io.BytesIO(data)) as decoded:
        assert (size.width, size.height) == decoded.size
    assert size.format == {"WEBP": "WebP"}.get(fmt, fmt)
    assert size.decoded_pixels == width * height


def test_animated_gif_and_webp_count_every_frame():
    frames = [Image.effect_noise((300, 200), 40 + 10 * i).convert("RGB") for i in range(5)]
    gif, webp = io.BytesIO(), io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    frames[0].save(webp, format="WEBP", save_all=True, append_images=frames[1:])
    gif_size, webp_size = declared_size(gif.getvalue()), declared_size(webp.getvalue())
    for data, size in ((gif, gif_size), (webp, webp_size)):
        with Image.open(io.BytesIO(data.getvalue())) as decoded:
            assert (size.width, size.height) == decoded.size == (300, 200)
            assert size.frames == decoded.n_frames == 5
    assert gif_size.decoded_pixels == webp_size.decoded_pixels == 5 * 300 * 200


def test_a_png_can_declare_far_more_than_it_holds():
    data = bytearray(encode(12000, 1, "PNG"))
    data[20:24] = (12000).to_bytes(4, "big")
    size = declared_size(bytes(data))
    assert (size.width, size.height, size.decoded_pixels) == (12000, 12000, 144_000_000)
    assert len(data) < 200_000


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "Unknown image file format"),
        (b"hello world", "Unknown image file format"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "truncated PNG header"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG without a frame header"),
        (b"\xff\x0a\xff\x07", "JPEG XL is not accepted"),
        (b"GIF89a\x00\x00\x00\x00\x00", "empty image"),
    ],
)
def test_unreadable_headers_are_refused_with_a_reason(data, fragment):
    with pytest.raises(UnreadableHeader, match=fragment):
        declared_size(data)


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF\0\0\0\0WEBP"]),
    tail=st.binary(max_size=64),
)
def test_any_bytes_give_a_size_or_unreadable_header_never_another_error(prefix, tail):
    try:
        size = declared_size(prefix + tail)
    except UnreadableHeader:
        return
    assert size.width > 0 and size.height > 0 and size.decoded_pixels >= size.width * size.height
