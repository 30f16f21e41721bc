"""Image URLs as pages write them (non-ASCII paths, spaces, IDNA hosts, tabs and newlines, broken literals),
requested as a browser would (issue 13 item 3): through `interleaf run` against a server on 127.0.0.1, no
URL stops the stage, each ends in one status, and a rerun does not try a permanent failure again."""

import importlib.util
import json
from pathlib import Path

import pytest

from interleaf.cli import main
from interleaf.download.urls import request_url
from interleaf.schemas.image import images_from_table
from interleaf.shards import open_shards

_spec = importlib.util.spec_from_file_location(
    "fetch_servers", Path(__file__).resolve().parent.parent / "download" / "test_fetch_servers.py")
servers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(servers)


@pytest.mark.parametrize("url,want", [
    ("http://h.example/a.jpg", "http://h.example/a.jpg"),
    ("HTTP://H.Example:80/A.jpg?x=1#frag", "http://h.example/A.jpg?x=1"),
    ("https://h.example:443/a.jpg", "https://h.example/a.jpg"),
    ("http://h.example:8080/a.jpg", "http://h.example:8080/a.jpg"),
    ("http://h.example", "http://h.example/"),
    ("http://h.example/über café.jpg", "http://h.example/%C3%BCber%20caf%C3%A9.jpg"),
    ("http://h.example/a%20b.jpg", "http://h.example/a%20b.jpg"),  # escapes left alone
    ("http://h.example/100%.jpg", "http://h.example/100%.jpg"),
    ("http://h.example/a.jpg?q=a b&c=\"d\"", "http://h.example/a.jpg?q=a%20b&c=%22d%22"),
    ("  http://h.example/a\t.j\npg \x01", "http://h.example/a.jpg"),
    ("http://bücher.example/x.png", "http://xn--bcher-kva.example/x.png"),
    ("http://[::1]:8000/x.png", "http://[::1]:8000/x.png"),
    ("http://h.example/[a]|b.jpg", "http://h.example/[a]|b.jpg"),  # not in the path percent-encode set
    ("http://h.example/b^.jpg", "http://h.example/b%5E.jpg"),  # in it since the standard's 2024 revision
    # what a browser reads differently from Python's urllib (issue 13 item 3)
    ("http://h.example\\@other.example/x.jpg", "http://h.example/@other.example/x.jpg"),
    ("http://h.example\\img\\x.jpg", "http://h.example/img/x.jpg"),
    ("http://h.example/a/b/../../c/./x.jpg", "http://h.example/c/x.jpg"),
    ("http://h.example/a/%2e%2E/x.jpg", "http://h.example/x.jpg"),
    ("http:h.example/x.jpg", "http://h.example/x.jpg"),
    ("http:///h.example/x.jpg", "http://h.example/x.jpg"),  # extra slashes before an http host are skipped
    ("http://faß.example/x.jpg", "http://xn--fa-hia.example/x.jpg"),  # UTS 46, not IDNA 2003 ("fass")
    ("http://ＥＸ.example/x.jpg", "http://ex.example/x.jpg"),  # fullwidth letters fold
    ("http://１２７.0.0.１/x.jpg", "http://127.0.0.1/x.jpg"),  # fullwidth digits: an IPv4 address
    ("http://0x7f.1/x.jpg", "http://127.0.0.1/x.jpg"),
    ("http://h.example/x\ud800.jpg", "http://h.example/x%EF%BF%BD.jpg"),  # a lone surrogate is U+FFFD
])
def test_urls_as_a_browser_sends_them(url, want):
    assert request_url(url) == want
    assert request_url(want) == want  # idempotent


@pytest.mark.parametrize("url", ["http://[::1/x.jpg", "http://h.example:port/x.jpg", "ftp://h.example/x",
                                 "http://", "javascript:alert(1)", "http://exa mple.com/x.jpg",
                                 "http://a<b.example/x.jpg", "http://" + "a" * 70 + "ü.example/x",
                                 "http://a*b.example/x.jpg",
                                 "http://[fe80::1%25eth0]/x.jpg", "http://\ud800.example/x.jpg",
                                 "http://xn--a.example/x.jpg", "http://h.example:0/x.jpg",
                                 "http://h.example:25/x.jpg", "http://h.example/" + "x" * 70000])
def test_urls_that_cannot_be_requested(url):
    with pytest.raises(ValueError):
        request_url(url)


class _Images(servers.BaseServer):
    """Serves one photo at every path under /img/, as the decoded path names it."""

    def __init__(self):
        super().__init__()
        self.photo = servers.jpeg((320, 240))

    def handle_get(self, h):
        if h.path == "/robots.txt":
            self.send(h, 404, b"", "text/plain")
        elif h.path == "/r/back":  # a browser reads the backslashes as slashes: /img/back-redirect.jpg
            self.send(h, 302, b"", "text/plain", [("Location", "\\img\\back-redirect.jpg")])
        elif h.path == "/r/utf8":  # raw UTF-8 bytes in the header, which a browser reads as UTF-8
            raw = "/img/ü-redirect.jpg".encode().decode("latin-1")  # http.server sends str as Latin-1
            self.send(h, 302, b"", "text/plain", [("Location", raw)])
        elif h.path.startswith("/img/") and h.path.isascii() and " " not in h.path:
            self.send(h, 200, self.photo)
        else:
            self.send(h, 400, b"bad request target", "text/plain")


def test_hostile_image_urls_through_a_run(tmp_path):
    server = _Images()
    try:
        urls = {
            f"{server.base}/img/über.jpg": "ok",
            f"{server.base}/img/a b.jpg": "ok",
            f"{server.base}/img/tab\there.jpg": "ok",
            f"{server.base}/img/plain.jpg#part": "ok",
            f"{server.base}/img/x/../dots.jpg": "ok",  # requested as /img/dots.jpg
            f"{server.base}\\img\\back.jpg": "ok",  # requested as /img/back.jpg
            "http://[::1/x.jpg": "bad_url",
            f"http://127.0.0.1:{server.port}0000/img/x.jpg": "bad_url",
            "http://exa mple.com/x.jpg": "bad_url",
            "http://127.0.0.1:0/img/x.jpg": "bad_url",  # a bad port (Fetch standard): never requested
            "http://xn--a.example/x.jpg": "bad_url",  # no punycode by UTS 46
            f"{server.base}/r/back": "ok",
            f"{server.base}/r/utf8": "ok",
        }
        prose = ("The harbour master keeps a list of every boat that enters, with its name, its port and the "
                 "weather, and the list goes back more than a hundred years to the first steam ferries.")
        rows = [{"texts": [prose, None], "images": [None, url], "general_metadata": json.dumps(
            {"url": f"http://pages.example/{i}"})} for i, url in enumerate(urls)]
        (tmp_path / "in.obelics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (tmp_path / "run.toml").write_text("[ingest.quality]\nmin_words = 10\n\n"
                                           "[fetch]\nper_host_rate = 0\n\n"
                                           "[fetch.fetch]\nallow_private_hosts = true\nretries = 0\n")
        args = [str(tmp_path / "in.obelics.jsonl"), "--output", str(tmp_path / "out"),
                "--config", str(tmp_path / "run.toml"), "--stages", "ingest,fetch"]
        assert main(["run", *args]) == 0
        store = images_from_table(open_shards(str(tmp_path / "out" / "images")).read())
        status = {u: r.status for r in store for u in r.urls}
        for url, want in urls.items():
            key = url if want != "ok" else request_url(url)
            assert status.get(key) == want, (url, status)
        assert server.served["/img/back-redirect.jpg"] == 1 and server.served["/img/%C3%BC-redirect.jpg"] == 1
        m = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert m["unreconciled"] == []

        hits = sum(server.hits.values())
        assert main(["run", *args]) == 0  # a rerun: nothing is requested again, permanent failures included
        assert sum(server.hits.values()) == hits
    finally:
        server.close()
