"""The VQ image tokenizer, following LlamaGen's design (Sun et al. 2024, "Autoregressive Model Beats
Diffusion", section 2.1; github.com/FoundationVision/LlamaGen tokenizer/tokenizer_image/vq_model.py).

An image (B, 3, H, W) in [-1, 1] goes through a convolutional encoder (ResNet blocks, stride-2 downsampling,
attention at the lowest resolution) to latents (B, D, h, w) with h = H / 2^(levels-1); each latent vector is
l2-normalised and replaced by its nearest entry of an l2-normalised codebook of K vectors of low dimension
D = 8 (LlamaGen, table 2: D = 8 and l2 norm raise codebook usage to 97% and lower rFID). The decoder mirrors
the encoder. Training loss: pixel MSE + codebook loss + beta * commitment loss (beta 0.25, as LlamaGen and
VQ-VAE), straight-through gradients; codebook usage is tracked as an exponential moving average and codes
that fall out of use are restarted from encoder outputs of the current batch (as in Jukebox, Dhariwal et al.
2020, section 3.3), which keeps usage high on small data. Perceptual (LPIPS) and adversarial losses, which
LlamaGen adds for natural images, need pretrained VGG weights that cannot be downloaded here; they are not
implemented (the shapes the tiny preset trains on need neither).

Module names follow LlamaGen's (encoder.conv_blocks.N.res.M, quantize.embedding, quant_conv,
post_quant_conv, ...), so a LlamaGen-layout state dict loads through load_vq(path, config=...).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interleaf.storage import file_sha256
from interleaf.tokenizers.image import ImageTokenizerInfo

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "interleaf.vq"
CHECKPOINT_VERSION = 1
# keys of LlamaGen checkpoints that hold no weights this model needs (a usage log of the last 65,536 codes)
_FOREIGN_KEYS = ("quantize.codebook_used",)


@dataclass(kw_only=True)
class VQConfig:
    image_size: int = 32  # H = W of the images the model encodes (others are resized by image_to_tensor)
    in_channels: int = 3  # RGB
    channels: int = 16  # width of the first level; level i has channels * channel_mult[i]
    channel_mult: tuple[int, ...] = (1, 2, 2)  # one entry per resolution; downsampling is 2^(len - 1)
    num_res_blocks: int = 1  # ResNet blocks per level (LlamaGen: 2)
    attention: bool = True  # self-attention at the lowest resolution and in the middle (LlamaGen: yes)
    z_channels: int = 32  # encoder output channels before the 1x1 projection to the codebook dimension
    norm_groups: int = 4  # GroupNorm groups (LlamaGen: 32, with 128 channels)
    dropout: float = 0.0  # in ResNet blocks
    codebook_size: int = 256  # K, number of codes
    codebook_embed_dim: int = 8  # D, code vector dimension (LlamaGen: 8)
    codebook_l2_norm: bool = True  # l2-normalise latents and codes (cosine-similarity lookup; LlamaGen: yes)
    commit_loss_beta: float = 0.25  # weight of the commitment loss (VQ-VAE, LlamaGen: 0.25)
    entropy_loss_ratio: float = 0.0  # weight of LlamaGen's optional entropy loss on code assignments
    usage_decay: float = 0.99  # EMA decay of the per-code usage tracked during training
    dead_code_fraction: float = 0.03  # a code used less than this fraction of the uniform rate is dead
    restart_every: int = 25  # training steps between dead-code restarts (0: never restart)

    def __post_init__(self):
        self.channel_mult = tuple(self.channel_mult)
        if self.image_size % self.downsample:
            raise ValueError(f"image_size {self.image_size} is not a multiple of the downsampling "
                             f"{self.downsample} that channel_mult {self.channel_mult} implies")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, found {self.codebook_size}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.downsample
        return side, side


def vq_preset(name: str) -> VQConfig:
    """"tiny": 32x32 images, 8x8 codes of 256, 0.27M parameters; 600 steps on one loaded CPU core take
    2.5 minutes and reach 27 dB PSNR on held-out shape scenes (tests/tokenizers/test_vq.py).
    "base": LlamaGen's VQ-16 architecture (256x256, downsampling 16, 16x16 codes) with 8,192 codes; for a
    GPU."""
    if name == "tiny":
        return VQConfig(image_size=32, channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attention=True,
                        z_channels=32, norm_groups=4, codebook_size=256, codebook_embed_dim=8)
    if name == "base":
        return VQConfig(image_size=256, channels=128, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                        attention=True, z_channels=256, norm_groups=32, codebook_size=8192,
                        codebook_embed_dim=8, restart_every=0)
    raise ValueError(f"unknown VQ preset {name!r}; expected 'tiny' or 'base'")


# ---------------------------------------------------------------- building blocks


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=math.gcd(groups, channels), num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:  # (B, cin, h, w) -> (B, cout, h, w)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions, with a residual."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, h, w)
        b, c, hh, ww = x.shape
        n = self.norm(x)
        q, k, v = (m(n).reshape(b, 1, c, hh * ww).transpose(-1, -2) for m in (self.q, self.k, self.v))
        h = F.scaled_dot_product_attention(q, k, v)  # (B, 1, hw, C)
        return x + self.proj_out(h.transpose(-1, -2).reshape(b, c, hh, ww))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, h, w) -> (B, C, h/2, w/2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, as taming-transformers / LlamaGen


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, h, w) -> (B, C, 2h, 2w)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, c: VQConfig):
        super().__init__()
        g, levels = c.norm_groups, len(c.channel_mult)
        self.conv_in = nn.Conv2d(c.in_channels, c.channels, 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        cin = c.channels
        for level, mult in enumerate(c.channel_mult):
            block = nn.Module()
            block.res, block.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(c.num_res_blocks):
                block.res.append(ResnetBlock(cin, c.channels * mult, g, c.dropout))
                cin = c.channels * mult
                if c.attention and level == levels - 1:
                    block.attn.append(AttnBlock(cin, g))
            if level != levels - 1:
                block.downsample = Downsample(cin)
            self.conv_blocks.append(block)
        self.mid = nn.ModuleList([ResnetBlock(cin, cin, g, c.dropout)]
                                 + ([AttnBlock(cin, g)] if c.attention else [])
                                 + [ResnetBlock(cin, cin, g, c.dropout)])
        self.norm_out = _norm(cin, g)
        self.conv_out = nn.Conv2d(cin, c.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, z_channels, h, w)
        h = self.conv_in(x)
        for block in self.conv_blocks:
            for i, res in enumerate(block.res):
                h = res(h)
                if len(block.attn):
                    h = block.attn[i](h)
            if hasattr(block, "downsample"):
                h = block.downsample(h)
        for m in self.mid:
            h = m(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, c: VQConfig):
        super().__init__()
        g, levels = c.norm_groups, len(c.channel_mult)
        cin = c.channels * c.channel_mult[-1]
        self.conv_in = nn.Conv2d(c.z_channels, cin, 3, padding=1)
        self.mid = nn.ModuleList([ResnetBlock(cin, cin, g, c.dropout)]
                                 + ([AttnBlock(cin, g)] if c.attention else [])
                                 + [ResnetBlock(cin, cin, g, c.dropout)])
        self.conv_blocks = nn.ModuleList()
        for level in reversed(range(levels)):
            block = nn.Module()
            block.res, block.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(c.num_res_blocks + 1):
                block.res.append(ResnetBlock(cin, c.channels * c.channel_mult[level], g, c.dropout))
                cin = c.channels * c.channel_mult[level]
                if c.attention and level == levels - 1:
                    block.attn.append(AttnBlock(cin, g))
            if level != 0:
                block.upsample = Upsample(cin)
            self.conv_blocks.append(block)
        self.norm_out = _norm(cin, g)
        self.conv_out = nn.Conv2d(cin, c.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:  # (B, z_channels, h, w) -> (B, 3, H, W)
        h = self.conv_in(z)
        for m in self.mid:
            h = m(h)
        for block in self.conv_blocks:
            for i, res in enumerate(block.res):
                h = res(h)
                if len(block.attn):
                    h = block.attn[i](h)
            if hasattr(block, "upsample"):
                h = block.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-code lookup in an l2-normalised codebook, with usage tracking and dead-code restart."""

    def __init__(self, c: VQConfig):
        super().__init__()
        self.c = c
        self.embedding = nn.Embedding(c.codebook_size, c.codebook_embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / c.codebook_size, 1.0 / c.codebook_size)
        if c.codebook_l2_norm:
            self.embedding.weight.data = F.normalize(self.embedding.weight.data, dim=-1)
        # fraction of assignments each code received, EMA over training steps (uniform at start)
        self.register_buffer("usage", torch.full((c.codebook_size,), 1.0 / c.codebook_size))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.restarted = 0  # codes restarted so far in this process (for logging)

    def codebook(self) -> Tensor:  # (K, D)
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.c.codebook_l2_norm else w

    def lookup(self, z: Tensor) -> Tensor:
        """Indices (N,) of the nearest codes to latents z (N, D)."""
        e = self.codebook()
        if self.c.codebook_l2_norm:
            z = F.normalize(z, dim=-1)
        # |z - e|^2 = |z|^2 + |e|^2 - 2 z.e; |z|^2 is constant per row
        d = (e * e).sum(-1)[None, :] - 2 * z @ e.t()  # (N, K)
        return d.argmin(-1)

    def forward(self, z: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """z (B, D, h, w) -> quantised z (B, D, h, w) with straight-through gradients, losses, codes
        (B, h, w)."""
        b, d, hh, ww = z.shape
        z = z.permute(0, 2, 3, 1).reshape(-1, d)  # (N, D)
        if self.c.codebook_l2_norm:
            z = F.normalize(z, dim=-1)
        e = self.codebook()
        logits = 2 * z @ e.t() - (e * e).sum(-1)[None, :]  # (N, K), larger is nearer
        idx = logits.argmax(-1)  # (N,)
        zq = e[idx]  # (N, D)
        losses = {}
        if self.training:
            losses["codebook"] = F.mse_loss(zq, z.detach())
            losses["commit"] = self.c.commit_loss_beta * F.mse_loss(z, zq.detach())
            if self.c.entropy_loss_ratio:
                losses["entropy"] = self.c.entropy_loss_ratio * _entropy_loss(logits)
            self._track(idx, z.detach())
        zq = z + (zq - z).detach()  # straight-through estimator
        return zq.reshape(b, hh, ww, d).permute(0, 3, 1, 2), losses, idx.reshape(b, hh, ww)

    @torch.no_grad()
    def _track(self, idx: Tensor, z: Tensor) -> None:
        k = self.c.codebook_size
        counts = torch.bincount(idx, minlength=k).float() / idx.numel()
        self.usage.mul_(self.c.usage_decay).add_(counts, alpha=1 - self.c.usage_decay)
        self.steps += 1
        if self.c.restart_every and int(self.steps) % self.c.restart_every == 0:
            dead = (self.usage < self.c.dead_code_fraction / k).nonzero().squeeze(-1)
            if len(dead):
                # restart dead codes at latents of this batch (random ones, with a little noise)
                pick = torch.randint(0, z.shape[0], (len(dead),), device=z.device)
                new = z[pick] + 0.01 * torch.randn_like(z[pick])
                if self.c.codebook_l2_norm:
                    new = F.normalize(new, dim=-1)
                self.embedding.weight.data[dead] = new
                self.usage[dead] = 1.0 / k
                self.restarted += len(dead)

    def entries(self, codes: Tensor) -> Tensor:
        """Code vectors (B, D, h, w) of codes (B, h, w)."""
        return self.codebook()[codes].permute(0, 3, 1, 2)


def _entropy_loss(logits: Tensor, temperature: float = 0.01) -> Tensor:
    """LlamaGen's entropy loss: sharp per-sample assignments, spread average assignment."""
    logits = logits / temperature
    probs = logits.softmax(-1)
    sample_entropy = -(probs * logits.log_softmax(-1)).sum(-1).mean()
    avg = probs.mean(0)
    return sample_entropy + (avg * torch.log(avg + 1e-5)).sum()


# ---------------------------------------------------------------- the model


class VQModel(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_embed_dim, 1)
        self.quantize = VectorQuantizer(config)
        self.post_quant_conv = nn.Conv2d(config.codebook_embed_dim, config.z_channels, 1)
        self.decoder = Decoder(config)
        self.sha256: str | None = None  # of the checkpoint file it was loaded from or saved to

    @property
    def grid(self) -> tuple[int, int]:
        return self.config.grid

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def fingerprint(self) -> str:
        """sha256 of the checkpoint file (tokenizers.image.ImageTokenizer); empty before saved or loaded."""
        return self.sha256 or ""

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """(B, 3, H, W) -> reconstruction (B, 3, H, W), quantiser losses, codes (B, h, w)."""
        z = self.quant_conv(self.encoder(images))  # (B, D, h, w)
        zq, losses, codes = self.quantize(z)
        return self.decoder(self.post_quant_conv(zq)), losses, codes

    def _check(self, images: Tensor) -> None:
        s = self.config.image_size
        if images.ndim != 4 or images.shape[1] != self.config.in_channels or images.shape[-2:] != (s, s):
            raise ValueError(f"expected images of shape (B, {self.config.in_channels}, {s}, {s}), found "
                             f"{tuple(images.shape)}; resize with tokenizers.image.image_to_tensor(img, {s})")

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) float in [-1, 1] (on any device) -> (B, h, w) long codes on the model's device."""
        self._check(images)
        z = self.quant_conv(self.encoder(images.to(self.quant_conv.weight.device)))  # (B, D, h, w)
        b, d, hh, ww = z.shape
        return self.quantize.lookup(z.permute(0, 2, 3, 1).reshape(-1, d)).reshape(b, hh, ww)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """(B, h, w) codes -> (B, 3, H, W) in [-1, 1]."""
        if codes.ndim != 3 or tuple(codes.shape[1:]) != self.grid:
            raise ValueError(f"expected codes of shape (B, {self.grid[0]}, {self.grid[1]}), found "
                             f"{tuple(codes.shape)}")
        zq = self.quantize.entries(codes.long().to(self.post_quant_conv.weight.device))
        return self.decoder(self.post_quant_conv(zq)).clamp(-1, 1)


# ---------------------------------------------------------------- checkpoints


def atomic_torch_save(obj, path: str) -> str:
    """torch.save to path atomically; returns the sha256 of the written bytes."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".vq-", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        digest = file_sha256(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return digest


def _config_json(config: VQConfig) -> dict:
    d = asdict(config)
    d["channel_mult"] = list(d["channel_mult"])
    return d


def checkpoint_payload(model: VQModel) -> dict:
    """What every VQ checkpoint holds: format, version, config and weights (training adds its state)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": _config_json(model.config),
            "model": state}


def save_vq(model: VQModel, path: str) -> None:
    """The weights and config, for inference (no optimizer state); sets model.sha256."""
    model.sha256 = atomic_torch_save(checkpoint_payload(model), path)


def load_vq(path: str, device: str | torch.device = "cpu", *, config: VQConfig | None = None) -> VQModel:
    """A VQModel from a checkpoint file, in eval mode on `device`.

    Reads interleaf checkpoints (save_vq, or train_vq's training checkpoints), and external ones in
    LlamaGen's layout ({"model": state_dict} or a bare state dict) when `config` describes them, e.g.
    `load_vq("vq_ds16_c2i.pt", config=replace(vq_preset("base"), codebook_size=16384))`.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no VQ checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"{path}: not a torch checkpoint ({e})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, found {type(ckpt).__name__}")  # noqa: TRY004
    if config is None:
        if "config" not in ckpt:
            raise ValueError(f"{path}: no 'config' in the checkpoint (an external one?); pass config= "
                             "describing its architecture, e.g. vq_preset('base')")
        config = VQConfig(**ckpt["config"])
    state = ckpt.get("model", ckpt.get("state_dict", ckpt))
    state = {k: v for k, v in state.items() if k not in _FOREIGN_KEYS}
    model = VQModel(config)
    if "quantize.usage" not in state:  # an external checkpoint has no usage statistics: keep the defaults
        state = {**state, "quantize.usage": model.quantize.usage, "quantize.steps": model.quantize.steps}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes differ
        first = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e)[:300])
        raise ValueError(f"{path}: weights do not fit the config {config}: {first}") from None
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the config {config}: missing {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{'...' if len(unexpected) > 5 else ''}")
    model.sha256 = file_sha256(path)
    return model.to(device).eval()


# ---------------------------------------------------------------- the image tokenizer kind (tokenizers/image.py)


def read_info(path: str, ckpt: dict) -> ImageTokenizerInfo:
    """The VQ checkpoint at `path` (already opened, memory-mapped, as `ckpt`) as an ImageTokenizerInfo."""
    if "config" not in ckpt:
        raise ValueError(f"{path}: no 'config' in the VQ checkpoint (an external one?); load it with "
                         "load_vq(path, config=...) and save_vq it")
    try:
        config = VQConfig(**ckpt["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: the VQ checkpoint's config is not valid: {e}") from None
    return ImageTokenizerInfo(kind=CHECKPOINT_FORMAT, grid=config.grid, codebook_size=config.codebook_size,
                              image_size=config.image_size, fingerprint=file_sha256(path),
                              config=asdict(config))


def load(path: str, device: str | torch.device = "cpu") -> VQModel:
    return load_vq(path, device)
