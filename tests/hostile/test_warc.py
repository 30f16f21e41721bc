"""Decompression bombs in WARC records (issue 13 item 2): a record of a few KB or MB whose Content-Encoding
chain inflates to a gigabyte is a counted drop (too_large), and the run's memory stays bounded, through
`interleaf run` in a process of its own whose peak memory is measured."""

import gzip
import json
import os
import subprocess
import sys
import zlib

import brotli
import pytest
import zstandard

from interleaf.readers.warc import TooLarge, decode_payload

PAGE = (b"<html><head><title>Tides</title></head><body><article><p>" + b"The tide tables for the estuary are "
        b"printed every spring, and the fishermen pin them to the wall of the harbour office. " * 8 +
        b"</p></article></body></html>")


def zeros_gzip(n: int) -> bytes:
    """gzip of n zero bytes, made a MiB at a time (never n bytes in memory)."""
    z, out, chunk = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS), [], bytes(2**20)
    for _ in range(n // 2**20):
        out.append(z.compress(chunk))
    out.append(z.flush())
    return b"".join(out)


def record(url: str, body: bytes, headers: str = "") -> bytes:
    http = (f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
            .encode() + body)
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\n"
            f"WARC-Date: 2024-05-01T10:00:00Z\r\n"
            f"WARC-Record-ID: <urn:uuid:{abs(hash(url)):032x}>\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n")
    return head.encode() + http + b"\r\n\r\n"


MIB = 2**20


def test_each_coding_and_chains_stop_at_the_cap():
    small = 4 * MIB
    bombs = {
        "gzip": zeros_gzip(64 * MIB),
        "deflate": zlib.compress(bytes(64 * MIB), 9),
        "br": brotli.compress(bytes(64 * MIB), quality=5),
        "zstd": zstandard.ZstdCompressor(level=3).compress(bytes(64 * MIB)),
        "gzip, br": brotli.compress(zeros_gzip(64 * MIB), quality=5),
    }
    for coding, body in bombs.items():
        assert len(body) < MIB
        with pytest.raises(TooLarge):
            decode_payload(body, None, coding, max_bytes=small)
    assert decode_payload(gzip.compress(PAGE), None, "gzip", max_bytes=small) == PAGE
    chained = zstandard.ZstdCompressor().compress(brotli.compress(gzip.compress(PAGE)))
    assert decode_payload(chained, None, "gzip, br, zstd", max_bytes=small) == PAGE


def _run_measured(warc, out) -> dict:
    """`interleaf run` of one WARC in a process of its own; its exit code and its own peak memory (VmHWM of
    its memory after exec: ru_maxrss would include the forking pytest's)."""
    script = ("import json, re; from interleaf.cli import main; "
              f"rc = main(['run', {str(warc)!r}, '--output', {str(out)!r}, '--stages', 'ingest']); "
              "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()); "
              "print(json.dumps({'rc': rc, 'peak_kib': int(hwm.group(1))}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak memory is read from Linux's /proc")
def test_a_gigabyte_bomb_is_a_counted_drop_in_bounded_memory(tmp_path):
    bomb = zeros_gzip(1024 * MIB)  # 1 GiB inflated, about 1 MB on the wire
    plain, bombs = tmp_path / "plain.warc", tmp_path / "bombs.warc"
    plain.write_bytes(record("http://ok.example/", PAGE))
    with open(bombs, "wb") as f:
        f.write(record("http://ok.example/", PAGE))
        f.write(record("http://bomb.example/gzip", bomb, "Content-Encoding: gzip\r\n"))
        f.write(record("http://bomb.example/chain", brotli.compress(bomb, quality=1),
                       "Content-Encoding: gzip, br\r\n"))
    baseline = _run_measured(plain, tmp_path / "plain-out")
    result = _run_measured(bombs, tmp_path / "out")
    assert baseline["rc"] == 0 and result["rc"] == 0
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    records = m["funnel"]["ingest"]["records"]
    assert records["dropped"].get("too_large") == 2 and records["out"] == 1 and m["unreconciled"] == []
    # measured here: 731 MiB for both (the bombs cost nothing visible); cap lifted, the run broke 900 MB
    assert result["peak_kib"] < baseline["peak_kib"] + 200 * 1024, (baseline, result)


def test_a_warc_that_cannot_be_opened_is_one_counted_record(tmp_path):
    from interleaf.pipelines.ingest import _ReadWarcFile

    fn = _ReadWarcFile()
    fn.setup()
    assert list(fn.process(str(tmp_path / "gone-since-listed.warc.gz"))) == []
    assert dict(fn.funnel._pending) == {"records.in": 1, "records.dropped.unreadable_file": 1}
