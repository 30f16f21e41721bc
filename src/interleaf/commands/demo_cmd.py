"""`interleaf demo`: from a served web site to a trained model and its report, on the bundled sample."""

from __future__ import annotations

import argparse
import math
import os
import time

from interleaf.errors import UsageError

QUICK_MODEL_SECONDS = 40.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    from interleaf.demo import DemoConfig
    d = DemoConfig()
    p = sub.add_parser("demo", help="the whole pipeline on a bundled sample site, then train, generate, eval",
                       description="Serve a sample web site (synthetic captioned shapes plus real 2008 pages) "
                                   "on 127.0.0.1, crawl it into a WARC, train tiny CLIP/VQ/BPE models, run "
                                   "every interleaf stage over the crawl with Apache Beam, train the reference "
                                   "model on the token shards, generate images, run the benchmark and write "
                                   "the report. About 9-11 minutes on 2 cores (measured 675 s on a CPU without "
                                   "native bf16, 514 s on one with AVX512-BF16), plus setup.")
    p.add_argument("--output", "-o", default="demo-output", metavar="DIR", help="where to write (default: %(default)s)")
    p.add_argument("--examples", type=int, default=d.examples, help=f"captioned images on the site ({d.examples})")
    p.add_argument("--model-seconds", type=float, default=None,
                   help=f"training budget of the reference model ({d.model_seconds:.0f} s; {QUICK_MODEL_SECONDS:.0f} "
                        "s with --quick)")
    p.add_argument("--quick", action="store_true", help="a smaller, faster demo (weak model)")
    p.set_defaults(func=run, accepts_pipeline_args=True)


def run(args: argparse.Namespace) -> int:
    from interleaf.demo import DemoConfig, run_demo

    if args.examples < 16:
        raise UsageError(f"--examples must be at least 16, found {args.examples}")
    seconds = args.model_seconds
    if seconds is None:
        seconds = QUICK_MODEL_SECONDS if args.quick else DemoConfig().model_seconds
    elif not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"--model-seconds must be a positive number of seconds, found {seconds:g}")
    cfg = DemoConfig(examples=args.examples, model_seconds=seconds, pipeline_args=args.pipeline_args)
    if args.quick:
        cfg = DemoConfig(examples=min(args.examples, 400), clip_pairs=800, clip_steps=80, clip_seconds=20, vq_steps=120,
                         vq_images=1500, model_steps=80, model_seconds=seconds, eval_prompts=24,
                         pipeline_args=args.pipeline_args)
    out = args.output.rstrip("/")
    started = time.time()
    print(f"interleaf demo -> {out}/ (progress is logged below{'' if args.quick else '; about 11 minutes'})")
    s = run_demo(out, cfg)
    f = s["pipeline"]["funnel"]
    docs = f.get("ingest", {}).get("documents", {})
    images = f.get("fetch", {}).get("images", {})
    planted = s["planted_mismatches"]
    ev = s["eval"]
    print(f"\ndone in {time.time() - started:.0f} s. What it produced:")
    print(f"  site and crawl     {out}/site, {s['crawl']['warc']} ({s['crawl']['pages']} pages)")
    print(f"  models             {out}/models: tiny CLIP (held-out AUC {s['models']['clip']['auc_held_out']}), "
          f"VQ (held-out PSNR {s['models']['vq']['held_out'].get('psnr', '?')} dB), BPE")
    print(f"  pipeline run       {out}/run: {docs.get('in', 0)} pages in, {docs.get('out', 0)} kept after ingest; "
          f"{images.get('out', 0)} of {images.get('in', 0)} image URLs fetched; funnel "
          f"{'reconciles' if not s['pipeline']['unreconciled'] else 'does NOT reconcile'}")
    print(f"  CLIP filtering     planted mismatches dropped {planted['planted']['dropped']} of "
          f"{sum(planted['planted'].values())}; true pairs kept {planted['true']['kept']} of "
          f"{sum(planted['true'].values())}")
    m = s["model"]
    over = f", {m['over_budget_s']:.0f} s over" if m["over_budget_s"] else ""
    print(f"  reference model    {out}/model: {m['steps']} steps in {m['seconds']:.0f} s (budget {m['budget_s']:.0f} s"
          f"{over}), {m['tokens_per_s']} tokens/s in {m['precision']} ({m['precision_reason']}); loss "
          f"{m['first']['loss']:.2f} -> {m['last']['loss']:.2f}")
    print(f"  generated images   {out}/generated ({', '.join(repr(g['prompt']) for g in s['generated'])})")
    print(f"  benchmark          {out}/eval/scores.json: overall {ev['overall']:.3f}, seen {_f(ev['seen'])}, "
          f"held-out {_f(ev['held_out'])} (a short demo run; bench/model_recipe.py is the full recipe)")
    print(f"  report             {os.path.abspath(s['report'])}")
    return 0 if not s["pipeline"]["unreconciled"] else 1


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
