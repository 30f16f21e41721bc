"""Opt-out lists: URL patterns, domains and image sha256 that must not be fetched or kept.

The fetch stage checks a URL before any request (and every redirect target) and the image bytes once
fetched. `apply_to_paths` re-applies a list to image stores and document shards already written: an opted-out
image loses its bytes and becomes one `opted_out` row per URL (so a rerun never fetches it again), and
document nodes that use it are dropped with reason `opted_out`; every change is reported.

List format, one entry a line, `#` starts a comment:
    example.com                      a domain and its subdomains (also `domain:example.com`)
    https://example.org/private/*    a URL glob over the whole URL, `*` and `?` as in fnmatch (or url:...);
                                     a line with "://" is a URL: exact unless it has a wildcard
    sha256:9f86d0...                 an image: sha256 of the bytes as served, or as stored
                                     (a bare 64-hex-digit line counts as sha256 too)
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

from interleaf import storage
from interleaf.download.journal import JOURNAL_SUFFIX, read_journal, write_journal
from interleaf.schemas.document import DOCUMENT_SCHEMA, documents_from_table, documents_to_table
from interleaf.schemas.image import IMAGE_SCHEMA, ImageRecord, images_from_table, images_to_table
from interleaf.schemas.meta import KIND_DOCUMENTS, KIND_IMAGES, KIND_TOKENS, shard_kind
from interleaf.shards import SHARD_SUFFIX, open_shard, read_shard, write_shard

log = logging.getLogger(__name__)

OPTED_OUT = "opted_out"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class OptOutListError(ValueError):
    """A line of an opt-out list that is neither a domain, a URL pattern nor a sha256."""


def _normalise_url(url: str) -> str:
    """Scheme and host in lower case, so that patterns need not care about their case."""
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class OptOutList:
    domains: frozenset[str] = frozenset()  # lower case, no leading dot; subdomains match too
    url_patterns: tuple[str, ...] = ()  # fnmatch globs over the normalised URL (exact when no wildcard)
    sha256: frozenset[str] = frozenset()  # lower-case hex
    source: str = ""  # where the list came from (reports cite it)
    _globs: tuple[tuple[str, re.Pattern], ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_lines(cls, lines, source: str = "") -> OptOutList:
        domains, patterns, hashes = set(), [], set()
        for number, raw in enumerate(lines, 1):
            line = raw.split(" #", 1)[0].strip()  # a comment line, or " # comment" after an entry
            if not line or line.startswith("#"):
                continue
            kind, sep, value = line.partition(":")
            kind = kind.lower()
            if sep and kind in ("domain", "url", "sha256") and not value.startswith("//"):
                value = value.strip()
            else:
                value = line
                kind = ("sha256" if _HEX64.match(line.lower()) else "url" if "://" in line
                        else "domain")
            if kind == "sha256":
                if not _HEX64.match(value.lower()):
                    raise OptOutListError(f"{source or 'opt-out list'} line {number}: {value!r} is not a "
                                          "sha256 (64 hexadecimal digits)")
                hashes.add(value.lower())
            elif kind == "url":
                if "://" not in value:
                    raise OptOutListError(f"{source or 'opt-out list'} line {number}: URL pattern {value!r} "
                                          "needs a scheme (https://...)")
                patterns.append(_normalise_url(value))
            else:
                domain = value.lower().lstrip("*").strip(".")
                if not domain or "/" in domain or " " in domain:
                    raise OptOutListError(f"{source or 'opt-out list'} line {number}: {value!r} is not a "
                                          "domain, a URL pattern (with ://) or a sha256")
                domains.add(domain)
        return cls(domains=frozenset(domains), url_patterns=tuple(patterns), sha256=frozenset(hashes),
                   source=source)

    @classmethod
    def load(cls, path: str) -> OptOutList:
        text = storage.read_bytes(path).decode("utf-8")
        return cls.from_lines(text.splitlines(), source=path)

    def __post_init__(self):
        globs = tuple((p, re.compile(fnmatch.translate(p))) for p in self.url_patterns
                      if any(c in p for c in "*?["))
        object.__setattr__(self, "_globs", globs)

    def __len__(self) -> int:
        return len(self.domains) + len(self.url_patterns) + len(self.sha256)

    def match_url(self, url: str | None) -> str | None:
        """The entry that opts `url` out ("domain:...", "url:..."), or None."""
        if not url or not len(self):
            return None
        normal = _normalise_url(url)
        host = (urlsplit(normal).hostname or "").rstrip(".")
        labels = host.split(".")
        for i in range(len(labels)):
            if ".".join(labels[i:]) in self.domains:
                return f"domain:{'.'.join(labels[i:])}"
        if normal in self.url_patterns:
            return f"url:{normal}"
        for pattern, glob in self._globs:
            if glob.match(normal):
                return f"url:{pattern}"
        return None

    def match_sha256(self, *digests: str | None) -> str | None:
        for d in digests:
            if d and d.lower() in self.sha256:
                return f"sha256:{d.lower()}"
        return None

    def match_bytes(self, data: bytes) -> str | None:
        return self.match_sha256(hashlib.sha256(data).hexdigest()) if self.sha256 else None


# ---------------------------------------------------------------- re-applying a list to written data


def opted_out_rows(record: ImageRecord, entry: str) -> list[ImageRecord]:
    """The rows that replace an image opted out by `entry`: one per URL, without bytes or sha256."""
    return [ImageRecord(sha256=None, urls=[u], status=OPTED_OUT, error=f"opted out by {entry}",
                        source=record.source, original_width=record.original_width,
                        original_height=record.original_height) for u in record.urls]


def apply_to_record(record: ImageRecord, optout: OptOutList) -> tuple[list[ImageRecord], str | None]:
    """([record] unchanged, None), or (its replacement rows, the entry that matched)."""
    if record.status == OPTED_OUT:
        return [record], None
    entry = optout.match_sha256(record.sha256) or next(filter(None, map(optout.match_url, record.urls)), None)
    if entry is None:
        return [record], None
    return opted_out_rows(record, entry), entry


@dataclass
class OptOutReport:
    """What a re-application changed, shard by shard."""

    source: str
    applied_at: str
    images_removed: list[dict] = field(default_factory=list)  # {shard, sha256, urls, entry}
    failed_rows_marked: list[dict] = field(default_factory=list)  # {shard, url, entry}
    nodes_dropped: list[dict] = field(default_factory=list)  # {shard, doc_id, node, url, sha256, entry}
    shards_rewritten: list[str] = field(default_factory=list)
    token_shards_stale: list[str] = field(default_factory=list)  # need re-tokenizing: tokens are not editable

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def find_shards(paths: list[str]) -> list[str]:
    """Every Arrow shard and fetch journal under `paths` (files, or directories walked recursively)."""
    found = []
    for path in paths:
        if not storage.is_local(path):
            found += storage.match(storage.join(path, "**" + SHARD_SUFFIX))
            continue
        path = path.removeprefix("file://")
        if os.path.isfile(path):
            found.append(path)
            continue
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no such file or directory: {path}")
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                if not name.startswith(".") and name.endswith((SHARD_SUFFIX, JOURNAL_SUFFIX)):
                    found.append(os.path.join(root, name))
    return found


def apply_to_paths(optout: OptOutList, paths: list[str], *, dry_run: bool = False) -> OptOutReport:
    """Re-apply `optout` to every image store, fetch journal and document shard under `paths`.

    Image stores go first: the sha256 of every image removed there also drops the document nodes that
    reference it, even when the list named the image only by URL. Shards are rewritten atomically, and
    only when something changed; with dry_run nothing is written.
    """
    report = OptOutReport(source=optout.source, applied_at=datetime.now(timezone.utc).isoformat())
    shards = find_shards(paths)
    kinds = {}
    for path in shards:
        kinds[path] = KIND_IMAGES if path.endswith(JOURNAL_SUFFIX) else shard_kind(open_shard(path).schema)
    removed_sha: dict[str, str] = {}
    for path in (p for p in shards if kinds[p] == KIND_IMAGES):
        journal = path.endswith(JOURNAL_SUFFIX)
        records = read_journal(path) if journal else images_from_table(read_shard(path, IMAGE_SCHEMA))
        out, changed = [], False
        for record in records:
            rows, entry = apply_to_record(record, optout)
            out += rows
            if entry is None:
                continue
            changed = True
            if record.status == "ok":
                removed_sha[record.sha256] = entry
                report.images_removed.append({"shard": path, "sha256": record.sha256, "urls": record.urls,
                                              "entry": entry})
            else:
                report.failed_rows_marked.append({"shard": path, "entry": entry,
                                                  "url": record.urls[0] if record.urls else None})
        if changed and not dry_run:
            if journal:
                write_journal(path, out)
            else:
                write_shard(path, images_to_table(out))
            report.shards_rewritten.append(path)
    for path in (p for p in shards if kinds[p] == KIND_DOCUMENTS):
        docs = documents_from_table(read_shard(path, DOCUMENT_SCHEMA))
        changed = False
        for d, doc in enumerate(docs):
            nodes = list(doc.nodes)
            for i, node in enumerate(nodes):
                if not node.is_image or not node.kept:
                    continue
                entry = (removed_sha.get(node.image_sha256 or "") or optout.match_sha256(node.image_sha256)
                         or optout.match_url(node.image_url))
                if entry is None:
                    continue
                nodes[i] = replace(node.dropped(OPTED_OUT), image_sha256=None)
                report.nodes_dropped.append({"shard": path, "doc_id": doc.doc_id, "node": i,
                                             "url": node.image_url, "sha256": node.image_sha256,
                                             "entry": entry})
                changed = True
            docs[d] = replace(doc, nodes=nodes)
        if changed and not dry_run:
            write_shard(path, documents_to_table(docs))
            report.shards_rewritten.append(path)
    report.token_shards_stale = [p for p in shards if kinds[p] == KIND_TOKENS] if (
        report.images_removed or report.nodes_dropped) else []
    return report


def write_report(report: OptOutReport, path: str) -> None:
    storage.write_bytes(path, json.dumps(report.to_json(), indent=2, sort_keys=True).encode("utf-8"))
