"""`interleaf run`: the configured stages as one Beam pipeline, then the run's manifest.

Stages, in order (any subset; a run that does not start with ingest reads interleaf document shards):
    ingest    WARC / OBELICS / MMC4 -> Documents (+ archived images)         pipelines/ingest.py
    dedup     exact and near-duplicate documents, repeated paragraphs          pipelines/dedup.py
              after fetch (or on archived images): duplicate and too-frequent images   pipelines/dedup_images.py
    fetch     image URLs -> the image store (consent, safety, politeness)   pipelines/fetch.py
              then every image, fetched or archived, meets the image rules      pipelines/image_rules.py
              then NSFW scores (dropped at the threshold) and faces on every image  pipelines/image_safety.py
    clip      image-text similarity with open_clip; drop images that do not belong   pipelines/clip.py
    tokenize  BPE text + VQ image codes -> token shards                      pipelines/tokenize.py
After the last image stage, documents are checked once more against the image-count bounds (a page whose
images all failed to fetch no longer has any), counted as stage "final" (pipelines/final.py).

Every step implements the stage contract of pipelines/stage.py, so `build()` is a loop over STAGE_ORDER.

Output layout of a run directory:
    DIR/documents/   curated documents (kept nodes only, unless ingest.keep_dropped_nodes)
    DIR/rejected/    documents dropped by any stage, with their reasons
    DIR/images/      the image store: images the curated documents use, plus one row per failed URL
    DIR/failed/      dead letters of every stage (schemas/failure.py): elements that could not be processed
    DIR/tokens/      token shards (tokenize stage)
    DIR/cache/fetch/ the fetch stage's resumable store and journals (a rerun fetches nothing twice)
    DIR/export/FMT/  the curated documents with their images as OBELICS, WebDataset or MMC4 ([export] formats,
                     written by pipelines/export.py once the run has finished)
    DIR/manifest.json  config, versions, inputs, timings and the funnel, reconciled
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import apache_beam as beam

from interleaf import __version__, storage
from interleaf.filters.blocklist import BlocklistConfig
from interleaf.filters.clip import ClipConfig, ClipModelConfig
from interleaf.filters.image_rules import ImageRules
from interleaf.filters.image_safety import ImageSafetyConfig
from interleaf.filters.pii import PiiConfig
from interleaf.pipelines import dataflow, rundir
from interleaf.pipelines.common import (
    WriteShards,
    create_pipeline,
    funnel_from,
    pipeline_options,
    unreconciled,
)
from interleaf.pipelines.dedup import DedupConfig
from interleaf.pipelines.export import ExportSinkConfig
from interleaf.pipelines.fetch import FetchImagesConfig
from interleaf.pipelines.ingest import IngestConfig
from interleaf.pipelines.names import STAGES
from interleaf.pipelines.stage import DOCUMENTS, FAILED, IMAGES, REJECTED, SHARDS_FORMAT, RunContext, Stage
from interleaf.readers import check_forced_format, detect_format
from interleaf.schemas.document import documents_to_table
from interleaf.schemas.failure import failure_key, failures_to_table
from interleaf.schemas.image import images_to_table
from interleaf.shards import SHARD_SUFFIX

log = logging.getLogger(__name__)

OUTPUTS = ("documents", "rejected", "images", "tokens", "failed")

# The steps of a run in pipeline order, as (stage name, module, class): each class implements the stage
# contract (pipelines/stage.py) and says itself whether a run of the configured stages includes it. A
# module is imported only when its stage may run (clip and tokenize import torch); "shards", "pii",
# "image_rules", "image_safety" and "final" are steps users do not name: the source of a run without ingest,
# personal data replaced in what ingest read, the image rules and then the NSFW and face detector on every
# image (fetched or archived), and the last image-count check.
STAGE_ORDER = (
    ("shards", "interleaf.pipelines.ingest", "ShardsInput"),
    ("ingest", "interleaf.pipelines.ingest", "IngestStage"),
    ("pii", "interleaf.pipelines.pii", "PiiStage"),
    ("dedup", "interleaf.pipelines.dedup", "DedupDocumentsStage"),
    ("fetch", "interleaf.pipelines.fetch", "FetchStage"),
    ("image_rules", "interleaf.pipelines.image_rules", "ImageRulesStage"),
    ("dedup", "interleaf.pipelines.dedup_images", "DedupImagesStage"),
    ("image_safety", "interleaf.pipelines.image_safety", "ImageSafetyStage"),
    ("clip", "interleaf.pipelines.clip", "ClipStage"),
    ("final", "interleaf.pipelines.final", "FinalStage"),
    ("tokenize", "interleaf.pipelines.tokenize", "TokenizeStage"),
)


def stage_classes(stages: list[str]) -> list[type[Stage]]:
    """The stage classes a run of `stages` applies, in order."""
    import importlib

    found = []
    for name, module, cls_name in STAGE_ORDER:
        if name in stages or name not in STAGES:
            cls = getattr(importlib.import_module(module), cls_name)
            if cls.enabled(stages):
                found.append(cls)
    return found


@dataclass(kw_only=True)
class RunConfig:
    stages: list[str] = field(default_factory=lambda: list(STAGES[:-1]))  # stages to run, in pipeline order
    num_shards: int = 1  # shards per output; more lets workers write in parallel
    ingest: IngestConfig = field(default_factory=IngestConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    fetch: FetchImagesConfig = field(default_factory=FetchImagesConfig)
    # which images are kept (format, sides, aspect, area): every image, fetched or archived
    image_rules: ImageRules = field(default_factory=ImageRules)
    # blocked domains and URLs (UT1 via datatrove, your files) and banned URL words: pages at ingest, images
    # before fetch
    blocklist: BlocklistConfig = field(default_factory=BlocklistConfig)
    # NSFW scores (drop at the threshold) and face boxes on every stored image, optional face blurring:
    # NudeNet's detector, the `safety` extra
    image_safety: ImageSafetyConfig = field(default_factory=ImageSafetyConfig)
    # personal data (e-mail, phone, IP, @handle) replaced by typed placeholders, right after ingest
    pii: PiiConfig = field(default_factory=PiiConfig)
    # LAION's ViT-B-32 (its published threshold 0.28 applies); needs a download once, or a checkpoint file
    clip: ClipConfig = field(default_factory=lambda: ClipConfig(
        model=ClipModelConfig(model_name="ViT-B-32", pretrained="laion2b_s34b_b79k")))
    tokenize: object | None = None  # a pipelines.tokenize.TokenizeConfig: needs the tokenizer files
    # Beam accelerator resource hints for the GPU steps on Dataflow, e.g.
    # "type:nvidia-tesla-t4;count:1;install-nvidia-driver" (with clip.model.device / tokenize.device "cuda")
    clip_accelerator: str | None = None
    tokenize_accelerator: str | None = None
    # formats the finished run is exported to, in DIR/export/<format> (interleaf export does the same later)
    export: ExportSinkConfig = field(default_factory=ExportSinkConfig)

    def validate(self) -> None:
        """Everything that can be checked before any work starts."""
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; available: {', '.join(STAGES)}")
        if not self.stages:
            raise ValueError("no stages to run")
        if list(self.stages) != sorted(self.stages, key=STAGES.index) or len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stages must be given once each, in pipeline order ({', '.join(STAGES)})")
        if self.num_shards < 1:
            raise ValueError(f"num_shards must be at least 1, found {self.num_shards}")
        self.ingest.validate()  # its quality rules apply again in the final check
        self.export.validate()
        for cls in stage_classes(self.stages):
            cls.validate(self)


# ---------------------------------------------------------------- inputs


def _is_shard_dir(path: str) -> bool:
    return storage.is_dir(path) and bool(storage.match(storage.join(path, "*" + SHARD_SUFFIX)))


def resolve_inputs(patterns: list[str], input_format: str | None) -> dict[str, list[str]]:
    """Input patterns (paths, globs, URIs) to {format: [paths]}; raises ValueError when nothing matches.
    A directory of document shards is format "shards"."""
    by_format: dict[str, list[str]] = {}
    for pattern in patterns:
        paths = storage.match(pattern) if any(c in pattern for c in "*?[") else (
            [pattern] if storage.exists(pattern) or _is_shard_dir(pattern) else [])
        if not paths:
            raise ValueError(f"no input matches {pattern}")
        for path in paths:
            if _is_shard_dir(path) or path.endswith(SHARD_SUFFIX):
                fmt = SHARDS_FORMAT
            elif storage.is_dir(path):
                raise ValueError(f"{path} is a directory without shards; give files or a glob such as "
                                 f"{path}/*.warc.gz")
            elif input_format:
                check_forced_format(path, input_format)
                fmt = input_format
            else:
                fmt = detect_format(path)
            by_format.setdefault(fmt, []).append(path)
    return {k: _distinct_files(v) for k, v in by_format.items()}


def _distinct_files(paths: list[str]) -> list[str]:
    """Paths sorted, one per file: `a.jsonl`, `./a.jsonl` and a symlink to it are read once (the first
    spelling in sort order is kept); remote URIs are compared as written."""
    seen, kept = set(), []
    for path in sorted(set(paths)):
        key = os.path.realpath(path) if storage.is_local(path) else path
        if key not in seen:
            seen.add(key)
            kept.append(path)
    return kept


def _clear_shards(directory: str) -> None:
    """Remove a previous run's shards so that a reader never mixes two runs' part-i-of-N sets."""
    for path in storage.match(storage.join(directory, "*" + SHARD_SUFFIX)):
        storage.remove(path)


def versions() -> dict[str, str]:
    import apache_beam
    import pyarrow
    import torch
    return {"interleaf": __version__, "python": platform.python_version(), "apache_beam": apache_beam.__version__,
            "pyarrow": pyarrow.__version__, "torch": torch.__version__}


# ---------------------------------------------------------------- the pipeline


def build(p: beam.Pipeline, inputs: dict[str, list[str]], output: str, config: RunConfig,
          images_path: str | None = None) -> dict:
    """Add the configured stages and the writers to pipeline `p`; returns the final PCollections."""
    context = RunContext(inputs=inputs, output=output, images_path=images_path)
    streams, rejected, failed = None, [], []
    for cls in stage_classes(config.stages):
        stage = cls.create(config, context)
        out = (p if cls.source else streams) | cls.label >> stage
        rejected.append(out[REJECTED])
        failed.append(out[FAILED])
        streams = {DOCUMENTS: out[DOCUMENTS], IMAGES: out[IMAGES]}
    docs, images = streams[DOCUMENTS], streams[IMAGES]

    n = config.num_shards
    if not config.ingest.keep_dropped_nodes:
        docs = docs | "StripDroppedNodes" >> beam.Map(lambda d: d.kept_nodes())
    _ = docs | "WriteDocuments" >> WriteShards(storage.join(output, "documents"), documents_to_table,
                                               lambda d: d.doc_id, n)
    _ = (tuple(rejected) | "AllRejected" >> beam.Flatten()
         | "WriteRejected" >> WriteShards(storage.join(output, "rejected"), documents_to_table,
                                          lambda d: d.doc_id, n))
    _ = (tuple(failed) | "AllFailed" >> beam.Flatten()
         | "WriteFailed" >> WriteShards(storage.join(output, "failed"), failures_to_table, failure_key, n))
    if config.stages != ["tokenize"]:  # tokenize alone reads the store and writes no new one
        _ = images | "WriteImages" >> WriteShards(storage.join(output, "images"), images_to_table,
                                                  lambda r: r.sha256 or ("\x00" + r.urls[0]), n)
    return {DOCUMENTS: docs, IMAGES: images}


# ---------------------------------------------------------------- running


def _stage_timings(result, stages: list[str]) -> dict[str, float]:
    """Seconds of processing per stage, from the runner's per-step execution-time metrics where it reports
    them (FnApiRunner and Dataflow do); steps are attributed by the label they carry."""
    labels: dict[str, tuple[str, ...]] = {"write": ("WriteDocuments", "WriteRejected", "WriteFailed", "WriteImages")}
    for cls in stage_classes(stages):
        labels[cls.name] = (*labels.get(cls.name, ()), cls.label)
    totals = {s: 0.0 for s in labels}
    try:
        infos = result.monitoring_infos()
    except (AttributeError, NotImplementedError):
        return {}
    from apache_beam.metrics import monitoring_infos as mi
    for info in infos:
        if not info.urn.endswith("_msecs:v1") or "execution_time" not in info.urn:
            continue
        step = info.labels.get(mi.PTRANSFORM_LABEL, "")
        first = step.split("/", 1)[0]
        for stage, prefixes in labels.items():
            if stage in totals and first.startswith(prefixes):
                totals[stage] += mi.extract_counter_value(info) / 1000.0
    return {k: round(v, 3) for k, v in totals.items()}


def preflight(config: RunConfig, options) -> None:
    """Load what the local workers will load, so that a missing model fails now with one clear message
    rather than inside a worker. Remote runners load on their workers (which may reach what this cannot)."""
    from apache_beam.options.pipeline_options import StandardOptions
    if options.view_as(StandardOptions).runner not in (None, "DirectRunner", "FnApiRunner"):
        return
    if "clip" in config.stages:
        from interleaf.filters.clip_model import ClipModelError, load_clip
        try:
            load_clip(config.clip.model)
        except (ClipModelError, RuntimeError, OSError, ValueError) as e:
            m = config.clip.model
            raise ValueError(f"cannot load CLIP {m.model_name} weights {m.pretrained!r}: {str(e).splitlines()[0]}. "
                             "Without network, pass a checkpoint file (--clip-pretrained PATH, made by "
                             "interleaf train-clip)") from None


def _export(output: str, sink: ExportSinkConfig, pipeline_args: list[str]) -> dict:
    """The finished run in DIR/export/<format> for each format of [export]: {format: its directory and
    counts}."""
    from interleaf.pipelines.export import export

    done = {}
    for fmt in sink.formats:
        directory = sink.directory(output, fmt)
        m = export(output, directory, sink.config_for(fmt), pipeline_args)
        done[fmt] = {"directory": directory, "counts": m["counts"], "unreconciled": m["unreconciled"]}
    return done


def run(patterns: list[str], output: str, config: RunConfig, pipeline_args: list[str] | None = None,
        images_path: str | None = None) -> dict:
    """Run the pipeline over the inputs into `output` and return the manifest (also written there).
    `images_path`: the image store of shard inputs (default: the "images" directory beside them).

    Everything that can fail before the work (settings, inputs, their overlap with the output, models,
    tokenizer files, the pipeline's construction) is checked before the output is touched; then the output
    is locked (pipelines/rundir.py), its manifest says "running", the previous run's shards are removed,
    and at the end the manifest says "complete" (or "failed", with the error)."""
    config.validate()
    pipeline_args = dataflow.prepare(list(pipeline_args or []))
    options = pipeline_options(pipeline_args)
    dry_run = dataflow.is_dry_run(options)
    inputs = resolve_inputs(patterns, config.ingest.input_format)
    if images_path is None and SHARDS_FORMAT in inputs:
        beside = storage.join(os.path.dirname(inputs[SHARDS_FORMAT][0].rstrip("/")), "images")
        images_path = beside if _is_shard_dir(beside) else None
    every_input = [path for paths in inputs.values() for path in paths]
    rewritten = OUTPUTS + (("export",) if config.export.formats else ())
    if storage.is_local(output) and os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output} is a file, not a directory")
    rundir.check_overlap(every_input + ([images_path] if images_path else []), output, rewritten)
    preflight(config, options)
    p = create_pipeline(options)
    build(p, inputs, output, config, images_path)
    if dry_run:  # translated, not submitted: report the job's graph
        result = p.run()
        return {"dry_run": True, "stages": config.stages, "remote": dataflow.describe(options),
                "pipeline_args": pipeline_args, "graph": dataflow.job_graph(result)}

    manifest = {
        "interleaf_version": __version__,
        "status": rundir.RUNNING,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
        "images_input": images_path,
        "stages": config.stages,
        "config": asdict(config),
        "pipeline_args": pipeline_args,
        "runner": dataflow.describe(options),
        "versions": versions(),
    }
    with rundir.RunLock(output):
        storage.makedirs(output)
        rundir.write_manifest(output, manifest)  # from here until the end, the directory says "running"
        for sub in OUTPUTS:
            _clear_shards(storage.join(output, sub))
        if storage.is_dir(storage.join(output, "export")):  # an earlier run's exports describe that run
            from interleaf.pipelines.export import clear_export
            for directory in storage.match_in(storage.join(output, "export"), "*"):
                clear_export(directory)
        log.info("running %s over %d input(s) into %s", "+".join(config.stages),
                 sum(len(v) for v in inputs.values()), output)
        started = time.time()
        result = rundir.run_pipeline(p, output, manifest)
        elapsed = time.time() - started
        funnel = funnel_from(result)
        manifest.update({
            "status": rundir.COMPLETE,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "timings_s": {"total": round(elapsed, 3),
                          "processing_by_stage": _stage_timings(result, config.stages)},
            "funnel": funnel,
            "unreconciled": unreconciled(funnel),
        })
        rundir.write_manifest(output, manifest)
        if config.export.formats:
            manifest["exports"] = _export(output, config.export, pipeline_args)
            rundir.write_manifest(output, manifest)
    if manifest["unreconciled"]:
        log.error("funnel does not reconcile: %s", manifest["unreconciled"])
    return manifest
