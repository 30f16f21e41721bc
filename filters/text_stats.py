"""Text statistics behind the quality rules: Unicode-aware words, and the Gopher, C4 and OBELICS measures.

Every function here is pure (text in, number or bool out) so that a rule can be unit tested, plotted over a
sample, or reused by another stage. The thresholds live in `interleaf.filters.quality.QualityConfig`.

Words. Gopher (Rae et al. 2021, appendix A) and its reimplementations split English on whitespace. That
fails for scripts written without spaces: a Chinese page would be a handful of 200-character "words" and
fail every word rule. Here a token is a run of non-space characters, except that in the scripts written
without spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar, Tibetan) each character, with the
combining marks that follow it, is a token of its own: a character there is about a morpheme, so counts
come out the same order of magnitude as English word counts. A "word" is a token with its leading and
trailing punctuation and symbols stripped, case-folded; tokens that are all punctuation ("-", "|", "...")
are not words (datatrove's Gopher filter also leaves punctuation tokens out of its word count).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

# The eight words of Gopher's stop-word rule (Rae et al. 2021, appendix A: "does not contain at least two of
# the following English words: the, be, to, of, and, that, have, with").
GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})

# Line starts counted as bullets. Gopher names "a bullet point" without a list; datatrove checks "•" only,
# RedPajama-V2 (rps_lines_start_with_bulletpoint) also "●", "*" and "-". Markdown lists use "*" and "-".
BULLETS = ("•", "●", "◦", "▪", "‣", "⁃", "*", "-")
ELLIPSES = ("...", "…")

# Blocks of the scripts written without spaces between words (see the module docstring).
_UNSEGMENTED_BLOCKS = (
    (0x0E00, 0x0E7F),  # Thai
    (0x0E80, 0x0EFF),  # Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # halfwidth Katakana
    (0x20000, 0x3134F),  # CJK extensions B to G
)


def _char_class(codepoints: list[int]) -> str:
    """A regex character class body for a sorted list of code points, as compact ranges."""
    parts, i = [], 0
    while i < len(codepoints):
        j = i
        while j + 1 < len(codepoints) and codepoints[j + 1] == codepoints[j] + 1:
            j += 1
        lo, hi = codepoints[i], codepoints[j]
        parts.append(f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}")
        i = j + 1
    return "".join(parts)


def _codepoints(test: Callable[[str], bool], blocks=((0, 0x1FFFF),)) -> list[int]:
    return [cp for lo, hi in blocks for cp in range(lo, hi + 1) if test(chr(cp))]


def _is_mark(c: str) -> bool:
    return unicodedata.category(c).startswith("M")


_UNSEG_BASE = _char_class(_codepoints(lambda c: not _is_mark(c) and unicodedata.category(c) != "Cn",
                                      _UNSEGMENTED_BLOCKS))
_UNSEG_MARK = _char_class(_codepoints(_is_mark, _UNSEGMENTED_BLOCKS))
# one character of an unsegmented script with its combining marks, or a run of any other non-space characters
_TOKEN = re.compile(f"[{_UNSEG_BASE}][{_UNSEG_MARK}]*|[^\\s{_UNSEG_BASE}]+")
_UNSEG_START = re.compile(f"[{_UNSEG_BASE}]")
# punctuation (P*), symbols (S*, emoji included) and format/control characters at either end of a token;
# built from the Unicode database, since Python's \W would also strip the vowel signs that end Indic words
_EDGE_CLASS = _char_class(_codepoints(lambda c: unicodedata.category(c)[0] in "PS"
                                      or unicodedata.category(c) in ("Cc", "Cf")))
_LEADING_EDGE = re.compile(f"[{_EDGE_CLASS}]+")


def _strip_edges(token: str) -> str:
    """The token without its leading and trailing punctuation, symbols and controls. Two anchored matches,
    the trailing one on the reversed token: linear, where a pattern ending in `[...]+$` retries from every
    position of a long run ("a" + "!" * 100,000 + "b" took 50 s)."""
    lead = _LEADING_EDGE.match(token)
    start = lead.end() if lead else 0
    if start == len(token):
        return ""
    trail = _LEADING_EDGE.match(token[::-1])
    return token[start:len(token) - (trail.end() if trail else 0)]


_ASCII_EDGES = "".join(chr(c) for c in range(128) if unicodedata.category(chr(c))[0] in "PS"
                       or unicodedata.category(chr(c)) == "Cc")
_FIRST_UNSEG = chr(_UNSEGMENTED_BLOCKS[0][0])  # a text whose characters all come before it has none
# a token's start up to its first letter (in any script: a word character that is neither digit nor "_")
_ALPHA_TOKEN = re.compile(r"(?<!\S)\S*?[^\W\d_]")
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")  # one or more blank lines


@dataclass(frozen=True)
class _Analysis:
    tokens: tuple[str, ...]  # raw tokens, punctuation attached
    words: tuple[str, ...]  # stripped, case-folded, non-empty
    segmented: tuple[bool, ...]  # per word: from a script written with spaces
    chars: int  # characters in all words


# Analyses of recent texts: document_verdict asks a dozen statistics of the same text, and a document's
# text is made of its paragraphs, each analysed before by the node rules (join_paragraphs). Bounded by the
# characters of the texts held (their analyses take a few times that in memory), at least the last one.
_CACHE: dict[str, _Analysis] = {}  # oldest first
_CACHE_CHARS = [0]
_CACHE_MAX_CHARS = 1 << 20


def _analyse(text: str) -> _Analysis:
    found = _CACHE.get(text)
    if found is not None:
        return found
    return _remember(text, _analysis(text))


def _remember(text: str, analysis: _Analysis) -> _Analysis:
    _CACHE[text] = analysis
    _CACHE_CHARS[0] += len(text)
    while _CACHE_CHARS[0] > _CACHE_MAX_CHARS and len(_CACHE) > 1:
        _CACHE_CHARS[0] -= len(next(iter(_CACHE)))
        del _CACHE[next(iter(_CACHE))]
    return analysis


def join_paragraphs(texts: list[str]) -> str:
    """The texts joined by blank lines (Document.text()), its analysis made from theirs: tokens never
    span whitespace, so the joined text's tokens and words are theirs in order."""
    text = "\n\n".join(texts)
    if text not in _CACHE:
        parts = [_analyse(t) for t in texts]
        _remember(text, _Analysis(tuple(t for a in parts for t in a.tokens),
                                  tuple(w for a in parts for w in a.words),
                                  tuple(s for a in parts for s in a.segmented), sum(a.chars for a in parts)))
    return text


def _analysis(text: str) -> _Analysis:
    if text.isascii():  # most text: str.split is the token regex there, and edges are ASCII punctuation
        tokens = text.split()
        words = " ".join([t.strip(_ASCII_EDGES) for t in tokens]).lower().split(" ") if tokens else []
        unsegmented = False
    else:
        unsegmented = max(text) >= _FIRST_UNSEG and _UNSEG_START.search(text) is not None
        tokens = _TOKEN.findall(text) if unsegmented else text.split()
        # a token that starts and ends with a letter or digit has no edge to strip (most do)
        words = " ".join([t if t[0].isalnum() and t[-1].isalnum() else _strip_edges(t)
                          for t in tokens]).casefold().split(" ") if tokens else []
    if "" in words:  # tokens that were all punctuation
        words = [w for w in words if w]
    segmented = (tuple(_UNSEG_START.match(w) is None for w in words) if unsegmented
                 else (True,) * len(words))
    return _Analysis(tuple(tokens), tuple(words), segmented, sum(map(len, words)))


def tokens(text: str) -> list[str]:
    """Whitespace-separated tokens; each character of an unsegmented script (Han, Kana, Thai...) apart."""
    return list(_analyse(text).tokens)


def words(text: str) -> list[str]:
    """Tokens stripped of edge punctuation and symbols, case-folded; all-punctuation tokens left out."""
    return list(_analyse(text).words)


def lines(text: str) -> list[str]:
    """Non-empty lines, stripped. Blank lines are layout, not content, so they do not dilute line shares."""
    return [s for s in (line.strip() for line in text.splitlines()) if s]


def paragraphs(text: str) -> list[str]:
    """Blocks separated by blank lines, stripped (Document.text() joins text nodes with a blank line)."""
    return [p for p in (p.strip() for p in _PARAGRAPH_BREAK.split(text)) if p]


def normalize_text(text: str) -> str:
    """Case-folded with whitespace runs collapsed: the key for "the same paragraph" within a document."""
    return " ".join(text.split()).casefold()  # str.split's whitespace is the regex engine's \s


# ---------------------------------------------------------------- Gopher quality rules (Rae et al. 2021, A)


def word_count(text: str) -> int:
    """Gopher: keep documents of 50 to 100,000 words. OBELICS: keep paragraphs of at least 4 words."""
    return len(_analyse(text).words)


def mean_word_length(text: str) -> float | None:
    """Gopher: mean word length within 3..10 characters.

    Measured over the words of scripts written with spaces. A character of Han or Thai is one "word" of length
    one here, which says nothing about quality, so when those are the majority the statistic is None and the
    rule does not apply (Gopher was English-only and never met the case).
    """
    a = _analyse(text)
    lengths = [len(w) for w, seg in zip(a.words, a.segmented) if seg]
    if not lengths or len(lengths) * 2 < len(a.words):
        return None
    return sum(lengths) / len(lengths)


def symbol_to_word_ratio(text: str) -> float:
    """Gopher: at most 0.1 for the hash symbol and for the ellipsis: the larger of the two ratios."""
    n = word_count(text)
    if not n:
        return 0.0
    return max(text.count("#"), sum(text.count(e) for e in ELLIPSES)) / n


def ellipsis_line_share(text: str) -> float:
    """Gopher: at most 30 % of lines ending in an ellipsis (truncated teasers, "Read more..." lists)."""
    ls = lines(text)
    return sum(line.endswith(ELLIPSES) for line in ls) / len(ls) if ls else 0.0


def bullet_line_share(text: str) -> float:
    """Gopher: at most 90 % of lines starting with a bullet point (link lists, navigation)."""
    ls = lines(text)
    return sum(line.startswith(BULLETS) for line in ls) / len(ls) if ls else 0.0


def alpha_word_share(text: str) -> float:
    """Gopher: at least 80 % of words contain an alphabetic character (letters of any script count).

    Measured over raw tokens, so that runs of symbols, numbers and separators ("| 12:30 | -- |") weigh in.
    An empty text has no word without a letter: 1.0 (only the word-count rule judges emptiness).
    """
    toks = _analyse(text).tokens
    # the tokens that hold a letter: one match from each such token's start (linear: a match must start
    # after a space, and each token is scanned once)
    return len(_ALPHA_TOKEN.findall(" ".join(toks))) / len(toks) if toks else 1.0


def stop_word_count(text: str, stop_words: frozenset[str] = GOPHER_STOP_WORDS) -> int:
    """Gopher: at least two of the stop words. Occurrences are counted (as datatrove does); case-folded."""
    return sum(w in stop_words for w in _analyse(text).words)


# ---------------------------------------------------------------- Gopher repetition rules (Rae et al. 2021,
# appendix A, table A1). Only the second and later copies count as duplicates: the share is what removing the
# repetition would remove, as in datatrove's gopher_repetition_filter.


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(number of items, characters of items) that repeat an earlier item."""
    seen: set[str] = set()
    n = chars = 0
    for x in items:
        if x in seen:
            n += 1
            chars += len(x)
        else:
            seen.add(x)
    return n, chars


def duplicate_line_share(text: str) -> float:
    """Gopher table A1: duplicate line fraction at most 0.30."""
    ls = lines(text)
    return _duplicates(ls)[0] / len(ls) if ls else 0.0


def duplicate_line_char_share(text: str) -> float:
    """Gopher table A1: characters in duplicate lines at most 0.20 of the characters in lines."""
    ls = lines(text)
    total = sum(map(len, ls))
    return _duplicates(ls)[1] / total if total else 0.0


def duplicate_paragraph_share(text: str) -> float:
    """Gopher table A1: duplicate paragraph fraction at most 0.30."""
    ps = paragraphs(text)
    return _duplicates(ps)[0] / len(ps) if ps else 0.0


def duplicate_paragraph_char_share(text: str) -> float:
    """Gopher table A1: characters in duplicate paragraphs at most 0.20 of the characters in paragraphs."""
    ps = paragraphs(text)
    total = sum(map(len, ps))
    return _duplicates(ps)[1] / total if total else 0.0


def _ngrams(words: tuple[str, ...], n: int):
    return zip(*(words[i:] for i in range(n)))


def top_ngram_char_share(text: str, n: int) -> float:
    """Gopher table A1: characters in the most frequent word n-gram, over all word characters.

    Thresholds 0.20, 0.18, 0.16 for n = 2, 3, 4. An n-gram seen once is no repetition, so the share is 0 then
    (RedPajama-V2 rps_doc_frac_chars_top_ngram does the same). Overlapping occurrences ("ha ha ha") could
    count a word twice; the share is capped at 1.
    """
    a = _analyse(text)
    if len(a.words) < n or not a.chars:
        return 0.0
    gram, count = Counter(_ngrams(a.words, n)).most_common(1)[0]
    if count < 2:
        return 0.0
    return min(1.0, sum(map(len, gram)) * count / a.chars)


def duplicate_ngram_char_share(text: str, n: int) -> float:
    """Gopher table A1: characters of words covered by repeated word n-grams, over all word characters.

    Thresholds 0.15, 0.14, 0.13, 0.12, 0.11, 0.10 for n = 5..10. A word is counted once however many
    repeated n-grams cover it, and only copies after the first count (see the section comment).
    """
    a = _analyse(text)
    if len(a.words) < n or not a.chars:
        return 0.0
    covered = bytearray(len(a.words))
    seen: set[tuple[str, ...]] = set()
    for i, gram in enumerate(_ngrams(a.words, n)):
        if gram in seen:
            covered[i:i + n] = b"\x01" * n
        else:
            seen.add(gram)
    return sum(len(w) for w, c in zip(a.words, covered) if c) / a.chars


# ---------------------------------------------------------------- boilerplate lines (C4, RefinedWeb)

# Anywhere in a line. C4 (Raffel et al. 2020, section 2.2; tensorflow_datasets c4_utils) dropped lines with
# "terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies", and
# every line mentioning "javascript". Here JavaScript counts only as a notice ("please enable JavaScript",
# "JavaScript is disabled"): C4's bare word also removed prose about the programming language.
_BOILERPLATE_ANYWHERE = re.compile(
    r"\bterms (?:of (?:use|service)|and conditions)\b|\bprivacy policy\b"
    r"|\bcookie (?:policy|settings|preferences)\b"
    r"|\b(?:uses?|use of|accept(?: all)?|allow(?: all)?|we use) cookies\b"
    r"|\b(?:enable|enabled|disable|disabled|turn on|requires?|support) javascript\b"
    r"|\bjavascript (?:is |must be )?(?:required|disabled|enabled|turned off)\b"
    r"|\ball rights reserved\b|\blorem ipsum\b",
    re.IGNORECASE)
# At the start of a line: navigation and sharing widgets. RefinedWeb's line-wise corrections (Penedo et al.
# 2023) remove short lines that start with such patterns ("sign-in", "read more...", "items in
# cart"); OBELICS removed the same lines through its per-domain line deduplication (Laurençon et al. 2023).
_BOILERPLATE_START = re.compile(
    r"^\W*(?:©|\(c\)\s*\d|copyright\s*(?:©|\(c\)|\d{4})|click here\b|read more\b|continue reading\b"
    r"|skip to (?:main )?content\b"
    r"|(?:sign|log) ?(?:in|up|out)\b|share (?:this|on)\b|subscribe\b|follow us\b|powered by\b|back to top\b)",
    re.IGNORECASE)


# every alternative of _BOILERPLATE_ANYWHERE holds one of these words: a line with none (casefolded; the
# regex engine's IGNORECASE also matches "i" to a dotless "ı" and to "İ", which casefolds to "i" and a
# combining dot) cannot match, and looking costs a tenth
_ANYWHERE_KEYWORDS = ("terms", "privacy", "cookie", "javascript", "reserved", "lorem")


def _has_boilerplate_keyword(line: str) -> bool:
    folded = line.casefold().replace("ı", "i").replace("i\u0307", "i")
    return any(word in folded for word in _ANYWHERE_KEYWORDS)


def is_boilerplate_line(line: str, max_words: int = 30) -> bool:
    """A cookie, copyright, "enable JavaScript", "click here" ... line of at most `max_words` words.

    The bound keeps prose that happens to mention a privacy policy: a notice is short (cookie banners run to
    20-40 words; RefinedWeb bounded its pattern lines at 10 words).
    """
    line = line.strip()
    if not line or not (_BOILERPLATE_START.search(line) or (
            _has_boilerplate_keyword(line) and _BOILERPLATE_ANYWHERE.search(line))):
        return False  # the patterns first: most lines match none, and counting words costs more
    return word_count(line) <= max_words
