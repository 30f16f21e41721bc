"""Text deduplication logic, engine-free: normalisation, word shingles, MinHash signatures, LSH band keys.

The Beam stage (interleaf.pipelines.dedup) wires these together; everything here is a pure function of its
arguments, so every worker computes the same keys and signatures for the same text.

- Exact duplicates share `text_hash(text)`: the hash of the normalised text (case, punctuation and
  whitespace differences do not count as differences).
- Near duplicates: datasketch MinHash over word n-gram shingles estimates the Jaccard similarity of two
  shingle sets; LSH splits the signature into `b` bands of `r` rows, and two documents whose signatures agree
  on a whole band become a candidate pair. `b` and `r` are chosen for recall (`recall_bands`): a pair at the
  recall similarity (0.85) is missed with probability at most 1e-4. Candidates are then verified against
  the exact Jaccard of their shingle sets (`exact_jaccard` over `MinHasher.sketch`'s shingle hashes, the
  same 32-bit values the signature is made of), so the recall-leaning bands cost comparisons, not precision.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import numpy as np
from datasketch import MinHash
from datasketch.hashfunc import sha1_hash32

# Anything that is neither a word character nor whitespace is punctuation for dedup purposes.
_PUNCT = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")
# datasketch 2.0's default permutation scheme; its hash values are uint32 (4 bytes each).
SCHEME = "affine32"
SIGNATURE_DTYPE = np.uint32


@dataclass(kw_only=True, frozen=True)
class MinHashConfig:
    """How documents are shingled, sketched and banded."""

    # Words per shingle. 5-grams as datatrove's MinhashConfig (n_grams=5): long enough that unrelated
    # documents share almost none, short enough that a one-word edit changes at most 5 shingles.
    ngram: int = 5
    # Hash functions per signature. datasketch's default (MinHash(num_perm=128)); the Jaccard estimate's
    # standard error is sqrt(J(1-J)/num_perm), 0.035 at J=0.8.
    num_perm: int = 128
    # Jaccard similarity at or above which two documents are near duplicates. 0.8 as SlimPajama's
    # MinHashLSH dedup (Soboleva et al. 2023); datasketch's MinHashLSH default is 0.9.
    threshold: float = 0.8
    # Seed of the permutations. datasketch's default (MinHash(seed=1)); every worker must use the same one.
    seed: int = 1
    # LSH bands are chosen for recall; candidates are verified against the exact Jaccard afterwards
    # (pipelines.dedup), which keeps precision exact. The bands are the most rows per band (fewest chance
    # candidates) whose num_perm // r bands still miss a pair of Jaccard `recall_similarity` with
    # probability at most `max_missed`. 128 permutations: b=21, r=6, missing 5e-5 of the pairs at 0.85,
    # 0.17% at 0.8 and 28% of those at 0.5 become candidates (then rejected). b=18, r=7 would miss 0.1%.
    recall_similarity: float = 0.85
    max_missed: float = 0.0001

    def __post_init__(self):
        if self.ngram < 1:
            raise ValueError(f"MinHashConfig.ngram must be at least 1, found {self.ngram}")
        if not 2 <= self.num_perm <= 4096:
            raise ValueError(f"MinHashConfig.num_perm must be between 2 and 4096, found {self.num_perm}")
        if not 0 <= self.seed < 2**32:  # datasketch seeds numpy's generator, which takes 0 .. 2**32 - 1
            raise ValueError(f"MinHashConfig.seed must be between 0 and 2**32 - 1, found {self.seed}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(
                f"MinHashConfig.threshold must lie strictly between 0 and 1, found {self.threshold}")
        if not self.threshold <= self.recall_similarity < 1.0:
            raise ValueError("MinHashConfig.recall_similarity must lie between the threshold "
                             f"({self.threshold}) and 1, found {self.recall_similarity}")
        if not 0.0 < self.max_missed < 1.0:
            raise ValueError(
                f"MinHashConfig.max_missed must lie strictly between 0 and 1, found {self.max_missed}")
        self.bands  # noqa: B018 -- raises when no band layout reaches the recall

    @property
    def bands(self) -> tuple[int, int]:
        """(b, r): bands and rows per band, chosen for recall (see recall_bands)."""
        return recall_bands(self.num_perm, self.recall_similarity, self.max_missed)


# ---------------------------------------------------------------- text


def normalize_text(text: str) -> str:
    """Unicode NFKC, case-folded, punctuation removed, whitespace collapsed to single spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def text_hash(text: str, *, normalized: bool = False) -> str:
    """Key of exact duplicates: 32 hex characters of sha256 of the normalised text (pass normalized=True
    when `text` already is)."""
    norm = text if normalized else normalize_text(text)
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()[:32]


def word_shingles(text: str, n: int, *, normalized: bool = False) -> set[bytes]:
    """The set of word n-grams of the normalised text (UTF-8). A text shorter than n words is one shingle;
    an empty text has none."""
    norm = text if normalized else normalize_text(text)
    words = norm.split(" ") if norm else []
    if not words:
        return set()
    if len(words) <= n:
        return {" ".join(words).encode("utf-8")}
    return {" ".join(words[i:i + n]).encode("utf-8") for i in range(len(words) - n + 1)}


def url_domain(url: str) -> str:
    """The host of a URL, lower-cased, without a leading "www." (the unit of per-domain paragraph dedup)."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:  # malformed, e.g. an unclosed IPv6 bracket: no domain to share paragraphs with
        return ""
    return host.removeprefix("www.")


def jaccard(a: set, b: set) -> float:
    """Exact Jaccard similarity of two sets (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


# ---------------------------------------------------------------- MinHash signatures


class MinHasher:
    """datasketch MinHash signatures with the permutations built once (building them per document costs
    more than hashing a short one). The signatures equal `MinHash(num_perm, seed)` + `update_batch`."""

    def __init__(self, num_perm: int = 128, seed: int = 1):
        self.num_perm, self.seed = num_perm, seed
        self._permutations = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations

    def minhash(self, shingles: set[bytes]) -> MinHash:
        return self._minhash(self.shingle_hashes(shingles))

    def _minhash(self, hashes: np.ndarray) -> MinHash:
        # hashfunc=int: the values are datasketch's own shingle hashes (sha1_hash32), computed once
        m = MinHash(num_perm=self.num_perm, seed=self.seed, permutations=self._permutations, scheme=SCHEME,
                    hashfunc=int)
        m.update_batch(hashes.tolist())
        return m

    @staticmethod
    def shingle_hashes(shingles: set[bytes]) -> np.ndarray:
        """The sorted, distinct 32-bit hashes datasketch makes of the shingles (sha1_hash32): the set the
        signature sketches, and what exact verification compares (the 20,000 distinct shingles of two
        10,000-word documents hold about 0.05 colliding pairs; each moves their Jaccard by 1e-4)."""
        hashes = np.fromiter((sha1_hash32(s) for s in shingles), dtype=np.uint32, count=len(shingles))
        return np.unique(hashes)

    def signature(self, shingles: set[bytes]) -> np.ndarray:
        """(num_perm,) uint32 hash values."""
        return self.minhash(shingles).hashvalues

    def sketch(self, shingles: set[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(signature, shingle hashes) with each shingle hashed once."""
        hashes = self.shingle_hashes(shingles)
        return self._minhash(hashes).hashvalues, hashes


def signature_to_bytes(signature: np.ndarray) -> bytes:
    return np.ascontiguousarray(signature, dtype=SIGNATURE_DTYPE).tobytes()


def signature_from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=SIGNATURE_DTYPE)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """MinHash estimate of the Jaccard similarity: the fraction of positions where the signatures agree."""
    if a.shape != b.shape:
        raise ValueError(f"signatures of different lengths ({a.shape[0]} and {b.shape[0]}): they were made "
                         "with different num_perm and cannot be compared")
    return float(np.count_nonzero(a == b)) / a.shape[0]


def estimate_floor(threshold: float, num_perm: int) -> float:
    """The estimate below which a candidate is rejected without the exact check: four standard errors
    under the threshold, so a pair at the threshold is cut there with probability about 3e-5 (128
    permutations, threshold 0.8: 0.66)."""
    return threshold - 4.0 * float(np.sqrt(threshold * (1.0 - threshold) / num_perm))


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted arrays of distinct shingle hashes (1.0 for two empty ones)."""
    if not a.size and not b.size:
        return 1.0
    common = np.intersect1d(a, b, assume_unique=True).size
    return common / (a.size + b.size - common)


# ---------------------------------------------------------------- LSH bands


@lru_cache(maxsize=64)
def recall_bands(num_perm: int, recall_similarity: float, max_missed: float) -> tuple[int, int]:
    """(b, r): the most rows per band whose b = num_perm // r bands miss a pair of Jaccard
    `recall_similarity` with probability at most `max_missed` (more rows: fewer chance candidates; all
    permutations are used, since more bands only add recall)."""
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        if 1.0 - candidate_probability(recall_similarity, b, r) <= max_missed:
            return b, r
    raise ValueError(f"no LSH bands of {num_perm} permutations miss at most {max_missed} of the pairs at "
                     f"Jaccard {recall_similarity} (one row per band misses "
                     f"{1.0 - candidate_probability(recall_similarity, num_perm, 1):.2g}): raise "
                     "MinHashConfig.num_perm or max_missed")


def candidate_probability(similarity: float, b: int, r: int) -> float:
    """Probability that two documents of Jaccard `similarity` share at least one of b bands of r rows."""
    return 1.0 - (1.0 - similarity ** r) ** b


def band_keys(signature: np.ndarray, b: int, r: int) -> list[bytes]:
    """One key per band: 2 bytes of band index and 16 bytes of blake2b of the band's hash values. Equal keys
    mean equal bands (a false match needs a 128-bit collision)."""
    if b * r > signature.shape[0]:
        raise ValueError(f"{b} bands of {r} rows need {b * r} hash values, the signature has "
                         f"{signature.shape[0]}")
    sig = np.ascontiguousarray(signature, dtype=SIGNATURE_DTYPE)
    return [i.to_bytes(2, "big") + hashlib.blake2b(sig[i * r:(i + 1) * r].tobytes(), digest_size=16).digest()
            for i in range(b)]


def first_common_band(a: np.ndarray, b: np.ndarray, bands: int, rows: int) -> int | None:
    """Index of the first band on which two signatures agree entirely, None when none does. A pair that
    collides in several bands is reported once, from this band."""
    eq = (a[:bands * rows] == b[:bands * rows]).reshape(bands, rows).all(axis=1)
    hits = np.flatnonzero(eq)
    return int(hits[0]) if hits.size else None
