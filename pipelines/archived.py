"""Images archived in the WARCs (the ingest stage's second output): image responses and their revisits to
image records, one per unique sha256, and documents whose image nodes point at those bytes, joined by URL
in the engine, so those images need no fetch. Counted under the ingest stage: images and nodes."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import apache_beam as beam

from interleaf.imagefile import ImageDecodeError, read_header
from interleaf.pipelines.common import CountingDoFn
from interleaf.readers.warc import WarcItem
from interleaf.schemas.document import Document
from interleaf.schemas.image import ImageRecord

STAGE = "ingest"  # these steps count into the ingest stage's funnel


def image_record(item: WarcItem, max_pixels: int) -> ImageRecord | str:
    """An archived image response to an image record, or the reason it is not one. The size is read from
    the header only: nothing is decoded, so a decompression bomb costs nothing here."""
    try:
        width, height, fmt = read_header(item.body)
    except ImageDecodeError:
        return "not_image"
    if width * height > max_pixels:
        return "too_large"
    return ImageRecord(sha256=hashlib.sha256(item.body).hexdigest(), urls=[item.url], width=width,
                       height=height, original_width=width, original_height=height,
                       original_bytes=len(item.body), format=fmt, source="warc", data=item.body)


class _ImageRecords(CountingDoFn):
    stage = STAGE

    def __init__(self, max_pixels: int):
        self.max_pixels = max_pixels

    def process(self, item: WarcItem):
        self.funnel.inc("images", "in")
        rec = image_record(item, self.max_pixels)
        if isinstance(rec, str):
            self.funnel.drop("images", rec)
            return
        yield item.payload_digest, rec


class _ResolveImageRevisits(CountingDoFn):
    stage = STAGE

    def process(self, element):
        _, group = element
        originals = sorted(group["originals"], key=lambda r: r.sha256)
        for rev in group["revisits"]:
            self.funnel.inc("images", "in")
            if not originals:
                self.funnel.drop("images", "revisit_unresolved")
                continue
            yield replace(originals[0], urls=[rev.url])


def merge_images(records) -> ImageRecord:
    """Records with the same bytes to one, keeping every URL (sorted: deterministic)."""
    records = list(records)
    urls = sorted({u for r in records for u in r.urls})
    return replace(records[0], urls=urls)


class _CountMerged(CountingDoFn):
    stage = STAGE

    def process(self, element):
        sha, records = element
        records = list(records)
        self.funnel.inc("images", "out")
        self.funnel.drop("images", "same_bytes_as_another", len(records) - 1)
        yield merge_images(records)


class ArchivedImages(beam.PTransform):
    """Image responses and revisits archived in the WARCs to image records, one per unique sha256."""

    def __init__(self, max_pixels: int):
        super().__init__()
        self.max_pixels = max_pixels

    def expand(self, inputs):
        images, revisits = inputs
        # (payload digest, ImageRecord) for every readable archived image
        by_digest = images | "ToRecords" >> beam.ParDo(_ImageRecords(self.max_pixels))
        resolved = ({"originals": by_digest,
                     "revisits": revisits | "KeyRevisits" >> beam.Map(lambda r: (r.payload_digest, r))}
                    | "JoinRevisits" >> beam.CoGroupByKey()
                    | "Resolve" >> beam.ParDo(_ResolveImageRevisits()))
        # ImageRecord, one per response, then one per unique bytes
        return ((by_digest | "Records" >> beam.Values(), resolved) | "AllImages" >> beam.Flatten()
                | "BySha" >> beam.Map(lambda r: (r.sha256, r))
                | "GroupBySha" >> beam.GroupByKey()
                | "Merge" >> beam.ParDo(_CountMerged()))


def url_key(url: str) -> str:
    """A URL in the form used to match page links with archived responses: percent-escapes undone, scheme
    and host lower-cased, fragment dropped ("a%2Cb.jpg" in a page is "a,b.jpg" in the archive)."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(unquote(url.strip()))
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


class _KeyImageNodes(beam.DoFn):
    """Document to (URL key, doc_id) for each image node, so URLs can be joined with the archive."""

    def process(self, doc: Document):
        for key in sorted({url_key(n.image_url) for n in doc.nodes if n.is_image and n.image_url}):
            yield key, doc.doc_id


class _SetSha(CountingDoFn):
    """(doc_id, {"docs": [Document], "found": [(url, sha256)]}) to the Document with archived images
    resolved."""

    stage = STAGE

    def process(self, element):
        _, group = element
        found = dict(group["found"])
        for doc in group["docs"]:
            nodes, resolved = [], 0
            for n in doc.nodes:
                sha = found.get(url_key(n.image_url)) if n.is_image and n.image_url else None
                nodes.append(replace(n, image_sha256=sha) if sha else n)
                resolved += bool(sha)
            self.funnel.inc("nodes", "resolved_from_archive", resolved)
            yield replace(doc, nodes=nodes)


class ResolveArchivedImages(beam.PTransform):
    """Documents and archived image records to Documents whose image nodes point at archived bytes
    (image_sha256 set), joined by URL in the engine, so those images need no fetch."""

    def expand(self, inputs):
        docs, images = inputs
        # (URL key, sha256) of every archived image
        archived = images | "UrlToSha" >> beam.FlatMap(lambda r: [(url_key(u), r.sha256) for u in r.urls])
        # (URL key, doc_id) of every image node
        wanted = docs | "ImageUrls" >> beam.ParDo(_KeyImageNodes())
        # (doc_id, (url, sha256)) for every image node found in the archive
        found = ({"sha": archived, "docs": wanted} | "JoinUrls" >> beam.CoGroupByKey()
                 | "Found" >> beam.FlatMap(lambda kv: [(d, (kv[0], kv[1]["sha"][0]))
                                                       for d in kv[1]["docs"] if kv[1]["sha"]]))
        return ({"docs": docs | "ById" >> beam.Map(lambda d: (d.doc_id, d)), "found": found}
                | "JoinDocs" >> beam.CoGroupByKey()
                | "SetSha" >> beam.ParDo(_SetSha()))
