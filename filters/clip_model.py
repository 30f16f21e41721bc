"""The CLIP model without a decision: its configuration, registering and loading open_clip architectures
and checkpoints, and preprocessing images and texts into the model's inputs. Scoring and the keep/drop
decision are in filters.clip.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from interleaf import precision
from interleaf.storage import file_sha256

log = logging.getLogger(__name__)

# The tiny architecture the in-repo trainer uses (model/clip_train.py): ENVIRONMENT.md measured a
# 7.2M-parameter model of this shape training, saving and reloading by checkpoint path on 2 CPU cores.
TINY_CLIP_NAME = "interleaf-tiny-clip"
CHECKPOINT_META_KEY = "interleaf"  # extra checkpoint key written by clip_train (model config, calibration)


class ClipModelError(ValueError):
    """A CLIP model that cannot be built or loaded as configured."""



@dataclass(frozen=True, kw_only=True)
class ClipModelConfig:
    """Which open_clip model, where it runs, and how inference is batched."""

    model_name: str = "ViT-B-32"  # an open_clip architecture (open_clip.list_models()) or TINY_CLIP_NAME
    # A pretrained tag ("laion2b_s34b_b79k", see open_clip.list_pretrained()) or a local checkpoint file
    # path (what clip_train saves); None builds random weights (tests and benchmarks only).
    pretrained: str | None = None
    device: str = "cpu"  # "cpu", "cuda" or "cuda:N"
    # open_clip precision, or "auto": bf16 where the device has native bf16 (a GPU from Ampere on, a CPU with
    # AMX or AVX512-BF16), else fp32 (interleaf.precision). fp32 by default: bf16 was slower than fp32 for
    # CLIP on the CPUs measured (ViT-B-32, 2 cores, 2026-11), and scores then do not depend on the CPU.
    precision: str = "fp32"
    # torch.set_num_threads in each worker process; None keeps torch's default (one per core). Beam runs
    # several DoFn threads per process: they share one model, and torch's intra-op pool, through this. On
    # shared machines whose cores are busy, 1 ran 10-20x faster than 2 (model/clip_train.py).
    num_threads: int | None = None
    # Inference batch bounds. 32 is where ViT-B-32 fp32 was measured on 2 cores (23 images/s,
    # ENVIRONMENT.md); larger batches only add latency on a CPU, a GPU wants 256 or more.
    max_batch_size: int = 32
    # Smallest batch Beam's BatchElements may emit; None fixes batches at max_batch_size (a batch job wants
    # full batches, and BatchElements' adaptive sizing otherwise starts at 1 and grows).
    min_batch_size: int | None = None
    cache_dir: str | None = None  # open_clip's download cache for pretrained tags

    @property
    def is_checkpoint(self) -> bool:
        """True when `pretrained` names a file rather than a tag (tags never contain a path separator)."""
        p = self.pretrained
        return p is not None and (os.path.sep in p or os.path.isfile(p)
                                  or p.endswith((".pt", ".pth", ".bin", ".safetensors")))

    def validate(self) -> None:
        if not self.model_name:
            raise ClipModelError("model_name is empty; give an open_clip architecture such as 'ViT-B-32'")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ClipModelError(f"device must be 'cpu', 'cuda' or 'cuda:N', found {self.device!r}")
        if self.precision not in ("auto", "fp32", "fp16", "bf16", "pure_fp16", "pure_bf16"):
            raise ClipModelError(f"precision must be auto, fp32, fp16, bf16, pure_fp16 or pure_bf16, found "
                                 f"{self.precision!r}")
        if self.device == "cpu" and "fp16" in self.precision:
            raise ClipModelError("fp16 needs a GPU; use precision='fp32' (or 'bf16') on the CPU")
        if self.num_threads is not None and self.num_threads < 1:
            raise ClipModelError(f"num_threads must be at least 1 or None, found {self.num_threads}")
        if self.max_batch_size < 1 or not 1 <= (self.min_batch_size or 1) <= self.max_batch_size:
            raise ClipModelError(f"need 1 <= min_batch_size <= max_batch_size, found {self.min_batch_size} "
                                 f"and {self.max_batch_size}")
        if self.is_checkpoint and not os.path.isfile(self.pretrained):
            raise ClipModelError(f"checkpoint {self.pretrained} does not exist; pretrained must be an open_clip "
                                 "tag or a local checkpoint file (copy a remote one to local disk first)")

    def model_id(self) -> str:
        """What produced an embedding, written into image records and documents: the architecture and the
        weights (the tag, or the checkpoint's file name and content hash; "random" for random weights)."""
        if self.pretrained is None:
            return f"{self.model_name}:random"
        if self.is_checkpoint:
            return f"{self.model_name}:{os.path.basename(self.pretrained)}@{file_sha256(self.pretrained)[:12]}"
        return f"{self.model_name}:{self.pretrained}"



# ---------------------------------------------------------------- model configs and loading


def tiny_clip_config(*, embed_dim: int = 64, image_size: int = 32, patch_size: int = 8, width: int = 128,
                     layers: int = 2, text_width: int = 128, text_layers: int = 2,
                     context_length: int = 32) -> dict:
    """An open_clip model config for a tiny CLIP (7.2M parameters at the defaults, 6.3M of them the token
    embedding of open_clip's 49,408-token BPE vocabulary)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": layers, "width": width, "patch_size": patch_size,
                       "head_width": 32},
        "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": text_width,
                     "heads": max(1, text_width // 32), "layers": text_layers},
    }


_REGISTER_LOCK = threading.Lock()


def register_model_config(name: str, model_cfg: dict) -> None:
    """Make `name` an open_clip architecture (open_clip.add_model_config), idempotently.

    open_clip reads configs from JSON files named after the model, so the config is written once to a
    content-addressed file under the temporary directory. Registering the same config again does nothing;
    registering another config under a taken name is an error.
    """
    import open_clip

    with _REGISTER_LOCK:
        existing = open_clip.get_model_config(name)
        if existing is not None:
            if _canonical(existing) != _canonical(model_cfg):
                raise ClipModelError(f"open_clip already has a model named {name!r} with another config; choose "
                                     "another name for this one")
            return
        blob = json.dumps(model_cfg, sort_keys=True).encode("utf-8")
        directory = os.path.join(tempfile.gettempdir(), "interleaf-open_clip-configs",
                                 hashlib.sha256(blob).hexdigest()[:16])
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"{name}.json")
        if not os.path.exists(path):
            fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
        open_clip.add_model_config(path)
        log.debug("registered open_clip config %s from %s", name, path)


def _canonical(cfg: dict) -> str:
    return json.dumps(cfg, sort_keys=True)


def checkpoint_metadata(path: str) -> dict:
    """What clip_train stored beside the weights ({} for other checkpoints): model_name, model_cfg, threshold..."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise ClipModelError(f"cannot read checkpoint {path}: {e}") from None
    meta = ckpt.get(CHECKPOINT_META_KEY) if isinstance(ckpt, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def ensure_model_config(config: ClipModelConfig) -> None:
    """Register the architecture when open_clip does not ship it: the tiny preset, or the config a
    clip_train checkpoint carries. Raises ClipModelError for an unknown name."""
    import open_clip

    if open_clip.get_model_config(config.model_name) is not None:
        return
    if config.is_checkpoint:
        meta = checkpoint_metadata(config.pretrained)
        if meta.get("model_cfg") and meta.get("model_name") == config.model_name:
            register_model_config(config.model_name, meta["model_cfg"])
            return
    if config.model_name == TINY_CLIP_NAME:
        register_model_config(TINY_CLIP_NAME, tiny_clip_config())
        return
    raise ClipModelError(f"unknown open_clip model {config.model_name!r}: not one of open_clip.list_models() "
                         f"({len(open_clip.list_models())} names, e.g. ViT-B-32, ViT-L-14) and no config in the "
                         "checkpoint")


def image_preprocess_cfg(config: ClipModelConfig) -> dict:
    """The preprocessing open_clip will attach to the model (size, mean, std, interpolation, resize mode),
    resolved without building the model, so that workers can preprocess before batching."""
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    ensure_model_config(config)
    cfg = asdict(PreprocessCfg())
    if config.pretrained is not None and not config.is_checkpoint:
        tag_cfg = open_clip.get_pretrained_cfg(config.model_name, config.pretrained)
        if not tag_cfg:
            raise ClipModelError(
                f"{config.pretrained!r} is neither a checkpoint file nor a pretrained tag of {config.model_name} "
                f"(tags: {open_clip.list_pretrained_tags_by_model(config.model_name)})")
        cfg = merge_preprocess_dict(cfg, tag_cfg)
    size = open_clip.get_model_config(config.model_name)["vision_cfg"].get("image_size", cfg["size"])
    cfg["size"] = size
    return _normalised_pp(cfg)


def _normalised_pp(cfg: dict) -> dict:
    size = cfg["size"]
    return {"size": tuple(size) if isinstance(size, (list, tuple)) else (size, size),
            "mean": tuple(float(v) for v in cfg["mean"]), "std": tuple(float(v) for v in cfg["std"]),
            "interpolation": cfg.get("interpolation", "bicubic"), "resize_mode": cfg.get("resize_mode", "shortest"),
            "fill_color": cfg.get("fill_color", 0)}


def image_transform(config: ClipModelConfig) -> Callable:
    """PIL image -> float tensor (3, H, W), as open_clip's eval transform for this model."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    pp = image_preprocess_cfg(config)
    size = pp["size"][0] if pp["size"][0] == pp["size"][1] else pp["size"]
    return image_transform_v2(PreprocessCfg(**{**pp, "size": size}), is_train=False)


def make_tokenizer(config: ClipModelConfig):
    """open_clip's tokenizer for the model: list[str] -> LongTensor (N, context_length)."""
    import open_clip

    ensure_model_config(config)
    return open_clip.get_tokenizer(config.model_name, cache_dir=config.cache_dir)


def _padded(rows: np.ndarray) -> np.ndarray:
    """The batch with its last row repeated up to a multiple of precision.ROW_MULTIPLE rows, so that each
    embedding is the same bits whatever shares its batch."""
    rows = np.ascontiguousarray(rows)
    missing = precision.batch_padding(len(rows))
    return np.concatenate([rows, np.repeat(rows[-1:], missing, axis=0)]) if missing else rows


@dataclass
class LoadedClip:
    """A loaded model with what is needed to feed it; shared by every thread of a worker process."""

    model: object  # open_clip CLIP, in eval mode on `device`
    device: object  # torch.device
    dtype: object  # torch dtype of its weights (inputs are cast to it)
    model_id: str
    tokenizer: object = None  # open_clip's tokenizer for the model (encode_strings)

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) preprocessed float32 -> (B, D) float32, L2-normalised."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(_padded(pixels)).to(self.device, dtype=self.dtype)
            return self.model.encode_image(x, normalize=True).float().cpu().numpy()[:len(pixels)]

    def encode_texts(self, tokens: np.ndarray) -> np.ndarray:
        """(B, context_length) int64 token ids -> (B, D) float32, L2-normalised."""
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(_padded(tokens)).to(self.device)
            return self.model.encode_text(t, normalize=True).float().cpu().numpy()[:len(tokens)]

    def encode_strings(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (B, D) float32, L2-normalised; tokenized as one batch (open_clip's BPE truncates each)."""
        return self.encode_texts(tokenize(self.tokenizer, texts))


def load_clip(config: ClipModelConfig, *, model_id: str | None = None) -> LoadedClip:
    """Build the model and load its weights: a pretrained tag (downloaded by open_clip unless cached; set
    HF_HUB_OFFLINE=1 where there is no network, or it retries a hub for about 47 s), a checkpoint file, or
    random weights. Checks that the preprocessing workers apply (image_preprocess_cfg) is the model's."""
    import open_clip
    import torch

    config.validate()
    ensure_model_config(config)
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ClipModelError(f"device {config.device!r} asked for but torch sees no CUDA device; use device='cpu'")
    expected_pp = image_preprocess_cfg(config)
    resolved = config.precision
    if resolved in precision.SETTINGS:  # "auto" is decided here; "bf16" / "fp32" pass through, logged
        resolved = precision.choose(resolved, config.device, purpose="CLIP inference").dtype
    try:
        model = open_clip.create_model(config.model_name, pretrained=config.pretrained, precision=resolved,
                                       device=config.device, cache_dir=config.cache_dir,
                                       require_pretrained=config.pretrained is not None)
    except RuntimeError as e:
        raise ClipModelError(f"cannot load open_clip {config.model_name} with pretrained={config.pretrained!r}: "
                             f"{e}") from None
    model.eval()
    actual_pp = _normalised_pp(open_clip.get_model_preprocess_cfg(model))
    if actual_pp != expected_pp:
        raise ClipModelError(f"{config.model_name}: the model's preprocessing {actual_pp} differs from the one "
                             f"resolved for workers {expected_pp}; report this with the model name and tag")
    dtype = next(model.parameters()).dtype
    log.info("loaded CLIP %s (%.1fM parameters) on %s, %s", config.model_name,
             sum(p.numel() for p in model.parameters()) / 1e6, config.device, dtype)
    return LoadedClip(model=model, device=torch.device(config.device), dtype=dtype,
                      model_id=model_id or config.model_id(), tokenizer=make_tokenizer(config))




# ---------------------------------------------------------------- inputs


def preprocess_image(data: bytes, transform: Callable) -> np.ndarray:
    """Image bytes -> (3, H, W) float32 at the model's size, whatever the stored size. Raises
    interleaf.imagefile.ImageDecodeError."""
    from interleaf.imagefile import decode

    return transform(decode(data, "RGB")).numpy().astype(np.float32, copy=False)


def tokenize(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """Texts -> (N, context_length) int64; open_clip truncates each to its context."""
    return tokenizer(list(texts)).numpy().astype(np.int64, copy=False)
