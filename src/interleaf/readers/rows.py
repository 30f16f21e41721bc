"""Rows of an input file of a row format (readers.RowFormat): JSONL (optionally gzipped), JSON (one document
or a list) or Parquet, local or remote (interleaf.storage), read with bounded memory.

Every row comes out as a `Row`: its number, and either the parsed value or why it could not be had. A bad
line costs that line only: invalid UTF-8, invalid JSON, nesting too deep for the parser, or a line longer
than `max_row_bytes` (skipped without being held in memory). JSONL lines end at "\\n" only (RFC 8259 lets
U+2028 and U+0085 stand inside strings; `str.splitlines()` would cut rows there). A file that cannot be read
at all (a broken gzip stream, a Parquet footer that is not one) ends with one `Row` whose error says so.
Parquet values of types JSON does not have (timestamps, decimals, bytes) become strings; a value that cannot
be converted (a timestamp out of Python's range, an unknown time zone) costs its row only. Parquet is decoded
in a child process with capped memory (readers/parquet.py): a few bytes of it can decode to gigabytes.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import gzip
import json
import zlib
from dataclasses import dataclass
from typing import Any

from interleaf import storage

DEFAULT_MAX_ROW_BYTES = 16 * 2**20  # an OBELICS document is rarely above 1 MB; MMC4's largest few MB
_CHUNK = 1 << 20
TOO_LARGE, BAD_ROW, BAD_FILE = "too_large", "bad_row", "bad_file"


@dataclass(frozen=True)
class Row:
    number: int  # 0-based: line of a JSONL file, element of a JSON list, row of a Parquet file
    value: Any = None  # the parsed row (normally a dict) when error is None
    reason: str | None = None  # TOO_LARGE, BAD_ROW or BAD_FILE when the row could not be had
    error: str | None = None  # one line: what was wrong


def rows(path: str, *, limit: int | None = None, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES):
    """The file's rows, in order, as `Row`s (at most `limit`)."""
    reader = (_parquet_rows if path.endswith(".parquet") else _json_rows if path.endswith(".json")
              else _jsonl_rows)
    count = 0
    try:
        for row in reader(path, max_row_bytes):
            yield row
            count += 1
            if limit is not None and count >= limit:
                return
    except (OSError, EOFError, zlib.error, ValueError) as e:  # the file itself, not one row
        yield Row(count, reason=BAD_FILE, error=f"cannot read on after row {count}: {_line(e)}")


def _line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"[:300]


def parse(data: bytes | str, number: int) -> Row:
    """One JSON text to a Row; never raises."""
    try:
        return Row(number, value=json.loads(data))
    except RecursionError:
        return Row(number, reason=BAD_ROW, error="JSON nested too deep to parse")
    except (ValueError, TypeError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return Row(number, reason=BAD_ROW, error=f"not JSON: {_line(e)}")


def _open(path: str):
    stream = storage.open_read(path)
    return gzip.GzipFile(fileobj=stream, mode="rb") if path.endswith(".gz") else stream


def _jsonl_rows(path: str, max_row_bytes: int):
    with _open(path) as f:
        number = 0
        while True:
            line = f.readline(max_row_bytes + 1)
            if not line:
                return
            if len(line) > max_row_bytes and not line.endswith(b"\n"):
                size = len(line)
                while line and not line.endswith(b"\n"):  # skip the rest of the line, a chunk at a time
                    line = f.readline(_CHUNK)
                    size += len(line)
                yield Row(number, reason=TOO_LARGE, error=f"a line of {size} bytes is longer than "
                                                          f"max_row_bytes ({max_row_bytes})")
            elif line.strip():
                yield parse(line, number)
            number += 1


def _json_rows(path: str, max_row_bytes: int):
    """A JSON file is one document or a list of them: it is parsed whole, so it is capped as a row is."""
    with _open(path) as f:
        data = f.read(max_row_bytes + 1)
    if len(data) > max_row_bytes:
        yield Row(0, reason=TOO_LARGE, error=f"a JSON file above max_row_bytes ({max_row_bytes}); "
                                              "write it as JSONL, one document per line")
        return
    whole = parse(data, 0)
    if whole.error is not None or not isinstance(whole.value, list):
        yield whole
        return
    for i, value in enumerate(whole.value):
        yield Row(i, value=value)


def _parquet_rows(path: str, max_row_bytes: int):
    from interleaf.readers import parquet

    number = 0
    for kind, value in parquet.rows(path, max_row_bytes):
        if kind == "row":
            yield Row(number, value=value)
            number += 1
        elif kind == "bad_row":
            yield Row(number, reason=BAD_ROW, error=value)
            number += 1
        else:
            count, error = value
            for _ in range(count):
                yield Row(number, reason=TOO_LARGE, error=error)
                number += 1


def jsonable(value):
    """A value read from Parquet with the types JSON lacks as strings: timestamps and dates in ISO 8601,
    decimals as their digits, bytes as base64."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value
