"""One bounded HTTP GET: guarded addresses on every hop, capped redirects, bytes and time.

img2dataset's `download_image` (urllib.urlopen, then `r.read()`) follows redirects wherever they go, reads
whatever size the server sends and bounds only each socket operation, so a server that drips one byte a
second never times out. This module keeps its shape (one URL in, bytes or an error out, X-Robots-Tag checked
on the response headers) and adds what a crawler of untrusted pages needs:
- every hop is resolved and checked by netguard and connected to the checked address;
- at most `max_redirects` redirects, and a redirect back to a URL already visited is a loop;
- Content-Length above the cap is refused before reading, and the streamed body is cut at the cap;
- one deadline for the whole request (connect, headers, body, all hops), enforced by a watchdog thread
  that shuts the socket down when it passes, whatever phase the request is in;
- no content decoding here (Accept-Encoding: identity); a body that a server compressed anyway is decoded by
  the fetcher under the same size cap (a gzip bomb ends as too_large).
"""

from __future__ import annotations

import email.utils
import heapq
import http.client
import itertools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from interleaf.download.netguard import GuardError, open_connection, resolve
from interleaf.download.urls import join, request_url

log = logging.getLogger(__name__)

REDIRECT_CODES = (301, 302, 303, 307, 308)
# Worth retrying within a run (after Retry-After or a backoff): rate limited or temporarily unavailable.
RETRY_CODES = (429, 500, 502, 503, 504)


class FetchError(Exception):
    """A URL that ends in a failure status from schemas.image.FETCH_STATUSES.

    `retry_after` is set (seconds, possibly 0) when trying again later may succeed: the server said so
    (429/503 with Retry-After), or the failure is of a transient kind (5xx, connection reset).
    """

    def __init__(self, status: str, message: str, *, retry_after: float | None = None,
                 code: int | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.code = code  # the HTTP status code of a final non-2xx response


@dataclass(frozen=True, kw_only=True)
class HttpLimits:
    connect_timeout_s: float  # to open the TCP connection of one hop
    read_timeout_s: float  # for any single read: img2dataset's `timeout` (default 10 s)
    total_timeout_s: float  # the whole request, every hop and the body: the bound on a slow drip
    max_redirects: int  # redirects followed before too_many_redirects
    max_bytes: int  # Content-Length or streamed body above this is too_large


@dataclass
class Response:
    """A response whose headers were read and accepted; its body is read with read_body()."""

    url: str  # the URL that answered (after redirects)
    code: int
    headers: http.client.HTTPMessage
    redirects: int
    _conn: http.client.HTTPConnection
    _sock: socket.socket  # kept: http.client drops conn.sock once a response says Connection: close
    _raw: http.client.HTTPResponse
    _deadline: float
    _watch: object

    def read_body(self, max_bytes: int, read_timeout_s: float, watchdog: Watchdog) -> bytes:
        """The body, at most `max_bytes` (else FetchError too_large), before the request's deadline."""
        declared = self._raw.length
        if declared is not None and declared > max_bytes:
            raise FetchError("too_large", f"Content-Length {declared} bytes is above the cap of {max_bytes}")
        chunks, total = [], 0
        try:
            while True:
                self._sock.settimeout(_remaining(self._deadline, read_timeout_s))
                chunk = self._raw.read1(65536)  # returns after one socket read, so the deadline is checked
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise FetchError("too_large", f"body exceeded the cap of {max_bytes} bytes while "
                                                  "streaming")
                chunks.append(chunk)
            if time.monotonic() >= self._deadline:  # the watchdog shut the socket down: EOF came early
                raise TimeoutError("deadline passed")
            if declared is not None and total < declared:  # read1 reports a short body as EOF, not an error
                raise http.client.IncompleteRead(b"", declared - total)
        except TimeoutError:
            raise FetchError("timeout",
                             _timeout_message(self._deadline, f"after {total} bytes of body")) from None
        except http.client.IncompleteRead as e:
            raise FetchError("connect", f"connection closed after {len(e.partial) + total} bytes of the "
                                        f"{declared} announced", retry_after=0.0) from None
        except (OSError, http.client.HTTPException) as e:
            if time.monotonic() >= self._deadline:  # the watchdog shut the socket down
                raise FetchError("timeout",
                                 _timeout_message(self._deadline, f"after {total} bytes")) from None
            raise FetchError("connect", f"reading the body failed: {_describe(e)}", retry_after=0.0) from None
        return b"".join(chunks)

    def close(self, watchdog: Watchdog) -> None:
        watchdog.unwatch(self._watch)
        self._raw.close()
        self._conn.close()


class Watchdog:
    """Shuts down sockets whose request passed its deadline, from one background thread.

    A socket timeout bounds each read, not a request: headers or a body dripped one byte at a time reset it
    on every byte. Shutting the socket down makes the blocked read return at once, in any phase.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, socket.socket] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, sock: socket.socket, deadline: float) -> int:
        token = next(self._ids)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog", daemon=True)
                self._thread.start()
            self._live[token] = sock
            heapq.heappush(self._heap, (deadline, token))
            self._cond.notify()
        return token

    def unwatch(self, token: int | None) -> None:
        if token is not None:
            with self._cond:
                self._live.pop(token, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now or self._heap[0][1] not in self._live):
                    _, token = heapq.heappop(self._heap)
                    sock = self._live.pop(token, None)
                    if sock is not None:
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:  # already closed by its owner
                            pass
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


def _remaining(deadline: float, cap: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return min(cap, left)


def _timeout_message(deadline: float, where: str) -> str:
    late = time.monotonic() - deadline
    return f"request deadline passed {where}" if late >= 0 else f"read timed out {where}"


def _header_text(value: str) -> str:
    """A header value as a browser reads it: http.client decodes the bytes as Latin-1; a browser reads a
    Location's bytes as UTF-8 (a raw "ü" is %C3%BC, not %C3%83%C2%BC), and as Latin-1 when they are not."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def open_url(url: str, *, limits: HttpLimits, headers: dict[str, str], allow_private: bool,
             watchdog: Watchdog, allowed_networks: tuple[str, ...] = (),
             before_hop: Callable[[str], None] | None = None,
             before_resolve: Callable[[str], None] | None = None,
             ssl_context: ssl.SSLContext | None = None) -> Response:
    """GET `url`, following redirects, up to an accepted 2xx response whose body is not yet read.

    `before_resolve(url)` runs first for each hop (the first and every redirect target), before its name is
    looked up: checks of the URL alone (opt-out list, blocklist) raise FetchError there. `before_hop(url)`
    runs once the hop's address passed the guard: consent checks that need requests (robots.txt) raise
    FetchError there. Raises FetchError for every failure, with its
    status.
    """
    deadline = time.monotonic() + limits.total_timeout_s
    visited = []
    current = url
    while True:
        try:  # as a browser sends it: non-ASCII and spaces percent-encoded (other schemes: the guard says)
            if current.strip().lower().startswith(("http:", "https:")):
                current = request_url(current)
        except ValueError as e:
            raise FetchError("bad_url", f"{current!r} cannot be requested: {e}" if not visited else
                             f"redirect to {current!r}, which cannot be requested: {e}") from None
        if before_resolve is not None:
            before_resolve(current)
        try:
            parts = urlsplit(current)
            target = resolve(parts.scheme, parts.hostname or "", parts.port, allow_private=allow_private,
                             allowed_networks=allowed_networks)
        except GuardError as e:
            raise FetchError(e.status, str(e) if not visited else f"redirect to {current}: {e}") from None
        except ValueError as e:  # a port that is not a number, a broken IPv6 literal
            raise FetchError("error", f"malformed URL {current!r}: {e}") from None
        if before_hop is not None:  # after the guard: a refused address gets no robots.txt request either
            before_hop(current)
        visited.append(current)
        conn, watch = None, None

        def on_socket(sock, _deadline=deadline):
            nonlocal watch
            watch = watchdog.watch(sock, _deadline)

        try:
            conn = open_connection(target, timeout=_remaining(deadline, limits.connect_timeout_s),
                                   context=ssl_context, on_socket=on_socket)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", path, headers=headers)
            sock = conn.sock
            sock.settimeout(_remaining(deadline, limits.read_timeout_s))
            raw = conn.getresponse()
        except TimeoutError:
            _close(conn, watch, watchdog)
            raise FetchError("timeout", _timeout_message(deadline, f"waiting for {target.host}")) from None
        except ssl.SSLError as e:
            _close(conn, watch, watchdog)
            raise FetchError("connect", f"TLS with {target.host} failed: {_describe(e)}") from None
        except (OSError, http.client.HTTPException) as e:
            _close(conn, watch, watchdog)
            if time.monotonic() >= deadline:
                raise FetchError("timeout",
                                 _timeout_message(deadline, f"waiting for {target.host}")) from None
            transient = isinstance(e, (ConnectionError, http.client.RemoteDisconnected))
            raise FetchError("connect", f"{target.host}:{target.port} ({target.address}): {_describe(e)}",
                             retry_after=0.0 if transient else None) from None
        response = Response(url=current, code=raw.status, headers=raw.headers, redirects=len(visited) - 1,
                            _conn=conn, _sock=sock, _raw=raw, _deadline=deadline, _watch=watch)
        if raw.status in REDIRECT_CODES and raw.headers.get("Location"):
            response.close(watchdog)
            header = _header_text(raw.headers["Location"])
            location = join(current, header)  # as a browser resolves it (WHATWG URL standard)
            if location is None:
                raise FetchError("bad_url", f"redirect to {header[:200]!r}, which the URL standard refuses")
            if location in visited:
                raise FetchError("too_many_redirects", f"redirect loop: {current} -> {location} "
                                                       f"after {len(visited) - 1} redirects")
            if len(visited) > limits.max_redirects:
                raise FetchError("too_many_redirects", f"more than {limits.max_redirects} redirects "
                                                       f"(last to {location})")
            current = location
            continue
        if 200 <= raw.status < 300:
            return response
        response.close(watchdog)
        raise http_error(raw.status, raw.reason, raw.headers.get("Retry-After"), url=current)


def http_error(code: int, reason: str, retry_after: str | None, *, url: str) -> FetchError:
    """The FetchError of a non-2xx final response; its message starts with "HTTP <code>" (is_transient
    reads it)."""
    status = "http_4xx" if 400 <= code < 500 else "http_5xx" if 500 <= code < 600 else "error"
    wait = None
    if code in RETRY_CODES:
        wait = retry_after_seconds(retry_after)
        wait = 0.0 if wait is None else wait
    extra = f" (Retry-After: {retry_after})" if retry_after else ""
    return FetchError(status, f"HTTP {code} {reason}{extra} from {url}", retry_after=wait, code=code)


def _close(conn, watch, watchdog: Watchdog) -> None:
    watchdog.unwatch(watch)
    if conn is not None:
        conn.close()
