"""interleaf.imagefile: untrusted bytes become an image or one ImageDecodeError, never another exception."""

import io
import struct
import zlib

import pytest
from PIL import Image

from interleaf.imagefile import ImageDecodeError, decode, later_frames, read_header


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size in its header and holds no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"") + _chunk(b"IEND", b"")


def test_header_and_decode_of_a_real_image():
    data = _png(40, 30)
    assert read_header(data) == (40, 30, "png")
    assert decode(data, "RGB").getpixel((0, 0)) == (200, 30, 30)


@pytest.mark.parametrize("data", [
    b"", b"GIF89a not really", b"<html>not an image</html>", _png(40, 30)[:60],
    b"\xff\xd8\xff\xe0" + b"\x00" * 40,  # a JPEG start and nothing after
    _png_header_only(100, 100),  # a header that promises pixels it does not have
])
def test_hostile_bytes_raise_one_error_type(data):
    with pytest.raises(ImageDecodeError, match=f"cannot decode {len(data)} bytes as an image") as e:
        decode(data)
    assert " at 0x" not in str(e.value)  # no memory addresses: the same message on every run


def test_a_decompression_bomb_is_refused_from_its_header():
    bomb = _png_header_only(30_000, 30_000)  # 900 M pixels declared in 57 bytes
    with pytest.raises(ImageDecodeError) as e:
        read_header(bomb)
    assert e.value.bomb
    with pytest.raises(ImageDecodeError) as e:
        decode(bomb)
    assert e.value.bomb


def _gif(colours: list[tuple[int, int, int]], side: int = 40) -> bytes:
    frames = [Image.new("RGB", (side, side), c) for c in colours]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=50)
    return out.getvalue()


def test_later_frames_are_spread_over_an_animation_and_end_with_its_last():
    colours = [(i, 255 - i, 0) for i in range(0, 250, 5)]  # 50 distinct frames
    total, reachable, frames = later_frames(_gif(colours), 5, 10**9)
    seen = [f.getpixel((0, 0)) for f in frames]
    assert (total, reachable, len(seen)) == (50, 50, 5)
    assert [colours.index(c) for c in seen] == [1, 13, 25, 37, 49]
    # few frames: every later frame; a still picture or count 0: none
    assert len(list(later_frames(_gif(colours[:3]), 5, 10**9)[2])) == 2
    assert later_frames(_gif(colours[:1]), 5, 10**9)[:2] == (1, 1)
    assert list(later_frames(_gif(colours), 0, 10**9)[2]) == []


def test_later_frames_stay_within_the_decoding_budget():
    colours = [(i, 255 - i, 0) for i in range(0, 250, 5)]
    total, reachable, frames = later_frames(_gif(colours, side=100), 4, 10 * 100 * 100)  # ten frames' pixels
    seen = [colours.index(f.getpixel((0, 0))) for f in frames]
    assert (total, reachable) == (50, 10) and seen == [1, 4, 6, 9]


def test_later_frames_of_bytes_that_are_no_image_are_none():
    assert later_frames(b"GIF89a not really", 8, 10**9)[:2] == (1, 1)
    cut = _gif([(i, 0, 0) for i in range(0, 250, 25)])
    total, _, frames = later_frames(cut[: len(cut) * 2 // 3], 8, 10**9)
    list(frames)  # a frame cut short ends the iteration, it raises nothing
