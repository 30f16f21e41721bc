"""The ingest stage: WARC files, or OBELICS / MMC4 documents, to clean ordered Documents.

    inputs ─ ReadWarc ─┬ pages ──── ExtractPages ──┬─────────────── documents ─┐
                       ├ page revisits ────────────┴ ResolveRevisits ┘          ├ ResolveArchivedImages ─ FilterDocuments ─ kept / rejected
                       ├ images + image revisits ─ ArchivedImages ─ image records ┘
    inputs ─ ReadInterleaved ─ documents ──────────────────────────────────────┘

Every record, document, node and archived image is counted in the funnel (stage "ingest", units records,
documents, nodes, images) so that in = out + sum(dropped) for each.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace

import apache_beam as beam
from apache_beam import pvalue

from interleaf import storage
from interleaf.download.consent import DEFAULT_DISALLOWED_DIRECTIVES
from interleaf.filters.blocklist import Blocklist, BlocklistConfig, load_blocklist
from interleaf.filters.charset import decode_html_as
from interleaf.filters.html import ExtractConfig, PageRefused, extract
from interleaf.filters.language import LanguageConfig, identify, language_failure
from interleaf.filters.quality import QualityConfig
from interleaf.filters.quality import apply as apply_quality
from interleaf.filters.tdm import TDM_RESERVED, page_reservation
from interleaf.pipelines.archived import REFUSED_URLS, ArchiveConsent, ArchivedImages, ResolveArchivedImages
from interleaf.pipelines.common import CountingDoFn, ReadShards
from interleaf.pipelines.ingest_rows import ReadInterleaved
from interleaf.pipelines.stage import FAILED, SHARDS_FORMAT, RunContext, Stage, outputs
from interleaf.readers import ROW_FORMATS, formats
from interleaf.readers.rows import DEFAULT_MAX_ROW_BYTES
from interleaf.readers.warc import DEFAULT_MAX_BYTES, PAGE, Skipped, WarcItem, iter_warc
from interleaf.schemas.document import (
    DOCUMENT_SCHEMA,
    Document,
    documents_from_table,
    make_doc_id,
)
from interleaf.schemas.image import IMAGE_SCHEMA, images_from_table

log = logging.getLogger(__name__)

STAGE = "ingest"


@dataclass(kw_only=True)
class IngestConfig:
    input_format: str | None = None  # "warc", "obelics", "mmc4" (readers.formats()); None detects per file
    extract: ExtractConfig = field(default_factory=ExtractConfig)  # HTML to nodes
    # language identification and the keep list, before the quality rules (whose stop-word rule reads it)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)  # node and document rules
    keep_dropped_nodes: bool = False  # keep filtered nodes (with reasons) inside kept documents, for audit
    # Rows of JSONL/JSON/Parquet inputs longer than this are dropped unread (too_large), so memory per row
    # stays bounded; an OBELICS document is rarely above 1 MB.
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES
    # A WARC record whose payload is larger than this, as stored or once its content encodings are undone,
    # is dropped (too_large) after reading at most this many bytes: a 1 KB gzip bomb costs no more.
    max_record_bytes: int = DEFAULT_MAX_BYTES
    # Honour TDM reservations and noai / noimageai of archived pages (filters/tdm.py): reserved pages are
    # dropped, and the images of pages that reserve their images (reason tdm_reserved). The robots meta
    # tags addressed to a crawler by name use the fetch stage's user_agent_token.
    respect_tdm: bool = True
    # Archived images whose header declares more pixels than this are not stored (decompression bombs);
    # 20,000 x 20,000 is OBELICS's largest accepted side squared.
    max_image_pixels: int = 20_000 * 20_000

    def validate(self) -> None:
        self.language.validate()
        if self.max_row_bytes < 1024 or self.max_record_bytes < 1024:
            raise ValueError(f"max_row_bytes and max_record_bytes must be at least 1024, found "
                             f"{self.max_row_bytes} and {self.max_record_bytes}")
        seconds = self.extract.max_seconds
        if seconds is not None and not (isinstance(seconds, (int, float)) and 0 < seconds < float("inf")):
            raise ValueError(f"ingest.extract.max_seconds must be a positive number of seconds, found "
                             f"{seconds!r}")
        if self.input_format is not None and self.input_format not in formats():
            raise ValueError(f"input format must be one of {', '.join(formats())}, found "
                             f"{self.input_format!r}")


# ---------------------------------------------------------------- format detection


# ---------------------------------------------------------------- reading WARCs

PAGES, PAGE_REVISITS, IMAGES, IMAGE_REVISITS = "pages", "page_revisits", "images", "image_revisits"


class _ReadWarcFile(CountingDoFn):
    """A WARC path to its pages, images and revisits (tagged outputs); every other record counted."""

    stage = STAGE

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes

    def process(self, path: str):
        try:
            stream = storage.open_read(path)
        except OSError as e:  # gone or unreadable since the run listed it: one counted record, not a crash
            log.warning("%s: cannot be read: %s", path, e)
            self.funnel.inc("records", "in")
            self.funnel.drop("records", "unreadable_file")
            return
        with stream:
            for item in iter_warc(stream, os.path.basename(path), self.max_bytes):
                self.funnel.inc("records", "in")
                if isinstance(item, Skipped):
                    self.funnel.drop("records", item.reason)
                    continue
                self.funnel.inc("records", "out")
                if item.kind == PAGE:
                    yield pvalue.TaggedOutput(PAGE_REVISITS if item.revisit else PAGES, item)
                else:
                    yield pvalue.TaggedOutput(IMAGE_REVISITS if item.revisit else IMAGES, item)


class ReadWarc(beam.PTransform):
    """WARC file paths to tagged WarcItems: pages, page_revisits, images, image_revisits."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        super().__init__()
        self.max_bytes = max_bytes

    def expand(self, paths):
        # one WARC path per element, spread over workers
        return (paths
                | "Spread" >> beam.Reshuffle()
                | "ReadRecords" >> beam.ParDo(_ReadWarcFile(self.max_bytes)).with_outputs(
                    PAGES, PAGE_REVISITS, IMAGES, IMAGE_REVISITS))


# ---------------------------------------------------------------- pages to documents


def page_to_document(item: WarcItem, config: ExtractConfig,
                     user_agent_token: str | None = None) -> tuple[Document, dict[str, int]]:
    """One archived HTML page to a Document (all nodes kept) and the extractor's left-out counts. With a
    user-agent token, TDM reservations and noai / noimageai (filters/tdm.py) drop the document or its
    images with reason tdm_reserved."""
    html, encoding = decode_html_as(item.body, item.content_type)
    try:
        result = extract(html, item.url, config, encoding)
    except PageRefused as e:  # too deep, too slow: a dropped document without nodes, under its reason
        log.debug("%s: %s", item.url, e)
        return Document(doc_id=make_doc_id(item.url, []), url=item.url, source_file=item.source_file,
                        source_offset=item.offset, crawl_date=item.date).dropped(e.reason), {}
    doc = Document(doc_id=make_doc_id(item.url, result.nodes), url=item.url, source_file=item.source_file,
                   source_offset=item.offset, crawl_date=item.date, language=result.language,
                   nodes=result.nodes)
    if result.title:
        doc.meta["title"] = result.title
    if user_agent_token is not None:
        page_reserved, images_reserved = page_reservation(item.consent, result.meta, user_agent_token)
        if page_reserved:
            doc = doc.dropped(TDM_RESERVED)
        elif images_reserved:
            doc = replace(doc, nodes=[n.dropped(TDM_RESERVED) if n.is_image else n for n in doc.nodes])
    return doc, dict(result.dropped)


class _ExtractPages(CountingDoFn):
    """WarcItem pages to (payload digest, Document); boilerplate left out counted as dropped nodes."""

    stage = STAGE

    def __init__(self, config: ExtractConfig, user_agent_token: str | None):
        self.config, self.user_agent_token = config, user_agent_token

    def process(self, item: WarcItem):
        self.funnel.inc("documents", "in")
        doc, left_out = page_to_document(item, self.config, self.user_agent_token)
        self.funnel.inc("nodes", "in", len(doc.nodes) + sum(left_out.values()))
        for reason, n in left_out.items():
            self.funnel.drop("nodes", reason, n)
        yield item.payload_digest, doc


class _ResolveRevisit(CountingDoFn):
    """(digest, {"originals": [Document], "revisits": [WarcItem]}) to one Document per revisit: the
    original's content under the revisit's URL and date."""

    stage = STAGE

    def __init__(self, user_agent_token: str | None):
        self.user_agent_token = user_agent_token

    def process(self, element):
        _, group = element
        originals = sorted(group["originals"], key=lambda d: d.doc_id)
        for rev in group["revisits"]:
            self.funnel.inc("documents", "in")
            if not originals:
                self.funnel.drop("documents", "revisit_unresolved")
                continue
            nodes = [replace(n) for n in originals[0].nodes]
            self.funnel.inc("nodes", "in", len(nodes))
            doc = Document(doc_id=make_doc_id(rev.url, nodes), url=rev.url, source_file=rev.source_file,
                           source_offset=rev.offset, crawl_date=rev.date, language=originals[0].language,
                           nodes=nodes, meta={**originals[0].meta, "revisit_of": originals[0].url})
            # a reserved original stays reserved; the revisit's own headers may reserve it, or its images, too
            page_reserved, images_reserved = (page_reservation(rev.consent, [], self.user_agent_token)
                                              if self.user_agent_token is not None else (False, False))
            if originals[0].reason == TDM_RESERVED or page_reserved:
                doc = doc.dropped(TDM_RESERVED)
            elif images_reserved:
                doc = replace(doc, nodes=[n.dropped(TDM_RESERVED) if n.is_image and n.kept else n
                                          for n in doc.nodes])
            yield doc


class ExtractPages(beam.PTransform):
    """Pages and page revisits to Documents; a revisit takes its content from the original with the same
    payload digest anywhere in the input."""

    def __init__(self, config: ExtractConfig, user_agent_token: str | None = None):
        super().__init__()
        self.config, self.user_agent_token = config, user_agent_token  # None: TDM reservations not read

    def expand(self, inputs):
        pages, revisits = inputs
        # (payload digest, Document) for every page
        by_digest = pages | "Extract" >> beam.ParDo(_ExtractPages(self.config, self.user_agent_token))
        documents = by_digest | "Documents" >> beam.Values()
        # (payload digest, True) for every digest some revisit refers to: only those originals are joined
        wanted = (revisits | "RevisitDigest" >> beam.Map(lambda r: (r.payload_digest, True))
                  | "DistinctDigests" >> beam.Distinct())
        # (payload digest, Document) of the originals that are referenced
        originals = by_digest | "ReferencedOriginals" >> beam.Filter(
            lambda kv, digests: kv[0] in digests, digests=beam.pvalue.AsDict(wanted))
        resolved = ({"originals": originals,
                     "revisits": revisits | "KeyRevisits" >> beam.Map(lambda r: (r.payload_digest, r))}
                    | "JoinRevisits" >> beam.CoGroupByKey()
                    | "Resolve" >> beam.ParDo(_ResolveRevisit(self.user_agent_token)))
        return (documents, resolved) | "AllDocuments" >> beam.Flatten()


# ---------------------------------------------------------------- filtering

KEPT_TAG, REJECTED_TAG = "kept", "rejected"


def filter_document(doc: Document, config: QualityConfig, language: LanguageConfig,
                    blocklist: Blocklist | None) -> Document:
    """One document through the ingest filters, as the stage runs them: its URL against the blocklist, its
    blocked images dropped, its language identified and checked against the keep list, the quality rules.
    A document dropped before (too_deep) keeps its reason."""
    blocked = blocklist.match(doc.url) if blocklist is not None and doc.kept else None
    if blocked is not None:
        return doc.dropped(blocked[0])
    if not doc.kept:
        return doc
    if blocklist is not None:
        doc = _drop_blocked_images(doc, blocklist)
    if language.identify:
        doc = identify(doc, language)
    reason = language_failure(doc, language)
    return doc.dropped(reason) if reason else apply_quality(doc, config)


def _drop_blocked_images(doc: Document, blocklist: Blocklist) -> Document:
    """The document with its kept image nodes whose URL is blocked dropped under the list's reason (the
    fetch stage would refuse them; a run without it keeps no node it could not fetch)."""
    nodes, changed = [], False
    for n in doc.nodes:
        hit = blocklist.match(n.image_url) if n.is_image and n.kept and n.image_url else None
        if hit is not None:
            n, changed = n.dropped(hit[0]), True
        nodes.append(n)
    return replace(doc, nodes=nodes) if changed else doc


class _Filter(CountingDoFn):
    """Document to the kept output (dropped nodes stripped unless audited) or the rejected output: its URL
    against the blocklist first (filters/blocklist.py), then its language identified (filters/language.py)
    and the keep list, then the quality rules."""

    stage = STAGE

    def __init__(self, config: QualityConfig, keep_dropped_nodes: bool,
                 language: LanguageConfig | None = None, blocklist: BlocklistConfig | None = None):
        self.config, self.keep_dropped_nodes = config, keep_dropped_nodes
        self.language = language or LanguageConfig(identify=False)
        self.blocklist_config = blocklist or BlocklistConfig(ut1=False, banned_url_words=False)

    def setup(self):
        super().setup()
        self.blocklist = load_blocklist(self.blocklist_config)  # once per process, shared by its threads

    def process(self, doc: Document):
        doc = filter_document(doc, self.config, self.language, self.blocklist)
        for n in doc.nodes:  # every node entered the funnel as "in"; the dropped ones leave by their reason
            if not n.kept:
                self.funnel.drop("nodes", n.reason)
        kept_nodes = sum(1 for n in doc.nodes if n.kept)
        if not doc.kept:
            self.funnel.drop("documents", doc.reason)
            self.funnel.drop("nodes", "document_dropped", kept_nodes)
            yield pvalue.TaggedOutput(REJECTED_TAG, doc)
            return
        self.funnel.inc("documents", "out")
        self.funnel.inc("nodes", "out", kept_nodes)
        yield doc if self.keep_dropped_nodes else doc.kept_nodes()



class FilterDocuments(beam.PTransform):
    """Documents through the quality rules: outputs "kept" and "rejected" (with reasons)."""

    def __init__(self, config: QualityConfig, keep_dropped_nodes: bool = False,
                 language: LanguageConfig | None = None, blocklist: BlocklistConfig | None = None):
        super().__init__()
        self.config, self.keep_dropped_nodes, self.language = config, keep_dropped_nodes, language
        self.blocklist = blocklist

    def expand(self, docs):
        return docs | "Rules" >> beam.ParDo(_Filter(self.config, self.keep_dropped_nodes, self.language,
                                                    self.blocklist)).with_outputs(REJECTED_TAG, main=KEPT_TAG)


# ---------------------------------------------------------------- the stage


class Ingest(beam.PTransform):
    """Input paths to {"kept": Documents, "rejected": Documents, "images": ImageRecords, "failed":
    Failures}. `inputs` maps a format to its file paths (see readers.detect_format), e.g. {"warc": [...],
    "obelics": [...]}."""

    def __init__(self, inputs: dict[str, list[str]], config: IngestConfig,
                 blocklist: BlocklistConfig | None = None, user_agent_token: str = "interleaf",
                 disallowed: tuple[str, ...] = DEFAULT_DISALLOWED_DIRECTIVES):
        super().__init__()
        config.validate()
        self.inputs, self.config, self.blocklist = inputs, config, blocklist
        self.user_agent_token = user_agent_token if config.respect_tdm else None
        self.disallowed = disallowed  # X-Robots-Tag directives that refuse an archived image (the fetcher's)

    def expand(self, pbegin):
        p = pbegin.pipeline if hasattr(pbegin, "pipeline") else pbegin
        doc_parts, image_parts, failed_parts = [], [], []
        if self.inputs.get("warc"):
            warc = (p | "WarcPaths" >> beam.Create(sorted(self.inputs["warc"]))
                    | "ReadWarc" >> ReadWarc(self.config.max_record_bytes))
            doc_parts.append((warc[PAGES], warc[PAGE_REVISITS]) | "ExtractPages" >> ExtractPages(
                self.config.extract, self.user_agent_token))
            listed = self.blocklist if self.blocklist is not None and self.blocklist.active else None
            consent = ArchiveConsent(blocklist=listed, user_agent_token=self.user_agent_token,
                                     disallowed=self.disallowed, respect_tdm=self.config.respect_tdm)
            image_parts.append((warc[IMAGES], warc[IMAGE_REVISITS]) | "ArchivedImages" >> ArchivedImages(
                self.config.max_image_pixels, consent))
        for fmt, row_format in ROW_FORMATS.items():
            if self.inputs.get(fmt):
                read = (p | f"{fmt}Paths" >> beam.Create(sorted(self.inputs[fmt]))
                        | f"Read{fmt}" >> ReadInterleaved(row_format, self.config.max_row_bytes))
                doc_parts.append(read.documents)
                failed_parts.append(read[FAILED])
        if not doc_parts:
            raise ValueError("no input files")
        docs = tuple(doc_parts) | "AllDocuments" >> beam.Flatten()
        if image_parts:
            [archived] = image_parts
            resolved = ((docs, archived["images"], archived[REFUSED_URLS])
                        | "ResolveArchivedImages" >> ResolveArchivedImages(listed))
            docs, images = resolved["documents"], resolved["images"]
        else:
            images = p | "NoImages" >> beam.Create([])
        filtered = docs | "Filter" >> FilterDocuments(self.config.quality, self.config.keep_dropped_nodes,
                                                      self.config.language, self.blocklist)
        failed = (tuple(failed_parts) | "AllFailed" >> beam.Flatten()) if failed_parts else (
            p | "NoFailed" >> beam.Create([]))
        return {"kept": filtered[KEPT_TAG], "rejected": filtered[REJECTED_TAG], "images": images,
                FAILED: failed}


class IngestStage(Stage):
    """Source stage: the WARC, OBELICS and MMC4 inputs to documents (quality rules applied) and the images
    archived in the WARCs."""

    name, label, source = "ingest", "Ingest", True
    units = ("records", "documents", "nodes", "images")

    def __init__(self, inputs: dict[str, list[str]], config: IngestConfig,
                 blocklist: BlocklistConfig | None = None, user_agent_token: str = "interleaf",
                 disallowed: tuple[str, ...] = DEFAULT_DISALLOWED_DIRECTIVES):
        super().__init__()
        self.inputs, self.config, self.blocklist = inputs, config, blocklist
        self.user_agent_token, self.disallowed = user_agent_token, disallowed

    @classmethod
    def validate(cls, config) -> None:
        config.ingest.validate()
        config.blocklist.validate()

    @classmethod
    def create(cls, config, context: RunContext) -> IngestStage:
        if set(context.inputs) == {SHARDS_FORMAT}:
            raise ValueError("the ingest stage reads WARC, OBELICS or MMC4 files; these inputs are already "
                             "document shards: run the later stages (--stages dedup,fetch,...)")
        return cls({k: v for k, v in context.inputs.items() if k != SHARDS_FORMAT}, config.ingest,
                   config.blocklist, config.fetch.fetch.user_agent_token,
                   config.fetch.fetch.disallowed_header_directives)

    def expand(self, pbegin):
        out = pbegin | "Read" >> Ingest(self.inputs, self.config, self.blocklist, self.user_agent_token,
                                        self.disallowed)
        return outputs(pbegin.pipeline, documents=out[KEPT_TAG], images=out["images"],
                       rejected=out[REJECTED_TAG], failed=out[FAILED])


class ShardsInput(Stage):
    """Source stage of a run without ingest: the documents of an earlier run's shards, and the image store
    beside them when there is one."""

    name, label, source = "shards", "ReadInputs", True

    def __init__(self, paths: list[str], images_path: str | None):
        super().__init__()
        self.paths, self.images_path = paths, images_path

    @classmethod
    def enabled(cls, stages: list[str]) -> bool:
        return "ingest" not in stages

    @classmethod
    def create(cls, config, context: RunContext) -> ShardsInput:
        others = set(context.inputs) - {SHARDS_FORMAT}
        if others:
            raise ValueError(f"without the ingest stage, inputs must be interleaf document shards; found "
                             f"{', '.join(sorted(others))} files")
        return cls(context.inputs[SHARDS_FORMAT], context.images_path)

    def expand(self, pbegin):
        p = pbegin.pipeline
        # Documents from the shards of an earlier run
        parts = [p | f"ReadDocuments{i}" >> ReadShards(path, DOCUMENT_SCHEMA, documents_from_table)
                 for i, path in enumerate(self.paths)]
        docs = parts[0] if len(parts) == 1 else tuple(parts) | "AllInputDocuments" >> beam.Flatten()
        images = None
        if self.images_path and storage.exists(self.images_path):
            images = p | "ReadImages" >> ReadShards(self.images_path, IMAGE_SCHEMA, images_from_table)
        return outputs(p, documents=docs, images=images)
