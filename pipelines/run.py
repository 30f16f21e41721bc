"""`interleaf run`: build and run the stages as one Beam pipeline, then write the run's manifest.

Output layout of a run directory:
    DIR/documents/part-*.arrow   curated documents (the last stage's kept output)
    DIR/rejected/part-*.arrow    documents dropped by any stage, with their reasons
    DIR/images/part-*.arrow      the image store (archived images now; fetched ones with the fetch stage)
    DIR/manifest.json            config, versions, inputs, timings and the funnel, reconciled
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import apache_beam as beam

from interleaf import __version__, storage
from interleaf.pipelines.common import (WriteShards, create_pipeline, funnel_from, pipeline_options,
                                        unreconciled)
from interleaf.pipelines.ingest import STAGE as INGEST, Ingest, IngestConfig, detect_format
from interleaf.schemas.document import documents_to_table
from interleaf.schemas.image import images_to_table
from interleaf.shards import SHARD_SUFFIX

log = logging.getLogger(__name__)

STAGES = (INGEST,)  # in order; later stages (dedup, fetch, clip, tokenize) join this list
MANIFEST = "manifest.json"


@dataclass(kw_only=True)
class RunConfig:
    stages: list[str] = field(default_factory=lambda: list(STAGES))  # which stages to run, in order
    num_shards: int = 1  # shards per output (documents, rejected, images); more lets workers write in parallel
    ingest: IngestConfig = field(default_factory=IngestConfig)

    def validate(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; available: {', '.join(STAGES)}")
        if not self.stages:
            raise ValueError("no stages to run")
        if self.num_shards < 1:
            raise ValueError(f"num_shards must be at least 1, found {self.num_shards}")
        self.ingest.validate()


def resolve_inputs(patterns: list[str], input_format: str | None) -> dict[str, list[str]]:
    """Input patterns (paths, globs, URIs) to {format: [paths]}; raises ValueError when nothing matches."""
    by_format: dict[str, list[str]] = {}
    for pattern in patterns:
        paths = storage.match(pattern) if any(c in pattern for c in "*?[") else (
            [pattern] if storage.exists(pattern) else [])
        if not paths:
            raise ValueError(f"no input matches {pattern}")
        for path in paths:
            if storage.is_dir(path):
                raise ValueError(f"{path} is a directory; give files or a glob such as {path}/*.warc.gz")
            fmt = input_format or detect_format(path)
            by_format.setdefault(fmt, []).append(path)
    return {k: sorted(set(v)) for k, v in by_format.items()}


def _clear_shards(directory: str) -> None:
    """Remove a previous run's shards so that a reader never mixes two runs' part-i-of-N sets."""
    for path in storage.match(storage.join(directory, "*" + SHARD_SUFFIX)):
        storage.remove(path)


def versions() -> dict[str, str]:
    import apache_beam
    import pyarrow
    return {"interleaf": __version__, "python": platform.python_version(), "apache_beam": apache_beam.__version__,
            "pyarrow": pyarrow.__version__}


def build(p: beam.Pipeline, inputs: dict[str, list[str]], output: str, config: RunConfig) -> None:
    """Add the configured stages and their writers to pipeline `p`."""
    out = p | "Ingest" >> Ingest(inputs, config.ingest)
    n = config.num_shards
    _ = out["kept"] | "WriteDocuments" >> WriteShards(
        storage.join(output, "documents"), documents_to_table, lambda d: d.doc_id, n)
    _ = out["rejected"] | "WriteRejected" >> WriteShards(
        storage.join(output, "rejected"), documents_to_table, lambda d: d.doc_id, n)
    _ = out["images"] | "WriteImages" >> WriteShards(
        storage.join(output, "images"), images_to_table, lambda r: r.sha256, n)


def run(patterns: list[str], output: str, config: RunConfig, pipeline_args: list[str] | None = None) -> dict:
    """Run the pipeline over the inputs into `output` and return the manifest (also written there)."""
    config.validate()
    inputs = resolve_inputs(patterns, config.ingest.input_format)
    storage.makedirs(output)
    for sub in ("documents", "rejected", "images"):
        _clear_shards(storage.join(output, sub))
    options = pipeline_options(pipeline_args)
    started = time.time()
    p = create_pipeline(options)
    build(p, inputs, output, config)
    log.info("running %s over %d input file(s) into %s", "+".join(config.stages),
             sum(len(v) for v in inputs.values()), output)
    result = p.run()
    result.wait_until_finish()
    elapsed = time.time() - started
    funnel = funnel_from(result)
    manifest = {
        "interleaf_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
        "stages": config.stages,
        "config": asdict(config),
        "pipeline_args": list(pipeline_args or []),
        "versions": versions(),
        "timings_s": {"total": round(elapsed, 3)},
        "funnel": funnel,
        "unreconciled": unreconciled(funnel),
    }
    storage.write_bytes(storage.join(output, MANIFEST), json.dumps(manifest, indent=2, default=str).encode())
    if manifest["unreconciled"]:
        log.error("funnel does not reconcile: %s", manifest["unreconciled"])
    return manifest
