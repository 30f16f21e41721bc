"""Schema-level metadata shared by every shard kind: what the shard holds and at which schema version.

Every Arrow schema interleaf writes carries `interleaf.kind` and `interleaf.schema_version`; readers detect a
shard's kind from them and refuse versions they do not know.
"""

from __future__ import annotations

import json

import pyarrow as pa

KIND_KEY = b"interleaf.kind"
VERSION_KEY = b"interleaf.schema_version"

KIND_DOCUMENTS = "documents"
KIND_IMAGES = "images"
KIND_TOKENS = "tokens"
KIND_FAILURES = "failures"  # dead letters (schemas/failure.py)
KINDS = (KIND_DOCUMENTS, KIND_IMAGES, KIND_TOKENS, KIND_FAILURES)


class SchemaMismatchError(ValueError):
    """A shard's schema or metadata is not what the reader expects."""


def schema_metadata(kind: str, version: int, extra: dict[str, object] | None = None) -> dict[bytes, bytes]:
    """The metadata block of a schema: kind, version, and extra keys JSON-encoded under `interleaf.<key>`."""
    md = {KIND_KEY: kind.encode(), VERSION_KEY: str(version).encode()}
    for key, value in (extra or {}).items():
        md[f"interleaf.{key}".encode()] = json.dumps(value, sort_keys=True).encode()
    return md


def shard_kind(schema: pa.Schema) -> str:
    """The kind a schema declares; raises SchemaMismatchError for a schema interleaf did not write."""
    md = schema.metadata or {}
    if KIND_KEY not in md:
        raise SchemaMismatchError(
            "not an interleaf shard: its schema has no 'interleaf.kind' metadata "
            f"(fields: {', '.join(schema.names)})")
    kind = md[KIND_KEY].decode()
    if kind not in KINDS:
        raise SchemaMismatchError(f"unknown shard kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def schema_version(schema: pa.Schema) -> int:
    return int((schema.metadata or {}).get(VERSION_KEY, b"0"))


def metadata_json(schema: pa.Schema, key: str) -> object | None:
    """A JSON value stored under `interleaf.<key>`, or None."""
    raw = (schema.metadata or {}).get(f"interleaf.{key}".encode())
    return None if raw is None else json.loads(raw)


def check_schema(found: pa.Schema, expected: pa.Schema, *, where: str) -> None:
    """Raise SchemaMismatchError unless `found` has the kind, version and fields of `expected`."""
    kind, want_kind = shard_kind(found), shard_kind(expected)
    if kind != want_kind:
        raise SchemaMismatchError(f"{where}: expected a {want_kind} shard, found a {kind} shard")
    version, want_version = schema_version(found), schema_version(expected)
    if version != want_version:
        raise SchemaMismatchError(
            f"{where}: {kind} schema version {version}, this interleaf reads version {want_version}; "
            "rewrite the shard with this version or use the interleaf release that wrote it")
    if not found.remove_metadata().equals(expected.remove_metadata()):
        missing = sorted(set(expected.names) - set(found.names))
        extra = sorted(set(found.names) - set(expected.names))
        detail = f"missing fields {missing}, unexpected fields {extra}" if missing or extra else \
            "field types differ: " + "; ".join(
                f"{f.name}: {f.type} (expected {expected.field(f.name).type})"
                for f in found if f.name in expected.names and not f.equals(expected.field(f.name)))
        raise SchemaMismatchError(f"{where}: {kind} schema v{version} does not match: {detail}")
