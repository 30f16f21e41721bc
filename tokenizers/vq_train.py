"""Training the VQ image tokenizer (tokenizers/vq.py holds the model, its checkpoints and the image <->
tensor conversions): the reconstruction, codebook and commitment losses, a cosine schedule, resumable
checkpoints, and held-out reconstruction quality (MSE, PSNR, codebook usage, perplexity)."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from interleaf import precision
from interleaf.tokenizers.vq import VQModel, atomic_torch_save, checkpoint_payload

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class VQTrainConfig:
    steps: int = 1500  # optimizer steps in total (a resumed run continues up to this)
    batch_size: int = 32  # images per step
    lr: float = 2e-3  # Adam peak learning rate (LlamaGen: 1e-4 at batch 128 on ImageNet; tiny models take
    # more: 2e-3 reaches 27 dB on shapes in 600 steps)
    warmup_steps: int = 50  # linear warm-up, then cosine decay to lr / 10
    betas: tuple[float, float] = (0.9, 0.95)  # Adam betas (LlamaGen: 0.9, 0.95)
    hflip: bool = True  # random horizontal flips
    log_every: int = 100  # steps between progress log lines
    checkpoint_every: int = 500  # steps between training checkpoints (0: only at the end)
    eval_batch_size: int = 128  # images per batch when evaluating
    seed: int = 0  # batch order and flips
    num_threads: int | None = None  # torch.set_num_threads for training (None: leave as is)
    # "fp32" (default), "auto" or "bf16": interleaf.precision's rule (bf16 autocast only where the hardware
    # has native bf16 when "auto"). fp32 by default: the tiny VQ's steps are small convolutions, its codebook
    # distances want fp32, and a bf16 run was never measured to help it.
    precision: str = "fp32"


@dataclass
class VQTrainResult:
    steps: int  # optimizer steps done in total
    seconds: float  # wall time of this call
    train: dict[str, float] = field(default_factory=dict)  # last logged training losses
    held_out: dict[str, float] = field(default_factory=dict)  # evaluate_vq on the held-out images
    restarted_codes: int = 0  # dead codes restarted during this call


@torch.no_grad()
def evaluate_vq(model: VQModel, images: Tensor, *, batch_size: int = 128) -> dict[str, float]:
    """Reconstruction error and codebook usage on `images` (N, 3, H, W) in [-1, 1].

    mse: mean squared error with pixels in [0, 1]; psnr: mean over images of 10 log10(1 / mse_image);
    usage: fraction of the codebook used at least once; perplexity: exp(entropy) of the code histogram.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sq, psnr, counts = [], [], torch.zeros(model.codebook_size, dtype=torch.long)
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device)
        codes = model.encode(x)
        rec = model.decode(codes)
        err = (((rec + 1) / 2 - (x + 1) / 2) ** 2).flatten(1).mean(1)  # (B,) in [0, 1] pixel units
        sq.append(err.cpu())
        psnr.append(10 * torch.log10(1.0 / err.clamp_min(1e-10)).cpu())
        counts += torch.bincount(codes.flatten().cpu(), minlength=model.codebook_size)
    model.train(was_training)
    p = counts.float() / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"mse": float(torch.cat(sq).mean()), "psnr": float(torch.cat(psnr).mean()),
            "usage": float((counts > 0).float().mean()), "codes_used": int((counts > 0).sum()),
            "perplexity": float(entropy.exp()), "images": len(images)}


def _lr_at(step: int, c: VQTrainConfig) -> float:
    if step < c.warmup_steps:
        return c.lr * (step + 1) / c.warmup_steps
    progress = (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps)
    return c.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_vq(model: VQModel, images: Tensor, *, config: VQTrainConfig, held_out: Tensor | None = None,
             checkpoint: str | None = None, resume: bool = True) -> VQTrainResult:
    """Train `model` on `images` (N, 3, H, W) in [-1, 1] for config.steps steps in total.

    Progress goes to the log every config.log_every steps. With `checkpoint`, the model, optimizer, step
    and batch-sampler state are written there every config.checkpoint_every steps and at the end
    (atomically); with resume=True an existing checkpoint is loaded first and training continues from its
    step, drawing the same batches an uninterrupted run would have. The checkpoint is also a valid
    load_vq file. Evaluates on `held_out` at the end (MSE, PSNR, codebook usage).
    """
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"expected a non-empty (N, 3, H, W) image tensor, found {tuple(images.shape)}")
    model._check(images[:1])
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = next(model.parameters()).device
    chosen = precision.choose(config.precision, device.type, purpose="VQ training")
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas)
    gen = torch.Generator().manual_seed(config.seed)
    step = 0
    if checkpoint and resume and os.path.exists(checkpoint):
        ckpt = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])  # dead-code restarts draw from the global generator
        step = int(ckpt["step"])
        log.info("resumed VQ training from %s at step %d", checkpoint, step)

    def save():
        model.sha256 = atomic_torch_save({
            **checkpoint_payload(model), "optimizer": opt.state_dict(), "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(), "step": step}, checkpoint)

    model.train()
    restarted0 = model.quantize.restarted
    start = window = time.perf_counter()
    last: dict[str, float] = {}
    sums: dict[str, float] = {}
    n_sum = 0
    while step < config.steps:
        idx = torch.randint(0, len(images), (config.batch_size,), generator=gen)
        flip = torch.rand(config.batch_size, generator=gen) < 0.5
        x = images[idx]
        if config.hflip:
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x = x.to(device)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, config)
        with precision.autocast(chosen, device.type):
            rec, losses, _ = model(x)
        losses["rec"] = F.mse_loss(rec.float(), x)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        n_sum += 1
        if step % config.log_every == 0 or step == config.steps:
            last = {k: v / n_sum for k, v in sums.items()}
            now = time.perf_counter()
            used = int((model.quantize.usage > 0.1 / model.codebook_size).sum())
            log.info("vq step %d/%d  %s  codes in use %d/%d  %.1f steps/s", step, config.steps,
                     "  ".join(f"{k}={v:.4f}" for k, v in last.items()), used, model.codebook_size,
                     n_sum / max(1e-9, now - window))
            sums, n_sum, window = {}, 0, now
        if checkpoint and config.checkpoint_every and step % config.checkpoint_every == 0:
            save()
    if checkpoint:
        save()
    result = VQTrainResult(steps=step, seconds=time.perf_counter() - start, train=last,
                           restarted_codes=model.quantize.restarted - restarted0)
    if held_out is not None and len(held_out):
        result.held_out = evaluate_vq(model, held_out, batch_size=config.eval_batch_size)
        log.info("vq held-out: mse %.5f  psnr %.2f dB  codebook usage %.1f%% (%d codes)  perplexity %.1f",
                 result.held_out["mse"], result.held_out["psnr"], 100 * result.held_out["usage"],
                 result.held_out["codes_used"], result.held_out["perplexity"])
    model.eval()
    return result
