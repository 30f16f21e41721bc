"""Where an <img> points and what its URL says: lazy-loader attributes, srcset parsing and choice, declared
sizes, absolute http(s) URLs, and the URL patterns of tracking pixels, ads, spacers and icons. Used by the
HTML walk of filters/html.py."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from interleaf.download.urls import encode_query, join

if TYPE_CHECKING:
    from selectolax.lexbor import LexborNode

    from interleaf.filters.html_config import ExtractConfig

# Lazy loaders put the real image in these attributes and a placeholder in src (lazysizes, WordPress
# a3-lazy-load, jQuery lazyload "data-original", OBELICS's own list in obelics/utils/simplification_utils.py).
LAZY_SRC_ATTRS = ("data-src", "data-lazy-src", "data-original", "data-lazy", "data-url", "data-hi-res-src",
                  "data-full-src", "data-lazyload", "data-echo", "data-img-src", "data-src-fg", "src2")
# Web beacons by host or path, from EasyPrivacy's most common entries.
TRACKER = re.compile(r"//([^/]*\.)?(doubleclick\.net|google-analytics\.com|googletagmanager\.com"
                     r"|facebook\.com/tr|scorecardresearch\.com|quantserve\.com|pixel\.wp\.com|stats\.wp\.com"
                     r"|bat\.bing\.com|analytics\.twitter\.com|t\.co/i/adsct)"
                     r"|/(pixel|beacon|tracking?)(\.gif|\.png|\.php|/|\?)", re.IGNORECASE)
AD_HOST = re.compile(r"//([^/]*\.)?(googlesyndication\.com|adservice\.google\.|amazon-adsystem\.com"
                     r"|taboola\.com|outbrain\.com|adnxs\.com|criteo\.(com|net))/", re.IGNORECASE)
SPACER_NAME = re.compile(r"/(spacer|blank|transparent|trans|clear|clearpixel|shim|spc|space|empty|dot|pix"
                         r"|1x1|s)\.(gif|png)(\?|$)", re.IGNORECASE)
ICON_URL = re.compile(r"\.ico(\?|$)|/favicon|/emoji/|/smilies/", re.IGNORECASE)
ICON_CLASSES = frozenset(["icon", "icons", "emoji", "favicon", "smiley"])
# src values that scripts and templates leave behind; an src that resolves to the page itself is one too
NOT_A_URL = frozenset(("null", "undefined", "none", "false", "#", "about:blank"))
_DIMENSION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(px)?\s*;?\s*$", re.IGNORECASE)
STYLE_SIDE = re.compile(r"(?<![-\w])(width|height)\s*:\s*(\d+(?:\.\d*)?)px", re.IGNORECASE)


def parse_dimension(value: str | None, *, limit: int = 65535) -> int | None:
    """A declared width/height as an int: "100", "100px", "100.5" -> 100; "50%", "auto", garbage -> None."""
    if not value:
        return None
    m = _DIMENSION.match(value)
    if not m:
        return None
    n = int(float(m.group(1)))
    return n if n <= limit else None


# HTML's ASCII whitespace: what attribute values and srcset lists are trimmed and split on (a no-break or
# ideographic space belongs to the URL, which percent-encodes it)
HTML_SPACE = " \t\n\f\r"
_SEPARATORS = re.compile(r"[ \t\n\f\r,]*")
_NON_SPACE = re.compile(r"[^ \t\n\f\r]*")
_SPACES = re.compile(r"[ \t\n\f\r]+")
_PAREN_DEPTH = {"(": 1, ")": -1}


def parse_srcset(value: str) -> list[tuple[str, int | None, float | None]]:
    """(url, width, density) candidates of a srcset, after the WHATWG parsing algorithm: URLs may contain
    commas (image CDNs put transformations there), a candidate ends at a comma after its descriptors."""
    out, pos, n = [], 0, len(value)
    while pos < n:
        pos = _SEPARATORS.match(value, pos).end()
        start = pos
        pos = _NON_SPACE.match(value, pos).end()
        url, descriptors = value[start:pos], ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start = pos
            comma = value.find(",", pos)
            comma = n if comma < 0 else comma
            if value.find("(", pos, comma) < 0 and value.find(")", pos, comma) < 0:  # end at the comma
                pos = comma
            else:  # a comma inside parentheses does not end them
                depth = 0
                while pos < n and not (value[pos] == "," and depth == 0):
                    depth += _PAREN_DEPTH.get(value[pos], 0)
                    pos += 1
            descriptors = value[start:pos]
        if not url:
            continue
        width, density = None, None
        for d in _SPACES.split(descriptors.strip(HTML_SPACE)):
            try:
                if d[-1:] in "wW":
                    width = int(d[:-1])
                elif d[-1:] in "xX":
                    density = float(d[:-1])
            except ValueError:
                pass  # an invalid descriptor: the candidate still counts, without it
        out.append((url, width, density))
    return out


def pick_srcset(candidates: list[tuple[str, int | None, float | None]], config: ExtractConfig) -> str | None:
    """The largest width up to config.max_srcset_width (else the smallest width); with densities only, the
    largest density up to config.max_srcset_density (else the smallest). data: candidates never count."""
    candidates = [c for c in candidates if not c[0].lower().startswith("data:")]
    if not candidates:
        return None
    if any(w is not None for _, w, _ in candidates):
        widths = [(w, u) for u, w, _ in candidates if w is not None]
        fitting = [c for c in widths if c[0] <= config.max_srcset_width]
        return max(fitting)[1] if fitting else min(widths)[1]
    densities = [(d if d is not None else 1.0, u) for u, _, d in candidates]
    fitting = [c for c in densities if c[0] <= config.max_srcset_density]
    return max(fitting)[1] if fitting else min(densities)[1]


def image_source(attrs: dict, config: ExtractConfig, fallback_srcset: str | None = None) -> str | None:
    """The URL an <img> shows once its lazy loader has run. In order: a lazy srcset (data-srcset), a lazy
    single URL (data-src ...), src, srcset, a <picture><source> srcset; a data: URI only when nothing else.

    src beats a plain srcset (config.prefer_srcset reverses that): it is the page's default rendition, big
    enough for the image filters, and the URL other extractions (OBELICS, MMC4, Readability) record, so
    images match across datasets. A lazy loader's data-* attributes beat src, which then holds a placeholder.
    """
    def pick(value: str | None) -> str | None:
        return pick_srcset(parse_srcset(value), config) if value else None

    lazy = pick(attrs.get("data-srcset")) or pick(attrs.get("data-lazy-srcset"))
    if lazy:
        return lazy
    singles = [(attrs.get(name) or "").strip(HTML_SPACE) for name in (*LAZY_SRC_ATTRS, "src")]
    real = [v for v in singles if v and not v.lower().startswith("data:")]
    srcset = pick(attrs.get("srcset"))
    if srcset and (config.prefer_srcset or not real):
        return srcset
    if real:
        return real[0]
    return pick(fallback_srcset) or next((v for v in singles if v), None)


def resolve_url(base_url: str, src: str, encoding: str | None = None) -> str | None:
    """The absolute http(s) URL of an src (relative, root-relative, protocol-relative) as a browser resolves
    and serialises it (WHATWG URL standard: download.urls.join), or None for another scheme or a string the
    standard's parser refuses. `encoding`: the codec of a page not in UTF-8 (download.urls.query_encoding),
    which encodes the query."""
    url = join(base_url, encode_query(src, encoding) if encoding else src)
    return url if url is not None and url.startswith(("http://", "https://")) else None


def picture_source(picture: LexborNode) -> str | None:
    """The srcset of a <picture>'s first <source> that has one (its own children: a selector over the
    subtree would rescan nested pictures per level)."""
    for source in picture.iter(include_text=False):
        if source.tag == "source":
            srcset = source.attributes.get("data-srcset") or source.attributes.get("srcset")
            if srcset:
                return srcset
    return None
