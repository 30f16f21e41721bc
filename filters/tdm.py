"""Reservations of text and data mining beyond robots.txt: the W3C TDM Reservation Protocol (TDMRep, final
community group report of 10 May 2024) and the `noai` / `noimageai` directives of robots meta tags and
X-Robots-Tag headers (DeviantArt's proposal of 2022, which img2dataset honours in X-Robots-Tag headers).

What reserves what (reason `tdm_reserved`):
- a page: its HTTP response header `tdm-reservation: 1` (as archived in the WARC), or, without that
  header, `<meta name="tdm-reservation" content="1">`; or `noai` in its X-Robots-Tag header or in a robots
  meta tag (`<meta name="robots" ...>` or one named for our user-agent token) -> the document is dropped;
- the images of a page: `noimageai` in the same places -> every image node of the page is dropped (so
  they are never fetched);
- an image: its own response header `tdm-reservation: 1` (download/fetcher.py, before the body is read).
A header or tag addressed to another crawler (`<meta name="otherbot" content="noai">`) does not apply.
- an image under a reserving rule of its origin's `/.well-known/tdmrep.json` (TDMRep's site-wide file:
  a JSON array of {"location": pattern, "tdm-reservation": 0 or 1, "tdm-policy": URL}; the first rule
  whose location matches the path applies; patterns as in robots.txt): refused before it is requested.
`tdm-reservation: 0` in the header overrides a reserving meta tag (TDMRep: HTTP headers take precedence
over metadata embedded in the content). A reserving tdmrep.json rule is honoured without asking for the
image, so an image header that would lift it is never seen: the cautious reading.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from interleaf.download.consent import PerOrigin, path_matcher, x_robots_directives, x_robots_refusal

log = logging.getLogger(__name__)

TDM_RESERVED = "tdm_reserved"


def reservation(values: Iterable[str]) -> bool | None:
    """A tdm-reservation value list: True when any value is "1", False when the values say only "0", None
    when absent or not 0/1 (TDMRep defines only those two). A header repeated is often folded into one
    value ("1, 1"); values that disagree are read the cautious way, as a reservation."""
    found = {v.strip() for value in values for v in value.split(",")} & {"0", "1"}
    return ("1" in found) if found else None


def image_refusal(headers: Iterable[tuple[str, str]], user_agent_token: str,
                  disallowed: Iterable[str], respect_tdm: bool = True) -> tuple[str, str] | None:
    """(reason, message) when an image response's own headers forbid keeping the image: an X-Robots-Tag
    directive in `disallowed` addressed to us ("x_robots_tag"), or `tdm-reservation: 1` ("tdm_reserved");
    None when they do not. The fetcher's rule for what it downloads, and ingest's for archived responses."""
    headers = list(headers)
    refusal = x_robots_refusal(_values(headers, "x-robots-tag"), user_agent_token, disallowed)
    if refusal is not None:
        return "x_robots_tag", refusal
    if respect_tdm and reservation(_values(headers, "tdm-reservation")):
        return TDM_RESERVED, "tdm-reservation: 1 (W3C TDM Reservation Protocol)"
    return None


def _values(pairs: Iterable[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in pairs if k.lower() == name]


def page_reservation(headers: Iterable[tuple[str, str]], meta: Iterable[tuple[str, str]],
                     user_agent_token: str) -> tuple[bool, bool]:
    """(the page is reserved, its images are reserved) from its response headers and its <meta name=...>
    tags, each a (name, value) pair."""
    headers, meta = list(headers), list(meta)
    token = user_agent_token.strip().lower()
    reserved = reservation(_values(headers, "tdm-reservation"))
    if reserved is None:
        reserved = bool(reservation(_values(meta, "tdm-reservation")))
    # robots meta tags hold the same directives as X-Robots-Tag, addressed by the tag's name instead
    directives = x_robots_directives(_values(headers, "x-robots-tag"), user_agent_token)
    robots = [content for name, content in meta if name.lower() in ("robots", token)]
    directives |= x_robots_directives(robots, token)  # the same grammar, separators and all
    return reserved or "noai" in directives, "noimageai" in directives


# ---------------------------------------------------------------- /.well-known/tdmrep.json

TDMREP_PATH = "/.well-known/tdmrep.json"
MAX_RULES = 20000  # the file is read up to 500 KiB (FetchConfig.robots_max_bytes): ~10,000 short rules


class TdmRep:
    """The rules of one origin's tdmrep.json; `reserved(url)` is True, False, or None when no rule matches."""

    def __init__(self, rules: list[tuple[Callable[[str], bool], bool]] | None = None):
        self.rules = rules or []

    @classmethod
    def parse(cls, text: str, where: str = TDMREP_PATH) -> TdmRep:
        """Rules from the file's text; a file that is not a JSON array of rules gives none (logged), and a
        rule without a location or a 0/1 reservation is skipped."""
        try:
            data = json.loads(text.removeprefix("\ufeff"))  # a byte-order mark is common in served JSON
        except (ValueError, RecursionError) as e:  # RecursionError: arrays nested past Python's stack
            log.info("%s is not JSON (%s): no TDM rules", where, str(e)[:80])
            return cls()
        if isinstance(data, dict):  # one rule written without its array: read as the array of it
            data = [data]
        if not isinstance(data, list):
            log.info("%s is not a JSON array: no TDM rules", where)
            return cls()
        rules = []
        for item in data[:MAX_RULES]:
            if not isinstance(item, dict):
                continue
            item = {str(k).lower(): v for k, v in item.items()}  # "Location", "TDM-Reservation"
            location, value = item.get("location"), item.get("tdm-reservation")
            if isinstance(value, bool):  # true / false for 1 / 0: what the author meant is plain
                value = int(value)
            if isinstance(location, str) and value in (0, 1, "0", "1"):
                rules.append((path_matcher(location if location.startswith(("/", "*")) else "/" + location),
                              str(value) == "1"))
        return cls(rules)

    def reserved(self, url: str) -> bool | None:
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for matches, reserved in self.rules:
            if matches(path):
                return reserved
        return None


class TdmRepCache:
    """tdmrep.json of each origin, fetched once on first use and kept; concurrent callers for one origin
    wait for one fetch. `fetch_text(url) -> (HTTP code, text)` does the request (the fetcher's guarded
    client). Anything but a 2xx answer, or a failure to reach the file, means no rules: TDMRep makes the
    file optional, and the image's own headers are still read."""

    def __init__(self, fetch_text: Callable[[str], tuple[int, str]]):
        self._fetch_text = fetch_text
        self._origins = PerOrigin(lambda origin: self._load(origin + TDMREP_PATH))
        self.fetches = 0  # tdmrep.json requests made (for tests)

    def get(self, url: str) -> TdmRep:
        return self._origins.get(url)

    def _load(self, url: str) -> TdmRep:
        self.fetches += 1
        try:
            code, text = self._fetch_text(url)
        except Exception as e:  # noqa: BLE001 (any failure to reach an optional file means no rules)
            log.debug("%s unavailable: %s", url, e)
            return TdmRep()
        return TdmRep.parse(text, url) if 200 <= code < 300 else TdmRep()
