"""File access for local paths and cloud URIs (gs://, s3://, ...) through Beam's FileSystems.

Local paths skip Beam where it buys nothing (memory-mapped reads), so that `interleaf inspect` on a local
shard does not pay for importing Beam. Everything else goes through FileSystems, so the same code reads and
writes a bucket on Dataflow.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class StorageError(OSError):
    """A path could not be listed, read or written."""


def is_local(path: str) -> bool:
    return not _SCHEME.match(path) or path.startswith("file://")


def _local(path: str) -> str:
    return path.removeprefix("file://")


def _filesystems():
    from apache_beam.io.filesystems import FileSystems  # imported late: heavy, and only needed for URIs
    return FileSystems


def join(base: str, *parts: str) -> str:
    if is_local(base):
        return os.path.join(_local(base), *parts)
    return _filesystems().join(base, *parts)


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.exists(_local(path))
    return _filesystems().exists(path)


def is_dir(path: str) -> bool:
    if is_local(path):
        return os.path.isdir(_local(path))
    # Object stores have no directories: a "directory" is a prefix with objects under it.
    return bool(match(join(path, "*")))


def makedirs(path: str) -> None:
    if is_local(path):
        os.makedirs(_local(path), exist_ok=True)
    # object stores need no directories


def match(pattern: str) -> list[str]:
    """Paths matching a glob, sorted; [] when nothing matches."""
    if is_local(pattern):
        import glob
        return sorted(glob.glob(_local(pattern)))
    fs = _filesystems()
    try:
        result = fs.match([pattern])[0]
    except Exception as e:  # Beam raises BeamIOError (an IOError) or ValueError for an unknown scheme
        raise StorageError(f"cannot list {pattern}: {_explain(e)}") from e
    return sorted(m.path for m in result.metadata_list)


def match_in(directory: str, pattern: str) -> list[str]:
    """Paths in `directory` whose names match the glob `pattern`, sorted: the directory's own name is taken
    literally ("runs/r[1]" is that folder, not "runs/r1")."""
    if is_local(directory):
        import glob
        return sorted(glob.glob(os.path.join(glob.escape(_local(directory)), pattern)))
    return match(join(directory, pattern))


def local_path(path: str) -> str | None:
    """The filesystem path of a local path or file:// URI (None for an object store's URI)."""
    return _local(path) if is_local(path) else None


def remove(path: str) -> None:
    if is_local(path):
        os.remove(_local(path))
    else:
        _filesystems().delete([path])


def open_read(path: str) -> BinaryIO:
    if is_local(path):
        return open(_local(path), "rb")
    from apache_beam.io.filesystem import CompressionTypes
    try:
        return _filesystems().open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as e:
        raise StorageError(f"cannot read {path}: {_explain(e)}") from e


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


@contextmanager
def atomic_write(path: str) -> Iterator[BinaryIO]:
    """Write to a hidden temporary name beside `path`, then rename it into place.

    A reader never sees a half-written file under the final name: a killed writer leaves only a
    `.tmp-*` file, which shard listings ignore.
    """
    directory, name = os.path.split(path.rstrip("/"))
    tmp = f"{directory}/.tmp-{name}-{uuid.uuid4().hex[:12]}"
    if is_local(path):
        os.makedirs(_local(directory) or ".", exist_ok=True)
        try:
            with open(_local(tmp), "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(_local(tmp), _local(path))
        except BaseException:
            if os.path.exists(_local(tmp)):
                os.remove(_local(tmp))
            raise
        return
    from apache_beam.io.filesystem import CompressionTypes
    fs = _filesystems()
    try:
        f = fs.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as e:
        raise StorageError(f"cannot write {path}: {_explain(e)}") from e
    try:
        yield f
        f.close()
        if fs.exists(path):
            fs.delete([path])
        fs.rename([tmp], [path])
    except BaseException:
        f.close()
        if fs.exists(tmp):
            fs.delete([tmp])
        raise


def write_bytes(path: str, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def _explain(e: Exception) -> str:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "Unable to get filesystem" in msg:
        return (f"{msg[:120]}... This URI scheme needs Beam's cloud extras: "
                "pip install 'interleaf[gcp]' (gs://) or 'apache-beam[aws]' (s3://)")
    return msg


def file_sha256(path: str) -> str:
    """Hex sha256 of a local file, read in 1 MiB blocks (the fingerprint of tokenizer and model files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
