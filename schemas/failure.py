"""Dead letters: elements a stage could not process (an undecodable image, a failed inference batch), one row
each, written to DIR/failed/ by every stage that has any. A dead letter is not a drop decision: the element
is also counted in the stage's funnel under a reason; this row keeps what failed and the error message."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pyarrow as pa

from interleaf.schemas.meta import KIND_FAILURES, schema_metadata

FAILURE_SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Failure:
    stage: str  # the stage that failed on it: "clip", ...
    step: str  # where in the stage: "decode", "inference", ...
    kind: str  # what failed: "image" (key: sha256), "text" (key: "<document key>/<slot>"), "document"
    key: str
    error: str  # the error message, first line


FAILURE_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("step", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
    ],
    metadata=schema_metadata(KIND_FAILURES, FAILURE_SCHEMA_VERSION),
)


def failure_key(f: Failure) -> str:
    """A stable sort and shard key."""
    return f"{f.stage}\x00{f.step}\x00{f.kind}\x00{f.key}"


def failures_to_table(failures: list[Failure]) -> pa.Table:
    rows = [asdict(f) for f in failures]
    return pa.Table.from_pylist(rows, schema=FAILURE_SCHEMA)


def failures_from_table(table: pa.Table) -> list[Failure]:
    return [Failure(**row) for row in table.to_pylist()]
