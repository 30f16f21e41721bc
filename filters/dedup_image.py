"""Image deduplication logic, engine-free: perceptual hashes, Hamming distance, pigeonhole band keys.

Two images are near duplicates when the Hamming distance of their 64-bit pHashes (imagehash.phash) is at
most `max_distance` (MMC4 used 5). To find such pairs without comparing all of them (in the manner of
multi-index hashing, Norouzi et al. 2012), the 64 bits are cut into `max_distance + per_key` contiguous
segments: two hashes that differ in at most `max_distance` bits agree on at least `per_key` whole segments
(pigeonhole principle), so keying every hash by each combination of `per_key` segments puts every such
pair in a shared group, and candidates are then checked with the exact distance. per_key=1 gives 6 keys
of ~11 bits at distance 5 (groups of n/1,600 random hashes); per_key=2 gives 21 keys of ~18 bits
(n/300,000).
"""

from __future__ import annotations

import hashlib
import itertools

import imagehash

from interleaf.imagefile import decode

PHASH_BITS = 64
PHASH_HEX = PHASH_BITS // 4


def phash_hex(data: bytes) -> str:
    """64-bit DCT perceptual hash of encoded image bytes (imagehash.phash, hash_size 8), as 16 hex chars.
    Raises ImageDecodeError."""
    return str(imagehash.phash(decode(data)))


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


def segment_bounds(max_distance: int, per_key: int = 1, bits: int = PHASH_BITS) -> list[tuple[int, int]]:
    """(start, width) of the max_distance + per_key contiguous bit segments, widths differing by at most
    one."""
    if not 0 <= max_distance < bits:
        raise ValueError(f"max_distance must lie in 0..{bits - 1}, found {max_distance}")
    if per_key < 1 or max_distance + per_key > bits:
        raise ValueError(f"per_key must lie in 1..{bits - max_distance}, found {per_key}")
    k = max_distance + per_key
    widths = [bits // k + (1 if i < bits % k else 0) for i in range(k)]
    starts = [sum(widths[:i]) for i in range(k)]
    return list(zip(starts, widths))


def phash_band_keys(phash: str, max_distance: int, per_key: int = 1) -> list[bytes]:
    """One key per combination of `per_key` segments: 2 bytes of combination index, then the segments' bits
    as 8 bytes each. Hashes within `max_distance` bits of each other share at least one key."""
    value = int(phash, 16)
    segments = [(value >> (PHASH_BITS - start - width)) & ((1 << width) - 1)
                for start, width in segment_bounds(max_distance, per_key)]
    combos = list(itertools.combinations(range(len(segments)), per_key))
    if len(combos) > 65535:
        raise ValueError(f"{len(combos)} keys per hash (max_distance {max_distance}, per_key {per_key}); "
                         "choose a smaller per_key")
    return [i.to_bytes(2, "big") + b"".join(segments[j].to_bytes(8, "big") for j in combo)
            for i, combo in enumerate(combos)]


def first_common_key(a: list[bytes], b: list[bytes]) -> int | None:
    """Index of the first key two hashes share (from phash_band_keys), None when none."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x == y), None)


def image_set_key(shas: list[str]) -> str:
    """Key of a document's set of images (order and repetition ignored): sha256 of the sorted unique ids."""
    h = hashlib.sha256()
    for s in sorted(set(shas)):
        h.update(s.encode("ascii") + b"\x00")
    return h.hexdigest()[:32]
