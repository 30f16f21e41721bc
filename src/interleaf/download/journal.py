"""The fetch journal: every finished URL is recorded as soon as it is finished, so a killed run loses only
the requests in flight, and a rerun knows what not to fetch again.

A journal is an Arrow IPC stream (IMAGE_SCHEMA, one record batch per URL) under `<store>/_journal/`. On a
local disk one file per worker is appended to and flushed after every record; a reader stops at a tail cut
short by a killed writer. Object stores cannot append, so there the records are written in batches of
`remote_batch`, each as its own file written atomically (a kill loses the unwritten batch). The fetch stage
compacts journals into the store's shards at the end of a run and then deletes them.
"""

from __future__ import annotations

import logging
import threading
import uuid

import pyarrow as pa

from interleaf import storage
from interleaf.schemas.image import IMAGE_SCHEMA, ImageRecord, images_from_table, images_to_table

log = logging.getLogger(__name__)

JOURNAL_DIR = "_journal"
JOURNAL_SUFFIX = ".arrows"


def journal_dir(store_dir: str) -> str:
    return storage.join(store_dir, JOURNAL_DIR)


def list_journals(store_dir: str) -> list[str]:
    return [p for p in storage.match(storage.join(journal_dir(store_dir), "*" + JOURNAL_SUFFIX))
            if not p.rsplit("/", 1)[-1].startswith(".")]


def read_journal(path: str) -> list[ImageRecord]:
    """Records of a journal; a tail cut short by a killed writer is skipped (and logged)."""
    records: list[ImageRecord] = []
    try:
        reader = pa.ipc.open_stream(pa.BufferReader(storage.read_bytes(path)))
        for batch in reader:
            records += images_from_table(pa.Table.from_batches([batch], schema=IMAGE_SCHEMA))
    except (pa.ArrowInvalid, OSError) as e:
        log.info("%s: journal ends early after %d records (%s); the rest was lost with its writer",
                 path, len(records), e)
    return records


def write_journal(path: str, records: list[ImageRecord]) -> None:
    """Write a whole journal atomically (used for remote batches and by the opt-out rewrite)."""
    with storage.atomic_write(path) as f:
        with pa.ipc.new_stream(f, IMAGE_SCHEMA) as writer:
            if records:
                writer.write_table(images_to_table(records))


class JournalWriter:
    """Appends records to this worker's journal; thread-safe. Call close() at the end of each bundle."""

    def __init__(self, store_dir: str, remote_batch: int = 64):
        self._dir = journal_dir(store_dir)
        self._local = storage.is_local(store_dir)
        self._remote_batch = remote_batch
        self._lock = threading.Lock()
        self._file = self._writer = None
        self._buffer: list[ImageRecord] = []
        self.written = 0

    def _new_path(self) -> str:
        return storage.join(self._dir, f"{uuid.uuid4().hex}{JOURNAL_SUFFIX}")

    def append(self, record: ImageRecord) -> None:
        with self._lock:
            if self._local:
                if self._writer is None:
                    storage.makedirs(self._dir)
                    self._file = pa.OSFile(self._new_path().removeprefix("file://"), "wb")
                    self._writer = pa.ipc.new_stream(self._file, IMAGE_SCHEMA)
                self._writer.write_table(images_to_table([record]))
                self._file.flush()
            else:
                self._buffer.append(record)
                if len(self._buffer) >= self._remote_batch:
                    self._flush_remote()
            self.written += 1

    def _flush_remote(self) -> None:
        if self._buffer:
            write_journal(self._new_path(), self._buffer)
            self._buffer = []

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._file.close()
                self._writer = self._file = None
            self._flush_remote()
