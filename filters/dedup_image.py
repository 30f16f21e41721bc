"""Image deduplication logic, engine-free: perceptual hashes, Hamming distance, pigeonhole band keys.

Two images are near duplicates when the Hamming distance of their 64-bit pHashes (imagehash.phash) is at
most `max_distance` (MMC4 used 5). To find such pairs without comparing all of them, the 64 bits are cut
into `max_distance + 1` contiguous segments: two hashes that differ in at most `max_distance` bits agree on
at least one whole segment (pigeonhole principle), so grouping by (segment index, segment value) finds every
pair within the distance, and candidates are then checked with the exact distance.
"""

from __future__ import annotations

import hashlib
import io

import imagehash
from PIL import Image, UnidentifiedImageError

PHASH_BITS = 64
PHASH_HEX = PHASH_BITS // 4


class ImageDecodeError(ValueError):
    """The bytes could not be decoded as an image."""


def phash_hex(data: bytes) -> str:
    """64-bit DCT perceptual hash of encoded image bytes (imagehash.phash, hash_size 8), as 16 hex chars."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return str(imagehash.phash(im))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"cannot decode {len(data)} bytes as an image ({type(e).__name__}: {e})") from None


def is_phash(value: str | None) -> bool:
    """A well-formed 64-bit pHash: 16 hex characters."""
    if not value or len(value) != PHASH_HEX:
        return False
    try:
        int(value, 16)
    except ValueError:
        return False
    return True


def hamming(a: str, b: str) -> int:
    """Number of differing bits of two hex hashes of the same length."""
    if len(a) != len(b):
        raise ValueError(f"hashes of different lengths cannot be compared: {a!r} and {b!r}")
    return (int(a, 16) ^ int(b, 16)).bit_count()


def segment_bounds(max_distance: int, bits: int = PHASH_BITS) -> list[tuple[int, int]]:
    """(start, width) of the max_distance + 1 contiguous bit segments, widths differing by at most one."""
    if not 0 <= max_distance < bits:
        raise ValueError(f"max_distance must lie in 0..{bits - 1}, found {max_distance}")
    k = max_distance + 1
    widths = [bits // k + (1 if i < bits % k else 0) for i in range(k)]
    starts = [sum(widths[:i]) for i in range(k)]
    return list(zip(starts, widths))


def phash_band_keys(phash: str, max_distance: int) -> list[bytes]:
    """One key per segment: 1 byte of segment index, then the segment's bits as 8 bytes. Hashes within
    `max_distance` bits of each other share at least one key."""
    value = int(phash, 16)
    keys = []
    for i, (start, width) in enumerate(segment_bounds(max_distance)):
        segment = (value >> (PHASH_BITS - start - width)) & ((1 << width) - 1)
        keys.append(bytes([i]) + segment.to_bytes(8, "big"))
    return keys


def image_set_key(shas: list[str]) -> str:
    """Key of a document's set of images (order and repetition ignored): sha256 of the sorted unique ids."""
    h = hashlib.sha256()
    for s in sorted(set(shas)):
        h.update(s.encode("ascii") + b"\x00")
    return h.hexdigest()[:32]
