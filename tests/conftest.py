import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks for updates on import
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub in tests

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent


@pytest.fixture
def data_dir() -> Path:
    return DATA


# ---------------------------------------------------------------- an object store for Beam's FileSystems
# Cloud URIs (gs://, s3://) reach interleaf through Beam's FileSystems. To exercise that path without a
# network, tests register this small in-memory object store under the scheme memfs:// (Beam finds every
# FileSystem subclass by its scheme). Like an object store it has no directories and renames by copying.

import io  # noqa: E402

from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem  # noqa: E402

MEMFS: dict[str, bytes] = {}


class _MemWriter(io.BytesIO):
    def __init__(self, path):
        super().__init__()
        self._path = path

    def close(self):
        if not self.closed:
            MEMFS[self._path] = self.getvalue()
        super().close()


class MemFileSystem(FileSystem):
    @classmethod
    def scheme(cls):
        return "memfs"

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *[p.strip("/") for p in paths]])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        for path, data in sorted(MEMFS.items()):
            if path.startswith(dir_or_prefix):
                yield FileMetadata(path, len(data), 0.0)

    def create(self, path, mime_type="application/octet-stream", compression_type=None):
        return _MemWriter(path)

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        if path not in MEMFS:
            raise BeamIOError(f"no such object {path}")
        return io.BytesIO(MEMFS[path])

    def copy(self, source_file_names, destination_file_names):
        for s, d in zip(source_file_names, destination_file_names):
            MEMFS[d] = MEMFS[s]

    def rename(self, source_file_names, destination_file_names):
        for s, d in zip(source_file_names, destination_file_names):
            MEMFS[d] = MEMFS.pop(s)

    def exists(self, path):
        return path in MEMFS

    def size(self, path):
        return len(MEMFS[path])

    def last_updated(self, path):
        return 0.0

    def checksum(self, path):
        return str(len(MEMFS[path]))

    def metadata(self, path):
        return FileMetadata(path, len(MEMFS[path]), 0.0)

    def delete(self, paths):
        for p in paths:
            MEMFS.pop(p, None)


@pytest.fixture
def memfs():
    """A fresh in-memory object store; paths look like memfs://bucket/..."""
    MEMFS.clear()
    yield MEMFS
    MEMFS.clear()
