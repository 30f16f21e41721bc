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
from collections.abc import Iterator

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


def later_frames(data: bytes, count: int, pixel_budget: int) -> tuple[int, int, Iterator[Image.Image]]:
    """(frames in the picture, frames within reach, up to `count` of the frames after the first, in RGB) of
    an animated picture (GIF, APNG, animated WebP); a still picture has 1 frame and yields none.

    A later frame of a GIF can only be reached by decoding every frame before it, so only the frames whose
    decoding fits `pixel_budget` (pixels, all frames together) are within reach; the frames yielded are
    spread evenly over those, the last one in reach included. A frame that does not decode ends the
    iteration (the frames before it were yielded)."""
    try:
        image = Image.open(io.BytesIO(data))
        total = getattr(image, "n_frames", 1)
    except _PIL_ERRORS:
        return 1, 1, iter(())
    if total <= 1 or count <= 0:
        return total, min(total, 1), iter(())
    reachable = min(total, max(2, pixel_budget // max(1, image.width * image.height)))
    later = reachable - 1  # frames 1 .. reachable - 1
    if later <= count:
        picks = list(range(1, reachable))
    elif count == 1:
        picks = [later]
    else:
        picks = sorted({1 + round(i * (later - 1) / (count - 1)) for i in range(count)})

    def frames() -> Iterator[Image.Image]:
        for k in picks:
            try:
                image.seek(k)
                frame = image.convert("RGB")
            except _PIL_ERRORS:
                return
            yield frame

    return total, reachable, frames()
