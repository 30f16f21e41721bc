"""Deduplication of images inside the engine: exact copies, perceptual near duplicates (pHash), images
used by too many documents, and documents that share the same set of images.

Runs after DedupDocuments and RemoveRepeatedParagraphs (pipelines.dedup). It counts image records
(images.*) and image nodes (nodes.*) of the "dedup" funnel stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from itertools import islice

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from interleaf.filters.dedup_image import (
    first_common_key,
    hamming,
    image_set_key,
    is_phash,
    phash_band_keys,
    phash_hex,
    segment_bounds,
)
from interleaf.imagefile import ImageDecodeError
from interleaf.pipelines.common import CountingDoFn
from interleaf.pipelines.components import ConnectedComponents
from interleaf.pipelines.dedup_common import _KV, EXACT_DUPLICATE, NEAR_DUPLICATE, STAGE, _check_positive
from interleaf.pipelines.stage import DOCUMENTS, IMAGES, RunContext, Stage, outputs
from interleaf.schemas.document import Document
from interleaf.schemas.image import STATUS_OK, ImageRecord

log = logging.getLogger(__name__)

# reason codes (and EXACT_DUPLICATE, NEAR_DUPLICATE of pipelines.dedup_common)
IMAGE_TOO_FREQUENT = "image_too_frequent"  # image nodes
TOO_FREQUENT = "too_frequent"  # image records
DUPLICATE_IMAGE_SET = "duplicate_image_set"
DECODE_ERROR = "decode_error"  # image records
IMAGE_DECODE_ERROR = "image_decode_error"  # image nodes


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


class _MergeExactFn(CountingDoFn):
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


class _HammingPairsFn(CountingDoFn):
    """(segment key, [(node, phash)]) -> (node, node) pairs within max_hamming bits."""

    def __init__(self, config: ImageDedupConfig, stage: str):
        self.max_distance, self.per_key = config.max_hamming, config.segments_per_key
        self.limit, self.stage = config.bucket_pair_limit, stage

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


class _ResolveFn(CountingDoFn):
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


class _MarkImageNodesFn(CountingDoFn):
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


class _AssembleStoreFn(CountingDoFn):
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


class DedupImagesStage(Stage):
    """The image half of the dedup stage, after fetch (or on archived images): duplicate and too frequent
    images merged or dropped in the store and in the documents' image nodes."""

    name, label, units = STAGE, "DedupImages", ("images", "nodes")

    def __init__(self, config: ImageDedupConfig):
        super().__init__()
        self.config = config

    @classmethod
    def create(cls, config, context: RunContext) -> DedupImagesStage:
        return cls(config.dedup.images)

    def expand(self, streams):
        out = {DOCUMENTS: streams[DOCUMENTS], IMAGES: streams[IMAGES]} | "Images" >> DedupImages(self.config)
        return outputs(out[DOCUMENTS].pipeline, documents=out[DOCUMENTS], images=out[IMAGES])
