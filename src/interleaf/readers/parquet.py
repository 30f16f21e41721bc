"""Untrusted Parquet read in a child process with capped memory.

A Parquet file's footer does not bound what decoding it costs: a 1.3 KB file whose one row is a list of ten
million copies of a dictionary string (RLE runs of one index) says 375 bytes in its footer and decodes to
1 GB of strings, 3.4 GB of memory once read; a page header can also claim any size, and a list of a hundred
million nulls is a few bytes in Arrow and gigabytes as Python values. So the file is decoded, and its rows
turned into Python values, by `python -m interleaf.readers.parquet` under an address-space limit
(RLIMIT_DATA, `memory_limit`): an allocation past it fails in that process (MemoryError), which costs the
row being converted, or the rows of the row group not yet read when Arrow's decoding fails (too_large), and
it goes on; a crash of the decoder on a malformed file costs the rest of the file (bad_file), never this
process. A row above max_row_bytes (its pickle's length, about its JSON's) never leaves the child.

Messages on the child's stdout: one kind byte, an 8-byte little-endian length, the payload. P: rows, a
pickled list of pickled plain values (dicts, lists, strings, numbers, None: made by the child, never by
the file); X: JSON {"error"}, one row that cannot be read (bad_row); T: JSON {"count", "error"}, that
many rows too_large; F: JSON {"error"}, the file cannot be read on; E: the end.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile

from interleaf.readers.rows import _line  # rows.py imports this module only inside a function

MEMORY_LIMIT = 3 * 2**30  # the child's data segment: a batch of OBELICS rows is a few MB
# A row group whose column chunks say they hold more than this decompressed is not decoded at all (its rows
# too_large, with the sizes in the error); OBELICS's shards hold row groups of a few hundred MB at most.
MAX_ROW_GROUP_BYTES = 2 * 2**30
_BATCH_ROWS = 64
_FLUSH_BYTES = 1 * 2**20
_HEADER = struct.Struct("<cQ")


def rows(path: str, max_row_bytes: int, memory_limit: int = MEMORY_LIMIT):
    """The file's rows, decoded in a child process, in order: `("row", value)`, `("bad_row", error)`, or
    `("too_large", (count, error))` for that many rows. Raises ValueError (one line) when the file cannot be
    read on."""
    env = dict(os.environ, PYTHONSAFEPATH="1")
    command = [sys.executable, "-m", "interleaf.readers.parquet", path, str(max_row_bytes), str(memory_limit)]
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
                                 env=env)
        try:
            while True:
                header = child.stdout.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    child.wait()
                    errors.seek(0)
                    last = ([line for line in errors.read().decode("utf-8", "replace").splitlines()
                             if line.strip()] or [""])[-1][:200]
                    raise ValueError(f"the Parquet decoder stopped (exit status {child.returncode}) {last}"
                                     .rstrip())
                kind, size = _HEADER.unpack(header)
                payload = child.stdout.read(size)
                if len(payload) < size:
                    continue  # the child stopped inside a message: said above on the next read
                if kind == b"P":
                    for row in pickle.loads(payload):  # plain values that our own child made
                        yield "row", pickle.loads(row)
                elif kind == b"X":
                    yield "bad_row", json.loads(payload)["error"]
                elif kind == b"T":
                    message = json.loads(payload)
                    yield "too_large", (message["count"], message["error"])
                elif kind == b"F":
                    raise ValueError(json.loads(payload)["error"])
                else:
                    return
        finally:
            if child.poll() is None:
                child.kill()
            child.stdout.close()
            child.wait()


def row_group_too_large(group, max_row_bytes: int) -> str | None:
    """Why a row group is not decoded (its size decompressed, from the file's metadata), or None."""
    sizes = [group.column(i).total_uncompressed_size for i in range(group.num_columns)]
    total, rows = sum(sizes), max(1, group.num_rows)
    if total > MAX_ROW_GROUP_BYTES or total / rows > max_row_bytes:
        return (f"a row group of {group.num_rows} rows holds {total:,} bytes decompressed (max "
                f"{max_row_bytes:,} a row, {MAX_ROW_GROUP_BYTES:,} a group)")
    return None


class _Sender:
    """Messages to the parent, in the file's row order; rows are held until about _FLUSH_BYTES and sent as
    one message. `count`: the rows handed on so far, of any kind."""

    def __init__(self, out, max_row_bytes: int):
        self.out, self.max_row_bytes = out, max_row_bytes
        self.held, self.held_bytes, self.count = [], 0, 0

    def send(self, kind: bytes, payload: bytes) -> None:
        if kind != b"P":
            self.flush()
        self.out.write(_HEADER.pack(kind, len(payload)))
        self.out.write(payload)

    def send_json(self, kind: bytes, value) -> None:
        self.send(kind, json.dumps(value).encode())

    def flush(self) -> None:
        if self.held:
            held, self.held, self.held_bytes = self.held, [], 0
            self.send(b"P", pickle.dumps(held, protocol=pickle.HIGHEST_PROTOCOL))

    def too_large(self, count: int, error: str) -> None:
        self.count += count
        self.send_json(b"T", {"count": count, "error": error})

    def bad_row(self, error: str) -> None:
        self.count += 1
        self.send_json(b"X", {"error": error})

    def row(self, value) -> None:
        """One row's value; as too_large when its JSON would be above max_row_bytes (measured on its pickle,
        which is about as long) or it cannot be made."""
        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            size = len(data)
        except MemoryError:
            size = None
        if size is None or size > self.max_row_bytes:
            size = "more than fits in memory" if size is None else f"{size:,} bytes"
            self.too_large(1, f"a row of {size} is above max_row_bytes ({self.max_row_bytes:,})")
            return
        self.count += 1
        self.held.append(data)
        self.held_bytes += size
        if self.held_bytes >= _FLUSH_BYTES:
            self.flush()

    def batch(self, batch) -> None:
        """A batch's rows as Python values; row by row where the batch as a whole does not convert."""
        crowded = self._crowded(batch)
        start = 0
        for i in sorted(crowded):
            if i > start:
                self._convert(batch.slice(start, i - start))
            self.too_large(1, f"a row of {crowded[i]:,} list elements is above max_row_bytes "
                              f"({self.max_row_bytes:,}) as JSON")
            start = i + 1
        if batch.num_rows > start:
            self._convert(batch.slice(start))

    def _crowded(self, batch) -> dict[int, int]:
        """Rows whose lists hold more elements than fit in max_row_bytes (two bytes an element at least, as
        JSON "0," or a pickled None), by row: found from the list offsets, before any value is made. A list of
        a hundred million nulls is a few bytes in Arrow and gigabytes as Python values."""
        import pyarrow as pa
        import pyarrow.compute as pc

        counts = None
        for column in batch.columns:
            if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
                lengths = pc.fill_null(pc.list_value_length(column), 0)
                counts = lengths if counts is None else pc.add(counts, lengths)
        if counts is None:
            return {}
        over = pc.greater(counts, self.max_row_bytes // 2)
        return {i: counts[i].as_py() for i in pc.indices_nonzero(over).to_pylist()}

    def _convert(self, batch) -> None:
        from interleaf.readers.rows import jsonable

        try:
            values = [jsonable(v) for v in batch.to_pylist()]
        except Exception:  # noqa: BLE001 (MemoryError, or a value out of Python's range): row by row
            values = None
        if values is not None:
            for value in values:
                self.row(value)
            return
        for i in range(batch.num_rows):
            try:
                value = jsonable(batch.slice(i, 1).to_pylist()[0])
            except MemoryError:
                self.too_large(1, "a row that does not fit in the decoder's memory as Python values")
                continue
            except Exception as e:  # noqa: BLE001 (a timestamp out of range, an unknown time zone)
                self.bad_row(f"a value that cannot be read: {_line(e)}")
                continue
            self.row(value)


def _child(path: str, max_row_bytes: int, memory_limit: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_DATA, (memory_limit, memory_limit))
    import pyarrow as pa
    import pyarrow.parquet as pq

    from interleaf import storage

    pa.set_memory_pool(pa.system_memory_pool())  # its allocations fail at the limit, one by one
    out = _Sender(sys.stdout.buffer, max_row_bytes)
    with storage.open_read(path) as f:
        try:
            parquet = pq.ParquetFile(f)
            meta = parquet.metadata
        except (pa.ArrowException, OSError, MemoryError) as e:
            out.send_json(b"F", {"error": f"not a readable Parquet file: {_line(e)}"})
            return
        for group in range(meta.num_row_groups):
            rows_here = meta.row_group(group).num_rows
            too_large = row_group_too_large(meta.row_group(group), max_row_bytes)
            if too_large:
                out.too_large(rows_here, too_large)
                continue
            start = out.count
            try:
                for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group]):
                    out.batch(batch)
            except MemoryError as e:  # Arrow's ArrowMemoryError is one
                out.too_large(max(0, rows_here - (out.count - start)),
                              f"decoding it needs more than {memory_limit:,} bytes: {_line(e)}")
            except pa.ArrowException as e:
                out.send_json(b"F", {"error": _line(e)})
                return
    out.send(b"E", b"")
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
