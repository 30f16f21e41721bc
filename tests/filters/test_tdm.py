"""TDM reservations and noai / noimageai (filters/tdm.py): archived pages and their images at ingest, and
images served with `tdm-reservation: 1` in the fetcher, against a real server on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from interleaf.cli import main
from interleaf.download.fetcher import FetchConfig, Fetcher
from interleaf.filters.tdm import TDM_RESERVED, page_reservation, reservation
from interleaf.schemas.document import documents_from_table
from interleaf.shards import open_shards

DATA = Path(__file__).parent.parent / "data"


@pytest.mark.parametrize("headers, meta, expected", [
    ([], [], (False, False)),
    ([("tdm-reservation", "1")], [], (True, False)),
    ([("tdm-reservation", " 0 ")], [("tdm-reservation", "1")], (False, False)),  # the header wins
    ([], [("tdm-reservation", "1")], (True, False)),
    ([], [("tdm-reservation", "yes")], (False, False)),  # TDMRep defines 0 and 1 only
    ([("x-robots-tag", "noai")], [], (True, False)),
    ([("x-robots-tag", "otherbot: noai, noimageai")], [], (False, False)),
    ([("x-robots-tag", "interleaf: noimageai")], [], (False, True)),
    ([], [("robots", "index, follow, noimageai")], (False, True)),
    ([], [("robots", "NoAI, NoImageAI")], (True, True)),
    ([], [("interleaf", "noai")], (True, False)),
    ([], [("otherbot", "noai, noimageai")], (False, False)),
])
def test_what_reserves_a_page_and_its_images(headers, meta, expected):
    assert page_reservation(headers, meta, "interleaf") == expected


def test_reservation_values():
    assert reservation(["1"]) is True and reservation(["0"]) is False
    assert reservation([]) is None and reservation(["2", "true"]) is None
    # a repeated header folded into one value, and values that disagree: read as a reservation
    assert reservation(["1, 1"]) is True and reservation(["0", "1"]) is True and reservation(["0, 0"]) is False


@pytest.mark.parametrize("content", ["noindex noai", "noai;noimageai", "NOINDEX,  NoAI", "index ; noai"])
def test_robots_directives_in_the_separators_pages_use(content):
    """Red-team finding: space- and semicolon-separated directives were read as one unknown directive."""
    assert page_reservation([], [("robots", content)], "interleaf")[0] is True
    assert page_reservation([("x-robots-tag", content)], [], "interleaf")[0] is True
    assert page_reservation([("x-robots-tag", f"otherbot: {content}")], [], "interleaf") == (False, False)


def test_consent_written_as_http_equiv_and_hidden_among_many_tags():
    from interleaf.filters.html import extract

    filler = '<meta name="robots" content="index, follow">' * 300 + "".join(
        f'<meta name="m{i}" content="x">' for i in range(300))
    for head, expected in [
            ('<meta http-equiv="X-Robots-Tag" content="noai">', (True, False)),
            ('<meta http-equiv="tdm-reservation" content="1">', (True, False)),
            (filler + '<meta name="robots" content="noimageai">', (False, True))]:
        meta = extract(f"<html><head>{head}</head><body><p>Text.</p></body></html>", "http://a.example/").meta
        assert page_reservation([], meta, "interleaf") == expected, head


def _prose() -> list[str]:
    html = (DATA / "udhr" / "eng.html").read_text(encoding="utf-8")
    return [p.split("</p>")[0] for p in html.split("<p>")[1:9]]


def _page(head: str = "", image: str = "https://images.example.org/hall.jpg") -> bytes:
    paragraphs = _prose()
    figure = (f'<figure><img src="{image}" width="640" height="480"><figcaption>The assembly hall, seen from '
              "the gallery</figcaption></figure>")
    body = "".join(f"<p>{p}</p>" + (figure if i in (1, 4) else "") for i, p in enumerate(paragraphs))
    return (f"<html><head><title>Declaration</title>{head}</head><body><article><h1>Declaration</h1>{body}"
            "</article></body></html>").encode()


@pytest.mark.slow
def test_run_drops_reserved_pages_and_the_images_of_pages_that_reserve_them(tmp_path, capsys):
    pages = {
        "https://a.example/header": ([("tdm-reservation", "1")], ""),
        "https://a.example/meta": ([], '<meta name="tdm-reservation" content="1">'),
        "https://a.example/x-robots": ([("X-Robots-Tag", "noai")], ""),
        "https://a.example/named": ([], '<meta name="interleaf" content="noai">'),
        "https://a.example/images-only": ([], '<meta name="robots" content="noimageai">'),
        "https://a.example/other-bot": ([], '<meta name="otherbot" content="noai, noimageai">'),
        "https://a.example/free": ([("tdm-reservation", "0")], '<meta name="tdm-reservation" content="1">'),
    }
    warc = tmp_path / "pages.warc.gz"
    with open(warc, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for i, (url, (headers, head)) in enumerate(pages.items()):
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"), *headers],
                                    protocol="HTTP/1.1")
            body = _page(head, image=f"https://images.example.org/hall-{i}.jpg")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                          http_headers=http))
        # a later capture of the reserved page, archived as a revisit of the same payload
        original = _page("", image="https://images.example.org/hall-0.jpg")
        digest = "sha1:" + base64.b32encode(hashlib.sha1(original).digest()).decode()
        writer.write_record(writer.create_revisit_record(
            "https://a.example/header-again", digest=digest, refers_to_uri="https://a.example/header",
            refers_to_date="2024-05-01T10:00:00Z",
            http_headers=StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")],
                                          protocol="HTTP/1.1")))
    out = tmp_path / "run"
    code = main(["run", str(warc), "--output", str(out), "--stages", "ingest", "--min-images", "0", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    manifest = json.loads(captured.out)
    rejected = {d.url.rsplit("/", 1)[1]: d.reason for d in
                documents_from_table(open_shards(str(out / "rejected")).read())}
    assert rejected == {"header": TDM_RESERVED, "meta": TDM_RESERVED, "x-robots": TDM_RESERVED,
                        "named": TDM_RESERVED, "header-again": TDM_RESERVED}
    kept = {d.url.rsplit("/", 1)[1]: d
            for d in documents_from_table(open_shards(str(out / "documents")).read())}
    assert set(kept) == {"images-only", "other-bot", "free"}
    assert not any(n.is_image for n in kept["images-only"].nodes)  # its images are reserved, never fetched
    for name in ("other-bot", "free"):
        assert sum(n.is_image for n in kept[name].nodes) == 2
    funnel = manifest["funnel"]["ingest"]
    assert funnel["documents"]["dropped"][TDM_RESERVED] == 5
    assert funnel["nodes"]["dropped"][TDM_RESERVED] == 2
    assert manifest["unreconciled"] == []


class _Reserved(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/robots.txt":
            self.send_response(404)
            self.end_headers()
            return
        buf = io.BytesIO()
        Image.new("RGB", (320, 240), (200, 120, 40)).save(buf, "PNG")
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(buf.tell()))
        if self.path.startswith("/reserved"):
            self.send_header("tdm-reservation", "1")
            self.send_header("tdm-policy", "https://example.org/policy.json")
        self.end_headers()
        self.wfile.write(buf.getvalue())

    def log_message(self, *args):
        pass


def test_an_image_served_with_a_reservation_is_not_kept():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Reserved)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    fetcher = Fetcher(FetchConfig(allow_private_hosts=True, total_timeout_s=10))
    try:
        reserved = fetcher.fetch(f"{base}/reserved.png").record
        free = fetcher.fetch(f"{base}/free.png").record
        ignored = Fetcher(FetchConfig(allow_private_hosts=True, respect_tdm=False)).fetch(
            f"{base}/reserved.png").record
    finally:
        fetcher.close()
        server.shutdown()
    assert (reserved.status, reserved.data) == (TDM_RESERVED, None)
    assert "tdm-reservation" in reserved.error
    assert free.status == "ok" and ignored.status == "ok"


class _Site(BaseHTTPRequestHandler):
    """Images anywhere; /.well-known/tdmrep.json as the class attribute says (None: 404)."""

    tdmrep: bytes | None = None
    requested: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        _Site.requested.append(self.path)
        if self.path == "/.well-known/tdmrep.json" and _Site.tdmrep is not None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(_Site.tdmrep)))
            self.end_headers()
            self.wfile.write(_Site.tdmrep)
            return
        if not self.path.endswith(".png"):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        buf = io.BytesIO()
        Image.new("RGB", (320, 240), (20, 160, 90)).save(buf, "PNG")
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(buf.tell()))
        self.end_headers()
        self.wfile.write(buf.getvalue())

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("tdmrep, expected", [
    # the first matching rule applies; patterns as in robots.txt
    (json.dumps([{"location": "/private/*", "tdm-reservation": 1, "tdm-policy": "https://e.org/p.json"},
                 {"location": "/", "tdm-reservation": 0}]).encode(),
     {"/private/a.png": TDM_RESERVED, "/public/b.png": "ok", "/private.png": "ok"}),
    (json.dumps([{"location": "*.png$", "tdm-reservation": "1"}]).encode(),
     {"/private/a.png": TDM_RESERVED, "/public/b.png": TDM_RESERVED}),
    (json.dumps([{"location": 5}, "junk", {"location": "/", "tdm-reservation": True}]).encode(),
     {"/private/a.png": TDM_RESERVED}),  # malformed rules are skipped; true is read as 1 (cautious)
    (json.dumps({"Location": "/private/*", "TDM-Reservation": 1}).encode(),  # one rule, no array, any case
     {"/private/a.png": TDM_RESERVED, "/public/b.png": "ok"}),
    (b"{not json", {"/private/a.png": "ok"}),
    (None, {"/private/a.png": "ok", "/public/b.png": "ok"}),  # no file: no reservation
])
def test_the_sites_tdmrep_json_reserves_images_before_they_are_requested(tdmrep, expected):
    _Site.tdmrep, _Site.requested = tdmrep, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    fetcher = Fetcher(FetchConfig(allow_private_hosts=True, total_timeout_s=10))
    try:
        found = {path: fetcher.fetch(base + path).record.status for path in expected}
    finally:
        fetcher.close()
        server.shutdown()
    assert found == expected
    reserved = [p for p, status in expected.items() if status == TDM_RESERVED]
    assert not set(reserved) & set(_Site.requested)  # a reserved image is never asked for
    assert _Site.requested.count("/.well-known/tdmrep.json") == 1 == fetcher.tdmrep.fetches  # once a host


def test_a_hostile_or_bom_prefixed_tdmrep_json():
    from interleaf.filters.tdm import TdmRep

    assert TdmRep.parse("[" * 100_000 + "]" * 100_000).rules == []  # nested past the stack: no rules
    bom = TdmRep.parse('\ufeff[{"location": "/", "tdm-reservation": 1}]')
    assert bom.reserved("https://e.org/a.png") is True


def test_consent_meta_tags_are_read_behind_thousands_of_others():
    from interleaf.filters.html import extract

    head = "".join(f'<meta name="m{i}" content="v{i}">' for i in range(5000))
    html = (f'<html><head>{head}<meta name="robots" content="noimageai"><meta name="interleaf" '
            'content="noai"></head><body><p>Some text of the page.</p></body></html>')
    meta = extract(html, "https://e.org/").meta
    assert page_reservation([], meta, "interleaf") == (True, True)
    assert len(meta) <= 128


def test_a_tdmrep_json_served_compressed_or_in_utf16_is_read():
    """Red-team finding: a gzip body (with or without Content-Encoding) and UTF-16 with a byte-order mark
    were read as "no rules"."""
    import gzip

    from interleaf.download.fetcher import consent_text
    from interleaf.filters.tdm import TdmRep

    text = json.dumps([{"location": "/private/*", "tdm-reservation": 1}])
    for body, encoding in ((gzip.compress(text.encode()), None), (gzip.compress(text.encode()), "gzip"),
                           (b"\xff\xfe" + text.encode("utf-16-le"), None), (text.encode(), None)):
        rules = TdmRep.parse(consent_text(body, encoding, 500 * 1024))
        assert rules.reserved("https://a.example/private/a.png") is True, (body[:4], encoding)
    assert consent_text(b"\x1f\x8bnot gzip", None, 1000).startswith("\x1f")  # read as it came
