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


def _first_row_keys(path: str) -> set[str]:
    from interleaf.readers.rows import rows

    first = next(iter(rows(path, limit=1)), None)
    return set(first.value) if first is not None and isinstance(first.value, dict) else set()


def check_forced_format(path: str, fmt: str) -> None:
    """Raise ValueError (one line) when a file plainly is not in the format --input-format forces: a WARC
    by its name read as rows, rows by their name read as a WARC, or a first row with the keys of another
    row format and not of this one. A run would otherwise drop every record and still succeed."""
    name = os.path.basename(path).lower()
    if fmt != WARC and name.endswith(WARC_SUFFIXES):
        raise ValueError(f"{path} is a WARC by its name, not {fmt}: leave out --input-format")
    if fmt == WARC and name.endswith(ROW_SUFFIXES):
        raise ValueError(f"{path} is a file of rows by its name, not a WARC: leave out --input-format")
    if fmt in ROW_FORMATS and name.endswith(ROW_SUFFIXES):
        keys = _first_row_keys(path)
        others = [f.name for f in ROW_FORMATS.values() if f.name != fmt and f.keys <= keys]
        if others and not ROW_FORMATS[fmt].keys <= keys:
            raise ValueError(f"{path}: its first row has the keys of {others[0]}, not of {fmt} "
                             f"({', '.join(sorted(ROW_FORMATS[fmt].keys))}): leave out --input-format")


def detect_format(path: str) -> str:
    """The input format of a file from its name: *.warc[.gz] is a WARC; a JSONL/Parquet file is a row format
    named in the file name, else the one whose keys its first row has."""
    name = os.path.basename(path).lower()
    if name.endswith(WARC_SUFFIXES):
        return WARC
    for fmt in ROW_FORMATS:
        if fmt in name:
            return fmt
    if name.endswith(ROW_SUFFIXES):
        keys = _first_row_keys(path)
        for fmt in ROW_FORMATS.values():
            if fmt.keys <= keys:
                return fmt.name
    raise ValueError(f"cannot tell the format of {path}: name it *.warc[.gz], or pass --input-format "
                     f"({', '.join(formats())})")
