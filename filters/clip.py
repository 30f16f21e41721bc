"""CLIP scoring of images against their text, without an engine: model loading, preprocessing, the text an
image is compared with, cosine similarities, and the keep/drop decision.

Three decision modes (ClipDecisionConfig.mode):
- "threshold": keep an image whose score reaches a threshold (LAION, DataComp).
- "top_fraction": keep the best-scoring fraction of the corpus (DataComp's CLIP-score baselines); the
  threshold is a corpus quantile, computed by the caller (see `top_fraction_threshold`).
- "assign": MMC4's linear assignment of images to sentences on the image-by-sentence similarity matrix,
  images whose best similarity is below a minimum dropped.

An image's score is the best cosine similarity between its embedding and the texts it is compared with:
its alt text and the kept text nodes in a window around it (`ClipTextConfig`). Each text is embedded on
its own (no concatenation, so a long neighbouring paragraph cannot push the alt text out of CLIP's
77-token context) and the maximum is taken.

Every similarity is stored in `Document.meta["clip"]` (see `score_document`), so a decision can be
re-applied with another mode or threshold without recomputing embeddings (`decide`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from types import MappingProxyType

import numpy as np

from interleaf.schemas.document import DROPPED, KEPT, Document

log = logging.getLogger(__name__)

META_KEY = "clip"  # Document.meta key holding the stored similarities

# Node drop reasons. Scoring-time reasons mean no score could be computed; they stay when a decision is
# re-applied. Decision reasons are undone and recomputed by `decide`.
REASON_NO_IMAGE = "clip_no_image"  # the image node has no sha256 (its fetch failed or never ran)
REASON_IMAGE_MISSING = "clip_image_missing"  # its sha256 is not an "ok" record of the image store
REASON_IMAGE_ERROR = "clip_image_error"  # its bytes could not be decoded, or inference failed on them
REASON_NO_TEXT = "clip_no_text"  # no alt text and no text node in its window (or its texts failed)
REASON_BELOW_THRESHOLD = "clip_below_threshold"  # score under the threshold (or MMC4's minimum)
REASON_UNASSIGNED = "clip_unassigned"  # "assign" mode with unassigned="drop": no sentence left for it
REASON_NO_IMAGES = "clip_no_images"  # document-level: no image kept (only with drop_empty_documents)
DECISION_REASONS = frozenset({REASON_BELOW_THRESHOLD, REASON_UNASSIGNED})

MODES = ("threshold", "top_fraction", "assign")

# Published CLIP-score thresholds (raw cosine similarity, no logit scale) by open_clip architecture.
#   ViT-B-32: 0.28, LAION-5B's English subset filter (Schuhmann et al. 2022, "LAION-5B", section 3.2).
#     DataComp's ViT-B/32 CLIP-score baseline (Gadre et al. 2023) is quoted at 0.25 in this project's
#     brief (not re-checked here): pass threshold=DATACOMP_B32_THRESHOLD to use it.
#   ViT-L-14: 0.15, MMC4's minimum similarity of an image to its document's sentences (Zhu et al. 2023,
#     arXiv:2304.06939, with OpenAI's ViT-L/14).
LAION_B32_THRESHOLD = 0.28
DATACOMP_B32_THRESHOLD = 0.25
MMC4_L14_MIN_SIMILARITY = 0.15
PUBLISHED_THRESHOLDS = MappingProxyType({"ViT-B-32": LAION_B32_THRESHOLD, "ViT-L-14": MMC4_L14_MIN_SIMILARITY})

# DataComp's CLIP-score baselines keep the top 30% of the pool by score (Gadre et al. 2023, Table 3;
# threshold = the score at that rank, baselines/apply_filter.py get_threshold).
DATACOMP_TOP_FRACTION = 0.3

# The tiny architecture the in-repo trainer uses (filters/clip_train.py): ENVIRONMENT.md measured a
# 7.2M-parameter model of this shape training, saving and reloading by checkpoint path on 2 CPU cores.
TINY_CLIP_NAME = "interleaf-tiny-clip"
CHECKPOINT_META_KEY = "interleaf"  # extra checkpoint key written by clip_train (model config, calibration)


class ClipModelError(ValueError):
    """A CLIP model that cannot be built or loaded as configured."""


class ImageDecodeError(ValueError):
    """Image bytes that PIL cannot decode."""


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True, kw_only=True)
class ClipModelConfig:
    """Which open_clip model, where it runs, and how inference is batched."""

    model_name: str = "ViT-B-32"  # an open_clip architecture (open_clip.list_models()) or TINY_CLIP_NAME
    # A pretrained tag ("laion2b_s34b_b79k", see open_clip.list_pretrained()) or a local checkpoint file
    # path (what clip_train saves); None builds random weights (tests and benchmarks only).
    pretrained: str | None = None
    device: str = "cpu"  # "cpu", "cuda" or "cuda:N"
    # open_clip precision. fp32 on CPU: bf16 autocast was slower than fp32 on these CPUs (ENVIRONMENT.md).
    precision: str = "fp32"
    # torch.set_num_threads in each worker process; None keeps torch's default (one per core). Beam runs
    # several DoFn threads per process: they share one model, and torch's intra-op pool, through this. On
    # shared machines whose cores are busy, 1 ran 10-20x faster than 2 (filters/clip_train.py).
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
        if self.precision not in ("fp32", "fp16", "bf16", "pure_fp16", "pure_bf16"):
            raise ClipModelError(f"precision must be fp32, fp16, bf16, pure_fp16 or pure_bf16, found "
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


@dataclass(frozen=True, kw_only=True)
class ClipTextConfig:
    """The texts an image is compared with."""

    use_alt_text: bool = True  # the image's alt text (or the caption a dataset shipped with it)
    # Kept text nodes before and after the image, in reading order, image nodes skipped. OBELICS-style
    # pages put captions right after (or before) the image; 1 and 1 keep the comparison local.
    window_before: int = 1
    window_after: int = 1
    # Compare every image with every kept text node of its document (the columns MMC4 assigns over).
    # Needed by the "assign" mode; None means "only when the mode is assign".
    all_sentences: bool | None = None
    # Characters of a text kept before tokenizing: CLIP reads 77 tokens (about 300 characters of English);
    # the cap only bounds tokenizer work on very long paragraphs.
    max_chars: int = 1000

    def validate(self) -> None:
        if self.window_before < 0 or self.window_after < 0:
            raise ValueError(f"text windows must be 0 or more, found before={self.window_before} "
                             f"after={self.window_after}")
        if self.max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, found {self.max_chars}")


@dataclass(frozen=True, kw_only=True)
class ClipDecisionConfig:
    """Which images are kept, from their stored similarities."""

    mode: str = "threshold"  # one of MODES
    # "threshold" mode: minimum score; None takes the model's published threshold (PUBLISHED_THRESHOLDS),
    # or the threshold calibrated by clip_train and stored in the checkpoint.
    threshold: float | None = None
    top_fraction: float = DATACOMP_TOP_FRACTION  # "top_fraction" mode: share of scored images kept
    # "assign" mode: an image whose best similarity with any sentence is below this is dropped (MMC4).
    min_similarity: float = MMC4_L14_MIN_SIMILARITY
    # "assign" mode, images left over when a document has more images than sentences: MMC4's
    # compute_assignments.py places them at their best sentence ("argmax"); "drop" drops them.
    unassigned: str = "argmax"
    # "assign" mode: move each kept image just before its matched sentence (MMC4 documents as read by
    # OpenFlamingo, and schemas/mmc4.py). The original order is stored, so a re-applied decision starts
    # from it.
    place_images: bool = True
    # Drop a document left without a kept image ("clip_no_images"). Off by default: its text may still be
    # wanted, and the tokenize stage decides what a document needs.
    drop_empty_documents: bool = False

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, found {self.mode!r}")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], found {self.threshold}")
        if not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], found {self.top_fraction}")
        if self.unassigned not in ("argmax", "drop"):
            raise ValueError(f"unassigned must be 'argmax' or 'drop', found {self.unassigned!r}")


@dataclass(frozen=True, kw_only=True)
class ClipConfig:
    """The CLIP stage: model, texts and decision."""

    model: ClipModelConfig = field(default_factory=ClipModelConfig)
    text: ClipTextConfig = field(default_factory=ClipTextConfig)
    decision: ClipDecisionConfig = field(default_factory=ClipDecisionConfig)

    def validate(self) -> None:
        self.model.validate()
        self.text.validate()
        self.decision.validate()
        if self.decision.mode == "assign" and self.text.all_sentences is False:
            raise ValueError("mode 'assign' compares every image with every sentence; text.all_sentences=False "
                             "contradicts it (leave it None)")
        if self.decision.mode == "threshold":
            self.threshold()  # raises when there is none

    @property
    def all_sentences(self) -> bool:
        return self.text.all_sentences if self.text.all_sentences is not None else self.decision.mode == "assign"

    def threshold(self) -> float:
        """The "threshold" mode's threshold: configured, published for the model, or stored in the checkpoint."""
        if self.decision.threshold is not None:
            return self.decision.threshold
        if self.model.is_checkpoint:
            stored = checkpoint_metadata(self.model.pretrained).get("threshold")
            if stored is not None:
                return float(stored)
        if self.model.model_name in PUBLISHED_THRESHOLDS:
            return PUBLISHED_THRESHOLDS[self.model.model_name]
        raise ValueError(f"no published CLIP-score threshold for {self.model.model_name!r} and none stored in its "
                         f"checkpoint; set decision.threshold (known: {dict(PUBLISHED_THRESHOLDS)})")


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
            x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device, dtype=self.dtype)
            return self.model.encode_image(x, normalize=True).float().cpu().numpy()

    def encode_texts(self, tokens: np.ndarray) -> np.ndarray:
        """(B, context_length) int64 token ids -> (B, D) float32, L2-normalised."""
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(tokens)).to(self.device)
            return self.model.encode_text(t, normalize=True).float().cpu().numpy()

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
    try:
        model = open_clip.create_model(config.model_name, pretrained=config.pretrained, precision=config.precision,
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


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- inputs


def preprocess_image(data: bytes, transform: Callable) -> np.ndarray:
    """Image bytes -> (3, H, W) float32 at the model's size, whatever the stored size. Raises ImageDecodeError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"cannot decode image ({len(data)} bytes): {e}") from None
    return transform(rgb).numpy().astype(np.float32, copy=False)


def tokenize(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """Texts -> (N, context_length) int64; open_clip truncates each to its context."""
    return tokenizer(list(texts)).numpy().astype(np.int64, copy=False)


# ---------------------------------------------------------------- what each image is compared with


@dataclass(frozen=True)
class ScoringPlan:
    """The embeddings a document needs, and which similarities make each image's score.

    Node indices refer to the document's node order when it was planned. Text slots 0..S-1 are the
    sentences (text nodes), slots S.. are the images' alt texts.
    """

    image_nodes: tuple[int, ...]  # node index of each image to score
    sentence_nodes: tuple[int, ...]  # node index of each text node compared with (the matrix columns)
    alt_slots: tuple[int | None, ...]  # per image: text slot of its alt text, or None
    windows: tuple[tuple[int, ...], ...]  # per image: sentence columns in its window
    texts: tuple[str, ...]  # text of each slot
    drops: tuple[tuple[int, str], ...]  # (node index, reason): kept image nodes that cannot be scored

    def shas(self, doc: Document) -> list[str]:
        return [doc.nodes[i].image_sha256 for i in self.image_nodes]


def plan_document(doc: Document, text: ClipTextConfig, *, all_sentences: bool) -> ScoringPlan:
    """Which texts to embed for `doc` and what each kept image is compared with. Pure and deterministic:
    the scoring step recomputes it from the same document instead of shipping it."""
    text_positions = [i for i, n in enumerate(doc.nodes) if n.is_text and n.kept and n.text and n.text.strip()]
    candidates, drops = [], []
    for i, n in enumerate(doc.nodes):
        if not (n.is_image and n.kept):
            continue
        if not n.image_sha256:
            drops.append((i, REASON_NO_IMAGE))
            continue
        before = [p for p in text_positions if p < i][-text.window_before:] if text.window_before else []
        after = [p for p in text_positions if p > i][:text.window_after]
        alt = (n.alt_text or "").strip() if text.use_alt_text else ""
        if not alt and not before and not after and not (all_sentences and text_positions):
            drops.append((i, REASON_NO_TEXT))
            continue
        candidates.append((i, alt, before + after))
    used = set(text_positions) if all_sentences else {p for _, _, w in candidates for p in w}
    sentence_nodes = tuple(p for p in text_positions if p in used)
    column = {p: c for c, p in enumerate(sentence_nodes)}
    texts = [doc.nodes[p].text[:text.max_chars] for p in sentence_nodes]
    alt_slots, windows = [], []
    for _, alt, window in candidates:
        if alt:
            alt_slots.append(len(texts))
            texts.append(alt[:text.max_chars])
        else:
            alt_slots.append(None)
        windows.append(tuple(column[p] for p in window))
    return ScoringPlan(image_nodes=tuple(i for i, _, _ in candidates), sentence_nodes=sentence_nodes,
                       alt_slots=tuple(alt_slots), windows=tuple(windows), texts=tuple(texts), drops=tuple(drops))


# ---------------------------------------------------------------- scoring


def score_document(doc: Document, plan: ScoringPlan, *, image_embeddings: dict[str, np.ndarray | str],
                   text_embeddings: dict[int, np.ndarray], model_id: str, all_sentences: bool) -> Document:
    """Similarities of `doc`'s images with their texts, stored in meta["clip"]; each scored image node gets
    its score (best similarity over its alt text and window) in clip_score. No keep/drop decision yet,
    except for images that cannot be scored (plan.drops, a failed or missing image, texts that failed).

    image_embeddings: sha256 -> L2-normalised embedding, or a drop reason when the image failed or is
    missing. text_embeddings: text slot -> embedding (a slot missing here failed in inference).
    """
    nodes = list(doc.nodes)
    for i, reason in plan.drops:
        nodes[i] = nodes[i].dropped(reason)
    columns = [text_embeddings.get(c) for c in range(len(plan.sentence_nodes))]
    entries = []
    for k, i in enumerate(plan.image_nodes):
        emb = image_embeddings.get(nodes[i].image_sha256, REASON_IMAGE_MISSING)
        if isinstance(emb, str):
            nodes[i] = nodes[i].dropped(emb)
            continue
        sims = [None if col is None else _round(float(np.dot(emb, col))) for col in columns]
        alt_slot = plan.alt_slots[k]
        alt_emb = text_embeddings.get(alt_slot) if alt_slot is not None else None
        entry = {"node": i, "alt": None if alt_emb is None else _round(float(np.dot(emb, alt_emb))),
                 "sims": sims, "window": list(plan.windows[k])}
        score = _entry_score(entry)
        if score is None:  # every text it was to be compared with failed in inference
            nodes[i] = nodes[i].dropped(REASON_NO_TEXT)
            continue
        nodes[i] = replace(nodes[i], clip_score=score)
        entries.append(entry)
    meta = dict(doc.meta)
    meta[META_KEY] = {"model": model_id, "nodes": len(nodes), "sentences": list(plan.sentence_nodes),
                      "all_sentences": all_sentences, "images": entries}
    return replace(doc, nodes=nodes, meta=meta)


def _round(x: float) -> float:
    return round(x, 6)  # float32 cosine similarities carry about 7 significant digits


def _best(values) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _entry_score(entry: dict) -> float | None:
    """An image's score: best similarity over its alt text and the sentences in its window; with neither
    (an "assign"-scored image with empty windows), its best similarity with any sentence."""
    score = _best([entry["alt"], *(entry["sims"][c] for c in entry["window"])])
    return score if score is not None else _best(entry["sims"])


def image_best_similarities(doc: Document) -> dict[str, float]:
    """sha256 -> best similarity of that image with any text it was compared with in `doc` (what the
    image store's clip_score keeps: the best over every document that uses the image)."""
    stored = doc.meta.get(META_KEY)
    if not stored:
        return {}
    nodes = _original_nodes(doc, stored)
    best: dict[str, float] = {}
    for e in stored["images"]:
        score = _best([e["alt"], *e["sims"]])
        sha = nodes[e["node"]].image_sha256
        if score is not None and sha and score > best.get(sha, -math.inf):
            best[sha] = score
    return best


def image_scores(doc: Document) -> list[float]:
    """The score of each scored image of `doc` (what "threshold" and "top_fraction" compare)."""
    stored = doc.meta.get(META_KEY)
    if not stored or doc.status != KEPT:
        return []
    return [s for s in (_entry_score(e) for e in stored["images"]) if s is not None]


def top_fraction_threshold(scores: Sequence[float], fraction: float) -> float:
    """The score at rank ceil(fraction * n) from the top: keeping scores >= it keeps that fraction (more on
    ties), as DataComp's get_threshold. +inf when there are no scores."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], found {fraction}")
    if len(scores) == 0:
        return math.inf
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    k = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[k - 1])


# ---------------------------------------------------------------- assignment (MMC4)


def assign_images(similarity: np.ndarray, *, min_similarity: float,
                  unassigned: str = "argmax") -> list[tuple[int | None, str | None]]:
    """MMC4's assignment of images (rows) to sentences (columns): images whose best similarity is below
    `min_similarity` are dropped; the others are matched one-to-one maximising the total similarity
    (scipy's linear_sum_assignment; MMC4's compute_assignments.py solves the same problem); with more
    images than sentences the leftovers go to their best sentence ("argmax", as MMC4) or are dropped.

    Returns, per image, (sentence index, None) or (None, drop reason).
    """
    from scipy.optimize import linear_sum_assignment

    sim = np.asarray(similarity, dtype=np.float64)
    n_images = sim.shape[0]
    if n_images == 0:
        return []
    if sim.ndim != 2 or sim.shape[1] == 0:
        return [(None, REASON_NO_TEXT)] * n_images
    best = sim.max(axis=1)
    eligible = [i for i in range(n_images) if best[i] >= min_similarity]
    result: list[tuple[int | None, str | None]] = [(None, REASON_BELOW_THRESHOLD)] * n_images
    if eligible:
        rows, cols = linear_sum_assignment(sim[eligible], maximize=True)
        for r, c in zip(rows, cols):
            result[eligible[r]] = (int(c), None)
        for i in set(eligible) - {eligible[r] for r in rows}:
            result[i] = (int(np.argmax(sim[i])), None) if unassigned == "argmax" else (None, REASON_UNASSIGNED)
    return result


# ---------------------------------------------------------------- decisions (re-applicable)


def _original_nodes(doc: Document, stored: dict) -> list:
    """The nodes in the order they had when scored (an "assign" decision may have moved images)."""
    order = stored.get("order")
    expected = len(order) if order is not None else stored.get("nodes", len(doc.nodes))
    if expected != len(doc.nodes):
        raise ValueError(f"document {doc.doc_id}: it has {len(doc.nodes)} nodes but had {expected} when CLIP "
                         "scored it; it was changed after scoring (dropped nodes stripped?), so its stored "
                         "similarities no longer point at its nodes. Re-apply decisions before stripping, or "
                         "score it again")
    if order is None:
        return list(doc.nodes)
    nodes = [None] * len(order)
    for position, original in enumerate(order):
        nodes[original] = doc.nodes[position]
    return nodes


def reset_decision(doc: Document) -> Document:
    """`doc` as it was after scoring: original node order, decision drops undone, scores restored."""
    stored = doc.meta.get(META_KEY)
    if not stored:
        return doc
    nodes = _original_nodes(doc, stored)
    for e in stored["images"]:
        n = nodes[e["node"]]
        if not n.is_image:
            raise ValueError(f"document {doc.doc_id}: node {e['node']} is not an image; it was changed after "
                             "CLIP scoring; score it again")
        n = replace(n, clip_score=_entry_score(e))
        if n.status == DROPPED and n.reason in DECISION_REASONS:
            n = replace(n, status=KEPT, reason=None)
        nodes[e["node"]] = n
    meta = dict(doc.meta)
    meta[META_KEY] = {k: v for k, v in stored.items() if k not in ("order", "decision")}
    out = replace(doc, nodes=nodes, meta=meta)
    if out.status == DROPPED and out.reason == REASON_NO_IMAGES:
        out = replace(out, status=KEPT, reason=None)
    return out


def decide(doc: Document, decision: ClipDecisionConfig, *, threshold: float | None = None) -> Document:
    """Keep or drop `doc`'s scored images from its stored similarities; any earlier decision is undone
    first, so this re-applies a threshold (or another mode) without recomputing embeddings.

    threshold: for "threshold" and "top_fraction" modes (the corpus quantile for the latter). Documents
    without stored similarities, and dropped documents, come back unchanged.
    """
    stored = doc.meta.get(META_KEY)
    if not stored or (doc.status == DROPPED and doc.reason != REASON_NO_IMAGES):
        return doc
    doc = reset_decision(doc)
    stored = doc.meta[META_KEY]
    nodes = list(doc.nodes)
    live = [e for e in stored["images"] if nodes[e["node"]].kept]
    record: dict = {"mode": decision.mode}
    if decision.mode == "assign":
        if not stored.get("all_sentences"):
            raise ValueError(f"document {doc.doc_id} was scored against the texts near each image only; the "
                             "'assign' mode needs every sentence (score with text.all_sentences=True)")
        sim = np.array([[np.nan if s is None else s for s in e["sims"]] for e in live], dtype=np.float64)
        sim = np.nan_to_num(sim, nan=-1.0).reshape(len(live), len(stored["sentences"]))
        matches = assign_images(sim, min_similarity=decision.min_similarity, unassigned=decision.unassigned)
        placed: dict[int, int] = {}
        for e, (col, reason) in zip(live, matches):
            if reason is not None:
                nodes[e["node"]] = nodes[e["node"]].dropped(reason)
            else:
                nodes[e["node"]] = replace(nodes[e["node"]], clip_score=e["sims"][col])
                placed[e["node"]] = stored["sentences"][col]
        record["min_similarity"] = decision.min_similarity
        meta = dict(doc.meta)
        if decision.place_images and placed:
            order = _placement_order(len(nodes), placed)
            if order != list(range(len(nodes))):
                nodes = [nodes[i] for i in order]
                meta[META_KEY] = {**stored, "order": order}
        doc = replace(doc, meta=meta)
    else:
        if threshold is None:
            raise ValueError(f"mode {decision.mode!r} needs a threshold")
        for e in live:
            n = nodes[e["node"]]
            if n.clip_score is None or n.clip_score < threshold:
                nodes[e["node"]] = n.dropped(REASON_BELOW_THRESHOLD)
        record["threshold"] = threshold
    meta = dict(doc.meta)
    meta[META_KEY] = {**meta[META_KEY], "decision": record}
    out = replace(doc, nodes=nodes, meta=meta)
    if decision.drop_empty_documents and not any(n.is_image and n.kept for n in out.nodes):
        out = out.dropped(REASON_NO_IMAGES)
    return out


def _placement_order(n_nodes: int, placed: dict[int, int]) -> list[int]:
    """Node order with each placed image (node -> matched text node) just before its text node; images
    matched to the same text keep their relative order; everything else keeps its place."""
    before: dict[int, list[int]] = {}
    for image, text in sorted(placed.items()):
        before.setdefault(text, []).append(image)
    order = []
    for i in range(n_nodes):
        if i in placed:
            continue
        order.extend(before.get(i, []))
        order.append(i)
    return order


def clip_meta_from_mmc4(doc: Document, *, model_id: str = "mmc4:ViT-L-14") -> Document:
    """An MMC4 document (schemas/mmc4.py) with its shipped similarity matrix stored as CLIP similarities,
    so that `decide` (for instance mode "assign") runs on it without any model. Each image's window is
    every sentence: its score is its best similarity, as MMC4's matched_sim."""
    saved = doc.meta.get("mmc4", {})
    matrix, order = saved.get("similarity_matrix"), saved.get("image_order", [])
    sentences = [i for i, n in enumerate(doc.nodes) if n.is_text]
    if matrix is None or len(matrix) != len(order) or any(len(r) != len(sentences) for r in matrix):
        raise ValueError(f"document {doc.doc_id}: no similarity matrix of {len(order)} images x {len(sentences)} "
                         "sentences in meta['mmc4']")
    position = {n.image_url: i for i, n in enumerate(doc.nodes) if n.is_image}
    entries = [{"node": position[url], "alt": None, "sims": [_round(float(s)) for s in row],
                "window": list(range(len(sentences)))} for url, row in zip(order, matrix)]
    meta = dict(doc.meta)
    meta[META_KEY] = {"model": model_id, "nodes": len(doc.nodes), "sentences": sentences, "all_sentences": True,
                      "images": entries}
    return replace(doc, meta=meta)


def decision_changes(before: Document, after: Document) -> dict[str, int]:
    """Funnel counter increments ("<unit>.in", "<unit>.out", "<unit>.dropped.<reason>") between a document
    before and after a step; nodes counts image nodes only (this stage judges no text node)."""
    if before.status != KEPT:
        return {}
    counts = Counter({"documents.in": 1, "nodes.in": sum(1 for n in before.nodes if n.is_image and n.kept),
                      "nodes.out": sum(1 for n in after.nodes if n.is_image and n.kept)})
    counts["documents.out" if after.status == KEPT else f"documents.dropped.{after.reason}"] += 1
    drops = Counter(n.reason for n in after.nodes if n.is_image and n.status == DROPPED)
    drops.subtract(n.reason for n in before.nodes if n.is_image and n.status == DROPPED)
    for reason, k in drops.items():
        counts[f"nodes.dropped.{reason}"] += k
    return {k: v for k, v in counts.items() if v}
