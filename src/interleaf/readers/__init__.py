"""Input readers, engine-free: which input formats a run reads, how a file's format is told, and its rows.

A WARC is read by readers/warc.py (pages and archived images). Every other format is a file of rows (JSONL,
JSON or Parquet, readers/rows.py), each row converted to one Document by a function; such a format is one
`RowFormat` here. Adding one is a converter (a module of its own, e.g. schemas/mmc4.py) and one `register`
call (tests/test_architecture.py adds one). Nothing here imports Beam.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass

WARC = "warc"
WARC_SUFFIXES = (".warc", ".warc.gz", ".warc.zst", ".arc.gz")
ROW_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".parquet")


@dataclass(frozen=True)
class RowFormat:
    """An input format whose files hold one document per row."""

    name: str  # as in --input-format, and in a file name that announces it ("x.obelics.jsonl")
    converter: str  # "module:function", function(row: dict, *, source_file, row_number) -> Document; a bad
    # row raises ValueError, TypeError, KeyError or AttributeError (counted as one bad_row)
    keys: frozenset[str]  # keys of the first row that identify the format when the name does not

    def load(self) -> Callable:
        module, _, function = self.converter.partition(":")
        return getattr(importlib.import_module(module), function)


ROW_FORMATS: dict[str, RowFormat] = {}


def register(fmt: RowFormat) -> RowFormat:
    """Add a row format (or replace one of the same name)."""
    if fmt.name == WARC or not fmt.name.isidentifier():
        raise ValueError(f"a row format needs a name of its own that is an identifier, found {fmt.name!r}")
    ROW_FORMATS[fmt.name] = fmt
    return fmt


register(RowFormat("obelics", "interleaf.schemas.obelics:from_obelics", frozenset({"texts", "images"})))
register(RowFormat("mmc4", "interleaf.schemas.mmc4:from_mmc4", frozenset({"text_list"})))


def formats() -> tuple[str, ...]:
    """Every input format a run reads."""
    return (WARC, *ROW_FORMATS)


def detect_format(path: str) -> str:
    """The input format of a file from its name: *.warc[.gz] is a WARC; a JSONL/Parquet file is a row format
    named in the file name, else the one whose keys its first row has."""
    from interleaf.readers.rows import rows

    name = os.path.basename(path).lower()
    if name.endswith(WARC_SUFFIXES):
        return WARC
    for fmt in ROW_FORMATS:
        if fmt in name:
            return fmt
    if name.endswith(ROW_SUFFIXES):
        first = next(iter(rows(path, limit=1)), None)
        keys = set(first.value) if first is not None and isinstance(first.value, dict) else set()
        for fmt in ROW_FORMATS.values():
            if fmt.keys <= keys:
                return fmt.name
    raise ValueError(f"cannot tell the format of {path}: name it *.warc[.gz], or pass --input-format "
                     f"({', '.join(formats())})")
