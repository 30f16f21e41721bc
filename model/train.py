"""Train the reference transformer on token shards: AdamW, warmup + cosine, clipping, checkpoints, exact resume, DDP.

One process per device, launched plainly or by torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment;
gloo on the CPU, NCCL on GPUs). Every rank packs the same stream of rows and trains on its slice of each global
batch; the loss is normalised by the global count of loss tokens, so a step over W ranks equals one step over
the whole batch in one process. Checkpoints hold model, optimiser, scheduler, step, RNG states and the data
cursor, so stopping and resuming reproduces the losses of an uninterrupted run.

Layout of an output directory:
    OUT/loss.jsonl                       one JSON record per step (loss, text_loss, image_loss, lr, ...)
    OUT/checkpoints/step-000100/         model.pt, state.pt, meta.json, tokenizers/ (copies, when given)
    OUT/checkpoints/LATEST               name of the newest complete checkpoint
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from interleaf import precision
from interleaf.model.data import IGNORE, Batch, PackConfig, PackedStream, TokenCorpus, collate, rank_slice
from interleaf.model.transformer import ModelConfig, Transformer, model_preset
from interleaf.precision import SETTINGS
from interleaf.schemas.tokens import TokenShardInfo, Vocabulary
from interleaf.storage import file_sha256

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "LATEST"
TOKENIZER_DIR = "tokenizers"


@dataclass(kw_only=True)
class TrainConfig:
    preset: str = "tiny"  # model size preset (transformer.PRESETS)
    model_overrides: dict = field(default_factory=dict)  # fields of ModelConfig to override (e.g. dim=32)
    seq_len: int = 256  # tokens per packed row
    batch_size: int = 16  # rows per optimiser step, over all ranks (the global batch)
    steps: int = 1000  # optimiser steps of the whole run (the schedule's length)
    lr: float = 3e-3  # peak learning rate (small models tolerate a high rate with QK-norm)
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50  # linear warmup from 0
    weight_decay: float = 0.1  # AdamW decay on matrices and embeddings, not on norms
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas (GPT-3 / LLaMA)
    grad_clip: float = 1.0  # global gradient-norm clip; 0 disables
    z_loss: float = 0.0  # weight of mean(log Z)^2 (Chameleon uses 1e-5); 0 disables
    text_loss_weight: float = 1.0  # weight of text (and special) targets; 0 masks them out of the loss
    image_loss_weight: float = 1.0  # weight of image-code targets; 0 masks them out of the loss
    caption_dropout: float = 0.1  # probability of dropping the text before an image (for CFG)
    pack_window: int = 256  # documents packed together first-fit
    seed: int = 0  # model init, shuffling, caption dropout
    log_every: int = 10  # steps between progress lines (every step goes to loss.jsonl)
    checkpoint_every: int = 200  # steps between checkpoints (and one at the end)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda"
    compile: bool = False  # torch.compile the model (Inductor, needs a C++ compiler): about 1.7x faster steps on
    # the CPU for the tiny preset after about a minute of compiling (bench/RESULTS.md, model section)
    # "auto": bf16 autocast where the hardware has native bf16 (a GPU from Ampere on; a CPU with AMX or
    # AVX512-BF16, where it is about 2x faster), else fp32: emulated bf16 is about 25x slower (AVX2 CPUs);
    # "bf16" or "fp32" force one (interleaf.precision). Master weights and the optimiser stay fp32.
    precision: str = "auto"

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.seq_len < 8:
            raise ValueError(f"steps, batch_size must be positive and seq_len at least 8: {self}")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1), found {self.caption_dropout}")
        if self.precision not in SETTINGS:
            raise ValueError(f"precision must be one of {', '.join(SETTINGS)}, found {self.precision!r}")
        if self.text_loss_weight < 0 or self.image_loss_weight < 0 or \
                self.text_loss_weight + self.image_loss_weight == 0:
            raise ValueError("loss weights must be non-negative and not both zero")


# ---------------------------------------------------------------- distributed setup

@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the process group torchrun (or a test) described in the environment; a no-op in one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def _all_sum(values: list[float], ctx: Dist, device) -> list[float]:
    if ctx.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# ---------------------------------------------------------------- loss

def lm_loss(logits: torch.Tensor, batch: Batch, vocab: Vocabulary, config: TrainConfig, ctx: Dist,
            ) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted next-token loss normalised by the global number of loss tokens, and per-modality sums.

    Targets in the image-code range are image tokens; everything else (text, specials) counts as text.
    Returns the loss to backpropagate on this rank and the statistics summed over ranks.
    """
    V = logits.shape[-1]
    flat = logits.view(-1, V).float()  # (B*T, V)
    targets = batch.targets.view(-1)  # (B*T,)
    ce = F.cross_entropy(flat, targets, ignore_index=IGNORE, reduction="none")  # (B*T,)
    valid = targets != IGNORE
    lo = vocab.image_codebook_offset
    is_image = valid & (targets >= lo) & (targets < lo + vocab.image_codebook_size)
    is_text = valid & ~is_image
    weight = is_text * config.text_loss_weight + is_image * config.image_loss_weight  # (B*T,)
    counted = weight > 0
    z = torch.logsumexp(flat, dim=-1)  # (B*T,) log partition function
    ce_, z_ = ce.detach(), z.detach()
    local = [float((ce_ * is_text).sum()), float(is_text.sum()), float((ce_ * is_image).sum()),
             float(is_image.sum()), float(counted.sum()), float((z_.pow(2) * counted).sum())]
    text_sum, n_text, image_sum, n_image, n_counted, z_sum = _all_sum(local, ctx, logits.device)
    # DDP averages gradients over ranks, so each rank's share is scaled by the world size.
    scale = ctx.world / max(n_counted, 1.0)
    loss = (ce * weight).sum() * scale
    if config.z_loss:
        loss = loss + config.z_loss * (z.pow(2) * counted).sum() * scale
    stats = {"loss": (text_sum * config.text_loss_weight + image_sum * config.image_loss_weight) / max(n_counted, 1),
             "text_loss": text_sum / n_text if n_text else float("nan"),
             "image_loss": image_sum / n_image if n_image else float("nan"),
             "z_sq": z_sum / max(n_counted, 1), "text_tokens": int(n_text), "image_tokens": int(n_image)}
    return loss, stats


# ---------------------------------------------------------------- optimiser and schedule

def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the peak rate at optimiser step `step` (0-based): linear warmup, then cosine decay."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine


# ---------------------------------------------------------------- checkpoints



def latest_checkpoint(out: str) -> str | None:
    """The newest complete checkpoint directory under a training output directory, or None."""
    marker = os.path.join(out, CHECKPOINTS, LATEST)
    if not os.path.exists(marker):
        return None
    with open(marker) as f:
        path = os.path.join(out, CHECKPOINTS, f.read().strip())
    return path if os.path.exists(os.path.join(path, "model.pt")) else None


def resolve_checkpoint(path: str) -> str:
    """A checkpoint directory from itself or from the training output directory that holds it."""
    if os.path.exists(os.path.join(path, "model.pt")):
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"{path}: no checkpoint (expected model.pt, or {CHECKPOINTS}/{LATEST} of a "
                                "training output directory); train first with `interleaf train`")
    return found


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: str, *, step: int, model: Transformer, optimizer, scheduler, stream: PackedStream,
                    config: TrainConfig, info: TokenShardInfo, tokenizer_files: dict[str, str],
                    chosen: precision.Precision | None = None, shards: str | None = None) -> str:
    """Write checkpoints/step-NNNNNN atomically (a temporary directory renamed into place), then LATEST.
    `shards`: the training shards' path, recorded (absolute) for `interleaf eval`'s binding diagnostics."""
    root = os.path.join(out, CHECKPOINTS)
    name = f"step-{step:06d}"
    final, tmp = os.path.join(root, name), os.path.join(root, f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    torch.save({"config": asdict(model.config), "state_dict": model.state_dict()}, os.path.join(tmp, "model.pt"))
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": _rng_state(), "data": stream.state_dict()}, os.path.join(tmp, "state.pt"))
    copied = {}
    for role, src in tokenizer_files.items():
        os.makedirs(os.path.join(tmp, TOKENIZER_DIR), exist_ok=True)
        rel = os.path.join(TOKENIZER_DIR, f"{role}-{os.path.basename(src)}")
        shutil.copyfile(src, os.path.join(tmp, rel))
        copied[role] = rel
    meta = {"step": step, "model": asdict(model.config), "train": asdict(config),
            "vocabulary": info.vocabulary.to_json(), "tokenizers": info.tokenizers, "tokenizer_files": copied,
            "shard_config": info.config, "producer": info.producer,
            "shards": os.path.abspath(shards) if shards and "://" not in shards else shards}
    if chosen is not None:  # what "auto" resolved to on the machine that trained, and why
        meta["precision"] = {"dtype": chosen.dtype, "reason": chosen.reason}
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    with open(os.path.join(root, LATEST + ".tmp"), "w") as f:
        f.write(name)
    os.replace(os.path.join(root, LATEST + ".tmp"), os.path.join(root, LATEST))
    kept = sorted(d for d in os.listdir(root) if d.startswith("step-"))
    for old in kept[:-config.keep_checkpoints]:
        shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return final


def load_checkpoint(path: str, device: str | torch.device = "cpu") -> tuple[Transformer, dict]:
    """The model of a checkpoint (or of a training output directory's newest one) and its meta.json."""
    path = resolve_checkpoint(path)
    blob = torch.load(os.path.join(path, "model.pt"), map_location=device, weights_only=True)
    model = Transformer(ModelConfig(**blob["config"])).to(device)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
    meta["path"] = path
    return model, meta


def _check_tokenizer_files(files: dict[str, str], info: TokenShardInfo) -> dict[str, str]:
    """Tokenizer files to copy into checkpoints (so that generation needs nothing else), checked against the
    shards' fingerprints. Roles not given are looked up in the shards' producing config (the tokenize
    stage records the tokenizer paths), and used when the file is there with the right sha256."""
    recorded = (info.config or {}).get("tokenize", {})
    found = {"text": recorded.get("text_tokenizer"), "image": recorded.get("image_tokenizer")}
    checked = {}
    for role in sorted(set(files) | set(found)):
        path, given = files.get(role) or found.get(role), bool(files.get(role))
        if not path:
            continue
        if not os.path.isfile(path):
            if given:
                raise FileNotFoundError(f"{role} tokenizer file {path} does not exist")
            log.warning("the shards name %s as their %s tokenizer but it is not here; checkpoints will not carry "
                        "it (pass it to generate)", path, role)
            continue
        want, have = info.tokenizers.get(role), file_sha256(path)
        if want and have != want:
            if given:
                raise ValueError(f"{role} tokenizer {path} has sha256 {have[:12]}..., but the shards were made "
                                 f"with {want[:12]}...; pass the tokenizer file that made these shards")
            log.warning("%s (named by the shards) changed since they were made; not copied", path)
            continue
        checked[role] = path
    return checked


# ---------------------------------------------------------------- the loop

def train(config: TrainConfig, shards: str, out: str, *, stop_after: int | None = None,
          tokenizer_files: dict[str, str] | None = None) -> list[dict]:
    """Train (or resume, when OUT holds a checkpoint) until `config.steps`, or stop after step `stop_after`.

    Returns the step records of this invocation (also appended to OUT/loss.jsonl by rank 0).
    """
    config.validate()
    device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    ctx = init_distributed(device)
    if device == "cuda":
        device = f"cuda:{ctx.local_rank}"
        torch.cuda.set_device(device)
    my_rows = rank_slice(config.batch_size, ctx.rank, ctx.world)

    corpus = TokenCorpus(shards, quiet=not ctx.main)
    vocab = corpus.vocab
    files = _check_tokenizer_files(tokenizer_files or {}, corpus.info)
    model_config = model_preset(config.preset, vocab_size=vocab.size, **config.model_overrides)
    if model_config.max_seq_len < config.seq_len:  # rows longer than the preset's rotary table: extend it
        model_config = replace(model_config, max_seq_len=config.seq_len)
    torch.manual_seed(config.seed)
    model = Transformer(model_config).to(device)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    stream = PackedStream(corpus, PackConfig(seq_len=config.seq_len, window=config.pack_window,
                                             caption_dropout=config.caption_dropout, seed=config.seed))

    step = 0
    resume_from = latest_checkpoint(out)
    if resume_from:
        with open(os.path.join(resume_from, "meta.json")) as f:
            meta = json.load(f)
        if meta["vocabulary"] != vocab.to_json() or meta["tokenizers"] != corpus.info.tokenizers:
            raise ValueError(f"{resume_from} was trained on shards with another vocabulary or tokenizers than "
                             f"{shards}; use a new --out directory")
        blob = torch.load(os.path.join(resume_from, "model.pt"), map_location=device, weights_only=True)
        if blob["config"] != asdict(model_config):
            raise ValueError(f"{resume_from} holds a model {blob['config']}, this run builds {asdict(model_config)}")
        model.load_state_dict(blob["state_dict"])
        state = torch.load(os.path.join(resume_from, "state.pt"), map_location="cpu", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stream.load_state_dict(state["data"])
        _set_rng_state(state["rng"])
        step = state["step"]
        if ctx.main:
            log.info("resumed from %s at step %d", resume_from, step)
    elif ctx.main:
        log.info("model %s: %.2fM parameters; %d steps of %d rows x %d tokens on %s (%d rank%s)", config.preset,
                 model.num_params() / 1e6, config.steps, config.batch_size, config.seq_len, device, ctx.world,
                 "s" if ctx.world > 1 else "")

    net = model
    if ctx.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[ctx.local_rank] if "cuda" in device
                                                        else None)
    if config.compile:
        net = torch.compile(net)
    chosen = precision.choose(config.precision, device, purpose="training", quiet=not ctx.main)
    autocast = precision.autocast(chosen, device)
    log_path = os.path.join(out, "loss.jsonl")
    if ctx.main:
        os.makedirs(out, exist_ok=True)
        _truncate_log(log_path, step)

    last = min(config.steps, stop_after) if stop_after is not None else config.steps
    records: list[dict] = []
    started, tokens_seen = time.perf_counter(), 0
    model.train()
    while step < last:
        batch = collate(stream.next_rows(config.batch_size)[my_rows]).to(device)
        with autocast:
            logits = net(batch.tokens, positions=batch.positions, doc_ids=batch.doc_ids, cells=batch.cells)
        loss, stats = lm_loss(logits, batch, vocab, config, ctx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or float("inf"))
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        step += 1
        tokens_seen += config.batch_size * config.seq_len
        record = {"step": step, "epoch": stream.cursor.epoch, **stats, "grad_norm": float(grad_norm), "lr": lr,
                  "elapsed_s": time.perf_counter() - started}
        records.append(record)
        if ctx.main:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if step % config.log_every == 0 or step == last:
                rate = tokens_seen / record["elapsed_s"]
                eta = (last - step) * config.batch_size * config.seq_len / rate
                log.info("step %d/%d (epoch %d) loss %.4f (text %.4f, image %.4f) lr %.2e %.0f tok/s eta %.0fs",
                         step, config.steps, record["epoch"], stats["loss"], stats["text_loss"], stats["image_loss"],
                         lr, rate, eta)
        if step % config.checkpoint_every == 0 or step == last:
            if ctx.main:
                path = save_checkpoint(out, step=step, model=model, optimizer=optimizer, scheduler=scheduler,
                                       stream=stream, config=config, info=corpus.info, tokenizer_files=files,
                                       chosen=chosen, shards=shards)
                log.info("checkpoint %s", path)
            if ctx.world > 1:
                dist.barrier()
    return records


def _truncate_log(path: str, step: int) -> None:
    """Drop records past the resumed step (written after the last checkpoint by a run that was killed)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path, "w") as f:
        f.writelines(kept)


def read_loss_log(out: str) -> list[dict]:
    with open(os.path.join(out, "loss.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
