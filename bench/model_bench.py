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
from interleaf.model.presets import PRESETS
from interleaf.model.transformer import Transformer, count_params, model_preset
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


def _recipe_like_shards(directory: str, vocab, documents: int = 4000, seed: int = 0) -> str:
    """Token shards shaped like the recipe's: <bos>, a 5-14 token caption, one 8x8 image block, <eos>."""
    from interleaf.model.data import write_token_shards
    from interleaf.schemas.tokens import TokenShardInfo
    from interleaf.tokenizers.layout import grid_token_name

    g = torch.Generator().manual_seed(seed)
    sp, lo, n = vocab.special_tokens, vocab.image_codebook_offset, vocab.image_grid[0] * vocab.image_grid[1]
    docs = []
    for i in range(documents):
        caption = (vocab.text_offset + torch.randint(0, vocab.text_vocab_size, (int(torch.randint(5, 15, (1,),
                                                                                             generator=g)),),
                                                     generator=g)).tolist()
        codes = (lo + torch.randint(0, vocab.image_codebook_size, (n,), generator=g)).tolist()
        docs.append((f"d{i}", [sp["<bos>"], *caption, sp["<boi>"], sp[grid_token_name(vocab.image_grid)], *codes,
                               sp["<eoi>"], sp["<eos>"]]))
    info = TokenShardInfo(vocabulary=vocab, tokenizers={"text": "t" * 64, "image": "i" * 64})
    write_token_shards(directory, docs, info)
    return directory


def _attention_ms(B: int, T: int, dtype, repeats: int = 5) -> float:
    """Milliseconds of one causal SDPA forward + backward (8 heads of 32) on the CPU in `dtype`."""
    import torch.nn.functional as F
    q, k, v = (torch.randn(B, 8, T, 32, dtype=dtype, requires_grad=True) for _ in range(3))
    for _ in range(2):
        F.scaled_dot_product_attention(q, k, v, is_causal=True).float().sum().backward()
    t = time.perf_counter()
    for _ in range(repeats):
        F.scaled_dot_product_attention(q, k, v, is_causal=True).float().sum().backward()
    return (time.perf_counter() - t) / repeats * 1000


def _time_training(corpus, *, seq_len: int, batch: int, compiled: bool, steps: int) -> tuple[float, float, float]:
    """(seconds per step, real tokens/s, warm-up seconds) of the tiny preset on `corpus`, bf16 autocast."""
    from interleaf.model.data import PackConfig, PackedStream, collate
    from interleaf.model.train import Dist, TrainConfig, lm_loss, make_optimizer

    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=corpus.vocab.size))
    net = torch.compile(model) if compiled else model
    optimizer = make_optimizer(model, TrainConfig())
    stream = PackedStream(corpus, PackConfig(seq_len=seq_len, caption_dropout=0.1))

    def step() -> int:
        b = collate(stream.next_rows(batch))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(b.tokens, positions=b.positions, doc_ids=b.doc_ids, cells=b.cells)
        loss, _ = lm_loss(logits, b, corpus.vocab, TrainConfig(), Dist())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return int((b.doc_ids >= 0).sum())

    t = time.perf_counter()
    for _ in range(3):
        step()
    warm = time.perf_counter() - t
    t = time.perf_counter()
    real = sum(step() for _ in range(steps))
    seconds = time.perf_counter() - t
    return seconds / steps, real / seconds, warm


def train_speed(steps: int = 10) -> str:
    """Training throughput of the tiny preset on recipe-shaped documents: packed 256-token rows (document
    masks) as the first recipe trained, against one-document rows (the causal kernel), eager and compiled; and
    the CPU attention kernel in bf16 against float32, the reason attention leaves autocast on the CPU."""
    import tempfile

    from interleaf.model.data import TokenCorpus

    vocab = build_vocabulary(text_vocab_size=384, image_codebook_size=256, image_grid=(8, 8))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = TokenCorpus(_recipe_like_shards(os.path.join(tmp, "tokens"), vocab))
        reference = None
        for name, seq_len, batch, compiled in (("packed rows, document masks, eager", 256, 16, False),
                                               ("one document per row, causal kernel, eager", 80, 52, False),
                                               ("one document per row, causal kernel, torch.compile", 80, 52, True)):
            per_step, rate, warm = _time_training(corpus, seq_len=seq_len, batch=batch, compiled=compiled,
                                                  steps=steps)
            reference = reference or rate
            log.info("%s: %.0f tokens/s (warm-up %.0fs)", name, rate, warm)
            rows.append([name, f"{batch}x{seq_len}", f"{per_step * 1000:.0f} ms", f"{rate:.0f}",
                         f"{rate / reference:.2f}", f"{warm:.0f} s"])
    attention = [[f"{B}x{T}", f"{_attention_ms(B, T, torch.bfloat16):.1f} ms",
                  f"{_attention_ms(B, T, torch.float32):.1f} ms"] for B, T in ((52, 80), (16, 256))]
    return ("### Training speed (tiny preset, recipe-shaped documents of 71-80 tokens, bf16 autocast)\n\n"
            f"{torch.get_num_threads()} threads; {steps} steps after 3 warm-up steps (the warm-up includes "
            "compiling, about 50 s when Inductor's on-disk cache is cold); tokens/s counts real tokens, not "
            "padding; ratio against the first row, the way the first recipe trained.\n\n"
            + table(["rows", "batch", "step", "tokens/s", "ratio", "warm-up"], rows)
            + "\n\nOne causal attention forward + backward (8 heads of 32), the CPU kernel in each dtype:\n\n"
            + table(["rows x tokens", "bf16", "float32"], attention))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="a trained checkpoint (default: random tiny model)")
    p.add_argument("--recipe", action="append", default=[],
                   help="a bench/model_recipe.py output directory (training curve, eval scores); repeatable")
    p.add_argument("--variant", action="append", default=[],
                   help="another recipe output directory, summarised in one row of a comparison table; repeatable")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-train-speed", action="store_true", help="leave out the training-speed table")
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
                + table(["preset", f"params (vocab {vocab_size})", "params (vocab 16,384)", "shape"],
                        rows))

    cases = []
    for batch, cfg, context in ((1, 1.0, 12), (1, 3.0, 12), (4, 3.0, 12), (16, 3.0, 12), (1, 1.0, 180)):
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

    if not args.skip_train_speed:
        body.append(train_speed())
    body += [recipe_section(out) for out in args.recipe]
    if args.variant:
        body.append(variants_section(args.variant))
    text = "\n\n".join(body)
    print(text)
    if not args.no_write:
        write_section("model", "Reference model (bench/model_bench.py)", text)


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _recipe_precision(args: dict, stages: dict) -> str:
    """What the recipe trained in: recorded since issue 14 (auto by default), else the old --fp32 flag."""
    chosen = stages.get("train", {}).get("precision") or ("fp32" if args.get("fp32") else "bf16")
    return "fp32" if chosen == "fp32" else "bf16 autocast"


def recipe_section(out: str) -> str:
    report = _read_json(os.path.join(out, "recipe.json"))
    stages, a = report.get("stages", {}), report["args"]
    overrides = "".join(f" --set {s}" for s in a.get("set", []))
    lines = [(f"### CPU recipe: `bench/model_recipe.py --preset {a['preset']}{overrides} --steps {a['steps']}` "
              f"({a['examples']} examples, rows of {a['batch_size']}x{a['seq_len']} tokens, {a['threads']} thread(s), "
              f"{_recipe_precision(a, stages)})\n")]
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
            rows.append([d, s["samples_per_prompt"], g["seed"], g["cfg_scale"], g["temperature"], g["top_k"],
                         f"{s['overall']:.3f}", f"{s['seen']:.3f}",
                         f"{s['held_out']:.3f}", *[f"{s['tasks'].get(t, float('nan')):.2f}" for t in TASKS],
                         f"{s['seconds_per_image'] * 1000:.0f} ms"])
        lines.append(f"- Synthetic GenEval (`interleaf eval`), {s['prompts']} prompts, `images` samples of each:\n\n"
                     + table(["run", "images", "seed", "cfg", "temp", "top-k", "overall", "seen", "held-out", *TASKS,
                              "per image"], rows))
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


def variants_section(outs: list[str]) -> str:
    """One row per recipe run: what it changed, its training time and its default-setting scores."""
    rows = []
    for out in outs:
        report = _read_json(os.path.join(out, "recipe.json"))
        a, st = report["args"], report["stages"]
        e = st.get("eval", {})
        rows.append([a["seed"], a["examples"], a["steps"], f"{a['batch_size']}x{a['seq_len']}",
                     f"{st['train']['seconds'] / 60:.1f}",
                     f"{st['train']['last']['loss']:.3f}", f"{e.get('overall', float('nan')):.3f}",
                     f"{e.get('seen', float('nan')):.3f}", f"{e.get('held_out', float('nan')):.3f}",
                     *[f"{e.get('tasks', {}).get(t, float('nan')):.2f}" for t in TASKS]])
    return ("### Runs of the recipe with one setting changed (same code; seed: corpus, VQ, model and sampling; "
            "cfg 3, 4 images per prompt)\n\n"
            + table(["seed", "examples", "steps", "rows", "train min", "final loss", "overall", "seen", "held-out",
                     *TASKS], rows))


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
