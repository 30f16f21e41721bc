"""Untrusted Parquet read in a child process with capped memory.

A Parquet file's footer does not bound what decoding it costs: a 1.3 KB file whose one row is a list of ten
million copies of a dictionary string (RLE runs of one index) says 375 bytes in its footer and decodes to
1 GB of strings, 3.4 GB of memory once read; a page header can also claim any size. So the file is decoded
by `python -m interleaf.readers.parquet` under an address-space limit (RLIMIT_DATA, `memory_limit`): an
allocation past it fails in that process (Arrow's MemoryError), which costs the rows of that row group not
yet sent (too_large) and goes on with the next group; a crash of the decoder on a malformed file costs the
rest of the file (bad_file), never this process. Batches come back as Arrow IPC, split so that no message is
above `_MESSAGE_BYTES`; a row above max_row_bytes (Arrow's bytes for it) never leaves the child.

Messages on the child's stdout: one kind byte, an 8-byte little-endian length, the payload. B: an IPC stream
of one batch; T: JSON {"count", "error"}, that many rows too_large; F: JSON {"error"}, the file cannot be
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
_MESSAGE_BYTES = 64 * 2**20
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


def _send(out, kind: bytes, payload: bytes) -> None:
    out.write(_HEADER.pack(kind, len(payload)))
    out.write(payload)


def _send_json(out, kind: bytes, value) -> None:
    _send(out, kind, json.dumps(value).encode())


def _send_batch(out, batch) -> None:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    _send(out, b"B", sink.getvalue().to_pybytes())


def _send_rows(out, batch, max_row_bytes: int) -> None:
    """The batch in messages of at most _MESSAGE_BYTES, each row above max_row_bytes as too_large."""
    if batch.nbytes <= min(max_row_bytes, _MESSAGE_BYTES):
        _send_batch(out, batch)
        return
    start, size = 0, 0
    for i in range(batch.num_rows):
        row = batch.slice(i, 1).nbytes
        if row > max_row_bytes or size + row > _MESSAGE_BYTES:
            if i > start:
                _send_batch(out, batch.slice(start, i - start))
            start, size = i, 0
        if row > max_row_bytes:
            _send_json(out, b"T", {"count": 1, "error": f"a row of {row:,} bytes decoded is above "
                                                       f"max_row_bytes ({max_row_bytes:,})"})
            start = i + 1
        else:
            size += row
    if batch.num_rows > start:
        _send_batch(out, batch.slice(start))


def _child(path: str, max_row_bytes: int, memory_limit: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_DATA, (memory_limit, memory_limit))
    import pyarrow as pa
    import pyarrow.parquet as pq

    from interleaf import storage

    pa.set_memory_pool(pa.system_memory_pool())  # its allocations fail at the limit, one by one
    out = sys.stdout.buffer
    with storage.open_read(path) as f:
        try:
            parquet = pq.ParquetFile(f)
            meta = parquet.metadata
        except (pa.ArrowException, OSError, MemoryError) as e:
            _send_json(out, b"F", {"error": f"not a readable Parquet file: {_line(e)}"})
            return
        for group in range(meta.num_row_groups):
            rows_here = meta.row_group(group).num_rows
            too_large = row_group_too_large(meta.row_group(group), max_row_bytes)
            if too_large:
                _send_json(out, b"T", {"count": rows_here, "error": too_large})
                continue
            sent = 0
            try:
                for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group]):
                    _send_rows(out, batch, max_row_bytes)
                    sent += batch.num_rows
            except (MemoryError, pa.ArrowMemoryError) as e:
                _send_json(out, b"T", {"count": max(0, rows_here - sent), "error":
                                       f"decoding it needs more than {memory_limit:,} bytes: {_line(e)}"})
            except pa.ArrowException as e:
                _send_json(out, b"F", {"error": _line(e)})
                return
    _send(out, b"E", b"")
    out.flush()


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
