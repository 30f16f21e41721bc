"""`interleaf export`: a finished run's curated documents, joined with their images, in the formats that
training stacks read (pipelines/export_formats.py: OBELICS Parquet, WebDataset tars, MMC4 JSONL + zips).

One Beam pipeline:
    documents shards --(position, document)--------------------------------------+
         \\-- image nodes' sha256 --+                                             |
                                   CoGroupByKey by sha256 -- (shard, image) -- CoGroupByKey by shard -- write
    image store --(sha256, bytes)--+
A document's position is its place in the run (shard by shard, row by row), so the export keeps the run's
document order, and output shard i holds positions [i * shard_size, (i + 1) * shard_size): the same run gives
the same files whatever the runner or worker count. One output shard (its documents and their image bytes)
is held in memory by the worker that writes it: memory is bounded by shard_size, not by the run.

Counts (funnel stage "export"): documents in = out (an export drops no document); images in = image nodes
of the documents, out = exported (with bytes, or by URL), dropped `image_missing` when missing_images is
"drop"; info `image_missing` counts the nodes whose bytes the store lacks (a node never fetched has none)
and `embedded` those exported with their bytes (none in OBELICS by URL, without embed_images). The output gets manifest.json (format, counts, files, the
source run and its config fingerprint) and README.md, a dataset card built from the run's funnel.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone

import apache_beam as beam

from interleaf import __version__, storage
from interleaf.pipelines import dataflow, rundir
from interleaf.pipelines.common import (
    CountingDoFn,
    ReadShards,
    create_pipeline,
    funnel_from,
    pipeline_options,
    unreconciled,
)
from interleaf.pipelines.export_formats import FORMATS, StoredImage, file_patterns, shard_files, write_shard
from interleaf.pipelines.names import MANIFEST
from interleaf.schemas.document import DOCUMENT_SCHEMA, documents_from_table
from interleaf.schemas.image import IMAGE_SCHEMA, STATUS_OK, images_from_table
from interleaf.schemas.meta import check_schema
from interleaf.shards import NUM_ROWS_KEY, list_shards, open_shard, read_shard

log = logging.getLogger(__name__)

STAGE = "export"
KEEP_URL, DROP = "keep_url", "drop"
MISSING_POLICIES = (KEEP_URL, DROP)
CARD = "README.md"
KIND = "interleaf export"  # the manifest of an export says so
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


# ---------------------------------------------------------------- the source run


@dataclass(frozen=True)
class SourceRun:
    directory: str
    manifest: dict
    document_shards: list[tuple[str, int]]  # (path, position of its first row)
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
    if manifest.get("kind") == KIND:
        raise ValueError(f"{directory} is an export, not a run; give the --output of `interleaf run`")
    docs_dir = storage.join(directory, "documents")
    if not storage.is_dir(docs_dir):
        raise ValueError(f"run {directory} has no documents/ (its stages wrote none); nothing to export")
    shards, offset = [], 0
    for path in list_shards(docs_dir):
        schema = open_shard(path).schema
        check_schema(schema, DOCUMENT_SCHEMA, where=path)
        shards.append((path, offset))
        offset += int((schema.metadata or {}).get(NUM_ROWS_KEY, b"0"))
    images = storage.join(directory, "images")
    if storage.is_dir(images) and storage.match(storage.join(images, "part-*.arrow")):
        check_schema(open_shard(list_shards(images)[0]).schema, IMAGE_SCHEMA, where=images)
    else:
        images = None
    return SourceRun(directory=directory, manifest=manifest, document_shards=shards, documents=offset,
                     images_path=images)


def config_fingerprint(run_config: dict | None) -> str:
    """sha256 of the run's settings in canonical JSON: two exports with the same fingerprint come from runs
    configured alike."""
    return hashlib.sha256(json.dumps(run_config or {}, sort_keys=True, default=str).encode()).hexdigest()


def _check_output(run_dir: str, output: str) -> None:
    if not storage.is_local(output) or not storage.is_local(run_dir):
        return
    out, run = os.path.realpath(output), os.path.realpath(run_dir)
    if out == run or any(out == os.path.join(run, sub) or out.startswith(os.path.join(run, sub) + os.sep)
                         for sub in _RUN_OUTPUTS):
        raise ValueError(f"--output {output} is the run directory or one of its outputs; export into a "
                         "directory of its own (for example RUN/export-FORMAT)")


# ---------------------------------------------------------------- the pipeline


def _read_documents(item):
    path, first = item
    for i, doc in enumerate(documents_from_table(read_shard(path, DOCUMENT_SCHEMA))):
        yield first + i, doc.kept_nodes()


def _wanted(item):
    """(sha256, (position, node index)) of each image node that names its bytes."""
    position, doc = item
    for i, node in enumerate(doc.nodes):
        if node.is_image and node.image_sha256:
            yield node.image_sha256, (position, i)


def _stored(record):
    if record.status == STATUS_OK and record.sha256 and record.data is not None:
        yield record.sha256, StoredImage(record.sha256, record.data, record.format, record.width,
                                         record.height)


def _attach(item, shard_size: int):
    """Each wanted image, with its bytes or None, to the output shard of the document that wants it."""
    _, grouped = item
    have = list(grouped["have"])
    stored = have[0] if have else None
    for position, index in grouped["want"]:
        yield position // shard_size, (position, index, stored)


class _WriteShard(CountingDoFn):
    stage = STAGE

    def __init__(self, config: ExportConfig, output: str, count: int):
        super().__init__()
        self.config, self.output, self.count = config, output, count
        self.carries_bytes = config.format != "obelics" or config.embed_images

    def process(self, item):
        index, grouped = item
        images: dict[int, dict] = {}
        for position, node_index, stored in grouped["images"]:
            images.setdefault(position, {})[node_index] = stored
        docs = []
        for position, doc in sorted(grouped["docs"], key=lambda pd: pd[0]):
            self.funnel.inc("documents", "in")
            found = images.get(position, {})
            nodes, changed = list(doc.nodes), False
            for i, node in enumerate(nodes):
                if not node.is_image:
                    continue
                self.funnel.inc("images", "in")
                if found.get(i) is not None:
                    if self.carries_bytes:
                        self.funnel.inc("images", "embedded")
                    self.funnel.inc("images", "out")
                    continue
                self.funnel.inc("images", "image_missing")
                if self.config.missing_images == DROP:
                    nodes[i], changed = node.dropped("image_missing"), True
                    self.funnel.drop("images", "image_missing")
                else:
                    self.funnel.inc("images", "out")
            found = {i: s for i, s in found.items() if s is not None}
            docs.append((position, replace(doc, nodes=nodes) if changed else doc, found))
            self.funnel.inc("documents", "out")
        names = write_shard(self.config.format, self.output, index, self.count, docs,
                            embed_images=self.config.embed_images)
        yield index, names, len(docs)


def build(p: beam.Pipeline, source: SourceRun, output: str, config: ExportConfig) -> None:
    size = config.shard_size
    count = max(1, math.ceil(source.documents / size))
    docs = (p | "ListDocumentShards" >> beam.Create(source.document_shards)
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadDocuments" >> beam.FlatMap(_read_documents))
    wanted = docs | "WantedImages" >> beam.FlatMap(_wanted)
    if source.images_path:
        stored = (p | "ReadImages" >> ReadShards(source.images_path, IMAGE_SCHEMA, images_from_table)
                  | "StoredBytes" >> beam.FlatMap(_stored))
    else:
        stored = p | "NoImageStore" >> beam.Create([])
    attached = ({"want": wanted, "have": stored} | "JoinBySha256" >> beam.CoGroupByKey()
                | "ToOutputShard" >> beam.FlatMap(_attach, size))
    by_shard = docs | "DocumentsToShard" >> beam.Map(lambda pd: (pd[0] // size, pd))
    every = p | "EveryShard" >> beam.Create([(i, None) for i in range(count)])
    _ = ({"docs": by_shard, "images": attached, "every": every} | "GroupByShard" >> beam.CoGroupByKey()
         | "WriteShard" >> beam.ParDo(_WriteShard(config, output, count)))


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
    _check_output(run_dir, output)
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
        storage.makedirs(output)
        rundir.write_manifest(output, manifest)
        for pattern in file_patterns(config.format):  # an earlier export's shards, maybe of another count
            for path in storage.match(storage.join(output, pattern)):
                storage.remove(path)
        log.info("exporting %d documents of %s as %s into %s (%d shards)", source.documents, run_dir,
                 config.format, output, count)
        started = time.time()
        try:
            result = p.run()
            result.wait_until_finish()
        except BaseException as e:
            error = (str(e).strip().splitlines() or [type(e).__name__])[0][:500]
            rundir.write_manifest(output, {**manifest, "status": rundir.FAILED, "error": error})
            raise
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
