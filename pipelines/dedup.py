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

import logging
import typing
from dataclasses import dataclass, field, replace
from itertools import islice

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from interleaf.filters.dedup_image import (ImageDecodeError, first_common_key, hamming, image_set_key,
                                           is_phash, phash_band_keys, phash_hex, segment_bounds)
from interleaf.filters.dedup_text import (MinHashConfig, MinHasher, band_keys, estimated_jaccard,
                                          first_common_band, normalize_text, signature_from_bytes,
                                          signature_to_bytes, text_hash, url_domain, word_shingles)
from interleaf.pipelines.common import Funnel
from interleaf.schemas.document import Document
from interleaf.schemas.image import STATUS_OK, ImageRecord

log = logging.getLogger(__name__)

STAGE = "dedup"
# Main outputs of multi-output steps are (key, value) pairs; Beam's inference would see the TaggedOutputs.
_KV = tuple[typing.Any, typing.Any]

# reason codes
EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
REPEATED_PARAGRAPH = "repeated_paragraph"
IMAGE_TOO_FREQUENT = "image_too_frequent"  # image nodes
TOO_FREQUENT = "too_frequent"  # image records
DUPLICATE_IMAGE_SET = "duplicate_image_set"
DECODE_ERROR = "decode_error"  # image records
IMAGE_DECODE_ERROR = "image_decode_error"  # image nodes

CLUSTER_KEY = "dedup_cluster"  # Document.meta key: doc_id of the cluster's survivor


# ---------------------------------------------------------------- configuration


@dataclass(kw_only=True, frozen=True)
class DocumentDedupConfig:
    """Exact and near-duplicate documents."""

    # Shingles, permutations, Jaccard threshold and LSH band weights (see filters.dedup_text).
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    # Keep an LSH candidate pair only when its signatures agree on at least `threshold` of their positions.
    # Band collisions alone also pair documents below the threshold (with the default bands, 44% of pairs
    # at J=0.7); verification removes them, which is what lets the bands favour recall. False: every
    # candidate is a duplicate (datatrove's behaviour), more recall near the threshold, less precision.
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


@dataclass(kw_only=True, frozen=True)
class ImageDedupConfig:
    """Exact, perceptual and frequency dedup of the image store and the image nodes that use it."""

    # Images whose 64-bit pHashes differ in at most this many bits are one image. MMC4 used 5.
    max_hamming: int = 5
    # An image used by more than this many documents is a logo or icon: its nodes are dropped. "More than
    # 10" as OBELICS and MMC4.
    max_documents: int = 10
    # Documents whose set of kept images (after the mapping to representatives) equals another document's
    # lose their image nodes; the latest crawl keeps them, as OBELICS kept the latest document of a set
    # (build_obelisc/11_02). Only sets of at least this many images: OBELICS compared sets of any size, but
    # it dropped whole documents; dropping nodes, a one-image "set" would let every image illustrate one
    # document only, overruling max_documents. Two or more identical images mean a copied page or gallery.
    min_image_set_size: int = 2
    # Each candidate key combines this many pHash segments (filters.dedup_image): 2 gives 21 keys of ~18
    # bits at max_hamming 5, so uniformly spread hashes meet ~n/300,000 others per key (1: 6 keys, n/1,600).
    segments_per_key: int = 2
    # A key group with more images than this (many copies of one blank or logo image) is linked as a star
    # around its smallest node instead of comparing all pairs (see DocumentDedupConfig.bucket_pair_limit).
    bucket_pair_limit: int = 100
    # Rounds of connected components over near-duplicate images (see DocumentDedupConfig.max_rounds).
    max_rounds: int = 12

    def __post_init__(self):
        if not 0 <= self.max_hamming < 64:
            raise ValueError(f"ImageDedupConfig.max_hamming must lie in 0..63 bits, found {self.max_hamming}")
        _check_positive("ImageDedupConfig", max_documents=self.max_documents,
                        min_image_set_size=self.min_image_set_size, segments_per_key=self.segments_per_key,
                        bucket_pair_limit=self.bucket_pair_limit, max_rounds=self.max_rounds)
        segment_bounds(self.max_hamming, self.segments_per_key)  # raises when they do not fit 64 bits


def _check_positive(where: str, **values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{where}.{name} must be at least 1, found {value}")


# ---------------------------------------------------------------- connected components

class ConnectedComponents(beam.PTransform):
    """Edges (u, v) between string node ids -> (node, label) for every node of an edge, where label is the
    smallest node id of the node's connected component.

    The alternating algorithm of Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC
    2014), as a bounded loop of Beam steps: each round is a large-star step (every node links its larger
    neighbours to the smallest node of its neighbourhood) and a small-star step (every node links itself
    and its smaller neighbours to the smallest of them), one GroupByKey each. Connectivity is preserved,
    and the edges converge to one star per component around its smallest node, in O(log^2 n) rounds (a
    path of 256 nodes in random order takes 8, of 4,096 takes 11). A node holds only its neighbours, so
    the largest group is the centre of one component.

    Each round counts the edges it changed (info counter `<unit>.cc_roundNN_changed`); a round that
    changes nothing proves convergence (the edge set is then a fixed point). Edges still changing in the
    last round are counted as `<unit>.cc_unconverged` and logged: every label is still a node of the same
    component, so an unfinished run splits clusters (less dedup), it never merges different ones.
    """

    def __init__(self, *, max_rounds: int, stage: str = STAGE, unit: str = "documents"):
        super().__init__()
        self.max_rounds, self.stage, self.unit = max_rounds, stage, unit

    def expand(self, edges):
        # (smaller node, larger node), self-loops left out
        current = edges | "Orient" >> beam.FlatMap(lambda e: [(min(e), max(e))] if e[0] != e[1] else [])
        for k in range(1, self.max_rounds + 1):
            current = current | f"Round{k:02d}" >> _StarRound(k, k == self.max_rounds, self.stage, self.unit)
        # (node, neighbours) from both ends of the final edges
        final = (current | "BothEnds" >> beam.FlatMap(_both_ends)
                 | "GroupFinalNeighbours" >> beam.GroupByKey())
        # (node, smallest of itself and its neighbours): the star's centre
        return final | "Label" >> beam.Map(lambda kv: (kv[0], min(min(kv[1]), kv[0])))


def _both_ends(edge):
    return (edge[0], edge[1]), (edge[1], edge[0])


class _StarRound(beam.PTransform):
    """One large-star and one small-star step: oriented edges (u < v) in, oriented edges out."""

    def __init__(self, k: int, last: bool, stage: str, unit: str):
        super().__init__()
        self.k, self.last, self.stage, self.unit = k, last, stage, unit

    def expand(self, edges):
        # (node, all its neighbours)
        around = edges | "BothEnds" >> beam.FlatMap(_both_ends) | "GroupNeighbours" >> beam.GroupByKey()
        # (smaller node, larger node) after the large-star step
        large = around | "LargeStar" >> beam.ParDo(_StarFn(self.k, False, False, self.stage, self.unit))
        # (node, its smaller neighbours)
        below = (large | "KeyByLargerEnd" >> beam.Map(lambda e: (e[1], e[0]))
                 | "GroupSmallerNeighbours" >> beam.GroupByKey())
        # (smaller node, larger node) after the small-star step
        return below | "SmallStar" >> beam.ParDo(_StarFn(self.k, True, self.last, self.stage, self.unit))


class _StarFn(beam.DoFn):
    """Large star: (u, neighbours) -> (m, v) for each neighbour v > u, m the smallest of u and its
    neighbours. Small star: (u, smaller neighbours) -> (m, v) for u and each smaller neighbour v other than
    m, m the smallest of them. An edge is changed when it does not come out as it went in."""

    def __init__(self, k: int, small: bool, last: bool, stage: str, unit: str):
        self.k, self.small, self.last, self.stage, self.unit = k, small, last, stage, unit

    def setup(self):
        self.funnel = Funnel(self.stage)
        self.unconverged = 0

    def start_bundle(self):
        self.unconverged = 0

    def process(self, item):
        u, neighbours = item
        nbrs = set(neighbours)
        m = min(min(nbrs), u)
        if self.small:
            changed = len(nbrs) - 1  # every smaller neighbour but m moves from u to m
            for v in sorted(nbrs | {u}):
                if v != m:
                    yield m, v
        else:
            larger = sorted(v for v in nbrs if v > u)
            changed = len(larger) if m != u else 0
            for v in larger:
                yield m, v
        if changed:
            self.funnel.inc(self.unit, f"cc_round{self.k:02d}_changed", changed)
            if self.last:
                self.funnel.inc(self.unit, "cc_unconverged", changed)
                self.unconverged += changed

    def finish_bundle(self):
        if self.unconverged:
            log.warning("connected components: %d edges still changing after %d rounds (clusters may be "
                        "split); raise max_rounds", self.unconverged, self.k)


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
    duplicates (estimated Jaccard of word shingles >= threshold, transitively: chains A~B~C form one
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
        sketches = docs | "Sketch" >> beam.ParDo(_SketchFn(cfg.minhash, self.stage))
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
        # (node, node): candidate pairs that pass verification, each pair once
        edges = buckets | "VerifyCandidates" >> beam.ParDo(_VerifyBucketFn(cfg, bands, rows, self.stage))
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


class _SketchFn(beam.DoFn):
    def __init__(self, config: MinHashConfig, stage: str):
        self.config, self.stage = config, stage

    def setup(self):
        self.hasher = MinHasher(self.config.num_perm, self.config.seed)
        self.funnel = Funnel(self.stage)

    def process(self, doc: Document):
        if not doc.kept:
            return
        text = doc.text()
        norm = normalize_text(text)
        if not norm:
            self.funnel.inc("documents", "no_text")  # image-only pages: nothing to compare
            return
        signature = self.hasher.signature(word_shingles(norm, self.config.ngram, normalized=True))
        yield (text_hash(norm, normalized=True),
               (_doc_node(len(text), doc.doc_id), signature_to_bytes(signature)))


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


class _VerifyBucketFn(beam.DoFn):
    """(band key, [(node, signature)]) -> (node, node) pairs of the bucket that pass verification."""

    def __init__(self, config: DocumentDedupConfig, bands: int, rows: int, stage: str):
        self.threshold, self.verify = config.minhash.threshold, config.verify_candidates
        self.limit, self.bands, self.rows, self.stage = config.bucket_pair_limit, bands, rows, stage

    def setup(self):
        self.funnel = Funnel(self.stage)

    def _similar(self, a, b) -> bool:
        if not self.verify or estimated_jaccard(a, b) >= self.threshold:
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


class _MarkDuplicatesFn(beam.DoFn):
    def __init__(self, stage: str):
        self.stage = stage

    def setup(self):
        self.funnel = Funnel(self.stage)

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


class _DropRepeatedFn(beam.DoFn):
    def __init__(self, stage: str):
        self.stage = stage

    def setup(self):
        self.funnel = Funnel(self.stage)

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


# ---------------------------------------------------------------- images

_MAX_AREA = 10**15 - 1


def _image_node(record: ImageRecord) -> str:
    """Graph node id of an image; ordering by it ranks the representative first: the largest stored image
    (width x height), then the smallest sha256."""
    area = (record.width or 0) * (record.height or 0)
    return f"{_MAX_AREA - min(area, _MAX_AREA):015d}:{record.sha256}"


def _node_sha(node: str) -> str:
    return node.split(":", 1)[1]


class DedupImages(beam.PTransform):
    """{"documents": PCollection[Document], "images": PCollection[ImageRecord]} -> the same two keys.

    Images (records with status "ok"; others pass through uncounted):
    - copies with the same sha256 become one record with the union of their URLs ("exact_duplicate");
    - records whose pHashes are within `max_hamming` bits, transitively, map to one representative (the
      largest, then the smallest sha256), which keeps the URLs of all ("near_duplicate");
    - a representative used by more than `max_documents` documents leaves the store ("too_frequent");
    - bytes that cannot be decoded for a pHash keep a row with status "decode_error".
    Image nodes of kept documents (those with an image_sha256 that is in the store):
    - re-pointed to their representative (info counter nodes.repointed);
    - dropped "image_too_frequent" or "image_decode_error" with their image;
    - dropped "duplicate_image_set" when the document's set of images equals another document's and that
      document was crawled later (or equally late with a smaller doc_id). The document keeps its text:
      it reaches this stage after DedupDocuments, so its text is not a copy; only its images are.
    Funnel: images.* for records, nodes.* for image nodes.
    """

    def __init__(self, config: ImageDedupConfig | None = None, *, stage: str = STAGE):
        super().__init__()
        self.config, self.stage = config or ImageDedupConfig(), stage

    def expand(self, inputs):
        cfg, stage = self.config, self.stage
        docs, images = inputs["documents"], inputs["images"]

        # -- the store
        # main: records with status ok and a sha256; "other": the rest, passed through
        split = images | "SplitUsable" >> beam.ParDo(_SplitUsableFn()).with_outputs("other", main="usable")
        # (sha256, [ImageRecord]): copies of the same bytes together
        by_sha = (split.usable | "KeyBySha" >> beam.Map(lambda r: (r.sha256, r))
                  | "GroupBySha" >> beam.GroupByKey())
        # main: one merged ImageRecord per sha256, with its pHash; "failed": records that did not decode
        merged = by_sha | "MergeExact" >> beam.ParDo(_MergeExactFn(stage)).with_outputs("failed", main="ok")
        # (segment key, (node, phash)) for each combination of pHash segments
        banded = merged.ok | "PhashKeys" >> beam.FlatMap(_phash_entries, cfg.max_hamming,
                                                         cfg.segments_per_key)
        # (segment key, [(node, phash)]): the candidates of one key
        buckets = banded | "GroupBySegments" >> beam.GroupByKey()
        # (node, node): pairs within max_hamming bits
        edges = buckets | "VerifyHamming" >> beam.ParDo(_HammingPairsFn(cfg, stage))
        # (node, component label = the representative's node)
        labels = edges | "Components" >> ConnectedComponents(max_rounds=cfg.max_rounds, stage=stage,
                                                             unit="images")
        # (sha256, representative sha256) for images with near duplicates
        reps = labels | "RepresentativeSha" >> beam.Map(lambda kv: (_node_sha(kv[0]), _node_sha(kv[1])))
        # (sha256, {"record": [merged record], "rep": [representative]})
        joined = ({"record": merged.ok | "KeyMergedBySha" >> beam.Map(lambda r: (r.sha256, r)), "rep": reps}
                  | "JoinRepresentatives" >> beam.CoGroupByKey())
        # main: (representative sha256, ("record", ImageRecord) or ("urls", [url])) to assemble the store;
        # "resolution": (sha256, representative sha256) for every usable sha256
        resolved = joined | "Resolve" >> beam.ParDo(_ResolveFn(stage)).with_output_types(_KV).with_outputs(
            "resolution", main="entries")
        # (sha256, None) for records that could not be decoded
        undecodable = merged.failed | "ResolveFailed" >> beam.Map(lambda r: (r.sha256, None))
        resolution = (resolved.resolution, undecodable) | "AllResolutions" >> beam.Flatten()

        # -- the documents' references
        # (sha256, (doc_id, node index, crawl date)) for kept image nodes of kept documents
        refs = docs | "ImageRefs" >> beam.FlatMap(_image_refs)
        # (sha256, {"rep": [representative or None], "ref": [references]})
        ref_joined = {"rep": resolution, "ref": refs} | "JoinRefsToStore" >> beam.CoGroupByKey()
        # main: (representative, reference); "verdict": decode-error verdicts
        by_rep = ref_joined | "MapRefsToRepresentative" >> beam.FlatMap(_refs_to_rep).with_output_types(
            _KV).with_outputs("verdict", main="refs")
        # (representative, [references])
        per_image = by_rep.refs | "GroupByRepresentative" >> beam.GroupByKey()
        # main: (doc_id, (node index, new sha256 or None, reason or None, crawl date)); "frequent":
        # (representative, True) for images used by more than max_documents documents
        capped = per_image | "CapFrequency" >> beam.FlatMap(
            _cap_frequency, cfg.max_documents).with_output_types(_KV).with_outputs("frequent",
                                                                                   main="verdicts")
        verdicts = (capped.verdicts, by_rep.verdict) | "AllVerdicts" >> beam.Flatten()
        # (image set key, (crawl date, doc_id)) for documents with at least min_image_set_size kept images
        image_sets = (verdicts | "GroupVerdictsByDoc" >> beam.GroupByKey()
                      | "ImageSetKeys" >> beam.FlatMap(_image_set_entry, cfg.min_image_set_size))
        # (doc_id, True) for documents whose image set another, later document keeps
        set_dups = (image_sets | "GroupByImageSet" >> beam.GroupByKey()
                    | "DuplicateSets" >> beam.FlatMap(_duplicate_sets))
        # (doc_id, {"doc": [documents], "verdict": [...], "set_dup": [...]})
        by_id = docs | "KeyById" >> beam.Map(lambda d: (d.doc_id, d))
        doc_joined = ({"doc": by_id, "verdict": verdicts, "set_dup": set_dups}
                      | "JoinImageVerdicts" >> beam.CoGroupByKey())
        # Document with its image nodes re-pointed or dropped
        out_docs = doc_joined | "MarkImageNodes" >> beam.ParDo(_MarkImageNodesFn(stage))

        # -- the store, assembled: (representative, {"entry": [...], "frequent": [...]}) -> ImageRecord
        store = ({"entry": resolved.entries, "frequent": capped.frequent}
                 | "JoinFrequency" >> beam.CoGroupByKey()
                 | "AssembleStore" >> beam.ParDo(_AssembleStoreFn(stage)))
        out_images = (store, merged.failed, split.other) | "AllImages" >> beam.Flatten()
        return {"documents": out_docs, "images": out_images}


class _SplitUsableFn(beam.DoFn):
    def process(self, record: ImageRecord):
        if record.status == STATUS_OK and record.sha256:
            yield record
        else:
            yield TaggedOutput("other", record)


class _MergeExactFn(beam.DoFn):
    def __init__(self, stage: str):
        self.stage = stage

    def setup(self):
        self.funnel = Funnel(self.stage)

    def process(self, item):
        sha, records = item
        # the most complete copy first, then a fixed order, so any worker picks the same one
        records = sorted(records, key=lambda r: (r.data is None, not is_phash(r.phash), sorted(r.urls),
                                                 r.source or "", r.format or "", r.width or 0, r.height or 0))
        self.funnel.inc("images", "in", len(records))
        self.funnel.drop("images", EXACT_DUPLICATE, len(records) - 1)
        base = records[0]
        urls = sorted({u for r in records for u in r.urls})
        phash = base.phash if is_phash(base.phash) else None
        if phash is None:
            try:
                if base.data is None:
                    raise ImageDecodeError("no stored bytes and no pHash")
                phash = phash_hex(base.data)
            except ImageDecodeError as e:
                log.warning("image %s: %s", sha, e)
                self.funnel.drop("images", DECODE_ERROR)
                yield TaggedOutput("failed", replace(base, urls=urls, status=DECODE_ERROR, error=str(e)))
                return
        yield replace(base, urls=urls, phash=phash.lower())


def _phash_entries(record: ImageRecord, max_distance: int, per_key: int):
    node = _image_node(record)
    for key in phash_band_keys(record.phash, max_distance, per_key):
        yield key, (node, record.phash)


class _HammingPairsFn(beam.DoFn):
    """(segment key, [(node, phash)]) -> (node, node) pairs within max_hamming bits."""

    def __init__(self, config: ImageDedupConfig, stage: str):
        self.max_distance, self.per_key = config.max_hamming, config.segments_per_key
        self.limit, self.stage = config.bucket_pair_limit, stage

    def setup(self):
        self.funnel = Funnel(self.stage)

    def process(self, item):
        key, members = item
        index = int.from_bytes(key[:2], "big")
        head = dict(islice(members, self.limit + 1))
        if len(head) <= self.limit:
            nodes = sorted(head)
            keys = [phash_band_keys(head[n], self.max_distance, self.per_key) for n in nodes]
            for i in range(len(nodes)):
                for j in range(i + 1, len(nodes)):
                    # a pair sharing several keys is handled under the first of them only
                    if (first_common_key(keys[i], keys[j]) == index
                            and hamming(head[nodes[i]], head[nodes[j]]) <= self.max_distance):
                        yield nodes[i], nodes[j]
            return
        # a large group: a star around its smallest node (see _VerifyBucketFn)
        self.funnel.inc("images", "phash_bucket_capped")
        center = min(node for node, _ in members)
        center_hash = next(h for node, h in members if node == center)
        for node, h in members:
            if node != center and hamming(center_hash, h) <= self.max_distance:
                yield center, node


class _ResolveFn(beam.DoFn):
    def __init__(self, stage: str):
        self.stage = stage

    def setup(self):
        self.funnel = Funnel(self.stage)

    def process(self, item):
        sha, joined = item
        (record,) = joined["record"]
        reps = list(joined["rep"])
        rep = reps[0] if reps else sha
        yield TaggedOutput("resolution", (sha, rep))
        if rep == sha:
            yield sha, ("record", record)
        else:
            self.funnel.drop("images", NEAR_DUPLICATE)
            yield rep, ("urls", record.urls)


def _image_refs(doc: Document):
    if not doc.kept:
        return
    crawl = doc.crawl_date.isoformat() if doc.crawl_date else ""
    for i, node in enumerate(doc.nodes):
        if node.is_image and node.kept and node.image_sha256:
            yield node.image_sha256, (doc.doc_id, i, crawl)


def _refs_to_rep(item):
    _, joined = item
    reps = list(joined["rep"])
    # not in the store (or not usable there): the node is left as it is
    if not reps:
        return
    rep = reps[0]
    for doc_id, i, crawl in joined["ref"]:
        if rep is None:
            yield TaggedOutput("verdict", (doc_id, (i, None, IMAGE_DECODE_ERROR, crawl)))
        else:
            yield rep, (doc_id, i, crawl)


def _cap_frequency(item, max_documents: int):
    rep, refs = item
    seen = set()
    for doc_id, _, _ in refs:
        seen.add(doc_id)
        if len(seen) > max_documents:
            break
    too_frequent = len(seen) > max_documents
    if too_frequent:
        yield TaggedOutput("frequent", (rep, True))
    for doc_id, i, crawl in refs:
        if too_frequent:
            yield doc_id, (i, None, IMAGE_TOO_FREQUENT, crawl)
        else:
            yield doc_id, (i, rep, None, crawl)


def _image_set_entry(item, min_size: int):
    doc_id, verdicts = item
    verdicts = list(verdicts)
    kept = {sha for _, sha, reason, _ in verdicts if reason is None}
    if len(kept) >= min_size:
        yield image_set_key(sorted(kept)), (max(v[3] for v in verdicts), doc_id)


def _duplicate_sets(item):
    _, members = item
    members = sorted(set(members), key=lambda m: m[1])  # by doc_id
    if len(members) < 2:
        return
    keeper = max(members, key=lambda m: m[0])  # the latest crawl; the first (smallest doc_id) among equals
    for crawl, doc_id in members:
        if doc_id != keeper[1]:
            yield doc_id, True


class _MarkImageNodesFn(beam.DoFn):
    def __init__(self, stage: str):
        self.stage = stage

    def setup(self):
        self.funnel = Funnel(self.stage)

    def process(self, item):
        _, joined = item
        by_index = {i: (sha, reason) for i, sha, reason, _ in sorted(set(joined["verdict"]))}
        set_dup = bool(list(joined["set_dup"]))
        for doc in joined["doc"]:
            if not doc.kept:
                yield doc
                continue
            nodes, changed = [], False
            for i, node in enumerate(doc.nodes):
                if node.is_image and node.kept:
                    self.funnel.inc("nodes", "in")
                    sha, reason = by_index.get(i, (None, None))
                    if reason is None and sha is not None and set_dup:
                        reason = DUPLICATE_IMAGE_SET
                    if reason is not None:
                        node = node.dropped(reason)
                        self.funnel.drop("nodes", reason)
                        changed = True
                    else:
                        if sha is not None and sha != node.image_sha256:
                            node = replace(node, image_sha256=sha)
                            self.funnel.inc("nodes", "repointed")
                            changed = True
                        self.funnel.inc("nodes", "out")
                nodes.append(node)
            yield replace(doc, nodes=nodes) if changed else doc


class _AssembleStoreFn(beam.DoFn):
    def __init__(self, stage: str):
        self.stage = stage

    def setup(self):
        self.funnel = Funnel(self.stage)

    def process(self, item):
        rep, joined = item
        record, urls = None, set()
        for kind, value in joined["entry"]:
            if kind == "record":
                record = value
            else:
                urls.update(value)
        if record is None:  # not expected: a representative is always one of the merged records
            log.error("image %s: near duplicates point at it but its record is missing", rep)
            self.funnel.inc("images", "missing_representative")
            return
        if list(joined["frequent"]):
            self.funnel.drop("images", TOO_FREQUENT)
            return
        self.funnel.inc("images", "out")
        yield replace(record, urls=sorted(urls.union(record.urls))) if urls else record
