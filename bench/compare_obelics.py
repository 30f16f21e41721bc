"""Compare interleaf's HTML extraction with reference extractions of the same pages, and time it.

1. OBELICS: tests/data/obelics/*.obelics.jsonl hold the rows that the OBELICS project's own extraction
   (huggingface/OBELICS, commit 0fca7ba) produced from the WARCs in tests/data/warc. For each fixture:
   documents, text nodes, words and image nodes of both, and the share of OBELICS's image URLs that
   interleaf also extracts, with every missed URL explained by interleaf's drop reason.
2. Readability: tests/data/readability/<page>/expected.html is Mozilla Readability's golden main content.
   Word precision/recall against it and the share of its (non-data:) images extracted.
3. Throughput: pages per CPU second of extract() over all those pages, and of the parsers it could have
   used (best of --repeat runs).

Usage: python bench/compare_obelics.py [--write docs/extraction.md] [--repeat N]
With --write, the tables replace the text between the BEGIN/END markers of that file.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

from fastwarc.warc import ArchiveIterator, WarcRecordType
from selectolax.lexbor import LexborHTMLParser

from interleaf.filters.charset import decode_html
from interleaf.filters.html import extract
from interleaf.filters.html_images import parse_srcset, resolve_url

log = logging.getLogger("compare_obelics")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
# fixture WARC -> OBELICS rows extracted from it
FIXTURES = {
    "wikipedia-mona-lisa-with-images.warc.gz": "wikipedia-mona-lisa.obelics.jsonl",
    "commoncrawl-record.warc.gz": "cc.obelics.jsonl",
    "dolma-sample-0000.warc.gz": "dolma-sample-0000.obelics.jsonl",
    "IAH-urls-wget.warc.gz": "IAH-urls-wget.obelics.jsonl",
    "issue-493.warc": "issue-493.obelics.jsonl",
}
# The readability test pages were served from this URL in mozilla/readability's test harness.
READABILITY_URL = "http://fakehost/test/page.html"
_WORD = re.compile(r"\w+")


@dataclass
class Page:
    url: str
    offset: int
    html: str


def html_pages(warc: Path) -> list[Page]:
    """HTML 200 responses of a WARC, transfer and content encodings removed, decoded to text."""
    pages = []
    with warc.open("rb") as stream:
        for record in ArchiveIterator(stream, record_types=WarcRecordType.response, auto_decode="all"):
            if record.http_headers is None or record.http_headers.status_code != 200:
                continue
            content_type = record.http_headers.get("Content-Type") or ""
            if "html" not in content_type.lower():
                continue
            url = (record.headers.get("WARC-Target-URI") or "").strip().removeprefix("<").removesuffix(">")
            pages.append(Page(url=url, offset=record.stream_pos,
                              html=decode_html(record.reader.read(), content_type)))
    return pages


def words(text: str) -> int:
    return len(_WORD.findall(text))


@dataclass
class FixtureResult:
    name: str
    documents: tuple[int, int] = (0, 0)  # OBELICS, interleaf
    text_nodes: tuple[int, int] = (0, 0)
    words: tuple[int, int] = (0, 0)
    image_nodes: tuple[int, int] = (0, 0)
    obelics_urls: int = 0  # distinct image URLs per document, summed over documents
    shared_urls: int = 0  # of those, extracted by interleaf too
    shared_after_urljoin: int = 0  # counting OBELICS URLs re-resolved from its unformatted_src with urljoin
    missed: Counter = field(default_factory=Counter)  # missed OBELICS URL by interleaf's reason
    # missed URLs that interleaf leaves out by design (NOT_CONTENT: icons, pixels, spacers, src="null"),
    # listed so that a reader can check that they are
    not_content: list[str] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.shared_urls / self.obelics_urls if self.obelics_urls else 1.0

    @property
    def share_urljoin(self) -> float:
        return self.shared_after_urljoin / self.obelics_urls if self.obelics_urls else 1.0

    @property
    def content_urls(self) -> int:
        return self.obelics_urls - len(self.not_content)

    @property
    def share_content(self) -> float:
        """Issue 17 item 4's recall: OBELICS's images that are content (not icons, logos, tracking pixels),
        found by interleaf under the same URL or the one OBELICS's src resolves to."""
        return self.shared_after_urljoin / self.content_urls if self.content_urls else 1.0


# interleaf's reasons for leaving out what is no picture: a declared size or URL of an icon, a pixel or
# spacer, or an src such as "null"; the recall of content images does not count these against it
NOT_CONTENT = frozenset(("icon", "tracking_pixel", "spacer", "bad_url"))


def compare_fixture(warc_name: str, obelics_name: str) -> FixtureResult:
    rows = [json.loads(line) for line in (DATA / "obelics" / obelics_name).read_text().splitlines() if line]
    by_offset = {json.loads(r["general_metadata"])["warc_record_offset"]: r for r in rows}
    pages = html_pages(DATA / "warc" / warc_name)
    res = FixtureResult(warc_name)
    o_docs = o_text = o_words = o_images = i_text = i_words = i_images = 0
    for page in pages:
        ex = extract(page.html, page.url)
        i_text += sum(n.is_text for n in ex.nodes)
        i_words += sum(words(n.text) for n in ex.nodes if n.is_text)
        i_images += sum(n.is_image for n in ex.nodes)
        row = by_offset.get(page.offset)
        if row is None:
            log.warning("%s: no OBELICS row for the record at offset %d", warc_name, page.offset)
            continue
        o_docs += 1
        texts = [t for t in row["texts"] if t]
        o_text += len(texts)
        o_words += sum(words(t) for t in texts)
        o_images += sum(1 for i in row["images"] if i)
        ours = {n.image_url for n in ex.nodes if n.is_image}
        reasons = {n.image_url: n.reason for n in ex.dropped_images}
        metadata = json.loads(row["metadata"])
        theirs = {}
        for image, md in zip(row["images"], metadata):
            if image:
                unformatted = (md or {}).get("unformatted_src") or image
                theirs[image] = resolve_url(page.url, unformatted) or urljoin(page.url, unformatted)
        for url, rejoined in theirs.items():
            res.obelics_urls += 1
            res.shared_urls += url in ours
            res.shared_after_urljoin += url in ours or rejoined in ours
            if url not in ours:
                reason = reasons.get(url) or reasons.get(rejoined)
                res.missed[reason or ("resolved differently" if rejoined in ours
                                      else "other candidate chosen")] += 1
                if reason in NOT_CONTENT:
                    res.not_content.append(f"{reason}: {url}")
    res.documents = (o_docs, len(pages))
    res.text_nodes, res.words, res.image_nodes = (o_text, i_text), (o_words, i_words), (o_images, i_images)
    return res


def _extractors() -> dict[str, object]:
    """name -> f(html, url) -> (text, image URLs): interleaf, and for comparison the extractors that are
    installed (resiliparse's main-content text is a dependency; trafilatura is not, measured when present)."""
    def interleaf(html: str, url: str) -> tuple[str, set[str]]:
        ex = extract(html, url)
        return " ".join(n.text for n in ex.nodes if n.is_text), {n.image_url for n in ex.nodes if n.is_image}

    found = {"interleaf": interleaf}
    try:
        from resiliparse.extract.html2text import extract_plain_text
        found["resiliparse main_content"] = lambda h, u: (extract_plain_text(h, main_content=True), set())
    except ImportError:
        pass
    try:
        import trafilatura

        def traf(html: str, url: str) -> tuple[str, set[str]]:
            text = trafilatura.extract(html, url=url, include_images=True) or ""
            return text, set(re.findall(r"!\[[^\]]*\]\(([^)\s]+)", text))  # markdown images in its text
        found["trafilatura"] = traf
    except ImportError:
        pass
    return found


def readability_quality(directory: Path) -> dict[str, list[tuple[str, float, float, int, int]]]:
    """extractor -> [(page, word precision, word recall, expected images found, expected images)]."""
    out: dict[str, list] = {}
    pages = sorted(p for p in directory.iterdir() if (p / "expected.html").exists())
    for name, fn in _extractors().items():
        for page in pages:
            expected = LexborHTMLParser((page / "expected.html").read_text(encoding="utf-8"))
            text, ours = fn((page / "source.html").read_text(encoding="utf-8"), READABILITY_URL)
            got = Counter(w.lower() for w in _WORD.findall(text))
            want = Counter(w.lower() for w in _WORD.findall(expected.body.text(separator=" ")))
            common = sum((got & want).values())
            found = total = 0
            for img in expected.css("img"):
                candidates = expected_image_urls(img.attributes, READABILITY_URL)
                if candidates:  # data: URIs are dropped by design
                    total += 1
                    found += bool(candidates & ours)
            out.setdefault(name, []).append((page.name, common / max(1, sum(got.values())),
                                             common / max(1, sum(want.values())), found, total))
    return out


def expected_image_urls(attrs: dict, base: str) -> set[str]:
    """Every URL an expected <img> may be extracted as: src, data-src and all srcset candidates, resolved.
    Readability keeps src and srcset side by side; interleaf picks one (a srcset candidate when there is
    one), so any of them counts as the same image."""
    urls = [attrs.get("src"), attrs.get("data-src")]
    for name in ("srcset", "data-srcset"):
        if attrs.get(name):
            urls += [u for u, _, _ in parse_srcset(attrs[name])]
    urls = [u for u in urls if u and not u.strip().lower().startswith("data:")]
    return {r for u in urls if (r := resolve_url(base, u))}


def throughput(repeat: int) -> list[tuple[str, float]]:
    """Pages per CPU second of extract() and of bare parse + walk with each parser, over all fixture pages."""
    pages = [(p.html, p.url) for w in FIXTURES for p in html_pages(DATA / "warc" / w)]
    pages += [((d / "source.html").read_text(encoding="utf-8"), READABILITY_URL)
              for d in sorted((DATA / "readability").iterdir()) if d.is_dir()]
    runs = [("interleaf extract() (selectolax/lexbor)", lambda h, u: extract(h, u)),
            ("selectolax lexbor: parse only", lambda h, u: LexborHTMLParser(h)),
            ("selectolax lexbor: parse + walk", lambda h, u: _walk_selectolax(h))]
    try:
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree
        runs += [("resiliparse: parse only", lambda h, u: HTMLTree.parse(h)),
                 ("resiliparse: parse + walk", lambda h, u: _walk_resiliparse(h)),
                 ("resiliparse: extract_plain_text(main_content) (text only)",
                  lambda h, u: extract_plain_text(h, main_content=True))]
    except ImportError:
        pass
    try:  # not a dependency: measured when installed
        import trafilatura
        runs.append(("trafilatura.extract(include_images) (lxml)",
                     lambda h, u: trafilatura.extract(h, url=u, include_images=True)))
    except ImportError:
        pass
    out = []
    for name, fn in runs:
        best = float("inf")
        for _ in range(repeat):
            # CPU time of this process: on a shared machine wall time mostly measures the neighbours
            start = time.process_time()
            for html, url in pages:
                fn(html, url)
            best = min(best, time.process_time() - start)
        out.append((f"{name}", len(pages) / best))
    return out


def _walk_selectolax(html: str) -> int:
    """Visit every node reading tag, attributes and text: the access pattern of extract()."""
    n, stack = 0, [LexborHTMLParser(html).root]
    while stack:
        node = stack.pop()
        child = node.child
        while child is not None:
            n += 1
            if child.tag == "-text":
                _ = child.text_content
            else:
                _ = child.attributes
                stack.append(child)
            child = child.next
    return n


def _walk_resiliparse(html: str) -> int:
    from resiliparse.parse.html import HTMLTree, NodeType
    n, stack = 0, [HTMLTree.parse(html).document]
    while stack:
        node = stack.pop()
        child = node.first_child
        while child is not None:
            n += 1
            if child.type == NodeType.TEXT:
                _ = child.text
            elif child.type == NodeType.ELEMENT:
                _ = child.attrs
                stack.append(child)
            child = child.next
    return n


def render(results: list[FixtureResult], quality, speed) -> str:
    header = ("| fixture | documents O / i | text nodes O / i | words O / i | image nodes O / i "
              "| OBELICS image URLs | also in interleaf | share | share, OBELICS URLs re-joined "
              "| share of content images (re-joined) | missed, by interleaf reason |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        missed = ", ".join(f"{k} {v}" for k, v in r.missed.most_common()) or "-"
        lines.append(f"| {r.name} | {r.documents[0]} / {r.documents[1]} "
                     f"| {r.text_nodes[0]} / {r.text_nodes[1]} | {r.words[0]} / {r.words[1]} "
                     f"| {r.image_nodes[0]} / {r.image_nodes[1]} | {r.obelics_urls} | {r.shared_urls} "
                     f"| {r.share:.0%} | {r.share_urljoin:.0%} | {r.share_content:.0%} | {missed} |")
    total = FixtureResult("**all**", obelics_urls=sum(r.obelics_urls for r in results),
                          shared_urls=sum(r.shared_urls for r in results),
                          shared_after_urljoin=sum(r.shared_after_urljoin for r in results),
                          missed=sum((r.missed for r in results), Counter()),
                          not_content=[u for r in results for u in r.not_content])
    lines.append(f"| **all** | | | | | {total.obelics_urls} | {total.shared_urls} | {total.share:.0%} "
                 f"| {total.share_urljoin:.0%} | {total.share_content:.1%} "
                 f"| {', '.join(f'{k} {v}' for k, v in total.missed.most_common()) or '-'} |")
    lines += ["", "Left out as no content (not counted in the share of content images): "
              + "; ".join(f"`{u}`" for u in sorted(set(total.not_content))) + "."]
    names = list(quality)
    lines += ["", "| readability page | " + " | ".join(f"{n}: word P / R, images" for n in names) + " |",
              "|---" * (len(names) + 1) + "|"]
    rows = zip(*(quality[n] for n in names))
    for row in rows:
        cells = [f"{p:.2f} / {rc:.2f}, {found} of {total}" for _, p, rc, found, total in row]
        lines.append(f"| {row[0][0]} | " + " | ".join(cells) + " |")
    means = [quality[n] for n in names]
    lines.append("| **mean, images total** | " + " | ".join(
        f"{sum(r[1] for r in q) / len(q):.2f} / {sum(r[2] for r in q) / len(q):.2f}, "
        f"{sum(r[3] for r in q)} of {sum(r[4] for r in q)}" for q in means) + " |")
    if speed:
        lines += ["", "| extraction or parser | pages per CPU second |", "|---|---|"]
        lines += [f"| {name} | {rate:.0f} |" for name, rate in speed]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="markdown file whose BEGIN/END block receives the tables")
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats (best of); 0 skips timing")
    parser.add_argument("--readability", type=Path, default=DATA / "readability",
                        help="folder of readability test pages (<page>/source.html, expected.html)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = [compare_fixture(w, o) for w, o in FIXTURES.items()]
    table = render(results, readability_quality(args.readability),
                   throughput(args.repeat) if args.repeat else [])
    print(table)
    if args.write:
        text = args.write.read_text(encoding="utf-8")
        begin, end = "<!-- BEGIN compare_obelics -->", "<!-- END compare_obelics -->"
        if begin not in text or end not in text:
            print(f"{args.write} has no {begin} ... {end} block; add one where the tables go",
                  file=sys.stderr)
            return 2
        head, rest = text.split(begin, 1)
        args.write.write_text(f"{head}{begin}\n{table}\n{end}{rest.split(end, 1)[1]}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
