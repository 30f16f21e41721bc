"""Reading the real fixture WARCs: pages, archived images, revisits and every other record by reason."""

import gzip
import zlib
from collections import Counter

import pytest

from interleaf.readers.warc import Skipped, WarcItem, decode_payload, iter_warc


def _read(path):
    with open(path, "rb") as f:
        return list(iter_warc(f, path.name))


def _count(items):
    c = Counter()
    for it in items:
        if isinstance(it, Skipped):
            c["skip:" + it.reason] += 1
        else:
            c[it.kind + ("_revisit" if it.revisit else "")] += 1
    return dict(c)


# What every fixture WARC holds, record by record (checked against the files' own headers).
EXPECTED = {
    "IAH-20080430204825-00000-blackbook-truncated.warc.gz": {
        "skip:warcinfo": 1, "skip:not_http": 1, "skip:not_html_or_image": 2, "skip:request": 7,
        "skip:metadata": 7, "page": 2, "image": 3},
    "IAH-urls-wget.warc.gz": {"skip:warcinfo": 1, "skip:request": 16, "skip:http_3xx": 9,
                              "skip:not_html_or_image": 2, "page": 2, "image": 3, "skip:resource": 3},
    "brotli-transfer.warc.gz": {"skip:warcinfo": 1, "skip:request": 1, "page": 1, "skip:metadata": 1,
                                "skip:resource": 1},
    "commoncrawl-record.warc.gz": {"page": 1},
    "dolma-sample-0000.warc.gz": {"skip:warcinfo": 1, "skip:request": 22, "page": 22, "skip:metadata": 1,
                                  "skip:resource": 2},
    "example-iana.org-chunked.warc": {"skip:warcinfo": 1, "page": 1, "skip:request": 1},
    "example-wget-bad-target-uri.warc.gz": {"skip:warcinfo": 1, "skip:request": 1, "page": 1,
                                            "skip:metadata": 1, "skip:resource": 2},
    "example.warc.gz": {"skip:warcinfo": 2, "page": 1, "skip:request": 2, "page_revisit": 1},
    "issue-493.warc": {"skip:warcinfo": 2, "skip:http_3xx": 1, "skip:request": 15, "image": 5,
                       "image_revisit": 5, "page": 4},
    "issue-514.warc": {"skip:warcinfo": 1, "skip:request": 2, "skip:http_3xx": 1, "page": 1,
                       "skip:metadata": 1, "skip:resource": 2},
    # FastWARC resynchronises after the record whose Content-Length is wrong (warcio stops there); the last
    # record has no WARC-Target-URI
    "malformed-content-length.warc": {"skip:warcinfo": 1, "page": 6, "skip:no_target_uri": 1},
    "truncated-record.warc.gz": {"skip:truncated": 1},
    "wikipedia-mona-lisa-with-images.warc.gz": {"skip:warcinfo": 1, "skip:request": 39,
                                                "skip:not_html_or_image": 15, "image": 22, "page": 2,
                                                "skip:resource": 3},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_records(data_dir, name):
    assert _count(_read(data_dir / "warc" / name)) == EXPECTED[name]


def test_encodings_are_undone(data_dir):
    brotli_page = next(i for i in _read(data_dir / "warc" / "brotli-transfer.warc.gz") if isinstance(i, WarcItem))
    assert brotli_page.body.lstrip().startswith(b"<html")
    chunked = next(i for i in _read(data_dir / "warc" / "example-iana.org-chunked.warc") if isinstance(i, WarcItem))
    assert chunked.body.startswith(b"<!doctype html>") and b"\r\n0\r\n" not in chunked.body[-10:]
    gz = next(i for i in _read(data_dir / "warc" / "example.warc.gz") if isinstance(i, WarcItem))
    assert b"Example Domain" in gz.body


def test_revisit_carries_the_digest_of_its_original(data_dir):
    items = [i for i in _read(data_dir / "warc" / "example.warc.gz") if isinstance(i, WarcItem)]
    original, revisit = items
    assert revisit.revisit and revisit.body is None
    assert revisit.payload_digest == original.payload_digest


def test_decode_payload_cases():
    body = b"<p>hello</p>" * 20
    assert decode_payload(gzip.compress(body), None, "gzip") == body
    assert decode_payload(zlib.compress(body), None, "deflate") == body
    raw_deflate = zlib.compressobj(wbits=-15)
    assert decode_payload(raw_deflate.compress(body) + raw_deflate.flush(), None, "deflate") == body
    chunked = b"5\r\n<p>he\r\n7\r\nllo</p>\r\n0\r\n\r\n"
    assert decode_payload(chunked, "chunked", None) == b"<p>hello</p>"
    # wget stores bodies decoded but keeps the header: plain HTML is used as is
    assert decode_payload(body, None, "gzip") == body
    with pytest.raises(ValueError, match="Content-Encoding gzip"):
        decode_payload(b"\x00\x01garbage", None, "gzip")


def test_garbage_is_never_fatal(tmp_path):
    bad = tmp_path / "junk.warc"
    bad.write_bytes(b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 99999\r\n\r\nHTTP/1.1 200 OK\r\n\r\nshort")
    items = _read(bad)
    assert all(isinstance(i, Skipped) for i in items)
    (tmp_path / "empty.warc").write_bytes(b"")
    assert _read(tmp_path / "empty.warc") == []
    (tmp_path / "noise.warc.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)
    assert all(isinstance(i, Skipped) for i in _read(tmp_path / "noise.warc.gz"))
