"""Deduplication inside the engine: documents (exact and MinHash near duplicates), repeated paragraphs per
domain, and images (exact, perceptual near duplicates, too-frequent images, duplicate image sets).

No step gathers the corpus: every grouping is keyed (a text hash, an LSH band, a node of the duplicate
graph, a domain and paragraph, an image), so a worker holds one key's values at a time, and the largest
such group is one cluster of duplicates, never all signatures or all pairs.

Order of use: DedupDocuments first, then RemoveRepeatedParagraphs (otherwise the copies of a near-duplicate
page would make all of its paragraphs "repeated" and strip them from the survivor too), then DedupImages.
Each transform counts its own unit of the "dedup" funnel stage (documents, text nodes, image records and
image nodes), so the stage reconciles (in = out + dropped) however the three are combined. Elements that
arrive already dropped pass through untouched and uncounted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import islice

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from interleaf.filters.dedup_text import (
    MinHashConfig,
    MinHasher,
    band_keys,
    estimate_floor,
    estimated_jaccard,
    exact_jaccard,
    first_common_band,
    normalize_text,
    signature_from_bytes,
    signature_to_bytes,
    text_hash,
    url_domain,
    word_shingles,
)
from interleaf.pipelines.common import CountingDoFn
from interleaf.pipelines.components import ConnectedComponents
from interleaf.pipelines.dedup_common import _KV, EXACT_DUPLICATE, NEAR_DUPLICATE, STAGE, _check_positive
from interleaf.pipelines.dedup_images import ImageDedupConfig
from interleaf.pipelines.stage import DOCUMENTS, IMAGES, RunContext, Stage, outputs, split_kept
from interleaf.schemas.document import Document

REPEATED_PARAGRAPH = "repeated_paragraph"
CLUSTER_KEY = "dedup_cluster"  # Document.meta key: doc_id of the cluster's survivor


# ---------------------------------------------------------------- configuration


@dataclass(kw_only=True, frozen=True)
class DocumentDedupConfig:
    """Exact and near-duplicate documents."""

    # Shingles, permutations, Jaccard threshold and the recall the LSH bands are chosen for (see
    # filters.dedup_text).
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    # Keep an LSH candidate pair only when the exact Jaccard of its shingle sets reaches `threshold`.
    # Band collisions alone also pair documents below the threshold (with the default bands, 93% of pairs
    # at J=0.7, 28% at 0.5); verification removes them, which is what lets the bands favour recall. A
    # candidate whose MinHash estimate is four standard errors under the threshold is rejected without
    # the exact check (filters.dedup_text.estimate_floor). The exact check joins each candidate with the
    # shingle hashes of both documents (two keyed joins; 4 bytes per distinct shingle). False: every
    # candidate is a duplicate (datatrove's behaviour), no joins, less precision.
    verify_candidates: bool = True
    # Rounds of connected components (large-star + small-star, two GroupByKeys each). Near-duplicate
    # clusters have small diameters; a chain of 256 documents converges in 8 rounds, of 4,096 in 11.
    # Rounds after convergence change nothing and are cheap.
    max_rounds: int = 12
    # A band bucket with more members than this (a template shared by thousands of pages) is linked as a
    # star around its smallest node instead of comparing all pairs (quadratic). Pairs of it that are not
    # similar to that node are then linked only through other bands or paths (a pair is checked in the
    # first band it shares). 100 members: 4,950 comparisons of 128 values, milliseconds.
    bucket_pair_limit: int = 100

    def __post_init__(self):
        _check_positive("DocumentDedupConfig", max_rounds=self.max_rounds,
                        bucket_pair_limit=self.bucket_pair_limit)


@dataclass(kw_only=True, frozen=True)
class ParagraphDedupConfig:
    """Paragraphs repeated across the documents of one domain (menus, disclaimers, cookie banners)."""

    # A paragraph found in more than this many documents of the same domain is dropped from all of them.
    # OBELICS dropped paragraphs seen more than once in a domain (count > 1, build_obelics/09_04 and
    # obelics/processors/web_document_line_deduplication.py); it counted occurrences, we count documents
    # (repetition inside one page is the quality filters' business).
    max_documents: int = 1

    def __post_init__(self):
        _check_positive("ParagraphDedupConfig", max_documents=self.max_documents)


# ---------------------------------------------------------------- documents: exact and near duplicates

_MAX_LEN = 10**12 - 1


def _doc_node(text_len: int, doc_id: str) -> str:
    """Graph node id of a document; ordering by it ranks the survivor first: most kept text, then the
    smallest doc_id. So a component's smallest node (its label) is its survivor."""
    return f"{_MAX_LEN - min(text_len, _MAX_LEN):012d}:{doc_id}"


def _node_doc(node: str) -> str:
    return node.split(":", 1)[1]


def _doc_order(doc: Document):
    """Deterministic order of documents that share a doc_id (the same page captured more than once)."""
    return (doc.source_file or "", doc.source_offset if doc.source_offset is not None else -1,
            doc.crawl_date.isoformat() if doc.crawl_date else "", doc.url)


class DedupDocuments(beam.PTransform):
    """PCollection[Document] -> PCollection[Document]: exact duplicates (same normalised text) and near
    duplicates (exact Jaccard of word shingles >= threshold, transitively: chains A~B~C form one
    cluster) are marked dropped, "exact_duplicate" or "near_duplicate", keeping one survivor per cluster.

    Survivor rule: the most kept text (characters of Document.text()), then the smallest doc_id. Every
    member of a cluster of two or more, survivor included, gets meta["dedup_cluster"] = the survivor's
    doc_id. A removed document is an exact duplicate when its normalised text equals the survivor's.
    Funnel: documents.in / out / dropped.<reason>, and info counters (lsh_candidates, lsh_rejected, ...).
    """

    def __init__(self, config: DocumentDedupConfig | None = None, *, stage: str = STAGE):
        super().__init__()
        self.config, self.stage = config or DocumentDedupConfig(), stage

    def expand(self, docs):
        cfg = self.config
        bands, rows = cfg.minhash.bands
        # (doc_id, Document): every input document, for the final join
        by_id = docs | "KeyById" >> beam.Map(lambda d: (d.doc_id, d))
        # (text hash, (node id, signature bytes)) for each kept document with text
        # and, tagged "shingles", (node id, shingle hashes) for the exact check
        sketch = _SketchFn(cfg.minhash, self.stage, cfg.verify_candidates)
        sketched = docs | "Sketch" >> beam.ParDo(sketch).with_output_types(_KV).with_outputs("shingles",
                                                                                            main="sigs")
        sketches = sketched.sigs
        # (text hash, [(node id, signature)]): the exact copies of one text together
        exact = sketches | "GroupByTextHash" >> beam.GroupByKey()
        # main: (representative node, signature), the best node of each text; "members": (representative
        # node, node) for the other copies
        split = exact | "SplitExactCopies" >> beam.ParDo(_SplitExactFn()).with_output_types(_KV).with_outputs(
            "members", main="reps")
        # (band key, (representative node, signature)), one per band
        banded = split.reps | "BandKeys" >> beam.FlatMap(_band_entries, bands, rows)
        # (band key, [(node, signature)]): the candidates of one band bucket
        buckets = banded | "GroupByBand" >> beam.GroupByKey()
        # (node, node): candidate pairs whose estimate passes the floor, each pair once
        edges = buckets | "Candidates" >> beam.ParDo(_BucketPairsFn(cfg, bands, rows, self.stage))
        if cfg.verify_candidates:
            # (node, node): the candidates whose exact Jaccard reaches the threshold
            edges = edges | "VerifyExactly" >> _VerifyExactly(sketched.shingles, cfg.minhash.threshold,
                                                              self.stage)
        # (node, component label = the survivor's node)
        labels = edges | "Components" >> ConnectedComponents(max_rounds=cfg.max_rounds, stage=self.stage,
                                                             unit="documents")
        # (representative node, {"label": [label], "member": [exact copies]})
        joined = {"label": labels, "member": split.members} | "JoinLabels" >> beam.CoGroupByKey()
        # (doc_id, (survivor doc_id, reason, or None for the survivor)) for members of clusters of 2+
        verdicts = joined | "Verdicts" >> beam.FlatMap(_cluster_verdicts)
        # (doc_id, {"doc": [documents], "verdict": [verdict]})
        marked = {"doc": by_id, "verdict": verdicts} | "JoinVerdicts" >> beam.CoGroupByKey()
        # Document, marked
        return marked | "Mark" >> beam.ParDo(_MarkDuplicatesFn(self.stage))


class _SketchFn(CountingDoFn):
    def __init__(self, config: MinHashConfig, stage: str, shingles: bool):
        self.config, self.stage, self.shingles = config, stage, shingles

    def setup(self):
        super().setup()
        self.hasher = MinHasher(self.config.num_perm, self.config.seed)

    def process(self, doc: Document):
        if not doc.kept:
            return
        text = doc.text()
        norm = normalize_text(text)
        if not norm:
            self.funnel.inc("documents", "no_text")  # image-only pages: nothing to compare
            return
        signature, hashes = self.hasher.sketch(word_shingles(norm, self.config.ngram, normalized=True))
        node = _doc_node(len(text), doc.doc_id)
        yield text_hash(norm, normalized=True), (node, signature_to_bytes(signature))
        if self.shingles:
            yield TaggedOutput("shingles", (node, hashes.tobytes()))


class _SplitExactFn(beam.DoFn):
    def process(self, item):
        _, copies = item
        unique = dict(copies)  # node -> signature; copies sharing a doc_id are one node
        nodes = sorted(unique)
        rep = nodes[0]
        yield rep, unique[rep]
        for node in nodes[1:]:
            yield TaggedOutput("members", (rep, node))


def _band_entries(item, bands: int, rows: int):
    node, sig = item
    for key in band_keys(signature_from_bytes(sig), bands, rows):
        yield key, (node, sig)


class _BucketPairsFn(CountingDoFn):
    """(band key, [(node, signature)]) -> (node, node) candidate pairs of the bucket whose estimated
    Jaccard reaches the floor (every pair without verification)."""

    def __init__(self, config: DocumentDedupConfig, bands: int, rows: int, stage: str):
        minhash = config.minhash
        self.floor = estimate_floor(minhash.threshold, minhash.num_perm) if config.verify_candidates else 0.0
        self.limit, self.bands, self.rows, self.stage = config.bucket_pair_limit, bands, rows, stage

    def _similar(self, a, b) -> bool:
        if estimated_jaccard(a, b) >= self.floor:
            return True
        self.funnel.inc("documents", "lsh_rejected")
        return False

    def process(self, item):
        key, members = item
        band = int.from_bytes(key[:2], "big")
        head = dict(islice(members, self.limit + 1))
        if len(head) <= self.limit:
            nodes = sorted(head)
            sigs = [signature_from_bytes(head[n]) for n in nodes]
            for i in range(len(nodes)):
                for j in range(i + 1, len(nodes)):
                    # a pair sharing several bands is handled in the first of them only
                    if first_common_band(sigs[i], sigs[j], self.bands, self.rows) != band:
                        continue
                    self.funnel.inc("documents", "lsh_candidates")
                    if self._similar(sigs[i], sigs[j]):
                        yield nodes[i], nodes[j]
            return
        # A large bucket: a star around its smallest node, in passes over the (re-iterable) values
        # without holding them. Repeated edges are harmless (components group neighbours into sets).
        self.funnel.inc("documents", "lsh_bucket_capped")
        center = min(node for node, _ in members)
        center_sig = next(signature_from_bytes(s) for node, s in members if node == center)
        for node, sig in members:
            if node == center:
                continue
            self.funnel.inc("documents", "lsh_candidates")
            if self._similar(center_sig, signature_from_bytes(sig)):
                yield center, node


class _VerifyExactly(beam.PTransform):
    """PCollection[(node, node)] candidates -> the pairs whose exact shingle Jaccard reaches the threshold.

    Two keyed joins, so no worker holds more than one document's shingles and its candidates' at a time:
    the first sends each candidate's first shingle set to its second node, the second compares it there."""

    def __init__(self, shingles, threshold: float, stage: str):
        super().__init__()
        self.shingles, self.threshold, self.stage = shingles, threshold, stage

    def expand(self, pairs):
        # (b, (a, shingle hashes of a)) for each candidate (a, b)
        forwarded = ({"pair": pairs, "shingles": self.shingles} | "JoinFirst" >> beam.CoGroupByKey()
                     | "Forward" >> beam.FlatMap(_forward_shingles))
        # (a, b) for each candidate at or above the threshold
        return ({"pair": forwarded, "shingles": self.shingles} | "JoinSecond" >> beam.CoGroupByKey()
                | "Compare" >> beam.ParDo(_CompareFn(self.threshold, self.stage)))


def _forward_shingles(item):
    a, joined = item
    partners = sorted(set(joined["pair"]))
    if not partners:
        return
    # one set per node (a page captured twice under one doc_id sends the same set twice)
    hashes = next(iter(joined["shingles"]))
    for b in partners:
        yield b, (a, hashes)


class _CompareFn(CountingDoFn):
    def __init__(self, threshold: float, stage: str):
        self.threshold, self.stage = threshold, stage

    def process(self, item):
        b, joined = item
        candidates = list(joined["pair"])
        if not candidates:
            return
        # shingle hashes are uint32 arrays, as signatures
        mine = signature_from_bytes(next(iter(joined["shingles"])))
        for a, theirs in candidates:
            self.funnel.inc("documents", "lsh_verified")
            if exact_jaccard(signature_from_bytes(theirs), mine) >= self.threshold:
                yield a, b
            else:
                self.funnel.inc("documents", "lsh_rejected")


def _cluster_verdicts(item):
    rep, joined = item
    labels, members = list(joined["label"]), sorted(joined["member"])
    if not labels and not members:
        return
    label = labels[0] if labels else rep
    survivor = _node_doc(label)
    yield _node_doc(rep), (survivor, None if label == rep else NEAR_DUPLICATE)
    # copies of the representative's text: exact duplicates of the survivor when the representative
    # survives, near duplicates of it otherwise (the survivor's text is then another text)
    reason = EXACT_DUPLICATE if label == rep else NEAR_DUPLICATE
    for node in members:
        yield _node_doc(node), (survivor, reason)


class _MarkDuplicatesFn(CountingDoFn):
    def process(self, item):
        doc_id, joined = item
        kept = []
        for doc in joined["doc"]:
            if doc.kept:
                kept.append(doc)
            else:
                yield doc  # dropped upstream: not ours to count
        if not kept:
            return
        kept.sort(key=_doc_order)
        verdicts = sorted(set(joined["verdict"]), key=lambda v: (v[0], v[1] or ""))
        survivor, reason = verdicts[0] if verdicts else (doc_id, None)
        self.funnel.inc("documents", "in", len(kept))
        first = kept[0]
        if reason is None:
            if verdicts or len(kept) > 1:
                first = replace(first, meta={**first.meta, CLUSTER_KEY: survivor})
            self.funnel.inc("documents", "out")
        else:
            first = replace(first, meta={**first.meta, CLUSTER_KEY: survivor}).dropped(reason)
            self.funnel.drop("documents", reason)
        yield first
        # the same doc_id again: the same page and content captured more than once
        for doc in kept[1:]:
            self.funnel.drop("documents", EXACT_DUPLICATE)
            yield replace(doc, meta={**doc.meta, CLUSTER_KEY: survivor}).dropped(EXACT_DUPLICATE)


# ---------------------------------------------------------------- repeated paragraphs per domain


class RemoveRepeatedParagraphs(beam.PTransform):
    """PCollection[Document] -> PCollection[Document]: kept text nodes whose normalised text appears in more
    than `max_documents` kept documents of the same domain are marked dropped ("repeated_paragraph") in
    every one of them, as OBELICS did per domain. Funnel: nodes.in / out / dropped (text nodes only)."""

    def __init__(self, config: ParagraphDedupConfig | None = None, *, stage: str = STAGE):
        super().__init__()
        self.config, self.stage = config or ParagraphDedupConfig(), stage

    def expand(self, docs):
        # (doc_id, Document): every input document, for the final join
        by_id = docs | "KeyById" >> beam.Map(lambda d: (d.doc_id, d))
        # ((domain, paragraph hash), doc_id), once per document and distinct kept paragraph
        refs = docs | "ParagraphRefs" >> beam.FlatMap(_paragraph_refs)
        # ((domain, paragraph hash), [doc_id])
        grouped = refs | "GroupByDomainParagraph" >> beam.GroupByKey()
        # (doc_id, paragraph hash) for paragraphs in more than max_documents documents
        repeated = grouped | "RepeatedParagraphs" >> beam.FlatMap(_repeated, self.config.max_documents)
        # (doc_id, {"doc": [documents], "repeated": [paragraph hashes]})
        joined = {"doc": by_id, "repeated": repeated} | "JoinRepeated" >> beam.CoGroupByKey()
        # Document with its repeated paragraphs dropped
        return joined | "DropRepeated" >> beam.ParDo(_DropRepeatedFn(self.stage))


def _paragraph_refs(doc: Document):
    if not doc.kept:
        return
    domain = url_domain(doc.url)
    if not domain:
        return
    hashes = {text_hash(n.text) for n in doc.nodes
              if n.is_text and n.kept and n.text and normalize_text(n.text)}
    for h in sorted(hashes):
        yield (domain, h), doc.doc_id


def _repeated(item, max_documents: int):
    (_, h), doc_ids = item
    seen = set()
    for d in doc_ids:
        seen.add(d)
        if len(seen) > max_documents:
            break
    else:
        return
    for d in set(doc_ids):
        yield d, h


class _DropRepeatedFn(CountingDoFn):
    def process(self, item):
        _, joined = item
        repeated = set(joined["repeated"])
        for doc in joined["doc"]:
            if not doc.kept:
                yield doc
                continue
            nodes, dropped = [], 0
            for node in doc.nodes:
                if node.is_text and node.kept:
                    self.funnel.inc("nodes", "in")
                    if repeated and node.text and text_hash(node.text) in repeated:
                        node = node.dropped(REPEATED_PARAGRAPH)
                        dropped += 1
                    else:
                        self.funnel.inc("nodes", "out")
                nodes.append(node)
            self.funnel.drop("nodes", REPEATED_PARAGRAPH, dropped)
            yield replace(doc, nodes=nodes) if dropped else doc


# ---------------------------------------------------------------- the stage


@dataclass(kw_only=True, frozen=True)
class DedupConfig:
    """The `[dedup]` section: documents before the fetch, images after it."""

    documents: DocumentDedupConfig = field(default_factory=DocumentDedupConfig)  # exact + MinHash near dups
    paragraphs: ParagraphDedupConfig = field(default_factory=ParagraphDedupConfig)  # per-domain repeats
    images: ImageDedupConfig = field(default_factory=ImageDedupConfig)  # sha256, pHash, frequency cap


class DedupDocumentsStage(Stage):
    """The document half of the dedup stage: duplicate documents, then paragraphs repeated in a domain."""

    name, label, units = STAGE, "DedupDocuments", ("documents", "nodes")

    def __init__(self, config: DedupConfig):
        super().__init__()
        self.config = config

    @classmethod
    def create(cls, config, context: RunContext) -> DedupDocumentsStage:
        return cls(config.dedup)

    def expand(self, streams):
        # Documents, duplicates and repeated paragraphs marked dropped
        marked = (streams[DOCUMENTS]
                  | "Documents" >> DedupDocuments(self.config.documents)
                  | "RepeatedParagraphs" >> RemoveRepeatedParagraphs(self.config.paragraphs))
        kept, rejected = split_kept(marked)
        return outputs(marked.pipeline, documents=kept, images=streams[IMAGES], rejected=rejected)
