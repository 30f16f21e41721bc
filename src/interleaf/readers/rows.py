"""Rows of an input file of a row format (readers.RowFormat): JSONL (optionally gzipped), JSON (one document
or a list) or Parquet, local or remote (interleaf.storage)."""

from __future__ import annotations

import io
import json

from interleaf import storage


def rows(path: str, limit: int | None = None):
    """The file's rows: dicts (JSON, Parquet), or the lines of a JSONL file unparsed, so that the caller
    counts one bad line as one dropped row."""
    data = storage.read_bytes(path)
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        table = pq.read_table(io.BytesIO(data))
        yield from table.slice(0, limit).to_pylist() if limit else table.to_pylist()
        return
    if path.endswith(".gz"):
        import gzip
        data = gzip.decompress(data)
    text = data.decode("utf-8")
    if path.endswith(".json"):
        value = json.loads(text)
        yield from (value if isinstance(value, list) else [value])[:limit]
        return
    for i, line in enumerate(text.splitlines()):
        if limit is not None and i >= limit:
            return
        if line.strip():
            yield line
