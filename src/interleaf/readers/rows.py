"""Rows of an input file of a row format (readers.RowFormat): JSONL (optionally gzipped), JSON (one document
or a list) or Parquet, local or remote (interleaf.storage), read with bounded memory.

Every row comes out as a `Row`: its number, and either the parsed value or why it could not be had. A bad
line costs that line only: invalid UTF-8, invalid JSON, nesting too deep for the parser, or a line longer
than `max_row_bytes` (skipped without being held in memory). JSONL lines end at "\\n" only (RFC 8259 lets
U+2028 and U+0085 stand inside strings; `str.splitlines()` would cut rows there). A file that cannot be read
at all (a broken gzip stream, a Parquet footer that is not one) ends with one `Row` whose error says so.
Parquet values of types JSON does not have (timestamps, decimals, bytes) become strings; a value that cannot
be converted (a timestamp out of Python's range, an unknown time zone) costs its row only; a row group
bigger decompressed than its rows may be (max_row_bytes each) is not decoded, its rows too_large.
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


# A row group whose column chunks hold more than this, decompressed, is not decoded (its rows are
# too_large): a Parquet file of 50 KB can hold a zstd "bomb" cell of gigabytes, and decoding reads a whole
# page at once. OBELICS's shards hold row groups of a few hundred MB at most.
MAX_ROW_GROUP_BYTES = 2 * 2**30


def _parquet_rows(path: str, max_row_bytes: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    number = 0
    with storage.open_read(path) as f:
        try:
            parquet = pq.ParquetFile(f)
            meta = parquet.metadata
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"not a readable Parquet file: {_line(e)}") from None
        for group in range(meta.num_row_groups):
            rows_here = meta.row_group(group).num_rows
            too_large = _row_group_too_large(meta.row_group(group), max_row_bytes)
            if too_large:
                for _ in range(rows_here):
                    yield Row(number, reason=TOO_LARGE, error=too_large)
                    number += 1
                continue
            try:
                batches = parquet.iter_batches(batch_size=64, row_groups=[group])
                for batch in batches:
                    for value in _batch_values(batch):
                        if isinstance(value, _BadRow):
                            yield Row(number, reason=BAD_ROW, error=value.error)
                        else:
                            yield Row(number, value=value)
                        number += 1
            except pa.ArrowException as e:
                raise ValueError(_line(e)) from None


def _row_group_too_large(group, max_row_bytes: int) -> str | None:
    """Why a row group is not decoded (its size decompressed, from the file's metadata), or None."""
    sizes = [group.column(i).total_uncompressed_size for i in range(group.num_columns)]
    total, rows = sum(sizes), max(1, group.num_rows)
    if total > MAX_ROW_GROUP_BYTES or total / rows > max_row_bytes:
        return (f"a row group of {group.num_rows} rows holds {total:,} bytes decompressed (max "
                f"{max_row_bytes:,} a row, {MAX_ROW_GROUP_BYTES:,} a group)")
    return None


@dataclass(frozen=True)
class _BadRow:
    error: str


def _batch_values(batch) -> list:
    """The batch's rows as JSON-able values; a row whose values cannot be converted (a timestamp outside
    Python's range, an unknown time zone) is a _BadRow (numbered by the caller): it costs that row only."""
    try:
        return [jsonable(v) for v in batch.to_pylist()]
    except Exception:  # noqa: BLE001 (any conversion failure of untrusted values): row by row, below
        pass
    values = []
    for i in range(batch.num_rows):
        try:
            values.append(jsonable(batch.slice(i, 1).to_pylist()[0]))
        except Exception as e:  # noqa: BLE001 (as above; the row is counted, never raised)
            values.append(_BadRow(f"a value that cannot be read: {_line(e)}"))
    return values


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
