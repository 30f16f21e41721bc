"""Image fetch stage: `FetchImages(config)` turns the image URLs of documents into the image store.

Input: a PCollection[Document], or a dict {"documents": PCollection[Document], "store":
PCollection[ImageRecord]} where "store" holds images already known (archived WARC responses, another store).
Output: a dict of PCollections:
  "documents": the same documents; every kept image node with a URL is resolved (image_sha256 set) or
               dropped with its URL's fetch status as reason;
  "images":    the image store after this run: ok records (bytes, keyed by sha256, every URL that gave those
               bytes) and one failed record per URL that did not (status, error, no bytes);
  "written":   (path, rows) of each store shard written, when config.store_dir is set.

How the work is split, in Beam:
  1. known state: the store at config.store_dir (shards of earlier runs and their journals, for resume) plus
     the "store" input; the opt-out list is re-applied to it.
  2. unique URLs of kept image nodes, each joined with what is known of it: a URL stored ok or failed
     permanently is not fetched again; a transient failure (timeout, 5xx, 429, connection) is, and so is a
     size refusal that the current size rules would no longer make.
  3. URLs to fetch grouped by host, so that all of a host's URLs meet in one worker, where the per-host
     limits hold; a worker runs many hosts at once on its thread pool (download.politeness).
  4. every finished URL is appended to the worker's journal at once (download.journal).
  5. the store is rewritten from the known state plus this run's records (deterministic shards), then
     the journals it absorbed are deleted; documents are resolved by joining on URL, then on doc_id.

Funnel (stage "fetch"): images (unique URLs needed by kept documents): in = ok + dropped by status, with
info counters from_store (resolved from the known state), fetched (URLs tried in this run) and retries;
nodes (kept image nodes of kept documents): in = out + dropped by status; documents (kept ones): in = out.
Dropped documents pass through untouched and uncounted.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from interleaf import storage
from interleaf.download.consent import origin_of
from interleaf.download.fetcher import FetchConfig, Fetcher, is_transient
from interleaf.download.journal import JournalWriter, list_journals, read_journal
from interleaf.download.netguard import ALLOWED_SCHEMES
from interleaf.download.politeness import HostScheduler, JobResult
from interleaf.download.urls import request_url
from interleaf.filters.blocklist import REASONS as BLOCK_REASONS
from interleaf.filters.blocklist import BlocklistConfig, load_blocklist
from interleaf.filters.image_rules import SIZE_REASONS, ImageRules, size_refusal
from interleaf.filters.optout import OPTED_OUT, apply_to_record
from interleaf.pipelines.common import CountingDoFn, ReadShards, WriteShards
from interleaf.pipelines.stage import DOCUMENTS, IMAGES, RunContext, Stage, outputs
from interleaf.schemas.document import Document
from interleaf.schemas.image import IMAGE_SCHEMA, STATUS_OK, ImageRecord, images_from_table, images_to_table
from interleaf.shards import SHARD_SUFFIX

log = logging.getLogger(__name__)

STAGE = "fetch"
BAD_URL = "bad_url"  # a URL that cannot be requested: permanent, a rerun does not try it again


MAX_THREADS = 1024  # requests in flight per worker; each thread holds a stack and up to max_bytes of body


@dataclass(frozen=True, kw_only=True)
class FetchImagesConfig:
    """The fetch stage: how each URL is fetched (`fetch`), how hard each worker works, and where it writes."""

    fetch: FetchConfig = field(default_factory=FetchConfig)  # per-URL consent, safety, resizing
    store_dir: str | None = None  # image store: read for resume, journaled into, rewritten at the end;
    # None keeps everything in the pipeline (no resume)
    num_shards: int = 1  # shards of the image store written at store_dir
    threads: int = 64  # requests in flight per worker process (img2dataset's thread_count default is 256;
    # 64 saturates two cores here, measured in bench/fetch_bench.py)
    per_host_concurrency: int = 2  # connections per host at once: RFC 2616 8.1.4's "at most 2"
    per_host_rate: float = 5.0  # requests started per second per host (0: no limit); a robots.txt
    # Crawl-delay slows a host down further. A judgement call: polite for one site, and image CDNs
    # (one host for a whole site's images) still fill a worker's threads across hosts
    max_hosts_in_flight: int = 1024  # hosts a worker holds at once before it waits for some to finish

    def validate(self) -> None:
        self.fetch.validate()
        if not 1 <= self.threads <= MAX_THREADS:
            raise ValueError(f"fetch.threads must be between 1 and {MAX_THREADS}, found {self.threads}")
        if self.num_shards < 1 or self.threads < 1 or self.per_host_concurrency < 1:
            raise ValueError(f"invalid FetchImagesConfig: num_shards, threads and per_host_concurrency must "
                             f"be at least 1 (found {self.num_shards}, {self.threads}, "
                             f"{self.per_host_concurrency})")
        if self.per_host_rate < 0 or self.max_hosts_in_flight < 1:
            raise ValueError("invalid FetchImagesConfig: per_host_rate >= 0 and max_hosts_in_flight >= 1 "
                             "needed")


# ---------------------------------------------------------------- pure helpers (tested without Beam)


def host_key(url: str) -> str:
    """The politeness key of a URL: scheme and authority in lower case ("https://example.com:8443"), the
    origin robots.txt and tdmrep.json are kept per."""
    return origin_of(url)


def fetch_url(url: str) -> str:
    """The URL as fetched and stored: as a browser sends it (download.urls: percent-encoded, IDNA host),
    without its #fragment, which is never sent to the server. One that cannot be requested is kept as it is
    and fails in _Decide with a permanent status."""
    try:
        return request_url(url)
    except ValueError:
        return url.strip()


def needed_urls(doc: Document) -> list[tuple[int, str]]:
    """(node index, fetch URL) of the image nodes the stage must resolve: kept, with a URL, not resolved."""
    if not doc.kept:
        return []
    return [(i, fetch_url(n.image_url)) for i, n in enumerate(doc.nodes)
            if n.is_image and n.kept and n.image_url and not n.image_sha256]


def failed(url: str, status: str, error: str) -> ImageRecord:
    return ImageRecord(sha256=None, urls=[url], status=status, error=error, source="fetch")


def settled(record: ImageRecord, rules: ImageRules) -> bool:
    """Whether a failed record stands on a rerun: not transient, and not a size refusal that the current
    size rules would let through (a store made with min_side 150 is refetched for the images of 100-149 px
    a side when a later run lowers min_side to 100: the original size is kept in the failed record)."""
    if is_transient(record) or record.status in BLOCK_REASONS:
        return False  # blocklist refusals are decided again each run (no request needed): lists change
    if record.status in SIZE_REASONS and record.original_width and record.original_height:
        return size_refusal(record.original_width, record.original_height, rules) is not None
    return True


def store_key(record: ImageRecord) -> str:
    """One store row per image (sha256) and one per failed URL."""
    return record.sha256 if record.status == STATUS_OK else f"url:{record.urls[0]}"


def merge_records(records: list[ImageRecord]) -> ImageRecord:
    """Records of one store key as one: an image's URLs united; of several failures for one URL, one chosen
    deterministically (a permanent failure over a transient one)."""
    records = sorted(records, key=lambda r: (r.status != STATUS_OK, r.data is None, is_transient(r),
                                             r.source or "", r.status, r.error or ""))
    first = records[0]
    if first.status != STATUS_OK:
        return first
    urls = sorted({u for r in records for u in r.urls})
    return replace(first, urls=urls)


# ---------------------------------------------------------------- DoFns


class _Decide(beam.DoFn):
    """Per URL: what is known (prior records) against whether documents need it. Main output: store records
    to keep; tagged "fetch" (host, url) to fetch, "resolved" (url, (status, sha256)) resolved without a
    request."""

    def __init__(self, config: FetchImagesConfig, rules: ImageRules, blocklist: BlocklistConfig):
        self.config, self.rules, self.blocklist_config = config, rules, blocklist

    def setup(self):
        self.blocklist = load_blocklist(self.blocklist_config)  # once per process, shared by its threads

    def process(self, item):
        url, grouped = item
        needed = bool(list(grouped["need"]))
        records, ok_sha = [], None
        for kind, value in grouped["prior"]:
            if kind == "ok":  # another URL of an ok record: the record itself travels under its first URL
                ok_sha = ok_sha or value
            else:
                records.append(value)
                if value.status == STATUS_OK:
                    ok_sha = ok_sha or value.sha256
        permanent = [r for r in records if r.status != STATUS_OK and settled(r, self.rules)]
        for r in records:
            # a failure is stale once the URL is known ok, or (unsettled) when refetched or decided otherwise
            stale = r.status != STATUS_OK and (ok_sha is not None or (
                not settled(r, self.rules) and (needed or bool(permanent))))
            if not stale:
                yield r
        if not needed:
            return
        if ok_sha is not None:
            yield beam.pvalue.TaggedOutput("resolved", (url, (STATUS_OK, ok_sha, True)))
            return
        if permanent:
            chosen = merge_records(permanent)
            yield beam.pvalue.TaggedOutput("resolved", (url, (chosen.status, None, True)))
            return
        precheck = self._precheck(url)
        if precheck is not None:
            yield precheck
            yield beam.pvalue.TaggedOutput("resolved", (url, (precheck.status, None, False)))
            return
        yield beam.pvalue.TaggedOutput("fetch", (host_key(url), url))

    def _precheck(self, url: str) -> ImageRecord | None:
        """Failures known without the network: an unparseable URL, an unfetchable scheme, an opted-out or
        blocked URL."""
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError as e:
            return failed(url, BAD_URL, f"malformed URL: {e}")
        if scheme not in ALLOWED_SCHEMES:
            return failed(url, "unsupported_scheme", f"scheme {scheme or '(none)'!r} is not fetched")
        try:
            request_url(url)
        except ValueError as e:
            return failed(url, BAD_URL, f"cannot be requested: {e}")
        entry = self.config.fetch.optout.match_url(url)
        if entry is not None:
            return failed(url, OPTED_OUT, f"opted out by {entry}")
        blocked = self.blocklist.match(url) if self.blocklist is not None else None
        if blocked is not None:
            return failed(url, blocked[0], f"{blocked[0]}: {blocked[1]}")
        return None


class _FetchHosts(CountingDoFn):
    """(host, URLs) -> ImageRecord per URL, many hosts at once on a thread pool with per-host limits.

    process() hands a host's URLs to the scheduler and returns what has finished so far; finish_bundle()
    waits for the rest. Each finished URL is journaled in the worker thread that finished it.
    """

    stage = STAGE

    def __init__(self, config: FetchImagesConfig, rules: ImageRules, blocklist: BlocklistConfig):
        self.config, self.rules, self.blocklist_config = config, rules, blocklist

    def setup(self):
        super().setup()
        self.fetcher = Fetcher(self.config.fetch, self.rules, load_blocklist(self.blocklist_config))
        self.scheduler = HostScheduler(self._work, self._on_done, threads=self.config.threads,
                                       per_host_concurrency=self.config.per_host_concurrency,
                                       per_host_rate=self.config.per_host_rate)
        self._done: deque[ImageRecord] = deque()
        self.journal = None

    def start_bundle(self):
        if self.config.store_dir:
            self.journal = JournalWriter(self.config.store_dir)
        self._retries_seen = self.scheduler.retries

    def _work(self, host: str, url: str, attempt: int) -> JobResult:
        outcome = self.fetcher.fetch(url, attempt)
        return JobResult(value=outcome.record, retry_after=outcome.retry_after,
                         host_interval=self.fetcher.robots.crawl_delay(url))

    def _on_done(self, host: str, url: str, record: ImageRecord) -> None:
        if self.journal is not None:
            self.journal.append(record)
        self._done.append(record)  # deque.append is atomic: safe from the scheduler's threads

    def _drain(self):
        while self._done:
            record = self._done.popleft()
            self.funnel.inc("images", "fetched")
            yield record

    def process(self, element):
        host, urls = element
        self.scheduler.submit(host, sorted(set(urls)))
        while self.scheduler.hosts_in_flight > self.config.max_hosts_in_flight:
            self.scheduler.wait(self.scheduler.pending - 1, timeout=0.5)
            yield from self._drain()
        yield from self._drain()

    def finish_bundle(self):
        while not self.scheduler.wait(0, timeout=0.5):
            for record in self._drain():
                yield WindowedValue(record, MIN_TIMESTAMP, [GlobalWindow()])
        for record in self._drain():
            yield WindowedValue(record, MIN_TIMESTAMP, [GlobalWindow()])
        self.funnel.inc("images", "retries", self.scheduler.retries - self._retries_seen)
        self.funnel.flush()
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    def teardown(self):
        self.scheduler.close()
        self.fetcher.close()


class _ResolveUrls(CountingDoFn):
    """Per URL: its resolution joined with the nodes that use it -> (doc_id, (node index, url, status, sha)).
    Counts the images funnel: one unique URL in, ok or dropped by status."""

    stage = STAGE

    def process(self, item):
        url, grouped = item
        refs = list(grouped["refs"])
        resolutions = list(grouped["res"])
        if not refs:
            return
        if not resolutions:  # cannot happen: every needed URL is resolved or fetched
            raise RuntimeError(f"URL {url} needed by {len(refs)} nodes has no fetch outcome")
        status, sha, from_store = sorted(resolutions, key=lambda r: r[0] != STATUS_OK)[0]
        self.funnel.inc("images", "in")
        if status == STATUS_OK:
            self.funnel.inc("images", "out")
        else:
            self.funnel.drop("images", status)
        if from_store:
            self.funnel.inc("images", "from_store")
        for doc_id, index in refs:
            yield doc_id, (index, url, status, sha)


class _ApplyToDocuments(CountingDoFn):
    """(doc_id, {doc, res}) -> documents with image nodes resolved or dropped; counts nodes and documents."""

    stage = STAGE

    def process(self, item):
        _doc_id, grouped = item
        outcome = {(index, url): (status, sha) for index, url, status, sha in grouped["res"]}
        for doc in grouped["doc"]:
            if not doc.kept:
                yield doc
                continue
            nodes = list(doc.nodes)
            for i, node in enumerate(nodes):
                if not (node.is_image and node.kept):
                    continue
                self.funnel.inc("nodes", "in")
                if node.image_url and not node.image_sha256:
                    status, sha = outcome[(i, fetch_url(node.image_url))]
                    nodes[i] = (replace(node, image_sha256=sha) if status == STATUS_OK
                                else node.dropped(status))
                if nodes[i].kept:
                    self.funnel.inc("nodes", "out")
                else:
                    self.funnel.drop("nodes", nodes[i].reason)
            self.funnel.inc("documents", "in")
            self.funnel.inc("documents", "out")
            yield replace(doc, nodes=nodes)


def _prior_by_url(record: ImageRecord):
    """A known record under each of its URLs: whole under the first, as ("ok", sha256) under the others."""
    if not record.urls:
        return
    yield record.urls[0], ("record", record)
    if record.status == STATUS_OK:
        for url in record.urls[1:]:
            yield url, ("ok", record.sha256)


def _cleanup(written: list[tuple[str, int]], store_dir: str, journals_before: list[str]) -> list[str]:
    """After the store is rewritten: delete the journals it absorbed and shards of an older shard count."""
    keep = {os.path.basename(p) for p, _ in written}
    removed = []
    for path in sorted(set(list_journals(store_dir)) | set(journals_before)):
        if storage.exists(path):
            _delete(path)
            removed.append(path)
    for path in storage.match(storage.join(store_dir, "part-*" + SHARD_SUFFIX)):
        if os.path.basename(path) not in keep:
            _delete(path)
            removed.append(path)
    log.info("image store %s rewritten (%d shards); removed %d absorbed journals and stale shards",
             store_dir, len(written), len(removed))
    return removed


def _delete(path: str) -> None:
    if storage.is_local(path):
        os.remove(path.removeprefix("file://"))
    else:
        from apache_beam.io.filesystems import FileSystems
        FileSystems.delete([path])


# ---------------------------------------------------------------- the composite transform


class FetchImages(beam.PTransform):
    """Documents in; documents with image nodes resolved, and the image store, out (see module docstring)."""

    def __init__(self, config: FetchImagesConfig, rules: ImageRules | None = None, label: str | None = None,
                 blocklist: BlocklistConfig | None = None):
        super().__init__(label)
        config.validate()
        self.config, self.rules = config, rules or ImageRules()
        self.rules.validate()
        # none given: no blocklist (a run passes its [blocklist] section, FetchStage.create)
        self.blocklist = blocklist or BlocklistConfig(ut1=False, banned_url_words=False)

    def expand(self, pcolls):
        if isinstance(pcolls, dict):
            docs, store = pcolls["documents"], pcolls.get("store")
        else:
            docs, store = pcolls, None
        p, config = docs.pipeline, self.config
        optout = config.fetch.optout

        # ImageRecords known before this run
        known = [store] if store is not None else []
        journals = []
        if config.store_dir:
            if storage.match(storage.join(config.store_dir, "part-*" + SHARD_SUFFIX)):
                known.append(p | "ReadStore" >> ReadShards(config.store_dir, IMAGE_SCHEMA, images_from_table))
            journals = list_journals(config.store_dir)
            if journals:
                known.append(p | "ListJournals" >> beam.Create(journals)
                             | "SpreadJournals" >> beam.Reshuffle()
                             | "ReadJournals" >> beam.FlatMap(read_journal))
        prior = (known | "FlattenKnown" >> beam.Flatten()) if known else (
            p | "NoneKnown" >> beam.Create([]).with_output_types(ImageRecord))
        # ImageRecords with the current opt-out list applied (opted-out images become failed rows)
        prior = prior | "ReapplyOptOut" >> beam.FlatMap(lambda r: apply_to_record(r, optout)[0])
        # (url, ("record", ImageRecord) | ("ok", sha256))
        prior_by_url = prior | "PriorByUrl" >> beam.FlatMap(_prior_by_url)

        # (url, (doc_id, node index)) for every node to resolve
        refs = docs | "NodeRefs" >> beam.FlatMap(
            lambda d: [(url, (d.doc_id, i)) for i, url in needed_urls(d)])
        # (url, None), repeated per node; grouped below, so each URL is decided once
        need = refs | "NeedUrl" >> beam.Map(lambda kv: (kv[0], None))

        decided = ({"need": need, "prior": prior_by_url}
                   | "GroupByUrl" >> beam.CoGroupByKey()
                   | "Decide" >> beam.ParDo(_Decide(config, self.rules, self.blocklist)).with_outputs(
                       "fetch", "resolved", main="kept"))

        # (host, [url, ...]) -> ImageRecord per URL fetched in this run
        fetched = (decided.fetch
                   | "GroupByHost" >> beam.GroupByKey()
                   | "Fetch" >> beam.ParDo(_FetchHosts(config, self.rules, self.blocklist)))
        # (url, (status, sha256 or None, from_store))
        fetched_res = fetched | "FetchedOutcome" >> beam.Map(
            lambda r: (r.urls[0], (r.status, r.sha256, False)))
        resolved = (decided.resolved, fetched_res) | "FlattenOutcomes" >> beam.Flatten()

        # the store after this run: one record per image and per failed URL
        images = ((decided.kept, fetched) | "FlattenStore" >> beam.Flatten()
                  | "KeyByStoreKey" >> beam.Map(lambda r: (store_key(r), r))
                  | "GroupByStoreKey" >> beam.GroupByKey()
                  | "MergeRecords" >> beam.MapTuple(lambda _key, rs: merge_records(list(rs))))

        # (doc_id, (node index, url, status, sha256))
        node_res = ({"refs": refs, "res": resolved}
                    | "JoinUrlOutcomes" >> beam.CoGroupByKey()
                    | "ResolveUrls" >> beam.ParDo(_ResolveUrls()))
        documents = ({"doc": docs | "KeyByDocId" >> beam.Map(lambda d: (d.doc_id, d)), "res": node_res}
                     | "JoinDocuments" >> beam.CoGroupByKey()
                     | "ApplyToDocuments" >> beam.ParDo(_ApplyToDocuments()))

        out = {"documents": documents, "images": images}
        if config.store_dir:
            # (path, rows) per store shard, then the journals and stale shards removed once all are written
            written = images | "WriteStore" >> WriteShards(config.store_dir, images_to_table, store_key,
                                                           num_shards=config.num_shards)
            store_dir = config.store_dir
            _ = (written | "AllWritten" >> beam.combiners.ToList()
                 | "RemoveAbsorbed" >> beam.Map(_cleanup, store_dir, journals))
            out["written"] = written
        return out


class FetchStage(Stage):
    """The fetch stage: image URLs to the image store, resumable from DIR/cache/fetch/ by default."""

    name, label, units = STAGE, "Fetch", ("documents", "nodes", "images")

    def __init__(self, config: FetchImagesConfig, rules: ImageRules,
                 blocklist: BlocklistConfig | None = None):
        super().__init__()
        self.config, self.rules, self.blocklist = config, rules, blocklist

    @classmethod
    def validate(cls, config) -> None:
        config.fetch.validate()
        config.blocklist.validate()

    @classmethod
    def create(cls, config, context: RunContext) -> FetchStage:
        """The run's image rules (section image_rules) refuse URLs before their bytes are decoded, and its
        blocklist (section blocklist) before any request."""
        return cls(replace(config.fetch, store_dir=config.fetch.store_dir
                           or storage.join(context.output, "cache", "fetch")), config.image_rules,
                   config.blocklist)

    def expand(self, streams):
        out = ({DOCUMENTS: streams[DOCUMENTS], "store": streams[IMAGES]}
               | "Images" >> FetchImages(self.config, self.rules, blocklist=self.blocklist))
        return outputs(out[DOCUMENTS].pipeline, documents=out[DOCUMENTS], images=out[IMAGES])
