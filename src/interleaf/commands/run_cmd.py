"""`interleaf run INPUT... --output DIR`: the curation pipeline over WARC, OBELICS or MMC4 inputs."""

from __future__ import annotations

import argparse
import json

from interleaf import config as configfile
from interleaf.errors import UsageError
from interleaf.pipelines.ingest import FORMATS
from interleaf.pipelines.run import MANIFEST, STAGES, RunConfig, run as run_pipeline


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run the curation pipeline (Beam) over WARC, OBELICS or MMC4 inputs",
        description="Run the curation stages as one Apache Beam pipeline. Arguments interleaf does not know "
                    "(--runner, --direct_num_workers, Dataflow options, ...) go to Beam untouched. With no "
                    "--runner, Beam's local FnApiRunner runs it (no download attempts).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="WARC/WARC.gz files, OBELICS or MMC4 JSONL/Parquet files, or globs (local or gs://)")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="run directory (local or gs://)")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated stages to run, in order (available: {', '.join(STAGES)})")
    p.add_argument("--input-format", choices=FORMATS, help="override format detection from file names")
    p.add_argument("--config", metavar="FILE", help="TOML file with settings ([ingest], [ingest.quality], ...)")
    p.add_argument("--num-shards", type=int, help="shards per output (default 1)")
    p.add_argument("--min-images", type=int, help="drop documents with fewer kept images (0 keeps text-only)")
    p.add_argument("--max-images", type=int, help="drop documents with more kept images")
    p.add_argument("--keep-dropped-nodes", action="store_true",
                   help="keep filtered nodes, with their reasons, inside kept documents (for audit)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=run, accepts_pipeline_args=True)


def build_config(args: argparse.Namespace) -> RunConfig:
    cfg = RunConfig()
    if args.config:
        cfg = configfile.apply(cfg, configfile.load_toml(args.config))
    overrides: dict = {"ingest": {}}
    overrides["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    if args.num_shards is not None:
        overrides["num_shards"] = args.num_shards
    if args.input_format:
        overrides["ingest"]["input_format"] = args.input_format
    if args.keep_dropped_nodes:
        overrides["ingest"]["keep_dropped_nodes"] = True
    quality = {k: v for k, v in (("min_images", args.min_images), ("max_images", args.max_images))
               if v is not None}
    if quality:
        overrides["ingest"]["quality"] = quality
    cfg = configfile.apply(cfg, overrides)
    try:
        cfg.validate()
    except ValueError as e:
        raise UsageError(str(e)) from None
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    try:
        manifest = run_pipeline(args.inputs, args.output, cfg, args.pipeline_args)
    except ValueError as e:  # inputs that match nothing or whose format cannot be told
        raise UsageError(str(e)) from None
    if args.json:
        print(json.dumps(manifest, indent=2, default=str))
        return 0 if not manifest["unreconciled"] else 1
    print(f"wrote {args.output} ({', '.join(manifest['stages'])}) in {manifest['timings_s']['total']:.1f} s")
    for stage, units in manifest["funnel"].items():
        for unit, e in units.items():
            dropped = ", ".join(f"{r} {n}" for r, n in sorted(e["dropped"].items(), key=lambda kv: -kv[1]))
            info = "".join(f"; {k} {v}" for k, v in e.get("info", {}).items())
            print(f"  {stage:8s} {unit:9s} in {e['in']:>7}  out {e['out']:>7}  dropped: {dropped or 'none'}{info}")
    if manifest["unreconciled"]:
        print("funnel does NOT reconcile: " + "; ".join(manifest["unreconciled"]))
        return 1
    print(f"manifest: {args.output.rstrip('/')}/{MANIFEST}; look inside with: interleaf inspect "
          f"{args.output.rstrip('/')}/documents --sample 3")
    return 0
