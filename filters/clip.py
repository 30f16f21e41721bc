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

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from interleaf.filters.clip_model import ClipModelConfig, checkpoint_metadata
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
