"""Reference model benchmark: parameters per preset, generation latency and tokens/s with and without the KV
cache, and (given a recipe run) the training curve and the synthetic GenEval scores. Writes the "model" section
of bench/RESULTS.md.

    .venv/bin/python bench/model_bench.py [--checkpoint DIR] [--recipe OUT] [--repeats 3] [--threads 2]

Without --checkpoint the latency is measured on a randomly initialised tiny model over the recipe's vocabulary
layout (7 specials, 256 image codes, 384 text tokens, 8x8 grid): sampling cost does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time

import torch
from results import table, write_section  # bench/ is sys.path[0] when run as a script

from interleaf.model.generate import GenerationConfig, Generator
from interleaf.model.geneval import TASKS
from interleaf.model.transformer import PRESETS, Transformer, count_params, model_preset
from interleaf.tokenizers.codec import build_vocabulary

log = logging.getLogger("model_bench")


def random_generator(preset: str = "tiny") -> Generator:
    vocab = build_vocabulary(text_vocab_size=384, image_codebook_size=256, image_grid=(8, 8))
    torch.manual_seed(0)
    return Generator(Transformer(model_preset(preset, vocab_size=vocab.size)), vocab)


def time_images(gen: Generator, *, batch: int, cfg: float, use_cache: bool, repeats: int, context: int = 12) -> dict:
    """Seconds to sample `batch` image blocks after a `context`-token prompt, median of `repeats`."""
    grid = next(iter(gen.grids))
    text = [gen.vocab.text_offset + i % gen.vocab.text_vocab_size for i in range(context - 2)]
    contexts = [[gen.bos, *text, gen.boi, grid]] * batch
    config = GenerationConfig(cfg_scale=cfg, use_cache=use_cache, top_k=50)
    gen.image_codes(contexts[:1], config)  # warm up
    times = []
    for r in range(repeats):
        t = time.perf_counter()
        gen.image_codes(contexts, GenerationConfig(cfg_scale=cfg, use_cache=use_cache, top_k=50, seed=r))
        times.append(time.perf_counter() - t)
    s = statistics.median(times)
    n = gen.vocab.image_grid[0] * gen.vocab.image_grid[1]
    return {"seconds": s, "seconds_per_image": s / batch, "image_tokens_per_s": batch * n / s}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="a trained checkpoint (default: random tiny model)")
    p.add_argument("--recipe", action="append", default=[],
                   help="a bench/model_recipe.py output directory (training curve, eval scores); repeatable")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)

    gen = Generator.from_checkpoint(args.checkpoint) if args.checkpoint else random_generator()
    body = []

    vocab_size = gen.vocab.size
    rows = [[name, f"{count_params(model_preset(name, vocab_size=vocab_size)) / 1e6:.2f}M",
             f"{count_params(model_preset(name, vocab_size=16_384)) / 1e6:.2f}M",
             "{dim}x{n_layers}, {n_heads} heads".format(**PRESETS[name])] for name in PRESETS]
    body.append("### Parameters per preset\n\n"
                + table(["preset", f"params (vocab {vocab_size}, the recipe's)", "params (vocab 16,384)", "shape"],
                        rows))

    cases = []
    for batch, cfg, context in ((1, 1.0, 12), (1, 3.0, 12), (16, 3.0, 12), (1, 1.0, 180)):
        with_cache = time_images(gen, batch=batch, cfg=cfg, use_cache=True, repeats=args.repeats, context=context)
        without = time_images(gen, batch=batch, cfg=cfg, use_cache=False, repeats=args.repeats, context=context)
        speedup = without["seconds"] / with_cache["seconds"]
        log.info("batch %d cfg %.1f context %d: %.3fs with cache, %.3fs without (%.1fx)", batch, cfg, context,
                 with_cache["seconds"], without["seconds"], speedup)
        cases.append([batch, cfg, context, f"{with_cache['seconds_per_image'] * 1000:.0f} ms",
                      f"{with_cache['image_tokens_per_s']:.0f}", f"{without['seconds_per_image'] * 1000:.0f} ms",
                      f"{without['image_tokens_per_s']:.0f}", f"{speedup:.1f}x"])
    grid = gen.vocab.image_grid
    body.append(f"### Image generation, KV cache vs recomputing the sequence\n\n"
                f"{'Checkpoint ' + args.checkpoint if args.checkpoint else 'Random tiny model'} "
                f"({gen.model.num_params() / 1e6:.2f}M parameters), one image = {grid[0]}x{grid[1]} codes after a "
                f"prompt of `context` tokens; with CFG every image also runs an unconditional row; median of "
                f"{args.repeats}; {torch.get_num_threads()} threads.\n\n"
                + table(["prompts", "cfg", "context", "latency/image (cache)", "image tok/s (cache)", "latency/image (no cache)",
                         "image tok/s (no cache)", "speedup"], cases))

    body += [recipe_section(out) for out in args.recipe]
    text = "\n\n".join(body)
    print(text)
    if not args.no_write:
        write_section("model", "Reference model (bench/model_bench.py)", text)


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def recipe_section(out: str) -> str:
    report = _read_json(os.path.join(out, "recipe.json"))
    stages, a = report.get("stages", {}), report["args"]
    overrides = "".join(f" --set {s}" for s in a.get("set", []))
    lines = [(f"### CPU recipe: `bench/model_recipe.py --preset {a['preset']}{overrides} --steps {a['steps']}` "
              f"({a['examples']} examples, rows of {a['batch_size']}x{a['seq_len']} tokens, {a['threads']} thread(s), "
              f"{'fp32' if a.get('fp32') else 'bf16 autocast'})\n")]
    if "vq" in stages:
        h = stages["vq"].get("held_out", {})
        lines.append(f"- VQ: {stages['vq']['steps']} steps in {stages['vq']['seconds']:.0f}s; held-out PSNR "
                     f"{h.get('psnr', float('nan')):.1f} dB, codebook usage {100 * h.get('usage', 0):.0f}%")
    if "train" in stages:
        tr = stages["train"]
        f, last = tr["first"], tr["last"]
        lines.append(f"- Transformer: {tr['steps']} steps in {tr['seconds']:.0f}s of training; loss "
                     f"{f['loss']:.3f} -> {last['loss']:.3f} (text {f['text_loss']:.3f} -> {last['text_loss']:.3f}, "
                     f"image {f['image_loss']:.3f} -> {last['image_loss']:.3f})")
        curve = _curve(os.path.join(out, "run", "loss.jsonl"))
        if curve:
            lines.append("\n" + table(["step", "loss", "text loss", "image loss"], curve) + "\n")
    evals = sorted(d for d in os.listdir(out) if d.startswith("eval")
                   and os.path.exists(os.path.join(out, d, "scores.json")))
    if evals:
        rows = []
        for d in evals:
            s = _read_json(os.path.join(out, d, "scores.json"))
            g = s["generation"]
            rows.append([d, g["cfg_scale"], g["temperature"], g["top_k"], f"{s['overall']:.3f}", f"{s['seen']:.3f}",
                         f"{s['held_out']:.3f}", *[f"{s['tasks'].get(t, float('nan')):.2f}" for t in TASKS],
                         f"{s['seconds_per_image'] * 1000:.0f} ms"])
        lines.append(f"- Synthetic GenEval (`interleaf eval`), {s['prompts']} prompts x {s['samples_per_prompt']} "
                     "images per setting:\n\n" + table(
                         ["run", "cfg", "temp", "top-k", "overall", "seen", "held-out", *TASKS, "per image"], rows))
        main = _read_json(os.path.join(out, "eval" if "eval" in evals else evals[0], "scores.json"))
        minutes = stages.get("train", {}).get("seconds", float("nan")) / 60
        met = minutes <= 20 and main["overall"] >= 0.80 and main["held_out"] >= 0.75
        lines.append(f"\n- Issue 8's target (at most 20 minutes of training on 2 cores, then overall >= 0.80 and "
                     f"held-out >= 0.75), recipe default setting (`{'eval' if 'eval' in evals else evals[0]}`): "
                     f"{minutes:.1f} minutes, overall {main['overall']:.3f}, held-out {main['held_out']:.3f}: "
                     f"**{'met' if met else 'not met'}**.")
        truth, ceiling = main.get("checker_on_ground_truth"), main.get("ceiling_vq_reconstructions")
        if truth and ceiling:
            rows = [[t, f"{truth['tasks'][t]:.3f}", f"{ceiling['tasks'][t]:.3f}"] for t in TASKS]
            rows.append(["overall", f"{truth['overall']:.3f}", f"{ceiling['overall']:.3f}"])
            lines.append("\n- Checker calibration on the same prompts: ground-truth renders, and their VQ round "
                         "trips (the ceiling a perfect generator could reach through this VQ):\n\n"
                         + table(["task", "ground truth", "VQ reconstructions (ceiling)"], rows))
    return "\n".join(lines)


def _curve(path: str, points: int = 8) -> list[list]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    idx = sorted({0, len(records) - 1, *[round(i * (len(records) - 1) / (points - 1)) for i in range(points)]})
    return [[records[i]["step"], f"{records[i]['loss']:.3f}", f"{records[i]['text_loss']:.3f}",
             f"{records[i]['image_loss']:.3f}"] for i in idx]


if __name__ == "__main__":
    main()
