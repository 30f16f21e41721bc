"""`interleaf export RUN_DIR --format FORMAT --output DIR`: a finished run's documents with their images in
a format that training stacks read (OBELICS Parquet, WebDataset tars, MMC4 JSONL with image zips)."""

from __future__ import annotations

import argparse
import json

from interleaf.errors import UsageError

FORMATS = ("obelics", "webdataset", "mmc4")  # pipelines/export_formats.FORMATS (not imported: Beam is slow)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a run's documents and images as OBELICS Parquet, WebDataset tars or MMC4 JSONL",
        description="Join a finished run's curated documents with its image store (a Beam pipeline; Beam "
                    "options such as --runner pass through) and write them in document order, in shards of "
                    "--shard-size documents, with manifest.json and a dataset card (README.md) that lists "
                    "every filter the run applied with its settings and counts.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --output of a finished `interleaf run`")
    p.add_argument("--format", "-f", required=True, choices=FORMATS,
                   help="obelics: Parquet with texts, images (URLs), metadata, general_metadata; webdataset: "
                        "tar shards, one sample per document (JSON nodes and image files); mmc4: JSONL in "
                        "MMC4's keys with a zip of images per shard")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="directory to write (local or gs://)")
    p.add_argument("--shard-size", type=int, default=1000, metavar="N",
                   help="documents per output shard (default 1000)")
    p.add_argument("--embed-images", action="store_true",
                   help="obelics: add the image bytes in an image_data column that Hugging Face datasets "
                        "decodes as images")
    p.add_argument("--missing-images", choices=("keep-url", "drop"), default="keep-url",
                   help="an image node without bytes in the store: keep it by URL (default) or leave it out; "
                        "counted as image_missing either way")
    p.add_argument("--json", action="store_true", help="print the export's manifest as JSON")
    p.set_defaults(func=run, accepts_pipeline_args=True)


def run(args: argparse.Namespace) -> int:
    from interleaf.pipelines.export import ExportConfig, export

    config = ExportConfig(format=args.format, shard_size=args.shard_size, embed_images=args.embed_images,
                          missing_images=args.missing_images.replace("-", "_"))
    try:
        config.validate()
        manifest = export(args.run_dir, args.output, config, args.pipeline_args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.json:
        print(json.dumps(manifest, indent=2, default=str))
    else:
        c = manifest["counts"]
        print(f"exported {c['documents']} documents ({c['images_exported']} images, {c['images_embedded']} "
              f"with their bytes, image_missing {c['image_missing']}) as {args.format} in "
              f"{len(manifest['files'])} file(s) to {args.output} in {manifest['seconds']:.1f} s")
        print(f"dataset card: {args.output.rstrip('/')}/README.md")
    if manifest["unreconciled"]:
        print("counts do NOT reconcile: " + "; ".join(manifest["unreconciled"]))
        return 1
    return 0
