"""Fetch one image URL into an ImageRecord: consent, guard, caps, format and size checks, then img2dataset's
Resizer. Every URL ends in exactly one status of schemas.image.FETCH_STATUSES.

Order of work for one URL, cheapest refusal first:
  scheme -> opt-out list (URL, domain) -> blocklist (filters.blocklist) -> robots.txt and tdmrep.json of
  the host (each fetched once, cached) -> guarded GET (each redirect hop re-checked: opt-out, blocklist,
  robots.txt, tdmrep.json, address) ->
  X-Robots-Tag and tdm-reservation of the response, before the body is read -> body capped in bytes and
  time -> magic bytes of an allowed format -> dimensions read from the header by Pillow, nothing decoded ->
  size and aspect rules (filters.image_rules, the same rules that every image of a run meets later) ->
  opt-out by sha256 -> Resizer.

img2dataset pieces used: `resizer.Resizer` for decoding, resizing and encoding (image size, resize mode and
encode format as configured; the original size comes back with it). Two measured pitfalls are designed
around: the Resizer redirects the whole process's stdout/stderr on every call and is not thread-safe, so
every call goes through one lock per process; and OpenCV decodes a 20000x20000 PNG completely before the
Resizer's own area check (+760 MB), so no image reaches it unless its header declares at most
`max_pixels` (filters.image_rules). img2dataset's `download_image` is not used: see download.client for what
it lacks.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import ipaddress
import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from interleaf import __version__
from interleaf.download.client import FetchError, HttpLimits, Watchdog, open_url
from interleaf.download.consent import (
    DEFAULT_DISALLOWED_DIRECTIVES,
    RobotsCache,
    RobotsUnavailable,
)
from interleaf.filters.blocklist import Blocklist
from interleaf.filters.image_rules import NOT_IMAGE, UNREADABLE, ImageRules, judge_header
from interleaf.filters.optout import OPTED_OUT, OptOutList
from interleaf.filters.tdm import TDM_RESERVED, TdmRepCache, image_refusal
from interleaf.schemas.image import FETCH_STATUSES, STATUS_OK, ImageRecord

log = logging.getLogger(__name__)

# Failures worth trying again in a later run; the others are permanent and a rerun skips them.
# http_4xx counts only for 429 (Too Many Requests), read from the error message ("HTTP 429 ...").
TRANSIENT_STATUSES = frozenset({"dns", "connect", "timeout", "http_5xx", "error"})

@dataclass(frozen=True, kw_only=True)
class FetchConfig:
    """How one URL is fetched and checked. Defaults and their sources are in the comments."""

    user_agent_token: str = "interleaf"  # the token robots.txt and X-Robots-Tag address us by
    user_agent: str = f"Mozilla/5.0 (compatible; interleaf/{__version__})"  # the User-Agent header sent
    allow_private_hosts: bool = False  # fetch from private/loopback/link-local addresses (tests, intranets)
    allowed_networks: tuple[str, ...] = ()  # CIDR blocks let through while the guard stays on for the rest
    ca_file: str | None = None  # extra trusted CA certificates (PEM) for HTTPS: a private CA, tests;
    # the system's trust store otherwise. Certificates are always verified against the URL's host name
    respect_robots_txt: bool = True  # RFC 9309; off only for hosts you own
    respect_tdm: bool = True  # an image served with "tdm-reservation: 1" (W3C TDMRep) is not kept
    disallowed_header_directives: tuple[str, ...] = DEFAULT_DISALLOWED_DIRECTIVES  # img2dataset's + "none"
    optout: OptOutList = field(default_factory=OptOutList)  # URLs, domains and sha256 never kept
    connect_timeout_s: float = 5.0  # per hop; half of img2dataset's `timeout`
    read_timeout_s: float = 10.0  # per socket read: img2dataset's default `timeout`
    total_timeout_s: float = 30.0  # whole request incl. redirects and body: bounds a slow drip
    max_redirects: int = 5  # RFC 9309 2.3.1.2 asks crawlers to follow at least five (for robots.txt)
    max_bytes: int = 25 * 2**20  # response cap; a 20,000 px-a-side JPEG photo is typically 10-40 MB
    robots_max_bytes: int = 500 * 1024  # RFC 9309 2.5: parse at least 500 KiB; more is ignored
    retries: int = 2  # further attempts after 429/5xx/connection reset within a run (img2dataset: 0)
    backoff_s: float = 1.0  # first backoff when no Retry-After; doubles per attempt
    max_retry_after_s: float = 60.0  # a longer Retry-After is not waited for: the URL fails, transient
    image_size: int = 256  # px, img2dataset's default `image_size`
    resize_mode: str = "keep_ratio"  # img2dataset ResizeMode: no, keep_ratio, center_crop, border,
    # keep_ratio_largest; keep_ratio (smaller side to image_size) keeps the whole image for later crops
    resize_only_if_bigger: bool = True  # never upscale: an upscaled image adds bytes, not information
    encode_format: str = "jpg"  # img2dataset encode_format: jpg, png or webp
    encode_quality: int = 95  # img2dataset's default (png: compression 0-9)

    def validate(self) -> None:
        problems = []
        for name in ("connect_timeout_s", "read_timeout_s", "total_timeout_s", "max_bytes"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, found {getattr(self, name)}")
        for network in self.allowed_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as e:
                problems.append(f"allowed_networks: {e}")
        if self.retries < 0 or self.max_redirects < 0:
            problems.append("retries and max_redirects must be 0 or more")
        if self.encode_format not in ("jpg", "png", "webp"):
            problems.append(f"encode_format must be jpg, png or webp (img2dataset), found "
                            f"{self.encode_format!r}")
        if self.resize_mode not in ("no", "keep_ratio", "center_crop", "border", "keep_ratio_largest"):
            problems.append(f"resize_mode {self.resize_mode!r} is not an img2dataset ResizeMode")
        if problems:
            raise ValueError("invalid FetchConfig: " + "; ".join(problems))


@dataclass
class FetchOutcome:
    """The record of one attempt, and when the attempt may be repeated (None: final)."""

    record: ImageRecord
    retry_after: float | None = None


def is_transient(record: ImageRecord) -> bool:
    """Whether a later run should try this failed URL again."""
    if record.status in TRANSIENT_STATUSES:
        return True
    return record.status == "http_4xx" and (record.error or "").startswith("HTTP 429")


def _undo_content_encoding(data: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """An image body as the server meant it: a server that compresses anyway (gzip, deflate, br, zstd,
    though we ask for identity) sends a picture a browser shows, so it is decompressed, capped at
    `max_bytes` (FetchError too_large past it). A body that does not decompress is judged as it came."""
    if not content_encoding or content_encoding.strip().lower() in ("identity", ""):
        return data
    from interleaf.readers.warc import TooLarge, decode_payload

    try:
        return decode_payload(data, None, content_encoding, max_bytes)
    except TooLarge as e:
        raise FetchError("too_large", f"Content-Encoding {content_encoding}: {e}") from None
    except ValueError:
        return data


def consent_text(body: bytes, content_encoding: str | None, max_bytes: int) -> str:
    """The text of a robots.txt or tdmrep.json as served: decompressed when the server compressed it anyway
    (gzip, deflate, br, zstd, by its Content-Encoding or gzip's magic bytes; capped at `max_bytes`), and
    decoded by its byte-order mark (UTF-8, UTF-16, UTF-32), else as UTF-8. What cannot be decompressed is
    read as it came."""
    from interleaf.readers.warc import decode_payload

    encoding = content_encoding or ("gzip" if body[:2] == b"\x1f\x8b" else None)
    if encoding and encoding.strip().lower() not in ("identity", ""):
        try:
            body = decode_payload(body, None, encoding, max_bytes)
        except ValueError as e:  # TooLarge too: a consent file is read as far as it decodes, or not at all
            log.debug("consent file not decompressed (%s): read as it came", e)
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"),
                       (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if body.startswith(bom):
            return body.decode(codec, errors="replace")
    return body.decode("utf-8", errors="replace")


# A transparent image above this many pixels is flattened here before the Resizer sees it: img2dataset mattes
# alpha in float64 (alpha / 255 * img), about 56 bytes a pixel: one 88-Mpx RGBA PNG of 0.36 MB took a worker
# past 4 GB, a red-team run of 32 to 7.6 GB.
FLATTEN_PIXELS = 4_000_000


def flatten_alpha(data: bytes, min_side: int | None) -> tuple[bytes, tuple[int, int]] | None:
    """(PNG bytes, original (width, height)) of a large transparent image composited over white as
    img2dataset's Resizer would (in 8 bits, with Pillow), and scaled down so that its shorter side keeps
    `min_side` pixels (None: not scaled, for resize_mode "no"); None for any other image, left to the
    Resizer as it is. A few bytes a pixel at most, where the Resizer's float matting takes 56."""
    from PIL import Image

    from interleaf.imagefile import ImageDecodeError, decode

    try:
        with Image.open(io.BytesIO(data)) as probe:
            size, mode, info = probe.size, probe.mode, dict(probe.info)
    except Exception:  # noqa: BLE001 (what Pillow cannot open, the Resizer judges and refuses)
        return None
    if size[0] * size[1] <= FLATTEN_PIXELS or not (mode in ("RGBA", "LA", "PA") or "transparency" in info):
        return None
    try:
        image = decode(data)
    except ImageDecodeError:
        return None
    if image.mode != "RGBA":
        image = image.convert("RGBA")
    if min_side and min(size) > min_side:
        scale = min_side / min(size)
        image = image.resize((max(1, round(size[0] * scale)), max(1, round(size[1] * scale))),
                             Image.Resampling.BOX, reducing_gap=2.0)
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    flat = Image.alpha_composite(white, image).convert("RGB")
    out = io.BytesIO()
    flat.save(out, "PNG", compress_level=1)
    del image, white, flat
    _release_freed_memory()
    return out.getvalue(), size


def _release_freed_memory() -> None:
    """Give memory freed after a large decode back to the system. Pillow allocates pictures in 16 MB blocks,
    which glibc serves from the decoding thread's own arena and keeps there once freed: with the fetcher's
    threads taking turns at large pictures, a worker grew to 4.5 GB of free memory held in arenas (32 88-Mpx
    PNGs; 2.3 GB for 8). glibc's malloc_trim returns it; elsewhere this does nothing."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None


class LockedResizer:
    """img2dataset's Resizer behind one lock per process (see the module docstring for why)."""

    _lock = threading.Lock()  # per process: the Resizer swaps the process's file descriptors 1 and 2

    def __init__(self, config: FetchConfig):
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks for updates on import
        from img2dataset.resizer import Resizer  # heavy (albumentations, OpenCV): imported when first needed

        self._resizer = Resizer(image_size=config.image_size, resize_mode=config.resize_mode,
                                resize_only_if_bigger=config.resize_only_if_bigger,
                                encode_format=config.encode_format, encode_quality=config.encode_quality)
        self.format = self._resizer.what_ext  # "jpeg", "png" or "webp"
        self._mode, self._side = config.resize_mode, config.image_size

    def __call__(self, data: bytes) -> tuple[bytes, int, int, int, int]:
        """(bytes, width, height, original_width, original_height); FetchError decode_error on failure."""
        with self._lock:
            flat = flatten_alpha(data, None if self._mode == "no" else 4 * self._side)
            out, width, height, ow, oh, err = self._resizer(io.BytesIO(flat[0] if flat else data))
        if err is not None or out is None:
            raise FetchError("decode_error", f"img2dataset Resizer: {err or 'no output'}")
        if flat:
            ow, oh = flat[1]
        return out, width, height, ow, oh


class Fetcher:
    """Fetches single URLs; thread-safe, one per worker process. Holds the robots.txt cache, the deadline
    watchdog and the locked Resizer."""

    def __init__(self, config: FetchConfig, rules: ImageRules | None = None,
                 blocklist: Blocklist | None = None):
        config.validate()
        self.config = config
        self.blocklist = blocklist  # filters.blocklist: checked before every hop, as the opt-out list is
        self.rules = rules or ImageRules()
        self.rules.validate()
        self.watchdog = Watchdog()
        self.resizer = LockedResizer(config)
        self.robots = RobotsCache(self._fetch_robots, config.user_agent_token)
        self.tdmrep = TdmRepCache(self._fetch_robots)  # the same guarded text fetch, capped alike
        self._limits = HttpLimits(connect_timeout_s=config.connect_timeout_s,
                                  read_timeout_s=config.read_timeout_s,
                                  total_timeout_s=config.total_timeout_s, max_redirects=config.max_redirects,
                                  max_bytes=config.max_bytes)
        self._headers = {"User-Agent": config.user_agent, "Accept": "image/*",
                         "Accept-Encoding": "identity"}
        self._ssl = ssl.create_default_context(cafile=config.ca_file)  # one per fetcher: costly to build

    def close(self) -> None:
        self.watchdog.close()

    # ------------------------------------------------------------ consent

    def _fetch_robots(self, robots_url: str) -> tuple[int, str]:
        """(HTTP code, text) of a robots.txt; RobotsUnavailable when the server cannot be reached."""
        try:
            response = open_url(robots_url, limits=self._limits,
                                headers={**self._headers, "Accept": "text/plain, application/json;q=0.9"},
                                allow_private=self.config.allow_private_hosts, watchdog=self.watchdog,
                                allowed_networks=self.config.allowed_networks, ssl_context=self._ssl)
        except FetchError as e:
            if e.code is not None:
                return e.code, ""
            if e.status == "too_many_redirects":
                return 404, ""  # RFC 9309 2.3.1.2: beyond five redirects, treat as unavailable (4xx)
            raise RobotsUnavailable(e.status, f"robots.txt {robots_url}: {e}") from None
        try:
            body = response.read_body(self.config.robots_max_bytes, self.config.read_timeout_s, self.watchdog)
        except FetchError as e:
            if e.status != "too_large":
                raise RobotsUnavailable(e.status, f"robots.txt {robots_url}: {e}") from None
            body = b""  # rare: a robots.txt above the cap; treated as empty rather than guessed at
            log.warning("%s is larger than %d bytes; ignored", robots_url, self.config.robots_max_bytes)
        finally:
            response.close(self.watchdog)
        return response.code, consent_text(body, response.headers.get("Content-Encoding"),
                                           self.config.robots_max_bytes)

    def _refused_url(self, url: str) -> None:
        """Checks of the URL alone, before its host is even looked up: opt-out list, then blocklist."""
        entry = self.config.optout.match_url(url)
        if entry is not None:
            raise FetchError(OPTED_OUT, f"opted out by {entry}")
        blocked = self.blocklist.match(url) if self.blocklist is not None else None
        if blocked is not None:
            raise FetchError(blocked[0], f"{blocked[0]}: {blocked[1]}")

    def _before_hop(self, url: str) -> None:
        """Consent checks that need no request to the image itself: robots.txt, then the origin's
        tdmrep.json (after the address guard: a refused address gets no such request)."""
        if not url.lower().startswith(("http://", "https://")):
            return
        if self.config.respect_robots_txt:
            try:
                robots = self.robots.get(url)
            except RobotsUnavailable as e:
                raise FetchError(e.status, str(e)) from None
            if not robots.allowed(url):
                raise FetchError("robots_txt",
                                 f"robots.txt disallows {url} for {self.config.user_agent_token}")
        if self.config.respect_tdm and self.tdmrep.get(url).reserved(url):
            raise FetchError(TDM_RESERVED, f"reserved by {urlsplit(url).netloc}/.well-known/tdmrep.json")

    # ------------------------------------------------------------ one URL

    def fetch(self, url: str, attempt: int = 0) -> FetchOutcome:
        """One attempt at `url`. The outcome's retry_after is set when the caller should try again later
        (attempt < config.retries and the failure is one worth retrying)."""
        started = time.monotonic()
        outcome = FetchOutcome(record=ImageRecord(sha256=None, urls=[url], source="fetch"))
        try:
            self._fetch_into(url, outcome)
        except FetchError as e:
            outcome.record.status, outcome.record.error = e.status, str(e)
            outcome.record.data = outcome.record.sha256 = None
            if e.retry_after is not None and attempt < self.config.retries:
                wait = max(e.retry_after, self.config.backoff_s * 2 ** attempt)
                if wait <= self.config.max_retry_after_s:
                    outcome.retry_after = wait
        assert outcome.record.status in FETCH_STATUSES, outcome.record.status
        log.debug("%s %s in %.2fs%s", outcome.record.status, url, time.monotonic() - started,
                  f" ({outcome.record.error})" if outcome.record.error else "")
        return outcome

    def _fetch_into(self, url: str, outcome: FetchOutcome) -> None:
        config, record = self.config, outcome.record
        response = open_url(url, limits=self._limits, headers=self._headers,
                            allow_private=config.allow_private_hosts, watchdog=self.watchdog,
                            allowed_networks=config.allowed_networks, before_hop=self._before_hop,
                            before_resolve=self._refused_url,
                            ssl_context=self._ssl)
        try:
            headers = [(name, value) for name in ("x-robots-tag", "tdm-reservation")
                       for value in response.headers.get_all(name) or []]
            refusal = image_refusal(headers, config.user_agent_token, config.disallowed_header_directives,
                                    config.respect_tdm)
            if refusal is not None:  # decided on the headers: the body is never read
                raise FetchError(*refusal)
            data = response.read_body(config.max_bytes, config.read_timeout_s, self.watchdog)
        finally:
            response.close(self.watchdog)
        data = _undo_content_encoding(data, response.headers.get("Content-Encoding"), config.max_bytes)
        record.original_bytes = len(data)
        verdict = judge_header(data, self.rules)  # the run's image rules, from the header: nothing decoded
        if verdict.size is not None:  # kept in a refused record: a later run with other rules may fetch it
            record.original_width, record.original_height = verdict.size
        if verdict.reason == NOT_IMAGE:
            declared = response.headers.get("Content-Type", "no Content-Type")
            found = verdict.fmt or f"{data[:16]!r}"
            allowed = ", ".join(self.rules.allowed_formats)
            raise FetchError("not_image", f"{len(data)} bytes served as {declared} are not an allowed image "
                                          f"({allowed}); they start with {found}")
        if verdict.reason is not None:
            status = "decode_error" if verdict.reason == UNREADABLE else verdict.reason
            raise FetchError(status, verdict.message)
        entry = config.optout.match_bytes(data)
        if entry is not None:
            raise FetchError(OPTED_OUT, f"opted out by {entry} (bytes as served)")
        stored, w, h, ow, oh = self.resizer(data)
        sha = hashlib.sha256(stored).hexdigest()
        entry = config.optout.match_sha256(sha)
        if entry is not None:
            raise FetchError(OPTED_OUT, f"opted out by {entry} (bytes as stored)")
        record.sha256, record.data, record.format = sha, stored, self.resizer.format
        record.width, record.height = w, h
        record.original_width, record.original_height = ow, oh
        record.status, record.error = STATUS_OK, None
