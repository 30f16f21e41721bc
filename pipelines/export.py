"""`interleaf export`: a finished run's curated documents, joined with their images, in the formats that
training stacks read (pipelines/export_formats.py: OBELICS Parquet, WebDataset tars, MMC4 JSONL + zips).

One Beam pipeline, in which documents never pass through the engine's shuffle (they are read where they are
written), only the images and which output shard wants which image:
    run's document shards -- (sha256, output shard) of each kept image node (Arrow compute on the nodes) --+
                                                                                  CoGroupByKey by sha256
    image store shards ---- (sha256, image) --------------------------------------------------------------+
        -- (output shard, image) -- GroupByKey by output shard -- writer of shard i: reads its documents
           (the run's positions i * shard_size onwards) from the run's shards, attaches the images, writes
A document's position is its place in the run (shard by shard, row by row), so the export keeps the run's
document order and the same run gives the same files whatever the runner or worker count. The writer of a
shard holds that shard's documents and images in memory: memory is bounded by shard_size, not by the run.

Counts (funnel stage "export"): documents in = out (an export drops no document); images in = image nodes
of the documents, out = exported (with bytes, or by URL), dropped `image_missing` when missing_images is
"drop"; info `image_missing` counts the nodes whose bytes the store lacks (a node never fetched has none)
and `embedded` those exported with their bytes (none in OBELICS by URL, without embed_images). The output
gets manifest.json (format, counts, files, the source run and its config fingerprint) and README.md, a
dataset card built from the run's funnel.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import math
import os
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone

import apache_beam as beam
import pyarrow.compute as pc

from interleaf import __version__, storage
from interleaf.pipelines import dataflow, rundir
from interleaf.pipelines.common import (
    CountingDoFn,
    create_pipeline,
    funnel_from,
    pipeline_options,
    unreconciled,
)
from interleaf.pipelines.export_formats import FORMATS, StoredImage, file_patterns, shard_files, write_shard
from interleaf.pipelines.names import MANIFEST
from interleaf.schemas.document import DOCUMENT_SCHEMA, KEPT, documents_from_table
from interleaf.schemas.image import IMAGE_SCHEMA, STATUS_OK
from interleaf.schemas.meta import SchemaMismatchError
from interleaf.shards import list_shards, missing_shards, read_shard

log = logging.getLogger(__name__)

STAGE = "export"
KEEP_URL, DROP = "keep_url", "drop"
MISSING_POLICIES = (KEEP_URL, DROP)
CARD = "README.md"
KIND = "interleaf export"  # the manifest of an export says so
# the sha256 join runs in this many buckets: enough to spread over workers, few enough that the engine moves
# lists of references rather than one element per image
BUCKETS = 256
# the run's outputs: an export written into one of them would be mixed with (or deleted by) the run's files
_RUN_OUTPUTS = ("documents", "rejected", "images", "tokens", "failed", "cache")


@dataclass(kw_only=True)
class ExportConfig:
    format: str
    shard_size: int = 1000  # documents per output shard (the last one holds the rest)
    embed_images: bool = False  # obelics: the image bytes in an `image_data` column (HF `Image` feature)
    # an image node whose bytes are not in the store: "keep_url" exports it by URL (no file), "drop" leaves
    # it out; either way it is counted as image_missing
    missing_images: str = KEEP_URL

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown export format {self.format!r}; available: {', '.join(FORMATS)}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be at least 1 document, found {self.shard_size}")
        if self.missing_images not in MISSING_POLICIES:
            raise ValueError(f"missing_images must be one of {', '.join(MISSING_POLICIES)}, found "
                             f"{self.missing_images!r}")
        if self.embed_images and self.format != "obelics":
            raise ValueError(f"embed_images applies to the obelics format; {self.format} always carries the "
                             "image files")


@dataclass(kw_only=True)
class ExportSinkConfig:
    """[export] of `interleaf run`: formats to write into DIR/export/<format> once the run has finished."""

    formats: list[str] = field(default_factory=list)  # any of obelics, webdataset, mmc4; none by default
    shard_size: int = 1000
    embed_images: bool = False  # for obelics (the other formats always carry the image files)
    missing_images: str = KEEP_URL

    def config_for(self, fmt: str) -> ExportConfig:
        return ExportConfig(format=fmt, shard_size=self.shard_size, missing_images=self.missing_images,
                            embed_images=self.embed_images and fmt == "obelics")

    def validate(self) -> None:
        if len(set(self.formats)) != len(self.formats):
            raise ValueError(f"export.formats names a format twice: {', '.join(self.formats)}")
        for fmt in self.formats:
            self.config_for(fmt).validate()

    @staticmethod
    def directory(run_dir: str, fmt: str) -> str:
        return storage.join(run_dir, "export", fmt)


# ---------------------------------------------------------------- the source run


@dataclass(frozen=True)
class SourceRun:
    directory: str
    manifest: dict
    document_shards: list[tuple[str, int, int]]  # (path, position of its first row, rows)
    documents: int
    images_path: str | None


def open_run(directory: str) -> SourceRun:
    """The run to export, checked: complete, of schema versions this interleaf reads, its shards whole.
    Raises ValueError (one line) otherwise."""
    status = rundir.run_status(directory)
    if status is None:
        raise ValueError(f"{directory} is not a run directory (no {MANIFEST}); give the --output of a "
                         "finished `interleaf run`")
    if status["status"] != rundir.COMPLETE:
        why = f": {status['error']}" if status.get("error") else ""
        raise ValueError(f"run {directory} is not complete (status {status['status']}{why}); export a run "
                         "that finished, or rerun it")
    manifest = json.loads(storage.read_bytes(status["manifest"]))
    if not isinstance(manifest, dict):
        raise ValueError(f"{status['manifest']} is not a JSON object: not a manifest interleaf wrote")
    manifest = rundir.sane_manifest(manifest)
    if manifest.get("kind") == KIND:
        raise ValueError(f"{directory} is an export, not a run; give the --output of `interleaf run`")
    docs_dir = storage.join(directory, "documents")
    if not storage.is_dir(docs_dir):
        raise ValueError(f"run {directory} has no documents/ (its stages wrote none); nothing to export")
    shards, offset = [], 0
    for path in _whole_set(docs_dir):
        # read through (memory-mapped where local): a truncated or damaged shard is refused now, before
        # the output is touched, not by a worker halfway through the export
        rows = read_shard(path, DOCUMENT_SCHEMA, ["doc_id"]).num_rows
        shards.append((path, offset, rows))
        offset += rows
    images = storage.join(directory, "images")
    if storage.is_dir(images) and storage.match_in(images, "part-*.arrow"):
        for path in _whole_set(images):
            read_shard(path, IMAGE_SCHEMA, ["sha256"])
    else:
        images = None
    return SourceRun(directory=directory, manifest=manifest, document_shards=shards, documents=offset,
                     images_path=images)


def _whole_set(directory: str) -> list[str]:
    """The shards of a run's output directory, refused unless their part-i-of-N names are a whole set."""
    paths = list_shards(directory)
    missing = missing_shards(paths)
    if missing:
        raise ValueError(f"{directory}: {missing}; the run's output is incomplete (a shard deleted or not "
                         "written): rerun it, or restore the shard")
    return paths


def config_fingerprint(run_config: dict | None) -> str:
    """sha256 of the run's settings in canonical JSON: two exports with the same fingerprint come from runs
    configured alike."""
    return hashlib.sha256(json.dumps(run_config or {}, sort_keys=True, default=str).encode()).hexdigest()


def _check_output(run_dir: str, output: str) -> list[str]:
    """Refuse an output that is not an export's own directory; returns the files of an earlier export there
    (what its manifest lists, or for a killed one its format's shard names), which this export replaces.
    A directory holding anything else (a run, your files) is never written into."""
    out, run = storage.local_path(output), storage.local_path(run_dir)
    if out is not None and run is not None:
        out, run = os.path.realpath(out), os.path.realpath(run)
        if out == run or any(out == os.path.join(run, sub) or out.startswith(os.path.join(run, sub) + os.sep)
                             for sub in _RUN_OUTPUTS):
            raise ValueError(f"--output {output} is the run directory or one of its outputs; export into a "
                             "directory of its own (for example RUN/export-FORMAT)")
        if os.path.exists(out) and not os.path.isdir(out):
            raise ValueError(f"--output {output} is a file; give a directory")
    if not storage.is_dir(output):
        return []
    entries = [p for p in storage.match_in(output, "*") if os.path.basename(p) != rundir.LOCK]
    if not entries:
        return []
    earlier = _export_manifest(output)
    if earlier is None:
        raise ValueError(f"--output {output} is not empty and holds no earlier export (no export "
                         f"{MANIFEST}); export into a new or empty directory, or an earlier export's")
    names = set(_file_names(earlier))
    # every format's shard names, whatever the manifest says its format was (it may be hand-edited), and
    # the temporary files of a killed export's atomic writes (hidden: the listing above skips them)
    patterns = [p for fmt in FORMATS for p in file_patterns(fmt)]
    entries += storage.match_in(output, ".tmp-*")
    replaced = []
    for path in entries:
        name = os.path.basename(path.rstrip("/"))
        if (name in names or name in (MANIFEST, CARD) or name.startswith(".tmp-")
                or any(fnmatch.fnmatch(name, p) for p in patterns)):
            replaced.append(path)
    return replaced


def _export_manifest(directory: str) -> dict | None:
    """The manifest of the export in `directory`, or None where there is no export (no manifest, one that
    is not JSON, or a run's)."""
    path = storage.join(directory, MANIFEST)
    try:
        manifest = json.loads(storage.read_bytes(path)) if storage.exists(path) else None
    except ValueError:
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("kind") == KIND else None


def _file_names(manifest: dict) -> list[str]:
    """The plain file names an export's manifest lists (anything else in it is ignored)."""
    files = manifest.get("files") if isinstance(manifest.get("files"), list) else []
    return [f["name"] for f in files if isinstance(f, dict) and isinstance(f.get("name"), str)
            and "/" not in f["name"] and f["name"] not in ("", ".", "..")]


def clear_export(directory: str) -> int:
    """Remove the export in `directory` (the files its manifest lists, its card and manifest), as a rerun
    of the run it was made from does, so that no export outlives the run it describes; nothing else there
    is touched. Returns the files removed (0 where the directory holds no export)."""
    manifest = _export_manifest(directory)
    if manifest is None:
        return 0
    removed = 0
    for name in [*_file_names(manifest), CARD, MANIFEST]:
        if storage.exists(storage.join(directory, name)):
            storage.remove(storage.join(directory, name))
            removed += 1
    return removed


# ---------------------------------------------------------------- the pipeline


def _bucket(sha: str) -> int:
    return zlib.crc32(sha.encode("utf-8", "replace")) % BUCKETS


def _by_bucket(pairs):
    """(bucket, [(sha256, value), ...]) for each bucket that these pairs fall in."""
    buckets: dict[int, list] = {}
    for sha, value in pairs:
        buckets.setdefault(_bucket(sha), []).append((sha, value))
    yield from sorted(buckets.items())


def _wanted(shard: tuple[str, int, int], shard_size: int):
    """(bucket, [(sha256, output shard), ...]): once each image that a kept node of this run shard names,
    with each output shard that holds such a node; read from the nodes column with Arrow compute, no
    Document built."""
    path, first, _ = shard
    table = read_shard(path, DOCUMENT_SCHEMA, ["nodes"])
    if table.num_rows == 0:
        return
    nodes = table.column("nodes").combine_chunks()
    flat = pc.list_flatten(nodes)
    rows = pc.list_parent_indices(nodes)
    named = pc.and_(pc.is_valid(flat.field("image_sha256")), pc.equal(flat.field("status"), KEPT))
    shas = pc.filter(flat.field("image_sha256"), named).to_pylist()
    outputs = [(first + row) // shard_size for row in pc.filter(rows, named).to_pylist()]
    yield from _by_bucket(sorted(set(zip(shas, outputs))))


def _stored(shard_path: str):
    """(bucket, [(sha256, where its bytes are: (store shard, row, format, width, height)), ...]) of the
    stored images of a store shard. The bytes stay where they are until the writer that needs them reads
    them, so the engine's shuffle carries references, not images."""
    table = read_shard(shard_path, IMAGE_SCHEMA, ["sha256", "status", "format", "width", "height", "data"])
    if table.num_rows == 0:  # (pyarrow 25's indices_nonzero crashes on a chunked array without chunks)
        return
    # stored bytes, not an empty or absent value (only their lengths are read here, not the bytes)
    has_bytes = pc.fill_null(pc.greater(pc.binary_length(table.column("data")), 0), False)
    ok = pc.and_(pc.and_(pc.equal(table.column("status"), STATUS_OK), pc.is_valid(table.column("sha256"))),
                 has_bytes)
    rows = pc.indices_nonzero(ok.combine_chunks()).to_pylist()
    if not rows:
        return
    table = table.select(["sha256", "format", "width", "height"]).take(rows)
    columns = (table.column(c).to_pylist() for c in ("sha256", "format", "width", "height"))
    yield from _by_bucket((sha, (shard_path, row, fmt, width, height))
                          for row, sha, fmt, width, height in zip(rows, *columns))


def _join(item):
    """The join of one bucket: (output shard, [(sha256, reference), ...]) for each output shard that wants
    images of the bucket that the store has."""
    _, grouped = item
    have = {}
    for pairs in grouped["have"]:
        for sha, ref in pairs:
            have.setdefault(sha, ref)
    by_output: dict[int, list] = {}
    for pairs in grouped["want"]:
        for sha, output_shard in pairs:
            if sha in have:
                by_output.setdefault(output_shard, []).append((sha, have[sha]))
    yield from sorted(by_output.items())


class _WriteShard(CountingDoFn):
    """Output shard i: its documents read straight from the run's shards (positions i * shard_size onwards:
    documents never travel through the engine's shuffle), their images from the join, one file set."""

    stage = STAGE

    def __init__(self, config: ExportConfig, output: str, count: int, shards: list[tuple[str, int, int]]):
        super().__init__()
        self.config, self.output, self.count, self.shards = config, output, count, shards
        self.carries_bytes = config.format != "obelics" or config.embed_images

    def _documents(self, index: int):
        lo, hi = index * self.config.shard_size, (index + 1) * self.config.shard_size
        for path, first, rows in self.shards:
            a, b = max(lo, first), min(hi, first + rows)
            if a < b:
                table = read_shard(path, DOCUMENT_SCHEMA).slice(a - first, b - a)
                try:
                    docs = documents_from_table(table)
                except SchemaMismatchError as e:
                    raise SchemaMismatchError(f"{path}: {e}") from None
                for k, doc in enumerate(docs):
                    yield a + k, doc.kept_nodes()

    def _images(self, refs) -> dict[str, StoredImage]:
        """The images of these references, their bytes read from the store shards they are in (not when the
        format carries none)."""
        by_shard: dict[str, list] = {}
        for batch in refs:
            for ref in batch or ():
                by_shard.setdefault(ref[1][0], []).append(ref)
        images = {}
        for path, wanted in sorted(by_shard.items()):
            if self.carries_bytes:  # row by row from the memory-mapped column: one copy of each image's bytes
                column = read_shard(path, IMAGE_SCHEMA, ["data"]).column("data")  # (take() makes two)
                data = [column[r[1][1]].as_py() for r in wanted]
            else:
                data = [b""] * len(wanted)
            for (sha, (_, _, fmt, width, height)), blob in zip(wanted, data):
                images[sha] = StoredImage(sha, blob, fmt, width, height)
        return images

    def process(self, item):
        index, refs = item
        by_sha = self._images(refs)
        drop = self.config.missing_images == DROP
        docs, images, found_total, missing = [], 0, 0, 0
        for position, doc in self._documents(index):
            nodes, found, changed = doc.nodes, {}, False
            for i, node in enumerate(nodes):
                if not node.is_image:
                    continue
                images += 1
                image = by_sha.get(node.image_sha256) if node.image_sha256 else None
                if image is not None:
                    found[i] = image
                    continue
                missing += 1
                if drop:
                    if not changed:
                        nodes, changed = list(nodes), True
                    nodes[i] = node.dropped("image_missing")
            docs.append((position, replace(doc, nodes=nodes) if changed else doc, found))
            found_total += len(found)
        names = write_shard(self.config.format, self.output, index, self.count, docs,
                            embed_images=self.config.embed_images)
        # counted once the shard is written: a shard that fails to write is not counted as exported
        f = self.funnel
        f.inc("documents", "in", len(docs))
        f.inc("documents", "out", len(docs))
        f.inc("images", "in", images)
        f.inc("images", "out", images - (missing if drop else 0))
        f.inc("images", "image_missing", missing)
        f.drop("images", "image_missing", missing if drop else 0)
        if self.carries_bytes:
            f.inc("images", "embedded", found_total)
        yield index, names, len(docs)


def build(p: beam.Pipeline, source: SourceRun, output: str, config: ExportConfig) -> None:
    size = config.shard_size
    count = max(1, math.ceil(source.documents / size))
    # (beam.Create spreads its elements over workers itself: a Reshuffle of its own)
    wanted = (p | "ListDocumentShards" >> beam.Create(source.document_shards)
              | "WantedImages" >> beam.FlatMap(_wanted, size))
    if source.images_path:
        stored = (p | "ListImageShards" >> beam.Create(list_shards(source.images_path))
                  | "StoredImages" >> beam.FlatMap(_stored))
    else:
        stored = p | "NoImageStore" >> beam.Create([])
    # the join by sha256, in buckets of hashes so that the engine moves lists, not one element per image
    attached = ({"want": wanted, "have": stored} | "JoinBySha256" >> beam.CoGroupByKey()
                | "ToOutputShard" >> beam.FlatMap(_join))
    every = p | "EveryShard" >> beam.Create([(i, None) for i in range(count)], reshuffle=False)
    _ = ((attached, every) | "AllShards" >> beam.Flatten()
         | "GroupByShard" >> beam.GroupByKey()
         | "WriteShard" >> beam.ParDo(_WriteShard(config, output, count, source.document_shards)))


# ---------------------------------------------------------------- running


def _size(path: str) -> int:
    if storage.is_local(path):
        return os.path.getsize(path)
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


def export(run_dir: str, output: str, config: ExportConfig, pipeline_args: list[str] | None = None) -> dict:
    """Export the run at `run_dir` into `output`; returns the export's manifest (also written there).
    Everything checkable (settings, the run, the output's place) is checked before the output is touched."""
    config.validate()
    source = open_run(run_dir)
    replaced = _check_output(run_dir, output)
    options = pipeline_options(dataflow.prepare(list(pipeline_args or [])))
    p = create_pipeline(options)
    build(p, source, output, config)
    count = max(1, math.ceil(source.documents / config.shard_size))
    run_manifest = source.manifest
    manifest = {
        "kind": KIND,
        "format": config.format,
        "status": rundir.RUNNING,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "interleaf_version": __version__,
        "settings": asdict(config),
        "source_run": {"directory": os.path.abspath(run_dir) if storage.is_local(run_dir) else run_dir,
                       "created": run_manifest.get("created"), "stages": run_manifest.get("stages"),
                       "interleaf_version": run_manifest.get("interleaf_version"),
                       "config_fingerprint": config_fingerprint(run_manifest.get("config"))},
    }
    with rundir.RunLock(output):
        # again under the lock: another export may have written here since the check above
        replaced = _check_output(run_dir, output)
        storage.makedirs(output)
        for path in replaced:  # an earlier export's files, maybe of another format or shard count
            if not path.endswith(MANIFEST) and storage.exists(path):
                storage.remove(path)
        rundir.write_manifest(output, manifest)
        log.info("exporting %d documents of %s as %s into %s (%d shards)", source.documents, run_dir,
                 config.format, output, count)
        started = time.time()
        result = rundir.run_pipeline(p, output, manifest)
        funnel = funnel_from(result).get(STAGE, {})
        docs_out = funnel.get("documents", {}).get("out", 0)
        images = funnel.get("images", {"in": 0, "out": 0, "dropped": {}})
        files = []
        for i in range(count):
            n_docs = max(0, min(config.shard_size, source.documents - i * config.shard_size))
            for name in shard_files(config.format, i, count):
                files.append({"name": name, "documents": n_docs, "bytes": _size(storage.join(output, name))})
        manifest.update({
            "status": rundir.COMPLETE,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - started, 3),
            "counts": {"documents_in_run": source.documents, "documents": docs_out,
                       "image_nodes": images.get("in", 0), "images_exported": images.get("out", 0),
                       "images_embedded": images.get("info", {}).get("embedded", 0),
                       "image_missing": images.get("info", {}).get("image_missing", 0),
                       "images_dropped": images.get("dropped", {}).get("image_missing", 0)},
            "files": files,
            "funnel": {STAGE: funnel},
            "unreconciled": unreconciled({STAGE: funnel}),
        })
        if docs_out != source.documents:
            manifest["unreconciled"].append(f"documents exported {docs_out} != documents in the run "
                                            f"{source.documents}")
        from interleaf.pipelines.export_card import dataset_card
        storage.write_bytes(storage.join(output, CARD), dataset_card(run_manifest, manifest).encode())
        rundir.write_manifest(output, manifest)
    if manifest["unreconciled"]:
        log.error("export counts do not reconcile: %s", manifest["unreconciled"])
    return manifest
