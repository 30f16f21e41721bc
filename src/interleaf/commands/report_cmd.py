"""`interleaf report DIR`: a self-contained HTML report of a run directory (funnel, distributions, downloads
per host, sample documents with their images)."""

from __future__ import annotations

import argparse

from interleaf import storage
from interleaf.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write an HTML report of a run: funnel, distributions, downloads, "
                                      "samples",
                       description="Write one self-contained HTML page about a run directory (the "
                                   "--output of `interleaf run`): the funnel as charts, histograms of words, "
                                   "images and tokens per document, image sizes and CLIP scores, image "
                                   "downloads per host, rejected documents, and sample documents with their "
                                   "images inline. Parts the run did not produce are named as absent.")
    p.add_argument("directory", metavar="DIR",
                   help="a run directory (with manifest.json, documents/, images/...)")
    p.add_argument("--out", metavar="FILE", help="HTML file to write (default: DIR/report.html)")
    p.add_argument("--samples", type=int, default=4, metavar="N",
                   help="sample documents to show with their images (default 4; 0 for none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from interleaf.report import write_report

    if args.samples < 0:
        raise UsageError(f"--samples must be 0 or more, found {args.samples}")
    if not storage.is_dir(args.directory):
        raise UsageError(f"{args.directory}: no such run directory (give the --output of `interleaf run`)")
    if not any(storage.exists(storage.join(args.directory, name))
               for name in ("manifest.json", "documents", "images", "tokens")):
        raise UsageError(f"{args.directory} is not a run directory: it has none of manifest.json, "
                         "documents/, images/, tokens/ (give the --output of `interleaf run`)")
    out = write_report(args.directory, args.out, samples=args.samples)
    print(f"wrote {out}")
    return 0
