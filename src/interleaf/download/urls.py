"""A URL as a browser sends it (the WHATWG URL standard's serialisation, for http and https): surrounding
C0 controls and spaces stripped, tabs and newlines removed, the scheme and host lower-cased, a non-ASCII host
in its IDNA form, the default port dropped, and the path and query percent-encoded (UTF-8) where the
standard's percent-encode sets say, existing %XX escapes left alone. ASCII URLs with nothing to encode come
back unchanged apart from the case of scheme and host, a default port and an empty path ("/"), so image
stores made before stay keyed the same. A host that ends in a number is an IPv4 address in any of the forms
the standard accepts (decimal, octal, hex, fewer than four parts) and is written as a dotted quad, so the
blocklist and the address guard see the address that is requested.
"""

from __future__ import annotations

import re
import string
from urllib.parse import urlsplit

_STRIP = "".join(chr(c) for c in range(0x21))  # C0 controls and space
# the WHATWG percent-encode sets for special schemes, beyond C0 controls, DEL and non-ASCII
_PATH_SET = frozenset(' "#<>?`{}')
_QUERY_SET = frozenset(" \"#<>'")
_USERINFO_SET = frozenset(' "#<>?`{}/:;=@[\\]^|')
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?$")  # after IDNA: what DNS can be asked for


def _encode(text: str, encode: frozenset[str]) -> str:
    out = []
    for ch in text:
        if ch in encode or ord(ch) < 0x21 or ord(ch) >= 0x7F:
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out)


def _ends_in_a_number(host: str) -> bool:
    """The WHATWG URL standard's ends-in-a-number checker: the last label (a trailing dot aside) is all
    digits, or 0x followed by hex digits."""
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()
    last = labels[-1]
    if last.isdigit() and last.isascii():
        return True
    return last[:2] in ("0x", "0X") and all(c in string.hexdigits for c in last[2:])


def ipv4(host: str) -> str | None:
    """A host that the WHATWG URL standard parses as an IPv4 address, in dotted-quad form: decimal, octal
    (leading 0) and hex (0x) parts, and fewer than four parts ("127.1", "2130706433", "0x7f.0.0.1" are all
    127.0.0.1); None when the host does not end in a number (a domain). Raises ValueError for one that ends
    in a number but is no address (a browser refuses such a URL)."""
    if not host or not _ends_in_a_number(host):
        return None
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if len(parts) > 4:
        raise ValueError(f"host {host!r} ends in a number but has more than four parts")
    numbers = []
    for part in parts:
        base, digits = 10, part
        if part[:2] in ("0x", "0X"):
            base, digits = 16, part[2:] or "0"
        elif len(part) > 1 and part.startswith("0"):
            base, digits = 8, part[1:]
        try:
            if not (digits.isascii() and digits.isalnum()):
                raise ValueError(digits)
            numbers.append(int(digits, base))
        except ValueError:
            raise ValueError(f"host {host!r} ends in a number but is not an IPv4 address") from None
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError(f"host {host!r} is an IPv4 address out of range")
    value = numbers[-1] + sum(n * 256 ** (3 - i) for i, n in enumerate(numbers[:-1]))
    return ".".join(str((value >> shift) & 255) for shift in (24, 16, 8, 0))


def _host(hostname: str) -> str:
    if hostname.startswith("["):  # an IPv6 literal, checked by urlsplit
        return hostname.lower()
    if hostname.isascii():
        return ipv4(hostname) or hostname.lower()
    try:
        labels = [label.encode("idna").decode("ascii") if not label.isascii() else label.lower()
                  for label in hostname.rstrip(".").split(".")]
        return ".".join(labels) + ("." if hostname.endswith(".") else "")
    except UnicodeError as e:
        raise ValueError(f"host {hostname!r} has no IDNA form: {e}") from None


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
            try:
                label[4:].encode("ascii").decode("punycode")
            except UnicodeError:
                raise ValueError(f"host label {label!r} is not punycode") from None


def as_read(url: str) -> str:
    """The URL as a browser reads it before parsing: surrounding C0 controls and spaces stripped, tabs and
    newlines removed anywhere ("java\\tscript:" is javascript:)."""
    return url.strip(_STRIP).replace("\t", "").replace("\n", "").replace("\r", "")


def request_url(url: str) -> str:
    """The http(s) URL as a browser would request it, without its fragment. Raises ValueError (one line)
    for one that cannot be requested: another scheme, no host, a bad port or IPv6 literal, a host with no
    IDNA form."""
    text = as_read(url)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"malformed URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"scheme {scheme or '(none)'!r} is not fetched")
    netloc = parts.netloc.rsplit("@", 1)[-1]
    hostname = netloc
    if hostname.startswith("["):
        hostname = hostname[: hostname.find("]") + 1]
    elif ":" in hostname:
        hostname = hostname.rsplit(":", 1)[0]
    if not hostname:
        raise ValueError("URL without a host")
    host = _host(hostname)
    if not (_HOST.match(host) or (host.startswith("[") and host.endswith("]"))):
        raise ValueError(f"host {hostname!r} has characters a host name cannot have")
    _check_host(host)
    userinfo = ""
    if "@" in parts.netloc:
        userinfo = _encode(parts.netloc.rsplit("@", 1)[0], _USERINFO_SET - {":"}) + "@"
    port_part = f":{port}" if port is not None and port != _DEFAULT_PORTS[scheme] else ""
    path = _encode(parts.path or "/", _PATH_SET)
    has_query = parts.query or text.split("#", 1)[0].endswith("?")
    query = f"?{_encode(parts.query, _QUERY_SET)}" if has_query else ""
    return f"{scheme}://{userinfo}{host}{port_part}{path}{query}"
