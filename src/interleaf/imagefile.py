"""Image bytes from the web, opened one way everywhere: the header alone, or decoded, with one error type.

Untrusted bytes make Pillow raise many exception types (UnidentifiedImageError, OSError for truncated
data, SyntaxError and struct.error from broken headers, EOFError, ValueError, DecompressionBombError when a
header declares more than twice Pillow's pixel limit). Every caller used to list its own subset, and a
missing one crashed a bundle. Here they all become ImageDecodeError, with a message that is the same on
every run (Pillow names file objects by their memory address; that part is left out).
"""

from __future__ import annotations

import io
import re
import struct

from PIL import Image, UnidentifiedImageError

# what Pillow raises on bytes that are not a (decodable) image
_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error,
               Image.DecompressionBombError)
_ADDRESS = re.compile(r" ?<[^<>]* at 0x[0-9a-fA-F]+>")


class ImageDecodeError(ValueError):
    """The bytes could not be read as an image. `bomb` is True when the header declared a decompression
    bomb (more pixels than Pillow will ever decode)."""

    def __init__(self, message: str, *, bomb: bool = False):
        super().__init__(message)
        self.bomb = bomb


def _error(data: bytes, e: Exception, what: str) -> ImageDecodeError:
    bomb = isinstance(e, Image.DecompressionBombError)
    message = _ADDRESS.sub("", str(e)).strip()
    return ImageDecodeError(f"cannot {what} {len(data)} bytes as an image ({type(e).__name__}: {message})",
                            bomb=bomb)


def read_header(data: bytes, formats: list[str] | None = None) -> tuple[int, int, str]:
    """(width, height, format in lower case) from the header only: nothing is decoded, so a decompression
    bomb costs nothing. `formats`: Pillow format names to try (None: all). Raises ImageDecodeError."""
    try:
        with Image.open(io.BytesIO(data), formats=formats) as im:
            return im.width, im.height, (im.format or "").lower()
    except _PIL_ERRORS as e:
        raise _error(data, e, "read") from None


def decode(data: bytes, mode: str | None = None) -> Image.Image:
    """The image, fully decoded (converted to `mode` when given: "RGB", ...). Raises ImageDecodeError."""
    try:
        im = Image.open(io.BytesIO(data))  # in memory: nothing to close; the context manager would close im
        im.load()
        return im.convert(mode) if mode else im
    except _PIL_ERRORS as e:
        raise _error(data, e, "decode") from None
