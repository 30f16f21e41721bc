"""`interleaf demo`: the pipeline on the bundled sample crawl, end to end, with a page to look at."""

from __future__ import annotations

import argparse
import os
import time
from importlib import resources

from interleaf import render
from interleaf.inspect import sample_documents, summarize
from interleaf.pipelines.run import RunConfig, run as run_pipeline


def sample_inputs() -> list[str]:
    root = resources.files("interleaf") / "data" / "sample"
    return sorted(str(p) for p in root.iterdir() if p.name.endswith((".warc", ".warc.gz")))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the pipeline on the bundled sample crawl and write a page to look at",
                       description="Ingest the bundled sample WARCs (real crawls: 22 dolma pages, the "
                                   "Wikipedia Mona Lisa article with its archived images, a 2008 site with "
                                   "revisits), then summarise the result and write an HTML page.")
    p.add_argument("--output", "-o", default="demo-output", metavar="DIR", help="where to write (default: %(default)s)")
    p.set_defaults(func=run, accepts_pipeline_args=True)


def run(args: argparse.Namespace) -> int:
    out = args.output.rstrip("/")
    inputs = sample_inputs()
    print(f"[1/3] ingest: {len(inputs)} bundled WARC files -> {out}/ (Apache Beam, local runner)")
    started = time.time()
    cfg = RunConfig(stages=["ingest"])
    manifest = run_pipeline(inputs, out, cfg, args.pipeline_args)
    f = manifest["funnel"]["ingest"]
    for unit in ("records", "documents", "nodes", "images"):
        if unit in f:
            e = f[unit]
            top = ", ".join(f"{r} {n}" for r, n in sorted(e["dropped"].items(), key=lambda kv: -kv[1])[:4])
            print(f"      {unit:9s} in {e['in']:>5}  kept {e['out']:>5}  dropped {sum(e['dropped'].values()):>5}"
                  f"{'  (' + top + ')' if top else ''}")
    print(f"[2/3] summary of {out}/documents")
    summary = summarize(f"{out}/documents")
    print("      " + render.summary_text(summary, f"{out}/documents").replace("\n", "\n      "))
    print(f"[3/3] HTML page with sample documents and their archived images")
    docs = sample_documents(f"{out}/documents", 8)
    wanted = {k for d in docs for n in d.image_nodes for k in (n.image_sha256, n.image_url) if k}
    images = render.load_images(f"{out}/images", wanted)
    page = f"{out}/inspect.html"
    with open(page, "w", encoding="utf-8") as fh:
        fh.write(render.html_page(f"{out}/documents", summary, documents=docs, images=images))
    ok = not manifest["unreconciled"]
    print(f"\ndone in {time.time() - started:.0f} s; the funnel {'reconciles' if ok else 'does NOT reconcile'}.")
    print(f"  curated documents  {out}/documents   (interleaf inspect {out}/documents --sample 3)")
    print(f"  rejected, reasons  {out}/rejected")
    print(f"  image store        {out}/images      (archived images from the WARCs)")
    print(f"  manifest + funnel  {out}/manifest.json")
    print(f"  page to open       {os.path.abspath(page)}")
    return 0 if ok else 1
