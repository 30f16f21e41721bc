"""The whole pipeline over the demo corpus at 1x, 4x and 16x: documents/s and images/s per stage and
overall, peak memory, and how cost grows with the input.

    .venv/bin/python bench/pipeline_bench.py [--base 250] [--scales 1 4 16]

The corpus is the demo's web site (synthetic captioned shapes, 8 per page) served on 127.0.0.1 and crawled
into a WARC; every stage runs (ingest, dedup, fetch, clip, tokenize) with tiny models trained once up front
(their quality does not change the throughput). Each size runs in its own process, so its peak RSS is its
own. Per-stage seconds are the runner's processing time summed over the stage's steps (manifest
timings_s.processing_by_stage); the overall rate is over wall time, start-up included.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import table, write_section  # noqa: E402

STAGES = ("ingest", "dedup", "fetch", "clip", "tokenize")


def one(scale: int, base: int, models_dir: str, work: str) -> dict:
    """Build the site at this scale, crawl it, run every stage; returns the measurements."""
    from interleaf import config as configfile
    from interleaf.demo import DemoConfig, build_site, write_config
    from interleaf.demo.site import crawl_to_warc, html_pages, serve
    from interleaf.pipelines.run import RunConfig, run
    from interleaf.pipelines.tokenize import TokenizeConfig

    with open(os.path.join(models_dir, "models.json")) as f:
        models = json.load(f)
    site = os.path.join(work, "site")
    build_site(site, DemoConfig(examples=base * scale, mismatched=0.05))
    with serve(site) as url:
        warc = os.path.join(work, "crawl.warc.gz")
        pages = crawl_to_warc([f"{url}/{p}" for p in html_pages(site)], warc)
        toml = os.path.join(work, "run.toml")
        write_config(toml, models)
        values = configfile.load_toml(toml)
        cfg = RunConfig()
        cfg.tokenize = configfile.build(TokenizeConfig, values.pop("tokenize"), "tokenize")
        cfg = configfile.apply(cfg, values)
        started = time.perf_counter()
        manifest = run([warc], os.path.join(work, "run"), cfg)
        wall = time.perf_counter() - started
    assert not manifest["unreconciled"], manifest["unreconciled"]
    return {"scale": scale, "pages": pages, "wall_s": wall, "funnel": manifest["funnel"],
            "stage_s": manifest["timings_s"]["processing_by_stage"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def train_models(models_dir: str) -> None:
    import torch

    from interleaf.demo import DemoConfig, train_tokenizers
    torch.set_num_threads(1)
    site = os.path.join(models_dir, "site")
    from interleaf.demo import build_site
    build_site(site, DemoConfig(examples=64))
    models = train_tokenizers(models_dir, site, DemoConfig(clip_pairs=600, clip_steps=40, clip_seconds=15, vq_steps=60,
                                                          vq_images=800))
    with open(os.path.join(models_dir, "models.json"), "w") as f:
        json.dump(models, f)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=250, help="captioned images at 1x")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--models", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.base, args.models, args.work)))
        return
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = os.path.join(tmp, "models")
        os.makedirs(models_dir)
        train_models(models_dir)
        results = []
        for scale in args.scales:
            work = os.path.join(tmp, f"x{scale}")
            os.makedirs(work)
            out = subprocess.run([sys.executable, __file__, "--one", str(scale), "--base", str(args.base),
                                  "--models", models_dir, "--work", work], capture_output=True, text=True,
                                 check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"x{scale}: {results[-1]['wall_s']:.1f} s", flush=True)
    rows = []
    for r in results:
        f = r["funnel"]
        docs = f["ingest"]["documents"]["in"]
        images = f["fetch"]["images"]["in"]
        row = [f"{r['scale']}x", docs, images, round(r["wall_s"], 1), round(docs / r["wall_s"], 1),
               round(images / r["wall_s"], 1), round(r["peak_rss_mb"])]
        for stage in STAGES:
            s = r["stage_s"].get(stage) or 0
            unit = images if stage in ("fetch", "clip", "tokenize") else docs
            row.append(f"{unit / s:.0f}" if s else "-")
        rows.append(row)
    base_wall = results[0]["wall_s"]
    growth = table(["input", "wall s", "wall ratio to 1x", "size ratio"],
                   [[f"{r['scale']}x", round(r["wall_s"], 1), round(r["wall_s"] / base_wall, 2), r["scale"]]
                    for r in results])
    headers = ["input", "pages", "image URLs", "wall s", "pages/s", "images/s", "peak RSS MB",
               "ingest pages/s", "dedup pages/s", "fetch img/s", "clip img/s", "tokenize img/s"]
    body = (f"The demo corpus (synthetic captioned shapes, 8 per page, 5% planted mismatches) at {args.base} "
            "captioned images per 1x, served on 127.0.0.1 and crawled into a WARC; every stage on the local "
            "FnApiRunner with the tiny CLIP and VQ; one process per size. Per-stage rates are over the runner's "
            "processing time for that stage (summed over its steps and threads: fetch's threads overlap, so "
            "its figure is per thread-second); pages/s and images/s over wall time include start-up.\n\n"
            + table(headers, rows) + "\n\nGrowth:\n\n" + growth)
    print(body)
    write_section("pipeline", "Whole pipeline at 1x, 4x, 16x (bench/pipeline_bench.py)", body)


if __name__ == "__main__":
    main()
