"""Images archived in the WARCs (the ingest stage's second output): image responses and their revisits to
image records, one per unique sha256, and documents whose image nodes point at those bytes, joined by URL
in the engine, so those images need no fetch. Counted under the ingest stage: images and nodes.

What the fetch stage would refuse is refused here too, before anything is kept: a response whose URL is on
the blocklist (filters/blocklist.py), or whose own headers reserve it (X-Robots-Tag noai and the fetcher's
other disallowed directives, tdm-reservation: 1; filters/tdm.py): the record is dropped under that reason
and every image node with its URL is dropped with it. An archived image that no kept image node of a kept
document points at is not stored ("unreferenced"): the images of a page that says noimageai, of a page
dropped for a TDM reservation, or never used by any page, leave no bytes behind."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from interleaf.filters.blocklist import BlocklistConfig, load_blocklist
from interleaf.filters.tdm import image_refusal
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


REFUSED_URLS = "refused_urls"


@dataclass(frozen=True)
class ArchiveConsent:
    """What ingest refuses of archived image responses: the blocklist, and the response's own headers as
    the fetcher reads them (None: headers not read, as with ingest.respect_tdm = false)."""

    blocklist: BlocklistConfig | None = None
    user_agent_token: str | None = None
    disallowed: tuple[str, ...] = ()
    respect_tdm: bool = True


class _Refusals(CountingDoFn):
    """Base of the DoFns that read archived responses: the blocklist and the response's headers."""

    stage = STAGE

    def __init__(self, consent: ArchiveConsent):
        self.consent = consent

    def setup(self):
        super().setup()
        self.blocklist = load_blocklist(self.consent.blocklist) if self.consent.blocklist else None

    def refusal(self, item: WarcItem) -> str | None:
        """The reason an archived response may not be kept, or None."""
        blocked = self.blocklist.match(item.url) if self.blocklist is not None else None
        if blocked is not None:
            return blocked[0]
        c = self.consent
        if c.user_agent_token is not None:
            refused = image_refusal(item.consent, c.user_agent_token, c.disallowed, c.respect_tdm)
            if refused is not None:
                return refused[0]
        return None

    def refuse(self, item: WarcItem, reason: str):
        self.funnel.drop("images", reason)
        yield TaggedOutput(REFUSED_URLS, (url_key(item.url), reason))


class _ImageRecords(_Refusals):
    def __init__(self, max_pixels: int, consent: ArchiveConsent):
        super().__init__(consent)
        self.max_pixels = max_pixels

    def process(self, item: WarcItem):
        self.funnel.inc("images", "in")
        reason = self.refusal(item)
        if reason is not None:
            yield from self.refuse(item, reason)
            return
        rec = image_record(item, self.max_pixels)
        if isinstance(rec, str):
            self.funnel.drop("images", rec)
            return
        yield item.payload_digest, rec


class _ResolveImageRevisits(_Refusals):
    def process(self, element):
        _, group = element
        originals = sorted(group["originals"], key=lambda r: r.sha256)
        for rev in group["revisits"]:
            self.funnel.inc("images", "in")
            reason = self.refusal(rev)  # a revisit's own URL and headers, as a response's
            if reason is not None:
                yield from self.refuse(rev, reason)
                continue
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
    """(sha256, records) to one record; the others counted as merged (the one left is counted by _Prune)."""

    stage = STAGE

    def process(self, element):
        sha, records = element
        records = list(records)
        self.funnel.drop("images", "same_bytes_as_another", len(records) - 1)
        yield merge_images(records)


class ArchivedImages(beam.PTransform):
    """Image responses and revisits archived in the WARCs to {"images": image records, one per unique sha256,
    REFUSED_URLS: (URL key, reason) of each response refused}."""

    def __init__(self, max_pixels: int, consent: ArchiveConsent | None = None):
        super().__init__()
        self.max_pixels, self.consent = max_pixels, consent or ArchiveConsent()

    def expand(self, inputs):
        images, revisits = inputs
        # (payload digest, ImageRecord) for every readable archived image
        by_digest = images | "ToRecords" >> beam.ParDo(
            _ImageRecords(self.max_pixels, self.consent)).with_outputs(REFUSED_URLS, main="records")
        resolved = ({"originals": by_digest.records,
                     "revisits": revisits | "KeyRevisits" >> beam.Map(lambda r: (r.payload_digest, r))}
                    | "JoinRevisits" >> beam.CoGroupByKey()
                    | "Resolve" >> beam.ParDo(_ResolveImageRevisits(self.consent)).with_outputs(
                        REFUSED_URLS, main="records"))
        # ImageRecord, one per response, then one per unique bytes
        merged = ((by_digest.records | "Records" >> beam.Values(), resolved.records)
                  | "AllImages" >> beam.Flatten()
                  | "BySha" >> beam.Map(lambda r: (r.sha256, r))
                  | "GroupBySha" >> beam.GroupByKey()
                  | "Merge" >> beam.ParDo(_CountMerged()))
        refused = ((by_digest[REFUSED_URLS], resolved[REFUSED_URLS]) | "AllRefused" >> beam.Flatten())
        return {"images": merged, REFUSED_URLS: refused}


def url_key(url: str) -> str:
    """A URL in the form used to match page links with archived responses: percent-escapes undone, scheme
    and host lower-cased, fragment dropped ("a%2Cb.jpg" in a page is "a,b.jpg" in the archive)."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(unquote(url.strip()))
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


class _KeyImageNodes(beam.DoFn):
    """Document to (URL key, (doc_id, used)) for each image node, so URLs can be joined with the archive;
    `used`: a kept node of a kept document whose URL the blocklist does not refuse (ingest drops such a page
    afterwards; its images must not be kept for it)."""

    def __init__(self, blocklist: BlocklistConfig | None = None):
        self.blocklist_config = blocklist

    def setup(self):
        self.blocklist = load_blocklist(self.blocklist_config) if self.blocklist_config else None

    def process(self, doc: Document):
        kept = doc.kept and not (self.blocklist is not None and self.blocklist.match(doc.url))
        keys: dict[str, bool] = {}
        for n in doc.nodes:
            if n.is_image and n.image_url:
                key = url_key(n.image_url)
                keys[key] = keys.get(key, False) or (kept and n.kept)
        for key in sorted(keys):
            yield key, (doc.doc_id, keys[key])


def _per_url(item):
    """(URL key, {"sha": [sha256], "docs": [(doc_id, used)], "refused": [reason]}) -> (doc_id, (URL key,
    sha256 or None, reason or None)) for each document that has the URL, and tagged "used" (sha256, True)
    when a kept node uses the archived bytes."""
    key, group = item
    shas, docs, refused = list(group["sha"]), list(group["docs"]), sorted(set(group["refused"]))
    reason = refused[0] if refused else None
    sha = shas[0] if shas and reason is None else None
    for doc_id in sorted({d for d, _ in docs}):
        if sha or reason:
            yield doc_id, (key, sha, reason)
    if sha and any(used for _, used in docs):
        yield TaggedOutput("used", (sha, True))


class _SetSha(CountingDoFn):
    """(doc_id, {"docs": [Document], "found": [(URL key, sha256, reason)]}) to the Document with archived
    images resolved, and the image nodes of refused responses dropped under the refusal's reason."""

    stage = STAGE

    def process(self, element):
        _, group = element
        found = {key: (sha, reason) for key, sha, reason in group["found"]}
        for doc in group["docs"]:
            nodes, resolved = [], 0
            for n in doc.nodes:
                sha, reason = found.get(url_key(n.image_url), (None, None)) if n.is_image and n.image_url \
                    else (None, None)
                if reason and n.kept:
                    n = n.dropped(reason)
                elif sha:
                    n = replace(n, image_sha256=sha)
                    resolved += 1
                nodes.append(n)
            self.funnel.inc("nodes", "resolved_from_archive", resolved)
            yield replace(doc, nodes=nodes)


class _Prune(CountingDoFn):
    """(sha256, {"record": [ImageRecord], "used": [True]}) to the record when a kept node uses it; else
    counted "unreferenced"."""

    stage = STAGE

    def process(self, element):
        _, group = element
        for record in group["record"]:
            if any(group["used"]):
                self.funnel.inc("images", "out")
                yield record
            else:
                self.funnel.drop("images", "unreferenced")


class ResolveArchivedImages(beam.PTransform):
    """(Documents, archived image records, refused (URL key, reason)) to {"documents": Documents whose image
    nodes point at archived bytes (image_sha256 set) or are dropped with a refused response's reason,
    "images": the records that a kept node uses}, joined by URL in the engine, so those images need no
    fetch."""

    def __init__(self, blocklist: BlocklistConfig | None = None):
        super().__init__()
        self.blocklist = blocklist

    def expand(self, inputs):
        docs, images, refused = inputs
        # (URL key, sha256) of every archived image
        archived = images | "UrlToSha" >> beam.FlatMap(lambda r: [(url_key(u), r.sha256) for u in r.urls])
        # (URL key, (doc_id, used)) of every image node
        wanted = docs | "ImageUrls" >> beam.ParDo(_KeyImageNodes(self.blocklist))
        joined = ({"sha": archived, "docs": wanted, "refused": refused} | "JoinUrls" >> beam.CoGroupByKey()
                  | "PerUrl" >> beam.FlatMap(_per_url).with_outputs("used", main="found"))
        documents = ({"docs": docs | "ById" >> beam.Map(lambda d: (d.doc_id, d)), "found": joined.found}
                     | "JoinDocs" >> beam.CoGroupByKey()
                     | "SetSha" >> beam.ParDo(_SetSha()))
        kept = ({"record": images | "RecordBySha" >> beam.Map(lambda r: (r.sha256, r)), "used": joined.used}
                | "JoinUses" >> beam.CoGroupByKey()
                | "Prune" >> beam.ParDo(_Prune()))
        return {"documents": documents, "images": kept}
