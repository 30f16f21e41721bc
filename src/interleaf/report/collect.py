"""What the run report shows, read from a run directory: the manifest, and per-chart columns of the shards.

Each reader opens the shards memory-mapped and touches only the columns (and struct fields) its charts need:
the documents' node kinds, statuses, texts and CLIP scores, never their other fields; the image store's
status, URLs and sizes, never its bytes (those are read for the sample documents' images only). Anything a
run did not produce (no token shards, no CLIP scores, no manifest) becomes a note saying so, not an error.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from interleaf import storage
from interleaf.pipelines import rundir
from interleaf.schemas.document import DROPPED, IMAGE, TEXT, Document, documents_from_table
from interleaf.schemas.image import STATUS_OK
from interleaf.schemas.meta import KIND_DOCUMENTS, KIND_IMAGES, KIND_TOKENS
from interleaf.shards import ShardError, open_shards, read_shard

log = logging.getLogger(__name__)

# The host of a URL with its port, as the fetch stage's politeness key has it (pipelines/fetch.py host_key):
# after the scheme and any user info, up to the path, query or fragment.
_HOST = r"^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^@/?#]*@)?(?P<host>[^/?#]*)"
ARCHIVED, FETCHED = "archived (WARC)", "fetched"
EXAMPLES_PER_REASON = 3
WORD_SAMPLE = 250_000  # documents whose words are counted (reading text is the costly part of a report)


@dataclass
class DocumentStats:
    documents: int = 0
    shards: int = 0
    images_per_doc: np.ndarray = field(default_factory=lambda: np.zeros(0))  # kept image nodes per document
    words_per_doc: np.ndarray = field(default_factory=lambda: np.zeros(0))  # words in kept text nodes
    word_shards: int = 0  # shards whose words were counted (the first ones, up to WORD_SAMPLE documents)
    image_nodes: int = 0  # kept image nodes in all
    image_nodes_stored: int = 0  # ... of which have an image in the store (sha256 resolved)
    clip_kept: np.ndarray = field(default_factory=lambda: np.zeros(0))  # scores of kept image nodes
    clip_dropped: np.ndarray = field(default_factory=lambda: np.zeros(0))  # scores of dropped image nodes
    samples: list[tuple[str, int]] = field(default_factory=list)  # (shard, row) picked as samples
    # identified language of each document ("undetermined" below the confidence threshold; "not
    # identified" where identification did not run), and the identifier's scores
    languages: Counter = field(default_factory=Counter)
    language_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class RejectedStats:
    documents: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few URLs
    clip_dropped: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class ImageStats:
    rows: int = 0
    ok: int = 0
    width: np.ndarray = field(default_factory=lambda: np.zeros(0))  # as served, before resizing
    height: np.ndarray = field(default_factory=lambda: np.zeros(0))
    kilobytes: np.ndarray = field(default_factory=lambda: np.zeros(0))  # as served
    clip: np.ndarray = field(default_factory=lambda: np.zeros(0))  # best score per image (store)
    nsfw: np.ndarray = field(default_factory=lambda: np.zeros(0))  # every scored image, dropped ones too
    faces: np.ndarray = field(default_factory=lambda: np.zeros(0))  # face count per stored image
    formats: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)  # (host, outcome) -> URLs
    errors: dict[str, str] = field(default_factory=dict)  # outcome -> one error message as an example


@dataclass
class TokenStats:
    rows: int = 0
    tokens: int = 0
    per_doc: np.ndarray = field(default_factory=lambda: np.zeros(0))  # tokens per doc_id (split rows summed)
    vocabulary: dict = field(default_factory=dict)


@dataclass
class RunData:
    directory: str
    manifest: dict | None = None
    documents: DocumentStats | None = None
    rejected: RejectedStats | None = None
    images: ImageStats | None = None
    tokens: TokenStats | None = None
    clip_threshold: float | None = None
    absent: dict[str, str] = field(default_factory=dict)  # what -> why it is not in the report

    @property
    def funnel(self) -> dict:
        """The manifest's funnel (made sane when the manifest was read: rundir.sane_funnel)."""
        return (self.manifest or {}).get("funnel") or {}


def read_run(directory: str, samples: int = 4) -> RunData:
    """Everything the report draws, from run directory `directory`."""
    d = RunData(directory=directory.rstrip("/") or "/")
    path = storage.join(d.directory, "manifest.json")
    if storage.exists(path):
        try:
            d.manifest = json.loads(storage.read_bytes(path))
        except ValueError as e:
            d.absent["manifest"] = f"{path} is not valid JSON ({e})"
        if d.manifest is not None and not isinstance(d.manifest, dict):
            d.manifest = None
            d.absent["manifest"] = f"{path} is not a JSON object"
        elif d.manifest is not None:
            d.manifest = rundir.sane_manifest(d.manifest)
    else:
        d.absent["manifest"] = f"no {path}: the funnel and timings are unknown (not a run directory?)"
    d.documents = _guard(d, "documents", lambda p: documents_stats(p, samples), KIND_DOCUMENTS)
    d.rejected = _guard(d, "rejected", rejected_stats, KIND_DOCUMENTS)
    d.images = _guard(d, "images", image_stats, KIND_IMAGES)
    d.tokens = _guard(d, "tokens", token_stats, KIND_TOKENS)
    d.clip_threshold = _clip_threshold(d)
    return d


def _guard(d: RunData, sub: str, reader, kind: str):
    path = storage.join(d.directory, sub)
    if not storage.is_dir(path):
        d.absent[sub] = f"no {sub}/ directory in the run"
        return None
    try:
        open_shards(path, kind=kind)
    except ShardError as e:
        d.absent[sub] = str(e)
        return None
    return reader(path)


# ---------------------------------------------------------------- documents


def _node_columns(nodes: pa.ListArray):
    """Flattened node fields as numpy, with each node's document index."""
    flat = pc.list_flatten(nodes)
    parent = pc.list_parent_indices(nodes).to_numpy()
    kind = flat.field("kind").to_numpy(zero_copy_only=False)
    kept = flat.field("status").to_numpy(zero_copy_only=False) != DROPPED
    return flat, parent, kind, kept


def _scores(flat: pa.StructArray, mask: np.ndarray) -> np.ndarray:
    scores = flat.field("clip_score").to_numpy(zero_copy_only=False).astype(float)
    return scores[mask & ~np.isnan(scores)]


def documents_stats(path: str, samples: int, word_sample: int = WORD_SAMPLE) -> DocumentStats:
    s = DocumentStats()
    images, words, kept_scores, dropped_scores, language_scores = [], [], [], [], []
    with_images, text_only = [], []  # sample candidates: (shard, row indices)
    shards = open_shards(path)
    s.shards = len(shards.paths)
    scored = "language_score" in shards.schema.names  # documents schema v2 on
    columns = ["nodes", "language"] + (["language_score"] if scored else [])
    for shard, table in shards.tables(columns=columns):
        n = table.num_rows
        s.documents += n
        scores = table["language_score"].to_pylist() if scored else [None] * n
        s.languages.update(code or ("undetermined" if score is not None else "not identified")
                           for code, score in zip(table["language"].to_pylist(), scores))
        language_scores.append(np.asarray([v for v in scores if v is not None], dtype=float))
        flat, parent, kind, kept = _node_columns(table["nodes"].combine_chunks())
        is_img, is_txt = (kind == IMAGE) & kept, (kind == TEXT) & kept
        stored = is_img & pc.is_valid(flat.field("image_sha256")).to_numpy(zero_copy_only=False)
        stored_per_doc = np.bincount(parent[stored], minlength=n)
        images.append(np.bincount(parent[is_img], minlength=n))
        s.image_nodes += int(is_img.sum())
        s.image_nodes_stored += int(stored.sum())
        # Words need the text itself, the bulk of a run: counted on whole shards until `word_sample`
        # documents, an unbiased sample since the writers partition documents by a hash of doc_id.
        if sum(len(w) for w in words) < word_sample:
            w = pc.list_value_length(pc.utf8_split_whitespace(flat.field("text")))
            w = pc.fill_null(w, 0).to_numpy(zero_copy_only=False)
            words.append(np.bincount(parent[is_txt], weights=w[is_txt], minlength=n))
        kept_scores.append(_scores(flat, is_img))
        dropped_scores.append(_scores(flat, (kind == IMAGE) & ~kept))
        with_images.append((shard, np.flatnonzero(stored_per_doc)))
        text_only.append((shard, np.flatnonzero(stored_per_doc == 0)))
    s.images_per_doc, s.words_per_doc, s.word_shards = _cat(images), _cat(words), len(words)
    s.clip_kept, s.clip_dropped = _cat(kept_scores), _cat(dropped_scores)
    s.language_scores = _cat(language_scores)
    # Samples spread evenly over the run, documents with stored images first (they show what the run made)
    s.samples = _spread(with_images, samples)
    s.samples += _spread(text_only, samples - len(s.samples))
    return s


def _spread(parts: list[tuple[str, np.ndarray]], n: int) -> list[tuple[str, int]]:
    """n (shard, row) picks evenly spaced over the rows of `parts`, in order."""
    total = sum(len(rows) for _, rows in parts)
    if n <= 0 or not total:
        return []
    wanted = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))
    bounds = np.cumsum([len(rows) for _, rows in parts])
    picks = []
    for i in wanted:
        k = int(np.searchsorted(bounds, i, side="right"))
        shard, rows = parts[k]
        picks.append((shard, int(rows[i - (bounds[k - 1] if k else 0)])))
    return picks


def read_samples(picks: list[tuple[str, int]]) -> list[Document]:
    """The picked documents, whole, reading only their rows' pages of each memory-mapped shard."""
    docs = []
    for shard in dict.fromkeys(p for p, _ in picks):
        table = read_shard(shard)
        rows = [r for p, r in picks if p == shard]
        docs += documents_from_table(table.take(pa.array(rows, pa.int64())))
    return docs


def rejected_stats(path: str) -> RejectedStats:
    s = RejectedStats()
    scores = []
    for _, table in open_shards(path).tables(columns=["url", "reason", "nodes"]):
        s.documents += table.num_rows
        reasons = table["reason"].to_pylist()
        s.reasons.update(r or "(none)" for r in reasons)
        for url, reason in zip(table["url"].to_pylist(), reasons):
            examples = s.examples.setdefault(reason or "(none)", [])
            if len(examples) < EXAMPLES_PER_REASON:
                examples.append(url)
        flat, _, kind, kept = _node_columns(table["nodes"].combine_chunks())
        scores.append(_scores(flat, (kind == IMAGE) & ~kept))
    s.clip_dropped = np.concatenate(scores) if scores else np.zeros(0)
    return s


# ---------------------------------------------------------------- image store


def image_stats(path: str) -> ImageStats:
    s = ImageStats()
    columns = ["status", "source", "urls", "error", "format", "original_width", "original_height",
               "original_bytes", "clip_score", "nsfw_score", "face_count"]
    widths, heights, sizes, scores, nsfw, faces = [], [], [], [], [], []
    for _, table in open_shards(path).tables(columns=columns):
        s.rows += table.num_rows
        status = table["status"].combine_chunks()
        ok = pc.equal(status, STATUS_OK)
        s.ok += int(pc.sum(ok).as_py() or 0)
        good = table.filter(ok)
        widths.append(_floats(good["original_width"]))
        heights.append(_floats(good["original_height"]))
        sizes.append(_floats(good["original_bytes"]) / 1024)
        scores.append(_floats(table["clip_score"]))
        nsfw.append(_floats(table["nsfw_score"]))
        faces.append(_floats(good["face_count"]))
        s.formats.update(f for f in good["format"].to_pylist() if f)
        # One outcome per URL: an ok image counts once for each URL that resolved to it
        archived = pc.equal(pc.fill_null(table["source"], ""), "warc")
        outcome = pc.if_else(ok, pc.if_else(archived, ARCHIVED, FETCHED), status)
        urls = table["urls"].combine_chunks()
        found = pc.extract_regex(pc.list_flatten(urls), _HOST)
        hosts = pc.if_else(pc.is_valid(found), found.field("host"), pa.scalar(None, pa.string()))
        hosts = pc.fill_null(pc.utf8_lower(hosts), "(no host)")
        per_url = pc.take(outcome, pc.list_parent_indices(urls))
        s.outcomes.update(zip(hosts.to_pylist(), per_url.to_pylist()))
        failed = pc.invert(ok)
        errors = pc.filter(table["error"], failed).to_pylist()
        for st, err in zip(pc.filter(status, failed).to_pylist(), errors):
            if err and st not in s.errors:
                s.errors[st] = err
    s.width, s.height = _cat(widths), _cat(heights)
    s.kilobytes, s.clip = _cat(sizes), _cat(scores)
    s.nsfw, s.faces = _cat(nsfw), _cat(faces)
    return s


def _floats(col) -> np.ndarray:
    a = pc.drop_null(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
    return a.to_numpy(zero_copy_only=False).astype(float)


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)


def host_table(outcomes: Counter) -> list[tuple[str, int, Counter]]:
    """[(host, URLs, Counter(outcome))], hosts with most URLs first."""
    by_host: dict[str, Counter] = {}
    for (host, outcome), n in outcomes.items():
        by_host.setdefault(host, Counter())[outcome] += n
    return sorted(((h, sum(c.values()), c) for h, c in by_host.items()), key=lambda t: (-t[1], t[0]))


# ---------------------------------------------------------------- tokens and CLIP


def token_stats(path: str) -> TokenStats:
    s = TokenStats()
    shards = open_shards(path)
    s.vocabulary = shards.token_info.vocabulary.to_json() if shards.token_info else {}
    ids, lengths = [], []
    for _, table in shards.tables(columns=["doc_id", "tokens"]):
        s.rows += table.num_rows
        ids.append(table["doc_id"].combine_chunks())
        # list lengths come from the offsets alone: the token values are never paged in
        lengths.append(pc.list_value_length(table["tokens"].combine_chunks()))
    if ids:
        t = pa.table({"doc_id": pa.concat_arrays(ids), "n": pa.concat_arrays(lengths).cast(pa.int64())})
        per_doc = t.group_by("doc_id").aggregate([("n", "sum")])["n_sum"]
        s.per_doc = per_doc.to_numpy().astype(float)
        s.tokens = int(s.per_doc.sum())
    return s


def _clip_threshold(d: RunData) -> float | None:
    """The CLIP threshold the run applied: the configured one, else the one recorded in the first scored
    document's decision (a threshold calibrated in a checkpoint, or a corpus quantile)."""
    def obj(value) -> dict:
        return value if isinstance(value, dict) else {}

    decision = obj(obj(obj(obj(d.manifest).get("config")).get("clip")).get("decision"))
    stages = obj(d.manifest).get("stages")
    if decision.get("mode") == "threshold" and isinstance(decision.get("threshold"), (int, float)) and \
            isinstance(stages, list) and "clip" in stages:
        return float(decision["threshold"])
    if d.documents is None or not (d.documents.clip_kept.size or d.documents.clip_dropped.size):
        return None
    for shard in open_shards(storage.join(d.directory, "documents")).paths:
        meta = read_shard(shard, columns=["meta"])["meta"].slice(0, 200).to_pylist()
        for m in meta:
            decision = (json.loads(m or "{}").get("clip") or {}).get("decision") or {}
            if decision.get("threshold") is not None:
                return float(decision["threshold"])
    return None


def describe_inputs(manifest: dict | None) -> list[tuple[str, int, str]]:
    """[(format, files, first file name)] from the manifest's inputs."""
    inputs = (manifest or {}).get("inputs") or {}
    return [(fmt, len(paths), os.path.basename(paths[0].rstrip("/")) if paths else "")
            for fmt, paths in inputs.items()]
