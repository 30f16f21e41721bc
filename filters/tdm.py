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
`tdm-reservation: 0` in the header overrides a reserving meta tag (TDMRep: HTTP headers take precedence
over metadata embedded in the content). The site-wide `/.well-known/tdmrep.json` is not read yet.
"""

from __future__ import annotations

from collections.abc import Iterable

from interleaf.download.consent import x_robots_directives

TDM_RESERVED = "tdm_reserved"


def reservation(values: Iterable[str]) -> bool | None:
    """A tdm-reservation value list: True for "1", False for "0", None when absent or not 0/1 (TDMRep
    defines only those two)."""
    for value in values:
        value = value.strip()
        if value in ("0", "1"):
            return value == "1"
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
    for name, content in meta:
        if name.lower() in ("robots", token):
            directives |= {d.strip().lower() for d in content.split(",")}
    return reserved or "noai" in directives, "noimageai" in directives
