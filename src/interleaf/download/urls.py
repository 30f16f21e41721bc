"""A URL as a browser sends it: parsed and serialised by the WHATWG URL standard (the `ada-url` package, a
conformant parser), so that what is requested, stored and checked against the address guard and the
blocklist is what a browser would request. The standard strips surrounding C0 controls and spaces, removes
tabs and newlines anywhere, reads a backslash as a slash in http(s) URLs ("host\\@other" is host
"host"), resolves dot segments ("/a/../b", "/%2e%2e/b"), maps hosts by UTS 46 ("faß.de" is xn--fa-hia.de,
not IDNA 2003's fass.de; fullwidth letters and digits fold to ASCII), reads a host that ends in a number as
an IPv4 address in any form (decimal, octal, hex, fewer than four parts), drops the default port and
percent-encodes (UTF-8; a page's query in the page's encoding: encode_query) where its percent-encode sets
say, leaving %XX escapes alone. An ASCII URL with nothing to change comes back unchanged, so image stores
made before stay keyed the same. Not requested, besides what the parser refuses: other schemes, the Fetch
standard's bad ports, hosts DNS cannot be asked for, URLs over MAX_URL_CHARS.
"""

from __future__ import annotations

import codecs
import re

import ada_url

_STRIP = "".join(chr(c) for c in range(0x21))  # C0 controls and space
_HTTP = ("http:", "https:")
_HOST = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?$")  # after IDNA: what DNS can be asked for
# The Fetch standard's bad ports: a browser refuses to connect to them (mail, IRC, ... and port 0)
BAD_PORTS = frozenset((
    0, 1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103,
    104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465, 512, 513, 514,
    515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993, 995, 1719, 1720, 1723,
    2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080))
# Longer URLs are not requested (Chrome's limit is 2 MB; servers answer 414 past a few KB): bounds the work
# one URL costs the blocklist and the fetcher
MAX_URL_CHARS = 65536


def _usv(text: str) -> str:
    """The string as a browser hands it to the URL parser (a USVString): lone surrogates become U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


_UTF = frozenset(("utf-8", "utf-16", "utf-16-le", "utf-16-be"))


def query_encoding(encoding: str | None) -> str | None:
    """The codec a document's URLs encode their query with, None for UTF-8 (the WHATWG URL standard: the
    document's encoding, UTF-8 for a UTF-16 document; "?q=ü" is "?q=%FC" on a windows-1252 page)."""
    if not encoding:
        return None
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return None
    return None if name in _UTF else name


def encode_query(url: str, encoding: str) -> str:
    """`url` with the non-ASCII characters of its query percent-encoded in `encoding` (a character the
    encoding lacks as its percent-encoded character reference, "%26%2326085%3B", as the standard says); the
    rest is left to the parser, which leaves %XX escapes alone."""
    url = _usv(url)
    q = url.find("?")
    end = url.find("#")
    if q < 0 or 0 <= end < q:
        return url
    end = len(url) if end < 0 else end
    query = url[q + 1:end]
    if query.isascii():
        return url
    encoded = _NON_ASCII_RUN.sub(lambda m: _percent_encode(m.group(), encoding), query)
    return f"{url[:q + 1]}{encoded}{url[end:]}"


_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")  # encoded a run at a time: ISO-2022-JP shifts once per run
_SPECIAL_QUERY_SET = frozenset(b' "#<>\'')  # with C0 controls and bytes above 0x7E


def _percent_encode(text: str, encoding: str) -> str:
    try:
        return "".join(f"%{b:02X}" if b < 0x21 or b > 0x7E or b in _SPECIAL_QUERY_SET else chr(b)
                       for b in text.encode(encoding))
    except UnicodeEncodeError:  # the standard's "percent-encode after encoding": %26%23<code point>%3B
        if len(text) > 1:
            return "".join(_percent_encode(ch, encoding) for ch in text)
        return f"%26%23{ord(text)}%3B"


def parse(url: str) -> ada_url.URL:
    """The WHATWG URL record of an absolute `url`. Raises ValueError (one line) for a string the standard's
    parser refuses."""
    try:
        return ada_url.URL(_usv(url))
    except ValueError:
        raise ValueError(f"not a URL by the WHATWG URL standard: {url[:200]!r}") from None


def join(base: str, url: str) -> str | None:
    """The serialised absolute URL of `url` read on a page at `base` (as an <img src>'s URL is), or None
    when the parser refuses it. An absolute `url` is read alone when `base` itself does not parse."""
    try:
        return ada_url.join_url(_usv(base), _usv(url))
    except ValueError:
        pass
    try:
        return ada_url.normalize_url(_usv(url))
    except ValueError:
        return None


def _check_host(host: str) -> None:
    """Raise ValueError for a host no lookup can be made for, so that its URL ends as bad_url (permanent)
    rather than as a failed lookup (transient, tried again on every rerun): a DNS name of more than 253
    characters or with a label of more than 63, an "xn--" label that is no punycode, an IPv6 literal with
    a zone identifier (the URL standard has none)."""
    if host.startswith("["):
        if "%" in host:
            raise ValueError(f"host {host!r}: an IPv6 zone identifier cannot be requested")
        return
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253:
        raise ValueError(f"host of {len(name)} characters is longer than DNS allows (253)")
    for label in name.split("."):
        if len(label) > 63:
            raise ValueError(f"host label of {len(label)} characters is longer than DNS allows (63)")
        if label.startswith("xn--"):
            try:  # UTS 46: the label decodes to a valid label that maps back to this one
                decoded = label[4:].encode("ascii").decode("punycode")
                valid = ada_url.idna_to_ascii(decoded) == label.encode("ascii")
            except UnicodeError:
                valid = False
            if not valid:
                raise ValueError(f"host label {label!r} is not punycode")


def as_read(url: str) -> str:
    """The URL as a browser reads it before parsing: surrounding C0 controls and spaces stripped, tabs and
    newlines removed anywhere ("java\\tscript:" is javascript:)."""
    return url.strip(_STRIP).replace("\t", "").replace("\n", "").replace("\r", "")


def request_url(url: str) -> str:
    """The http(s) URL as a browser would request it, without its fragment. Raises ValueError (one line)
    for one that cannot be requested: the parser refuses it (a bad port, IPv6 literal or host), another
    scheme, a host DNS cannot be asked for."""
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"a URL of {len(url)} characters is longer than requested ({MAX_URL_CHARS})")
    record = parse(as_read(url))
    if record.protocol not in _HTTP:
        raise ValueError(f"scheme {record.protocol[:-1]!r} is not fetched")
    if record.port and int(record.port) in BAD_PORTS:
        raise ValueError(f"port {record.port} is one a browser refuses (the Fetch standard's bad ports)")
    host = record.hostname
    if not (_HOST.match(host) or (host.startswith("[") and host.endswith("]"))):
        raise ValueError(f"host {host!r} has characters a host name cannot have")
    _check_host(host)
    href = record.href
    return href[: len(href) - len(record.hash)] if record.hash else href.removesuffix("#")
