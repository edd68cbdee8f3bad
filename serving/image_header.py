"""How many pixels an encoded image will decode to, read from its header without decoding it.

The bytes signature decodes with tf.io.decode_image, which allocates what the
header declares: a 140 KB PNG can declare 12000 x 12000 pixels (432 MB decoded,
several GB while the model runs on it). The server reads the declared size
here first and refuses an image over serve.max_image_pixels before the graph
sees it. Every format decode_image accepts is either sized here (JPEG, PNG,
GIF, BMP, WebP) or refused (JPEG XL, whose size header is bit-packed); bytes
that are none of these are refused too, so nothing reaches the decoder
unmeasured.

Written by hand rather than with Pillow: Pillow's Image.open applies its own
process-wide decompression-bomb limit (a warning above 89 MP, an error above
179 MP) and cannot total the frames of an animated GIF or WebP without
seeking through (decoding) them; the frames are what the decoder allocates.
The tests check these sizes against Pillow's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

FORMATS = "JPEG, PNG, GIF, BMP, WebP"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8}


class UnreadableHeader(ValueError):
    """The bytes are not an image whose size this module can read."""


@dataclass(frozen=True)
class DeclaredSize:
    """What an encoded image's header declares."""

    format: str
    width: int
    height: int
    frames: int = 1
    decoded_pixels: int = 0  # pixels the decoder allocates: width x height, or every frame's area

    def __post_init__(self):
        if not self.decoded_pixels:
            object.__setattr__(self, "decoded_pixels", self.width * self.height * self.frames)


def declared_size(data: bytes) -> DeclaredSize:
    """The size `data`'s header declares; raises UnreadableHeader when it cannot be read."""
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(data)
    if data[:2] == b"BM":
        return _bmp(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    if data[:2] == b"\xff\x0a" or data[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        raise UnreadableHeader(
            f"JPEG XL is not accepted (its size cannot be checked before decoding); send one of {FORMATS}"
        )
    raise UnreadableHeader(f"Unknown image file format. One of {FORMATS} required.")


def _unpack(fmt: str, data: bytes, offset: int, what: str) -> tuple:
    try:
        return struct.unpack_from(fmt, data, offset)
    except struct.error:
        raise UnreadableHeader(f"truncated {what} header") from None


def _positive(fmt: str, width: int, height: int, **extra) -> DeclaredSize:
    if width <= 0 or height <= 0:
        raise UnreadableHeader(f"{fmt} header declares an empty image ({width}x{height})")
    return DeclaredSize(fmt, width, height, **extra)


def _png(data: bytes) -> DeclaredSize:
    _, kind, width, height = _unpack(">I4sII", data, 8, "PNG")
    if kind != b"IHDR":
        raise UnreadableHeader("PNG without an IHDR chunk first")
    return _positive("PNG", width, height)


def _jpeg(data: bytes) -> DeclaredSize:
    pos = 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise UnreadableHeader("JPEG marker expected")
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= len(data):
            break
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            break
        (length,) = _unpack(">H", data, pos, "JPEG")
        if marker in _JPEG_SOF:
            _, height, width = _unpack(">BHH", data, pos + 2, "JPEG frame")
            if height == 0:
                raise UnreadableHeader("JPEG whose height is set later (DNL marker) is not accepted")
            return _positive("JPEG", width, height)
        if length < 2:
            raise UnreadableHeader("corrupt JPEG segment length")
        pos += length
    raise UnreadableHeader("JPEG without a frame header (SOF)")


def _gif(data: bytes) -> DeclaredSize:
    """GIF: the logical screen, and the area of every frame (giflib's DGifSlurp allocates each one)."""
    width, height, flags = _unpack("<HHB", data, 6, "GIF")
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    frames, area = 0, 0
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then data sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor, optional local colour table, LZW code size, sub-blocks
            _, _, frame_w, frame_h, frame_flags = _unpack("<HHHHB", data, pos + 1, "GIF frame")
            frames += 1
            area += frame_w * frame_h
            pos += 10 + (3 * 2 ** ((frame_flags & 7) + 1) if frame_flags & 0x80 else 0)
            pos = _skip_sub_blocks(data, pos + 1)
        else:
            break  # garbage after the last frame: giflib stops there too
    frames = max(frames, 1)
    _positive("GIF", width, height)
    return DeclaredSize("GIF", width, height, frames, max(width * height, area))


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data):
        length = data[pos]
        pos += 1 + length
        if length == 0:
            break
    return pos


def _bmp(data: bytes) -> DeclaredSize:
    (header_size,) = _unpack("<I", data, 14, "BMP")
    if header_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = _unpack("<HH", data, 18, "BMP")
    else:
        width, height = _unpack("<ii", data, 18, "BMP")
    return _positive("BMP", abs(width), abs(height))  # a negative height means top-down rows


def _webp(data: bytes) -> DeclaredSize:
    """WebP: the VP8/VP8L frame size, or the VP8X canvas times its animation frames."""
    kind, _ = _unpack("<4sI", data, 12, "WebP")
    body = 20
    if kind == b"VP8 ":
        start, width, height = _unpack("<3sHH", data, body + 3, "WebP VP8")
        if start != b"\x9d\x01\x2a":
            raise UnreadableHeader("WebP VP8 frame without its start code")
        return _positive("WebP", width & 0x3FFF, height & 0x3FFF)
    if kind == b"VP8L":
        signature, bits = _unpack("<BI", data, body, "WebP VP8L")
        if signature != 0x2F:
            raise UnreadableHeader("WebP VP8L frame without its signature")
        return _positive("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if kind == b"VP8X":
        flags, w0, w1, w2, h0, h1, h2 = _unpack("<B3x6B", data, body, "WebP VP8X")
        width = 1 + (w0 | w1 << 8 | w2 << 16)
        height = 1 + (h0 | h1 << 8 | h2 << 16)
        frames = _count_webp_frames(data) if flags & 0x02 else 1
        return _positive("WebP", width, height, frames=max(frames, 1))
    raise UnreadableHeader(f"WebP with an unknown first chunk {kind!r}")


def _count_webp_frames(data: bytes) -> int:
    pos, frames = 12, 0
    while pos + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        frames += kind == b"ANMF"
        pos += 8 + length + (length & 1)
    return frames
