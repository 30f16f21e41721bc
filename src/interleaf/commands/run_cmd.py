"""`interleaf run INPUT... --output DIR`: the curation pipeline over WARC, OBELICS or MMC4 inputs (or the
document shards of an earlier run)."""

from __future__ import annotations

import argparse
import json

from interleaf import config as configfile
from interleaf.errors import UsageError
from interleaf.pipelines.names import MANIFEST, STAGES
from interleaf.readers import formats

DEFAULT_STAGES = "ingest,dedup,fetch,clip"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run the curation pipeline (Beam) over WARC, OBELICS or MMC4 inputs",
        description="Run the curation stages as one Apache Beam pipeline. Settings come from --config (TOML, "
                    "sections as in RunConfig: [ingest.quality], [fetch.fetch], [image_rules], [clip.model], "
                    "...), then from flags. Arguments interleaf does not know (--runner, --direct_num_workers, Dataflow "
                    "options, ...) go to Beam untouched; with no --runner, Beam's local FnApiRunner runs it "
                    "(no download attempts).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="WARC/WARC.gz files, OBELICS or MMC4 JSONL/Parquet files, globs (local or gs://), or "
                        "the documents directory of an earlier run (for runs without the ingest stage)")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="run directory (local or gs://)")
    p.add_argument("--stages", help=f"comma-separated stages, in order (default {DEFAULT_STAGES}; available: "
                                    f"{', '.join(STAGES)})")
    p.add_argument("--config", metavar="FILE", help="TOML file with settings")
    p.add_argument("--num-shards", type=int, help="shards per output (default 1)")
    p.add_argument("--images", metavar="DIR", help="image store of document-shard inputs (default: the "
                                                   "images directory beside them)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    g = p.add_argument_group("ingest")
    g.add_argument("--input-format", choices=formats(), help="override format detection from file names")
    g.add_argument("--languages", metavar="CODES",
                   help="keep documents identified as these languages only: comma-separated codes "
                        "(en,de,zh); default: every language")
    g.add_argument("--min-images", type=int, help="drop documents with fewer kept images (0 keeps text-only)")
    g.add_argument("--max-images", type=int, help="drop documents with more kept images")
    g.add_argument("--keep-dropped-nodes", action="store_true",
                   help="keep filtered nodes, with their reasons, inside kept documents (for audit)")
    g = p.add_argument_group("fetch")
    g.add_argument("--allow-private-hosts", action="store_true",
                   help="fetch from private, loopback and link-local addresses (refused by default)")
    g.add_argument("--optout-list", metavar="FILE", help="opt-out list: domains, URL patterns, image sha256")
    g.add_argument("--user-agent-token", help="the token robots.txt and X-Robots-Tag address this crawler by")
    g.add_argument("--image-size", type=int, help="resize target in px (img2dataset)")
    g.add_argument("--resize-mode", help="img2dataset resize mode (keep_ratio, center_crop, border, no)")
    g.add_argument("--encode-format", choices=("jpg", "png", "webp"), help="stored image format")
    g.add_argument("--fetch-threads", type=int, help="requests in flight per worker")
    g.add_argument("--per-host-rate", type=float, help="requests per second per host (0: no limit)")
    g = p.add_argument_group("image safety (NudeNet's detector: pip install 'interleaf[safety]')")
    g.add_argument("--no-nsfw", action="store_true", help="keep NSFW images (no score, no drop)")
    g.add_argument("--nsfw-threshold", type=float, help="drop images with an NSFW score at or above this "
                                                        "(default 0.5)")
    g.add_argument("--no-faces", action="store_true", help="do not look for faces")
    g.add_argument("--blur-faces", action="store_true", help="blur the faces found in the stored images")
    g = p.add_argument_group("clip")
    g.add_argument("--clip-model", help="open_clip architecture (default ViT-B-32)")
    g.add_argument("--clip-pretrained", help="open_clip pretrained tag, or a checkpoint file (interleaf train-clip)")
    g.add_argument("--clip-mode", choices=("threshold", "top_fraction", "assign"), help="how images are kept")
    g.add_argument("--clip-threshold", type=float, help="minimum similarity in threshold mode")
    g.add_argument("--clip-device", help="cpu or cuda")
    g.add_argument("--clip-accelerator", metavar="HINT", help="Beam accelerator hint for the CLIP step on "
                   "Dataflow, e.g. 'type:nvidia-tesla-t4;count:1;install-nvidia-driver'")
    g = p.add_argument_group("tokenize")
    g.add_argument("--text-tokenizer", metavar="FILE", help="tokenizer.json (interleaf train-text-tokenizer)")
    g.add_argument("--image-tokenizer", metavar="FILE", help="VQ checkpoint (interleaf train-image-tokenizer)")
    g.add_argument("--tokenize-device", help="where the VQ encoder runs: cpu or cuda")
    g.add_argument("--max-length", type=int, help="split token sequences longer than this at node boundaries")
    g.add_argument("--tokenize-accelerator", metavar="HINT", help="Beam accelerator hint for the VQ step")
    g = p.add_argument_group("export (the same as `interleaf export` once the run has finished)")
    g.add_argument("--export", metavar="FORMATS", help="write the curated documents with their images into "
                   "DIR/export/FORMAT for each of these comma-separated formats: obelics, webdataset, mmc4")
    g.add_argument("--export-shard-size", type=int, metavar="N", help="documents per exported shard (1000)")
    g.add_argument("--export-embed-images", action="store_true",
                   help="obelics: the image bytes in an image_data column (Hugging Face Image feature)")
    p.set_defaults(func=run, accepts_pipeline_args=True)


def _given(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def _codes(value: str | None) -> list[str] | None:
    return None if value is None else [c.strip() for c in value.split(",") if c.strip()]


def build_config(args: argparse.Namespace):
    """The RunConfig of these arguments (imports the pipeline, hence Beam: only when a run starts)."""
    from interleaf.pipelines.run import RunConfig

    cfg = RunConfig()
    file_values = configfile.load_toml(args.config) if args.config else {}
    if "tokenize" in file_values:
        from interleaf.pipelines.tokenize import TokenizeConfig
        cfg.tokenize = configfile.build(TokenizeConfig, file_values.pop("tokenize"), "tokenize")
    cfg = configfile.apply(cfg, file_values)

    overrides: dict = {
        "ingest": _given(input_format=args.input_format, keep_dropped_nodes=args.keep_dropped_nodes or None,
                         language=_given(languages=_codes(args.languages)) or None,
                         quality=_given(min_images=args.min_images, max_images=args.max_images)),
        "fetch": _given(threads=args.fetch_threads, per_host_rate=args.per_host_rate,
                        fetch=_given(allow_private_hosts=args.allow_private_hosts or None,
                                     user_agent_token=args.user_agent_token, image_size=args.image_size,
                                     resize_mode=args.resize_mode, encode_format=args.encode_format)),
        "image_safety": _given(nsfw=False if args.no_nsfw else None, nsfw_threshold=args.nsfw_threshold,
                               faces=False if args.no_faces else None, blur_faces=args.blur_faces or None),
        "clip": {"model": _given(model_name=args.clip_model, pretrained=args.clip_pretrained,
                                 device=args.clip_device),
                 "decision": _given(mode=args.clip_mode, threshold=args.clip_threshold)},
        "export": _given(formats=_codes(args.export), shard_size=args.export_shard_size,
                         embed_images=args.export_embed_images or None),
        **_given(num_shards=args.num_shards, clip_accelerator=args.clip_accelerator,
                 tokenize_accelerator=args.tokenize_accelerator),
    }
    if args.stages or not file_values.get("stages"):
        overrides["stages"] = [s.strip() for s in (args.stages or DEFAULT_STAGES).split(",") if s.strip()]
    cfg = configfile.apply(cfg, overrides)
    if args.optout_list:
        from dataclasses import replace

        from interleaf.filters.optout import OptOutList
        cfg.fetch = replace(cfg.fetch, fetch=replace(cfg.fetch.fetch, optout=OptOutList.load(args.optout_list)))
    if args.text_tokenizer or args.image_tokenizer or args.tokenize_device or args.max_length:
        from interleaf.pipelines.tokenize import TokenizeConfig
        current = configfile.to_dict(cfg.tokenize) if cfg.tokenize is not None else {}
        current.update(_given(text_tokenizer=args.text_tokenizer, image_tokenizer=args.image_tokenizer,
                              device=args.tokenize_device, max_length=args.max_length))
        cfg.tokenize = configfile.build(TokenizeConfig, current, "tokenize")
    try:
        cfg.validate()
    except ValueError as e:
        raise UsageError(str(e)) from None
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    try:
        from interleaf.pipelines.run import run as run_pipeline

        manifest = run_pipeline(args.inputs, args.output, cfg, args.pipeline_args, images_path=args.images)
    except ValueError as e:  # inputs that match nothing, or whose format cannot be told
        raise UsageError(str(e)) from None
    if manifest.get("dry_run"):
        graph = manifest["graph"]
        print(f"dry run: {manifest['remote']['runner']} job translated, not submitted "
              f"({len(graph['transforms'])} transforms; stages {', '.join(manifest['stages'])})")
        for step, hints in graph["resource_hints"].items():
            print(f"  resource hints on {step}: {hints}")
        if args.json:
            print(json.dumps(manifest, indent=2, default=str))
        return 0
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
    out = args.output.rstrip("/")
    for fmt, done in manifest.get("exports", {}).items():
        c = done["counts"]
        print(f"exported as {fmt}: {c['documents']} documents, {c['images_exported']} images "
              f"(image_missing {c['image_missing']}) in {done['directory']}")
    print(f"manifest: {out}/{MANIFEST}; look inside with: interleaf inspect {out}/documents --sample 3")
    return 0
