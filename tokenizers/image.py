"""The image tokenizer interface, its one loader, and the pixels <-> tensor conversions every tokenizer
shares.

Whatever turns an image into discrete codes (the VQ of tokenizers/vq.py, or another) is used through
`ImageTokenizer`: the tokenize stage, the generator, the preview and the eval benchmark know nothing else.
A tokenizer is a file (a torch checkpoint, a dict whose "format" names its kind); `read_info(path)` tells
what it is without loading its weights (the launcher builds the vocabulary from it), `load(path, device)`
gives the tokenizer. A new kind is one module with its `ImageTokenizerKind` and one `register()` call
(tests/test_architecture.py adds one).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from PIL import Image
from torch import Tensor


@runtime_checkable
class ImageTokenizer(Protocol):
    """Images to a grid of discrete codes and back."""

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w): codes per image, in raster order."""

    @property
    def codebook_size(self) -> int:
        """Codes are 0 .. codebook_size - 1."""

    @property
    def image_size(self) -> int:
        """Side in pixels of the square images encode takes and decode gives."""

    @property
    def fingerprint(self) -> str:
        """sha256 of the file it was loaded from: what token shards record."""

    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) float in [-1, 1], on any device -> (B, h, w) long codes."""

    def decode(self, codes: Tensor) -> Tensor:
        """(B, h, w) codes, on any device -> (B, 3, S, S) float in [-1, 1]."""


@dataclass(frozen=True)
class ImageTokenizerInfo:
    """What a tokenizer file describes, read without loading its weights."""

    kind: str  # the registered kind (the file's "format")
    grid: tuple[int, int]
    codebook_size: int
    image_size: int
    fingerprint: str  # sha256 of the file
    config: dict = field(default_factory=dict)  # its settings, JSON-able (written into token shards)


@dataclass(frozen=True)
class ImageTokenizerKind:
    """One kind of image tokenizer: functions named "module:function" (imported when first used)."""

    name: str  # the "format" its files carry
    read_info: str  # (path, checkpoint dict) -> ImageTokenizerInfo
    load: str  # (path, device) -> ImageTokenizer

    def function(self, which: str):
        module, _, name = getattr(self, which).partition(":")
        return getattr(importlib.import_module(module), name)


KINDS: dict[str, ImageTokenizerKind] = {}
DEFAULT_KIND = "interleaf.vq"  # files without a "format" (external LlamaGen-layout checkpoints) are VQs


def register(kind: ImageTokenizerKind) -> ImageTokenizerKind:
    KINDS[kind.name] = kind
    return kind


register(ImageTokenizerKind("interleaf.vq", "interleaf.tokenizers.vq:read_info", "interleaf.tokenizers.vq:load"))


def _checkpoint(path: str) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no image tokenizer at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not an image tokenizer file (not a torch checkpoint: {e})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not an image tokenizer file (a {type(ckpt).__name__}, not a dict)")
    return ckpt


def kind_of(path: str, ckpt: dict | None = None) -> ImageTokenizerKind:
    ckpt = _checkpoint(path) if ckpt is None else ckpt
    name = ckpt.get("format", DEFAULT_KIND)
    if name not in KINDS:
        raise ValueError(f"{path}: image tokenizer kind {name!r} is not registered (known: {', '.join(KINDS)})")
    return KINDS[name]


def read_info(path: str) -> ImageTokenizerInfo:
    """What the tokenizer file at `path` is (grid, codebook size, image size, fingerprint, config), without
    loading its weights. Raises FileNotFoundError or ValueError (one line)."""
    ckpt = _checkpoint(path)
    return kind_of(path, ckpt).function("read_info")(path, ckpt)


def load(path: str, device: str | torch.device = "cpu") -> ImageTokenizer:
    """The image tokenizer in the file at `path`, ready for inference on `device`."""
    return kind_of(path).function("load")(path, device)


# ---------------------------------------------------------------- images <-> tensors


def image_to_tensor(img: Image.Image, size: int) -> Tensor:
    """(3, size, size) float in [-1, 1]: transparency composited on white, centre crop to a square, bicubic
    resize (LlamaGen's preprocessing, without its random crop)."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    img = img.convert("RGB")
    w, h = img.size
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
    return t.permute(2, 0, 1).float().div(127.5).sub(1.0)


def tensor_to_image(t: Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> RGB image."""
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) tensor, found {tuple(t.shape)}")
    arr = ((t.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).contiguous().numpy(), "RGB")

