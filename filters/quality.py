"""Text and document quality rules: keep or drop, with a stable reason code.

Two levels, as OBELICS filtered (Laurençon et al. 2023, "Filtering multimodal web documents"):
- node level (`filter_nodes`): a text node that is too short, repeats an earlier text node of the same
  document, or consists of boilerplate lines (cookie notices, copyright lines, "click here") is marked
  dropped with a reason; the document keeps it, so the run can count and audit it.
- document level (`document_verdict`): image count bounds (OBELICS kept 1..30 images) and the Gopher rules
  (Rae et al. 2021, appendix A) measured on the text of the kept nodes; the first failing rule, in the order
  of DOCUMENT_REASONS, names the reason.

Engine-free: the pipeline turns each reason into a Beam Metrics counter (pipelines/common.py Funnel).
The statistics themselves are pure functions in `interleaf.filters.text_stats`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace

from interleaf.filters import text_stats as ts
from interleaf.schemas.document import Document

log = logging.getLogger(__name__)

# Node reasons, in the order the rules run on each text node.
BOILERPLATE_LINE = "boilerplate_line"
TEXT_TOO_SHORT = "text_too_short"
TEXT_REPEATED = "text_repeated"
NODE_REASONS = (BOILERPLATE_LINE, TEXT_TOO_SHORT, TEXT_REPEATED)

# Document reasons, in the fixed order document_verdict tries them. Image counts come first: they are the
# cheapest test and, for an interleaved dataset, the structural one; a text-only page should be counted as
# "too_few_images" rather than by whichever text rule it also fails, and should not pay for the n-gram
# statistics. Then Gopher's quality rules in the paper's order, then its repetition rules.
DOCUMENT_REASONS = (
    "too_few_images", "too_many_images",
    "too_few_words", "too_many_words", "mean_word_length", "symbol_ratio", "ellipsis_lines", "bullet_lines",
    "alpha_words", "stop_words",
    "duplicate_lines", "duplicate_paragraphs", "top_ngram", "duplicate_ngrams",
)


@dataclass(kw_only=True)
class QualityConfig:
    """Thresholds of the node and document rules. A threshold of None turns its rule off."""

    # ---- node level (text nodes)
    # OBELICS config_filter_web_documents.yaml, number_words_node_level_min_cutoff: 4 (paragraphs of fewer
    # words removed). C4 kept lines of at least 3 words.
    min_node_words: int | None = 4
    # Off by default: neither OBELICS nor C4 measured node characters. Useful for scripts where a character
    # is a word (a 4-character Chinese node passes min_node_words).
    min_node_chars: int | None = None
    # A text node equal (case and whitespace aside) to an earlier kept text node of the same document is
    # dropped: menus and teasers repeated on a page. OBELICS removed paragraphs repeated across the pages of
    # a domain ("Paragraph deduplication"; that cross-document part belongs to the dedup stage); Gopher drops
    # a page at 30 % duplicate paragraphs (table A1).
    drop_repeated_nodes: bool = True
    # A text node whose every line is boilerplate (ts.is_boilerplate_line: C4's cookie / terms of use /
    # JavaScript lines, RefinedWeb-style "click here", "read more", copyright lines) is dropped.
    drop_boilerplate_nodes: bool = True
    # Longest line (in words) that can count as boilerplate: cookie banners run to 20-40 words; RefinedWeb
    # applied its pattern lines to short lines of up to 10 words (Penedo et al. 2023, line-wise
    # corrections). Longer lines are prose.
    boilerplate_max_words: int = 30

    # ---- document level: image counts (on kept image nodes)
    # OBELICS config, number_images_min_cutoff: 1 and number_images_max_cutoff: 30. min_images=0 keeps
    # text-only documents.
    min_images: int = 1
    max_images: int | None = 30

    # ---- document level: Gopher quality rules (Rae et al. 2021, appendix A), on the kept text
    # "fewer than 50 or more than 100,000 words". (OBELICS used 10..2,000 on its shorter interleaved pages.)
    min_words: int | None = 50
    max_words: int | None = 100_000
    # "mean word length is outside the range of 3 to 10 characters"
    min_mean_word_length: float | None = 3.0
    max_mean_word_length: float | None = 10.0
    # "symbol-to-word ratio greater than 0.1 for either the hash symbol or the ellipsis"
    max_symbol_ratio: float | None = 0.1
    # "more than 30 % [of lines] ending with an ellipsis"
    max_ellipsis_line_share: float | None = 0.3
    # "more than 90 % of lines starting with a bullet point"
    max_bullet_line_share: float | None = 0.9
    # "80 % of words in a document contain at least one alphabetic character"
    min_alpha_word_share: float | None = 0.8
    # "at least two of the following English words: the, be, to, of, and, that, have, with"
    min_stop_words: int | None = 2
    stop_words: frozenset[str] = ts.GOPHER_STOP_WORDS
    # The stop-word rule is an English rule: it runs only on documents whose language is in this set (ISO
    # 639-1; "en-GB" counts as "en"), so a document known to be German or Japanese is never dropped by it.
    stop_word_languages: frozenset[str] = frozenset({"en"})
    # Documents of unknown language (WARC and OBELICS input carry none) are tested: OBELICS is an English
    # dataset and Gopher used this very rule as a cheap English check. Set False for multilingual crawls
    # without language identification.
    stop_words_if_language_unknown: bool = True

    # ---- document level: Gopher repetition rules (Rae et al. 2021, table A1)
    max_duplicate_line_share: float | None = 0.30  # duplicate line fraction
    max_duplicate_line_char_share: float | None = 0.20  # duplicate line character fraction
    max_duplicate_paragraph_share: float | None = 0.30  # duplicate paragraph fraction
    max_duplicate_paragraph_char_share: float | None = 0.20  # duplicate paragraph character fraction
    # (n, most): top 2-, 3-, 4-gram character fraction
    max_top_ngram_char_share: tuple[tuple[int, float], ...] = ((2, 0.20), (3, 0.18), (4, 0.16))
    # (n, most): duplicate 5- to 10-gram character fraction
    max_duplicate_ngram_char_share: tuple[tuple[int, float], ...] = (
        (5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))

    def __post_init__(self) -> None:
        shares = ["max_symbol_ratio", "max_ellipsis_line_share", "max_bullet_line_share",
                  "min_alpha_word_share", "max_duplicate_line_share", "max_duplicate_line_char_share",
                  "max_duplicate_paragraph_share", "max_duplicate_paragraph_char_share"]
        for name in shares:
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                raise ValueError(f"QualityConfig.{name} is a share and must lie in [0, 1], found {v!r}")
        for name in ("max_top_ngram_char_share", "max_duplicate_ngram_char_share"):
            for item in getattr(self, name):
                if (not isinstance(item, tuple) or len(item) != 2 or int(item[0]) < 1
                        or not 0 <= item[1] <= 1):
                    raise ValueError(f"QualityConfig.{name} takes (n >= 1, share in [0, 1]) pairs, "
                                     f"found {item!r}")
        for lo, hi in (("min_images", "max_images"), ("min_words", "max_words"),
                       ("min_mean_word_length", "max_mean_word_length")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and a < 0:
                raise ValueError(f"QualityConfig.{lo} must be at least 0, found {a!r}")
            if a is not None and b is not None and a > b:
                raise ValueError(f"QualityConfig.{lo} ({a!r}) is above {hi} ({b!r}): no document could pass; "
                                 f"raise {hi} or lower {lo}")
        if self.boilerplate_max_words < 1:
            raise ValueError(f"QualityConfig.boilerplate_max_words must be at least 1, found "
                             f"{self.boilerplate_max_words!r}")
        self.stop_word_languages = frozenset(s.lower() for s in self.stop_word_languages)
        self.stop_words = frozenset(w.casefold() for w in self.stop_words)


def text_only_config(**overrides) -> QualityConfig:
    """Preset that keeps documents without images (everything else as the defaults)."""
    return QualityConfig(min_images=0, **overrides)


# ---------------------------------------------------------------- node level


def node_verdict(text: str, config: QualityConfig) -> str | None:
    """The reason one text node fails the per-node rules (boilerplate, then length), or None to keep it.

    Repetition depends on the other nodes of the document: filter_nodes checks it.
    """
    if config.drop_boilerplate_nodes:
        ls = ts.lines(text)
        if ls and all(ts.is_boilerplate_line(s, config.boilerplate_max_words) for s in ls):
            return BOILERPLATE_LINE
    if config.min_node_words is not None and ts.word_count(text) < config.min_node_words:
        return TEXT_TOO_SHORT
    if config.min_node_chars is not None and len(text.strip()) < config.min_node_chars:
        return TEXT_TOO_SHORT
    return None


def filter_nodes(doc: Document, config: QualityConfig) -> Document:
    """A copy of `doc` whose failing text nodes are marked dropped with a reason from NODE_REASONS.

    Image nodes and nodes dropped before are left as they are; a node repeats only a node that is kept.
    A node is judged whole, never split: an OBELICS row can hold several paragraphs in one text node, and
    the funnel counts nodes, so a node with one cookie line among prose lines is kept (boilerplate means
    every line is boilerplate) and the document-level line rules see the rest.
    """
    seen: set[str] = set()
    nodes = []
    for node in doc.nodes:
        if node.is_text and node.kept:
            text = node.text or ""
            reason = node_verdict(text, config)
            if reason is None and config.drop_repeated_nodes:
                key = ts.normalize_text(text)
                if key in seen:
                    reason = TEXT_REPEATED
                seen.add(key)
            if reason is not None:
                node = node.dropped(reason)
        nodes.append(node)
    return replace(doc, nodes=nodes)


# ---------------------------------------------------------------- document level


def _language_tested(language: str | None, config: QualityConfig) -> bool:
    if not language:
        return config.stop_words_if_language_unknown
    return language.lower().replace("_", "-").split("-")[0] in config.stop_word_languages


def _above(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and value > limit


def _below(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and value < limit


def image_count_failure(doc: Document, config: QualityConfig) -> str | None:
    """"too_few_images" or "too_many_images" when the document's kept images are outside the bounds, else
    None. Applied at ingest and again after the image stages changed which images a document keeps."""
    images = sum(1 for n in doc.nodes if n.is_image and n.kept)
    if images < config.min_images:
        return "too_few_images"
    if _above(images, config.max_images):
        return "too_many_images"
    return None


def _failures(doc: Document, config: QualityConfig) -> Iterator[str]:
    """The reasons of the failing rules, lazily, in the order of DOCUMENT_REASONS."""
    image_reason = image_count_failure(doc, config)
    if image_reason:
        yield image_reason

    # doc.text(), analysed from its paragraphs' analyses (filter_nodes made them)
    text = ts.join_paragraphs([n.text for n in doc.nodes if n.is_text and n.kept and n.text])
    n_words = ts.word_count(text)
    if _below(n_words, config.min_words):
        yield "too_few_words"
    if _above(n_words, config.max_words):
        yield "too_many_words"
    if config.min_mean_word_length is not None or config.max_mean_word_length is not None:
        mwl = ts.mean_word_length(text)
        if _below(mwl, config.min_mean_word_length) or _above(mwl, config.max_mean_word_length):
            yield "mean_word_length"
    if _above(ts.symbol_to_word_ratio(text), config.max_symbol_ratio):
        yield "symbol_ratio"
    if _above(ts.ellipsis_line_share(text), config.max_ellipsis_line_share):
        yield "ellipsis_lines"
    if _above(ts.bullet_line_share(text), config.max_bullet_line_share):
        yield "bullet_lines"
    if _below(ts.alpha_word_share(text), config.min_alpha_word_share):
        yield "alpha_words"
    if (config.min_stop_words is not None and _language_tested(doc.language, config)
            and ts.stop_word_count(text, config.stop_words) < config.min_stop_words):
        yield "stop_words"

    if (_above(ts.duplicate_line_share(text), config.max_duplicate_line_share)
            or _above(ts.duplicate_line_char_share(text), config.max_duplicate_line_char_share)):
        yield "duplicate_lines"
    if (_above(ts.duplicate_paragraph_share(text), config.max_duplicate_paragraph_share)
            or _above(ts.duplicate_paragraph_char_share(text), config.max_duplicate_paragraph_char_share)):
        yield "duplicate_paragraphs"
    if any(ts.top_ngram_char_share(text, n) > most for n, most in config.max_top_ngram_char_share):
        yield "top_ngram"
    if _duplicate_ngrams(text, config.max_duplicate_ngram_char_share):
        yield "duplicate_ngrams"


def _duplicate_ngrams(text: str, limits: tuple[tuple[int, float], ...]) -> bool:
    """Whether a duplicate n-gram share is above its limit. The words covered by repeated n-grams are among
    those covered by repeated m-grams for every m < n (each m-gram inside a repeated n-gram repeats too), so
    when the smallest n's share is within every limit, no larger n can be above its own: one count instead
    of six for most documents."""
    if not limits:
        return False
    smallest = min(n for n, _ in limits)
    share = ts.duplicate_ngram_char_share(text, smallest)
    if share <= min(most for _, most in limits):
        return False
    return any((share if n == smallest else ts.duplicate_ngram_char_share(text, n)) > most
               for n, most in limits)


def document_verdict(doc: Document, config: QualityConfig) -> str | None:
    """None to keep the document, else the first failing rule's reason, in the order of DOCUMENT_REASONS.

    Measured on kept nodes only: the text of the kept text nodes (joined by blank lines) and the number of
    kept image nodes. Every boundary is inclusive: a value equal to a threshold passes. Rules after the
    first failure are not computed.
    """
    return next(_failures(doc, config), None)


def failing_rules(doc: Document, config: QualityConfig) -> list[str]:
    """Every rule the document fails, in the order of DOCUMENT_REASONS: for studying thresholds on a sample
    (each rule's drop count on its own), where document_verdict reports only the first."""
    return list(_failures(doc, config))


def apply(doc: Document, config: QualityConfig) -> Document:
    """filter_nodes, then document_verdict: the document marked dropped with the reason, or kept.

    A document dropped before (by an earlier stage) is returned unchanged, its reason kept.
    """
    if not doc.kept:
        return doc
    doc = filter_nodes(doc, config)
    reason = document_verdict(doc, config)
    if reason is None:
        return doc
    log.debug("document %s (%s) dropped: %s", doc.doc_id, doc.url, reason)
    return doc.dropped(reason)
