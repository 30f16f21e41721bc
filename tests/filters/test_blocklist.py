"""Blocked domains and URLs and banned URL words (filters/blocklist.py): the real UT1 lists datatrove ships,
a user's file, and a run where a blocked page is rejected at ingest and blocked images are never requested,
redirect targets included."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from interleaf.cli import main
from interleaf.filters.blocklist import (
    BANNED_URL_WORD,
    BLOCKED_DOMAIN,
    BLOCKED_URL,
    UT1_ARCHIVE,
    BlocklistConfig,
    assets_dir,
    load_blocklist,
)
from interleaf.schemas.document import documents_from_table
from interleaf.shards import open_shards

DATA = Path(__file__).parent.parent / "data"


@pytest.fixture(scope="module")
def ut1():
    return load_blocklist(BlocklistConfig())


@pytest.fixture(scope="module")
def ut1_entries() -> dict[str, list[str]]:
    """Every 50,000th domain of the real list, and its first URLs, read straight from the archive."""
    found = {"domains": [], "urls": []}
    with tarfile.open(os.path.join(assets_dir(), UT1_ARCHIVE), "r:gz") as tar:
        for member in tar:
            lines = tar.extractfile(member).read().decode("utf-8", "replace").splitlines()
            found[member.name] = lines[::50_000] if member.name == "domains" else lines[:20]
    return found


def test_listed_domains_their_subdomains_and_listed_urls_are_blocked(ut1, ut1_entries):
    assert len(ut1_entries["domains"]) >= 90
    for domain in ut1_entries["domains"]:
        assert ut1.match(f"https://{domain}/any/page.html")[0] == BLOCKED_DOMAIN, domain
        assert ut1.match(f"http://media.{domain.upper()}./x.jpg") == (BLOCKED_DOMAIN, domain)
    for entry in ut1_entries["urls"]:
        reason, _ = ut1.match(f"https://{entry}")
        assert reason in (BLOCKED_URL, BLOCKED_DOMAIN, BANNED_URL_WORD), entry
    assert ut1.match("http://example.xxx/")[0] == BLOCKED_DOMAIN  # UT1 lists whole adult TLDs


def test_the_fixture_crawls_are_not_blocked(ut1):
    # every page and image URL of the real crawls in tests/data (Wikipedia, a 2008 archive crawl, news
    # and blog pages, Common Crawl): no false positive
    urls = []
    for site in ("netzliteratur-2008", "wikipedia-mona-lisa-2013"):
        with open(DATA / "sites" / site / "manifest.jsonl") as f:
            for line in f:
                row = json.loads(line)
                urls.append(row["url"])
                urls += [ref["resolved"] for ref in row.get("img_refs", []) if ref.get("resolved")]
    assert len(urls) >= 50
    assert [u for u in urls if ut1.match(u)] == []
    for url in ["https://en.wikipedia.org/wiki/Essex", "https://www.bbc.co.uk/news/uk-england-essex-50212345",
                "https://example.com/classic-cars/analysis", "https://www.scunthorpetelegraph.co.uk/news",
                "https://www.nytimes.com/2019/11/20/us/politics/impeachment-hearing.html",
                "https://upload.wikimedia.org/wikipedia/commons/e/ec/Mona_Lisa.jpg"]:
        assert ut1.match(url) is None, url


def test_banned_words_in_urls(ut1):
    assert ut1.match("https://example.com/free-porn-videos")[0] == BANNED_URL_WORD  # a banned word
    assert ut1.match("https://example.com/nude-escort/list")[0] == BANNED_URL_WORD  # two soft words
    assert ut1.match("https://example.com/escort-ship.jpg") is None  # one soft word is not enough
    assert ut1.match("https://example.com/TwoGirlsOneCup")[0] == BANNED_URL_WORD  # a subword, any case
    words_off = load_blocklist(BlocklistConfig(ut1=False, banned_url_words=False))
    assert words_off is None


def test_a_users_file(tmp_path):
    listing = tmp_path / "blocked.txt"
    listing.write_text("# our own list\nbad.example  # the whole site\nwww.mixed.example\n"
                       "https://good.example/private/page.html\nxn--bcher-kva.example\n", encoding="utf-8")
    lists = load_blocklist(BlocklistConfig(ut1=False, banned_url_words=False, files=(str(listing),)))
    assert lists.match("https://bad.example/")[0] == BLOCKED_DOMAIN
    assert lists.match("http://cdn.bad.example:8080/a.png")[0] == BLOCKED_DOMAIN
    assert lists.match("https://mixed.example/")[0] == BLOCKED_DOMAIN  # "www." is the site itself
    assert lists.match("http://user@www.good.example/private/page.html#top") == (
        BLOCKED_URL, "good.example/private/page.html")
    assert lists.match("https://good.example/private/other.html") is None
    assert lists.match("https://bücher.example/")[0] == BLOCKED_DOMAIN  # IDN host, listed in punycode
    assert lists.match("https://notbad.example/") is None and lists.match("not a url") is None


def test_an_address_is_blocked_in_every_form_a_browser_requests_it(tmp_path):
    """Red-team finding: with 127.0.0.2 listed, its decimal, short, hex, octal and IPv4-mapped IPv6 forms were
    fetched. WHATWG's URL parser reads them all as 127.0.0.2."""
    listing = tmp_path / "blocked.txt"
    listing.write_text("127.0.0.2\n1.0.218.19\n", encoding="utf-8")
    lists = load_blocklist(BlocklistConfig(ut1=False, banned_url_words=False, files=(str(listing),)))
    for host in ("127.0.0.2", "2130706434", "127.2", "0x7f.0.0.2", "0177.0.0.02", "0x7F000002",
                 "[::ffff:127.0.0.2]", "[::FFFF:7f00:2]", "127.0.0.2.", "u:p@127.0.0.2:8080", "16833043",
                 "127.0.0.2\\@8.8.8.8", "１２７.0.0.2"):  # a backslash ends the host; fullwidth digits fold
        assert lists.match(f"http://{host}/img/a.png") is not None, host
    for host in ("127.0.0.3", "2130706435", "[::1]", "0.218.19", "218.19"):  # other addresses, no parents
        assert lists.match(f"http://{host}/img/a.png") is None, host


def test_entries_are_read_as_the_url_standard_reads_hosts(tmp_path):
    """Red-team findings: entries were mapped by IDNA 2003 ("faß" as "fass") while URLs by UTS 46; a bare
    IPv6 entry lost its last group; a host of 200,000 labels took 217 s to match."""
    listing = tmp_path / "blocked.txt"
    listing.write_text("faß.example\nς.example\n2001:db8::1\n[2001:db8:0:0::2]\n", encoding="utf-8")
    lists = load_blocklist(BlocklistConfig(ut1=False, banned_url_words=False, files=(str(listing),)))
    for url in ("http://faß.example/a.png", "http://xn--fa-hia.example/a.png", "http://ς.example/",
                "http://[2001:db8::1]/a.png", "http://[2001:db8::2]/", "http://[2001:DB8:0::1]:8080/"):
        assert lists.match(url) is not None, url
    assert lists.match("http://fass.example/a.png") is None  # another name under UTS 46
    # a fifth red-team pass: a bracketed IPv6 entry with a port never matched; "www.com" blocked all of .com;
    # a query without a path made a URL entry a whole-domain one
    spelled = tmp_path / "spelled.txt"  # (lists are cached per configuration: a file of its own)
    spelled.write_text("[::1]:8080\nuser@[2001:db8::5]:81\nwww.com\nsite.example?x=1\n", encoding="utf-8")
    other = load_blocklist(BlocklistConfig(ut1=False, banned_url_words=False, files=(str(spelled),)))
    for url in ("http://[::1]:8080/x", "http://[2001:db8::5]/", "http://www.com/", "http://site.example/?x=1"):
        assert other.match(url) is not None, url
    for url in ("http://anything.com/", "http://site.example/", "http://site.example/?x=2"):
        assert other.match(url) is None, url
    deep = "a." * 200_000 + "xn--fa-hia.example"
    started = time.monotonic()
    assert lists.match(f"http://{deep}/a.png") is not None
    assert lists.match("http://x.example/" + "a/" * 2_000_000) is None
    assert time.monotonic() - started < 10  # linear: quadratic was minutes


def test_a_listed_url_blocks_every_url_under_it_in_any_spelling(tmp_path):
    listing = tmp_path / "blocked.txt"
    listing.write_text("bad.example/private\nshop.example/item.php?id=7\n", encoding="utf-8")
    lists = load_blocklist(BlocklistConfig(ut1=False, banned_url_words=False, files=(str(listing),)))
    for url in ("http://bad.example/private", "http://bad.example/private/page.html?ref=1",
                "http://bad.example/private/page2", "http://BAD.example/Private/x", "http://bad.example//private/x",
                "http://bad.example/%70rivate/x", "http://bad.example/private;a/x",
                "https://www.bad.example/private/", "http://shop.example/item.php?id=7",
                # read as a browser reads them (WHATWG): a backslash is a slash, dot segments resolve
                "http://bad.example\\@good.example/../private/x", "http://bad.example\\private\\x",
                "http://bad.example/public/../private/x", "http://bad.example/public/%2e%2e/private/x",
                "http:bad.example/private", "http://ＢＡＤ.example/private"):
        assert lists.match(url) is not None, url
    for url in ("http://bad.example/privateer", "http://bad.example/public/private",
                "http://shop.example/item.php?id=8"):
        assert lists.match(url) is None, url


@pytest.mark.parametrize("settings, message", [
    ({"files": ("/nonexistent/list.txt",)}, "does not exist"),
    ({"soft_word_threshold": 0}, "soft_word_threshold"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        BlocklistConfig(**settings).validate()


# ---------------------------------------------------------------- end to end


class _Images(BaseHTTPRequestHandler):
    requested: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        _Images.requested.append(self.path)
        if self.path == "/img/moved.png":
            self.send_response(302)
            self.send_header("Location", "/img/blocked.png")
            self.end_headers()
            return
        buf = io.BytesIO()
        Image.new("RGB", (320, 240), (40, 120, 200)).save(buf, "PNG")
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(buf.tell()))
        self.end_headers()
        self.wfile.write(buf.getvalue())

    def log_message(self, *args):
        pass


def _page(images: list[str]) -> str:
    """A page of real prose (the English UDHR's first articles) with the given images between paragraphs."""
    html = (DATA / "udhr" / "eng.html").read_text(encoding="utf-8")
    paragraphs = [p.split("</p>")[0] for p in html.split("<p>")[1:9]]
    figures = [f'<figure><img src="{u}" width="320" height="240"><figcaption>The assembly hall, seen from '
               f"the gallery</figcaption></figure>" for u in images]
    body = "".join(f"<p>{p}</p>" + (figures[i] if i < len(figures) else "") for i, p in enumerate(paragraphs))
    return f"<html><body><article><h1>Declaration</h1>{body}</article></body></html>"


@pytest.mark.slow
def test_run_rejects_blocked_pages_and_never_requests_blocked_images(tmp_path, capsys):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    _Images.requested = []
    try:
        listing = tmp_path / "blocked.txt"
        listing.write_text("blocked-news.example\n127.0.0.1/img/blocked.png\n", encoding="utf-8")
        warc = tmp_path / "pages.warc.gz"
        with open(warc, "wb") as f:
            writer = WARCWriter(f, gzip=True)
            served = [f"{base}/img/{name}.png" for name in ("ok", "blocked", "moved")]
            pages = [("https://news.example/harbour", served),
                     ("https://www.blocked-news.example/harbour", [f"{base}/img/other.png"])]
            for url, images in pages:
                http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")],
                                        protocol="HTTP/1.1")
                writer.write_record(writer.create_warc_record(
                    url, "response", payload=io.BytesIO(_page(images).encode()), http_headers=http))
        config = tmp_path / "run.toml"
        config.write_text(f'[blocklist]\nfiles = ["{listing}"]\n', encoding="utf-8")
        out = tmp_path / "run"
        code = main(["run", str(warc), "--output", str(out), "--stages", "ingest,fetch", "--config",
                     str(config), "--allow-private-hosts", "--per-host-rate", "0", "--json"])
        captured = capsys.readouterr()
        assert code == 0, captured.err[-3000:]
        manifest = json.loads(captured.out)
    finally:
        server.shutdown()
    # never /img/blocked.png (listed) nor /img/other.png (on a blocked page); /img/moved.png's redirect to
    # /img/blocked.png is refused before the hop
    consent = {"/robots.txt", "/.well-known/tdmrep.json"}
    assert sorted(set(_Images.requested) - consent) == ["/img/moved.png", "/img/ok.png"]
    rejected = documents_from_table(open_shards(str(out / "rejected")).read())
    assert [(d.url, d.reason) for d in rejected] == [
        ("https://www.blocked-news.example/harbour", BLOCKED_DOMAIN)]
    [doc] = documents_from_table(open_shards(str(out / "documents")).read())
    assert manifest["funnel"]["ingest"]["documents"]["dropped"][BLOCKED_DOMAIN] == 1
    # the listed URL's node at ingest (never handed to the fetch stage), the redirect to it at fetch
    assert manifest["funnel"]["ingest"]["nodes"]["dropped"][BLOCKED_URL] == 1
    assert manifest["funnel"]["fetch"]["nodes"]["dropped"][BLOCKED_URL] == 1
    assert manifest["unreconciled"] == []
    assert sum(1 for n in doc.nodes if n.is_image) == 1  # dropped nodes are stripped from curated documents


def test_a_users_file_with_a_bom_and_unicode_names_and_a_refused_wildcard(tmp_path):
    listing = tmp_path / "blocked.txt"
    listing.write_bytes("\ufeffbom.example\r\nbücher.example\r\n".encode("utf-8"))
    lists = load_blocklist(BlocklistConfig(ut1=False, banned_url_words=False, files=(str(listing),)))
    assert lists.match("https://bom.example/")[0] == BLOCKED_DOMAIN
    assert lists.match("https://bücher.example/")[0] == BLOCKED_DOMAIN
    assert lists.match("https://xn--bcher-kva.example/a")[0] == BLOCKED_DOMAIN
    wild = tmp_path / "wild.txt"
    wild.write_text("ok.example\n*.wild.example\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: '\\*.wild.example' has a wildcard"):
        BlocklistConfig(ut1=False, files=(str(wild),)).validate()


class _Redirect(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(404 if self.path == "/robots.txt" or self.path.startswith("/.well-known") else 302)
        if self.path.startswith("/img"):
            self.send_header("Location", "http://blocked-nowhere.example/x.png")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_redirect_to_a_blocked_host_is_refused_before_its_name_is_looked_up(tmp_path):
    from interleaf.download.fetcher import FetchConfig, Fetcher

    listing = tmp_path / "blocked.txt"
    listing.write_text("blocked-nowhere.example\n", encoding="utf-8")
    lists = load_blocklist(BlocklistConfig(ut1=False, banned_url_words=False, files=(str(listing),)))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fetcher = Fetcher(FetchConfig(allow_private_hosts=True, total_timeout_s=10), blocklist=lists)
    try:
        record = fetcher.fetch(f"http://127.0.0.1:{server.server_address[1]}/img/a.png").record
    finally:
        fetcher.close()
        server.shutdown()
    assert record.status == BLOCKED_DOMAIN, record.error  # not "dns": the name is never resolved
