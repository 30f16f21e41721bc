"""Bytes of an HTML response to text: which character encoding the page is really in.

Order of evidence, after the WHATWG HTML "determining the character encoding" algorithm
(https://html.spec.whatwg.org/multipage/parsing.html#determining-the-character-encoding):
byte order mark, then the HTTP Content-Type charset, then a <meta charset> / <meta http-equiv> found by the
prescan, then detection; when the header and the meta tag disagree and the bytes decode under both, the
detector picks between the two (the meta tag when it names neither). Labels are mapped to the WHATWG
encoding names (so "iso-8859-1" decodes as windows-1252, as every browser does).

Unlike a browser we also check the declaration against the bytes, because crawls are full of pages that
declare one charset and use another (typically a template that says iso-8859-1 over a database that emits
UTF-8, or the reverse):
- bytes with non-ASCII content that are valid UTF-8 are UTF-8, whatever is declared: text in a legacy
  8-bit encoding almost never forms valid UTF-8 sequences by accident (Dürst, "The Properties and Promises
  of UTF-8", 1997; the same heuristic as Chromium's and Firefox's UTF-8 detection for unlabelled files);
- a declaration under which the bytes do not decode is discarded, and the next piece of evidence is used;
- with no usable declaration, uchardet (resiliparse.parse.encoding.detect_encoding) guesses.
The last resort decodes with replacement characters: `decode_html` never raises.
"""

from __future__ import annotations

import codecs
import logging
import re

from resiliparse.parse.encoding import detect_encoding, map_encoding_to_html5

log = logging.getLogger(__name__)

# WHATWG prescan reads the first 1024 bytes for a <meta> charset declaration.
_PRESCAN_BYTES = 1024
# uchardet sees this many bytes (half from each end): resiliparse's default, enough for a stable guess.
_DETECT_BYTES = 131072
# A page is "UTF-8 with a few broken bytes" (a record truncated mid-character, one pasted latin-1 string)
# when at least this many valid non-ASCII characters stand for each invalid byte. Legacy 8-bit text read as
# UTF-8 is the opposite: nearly every non-ASCII byte is invalid and hardly any multi-byte sequence is valid.
_MOSTLY_UTF8_RATIO = 20

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([^\s"';,]+)""", re.IGNORECASE)
_META = re.compile(rb"<meta\b[^>]*>", re.IGNORECASE)
_META_CHARSET = re.compile(rb"""charset\s*=\s*["']?\s*([^\s"'/>;,]+)""", re.IGNORECASE)
_HTTP_EQUIV = re.compile(rb"""http-equiv\s*=\s*["']?\s*content-type""", re.IGNORECASE)
_META_CHARSET_ATTR = re.compile(rb"""\bcharset\s*=""", re.IGNORECASE)
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_NON_ASCII = re.compile("[^\x00-\x7f\udc80-\udcff]")


# WHATWG encodings whose decoder is wider than Python's codec of the same name: the Python codec that reads
# the bytes as a browser does (Shift_JIS is Windows-31J, with the NEC and IBM rows; EUC-KR is Unified Hangul
# Code; Big5 includes HKSCS; GBK decodes as gb18030; windows-874 has the Windows punctuation and euro sign).
# (keys: the names resiliparse's WHATWG mapping gives; it names windows-874 iso8859-11)
_WHATWG_DECODERS = {"shift_jis": "cp932", "euc_kr": "cp949", "big5": "big5hkscs", "gbk": "gb18030",
                    "iso8859-11": "cp874"}
# Encodings whose text is all ASCII bytes: a page in them is not "ASCII, hence UTF-8".
_SEVEN_BIT = ("iso2022_jp",)


def _label(name: str | bytes | None) -> str | None:
    """A charset label as a Python codec name under the WHATWG mapping, or None when unknown."""
    if not name:
        return None
    if isinstance(name, bytes):
        name = name.decode("ascii", "ignore")
    mapped = map_encoding_to_html5(name.strip().lower(), fallback_utf8=False)
    if not mapped:
        return None
    mapped = _WHATWG_DECODERS.get(mapped.lower(), mapped)
    try:
        return codecs.lookup(mapped).name
    except LookupError:
        return None


def header_charset(content_type: str | None) -> str | None:
    """The charset parameter of an HTTP Content-Type value, as a codec name (None when absent or unknown)."""
    if not content_type:
        return None
    m = _HEADER_CHARSET.search(content_type)
    return _label(m.group(1)) if m else None


def meta_charset(body: bytes) -> str | None:
    """The charset a page declares in <meta charset> or <meta http-equiv=Content-Type> in its first 1024
    bytes, as a codec name."""
    head = body[:_PRESCAN_BYTES]
    for m in _META.finditer(head):
        tag = m.group(0)
        # <meta charset=x> always counts; a charset inside content="..." only with http-equiv=content-type
        charset_attr = _META_CHARSET_ATTR.search(tag) and b"content" not in tag.lower()
        if not charset_attr and not _HTTP_EQUIV.search(tag):
            continue
        found = _META_CHARSET.search(tag)
        if found:
            label = _label(found.group(1))
            # WHATWG: a meta declaration of UTF-16 means UTF-8 (the prescan just read it as ASCII)
            if label in ("utf-16-le", "utf-16-be", "utf-16"):
                return "utf-8"
            if label:
                return label
    return None


def _decodes(body: bytes, encoding: str) -> bool:
    try:
        body.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return False
    return True


def _mostly_utf8(body: bytes) -> bool:
    text = body.decode("utf-8", errors="surrogateescape")  # each invalid byte becomes one lone surrogate
    invalid = len(_ESCAPED_BYTE.findall(text))
    return len(_NON_ASCII.findall(text)) >= _MOSTLY_UTF8_RATIO * invalid


def sniff_encoding(body: bytes, content_type: str | None = None) -> tuple[str, str]:
    """(codec name, evidence) for a page's bytes; evidence is one of "bom", "ascii", "utf-8-valid",
    "utf-8-mostly" (decode with replacement), "header", "meta", "detected" or "fallback" (no encoding decoded
    the bytes cleanly: decode with replacement)."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name, "bom"
    header = header_charset(content_type)
    if header in ("utf-16-le", "utf-16-be") and b"\x00" in body[:_PRESCAN_BYTES] and _decodes(body, header):
        return header, "header"  # UTF-16 without a BOM, as the header says (only a header can say it)
    if body.isascii():
        if b"\x1b" in body:  # escape sequences: a 7-bit encoding such as ISO-2022-JP, when one is declared
            for declared, evidence in ((header, "header"), (meta_charset(body), "meta")):
                if declared in _SEVEN_BIT and _decodes(body, declared):
                    return declared, evidence
        return "utf-8", "ascii"  # every web encoding reads ASCII bytes the same way (no EBCDIC on the web)
    # Valid UTF-8 beats any declaration (module docstring); checking first also covers declared utf-8.
    if _decodes(body, "utf-8"):
        return "utf-8", "utf-8-valid"
    if _mostly_utf8(body):
        return "utf-8", "utf-8-mostly"
    declared = [(encoding, evidence) for encoding, evidence in ((header_charset(content_type), "header"),
                                                                (meta_charset(body), "meta"))
                if encoding and encoding != "utf-8" and _decodes(body, encoding)]
    guess = None
    if len(declared) == 2 and declared[0][0] != declared[1][0]:
        # header and meta disagree and the bytes decode under both (windows-1252 decodes nearly anything):
        # the one whose text agrees best with the detector's guess wins (a guess of iso-8859-7 for a
        # windows-1253 page agrees with windows-1253 on every Greek letter); on a tie, the page's own meta
        # wins over a server default (an iso-8859-1 header over a windows-1251 page reads as mojibake)
        guess = _label(detect_encoding(body, max_len=_DETECT_BYTES, html5_compatible=True))
        if guess and _decodes(body, guess):
            reference = body.decode(guess)
            scores = [sum(a == b for a, b in zip(body.decode(e), reference) if a > "\x7f")
                      for e, _ in declared]
            if scores[0] != scores[1]:
                return declared[scores.index(max(scores))]
        return declared[1]
    if declared:
        return declared[0]
    guess = _label(detect_encoding(body, max_len=_DETECT_BYTES, html5_compatible=True))
    if guess and guess != "utf-8" and _decodes(body, guess):
        return guess, "detected"
    # Nothing decodes cleanly: a mostly-right page with a few broken bytes. Prefer what was declared.
    declared = header_charset(content_type) or meta_charset(body)
    return declared or guess or "utf-8", "fallback"


def decode_html(body: bytes, content_type: str | None) -> str:
    """The text of an HTML response body. Never raises: undecodable bytes become U+FFFD."""
    return decode_html_as(body, content_type)[0]


def decode_html_as(body: bytes, content_type: str | None) -> tuple[str, str]:
    """decode_html's text and the codec it decoded with: the document's encoding, which a browser also uses
    for the query of the URLs in it (filters/html_images.resolve_url)."""
    if not body:
        return "", "utf-8"
    encoding, evidence = sniff_encoding(body, content_type)
    if evidence == "bom":
        body = body[len(next(b for b, n in _BOMS if n == encoding)):]
    if evidence in ("fallback", "utf-8-mostly"):
        log.debug("no charset decodes the page cleanly; decoding as %s with replacement", encoding)
    try:
        return body.decode(encoding, errors="replace"), encoding
    except LookupError:  # a codec that resiliparse knows and Python does not: cannot happen after _label
        return body.decode("utf-8", errors="replace"), "utf-8"
