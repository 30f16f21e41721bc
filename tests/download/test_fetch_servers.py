"""Real HTTP servers on 127.0.0.1 for the fetch tests, and tests of the servers themselves.

Fixture sites are served from their manifest.jsonl, one server (port) per original host, so that every
host keeps its own robots.txt and its own politeness key: a page's image URL
http://upload.wikimedia.org/wikipedia/x.jpg becomes http://127.0.0.1:<its port>/wikipedia/x.jpg.
The request target is matched to the manifest's URL exactly (path and query as sent), so a link the
capture never saw (in_tree=false, such as an image whose commas the page percent-encoded) is a 404 as it
would have been for the crawler. The hostile server plays every misbehaviour the fetcher must survive.

tests/pipelines/test_fetch.py loads this module by path (tests are not a package).
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import socket
import struct
import sys
import threading
import time
import urllib.request
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from PIL import Image

SITES = Path(__file__).resolve().parent.parent / "data" / "sites"
PHOTOS = Path(__file__).resolve().parent.parent / "data" / "photos"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default backlog of 5 drops connections when many fetches start at once

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):  # a client gave up
            super().handle_error(request, client_address)


class BaseServer:
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread that counts hits per request target."""

    def __init__(self):
        self.hits: Counter = Counter()
        self.served: Counter = Counter()  # responses written completely
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                with owner._lock:
                    owner.hits[self.path] += 1
                owner.handle_get(self)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def handle_get(self, h: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def send(self, h, code: int, body: bytes = b"", content_type: str = "image/jpeg", headers=()) -> None:
        h.send_response(code)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)
        with self._lock:
            self.served[h.path] += 1

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------- fixture sites


def load_manifest(site: str) -> list[dict]:
    return [json.loads(line) for line in (SITES / site / "manifest.jsonl").read_text().splitlines() if line]


class SiteServer(BaseServer):
    """One host of a fixture site: answers the manifest's URLs of that host, 404 for everything else
    (robots.txt included, unless `robots` is given)."""

    def __init__(self, site: str, host: str, robots: str | None = None):
        self.files = {}
        for entry in load_manifest(site):
            parts = urlsplit(entry["url"])
            if parts.hostname == host:
                target = parts.path + (f"?{parts.query}" if parts.query else "")
                self.files[target] = (SITES / site / entry["file"], entry["content_type"])
        self.robots = robots
        super().__init__()

    def handle_get(self, h):
        if h.path == "/robots.txt" and self.robots is not None:
            return self.send(h, 200, self.robots.encode(), "text/plain")
        found = self.files.get(h.path)
        if found is None:
            return self.send(h, 404, b"not found", "text/plain")
        path, content_type = found
        self.send(h, 200, path.read_bytes(), content_type)


class Sites:
    """Every host of the given fixture sites, each on its own port; `local(url)` maps a captured URL."""

    def __init__(self, *sites: str):
        self.servers: dict[str, SiteServer] = {}
        self.manifests = {s: load_manifest(s) for s in sites}
        for site, entries in self.manifests.items():
            hosts = {urlsplit(e["url"]).hostname for e in entries}
            hosts |= {urlsplit(r["resolved"]).hostname for e in entries for r in e.get("img_refs", [])}
            for host in sorted(hosts):
                if host not in self.servers:
                    self.servers[host] = SiteServer(site, host)

    def local(self, url: str) -> str:
        parts = urlsplit(url)
        rest = parts.path + (f"?{parts.query}" if parts.query else "")
        return self.servers[parts.hostname].base + rest

    def hits(self) -> Counter:
        total = Counter()
        for host, server in self.servers.items():
            for target, n in server.hits.items():
                total[f"{host}{target}"] += n
        return total

    def close(self):
        for s in self.servers.values():
            s.close()


# ---------------------------------------------------------------- images built in the tests


def jpeg(size=(320, 240), seed: int = 0, quality: int = 85) -> bytes:
    """A real photograph (Pillow's test image of Grace Hopper) cropped and scaled to `size`."""
    with Image.open(PHOTOS / ("flower.jpg" if seed % 2 else "hopper.jpg")) as im:
        im = im.convert("RGB")
        w, h = im.size
        box = (seed % 7, (seed // 7) % 5, w - (seed % 3), h - (seed % 4))
        out = io.BytesIO()
        im.crop(box).resize(size).save(out, "JPEG", quality=quality)
        return out.getvalue()


def png(size) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


@functools.lru_cache(maxsize=4)
def png_bomb(side: int = 20000) -> bytes:
    """A valid PNG of side x side black pixels (8-bit grey): about 400 KB on disk, 400 MB decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))
    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    z = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0 + a row of zeros
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- hostile endpoints


class HostileServer(BaseServer):
    """Every way a server can misbehave, by path. `robots` is served as /robots.txt."""

    ROBOTS = ("User-agent: *\nDisallow: /private/\n\n"
              "User-agent: interleaf\nDisallow: /private/\nDisallow: /*/no-*.jpg$\nAllow: /private/ok\n")

    def __init__(self):
        self.image = jpeg((320, 240))
        self.bomb = png_bomb()
        self.attempts: Counter = Counter()
        super().__init__()

    def _attempt(self, h) -> int:
        with self._lock:
            self.attempts[h.path] += 1
            return self.attempts[h.path]

    def handle_get(self, h):  # noqa: C901 -- one branch per endpoint reads best here
        parts = urlsplit(h.path)
        path, query = parts.path, parse_qs(parts.query)
        if path == "/robots.txt":
            return self.send(h, 200, self.ROBOTS.encode(), "text/plain")
        if path.startswith(("/ok/", "/private/")):
            return self.send(h, 200, self.image)
        if path == "/ok.png":
            return self.send(h, 200, png((300, 200)), "image/png")
        if path == "/drip":  # a valid JPEG, one byte every 0.2 s
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(len(self.image)))
            h.end_headers()
            try:
                for i in range(len(self.image)):
                    h.wfile.write(self.image[i:i + 1])
                    h.wfile.flush()
                    time.sleep(0.2)
            except OSError:  # the client gave up
                return
            return
        if path == "/slow-headers":  # headers dripped a byte per 0.3 s: each read is quick, the total is not
            try:
                for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Padding: " + b"x" * 200:
                    h.wfile.write(bytes([byte]))
                    h.wfile.flush()
                    time.sleep(0.3)
            except OSError:
                pass
            h.close_connection = True
            return
        if path == "/hang":  # reads the request, never answers
            time.sleep(8)
            h.close_connection = True
            return
        if path.startswith("/loop/"):
            nxt = "/loop/b" if path == "/loop/a" else "/loop/a"
            return self.send(h, 302, b"", "text/plain", [("Location", nxt)])
        if path.startswith("/chain/"):
            n = int(path.rsplit("/", 1)[1])
            target = f"/chain/{n - 1}" if n > 0 else "/ok/end-of-chain.jpg"
            return self.send(h, 301, b"", "text/plain", [("Location", target)])
        if path == "/redirect":  # to wherever ?to= says (absolute or relative)
            return self.send(h, 302, b"", "text/plain", [("Location", query["to"][0])])
        if path == "/endless":  # no Content-Length, a JPEG start then zeros forever
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Connection", "close")
            h.end_headers()
            try:
                h.wfile.write(self.image[:100])
                block = bytes(65536)
                while True:
                    h.wfile.write(block)
            except OSError:
                pass
            h.close_connection = True
            return
        if path == "/huge-declared":  # Content-Length of 1 TB: refused before reading
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(10**12))
            h.end_headers()
            h.close_connection = True
            return
        if path == "/bomb.png":
            return self.send(h, 200, self.bomb, "image/png")
        if path == "/bomb.gif":
            return self.send(h, 200, (SITES / "hostile" / "decompression_bomb.gif").read_bytes(), "image/gif")
        if path == "/truncated.png":
            return self.send(h, 200, (SITES / "hostile" / "truncated_image.png").read_bytes(), "image/png")
        if path == "/html-as-jpeg":
            return self.send(h, 200, b"<!doctype html><html><body>not an image</body></html>", "image/jpeg")
        if path == "/gzip-bomb":  # 10 MB of zeros gzipped, Content-Encoding: gzip, claims to be a PNG
            body = gzip.compress(bytes(10 * 2**20))
            return self.send(h, 200, body, "image/png", [("Content-Encoding", "gzip")])
        if path == "/tiny.png":
            return self.send(h, 200, png((40, 30)), "image/png")
        if path == "/wide.jpg":
            return self.send(h, 200, jpeg((900, 200)))
        if path == "/429":  # rate limited on the first `n` attempts, with Retry-After: `after`
            n, after = int(query.get("n", ["1"])[0]), query.get("after", ["1"])[0]
            if self._attempt(h) <= n:
                return self.send(h, 429, b"slow down", "text/plain", [("Retry-After", after)])
            return self.send(h, 200, self.image)
        if path == "/503":  # unavailable on the first `n` attempts, no Retry-After
            if self._attempt(h) <= int(query.get("n", ["1"])[0]):
                return self.send(h, 503, b"unavailable", "text/plain")
            return self.send(h, 200, self.image)
        if path == "/reset":  # the connection dropped without a response on the first `n` attempts
            if self._attempt(h) <= int(query.get("n", ["1"])[0]):
                h.close_connection = True
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                h.connection.close()
                return
            return self.send(h, 200, self.image)
        if path == "/404":
            return self.send(h, 404, b"gone", "text/plain")
        if path == "/500":
            return self.send(h, 500, b"broken", "text/plain")
        if path == "/xrt":  # X-Robots-Tag values from ?v= (repeatable: one header each)
            return self.send(h, 200, self.image, headers=[("X-Robots-Tag", v) for v in query.get("v", [])])
        return self.send(h, 404, b"no such endpoint", "text/plain")


# ---------------------------------------------------------------- the servers' own tests


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_site_server_answers_the_manifest_exactly():
    sites = Sites("wikipedia-mona-lisa-2013")
    try:
        page = next(e for e in sites.manifests["wikipedia-mona-lisa-2013"] if e.get("img_refs"))
        codes = {r["resolved"]: _get(sites.local(r["resolved"]))[0] for r in page["img_refs"]}
        assert {codes[r["resolved"]] for r in page["img_refs"] if r["in_tree"]} == {200}
        assert {codes[r["resolved"]] for r in page["img_refs"] if not r["in_tree"]} == {404}
    finally:
        sites.close()


def test_png_bomb_declares_its_size_in_a_small_file():
    data = png_bomb(20000)
    assert len(data) < 1_000_000
    assert data[16:24] == (20000).to_bytes(4, "big") * 2  # IHDR width and height
    with Image.open(io.BytesIO(png_bomb(300))) as im:  # the same construction decodes at a small size
        im.load()
        assert im.size == (300, 300) and im.getextrema() == (0, 0)
