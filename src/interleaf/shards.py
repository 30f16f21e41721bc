"""Arrow IPC shards on any filesystem: atomic writes, validated reads, part-NNNNN-of-MMMMM names.

A shard is one Arrow IPC stream (the format Hugging Face `datasets` opens with Dataset.from_file, and
pyarrow with pa.ipc.open_stream). A local shard is memory-mapped, so reading it is zero-copy and a column
that is not touched is never paged in. The stream format has no footer, so the writer records the row
count in the schema metadata (`interleaf.num_rows`) and the reader checks it: a truncated shard never
passes for a shorter one. A directory of shards is a dataset of one kind.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import pyarrow as pa

from interleaf import storage
from interleaf.schemas.meta import KIND_TOKENS, SchemaMismatchError, check_schema, shard_kind
from interleaf.schemas.tokens import TokenShardInfo, token_info_from_schema

log = logging.getLogger(__name__)

SHARD_SUFFIX = ".arrow"
_SHARD_NAME = re.compile(r"^part-(\d{5})-of-(\d{5})\.arrow$")
NUM_ROWS_KEY = b"interleaf.num_rows"


class ShardError(ValueError):
    """A shard is missing, truncated, not an Arrow IPC file, or of the wrong kind."""


def shard_name(index: int, count: int) -> str:
    if not 0 <= index < count or count > 99999:
        raise ValueError(f"shard index {index} outside 0..{count - 1} (at most 99,999 shards)")
    return f"part-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


def write_shard(path: str, table: pa.Table) -> None:
    """Write one shard atomically. The table's schema (with its interleaf metadata) is written as is."""
    shard_kind(table.schema)  # refuse to write a table without interleaf metadata
    schema = table.schema.with_metadata({**table.schema.metadata, NUM_ROWS_KEY: str(table.num_rows).encode()})
    with storage.atomic_write(path) as f:
        with pa.ipc.new_stream(f, schema) as writer:
            writer.write_table(table.replace_schema_metadata(schema.metadata), max_chunksize=4096)
    log.debug("wrote %s (%d rows)", path, table.num_rows)


def write_shards(directory: str, tables: list[pa.Table]) -> list[str]:
    """Write tables as part-00000-of-N ... under `directory`; returns the paths."""
    storage.makedirs(directory)
    paths = []
    for i, table in enumerate(tables):
        path = storage.join(directory, shard_name(i, len(tables)))
        write_shard(path, table)
        paths.append(path)
    return paths


def list_shards(path: str) -> list[str]:
    """The shard files at `path`: the file itself, or a directory's part-*.arrow files (temporary and hidden
    files are ignored), or a glob's matches. Raises ShardError when there are none."""
    if storage.is_dir(path):
        found = [p for p in storage.match_in(path, "*" + SHARD_SUFFIX)
                 if not os.path.basename(p).startswith(".")]
        if not found:
            raise ShardError(f"no shards ({'part-*' + SHARD_SUFFIX}) in directory {path}")
        _check_complete(path, found)
        return found
    if any(c in path for c in "*?["):
        found = storage.match(path)
        if not found:
            raise ShardError(f"no shards match {path}")
        return found
    if not storage.exists(path):
        raise ShardError(f"no such file or directory: {path}")
    return [path]


def missing_shards(paths: list[str]) -> str | None:
    """What the part-i-of-N names of `paths` show missing ("1 of 2 shards present (of-00002)"), or None."""
    counts: dict[int, set[int]] = {}
    for p in paths:
        m = _SHARD_NAME.match(os.path.basename(p))
        if m:
            counts.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    for n, have in sorted(counts.items()):
        if len(have) != n:
            return f"{len(have)} of {n} shards present (of-{n:05d})"
    if len(counts) > 1:
        return f"shards of {len(counts)} different part counts ({', '.join(f'of-{n:05d}' for n in counts)})"
    return None


def _check_complete(directory: str, paths: list[str]) -> None:
    """Warn when a directory's part-i-of-N names show shards missing (a run that did not finish)."""
    missing = missing_shards(paths)
    if missing:
        log.warning("%s: %s; the writing run may not have finished", directory, missing)


def open_shard(path: str) -> pa.ipc.RecordBatchStreamReader:
    """An Arrow IPC stream reader; local files are memory-mapped, so columns are read only when touched."""
    try:
        if storage.is_local(path):
            source = pa.memory_map(path.removeprefix("file://"), "r")
        else:
            source = pa.BufferReader(storage.read_bytes(path))
        return pa.ipc.open_stream(source)
    except FileNotFoundError:
        raise ShardError(f"no such shard: {path}") from None
    except (pa.ArrowInvalid, OSError) as e:
        raise ShardError(f"{path} is not a complete Arrow IPC shard ({e}); it may be truncated by a killed "
                         "writer or not an interleaf shard. Rewrite it, or delete it and rerun the stage") from None


def read_shard(path: str, expected: pa.Schema | None = None, columns: list[str] | None = None) -> pa.Table:
    """Read one shard, validated against `expected` (kind, version, fields) when given."""
    reader = open_shard(path)
    if expected is not None:
        check_schema(reader.schema, expected, where=path)
    else:
        shard_kind(reader.schema)
    try:
        table = reader.read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise ShardError(f"{path} is not a complete Arrow IPC shard ({e}); it may be truncated by a killed "
                         "writer. Rewrite it, or delete it and rerun the stage") from None
    metadata = dict(table.schema.metadata or {})
    declared = metadata.pop(NUM_ROWS_KEY, None)
    if declared is not None and int(declared) != table.num_rows:
        raise ShardError(f"{path} has {table.num_rows} rows where its metadata says {int(declared)}: truncated "
                         "or altered. Rewrite it, or delete it and rerun the stage")
    table = table.replace_schema_metadata(metadata)
    if columns:
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise ShardError(f"{path} lacks the column(s) {', '.join(missing)} that its kind needs: not a "
                             "shard interleaf wrote, or one relabelled")
        return table.select(columns)
    return table


@dataclass(frozen=True)
class ShardSet:
    """The shards at a path, all of one kind (and, for token shards, of one tokenizer set)."""

    paths: list[str]
    kind: str
    schema: pa.Schema
    token_info: TokenShardInfo | None = None

    def read(self, columns: list[str] | None = None) -> pa.Table:
        return pa.concat_tables([read_shard(p, self.schema, columns) for p in self.paths])

    def tables(self, columns: list[str] | None = None):
        for p in self.paths:
            yield p, read_shard(p, self.schema, columns)


def open_shards(path: str, kind: str | None = None) -> ShardSet:
    """Open the shards at `path`, checking they agree with each other (and with `kind` when given)."""
    paths = list_shards(path)
    first = open_shard(paths[0]).schema
    found_kind = shard_kind(first)
    if kind is not None and found_kind != kind:
        raise ShardError(f"{paths[0]}: expected {kind} shards, found {found_kind} shards")
    info = token_info_from_schema(first) if found_kind == KIND_TOKENS else None
    for p in paths[1:]:
        schema = open_shard(p).schema
        try:
            check_schema(schema, first, where=p)
        except SchemaMismatchError as e:
            raise ShardError(f"shards at {path} do not agree: {e}") from None
        if info is not None:
            other = token_info_from_schema(schema)
            if other.fingerprint() != info.fingerprint():
                raise ShardError(
                    f"token shards at {path} come from different tokenizers: {paths[0]} has "
                    f"{info.tokenizers} and {p} has {other.tokenizers}; train on shards made by one "
                    "tokenizer set (re-tokenize the others)")
    return ShardSet(paths=paths, kind=found_kind, schema=first, token_info=info)
