"""`interleaf train-clip`: train a tiny CLIP (open_clip's model and loss) and save a checkpoint that the CLIP
stage loads by path, on synthetic shape scenes or on a run's documents and image store."""

from __future__ import annotations

import argparse

from interleaf.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from interleaf.model.clip_train import ClipTrainConfig

    d = ClipTrainConfig
    p = sub.add_parser("train-clip", help="train a tiny CLIP and save a checkpoint for the CLIP stage",
                       description="Train a tiny CLIP (open_clip's model and ClipLoss, no downloads) on synthetic "
                                   "shape scenes, or on the (image, alt text) pairs of a run's documents and image "
                                   "store, calibrate a threshold on held-out pairs, and save an open_clip "
                                   "checkpoint. The CLIP stage loads it with model_name=interleaf-tiny-clip and "
                                   "pretrained=PATH.")
    p.add_argument("--out", required=True, metavar="PATH", help="checkpoint file to write (a local .pt path)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"training steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"pairs per step (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak AdamW learning rate (default {d.lr})")
    p.add_argument("--pairs", type=int, default=3000, help="synthetic shape pairs to train on (default 3000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the weights (default 0)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads (default: torch's choice; 1 is much faster on a busy shared machine)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop training after about this long")
    p.add_argument("--documents", metavar="PATH", help="train on these document shards instead (with --images)")
    p.add_argument("--images", metavar="PATH", help="the image store of --documents")
    p.add_argument("--train-token-embedding", action="store_true",
                   help="also train the token embedding (for real text; fixed by default for speed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from interleaf.filters.clip_model import TINY_CLIP_NAME
    from interleaf.model.clip_train import ClipTrainConfig, train_on_documents, train_on_shapes

    if bool(args.documents) != bool(args.images):
        raise UsageError("--documents and --images go together (a run's documents/ and images/ directories)")
    if args.pairs < 2 * args.batch_size and not args.documents:
        raise UsageError(f"--pairs {args.pairs} is fewer than two batches of --batch-size {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, found {args.threads}")
    config = ClipTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                             num_threads=args.threads, max_seconds=args.max_seconds,
                             freeze_token_embedding=not args.train_token_embedding)
    try:
        config.validate()
    except ValueError as e:
        raise UsageError(str(e)) from None

    if args.documents:
        documents, images = _read_store(args.documents, args.images)
        try:
            report = train_on_documents(args.out, documents, images, config=config)
        except ValueError as e:
            raise UsageError(str(e)) from None
        source = f"{report.pairs} (image, text) pairs from {args.documents}"
    else:
        report = train_on_shapes(args.out, n_pairs=args.pairs, seed=args.seed, config=config)
        source = f"{report.pairs} synthetic shape pairs"
    print(f"trained {TINY_CLIP_NAME} on {source}: {report.steps} steps in {report.seconds:.1f} s, "
          f"final loss {report.final_loss:.3f}")
    print(f"held-out AUC {report.auc:.4f}, calibrated threshold {report.threshold:.3f} (stored in the checkpoint)")
    print(f"wrote {args.out}; use it with ClipModelConfig(model_name={TINY_CLIP_NAME!r}, pretrained={args.out!r})")
    return 0


def _read_store(documents_path: str, images_path: str):
    """Documents and {sha256: ImageRecord} from shard directories (read whole: for demo-sized runs)."""
    from interleaf.schemas.document import documents_from_table
    from interleaf.schemas.image import images_from_table
    from interleaf.schemas.meta import KIND_DOCUMENTS, KIND_IMAGES
    from interleaf.shards import open_shards

    documents = documents_from_table(open_shards(documents_path, KIND_DOCUMENTS).read())
    images = {r.sha256: r for r in images_from_table(open_shards(images_path, KIND_IMAGES).read()) if r.sha256}
    return documents, images

