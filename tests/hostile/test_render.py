"""Hostile URLs and text in what interleaf renders: pages whose URL is javascript:, data: or vbscript: (in
the spellings a browser still runs), markup in text and alt text, an SVG in the image store. Through the
command line: `interleaf run`, then `interleaf inspect --html` and `interleaf report`; every page written is
parsed and must be inert (issue 13 item 1)."""

import json
from html.parser import HTMLParser

import pytest

from interleaf.cli import main
from interleaf.htmlsafe import link, safe_url
from interleaf.schemas.image import ImageRecord, images_to_table
from interleaf.shards import write_shards

HOSTILE_URLS = [
    "javascript:alert(document.cookie)//",
    " JaVaScRiPt:alert(1)",
    "java\tscript:alert(2)",
    "\x01javascript:alert(3)",
    "data:text/html,<script>alert(4)</script>",
    "vbscript:msgbox(5)",
    "jAvAsCrIpT&colon;alert(6)",
    "//evil.example/no-scheme",
    'https://ok.example/page?q="><script>alert(7)</script>',
]
PROSE = ("The lighthouse keeper wrote down the weather every evening, and the notebooks now fill a whole "
         "shelf "
         "of the town library, where anyone may read them on a rainy afternoon.")


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def assert_inert(page: str) -> int:
    """Checks one written page; returns how many links it has."""
    parser = _Tags()
    parser.feed(page)
    links = 0
    for tag, attrs in parser.tags:
        assert tag not in ("script", "iframe", "object", "embed", "base", "form"), tag
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if tag == "a":
            href = attrs.get("href") or ""
            assert href.startswith(("http://", "https://", "#")), href
            links += 1
        if tag == "img":
            assert attrs["src"].startswith(("data:image/jpeg;", "data:image/png;", "data:image/gif;",
                                            "data:image/webp;")), attrs["src"][:40]
    csp = [a for t, a in parser.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "script-src 'none'" in csp[0]["content"]
    return links


@pytest.mark.parametrize("url", HOSTILE_URLS[:-1])
def test_a_link_is_only_ever_http(url):
    assert safe_url(url) is None and "<a " not in link(url)


def test_an_http_link_is_escaped():
    html = link(HOSTILE_URLS[-1])
    assert html.startswith('<a href="https://ok.example/page?q=&quot;&gt;&lt;script&gt;')
    assert "<script" not in html


def test_run_inspect_and_report_write_inert_pages(tmp_path):
    rows = []
    for i, url in enumerate(HOSTILE_URLS):
        texts = [f"{PROSE} Entry {i}. <script>alert('t{i}')</script>", None]
        images = [None, "javascript:alert('img')"]
        metadata = [None, {"alt_text": f'"><img src=x onerror=alert({i})>'}]
        if i == 0:  # too short for the quality rules: rejected, so the report lists its URL as an example
            texts = ["<b onmouseover=alert(0)>short</b>", None]
        rows.append({"texts": texts, "images": images, "metadata": json.dumps(metadata),
                     "general_metadata": json.dumps({"url": url})})
    (tmp_path / "hostile.obelics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "run.toml").write_text("[ingest.quality]\nmin_words = 10\nmin_images = 0\n")
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "hostile.obelics.jsonl"), "--output", str(out),
                 "--config", str(tmp_path / "run.toml"), "--stages", "ingest"]) == 0

    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(8)"><script>alert(9)</script></svg>'
    write_shards(str(out / "images"), [images_to_table([
        ImageRecord(sha256="a" * 64, urls=["javascript:alert(10)"], format="svg+xml", data=svg,
                    source="warc"),
        ImageRecord(sha256="b" * 64, urls=["http://x/"], format='png" onerror="alert(11)', data=b"\x89PNG..",
                    source="warc")])])

    pages = {}
    for name, args in [("documents", [str(out / "documents")]), ("rejected", [str(out / "rejected")]),
                       ("images", [str(out / "images")])]:
        page = tmp_path / f"{name}.html"
        assert main(["inspect", *args, "--sample", "20", "--html", str(page)]) == 0
        pages[name] = page.read_text()
    assert main(["report", str(out), "--out", str(tmp_path / "report.html")]) == 0
    pages["report"] = (tmp_path / "report.html").read_text()

    links = {name: assert_inert(page) for name, page in pages.items()}
    assert links["documents"] == 1  # of the pages kept, only the https one is a link
    shown = pages["documents"] + pages["report"]
    for url in ("JaVaScRiPt:alert(1)", "data:text/html,&lt;script&gt;alert(4)&lt;/script&gt;", "vbscript"):
        assert url in shown or url in pages["rejected"]  # shown as text, not lost
