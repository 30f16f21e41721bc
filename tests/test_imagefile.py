"""interleaf.imagefile: untrusted bytes become an image or one ImageDecodeError, never another exception."""

import io
import struct
import zlib

import pytest
from PIL import Image

from interleaf.imagefile import ImageDecodeError, decode, read_header


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
