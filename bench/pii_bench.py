"""Personal-data benchmark (issue 16): what filters/pii.py replaces on real pages, whether any replacement
touches a date, time, year range, version, price, amount or coordinate, and its speed. Writes the "pii"
section of bench/RESULTS.md.

    .venv/bin/python bench/pii_bench.py [PAGES_DIR]

PAGES_DIR holds gzipped HTML pages (default tests/data/pages, 18 pages; the whole article-extraction
benchmark, 181 pages, is tests/data/extraction/html). Each page's visible text (scripts and styles removed) is searched. The strings that must stay are
found by patterns of their own (tests/filters/test_pii.py NEGATIVES), independent of filters/pii.py; a
"touched" one is one that overlaps a phone or IP replacement. Every replacement was also reviewed by hand on
the 181 pages (2026-12-07): none was anything but a real e-mail address, phone number or @handle.
Speed: CPU seconds of `redact` over the page texts, one thread.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import re
import sys
import time
from pathlib import Path

from results import table, write_section  # bench/ is sys.path[0] when run as a script
from selectolax.lexbor import LexborHTMLParser

from interleaf.filters.pii import IP, KINDS, PHONE, find, redact

ROOT = Path(__file__).resolve().parent.parent


def negatives() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("test_pii", ROOT / "tests" / "filters" / "test_pii.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.NEGATIVES


def page_text(path: Path) -> str:
    tree = LexborHTMLParser(gzip.decompress(path.read_bytes()).decode("utf-8", "replace"))
    for node in tree.css("script, style, noscript"):
        node.decompose()
    return tree.body.text(separator="\n") if tree.body else ""


def main() -> None:
    pages_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests" / "data" / "pages"
    texts = [page_text(p) for p in sorted(pages_dir.glob("*.html.gz"))]
    patterns = negatives()
    found = {kind: 0 for kind in KINDS}
    present = {kind: 0 for kind in patterns}
    touched = {kind: 0 for kind in patterns}
    for text in texts:
        spans = find(text)
        for _, _, kind in spans:
            found[kind] += 1
        for kind, pattern in patterns.items():
            for m in re.finditer(pattern, text):
                present[kind] += 1
                touched[kind] += any(k in (PHONE, IP) and s < m.end() and m.start() < e for s, e, k in spans)
    times = []
    for _ in range(3):
        start = time.process_time()
        for text in texts:
            redact(text)
        times.append(time.process_time() - start)
    best = min(times)
    chars = sum(map(len, texts))
    where = (os.path.relpath(pages_dir, ROOT) if pages_dir.is_relative_to(ROOT)
             else f"{pages_dir.parent.name}/{pages_dir.name}")
    body = "\n\n".join([
        f"{len(texts)} real pages ({where}), {chars:,} characters of visible text.",
        table(["kind", "replaced"], [[k, found[k]] for k in KINDS]),
        "Strings that must stay, found by their own patterns, and how many a replacement touched:",
        table(["kind", "on the pages", "touched"], [[k, present[k], touched[k]] for k in patterns]),
        f"Speed: {len(texts) / best:,.0f} pages/s, {chars / best / 1e6:.1f} M characters/s of text on one "
        "core (best of 3).",
    ])
    print(body)
    write_section("pii", "Personal data: replacements on real pages, and what they leave alone", body)


if __name__ == "__main__":
    main()
