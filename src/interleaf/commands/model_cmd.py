"""`interleaf train`, `interleaf generate`, `interleaf eval`: the reference model on token shards.

    interleaf train --shards DIR --out DIR --preset tiny [--steps N ...]   (torchrun -m interleaf.cli train ...)
    interleaf generate --checkpoint DIR --prompt TEXT --out DIR [--image] [--cfg 3] ...
    interleaf eval --checkpoint DIR --out DIR [--samples 4] [--cfg 3] ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from interleaf.errors import UsageError


def _gen_args(p: argparse.ArgumentParser, *, cfg: float, temperature: float, top_k: int) -> None:
    p.add_argument("--temperature", type=float, default=temperature, help="softmax temperature; 0 = greedy")
    p.add_argument("--top-k", type=int, default=top_k, help="sample among the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    p.add_argument("--cfg", type=float, default=cfg, help="classifier-free guidance scale on image codes (1: off)")
    p.add_argument("--no-cache", action="store_true", help="recompute the sequence every step (no KV cache)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="fp32",
                   help="fp32 (default: a seed gives the same output on every machine), auto (bf16 autocast "
                        "where the GPU or CPU has native bf16) or bf16")
    p.add_argument("--text-tokenizer", metavar="FILE", help="tokenizer.json (default: the checkpoint's copy)")
    p.add_argument("--vq", metavar="FILE", help="VQ checkpoint (default: the checkpoint's copy)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from interleaf.model.presets import PRESETS

    p = sub.add_parser("train", help="train the reference transformer on token shards",
                       description="Train (or resume, when --out holds a checkpoint) the reference early-fusion "
                                   "transformer on token shards. Under torchrun every process trains on its slice "
                                   "of each global batch (gloo on CPU, NCCL on GPU).")
    p.add_argument("--shards", required=True, help="directory (or glob) of token shards")
    p.add_argument("--out", required=True, help="output directory: loss.jsonl and checkpoints/")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model size (default: tiny)")
    p.add_argument("--steps", type=int, default=1000, help="optimiser steps of the whole run")
    p.add_argument("--batch-size", type=int, default=16, help="rows per step over all processes")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per packed row")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=50, help="warmup steps")
    p.add_argument("--caption-dropout", type=float, default=0.1, help="text-before-image dropout for CFG")
    p.add_argument("--z-loss", type=float, default=0.0, help="z-loss weight (Chameleon: 1e-5)")
    p.add_argument("--text-loss-weight", type=float, default=1.0, help="0 masks text targets out of the loss")
    p.add_argument("--image-loss-weight", type=float, default=1.0, help="0 masks image targets out of the loss")
    p.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
    p.add_argument("--stop-after", type=int, help="stop after this step (the schedule still spans --steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast where the GPU or CPU has native bf16 (CPU: AMX or AVX512-BF16), "
                        "else fp32 (emulated bf16 is about 25x slower); bf16 or fp32 force one")
    p.add_argument("--cpu-bf16", dest="precision", action="store_const", const="bf16",
                   help="same as --precision bf16 (kept for older scripts)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (needs a C++ compiler; about "
                                                           "1.7x faster CPU steps after a minute of compiling)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a model config field, e.g. --set dim=128 (repeatable)")
    p.add_argument("--text-tokenizer", metavar="FILE", help="tokenizer.json the shards were made with (copied "
                                                            "into checkpoints; default: found from the shards)")
    p.add_argument("--image-tokenizer", metavar="FILE", help="VQ checkpoint the shards were made with")
    p.set_defaults(func=run)

    p = sub.add_parser("generate", help="sample text and images from a checkpoint",
                       description="Continue a prompt: text until the model opens an image, the image block "
                                   "sampled within the grid, decoded to PNG, and on (interleaved output).")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or a training output directory")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--out", required=True, help="directory for generation.json, transcript.txt and PNGs")
    p.add_argument("--image", action="store_true", help="open an image right after the prompt")
    p.add_argument("--samples", type=int, default=1, help="independent samples (seed, seed+1, ...)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="text token budget")
    p.add_argument("--max-images", type=int, default=1, help="stop after this many images (0: no limit)")
    _gen_args(p, cfg=3.0, temperature=1.0, top_k=0)
    p.set_defaults(func=run)

    p = sub.add_parser("eval", help="the synthetic GenEval benchmark on a checkpoint",
                       description="Generate images for the shapes benchmark's prompts (GenEval's six tasks and "
                                   "metadata format), check them with the rule-based detector, and write "
                                   "results.jsonl and scores.json (overall, per task, seen vs held-out, ceiling).")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or a training output directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--samples", type=int, default=4, help="images per prompt (GenEval: 4)")
    p.add_argument("--metadata", metavar="FILE", help="evaluation_metadata.jsonl to use instead of the suite")
    p.add_argument("--batch-prompts", type=int, default=16, help="prompts generated together")
    p.add_argument("--no-ceiling", action="store_true", help="skip the checker on ground truth and VQ round trips")
    p.add_argument("--train-shards", metavar="DIR",
                   help="the token shards the checkpoint was trained on, for the binding diagnostics (the "
                        "bag-of-words oracle, seen prompts split by same-words twins); default: the path the "
                        "checkpoint recorded")
    p.add_argument("--no-binding", action="store_true", help="skip the binding diagnostics")
    _gen_args(p, cfg=3.0, temperature=1.0, top_k=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return {"train": _train, "generate": _generate, "eval": _eval}[args.command](args)


def _device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: torch sees no CUDA device here")
    return name


def _parse_overrides(items: list[str]) -> dict:
    from dataclasses import fields

    from interleaf.model.transformer import ModelConfig
    types = {f.name: f.type for f in fields(ModelConfig)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types or key == "vocab_size":
            raise UsageError(f"--set {item}: expected FIELD=VALUE with FIELD one of "
                             f"{', '.join(k for k in types if k != 'vocab_size')}")
        kind = types[key]
        out[key] = (value.lower() in ("1", "true", "yes")) if kind in (bool, "bool") else \
            float(value) if kind in (float, "float") else int(value)
    return out


def _train(args: argparse.Namespace) -> int:
    from interleaf.model.train import TrainConfig, train

    if args.steps < 1 or args.batch_size < 1:
        raise UsageError("--steps and --batch-size must be positive")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    config = TrainConfig(preset=args.preset, model_overrides=_parse_overrides(args.set), seq_len=args.seq_len,
                         batch_size=args.batch_size, steps=args.steps, lr=args.lr, warmup_steps=args.warmup,
                         caption_dropout=args.caption_dropout, z_loss=args.z_loss,
                         text_loss_weight=args.text_loss_weight, image_loss_weight=args.image_loss_weight,
                         checkpoint_every=args.checkpoint_every, seed=args.seed, device=_device(args.device),
                         precision=args.precision, compile=args.compile)
    try:
        config.validate()
    except ValueError as e:
        raise UsageError(str(e)) from None
    records = train(config, args.shards, args.out, stop_after=args.stop_after,
                    tokenizer_files={"text": args.text_tokenizer, "image": args.image_tokenizer})
    if records and int(os.environ.get("RANK", "0")) == 0:
        last = records[-1]
        print(f"step {last['step']}: loss {last['loss']:.4f} (text {last['text_loss']:.4f}, image "
              f"{last['image_loss']:.4f}); checkpoints in {os.path.join(args.out, 'checkpoints')}")
    return 0


def _generation_config(args: argparse.Namespace, **extra):
    from interleaf.model.generate import GenerationConfig
    if args.temperature < 0 or args.top_k < 0 or not 0 < args.top_p <= 1:
        raise UsageError("--temperature and --top-k must be >= 0 and --top-p in (0, 1]")
    return GenerationConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, cfg_scale=args.cfg,
                            use_cache=not args.no_cache, seed=args.seed, precision=args.precision,
                            **extra)


def _load(args: argparse.Namespace):
    from interleaf.model.generate import Generator
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    return Generator.from_checkpoint(args.checkpoint, _device(args.device), text_tokenizer=args.text_tokenizer,
                                     vq=args.vq)


def _generate(args: argparse.Namespace) -> int:
    from dataclasses import asdict, replace
    config = _generation_config(args, max_new_tokens=args.max_new_tokens, max_images=args.max_images)
    generator = _load(args)
    if generator.codec.text is None:
        raise UsageError("the checkpoint carries no text tokenizer; pass --text-tokenizer")
    os.makedirs(args.out, exist_ok=True)
    prompt = generator.prompt(args.prompt, open_image=args.image)
    samples, transcript = [], []
    for i in range(args.samples):
        tokens = generator.generate(prompt, replace(config, seed=args.seed + i))
        segments = []
        # the whole document, prompt included (an image the prompt opened starts there)
        whole = prompt + tokens
        parts = generator.decode(whole) if generator.vq is not None else generator.codec.decode(whole, strict=False)
        for j, (kind, value) in enumerate(parts):
            if kind == "image" and generator.vq is not None:
                name = f"sample-{i:02d}-image-{j:02d}.png"
                value.save(os.path.join(args.out, name))
                segments.append({"image": name})
                transcript.append(f"[image {name}]")
            elif kind == "image":
                segments.append({"image_codes": value})
                transcript.append("[image: no VQ decoder to draw it; pass --vq]")
            else:
                segments.append({"text": value})
                transcript.append(value)
        samples.append({"seed": args.seed + i, "tokens": tokens, "segments": segments})
        transcript.append("")
    with open(os.path.join(args.out, "generation.json"), "w") as f:
        json.dump({"prompt": args.prompt, "prompt_tokens": prompt, "config": asdict(config), "samples": samples},
                  f, indent=1)
    with open(os.path.join(args.out, "transcript.txt"), "w") as f:
        f.write("\n".join(transcript))
    print(f"prompt: {args.prompt}\n" + "\n".join(transcript))
    print(f"wrote {args.out}/generation.json")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from interleaf.model.geneval import read_metadata, run_eval
    from interleaf.shapes import DEFAULT_HELD_OUT, HeldOut
    if args.samples < 1:
        raise UsageError("--samples must be at least 1")
    config = _generation_config(args)
    generator = _load(args)
    if generator.vq is None or generator.codec.text is None:
        raise UsageError("eval needs the text tokenizer and the VQ: the checkpoint carries no copy; pass "
                         "--text-tokenizer and --vq")
    recorded = _held_out(args.checkpoint)
    held = HeldOut.from_json(recorded) if recorded else DEFAULT_HELD_OUT
    suite = read_metadata(args.metadata) if args.metadata else None
    binding = None if args.no_binding else _binding_index(args, generator)
    scores = run_eval(generator, args.out, suite=suite, samples=args.samples, config=config, held_out=held,
                      batch_prompts=args.batch_prompts, ceiling=not args.no_ceiling, binding=binding)
    print(f"overall {scores['overall']:.3f}  seen {scores['seen']}  held-out {scores['held_out']}  "
          + "  ".join(f"{t} {v:.2f}" for t, v in scores["tasks"].items()))
    if "binding" in scores:
        b = scores["binding"]
        groups = "  ".join(f"{g} {_score(b['model'][g])} vs {_score(b['oracle'][g])}"
                           for g in ("seen_twin", "seen_alone", "held_out"))
        verdict = "beats" if b["model_beats_oracle"]["overall"] else "does not beat"
        print(f"bag-of-words oracle overall {b['oracle']['overall']:.3f}: the model {verdict} it  "
              f"(model vs oracle: {groups})")
    if "ceiling_vq_reconstructions" in scores:
        print(f"checker on ground truth {scores['checker_on_ground_truth']['overall']:.3f}, on VQ reconstructions "
              f"(ceiling) {scores['ceiling_vq_reconstructions']['overall']:.3f}")
    print(f"wrote {args.out}/scores.json")
    return 0


def _score(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _binding_index(args: argparse.Namespace, generator):
    """The training corpus's captions by bag of words (model/binding.py), from --train-shards or the shards
    the checkpoint recorded; None (and a log line) when neither is there."""
    import logging

    from interleaf.model.binding import index_token_shards
    from interleaf.model.train import resolve_checkpoint
    path = args.train_shards
    if path is None:
        with open(os.path.join(resolve_checkpoint(args.checkpoint), "meta.json")) as f:
            path = json.load(f).get("shards")
        if path is None or ("://" not in path and not os.path.exists(path)):
            logging.getLogger(__name__).info("eval: no training shards recorded or found (%s); binding "
                                             "diagnostics skipped (--train-shards DIR)", path)
            return None
    elif not os.path.exists(path):
        raise UsageError(f"--train-shards {path}: no such directory")
    return index_token_shards(path, generator.codec)


def _held_out(checkpoint: str) -> dict | None:
    """The held-out combinations the training corpus recorded in its shards' config, if it did."""
    from interleaf.model.train import resolve_checkpoint
    with open(os.path.join(resolve_checkpoint(checkpoint), "meta.json")) as f:
        meta = json.load(f)
    return (meta.get("shard_config") or {}).get("shapes", {}).get("held_out")


def main(argv: list[str] | None = None) -> int:
    """Run these commands without the `interleaf` dispatcher: python -m interleaf.commands.model_cmd train ..."""
    import logging
    parser = argparse.ArgumentParser(prog="interleaf")
    add_parser(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    from interleaf.errors import USER_ERRORS
    try:
        return run(args)
    except USER_ERRORS as e:
        print(f"interleaf {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
