"""WARC records to HTML pages and archived images, with every other record counted by reason.

Reads with FastWARC (chosen by measurement, bench/ingest_bench.py and docs/ingest.md: about 3x warcio's
record rate here, and it recovers the fixture with a malformed Content-Length where warcio stops after
three records). The HTTP payload is read raw so that a truncated record can be told apart (fewer bytes than
the record declares), then its transfer and content encodings (chunked; gzip, deflate, br, zstd) are
undone here.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import BinaryIO

from fastwarc.warc import ArchiveIterator, WarcRecordType

log = logging.getLogger(__name__)

HTML_TYPES = ("text/html", "application/xhtml+xml")
PAGE = "page"
IMAGE = "image"


@dataclass
class WarcItem:
    """An HTML page or an image response (or a revisit of one) read from a WARC."""

    kind: str  # PAGE or IMAGE
    url: str  # WARC-Target-URI
    date: datetime | None  # WARC-Date
    source_file: str
    offset: int  # byte offset of the record in the (compressed) file
    payload_digest: str | None  # WARC-Payload-Digest, e.g. "sha1:BASE32" (computed when absent)
    content_type: str | None  # the HTTP Content-Type header, parameters included
    body: bytes | None  # decoded HTTP payload; None for a revisit
    revisit: bool = False  # a revisit record: resolve `payload_digest` against an original
    # the response's consent headers (CONSENT_HEADERS, read by filters/tdm.py) as (name, value) pairs
    consent: tuple[tuple[str, str], ...] = ()


@dataclass
class Skipped:
    """A record that yields neither a page nor an image, and why."""

    reason: str


# Response headers that reserve a page from text and data mining (filters/tdm.py), kept with the page
CONSENT_HEADERS = ("tdm-reservation", "x-robots-tag")
MAX_CONSENT_VALUES = 256  # distinct values; 16 repeated "index" headers used to hide a 17th "noai"


def _consent(rec) -> tuple[tuple[str, str], ...]:
    """The TDM and robots headers of the archived response (bounded: a hostile record may repeat them)."""
    if rec.http_headers is None:
        return ()
    found = dict.fromkeys((name.lower(), value[:1024]) for name, value in rec.http_headers.astuples()
                          if name.lower() in CONSENT_HEADERS)  # distinct, in order: a repeated one is one
    return tuple(list(found)[:MAX_CONSENT_VALUES])


def _content_type(rec) -> str | None:
    return rec.http_headers.get("Content-Type") if rec.http_headers is not None else None


def _mime(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _dechunk(data: bytes) -> bytes:
    """Undo HTTP/1.1 chunked transfer encoding; raises ValueError on malformed chunks."""
    out, pos = bytearray(), 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise ValueError("chunk size line not terminated")
        size = int(data[pos:end].split(b";", 1)[0].strip() or b"0", 16)
        if size < 0:  # int() reads "-6": a loop that never ends, its output growing, unless refused
            raise ValueError("negative chunk size")
        if size == 0:
            return bytes(out)
        start = end + 2
        if start + size > len(data):
            raise ValueError("chunk runs past the end of the payload")
        out += data[start:start + size]
        pos = start + size + 2


DEFAULT_MAX_BYTES = 64 * 2**20  # a record's payload, on the wire and once decoded (bounds memory per record)


class TooLarge(ValueError):
    """A payload above the cap, on the wire or once decoded."""


def _capped(out: bytes, limit: int, what: str) -> bytes:
    if len(out) > limit:
        raise TooLarge(f"{what} decodes to more than {limit} bytes")
    return out


def _inflate(data: bytes, wbits: int, limit: int, what: str) -> bytes:
    """Inflate under the cap. A gzip body of several members (concatenated streams, which browsers and
    Python's gzip read as one body) is read to its last member; bytes after the last that are no gzip
    member are ignored, as before."""
    parts, size = [], 0
    while True:
        z = zlib.decompressobj(wbits)
        out = z.decompress(data, limit - size + 1)
        if size + len(out) > limit:
            raise TooLarge(f"{what} decodes to more than {limit} bytes")
        if not z.eof:  # as zlib.decompress: a stream cut short is an error, not a shorter body
            raise zlib.error("incomplete or truncated stream")
        parts.append(out)
        size += len(out)
        data = z.unused_data
        if wbits != 16 + zlib.MAX_WBITS or not data.startswith(b"\x1f\x8b"):
            return b"".join(parts) if len(parts) > 1 else parts[0]


def _decode_content(data: bytes, encoding: str, limit: int) -> bytes:
    """One content coding undone, never producing more than `limit` + 1 bytes (a small record that
    inflates to gigabytes costs `limit` bytes of memory, then TooLarge)."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return _inflate(data, 16 + zlib.MAX_WBITS, limit, encoding)
    if encoding == "deflate":
        try:
            return _inflate(data, zlib.MAX_WBITS, limit, encoding)
        except zlib.error:  # raw deflate without the zlib header, as some servers send
            return _inflate(data, -zlib.MAX_WBITS, limit, encoding)
    if encoding == "br":
        import brotli
        d = brotli.Decompressor()
        out = _capped(d.process(data, output_buffer_limit=limit + 1), limit, encoding)
        if not d.is_finished():
            raise ValueError("brotli stream cut short")
        return out
    if encoding == "zstd":
        import io

        import zstandard
        # every frame, as a browser reads them (a second frame was cut off)
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True) as reader:
            parts, size = [], 0
            while size <= limit:
                chunk = reader.read(min(limit + 1 - size, 1 << 20))
                if not chunk:
                    break
                parts.append(chunk)
                size += len(chunk)
            return _capped(b"".join(parts), limit, encoding)
    if encoding in ("", "identity", "none"):
        return data
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def decode_payload(raw: bytes, transfer_encoding: str | None, content_encoding: str | None,
                   max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The entity body from the bytes on the wire, each decoding step capped at `max_bytes` (TooLarge past
    it). Archivers such as wget store bodies already decoded while keeping the headers, so a body that fails
    to decode but is plainly not compressed is returned as is. Raises ValueError when it can be neither
    decoded nor used."""
    data = raw
    if transfer_encoding and "chunked" in transfer_encoding.lower():
        try:
            data = _dechunk(data)
        except ValueError:
            pass  # stored de-chunked by the archiver
    for enc in reversed([e for e in (content_encoding or "").split(",") if e.strip()]):
        try:
            data = _decode_content(data, enc, max_bytes)
        except TooLarge:
            raise
        except (zlib.error, ValueError, OSError, Exception) as e:  # brotli/zstd raise their own error types
            if data[:1] in (b"<", b"\xef", b" ", b"\n", b"\r", b"\t"):
                return data  # already plain text
            raise ValueError(f"cannot undo Content-Encoding {enc.strip()}: {e}") from None
    return data


def _sha1_digest(data: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode()


def _date(rec) -> datetime | None:
    d = rec.record_date
    if d is None:
        return None
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def classify(status: int | None, content_type: str | None, body_start: bytes) -> str | None:
    """PAGE, IMAGE, or None for a response that is neither (the caller counts why)."""
    mime = _mime(content_type)
    if mime in HTML_TYPES:
        return PAGE
    if mime.startswith("image/"):
        return IMAGE
    if not mime:  # no Content-Type: sniff, as browsers do
        head = body_start.lstrip()[:15].lower()
        if head.startswith((b"<!doctype html", b"<html")):
            return PAGE
    return None


def iter_warc(stream: BinaryIO, source_file: str, max_bytes: int = DEFAULT_MAX_BYTES
              ) -> Iterator[WarcItem | Skipped]:
    """Every record of a WARC (or WARC.gz) stream as a WarcItem or a Skipped with its reason.

    Never raises for bad input: a record cut short is skipped as "truncated", a payload above `max_bytes`
    (on the wire or once decoded) as "too_large", one that cannot be decoded as "decode_error", and a file
    whose framing breaks ends with one "malformed" skip.
    """
    # HTTP headers are parsed record by record (_item): FastWARC's iterator, asked to parse them itself,
    # stops the whole file at one header line over its limit (a legal 40 KB Set-Cookie lost every record
    # after it); parsed here, that costs the one record
    it = ArchiveIterator(stream, parse_http=False, record_types=WarcRecordType.any_type, auto_decode="none",
                         fsspec_args=False)
    try:
        for rec in it:
            try:
                item = _item(rec, source_file, max_bytes)
            except HttpHeaderError as e:
                log.debug("%s: record at %s skipped: %s", source_file, getattr(rec, "stream_pos", "?"), e)
                item = Skipped("bad_http_header")
            except (ValueError, OverflowError, UnicodeError) as e:  # a bad header of this record only
                log.debug("%s: record at %s skipped: %s", source_file, getattr(rec, "stream_pos", "?"), e)
                item = Skipped("bad_record")
            yield item
    except (OSError, ValueError) as e:
        log.warning("%s: WARC framing broken, rest of the file skipped: %s", source_file, e)
        yield Skipped("malformed")


class HttpHeaderError(ValueError):
    """A record's HTTP head that FastWARC cannot parse (a header line over its length limit)."""


# WarcRecordType values are not hashable: a list of (type, reason) pairs
_SKIP_TYPES = [
    (WarcRecordType.request, "request"),
    (WarcRecordType.metadata, "metadata"),
    (WarcRecordType.resource, "resource"),
    (WarcRecordType.warcinfo, "warcinfo"),
    (WarcRecordType.conversion, "conversion"),
    (WarcRecordType.continuation, "continuation"),
]


def _item(rec, source_file: str, max_bytes: int = DEFAULT_MAX_BYTES) -> WarcItem | Skipped:
    rtype = rec.record_type
    for skip_type, reason in _SKIP_TYPES:
        if rtype == skip_type:
            return Skipped(reason)
    if rtype not in (WarcRecordType.response, WarcRecordType.revisit):
        return Skipped("unknown_record_type")
    url = rec.headers.get("WARC-Target-URI")
    if not url:
        return Skipped("no_target_uri")
    url = url.strip().strip("<>")  # WARC 1.0 files sometimes wrap the URI in angle brackets
    try:
        rec.parse_http()
    except OSError as e:  # "Maximum header length exceeded": this record's HTTP head, not the file's framing
        raise HttpHeaderError(str(e)) from None
    if rec.http_headers is None:
        return Skipped("not_http")
    status = rec.http_headers.status_code
    content_type = _content_type(rec)
    digest = rec.headers.get("WARC-Payload-Digest")

    if rtype == WarcRecordType.revisit:
        kind = classify(status, content_type, b"")
        if status != 200:
            return Skipped(f"http_{status // 100}xx" if status else "not_http")
        if kind is None:
            return Skipped("not_html_or_image")
        if not digest:
            return Skipped("revisit_without_digest")
        return WarcItem(kind=kind, url=url, date=_date(rec), source_file=source_file, offset=rec.stream_pos,
                        payload_digest=digest, content_type=content_type, body=None, revisit=True,
                        consent=_consent(rec))

    if status != 200:
        return Skipped(f"http_{status // 100}xx" if status else "not_http")
    if rec.content_length > max_bytes:  # the payload's declared length: nothing is read
        return Skipped("too_large")
    raw = rec.reader.read()  # at most content_length bytes
    if len(raw) < rec.content_length:
        return Skipped("truncated")
    kind = classify(status, content_type, raw[:64])
    if kind is None:
        return Skipped("not_html_or_image")
    try:
        body = decode_payload(raw, rec.http_headers.get("Transfer-Encoding"),
                              rec.http_headers.get("Content-Encoding"), max_bytes)
    except TooLarge as e:
        log.debug("%s %s: %s", source_file, url, e)
        return Skipped("too_large")
    except ValueError as e:
        log.debug("%s %s: %s", source_file, url, e)
        return Skipped("decode_error")
    return WarcItem(kind=kind, url=url, date=_date(rec), source_file=source_file, offset=rec.stream_pos,
                    payload_digest=digest or _sha1_digest(raw), content_type=content_type, body=body,
                    consent=_consent(rec))
