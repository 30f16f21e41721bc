"""Image dedup logic on real photos: pHash of re-encoded, resized and slightly cropped copies, Hamming
distance, and pigeonhole band keys."""

import io
import itertools
import math
import random
from pathlib import Path

import pytest
from PIL import Image

from interleaf.filters.dedup_image import (
    first_common_key,
    hamming,
    image_set_key,
    is_phash,
    phash_band_keys,
    phash_hex,
    segment_bounds,
)
from interleaf.imagefile import ImageDecodeError

PHOTO_DIR = Path(__file__).parent.parent / "data" / "photos"
PHOTOS = ["coins.png", "moon.png", "clock_motion.png", "horse.png", "rocket.jpg", "hopper.jpg", "flower.jpg"]
MAX_HAMMING = 5  # MMC4


def _encode(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def variants(data: bytes) -> dict[str, bytes]:
    """Copies of a photo as the web makes them: re-encoded, resized, slightly cropped, and all at once."""
    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    dx, dy = max(1, round(w * 0.005)), max(1, round(h * 0.005))  # 0.5% off every side: 1% of each dimension
    cropped = rgb.crop((dx, dy, w - dx, h - dy))
    return {
        "jpeg_q70": _encode(rgb, "JPEG", quality=70),
        "half_size_png": _encode(rgb.resize((w // 2, h // 2)), "PNG"),
        "webp_two_thirds": _encode(rgb.resize((w * 2 // 3, h * 2 // 3)), "WEBP", quality=60),
        "cropped_1pct": _encode(cropped, "PNG"),
        "cropped_resized_jpeg": _encode(cropped.resize((cropped.width * 3 // 5, cropped.height * 3 // 5)),
                                        "JPEG", quality=75),
    }


@pytest.fixture(scope="module")
def photos():
    return {name: (PHOTO_DIR / name).read_bytes() for name in PHOTOS}


def test_copies_are_near_duplicates_and_different_photos_are_not(photos):
    hashes = {}
    for name, data in photos.items():
        original = phash_hex(data)
        assert is_phash(original)
        hashes[name] = original
        for kind, copy in variants(data).items():
            assert hamming(original, phash_hex(copy)) <= MAX_HAMMING, (name, kind)
    for a, b in itertools.combinations(PHOTOS, 2):
        assert hamming(hashes[a], hashes[b]) > 3 * MAX_HAMMING, (a, b)


def test_the_same_photo_in_two_formats(data_dir):
    jpg = phash_hex((data_dir / "photos" / "hopper.jpg").read_bytes())
    png = phash_hex((data_dir / "photos" / "hopper.png").read_bytes())
    assert hamming(jpg, png) <= 2


def test_undecodable_bytes_raise_a_decode_error(photos):
    with pytest.raises(ImageDecodeError, match="cannot decode 9 bytes"):
        phash_hex(b"not a png")
    with pytest.raises(ImageDecodeError):
        phash_hex(photos["coins.png"][:200])  # truncated


@pytest.mark.parametrize("per_key", [1, 2, 3])
def test_segment_keys_find_every_pair_within_the_distance(per_key):
    rng = random.Random(per_key)
    bounds = segment_bounds(MAX_HAMMING, per_key)
    assert sum(w for _, w in bounds) == 64 and len(bounds) == MAX_HAMMING + per_key
    assert len(phash_band_keys("0" * 16, MAX_HAMMING, per_key)) == math.comb(MAX_HAMMING + per_key, per_key)
    for _ in range(300):
        a = rng.getrandbits(64)
        flips = rng.sample(range(64), rng.randint(0, MAX_HAMMING))
        b = a
        for bit in flips:
            b ^= 1 << bit
        ha, hb = f"{a:016x}", f"{b:016x}"
        assert hamming(ha, hb) == len(flips)
        ka, kb = phash_band_keys(ha, MAX_HAMMING, per_key), phash_band_keys(hb, MAX_HAMMING, per_key)
        assert set(ka) & set(kb) and first_common_key(ka, kb) is not None
    # a flip in each of MAX_HAMMING + 1 segments leaves per_key - 1 intact: no shared key, the bound is tight
    a = rng.getrandbits(64)
    b = a
    for start, _ in bounds[:MAX_HAMMING + 1]:
        b ^= 1 << (63 - start)
    ka = phash_band_keys(f"{a:016x}", MAX_HAMMING, per_key)
    kb = phash_band_keys(f"{b:016x}", MAX_HAMMING, per_key)
    assert first_common_key(ka, kb) is None
    with pytest.raises(ValueError, match="max_distance must lie in 0..63"):
        segment_bounds(64)
    with pytest.raises(ValueError, match="per_key must lie in"):
        segment_bounds(5, 60)


def test_hashes_and_set_keys():
    assert hamming("ffffffffffffffff", "0000000000000000") == 64
    assert not is_phash("xyz") and not is_phash("g" * 16) and not is_phash(None)
    with pytest.raises(ValueError, match="different lengths"):
        hamming("ff", "fff")
    assert image_set_key(["b", "a", "a"]) == image_set_key(["a", "b"]) != image_set_key(["a"])
