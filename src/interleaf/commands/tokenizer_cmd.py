"""`interleaf train-text-tokenizer` and `interleaf train-image-tokenizer`: the tokenizers the tokenize stage
uses, trained from a run's document shards and image store."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import time

from interleaf.errors import UsageError
from interleaf.schemas.meta import KIND_DOCUMENTS, KIND_IMAGES
from interleaf.shards import open_shards

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train-text-tokenizer",
                       help="train the byte-level BPE text tokenizer on document shards",
                       description="Train a byte-level BPE (Hugging Face tokenizers) on the kept text of "
                                   "document shards and write its tokenizer.json.")
    t.add_argument("--documents", required=True, metavar="DIR",
                   help="document shards (a run's DIR/documents)")
    t.add_argument("--out", required=True, metavar="FILE", help="tokenizer.json to write")
    t.add_argument("--vocab-size", type=int, required=True, metavar="N", help="at most N tokens (>= 256)")
    t.add_argument("--min-frequency", type=int, default=2, metavar="N",
                   help="merge only pairs seen at least N times (default 2)")
    t.add_argument("--sample", type=int, default=0, metavar="N",
                   help="train on a random sample of N documents (default 0: all)")
    t.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    t.set_defaults(func=run, tokenizer="text")

    i = sub.add_parser("train-image-tokenizer", help="train the VQ image tokenizer on an image store",
                       description="Train the VQ image tokenizer (LlamaGen design) on the images of an image "
                                   "store; checkpoints as it goes, resumes, and reports reconstruction PSNR "
                                   "and codebook usage on held-out images.")
    i.add_argument("--images", required=True, metavar="DIR", help="image store shards (a run's DIR/images)")
    i.add_argument("--out", required=True, metavar="FILE", help="VQ checkpoint to write")
    i.add_argument("--preset", default="tiny", choices=["tiny", "base"], help="model size (default tiny)")
    i.add_argument("--steps", type=int, required=True, metavar="N", help="training steps in total")
    i.add_argument("--batch-size", type=int, default=32, metavar="N", help="images per step (default 32)")
    i.add_argument("--lr", type=float, default=None, help="peak learning rate (default: VQTrainConfig's)")
    i.add_argument("--max-images", type=int, default=0, metavar="N",
                   help="use at most N images (default 0: all)")
    i.add_argument("--held-out", type=float, default=0.05, metavar="F",
                   help="fraction of images held out for evaluation, chosen by sha256 (default 0.05)")
    i.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    i.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads")
    i.add_argument("--checkpoint", metavar="FILE",
                   help="training checkpoint (model, optimizer, step), resumed when it exists "
                        "(default OUT.train)")
    i.add_argument("--checkpoint-every", type=int, default=500, metavar="N", help="steps between checkpoints")
    i.add_argument("--no-resume", action="store_true", help="start over even if the checkpoint exists")
    i.add_argument("--seed", type=int, default=0, help="initialisation and batch order (default 0)")
    i.set_defaults(func=run, tokenizer="image")


def run(args: argparse.Namespace) -> int:
    if args.tokenizer == "text":
        return _train_text(args)
    return _train_image(args)


# ---------------------------------------------------------------- text


def _document_texts(path: str, sample: int, seed: int):
    """The kept text nodes of kept documents, or those of a reservoir sample of `sample` documents."""
    shards = open_shards(path, kind=KIND_DOCUMENTS)
    rng = random.Random(seed)
    reservoir: list[list[str]] = []
    seen = 0
    for _, table in shards.tables(columns=["status", "nodes"]):
        for row in table.to_pylist():
            if row["status"] != "kept":
                continue
            texts = [n["text"] for n in row["nodes"]
                     if n["kind"] == "text" and n["status"] == "kept" and n["text"]]
            if not sample:
                yield from texts
                continue
            seen += 1
            if len(reservoir) < sample:
                reservoir.append(texts)
            else:
                j = rng.randrange(seen)
                if j < sample:
                    reservoir[j] = texts
    for texts in reservoir:
        yield from texts


def _train_text(args) -> int:
    from interleaf.tokenizers.text_bpe import BYTE_ALPHABET, TextTokenizer
    if args.vocab_size < BYTE_ALPHABET:
        raise UsageError(f"--vocab-size must be at least {BYTE_ALPHABET} (the byte alphabet), "
                         f"found {args.vocab_size}")
    if args.min_frequency < 1 or args.sample < 0:
        raise UsageError("--min-frequency must be at least 1 and --sample 0 or more")
    count = 0

    def counted():
        nonlocal count
        for t in _document_texts(args.documents, args.sample, args.seed):
            count += 1
            yield t

    start = time.perf_counter()
    tok = TextTokenizer.train(counted(), vocab_size=args.vocab_size, min_frequency=args.min_frequency)
    if count == 0:
        raise UsageError(f"{args.documents}: no kept text in these document shards")
    tok.save(args.out)
    print(json.dumps({"out": args.out, "texts": count, "vocab_size": tok.vocab_size, "sha256": tok.sha256,
                      "seconds": round(time.perf_counter() - start, 1)}))
    return 0


# ---------------------------------------------------------------- images


def _held_out(sha: str, fraction: float) -> bool:
    """A stable split: the same image is held out on every run, whatever the store's order."""
    return int(hashlib.sha256(("held-out:" + sha).encode()).hexdigest()[:8], 16) < fraction * 0xFFFFFFFF


def _load_images(path: str, size: int, max_images: int, fraction: float):
    import torch

    from interleaf.imagefile import ImageDecodeError, decode
    from interleaf.tokenizers.image import image_to_tensor
    shards = open_shards(path, kind=KIND_IMAGES)
    train, held, bad = [], [], 0
    for _, table in shards.tables(columns=["sha256", "status", "data"]):
        for row in table.to_pylist():
            if row["status"] != "ok" or not row["data"]:
                continue
            try:
                t = image_to_tensor(decode(row["data"]), size)
            except ImageDecodeError:
                bad += 1
                continue
            (held if _held_out(row["sha256"], fraction) else train).append(t)
            if max_images and len(train) + len(held) >= max_images:
                break
        if max_images and len(train) + len(held) >= max_images:
            break
    if bad:
        log.warning("%s: %d images did not decode and were skipped", path, bad)
    if not train:
        raise UsageError(f"{path}: no decodable images with status ok to train on")
    empty = torch.empty(0, 3, size, size)
    return torch.stack(train), torch.stack(held) if held else empty


def _train_image(args) -> int:
    from dataclasses import replace

    import torch

    from interleaf.tokenizers.vq import VQModel, save_vq, vq_preset
    from interleaf.tokenizers.vq_train import VQTrainConfig, train_vq
    if args.steps < 1 or args.batch_size < 1 or args.max_images < 0 or not 0 <= args.held_out < 1:
        raise UsageError("--steps and --batch-size must be at least 1, --max-images 0 or more, "
                         "--held-out in [0, 1)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: torch sees no CUDA device here")
    config = vq_preset(args.preset)
    train, held = _load_images(args.images, config.image_size, args.max_images, args.held_out)
    log.info("training a %s VQ on %d images (%d held out)", args.preset, len(train), len(held))
    torch.manual_seed(args.seed)
    model = VQModel(config).to(args.device)
    tc = VQTrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, num_threads=args.threads,
                       checkpoint_every=args.checkpoint_every, log_every=max(1, min(100, args.steps // 10)))
    if args.lr is not None:
        tc = replace(tc, lr=args.lr)
    result = train_vq(model, train, config=tc, held_out=held if len(held) else None,
                      checkpoint=args.checkpoint or args.out + ".train", resume=not args.no_resume)
    save_vq(model, args.out)
    print(json.dumps({"out": args.out, "sha256": model.sha256, "preset": args.preset, "steps": result.steps,
                      "train_images": len(train), "held_out_images": len(held),
                      "seconds": round(result.seconds, 1), "held_out": result.held_out}))
    return 0
