"""Summaries and samples of any interleaf shard (documents, images, tokens), for `interleaf inspect`.

Works shard by shard on memory-mapped files and reads only the columns a summary needs, so a large shard
costs little more than its touched columns.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from interleaf.schemas.document import DROPPED, IMAGE, TEXT, documents_from_table
from interleaf.schemas.meta import KIND_DOCUMENTS, KIND_FAILURES, KIND_IMAGES, KIND_TOKENS
from interleaf.shards import ShardSet, open_shards

PERCENTILES = (0, 10, 50, 90, 100)


def percentiles(values) -> dict[str, float] | None:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return None
    return {f"p{p}": round(float(np.percentile(arr, p)), 2) for p in PERCENTILES} | {
        "mean": round(float(arr.mean()), 2)}


@dataclass
class Summary:
    kind: str
    shards: int
    rows: int = 0
    stats: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kind": self.kind, "shards": self.shards, "rows": self.rows, **self.stats}


def summarize(path: str) -> Summary:
    shards = open_shards(path)
    return {KIND_DOCUMENTS: _summarize_documents, KIND_IMAGES: _summarize_images,
            KIND_TOKENS: _summarize_tokens, KIND_FAILURES: _summarize_failures}[shards.kind](shards)


def _counts(values) -> dict[str, int]:
    return dict(Counter(v for v in values if v is not None).most_common())


def _summarize_documents(shards: ShardSet) -> Summary:
    s = Summary(kind=KIND_DOCUMENTS, shards=len(shards.paths))
    doc_status, doc_reasons, node_reasons = Counter(), Counter(), Counter()
    node_counts = Counter()
    images_per_doc, chars_per_doc, words_per_doc, widths, heights = [], [], [], [], []
    languages, language_scores = Counter(), []
    scored = "language_score" in shards.schema.names  # documents schema v2 on (v1 shards have no scores)
    columns = ["status", "reason", "nodes", "language"] + (["language_score"] if scored else [])
    for _, table in shards.tables(columns=columns):
        s.rows += table.num_rows
        scores = table["language_score"].to_pylist() if scored else [None] * table.num_rows
        languages.update(code or ("undetermined" if score is not None else "not identified")
                         for code, score in zip(table["language"].to_pylist(), scores))
        language_scores.extend(v for v in scores if v is not None)
        doc_status.update(table["status"].to_pylist())
        doc_reasons.update(r for r in table["reason"].to_pylist() if r)
        nodes = table["nodes"].combine_chunks()
        flat = pc.list_flatten(nodes)
        parent = pc.list_parent_indices(nodes).to_numpy()
        kind = flat.field("kind").to_numpy(zero_copy_only=False)
        status = flat.field("status").to_numpy(zero_copy_only=False)
        kept = status != DROPPED
        for k in (TEXT, IMAGE):
            node_counts[f"{k}_kept"] += int(((kind == k) & kept).sum())
            node_counts[f"{k}_dropped"] += int(((kind == k) & ~kept).sum())
        node_reasons.update(r for r in flat.field("reason").to_pylist() if r)
        n = table.num_rows
        is_img = (kind == IMAGE) & kept
        images_per_doc.extend(np.bincount(parent[is_img], minlength=n).tolist())
        text = flat.field("text")
        lengths = pc.fill_null(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
        words = pc.fill_null(pc.list_value_length(pc.utf8_split_whitespace(text)), 0).to_numpy(
            zero_copy_only=False)
        is_txt = (kind == TEXT) & kept
        chars_per_doc.extend(np.bincount(parent[is_txt], weights=lengths[is_txt], minlength=n).tolist())
        words_per_doc.extend(np.bincount(parent[is_txt], weights=words[is_txt], minlength=n).tolist())
        w = flat.field("declared_width").to_numpy(zero_copy_only=False)
        h = flat.field("declared_height").to_numpy(zero_copy_only=False)
        has_size = is_img & ~np.isnan(w.astype(float)) & ~np.isnan(h.astype(float))
        widths.extend(w[has_size].tolist())
        heights.extend(h[has_size].tolist())
    s.stats = {
        "documents": {"kept": doc_status.get("kept", 0), "dropped": doc_status.get(DROPPED, 0)},
        "document_drop_reasons": dict(doc_reasons.most_common()),
        "nodes": {"text": {"kept": node_counts["text_kept"], "dropped": node_counts["text_dropped"]},
                  "image": {"kept": node_counts["image_kept"], "dropped": node_counts["image_dropped"]}},
        "node_drop_reasons": dict(node_reasons.most_common()),
        "languages": dict(languages.most_common()),
        "language_score": percentiles(language_scores),
        "images_per_document": percentiles(images_per_doc),
        "text_chars_per_document": percentiles(chars_per_doc),
        "text_words_per_document": percentiles(words_per_doc),
        "declared_image_width": percentiles(widths),
        "declared_image_height": percentiles(heights),
    }
    return s


def _summarize_images(shards: ShardSet) -> Summary:
    s = Summary(kind=KIND_IMAGES, shards=len(shards.paths))
    statuses, formats, sources = Counter(), Counter(), Counter()
    widths, heights, sizes, scores, nsfw, faces = [], [], [], [], [], []
    urls = 0
    for _, table in shards.tables(columns=["status", "format", "source", "width", "height",
                                           "original_bytes", "clip_score", "nsfw_score", "face_count",
                                           "urls"]):
        s.rows += table.num_rows
        statuses.update(table["status"].to_pylist())
        formats.update(f for f in table["format"].to_pylist() if f)
        sources.update(f for f in table["source"].to_pylist() if f)
        ok = pc.equal(table["status"], "ok")
        widths.extend(v for v in pc.filter(table["width"], ok).to_pylist() if v is not None)
        heights.extend(v for v in pc.filter(table["height"], ok).to_pylist() if v is not None)
        sizes.extend(v for v in pc.filter(table["original_bytes"], ok).to_pylist() if v is not None)
        scores.extend(v for v in table["clip_score"].to_pylist() if v is not None)
        nsfw.extend(v for v in table["nsfw_score"].to_pylist() if v is not None)  # dropped ones too
        faces.extend(v for v in pc.filter(table["face_count"], ok).to_pylist() if v is not None)
        urls += int(pc.sum(pc.list_value_length(table["urls"])).as_py() or 0)
    s.stats = {
        "images_ok": statuses.get("ok", 0), "urls": urls,
        "fetch_status": dict(statuses.most_common()), "formats": dict(formats.most_common()),
        "sources": dict(sources.most_common()),
        "width": percentiles(widths), "height": percentiles(heights), "original_bytes": percentiles(sizes),
        "clip_score": percentiles(scores), "nsfw_score": percentiles(nsfw),
        "faces_per_image": percentiles(faces), "images_with_faces": sum(1 for n in faces if n),
    }
    return s


def _summarize_failures(shards: ShardSet) -> Summary:
    s = Summary(kind=KIND_FAILURES, shards=len(shards.paths))
    where, kinds = Counter(), Counter()
    for _, table in shards.tables(columns=["stage", "step", "kind"]):
        s.rows += table.num_rows
        where.update(f"{a}/{b}" for a, b in zip(table["stage"].to_pylist(), table["step"].to_pylist()))
        kinds.update(table["kind"].to_pylist())
    s.stats = {"by_stage_step": dict(where.most_common()), "by_kind": dict(kinds.most_common())}
    return s


def _summarize_tokens(shards: ShardSet) -> Summary:
    s = Summary(kind=KIND_TOKENS, shards=len(shards.paths))
    vocab = shards.token_info.vocabulary
    lo, hi = vocab.image_codebook_offset, vocab.image_codebook_offset + vocab.image_codebook_size
    boi = vocab.special_tokens["<boi>"]
    lengths, images, image_tokens, text_tokens = [], [], 0, 0
    for _, table in shards.tables(columns=["tokens"]):
        s.rows += table.num_rows
        col = table["tokens"].combine_chunks()
        lengths.extend(pc.list_value_length(col).to_numpy(zero_copy_only=False).tolist())
        flat = pc.list_flatten(col).to_numpy(zero_copy_only=False)
        parent = pc.list_parent_indices(col).to_numpy()
        is_img = (flat >= lo) & (flat < hi)
        is_txt = flat >= vocab.text_offset
        image_tokens += int(is_img.sum())
        text_tokens += int(is_txt.sum())
        images.extend(np.bincount(parent[flat == boi], minlength=table.num_rows).tolist())
    s.stats = {
        "tokens": int(sum(lengths)), "text_tokens": text_tokens, "image_tokens": image_tokens,
        "tokens_per_document": percentiles(lengths), "images_per_document": percentiles(images),
        "vocabulary": vocab.to_json(), "tokenizers": shards.token_info.tokenizers,
        "producer": shards.token_info.producer,
    }
    return s


def sample_rows(path: str, n: int, *, with_image_bytes: bool = False) -> tuple[ShardSet, pa.Table]:
    """The first n rows across the shards at `path` (in shard order); image bytes only when asked for."""
    shards = open_shards(path)
    columns = None
    if shards.kind == KIND_IMAGES and not with_image_bytes:
        columns = [f.name for f in shards.schema if f.name != "data"]
    tables, have = [], 0
    for _, table in shards.tables(columns=columns):
        if have >= n:
            break
        tables.append(table.slice(0, n - have))
        have += tables[-1].num_rows
    return shards, pa.concat_tables(tables) if tables else shards.schema.empty_table()


def sample_documents(path: str, n: int):
    shards, table = sample_rows(path, n)
    return documents_from_table(table)
