"""Untrusted Parquet read in a child process with capped memory.

A Parquet file's footer does not bound what decoding it costs: a 1.3 KB file whose one row is a list of ten
million copies of a dictionary string (RLE runs of one index) says 375 bytes in its footer and decodes to
1 GB of strings, 3.4 GB of memory once read; a page header can also claim any size. So the file is decoded
by `python -m interleaf.readers.parquet` under an address-space limit (RLIMIT_DATA, `memory_limit`): an
allocation past it fails in that process (Arrow's MemoryError), which costs the rows of that row group not
yet sent (too_large) and goes on with the next group; a crash of the decoder on a malformed file costs the
rest of the file (bad_file), never this process. Batches come back as Arrow IPC streams of about 4 MB; a
row above max_row_bytes (Arrow's bytes for it) never leaves the child.

Messages on the child's stdout: one kind byte, an 8-byte little-endian length, the payload. B: an IPC stream
of batches; T: JSON {"count", "error"}, that many rows too_large; F: JSON {"error"}, the file cannot be
read on; E: the end.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile

MEMORY_LIMIT = 3 * 2**30  # the child's data segment: a batch of OBELICS rows is a few MB
# A row group whose column chunks say they hold more than this decompressed is not decoded at all (its rows
# too_large, with the sizes in the error); OBELICS's shards hold row groups of a few hundred MB at most.
MAX_ROW_GROUP_BYTES = 2 * 2**30
_BATCH_ROWS = 64
_FLUSH_BYTES = 4 * 2**20
_HEADER = struct.Struct("<cQ")


def batches(path: str, max_row_bytes: int, memory_limit: int = MEMORY_LIMIT):
    """The file's rows, decoded in a child process: `(batch, None)` for a pyarrow RecordBatch of rows that
    could be read, `(count, error)` for that many rows too_large. Raises ValueError (one line) when the
    file cannot be read on."""
    import pyarrow as pa

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
                if kind == b"B":
                    with pa.ipc.open_stream(payload) as stream:
                        for batch in stream:
                            yield batch, None
                elif kind == b"T":
                    message = json.loads(payload)
                    yield message["count"], message["error"]
                elif kind == b"F":
                    raise ValueError(json.loads(payload)["error"])
                else:
                    return
        finally:
            if child.poll() is None:
                child.kill()
            child.stdout.close()
            child.wait()


def _line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"[:300]


def row_group_too_large(group, max_row_bytes: int) -> str | None:
    """Why a row group is not decoded (its size decompressed, from the file's metadata), or None."""
    sizes = [group.column(i).total_uncompressed_size for i in range(group.num_columns)]
    total, rows = sum(sizes), max(1, group.num_rows)
    if total > MAX_ROW_GROUP_BYTES or total / rows > max_row_bytes:
        return (f"a row group of {group.num_rows} rows holds {total:,} bytes decompressed (max "
                f"{max_row_bytes:,} a row, {MAX_ROW_GROUP_BYTES:,} a group)")
    return None


class _Sender:
    """Messages to the parent, in the file's row order. Batches are held until about _FLUSH_BYTES and sent as
    one IPC stream (one message per Arrow batch of 64 rows costs more than the decoding). `count`: the rows
    handed on so far, read or too_large."""

    def __init__(self, out):
        self.out, self.held, self.held_bytes, self.count = out, [], 0, 0

    def send(self, kind: bytes, payload: bytes) -> None:
        if kind != b"B":
            self.flush()
        self.out.write(_HEADER.pack(kind, len(payload)))
        self.out.write(payload)

    def send_json(self, kind: bytes, value) -> None:
        self.send(kind, json.dumps(value).encode())

    def too_large(self, count: int, error: str) -> None:
        self.count += count
        self.send_json(b"T", {"count": count, "error": error})

    def flush(self) -> None:
        import pyarrow as pa

        if not self.held:
            return
        held, self.held, self.held_bytes = self.held, [], 0
        try:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, held[0].schema) as writer:
                for batch in held:
                    writer.write_batch(batch)
            payload = sink.getvalue().to_pybytes()
        except MemoryError as e:  # their rows are counted (in self.count already) as too_large
            self.send_json(b"T", {"count": sum(b.num_rows for b in held), "error": f"not sent: {_line(e)}"})
            raise
        self.send(b"B", payload)

    def batch(self, batch) -> None:
        if self.held and batch.schema != self.held[0].schema:
            self.flush()
        self.count += batch.num_rows
        self.held.append(batch)
        self.held_bytes += batch.nbytes
        if self.held_bytes >= _FLUSH_BYTES:
            self.flush()

    def rows(self, batch, max_row_bytes: int) -> None:
        """The batch's rows, each row above max_row_bytes as too_large."""
        if batch.nbytes <= max_row_bytes:
            self.batch(batch)
            return
        start = 0
        for i in range(batch.num_rows):
            row = batch.slice(i, 1).nbytes
            if row > max_row_bytes:
                if i > start:
                    self.batch(batch.slice(start, i - start))
                self.too_large(1, f"a row of {row:,} bytes decoded is above max_row_bytes "
                                  f"({max_row_bytes:,})")
                start = i + 1
        if batch.num_rows > start:
            self.batch(batch.slice(start))


def _child(path: str, max_row_bytes: int, memory_limit: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_DATA, (memory_limit, memory_limit))
    import pyarrow as pa
    import pyarrow.parquet as pq

    from interleaf import storage

    pa.set_memory_pool(pa.system_memory_pool())  # its allocations fail at the limit, one by one
    out = _Sender(sys.stdout.buffer)
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
                    out.rows(batch, max_row_bytes)
            except MemoryError as e:  # Arrow's ArrowMemoryError is one
                try:
                    out.flush()
                except MemoryError:
                    pass  # the held rows went as too_large
                out.too_large(max(0, rows_here - (out.count - start)),
                              f"decoding it needs more than {memory_limit:,} bytes: {_line(e)}")
            except pa.ArrowException as e:
                out.send_json(b"F", {"error": _line(e)})
                return
    out.send(b"E", b"")
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
