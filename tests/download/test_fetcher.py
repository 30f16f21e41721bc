"""The fetch-one-URL function against a hostile server on 127.0.0.1: every case ends in its status, in time.

All cases run at once on the stage's own HostScheduler (one host, no per-host limit), so the module takes
about as long as its slowest case (the total_timeout_s of 2 s), not their sum.
"""

import gzip
import hashlib
import importlib.util
import io
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from interleaf.download.client import retry_after_seconds
from interleaf.download.fetcher import FetchConfig, Fetcher, is_transient
from interleaf.download.politeness import HostScheduler, JobResult
from interleaf.filters.optout import OptOutList
from interleaf.schemas.image import FETCH_STATUSES

_spec = importlib.util.spec_from_file_location("fetch_servers",
                                               Path(__file__).with_name("test_fetch_servers.py"))
servers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(servers)

TOTAL_S = 2.0  # total_timeout_s of the tests' config
OTHER = servers.jpeg((320, 240), seed=3)  # served at /other.jpg; opted out by its sha256

# (name, path, expected status, most seconds it may take)
CASES = [
    ("ok", "/ok/a.jpg", "ok", TOTAL_S),
    ("slow drip body", "/drip", "timeout", TOTAL_S + 1.5),
    ("slow drip headers", "/slow-headers", "timeout", TOTAL_S + 1.5),
    ("no answer", "/hang", "timeout", TOTAL_S + 1.5),
    ("redirect loop", "/loop/a", "too_many_redirects", TOTAL_S),
    ("redirect chain of 10", "/chain/9", "too_many_redirects", TOTAL_S),
    ("redirect chain of 4", "/chain/3", "ok", TOTAL_S),
    ("endless body", "/endless", "too_large", TOTAL_S + 1.5),
    ("Content-Length 1 TB", "/huge-declared", "too_large", TOTAL_S),
    ("20000x20000 PNG bomb", "/bomb.png", "too_large", TOTAL_S + 1.5),
    ("Pillow's decompression_bomb.gif", "/bomb.gif", "too_large", TOTAL_S),
    ("HTML served as image/jpeg", "/html-as-jpeg", "not_image", TOTAL_S),
    ("gzip bomb as Content-Encoding", "/gzip-bomb", "too_large", TOTAL_S + 1.5),  # decoded under the cap
    ("a JPEG the server gzipped anyway", "/gzipped.jpg", "ok", TOTAL_S),  # a browser shows it
    ("truncated PNG", "/truncated.png", "decode_error", TOTAL_S),
    ("40x30 image", "/tiny.png", "too_small", TOTAL_S),
    ("900x200 image", "/wide.jpg", "bad_aspect", TOTAL_S),
    ("429 once, Retry-After 1", "/429?n=1&after=1", "ok", 1.0 + 2 * TOTAL_S),
    ("429 with Retry-After 3600", "/429?n=99&after=3600", "http_4xx", TOTAL_S),
    ("429 past the retries", "/429?n=99&after=0", "http_4xx", 3 * TOTAL_S),
    ("503 once", "/503?n=1", "ok", 2 * TOTAL_S),
    ("connection reset once", "/reset?n=1", "ok", 2 * TOTAL_S),
    ("connection reset always", "/reset?n=99", "connect", 4 * TOTAL_S),
    ("404", "/404", "http_4xx", TOTAL_S),
    ("500", "/500", "http_5xx", 4 * TOTAL_S),
    ("robots.txt Disallow: /private/", "/private/x.jpg", "robots_txt", TOTAL_S),
    ("robots.txt Allow: /private/ok (longer)", "/private/ok.jpg", "ok", TOTAL_S),
    ("robots.txt Disallow: /*/no-*.jpg$ for interleaf", "/ok/no-thanks.jpg", "robots_txt", TOTAL_S),
    ("robots.txt $ anchors the rule", "/ok/no-thanks.jpg?v=2", "ok", TOTAL_S),
    ("PNG", "/ok.png", "ok", TOTAL_S),
    ("redirect into robots.txt Disallow", "/redirect?to=/private/y.jpg", "robots_txt", TOTAL_S),
    ("X-Robots-Tag: noai", "/xrt?v=noai", "x_robots_tag", TOTAL_S),
    ("X-Robots-Tag: interleaf: noimageai", "/xrt?v=interleaf:%20noimageai", "x_robots_tag", TOTAL_S),
    ("X-Robots-Tag: INTERLEAF: NoIndex", "/xrt?v=INTERLEAF:%20NoIndex", "x_robots_tag", TOTAL_S),
    ("X-Robots-Tag: otherbot: noindex", "/xrt?v=otherbot:%20noindex", "ok", TOTAL_S),
    ("X-Robots-Tag: nofollow, otherbot: noai", "/xrt?v=nofollow,%20otherbot:%20noai", "ok", TOTAL_S),
    ("X-Robots-Tag: otherbot: noai, interleaf: noimageindex",
     "/xrt?v=otherbot:%20noai,%20interleaf:%20noimageindex", "x_robots_tag", TOTAL_S),
    ("two X-Robots-Tag headers, second noimageindex", "/xrt?v=nofollow&v=noimageindex", "x_robots_tag",
     TOTAL_S),
    ("X-Robots-Tag: unavailable_after: <date>", "/xrt?v=unavailable_after:%2025%20Jun%202010", "ok", TOTAL_S),
    ("X-Robots-Tag: none", "/xrt?v=none", "x_robots_tag", TOTAL_S),
    ("opted out by URL", "/ok/opted-out.jpg", "opted_out", TOTAL_S),
    ("opted out by sha256 of the bytes", "/other.jpg", "opted_out", TOTAL_S),
    ("redirect to an opted-out URL", "/redirect?to=/ok/opted-out.jpg", "opted_out", TOTAL_S),
    ("redirect to file://", "/redirect?to=file:///etc/passwd", "unsupported_scheme", TOTAL_S),
    ("redirect to a malformed URL", "/redirect?to=http://%5B::1/x.jpg", "bad_url", TOTAL_S),
    ("malformed IPv6 literal", "http://[::1/x.jpg", "bad_url", TOTAL_S),
    ("port that is not a number", "http://127.0.0.1:port/x.jpg", "bad_url", TOTAL_S),
]


class _Hostile(servers.HostileServer):
    def handle_get(self, h):
        if h.path == "/other.jpg":
            return self.send(h, 200, OTHER)
        if h.path == "/gzipped.jpg":
            return self.send(h, 200, gzip.compress(servers.jpeg((320, 240), seed=4)), "image/jpeg",
                             [("Content-Encoding", "gzip")])
        return super().handle_get(h)


def config(**overrides) -> FetchConfig:
    base = dict(allow_private_hosts=True, connect_timeout_s=1.0, read_timeout_s=1.0, total_timeout_s=TOTAL_S,
                max_bytes=2 * 2**20, retries=2, backoff_s=0.2, max_retry_after_s=5.0, image_size=128,
                optout=OptOutList.from_lines(["url:http://127.0.0.1:*/ok/opted-out.jpg",
                                              f"sha256:{hashlib.sha256(OTHER).hexdigest()}"]))
    return FetchConfig(**{**base, **overrides})


class _ResizerSpy:
    """Stands in front of img2dataset's Resizer: records the size of everything that reached OpenCV and
    the most calls that were ever inside it at once."""

    def __init__(self, inner):
        self.inner = inner
        self.sizes, self.active, self.max_active = [], 0, 0
        self._lock = threading.Lock()

    def __call__(self, stream):
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            with Image.open(stream) as im:
                self.sizes.append(im.size)
            stream.seek(0)
            time.sleep(0.05)  # widen the window in which an unserialised second call would overlap
            return self.inner(stream)
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture(scope="module")
def hostile():
    server = _Hostile()
    yield server
    server.close()


@pytest.fixture(scope="module")
def outcomes(hostile):
    """{name: (record, seconds, attempts)} for every case, fetched concurrently."""
    fetcher = Fetcher(config())
    fetcher.resizer._resizer = spy = _ResizerSpy(fetcher.resizer._resizer)
    started, attempts, results = {}, {}, {}

    def work(host, url, attempt):
        started.setdefault(url, time.monotonic())
        attempts[url] = attempt + 1
        outcome = fetcher.fetch(url, attempt)
        return JobResult(value=outcome.record, retry_after=outcome.retry_after)

    def done(host, url, record):
        results[url] = (record, time.monotonic() - started[url], attempts[url])

    scheduler = HostScheduler(work, done, threads=len(CASES), per_host_concurrency=len(CASES),
                              per_host_rate=0)
    urls = {name: (hostile.base + path if path.startswith("/") else path) for name, path, _, _ in CASES}
    scheduler.submit("hostile", list(urls.values()))
    assert scheduler.wait(0, timeout=60), "the hostile cases did not all finish within 60 s"
    scheduler.close()
    yield {name: results[url] for name, url in urls.items()}, fetcher, spy
    fetcher.close()


@pytest.mark.parametrize("name,path,expected,seconds", CASES, ids=[c[0] for c in CASES])
def test_hostile_case(outcomes, name, path, expected, seconds):
    record, elapsed, attempts = outcomes[0][name]
    assert record.status == expected, f"{name}: {record.status} ({record.error})"
    assert record.status in FETCH_STATUSES
    assert elapsed <= seconds + 1.5, f"{name} took {elapsed:.1f}s, more than {seconds}s"
    if expected == "ok":
        assert record.data and record.sha256 == hashlib.sha256(record.data).hexdigest()
        with Image.open(io.BytesIO(record.data)) as im:
            assert im.format == "JPEG" and im.size == (record.width, record.height)
        assert min(record.width, record.height) == 128  # resized to image_size 128, keep_ratio
        assert (record.original_width, record.original_height) in ((320, 240), (300, 200))
    else:
        assert record.data is None and record.sha256 is None and record.error


def test_429_waited_for_retry_after(outcomes):
    record, elapsed, attempts = outcomes[0]["429 once, Retry-After 1"]
    assert attempts == 2 and elapsed >= 1.0
    record, elapsed, attempts = outcomes[0]["429 with Retry-After 3600"]
    assert attempts == 1 and "Retry-After: 3600" in record.error and is_transient(record)
    assert outcomes[0]["429 past the retries"][2] == 3  # 1 + config.retries


def test_nothing_oversized_reached_the_resizer_and_never_two_at_once(outcomes):
    fetcher, spy = outcomes[1], outcomes[2]
    assert len(spy.sizes) >= 10 and max(w * h for w, h in spy.sizes) <= fetcher.rules.max_pixels
    assert spy.max_active == 1


def test_robots_txt_fetched_once_per_host(outcomes, hostile):
    assert hostile.hits["/robots.txt"] == 1
    assert outcomes[1].robots.fetches == 1


def test_consent_refusals_never_requested_the_image(outcomes, hostile):
    assert hostile.hits["/private/x.jpg"] == 0 and hostile.hits["/ok/no-thanks.jpg"] == 0
    assert hostile.hits["/ok/opted-out.jpg"] == 0 and hostile.hits["/private/y.jpg"] == 0


def test_transient_and_permanent_failures(outcomes):
    status = {name: (r.status, is_transient(r)) for name, (r, _, _) in outcomes[0].items()}
    assert status["no answer"] == ("timeout", True)
    assert status["connection reset always"] == ("connect", True)
    assert status["500"] == ("http_5xx", True)
    assert status["404"] == ("http_4xx", False)
    assert status["robots.txt Disallow: /private/"] == ("robots_txt", False)


# ---------------------------------------------------------------- pure pieces


def test_retry_after_forms():
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_config_is_validated():
    with pytest.raises(ValueError, match="encode_format"):
        FetchConfig(encode_format="bmp").validate()
    with pytest.raises(ValueError, match="allowed_networks"):
        FetchConfig(allowed_networks=("not-a-network",)).validate()
