"""The row formats of the ingest stage (OBELICS, MMC4, ... registered in interleaf.readers): files of JSONL,
JSON or Parquet rows to Documents, every row that cannot be one a counted drop and a dead letter (at most
MAX_DEAD_LETTERS of them per file)."""

from __future__ import annotations

import logging
import os

import apache_beam as beam
from apache_beam import pvalue

from interleaf.pipelines.common import CountingDoFn
from interleaf.pipelines.stage import FAILED
from interleaf.readers import RowFormat
from interleaf.readers.rows import BAD_ROW, DEFAULT_MAX_ROW_BYTES, rows
from interleaf.schemas.document import check_writable
from interleaf.schemas.failure import Failure

log = logging.getLogger(__name__)

STAGE = "ingest"  # rows count into the ingest stage's funnel


# Dead letters written per input file; the bad rows past them are counted in the funnel and summed up in one
# more letter (a 400 KB JSON list of 200,000 numbers wrote a 26 MB failed/ shard, one letter per row).
MAX_DEAD_LETTERS = 1000


class _ReadInterleavedFile(CountingDoFn):
    """A file of a row format (readers.RowFormat: JSONL, JSON or Parquet) to Documents. A row that cannot be
    read, converted or written (readers.rows, the converter, schemas.document.check_writable) is one
    counted drop (bad_row, too_large; bad_file for the rest of a file that cannot be read on) and one dead
    letter naming the file, the row and the field."""

    stage = STAGE

    def __init__(self, fmt: RowFormat, max_row_bytes: int):
        self.fmt = fmt  # travels to the workers whole: a format registered at run time works there too
        self.max_row_bytes = max_row_bytes

    def setup(self):
        super().setup()
        self.convert = self.fmt.load()

    def _bad(self, name: str, number: int, reason: str, error: str):
        self.funnel.drop("documents", reason)
        log.debug("%s row %d: %s", name, number, error)
        return pvalue.TaggedOutput(FAILED, Failure(stage=STAGE, step=f"read_{self.fmt.name}", kind="row",
                                                   key=f"{name}:{number}", error=f"{reason}: {error}"))

    def process(self, path: str):
        name = os.path.basename(path)
        letters = 0  # dead letters written for this file
        for row in rows(path, max_row_bytes=self.max_row_bytes):
            self.funnel.inc("records", "in")
            self.funnel.inc("records", "out")
            self.funnel.inc("documents", "in")
            if row.error is not None:
                letters += 1
                yield from self._letter(self._bad(name, row.number, row.reason, row.error), letters)
                continue
            try:
                if not isinstance(row.value, dict):
                    raise TypeError(f"a row must be a JSON object, found {type(row.value).__name__}")
                doc = self.convert(row.value, source_file=name, row_number=row.number)
                check_writable(doc)
            except (ValueError, TypeError, AttributeError, KeyError, IndexError, RecursionError,
                    OverflowError) as e:
                letters += 1
                error = f"{type(e).__name__}: {str(e)[:300]}"
                yield from self._letter(self._bad(name, row.number, BAD_ROW, error), letters)
                continue
            self.funnel.inc("nodes", "in", len(doc.nodes))
            yield doc
        if letters > MAX_DEAD_LETTERS:
            yield pvalue.TaggedOutput(FAILED, Failure(
                stage=STAGE, step=f"read_{self.fmt.name}", kind="row", key=f"{name}:*",
                error=f"{letters - MAX_DEAD_LETTERS} more bad rows, counted in the funnel, not written here"))

    @staticmethod
    def _letter(letter, written: int):
        """The dead letter, unless this file has had MAX_DEAD_LETTERS already (the rows stay counted)."""
        if written <= MAX_DEAD_LETTERS:
            yield letter


class ReadInterleaved(beam.PTransform):
    """File paths of a row format (OBELICS, MMC4, ...) to Documents, and dead letters tagged FAILED."""

    def __init__(self, fmt: RowFormat, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES):
        super().__init__()
        self.fmt, self.max_row_bytes = fmt, max_row_bytes

    def expand(self, paths):
        # one file path per element, spread over workers
        return (paths | "Spread" >> beam.Reshuffle()
                | "ReadRows" >> beam.ParDo(_ReadInterleavedFile(self.fmt, self.max_row_bytes)).with_outputs(
                    FAILED, main="documents"))
