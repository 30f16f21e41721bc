"""The demo's web: static sites served on 127.0.0.1, and a crawl of their pages into a WARC file.

The crawl fetches each HTML page over real HTTP and records the exchange as WARC request and response
records (warcio), the way wget or Heritrix would; images are left out of the WARC, so the pipeline's fetch
stage downloads them from the same server, as it would from the web.
"""

from __future__ import annotations

import functools
import http.server
import logging
import os
import threading
import urllib.request
from contextlib import contextmanager
from io import BytesIO
from typing import Iterator

log = logging.getLogger(__name__)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        log.debug("site: " + format, *args)


@contextmanager
def serve(root: str) -> Iterator[str]:
    """Serve directory `root` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="demo-site", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    log.info("serving %s at %s", root, base)
    try:
        yield base
    finally:
        server.shutdown()
        server.server_close()


def html_pages(root: str) -> list[str]:
    """Paths (relative to root, '/'-separated) of the HTML pages under root, sorted."""
    pages = []
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith((".html", ".htm")):
                pages.append(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/"))
    return sorted(pages)


def crawl_to_warc(urls: list[str], warc_path: str, *, user_agent: str = "interleaf-demo-crawler") -> int:
    """GET each URL and write the request and response records to a gzipped WARC; returns pages written."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    written = 0
    with open(warc_path, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        writer.write_record(writer.create_warcinfo_record(os.path.basename(warc_path), {
            "software": "interleaf demo crawler", "format": "WARC File Format 1.0"}))
        for url in urls:
            request = urllib.request.Request(url, headers={"User-Agent": user_agent})
            with urllib.request.urlopen(request, timeout=10) as resp:  # loopback only: the demo's own server
                body = resp.read()
                headers = StatusAndHeaders(f"{resp.status} {resp.reason}", list(resp.headers.items()),
                                           protocol="HTTP/1.1")
            path = url.split("/", 3)[3] if url.count("/") >= 3 else ""
            req_headers = StatusAndHeaders(f"GET /{path} HTTP/1.1", [("User-Agent", user_agent),
                                                                      ("Host", url.split("/")[2])],
                                           is_http_request=True)
            writer.write_record(writer.create_warc_record(url, "request", http_headers=req_headers))
            writer.write_record(writer.create_warc_record(url, "response", payload=BytesIO(body),
                                                          http_headers=headers))
            written += 1
    log.info("crawled %d pages into %s", written, warc_path)
    return written
