"""The bundled CPU recipe: shapes corpus -> tiny VQ + BPE -> token shards -> tiny transformer -> synthetic GenEval.

    .venv/bin/python bench/model_recipe.py --out /tmp/interleaf-model-recipe [--steps 3000] [--threads 2]

Every stage leaves its artifact in --out and is skipped when the artifact is already there, so a killed run
continues where it stopped (the transformer resumes from its last checkpoint). The held-out colour-shape pairs
and arrangements (model/geneval.py DEFAULT_HELD_OUT) never appear in the training corpus; the shards record
them, and `interleaf eval` reports seen and held-out prompts apart. Timings of every stage go to
OUT/recipe.json; bench/model_bench.py --recipe OUT puts them with the eval scores in bench/RESULTS.md.

Target (issue 8): at most 20 minutes of transformer training on 2 CPU cores, then overall >= 0.80 and held-out
>= 0.75. The numbers depend on the machine's load; the recipe records what it measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import time

import torch

from interleaf import precision
from interleaf.model.binding import index_token_shards
from interleaf.model.corpus import DEFAULT_MIX, CorpusConfig, make_examples, tokenize_examples
from interleaf.model.generate import GenerationConfig, Generator
from interleaf.model.geneval import ground_truth, make_suite, run_eval
from interleaf.model.train import TrainConfig, latest_checkpoint, read_loss_log, train
from interleaf.shapes import DEFAULT_HELD_OUT, render
from interleaf.tokenizers.image import image_to_tensor
from interleaf.tokenizers.text_bpe import TextTokenizer
from interleaf.tokenizers.vq import VQModel, load_vq, save_vq, vq_preset
from interleaf.tokenizers.vq_train import VQTrainConfig, train_vq

log = logging.getLogger("model_recipe")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="/tmp/interleaf-model-recipe")
    p.add_argument("--examples", type=int, default=60_000, help="captioned scenes in the training corpus")
    p.add_argument("--vq-images", type=int, default=8_000, help="training renders for the VQ")
    p.add_argument("--vq-steps", type=int, default=600, help="VQ steps (tiny preset: 27 dB in 600, tokenizers/vq.py)")
    p.add_argument("--text-vocab", type=int, default=384, help="BPE size (256 bytes + merges)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a model config field, e.g. --set dim=128 (repeatable)")
    p.add_argument("--steps", type=int, default=3000, help="transformer steps (about 16 minutes on 2 idle cores)")
    p.add_argument("--batch-size", type=int, default=52)
    p.add_argument("--seq-len", type=int, default=80,
                   help="tokens per row: the corpus's documents are 71-80 tokens, so one per row (the causal kernel, no "
                        "document mask)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--text-loss-weight", type=float, default=1.0,
                   help="weight of the text targets in the loss; 0 trains on image codes only (issue 19 item 3)")
    p.add_argument("--samples", type=int, default=4, help="eval images per prompt")
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads (use 1 when the 2 cores are shared)")
    p.add_argument("--no-compile", action="store_true", help="train without torch.compile (default: compiled, "
                                                               "about 1.7x faster steps after a minute of compiling)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto (default): bf16 autocast where the CPU has AMX / AVX512-BF16 (2x faster there), "
                        "else fp32 (emulated bf16 is about 25x slower)")
    p.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="same as --precision fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--counterfactual", type=float, default=1.0,
                   help="share of position and color_attr examples followed by their counterfactual twin "
                        "(model/corpus.py, issue 19; default 1: on seeds 0 and 1 it raised seen prompts with a "
                        "same-words twin 0.48 -> 0.73 and 0.34 -> 0.55, bench/RESULTS.md 'binding'; 0: the old "
                        "corpus)")
    p.add_argument("--mix", action="append", default=[], metavar="KIND=WEIGHT",
                   help="relative share of a task kind in the corpus (model/corpus.py DEFAULT_MIX)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    report_path = os.path.join(args.out, "recipe.json")
    report = {}
    if os.path.exists(report_path):
        with open(report_path) as f:
            report = json.load(f)
    report["args"] = vars(args)

    def stage_done(name: str, seconds: float, **extra) -> None:
        report.setdefault("stages", {})[name] = {"seconds": round(seconds, 1), **extra}
        with open(report_path, "w") as f:
            json.dump(report, f, indent=2)

    t = time.perf_counter()
    mix = dict(DEFAULT_MIX)
    for item in args.mix:
        kind, _, weight = item.partition("=")
        if kind not in mix:
            raise SystemExit(f"--mix {item}: the kinds are {', '.join(mix)}")
        mix[kind] = float(weight)
    examples = make_examples(CorpusConfig(examples=args.examples, seed=args.seed, held_out=DEFAULT_HELD_OUT,
                                          mix=mix, counterfactual=args.counterfactual))
    log.info("corpus: %d examples (%.1fs)", len(examples), time.perf_counter() - t)

    vq_path = os.path.join(args.out, "vq.pt")
    if not os.path.exists(vq_path):
        t = time.perf_counter()
        rng = random.Random(args.seed + 1)
        train_images = torch.stack([image_to_tensor(render(e.scene), 32) for e in rng.sample(examples, args.vq_images)])
        suite = make_suite(held_out=DEFAULT_HELD_OUT)
        held = torch.stack([image_to_tensor(img, 32) for row in ground_truth(suite, 2, seed=99) for img in row])
        vq = VQModel(vq_preset("tiny"))
        result = train_vq(vq, train_images, held_out=held, checkpoint=os.path.join(args.out, "vq-train.pt"),
                          config=VQTrainConfig(steps=args.vq_steps, batch_size=32, log_every=100,
                                               checkpoint_every=100, seed=args.seed))
        save_vq(vq, vq_path)
        stage_done("vq", time.perf_counter() - t, held_out=result.held_out, steps=result.steps)
    vq = load_vq(vq_path)

    text_path = os.path.join(args.out, "tokenizer.json")
    if not os.path.exists(text_path):
        TextTokenizer.train([e.caption for e in examples], vocab_size=args.text_vocab).save(text_path)
    text = TextTokenizer.load(text_path)

    tokens = os.path.join(args.out, "tokens")
    if not os.path.isdir(tokens):
        t = time.perf_counter()
        tokenize_examples(examples, tokens, text=text, vq=vq, text_path=text_path, vq_path=vq_path,
                          held_out=DEFAULT_HELD_OUT, shards=4)
        stage_done("tokenize", time.perf_counter() - t, text_vocab=text.vocab_size)

    run = os.path.join(args.out, "run")
    from interleaf.commands.model_cmd import _parse_overrides
    config = TrainConfig(preset=args.preset, model_overrides=_parse_overrides(args.set), seq_len=args.seq_len, batch_size=args.batch_size, steps=args.steps,
                         lr=args.lr, caption_dropout=args.caption_dropout, text_loss_weight=args.text_loss_weight,
                         seed=args.seed, log_every=25,
                         checkpoint_every=100, precision=args.precision,
                         compile=not args.no_compile)
    done = latest_checkpoint(run)
    if done is None or not done.endswith(f"step-{args.steps:06d}"):
        t = time.perf_counter()
        train(config, tokens, run)
        log.info("transformer: %.0fs in this invocation", time.perf_counter() - t)
    records = read_loss_log(run)
    stage_done("train", sum(r["elapsed_s"] for r in _segments(records)), steps=len(records),
               first=records[0], last=records[-1],
               precision=precision.choose(args.precision, "cpu", purpose="training").dtype)

    t = time.perf_counter()
    generator = Generator.from_checkpoint(run)
    scores = run_eval(generator, os.path.join(args.out, "eval"), samples=args.samples, held_out=DEFAULT_HELD_OUT,
                      config=GenerationConfig(cfg_scale=args.cfg, temperature=args.temperature, top_k=args.top_k,
                                              seed=args.seed),
                      binding=index_token_shards(tokens, generator.codec))
    b = scores["binding"]
    stage_done("eval", time.perf_counter() - t, overall=scores["overall"], seen=scores["seen"],
               held_out=scores["held_out"], tasks=scores["tasks"],
               ceiling=scores.get("ceiling_vq_reconstructions", {}).get("overall"),
               binding={"model": b["model"], "oracle": {k: v for k, v in b["oracle"].items() if k != "tasks"},
                        "prompts": b["prompts"]})
    log.info("recipe done: %s", json.dumps(report["stages"], indent=1))
    return report


def _segments(records: list[dict]) -> list[dict]:
    """The last record of each training invocation (elapsed_s restarts when a run resumes)."""
    out = []
    for a, b in zip(records, records[1:] + [None]):
        if b is None or b["elapsed_s"] < a["elapsed_s"]:
            out.append(a)
    return out


if __name__ == "__main__":
    main()
