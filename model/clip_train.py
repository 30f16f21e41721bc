"""A small CLIP trainer: open_clip's own model and ClipLoss on (image, caption) pairs.

No published weights can be downloaded here, so the tests, the demo and the benchmark train a tiny CLIP
(filters/clip.py tiny_clip_config) on the synthetic shape scenes of interleaf.shapes, or on the (image, alt
text) pairs of an image store and its documents. The checkpoint is open_clip's format ({"state_dict": ...})
plus an "interleaf" entry with the model config and a calibrated threshold, and loads through the same
code path as published weights: ClipModelConfig(model_name=..., pretrained="/path/ckpt.pt").
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from interleaf import precision, shapes
from interleaf.filters.clip import ClipModelConfig, ClipTextConfig
from interleaf.filters.clip_model import (
    CHECKPOINT_META_KEY,
    TINY_CLIP_NAME,
    LoadedClip,
    image_transform,
    make_tokenizer,
    register_model_config,
    tiny_clip_config,
    tokenize,
)
from interleaf.imagefile import ImageDecodeError, decode
from interleaf.schemas.document import Document
from interleaf.schemas.image import STATUS_OK, ImageRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ClipTrainConfig:
    """How the tiny CLIP is trained."""

    model_name: str = TINY_CLIP_NAME  # the open_clip name the config is registered under
    model_cfg: dict = field(default_factory=tiny_clip_config)  # an open_clip model config (tiny preset)
    # 250 steps of 64 pairs reach AUC 0.997 on unseen single-shape pairs in about 30 s on 2 idle cores
    # (measured here, 2026-11; 300 steps of 128 took 320 s on the same cores under load).
    steps: int = 250
    batch_size: int = 64  # contrastive batch; shapes have 18 colour-shape classes, larger batches repeat them
    lr: float = 3e-3  # AdamW peak; tiny transformers take a higher rate than CLIP's 5e-4 at batch 32k
    warmup_steps: int = 20  # linear warmup, then cosine decay to 0 (open_clip's default schedule)
    weight_decay: float = 0.1  # on weight matrices only, as open_clip's training main (not gains, biases, scale)
    seed: int = 0
    # Keep open_clip's random token embedding fixed: the 49,408 x 128 table is 88% of the tiny model's
    # parameters and AdamW over it took 83 of 216 ms per step (1 thread, measured here); shape captions use
    # about 20 of its rows. Train it (False) when the captions' vocabulary is large (real documents).
    freeze_token_embedding: bool = True
    # torch.set_num_threads for the run; None keeps torch's default (one per core). On these shared 2-core
    # machines 1 thread was 10-20x faster per step than 2 while other work ran (OpenMP threads wait for
    # each other; measured 0.14 s against 1.5-2.9 s per step).
    num_threads: int | None = None
    # "fp32" (default), "auto" or "bf16": interleaf.precision's rule (bf16 autocast only where the hardware
    # has native bf16 when "auto"); fp32 by default, as the CLIP stage: bf16 was slower than fp32 for CLIP on
    # the CPUs measured (ViT-B-32, 2 cores, 2026-11) and scores then do not depend on the CPU.
    precision: str = "fp32"
    max_seconds: float | None = None  # stop early when a step would end past this (shared machines)
    log_every: int = 50  # steps between loss logs

    def validate(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, found {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("a contrastive batch needs at least 2 pairs")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, found {self.lr}")
        if self.precision not in precision.SETTINGS:
            raise ValueError(f"precision must be one of {', '.join(precision.SETTINGS)}, found {self.precision!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be 0 or more, found {self.warmup_steps}")


@dataclass
class PairSet:
    """Preprocessed training pairs; each image has K caption variants and a step draws one of them."""

    pixels: np.ndarray  # (N, 3, H, W) float32, the model's eval preprocessing applied
    tokens: np.ndarray  # (N, K, context_length) int64

    def __len__(self) -> int:
        return len(self.pixels)


@dataclass
class TrainResult:
    model: object  # the trained open_clip CLIP, in eval mode
    steps: int  # steps done (fewer than asked when max_seconds stopped it)
    seconds: float
    losses: list[float]  # per step


def model_config_for(config: ClipTrainConfig) -> ClipModelConfig:
    """The ClipModelConfig that builds (random) weights of the architecture being trained."""
    register_model_config(config.model_name, config.model_cfg)
    return ClipModelConfig(model_name=config.model_name, pretrained=None)


def encode_pairs(images: Sequence, captions: Sequence[Sequence[str]], model: ClipModelConfig) -> PairSet:
    """PIL images (any size) and their caption variants -> a PairSet (variants repeated up to the longest)."""
    if len(images) != len(captions) or not images:
        raise ValueError(f"need as many caption lists as images (and at least one), found {len(images)} images "
                         f"and {len(captions)} caption lists")
    transform, tokenizer = image_transform(model), make_tokenizer(model)
    k = max(len(c) for c in captions)
    if min(len(c) for c in captions) == 0:
        raise ValueError("every image needs at least one caption")
    pixels = np.stack([transform(img.convert("RGB")).numpy() for img in images]).astype(np.float32)
    flat = [c[j % len(c)] for c in captions for j in range(k)]
    tokens = tokenize(tokenizer, flat).reshape(len(images), k, -1)
    return PairSet(pixels=pixels, tokens=tokens)


def _param_groups(model, weight_decay: float) -> list[dict]:
    # open_clip's training main excludes gains, biases and the logit scale from weight decay
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "bias" in name or "logit_scale" in name else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def train_clip(pairs: PairSet, config: ClipTrainConfig) -> TrainResult:
    """Train a CLIP of `config`'s architecture from random weights on `pairs` with open_clip's ClipLoss."""
    import torch

    config.validate()
    if len(pairs) < config.batch_size:
        raise ValueError(f"{len(pairs)} pairs are fewer than one batch of {config.batch_size}")
    threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    try:
        return _train(pairs, config)
    finally:
        torch.set_num_threads(threads)


def _train(pairs: PairSet, config: ClipTrainConfig) -> TrainResult:
    import open_clip
    import torch

    torch.manual_seed(config.seed)
    chosen = precision.choose(config.precision, "cpu", purpose="CLIP training")
    model = open_clip.create_model(model_config_for(config).model_name, pretrained=None)
    model.train()
    if config.freeze_token_embedding:
        model.token_embedding.weight.requires_grad_(False)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98),
                                  eps=1e-6)
    loss_fn = open_clip.ClipLoss()
    pixels, tokens = torch.from_numpy(pairs.pixels), torch.from_numpy(pairs.tokens)
    generator = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    start = time.perf_counter()
    step_seconds = 0.0
    for step in range(config.steps):
        elapsed = time.perf_counter() - start
        if config.max_seconds is not None and step and elapsed + step_seconds > config.max_seconds:
            log.warning("stopping at step %d of %d: max_seconds=%s reached", step, config.steps, config.max_seconds)
            break
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, config)
        index = torch.randint(0, len(pairs), (config.batch_size,), generator=generator)
        variant = torch.randint(0, tokens.shape[1], (config.batch_size,), generator=generator)
        with precision.autocast(chosen, "cpu"):
            image_features = model.encode_image(pixels[index], normalize=True)  # (B, D)
            text_features = model.encode_text(tokens[index, variant], normalize=True)  # (B, D)
        loss = loss_fn(image_features.float(), text_features.float(), model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # CLIP clamps the learned temperature at 100 (Radford et al. 2021)
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        step_seconds = (time.perf_counter() - start) / (step + 1)
        if step % config.log_every == 0 or step == config.steps - 1:
            log.info("step %d/%d loss %.4f (%.2f s/step)", step + 1, config.steps, losses[-1], step_seconds)
    model.eval()
    return TrainResult(model=model, steps=len(losses), seconds=time.perf_counter() - start, losses=losses)


def _lr(step: int, config: ClipTrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def save_checkpoint(path: str, model, config: ClipTrainConfig, **extra) -> None:
    """open_clip's checkpoint format plus the model config and `extra` (threshold, auc, ...), atomically."""
    import torch

    meta = {"model_name": config.model_name, "model_cfg": config.model_cfg,
            "train": {k: v for k, v in asdict(config).items() if k != "model_cfg"}, **extra}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"state_dict": model.state_dict(), CHECKPOINT_META_KEY: meta}, tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    log.info("saved %s", path)


# ---------------------------------------------------------------- evaluation


def pair_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """ROC AUC of matching pairs (positive) against mismatched ones: the probability that a random matching
    pair scores above a random mismatched one, ties counting half (Mann-Whitney U / (n_pos * n_neg))."""
    from scipy.stats import rankdata

    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if not len(pos) or not len(neg):
        raise ValueError("AUC needs at least one positive and one negative score")
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def calibrate_threshold(positive: Sequence[float], negative: Sequence[float]) -> float:
    """The threshold that best separates matching from mismatched pairs (maximal balanced accuracy; the
    middle of the best gap between consecutive scores)."""
    pos, neg = np.sort(np.asarray(positive, dtype=np.float64)), np.sort(np.asarray(negative, dtype=np.float64))
    values = np.unique(np.concatenate([pos, neg]))
    cuts = np.concatenate([[values[0] - 1e-3], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-3]])
    tpr = 1 - np.searchsorted(pos, cuts, side="left") / len(pos)  # share of positives >= cut
    tnr = np.searchsorted(neg, cuts, side="left") / len(neg)  # share of negatives < cut
    balanced = (tpr + tnr) / 2
    best = np.flatnonzero(balanced == balanced.max())
    return float(cuts[best[len(best) // 2]])


def score_pairs(loaded: LoadedClip, model: ClipModelConfig, images: Sequence, texts: Sequence[str],
                batch_size: int = 256) -> np.ndarray:
    """Cosine similarity of each image with the text at the same position."""
    transform, tokenizer = image_transform(model), make_tokenizer(model)
    out = []
    for s in range(0, len(images), batch_size):
        pix = np.stack([transform(img.convert("RGB")).numpy() for img in images[s:s + batch_size]])
        img = loaded.encode_images(pix)
        txt = loaded.encode_texts(tokenize(tokenizer, texts[s:s + batch_size]))
        out.append((img * txt).sum(axis=1))
    return np.concatenate(out)


# ---------------------------------------------------------------- data: synthetic shapes


RENDER_SIZES = (32, 48, 64)  # stored images come in mixed sizes; the model's preprocessing resizes them


def shape_pairs(n: int, *, seed: int, sizes: Sequence[int] = RENDER_SIZES) -> tuple[list, list[list[str]], list]:
    """n single-shape scenes rendered at random sizes: (images, caption variants, scenes)."""
    rng = random.Random(seed)
    scenes = [shapes.random_scene(rng, 1) for _ in range(n)]
    images = [shapes.render(s, rng.choice(list(sizes))) for s in scenes]
    captions = [[shapes.caption(s, t) for t in range(4)] for s in scenes]
    return images, captions, scenes


def _classes(scene) -> frozenset:
    return frozenset((o.color, o.shape) for o in scene.objects)


def mismatched_caption(scene, rng: random.Random) -> str:
    """A caption of another scene whose objects differ from `scene`'s (a planted mismatch)."""
    for _ in range(100):
        other = shapes.random_scene(rng, len(scene.objects))
        if _classes(other).isdisjoint(_classes(scene)):
            return shapes.caption(other, rng.randrange(4))
    raise ValueError("could not draw a mismatching scene")


@dataclass
class TrainReport:
    path: str  # the checkpoint
    pairs: int  # training pairs
    steps: int
    seconds: float  # training time
    final_loss: float  # mean of the last 10 steps
    auc: float  # on held-out calibration pairs (each image with its caption and with a mismatched one)
    threshold: float  # calibrated on those pairs, stored in the checkpoint


def train_on_shapes(path: str, *, n_pairs: int = 3000, n_calibration: int = 300, seed: int = 0,
                    config: ClipTrainConfig | None = None) -> TrainReport:
    """Train a tiny CLIP on synthetic shape scenes, calibrate a threshold on held-out pairs, save it at `path`.

    Training scenes come from `seed`, calibration scenes from `seed + 1`: callers that measure quality should
    draw theirs from other seeds."""
    config = config or ClipTrainConfig(seed=seed)
    model_cfg = model_config_for(config)
    images, captions, _ = shape_pairs(n_pairs, seed=seed)
    result = train_clip(encode_pairs(images, captions, model_cfg), config)
    rng = random.Random(seed + 1)
    held_images, held_captions, held_scenes = shape_pairs(n_calibration, seed=seed + 1)
    matching = [c[rng.randrange(len(c))] for c in held_captions]
    mismatched = [mismatched_caption(s, rng) for s in held_scenes]
    return _finish(path, result, config, model_cfg, len(images), held_images, matching, mismatched)


def train_on_documents(path: str, documents: Sequence[Document], images: dict[str, ImageRecord], *,
                       config: ClipTrainConfig | None = None, text: ClipTextConfig | None = None,
                       holdout: float = 0.1) -> TrainReport:
    """Train on the (image, alt text / nearby text) pairs of curated documents and their image store.
    `holdout` of the pairs (at least 2) calibrate the threshold, mismatched by pairing each held-out image
    with the next one's caption."""
    config = config or ClipTrainConfig()
    model_cfg = model_config_for(config)
    pair_images, captions = pairs_from_documents(documents, images, text)
    order = list(range(len(pair_images)))
    random.Random(config.seed).shuffle(order)
    n_held = max(2, round(holdout * len(order)))
    if len(order) - n_held < config.batch_size:
        raise ValueError(f"{len(pair_images)} usable (image, text) pairs in the documents: too few for a batch of "
                         f"{config.batch_size} plus {n_held} held out; lower --batch-size or add documents")
    held, train = order[:n_held], order[n_held:]
    result = train_clip(encode_pairs([pair_images[i] for i in train], [captions[i] for i in train], model_cfg),
                        config)
    held_images = [pair_images[i] for i in held]
    matching = [captions[i][0] for i in held]
    mismatched = matching[1:] + matching[:1]
    return _finish(path, result, config, model_cfg, len(train), held_images, matching, mismatched)


def _finish(path: str, result: TrainResult, config: ClipTrainConfig, model_cfg: ClipModelConfig, n_pairs: int,
            held_images: Sequence, matching: Sequence[str], mismatched: Sequence[str]) -> TrainReport:
    """Calibrate on held-out pairs, save the checkpoint, report."""
    import torch

    loaded = LoadedClip(model=result.model, device=torch.device("cpu"), dtype=torch.float32, model_id="training")
    pos = score_pairs(loaded, model_cfg, held_images, matching)
    neg = score_pairs(loaded, model_cfg, held_images, mismatched)
    auc, threshold = pair_auc(pos, neg), calibrate_threshold(pos, neg)
    save_checkpoint(path, result.model, config, threshold=threshold, auc=auc, steps=result.steps,
                    seconds=round(result.seconds, 2))
    final = float(np.mean(result.losses[-10:]))
    log.info("CLIP %s: %d steps in %.1f s, loss %.3f, held-out AUC %.4f, threshold %.3f", config.model_name,
             result.steps, result.seconds, final, auc, threshold)
    return TrainReport(path=path, pairs=n_pairs, steps=result.steps, seconds=result.seconds, final_loss=final,
                       auc=auc, threshold=threshold)


# ---------------------------------------------------------------- data: an image store and its documents


def pairs_from_documents(documents: Sequence[Document], images: dict[str, ImageRecord],
                         text: ClipTextConfig | None = None) -> tuple[list, list[list[str]]]:
    """(image, caption variants) pairs from curated documents: each kept image node whose bytes are in the
    store, captioned by its alt text and the text nodes of its window. Undecodable images are skipped."""
    text = text or ClipTextConfig()
    out_images, out_captions, seen = [], [], set()
    for doc in documents:
        if not doc.kept:
            continue
        texts = [i for i, n in enumerate(doc.nodes) if n.is_text and n.kept and n.text and n.text.strip()]
        for i, node in enumerate(doc.nodes):
            record = images.get(node.image_sha256) if node.is_image and node.kept else None
            if record is None or record.status != STATUS_OK or record.data is None:
                continue
            window = ([p for p in texts if p < i][-text.window_before:] if text.window_before else []) + \
                [p for p in texts if p > i][:text.window_after]
            caps = ([node.alt_text.strip()] if text.use_alt_text and node.alt_text and node.alt_text.strip() else [])
            caps += [doc.nodes[p].text[:text.max_chars] for p in window]
            if not caps or (node.image_sha256, caps[0]) in seen:
                continue
            try:
                img = decode(record.data, "RGB")
            except ImageDecodeError as e:
                log.debug("skipping undecodable image %s: %s", node.image_sha256, e)
                continue
            seen.add((node.image_sha256, caps[0]))
            out_images.append(img)
            out_captions.append(caps)
    return out_images, out_captions

