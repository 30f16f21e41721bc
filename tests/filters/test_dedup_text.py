"""Text dedup logic: normalisation, shingles, MinHash signatures (against plain datasketch), LSH bands."""

import random

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from interleaf.filters.dedup_text import (MinHashConfig, MinHasher, band_keys, candidate_probability,
                                          estimated_jaccard, first_common_band, jaccard, lsh_error_areas,
                                          lsh_params, normalize_text, signature_from_bytes,
                                          signature_to_bytes, text_hash, url_domain, word_shingles)


def _words(rng, n):
    return [f"w{rng.randrange(100_000)}" for _ in range(n)]


def test_normalisation_ignores_case_punctuation_whitespace_and_width():
    assert normalize_text("  Hello,\n\nWORLD!  ｆｕｌｌ\twidth ") == "hello world full width"
    assert text_hash("Hello, world.") == text_hash("hello   WORLD")
    assert text_hash("Hello, world.") == text_hash("hello world", normalized=True)
    assert text_hash("hello world") != text_hash("hello word")
    assert len(text_hash("x")) == 32


def test_word_shingles():
    assert word_shingles("a b c d e f", 5) == {b"a b c d e", b"b c d e f"}
    assert word_shingles("Short TEXT.", 5) == {b"short text"}  # shorter than n: one shingle
    assert word_shingles("", 5) == set() and word_shingles(" ,. ", 5) == set()
    # one substituted word changes at most n shingles of each side
    words = [f"w{i}" for i in range(100)]
    edited = words[:50] + ["other"] + words[51:]
    a, b = word_shingles(" ".join(words), 5), word_shingles(" ".join(edited), 5)
    assert len(a - b) == 5 and len(b - a) == 5
    assert jaccard(a, b) == pytest.approx(91 / 101)


def test_signatures_equal_plain_datasketch():
    rng = random.Random(1)
    hasher = MinHasher(128, 1)
    for _ in range(5):
        shingles = word_shingles(" ".join(_words(rng, 200)), 5)
        plain = MinHash(num_perm=128, seed=1)
        plain.update_batch(list(shingles))
        sig = hasher.signature(shingles)
        assert sig.dtype == np.uint32 and np.array_equal(sig, plain.hashvalues)
        assert np.array_equal(signature_from_bytes(signature_to_bytes(sig)), sig)


def test_estimate_tracks_exact_jaccard():
    rng = random.Random(2)
    hasher = MinHasher(128, 1)
    base = _words(rng, 400)
    for edits in (2, 8, 20, 40):
        edited = list(base)
        for p in rng.sample(range(400), edits):
            edited[p] = "edit" + str(p)
        a, b = word_shingles(" ".join(base), 5), word_shingles(" ".join(edited), 5)
        exact = jaccard(a, b)
        estimate = estimated_jaccard(hasher.signature(a), hasher.signature(b))
        assert abs(estimate - exact) < 4 * np.sqrt(exact * (1 - exact) / 128) + 0.02, (edits, exact, estimate)


def test_lsh_params_are_datasketch_optimal_params():
    for threshold, weights in ((0.8, (0.5, 0.5)), (0.8, (0.1, 0.9)), (0.6, (0.5, 0.5))):
        lsh = MinHashLSH(threshold=threshold, num_perm=128, weights=weights)
        assert lsh_params(threshold, 128, *weights) == (lsh.b, lsh.r)
    config = MinHashConfig()
    b, r = config.bands
    assert (b, r) == (14, 9) and b * r <= config.num_perm
    # with verification after LSH, the bands favour recall: planted near duplicates (J >= 0.88) are
    # candidates with probability above 0.99, pairs at J=0.5 rarely
    assert candidate_probability(0.88, b, r) > 0.99
    assert candidate_probability(0.5, b, r) < 0.03
    fp, fn = lsh_error_areas(0.8, b, r)
    assert 0 < fn < fp  # the chosen trade-off: fewer misses, more candidates to verify


def test_band_keys_and_first_common_band():
    rng = random.Random(3)
    hasher = MinHasher(128, 1)
    sig = hasher.signature(word_shingles(" ".join(_words(rng, 100)), 5))
    keys = band_keys(sig, 14, 9)
    assert len(keys) == 14 and len(set(keys)) == 14
    assert [int.from_bytes(k[:2], "big") for k in keys] == list(range(14))
    other = sig.copy()
    other[0] += 1  # differs in band 0 only
    other_keys = band_keys(other, 14, 9)
    assert other_keys[0] != keys[0] and other_keys[1:] == keys[1:]
    assert first_common_band(sig, other, 14, 9) == 1
    assert first_common_band(sig, sig, 14, 9) == 0
    assert first_common_band(sig, np.zeros_like(sig), 14, 9) is None
    with pytest.raises(ValueError, match="need 130 hash values"):
        band_keys(sig, 13, 10)


def test_config_validation():
    with pytest.raises(ValueError, match="threshold must lie strictly between 0 and 1"):
        MinHashConfig(threshold=1.0)
    with pytest.raises(ValueError, match="sum to 1"):
        MinHashConfig(false_positive_weight=0.5, false_negative_weight=0.6)
    with pytest.raises(ValueError, match="ngram must be at least 1"):
        MinHashConfig(ngram=0)
    with pytest.raises(TypeError):
        MinHashConfig(5)  # keyword-only


def test_url_domain():
    assert url_domain("https://WWW.Example.com:8080/a?b") == "example.com"
    assert url_domain("http://blog.example.com/") == "blog.example.com"
    assert url_domain("not a url") == ""
    assert url_domain("http://[::1") == ""
