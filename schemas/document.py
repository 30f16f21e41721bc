"""The interleaved Document: ordered text and image nodes from one web page, and its Arrow schema.

A document keeps every node it was given. Filters never delete: they set a node's (or the document's)
`status` to "dropped" with a `reason`, so a run can keep dropped parts for audit, or strip them with
`Document.kept()` before writing curated shards.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import pyarrow as pa

from interleaf.schemas.meta import KIND_DOCUMENTS, schema_metadata

DOCUMENT_SCHEMA_VERSION = 2  # 2: language_score, and a language per node (filters/language.py)

KEPT = "kept"
DROPPED = "dropped"
TEXT = "text"
IMAGE = "image"


@dataclass(kw_only=True)
class Node:
    """One text paragraph or one image, in reading order."""

    kind: str  # TEXT or IMAGE
    text: str | None = None  # the paragraph (text nodes only)
    image_url: str | None = None  # absolute URL of the image (image nodes only)
    alt_text: str | None = None  # alt attribute, or the caption a dataset shipped with the image
    declared_width: int | None = None  # width attribute of the <img>, as written in the page
    declared_height: int | None = None  # height attribute of the <img>
    image_sha256: str | None = None  # hex sha256 of the image bytes in the image store, once resolved
    clip_score: float | None = None  # cosine similarity of the image with its text, once scored
    # On a page that mixes languages, a text node's own language (ISO 639-1) and its identifier's score;
    # None: the node has the document's language (filters/language.py)
    language: str | None = None
    language_score: float | None = None
    status: str = KEPT  # KEPT or DROPPED
    reason: str | None = None  # why it was dropped (a stable reason code), None when kept

    @classmethod
    def text_node(cls, text: str) -> Node:
        return cls(kind=TEXT, text=text)

    @classmethod
    def image_node(cls, url: str, *, alt_text: str | None = None, width: int | None = None,
                   height: int | None = None) -> Node:
        return cls(kind=IMAGE, image_url=url, alt_text=alt_text, declared_width=width, declared_height=height)

    @property
    def is_text(self) -> bool:
        return self.kind == TEXT

    @property
    def is_image(self) -> bool:
        return self.kind == IMAGE

    @property
    def kept(self) -> bool:
        return self.status == KEPT

    def dropped(self, reason: str) -> Node:
        node = object.__new__(Node)  # a copy (dataclasses.replace re-runs __init__: a tenth of extraction)
        node.__dict__.update(self.__dict__, status=DROPPED, reason=reason)
        return node

    def validate(self) -> None:
        if self.kind == TEXT:
            if self.text is None:
                raise ValueError("text node without text")
        elif self.kind == IMAGE:
            if not self.image_url and not self.image_sha256:
                raise ValueError("image node without image_url or image_sha256")
        else:
            raise ValueError(f"node kind must be {TEXT!r} or {IMAGE!r}, found {self.kind!r}")
        if self.status not in (KEPT, DROPPED):
            raise ValueError(f"node status must be {KEPT!r} or {DROPPED!r}, found {self.status!r}")
        if (self.status == DROPPED) != (self.reason is not None):
            raise ValueError(f"a dropped node needs a reason and a kept one none (status={self.status!r}, "
                             f"reason={self.reason!r})")


@dataclass(kw_only=True)
class Document:
    """One web page as an ordered list of nodes, with where it came from."""

    doc_id: str  # stable id: see make_doc_id
    url: str  # the page URL (WARC-Target-URI, or the dataset's url field)
    source_file: str | None = None  # the WARC or dataset file it was read from
    source_offset: int | None = None  # byte offset of the WARC record, or row number in a dataset file
    crawl_date: datetime | None = None  # WARC-Date, UTC
    language: str | None = None  # ISO 639-1 code when known: identified (filters/language.py) or declared
    language_score: float | None = None  # the identifier's probability for its answer; None: not identified
    nodes: list[Node] = field(default_factory=list)
    status: str = KEPT  # KEPT or DROPPED
    reason: str | None = None  # why the whole document was dropped
    meta: dict = field(default_factory=dict)  # source-specific extras kept for round trips (JSON-serialisable)

    @property
    def text_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.is_text]

    @property
    def image_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.is_image]

    @property
    def kept(self) -> bool:
        return self.status == KEPT

    def dropped(self, reason: str) -> Document:
        return replace(self, status=DROPPED, reason=reason)

    def kept_nodes(self) -> Document:
        """The same document without its dropped nodes."""
        return replace(self, nodes=[n for n in self.nodes if n.kept])

    def text(self) -> str:
        """The kept text of the document, paragraphs joined by blank lines."""
        return "\n\n".join(n.text for n in self.nodes if n.is_text and n.kept and n.text)

    def validate(self) -> None:
        if not self.doc_id:
            raise ValueError("document without doc_id")
        if self.status not in (KEPT, DROPPED):
            raise ValueError(f"document status must be {KEPT!r} or {DROPPED!r}, found {self.status!r}")
        if (self.status == DROPPED) != (self.reason is not None):
            raise ValueError(f"document {self.doc_id}: a dropped document needs a reason and a kept one none")
        for i, node in enumerate(self.nodes):
            try:
                node.validate()
            except ValueError as e:
                raise ValueError(f"document {self.doc_id} node {i}: {e}") from None


_INT32_MAX, _INT64_MAX = 2**31 - 1, 2**63 - 1
_FLOAT32_MAX = 3.4028234663852886e38


def _check_str(value, field: str, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"{field}: expected {'a non-empty' if required else 'a'} string, found "
                         f"{type(value).__name__} {str(value)[:40]!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{field}: not valid Unicode (a lone surrogate such as \\ud800)") from None


def _check_int(value, field: str, low: int, high: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field}: expected an integer, found {type(value).__name__} {str(value)[:40]!r}")
    if not low <= value <= high:
        raise ValueError(f"{field}: {str(value)[:40]} is outside {low}..{high}")


def _check_float(value, field: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not -_FLOAT32_MAX <= value <= _FLOAT32_MAX):  # NaN fails both
        raise ValueError(f"{field}: expected a finite number, found {str(value)[:40]!r}")


MAX_META_DEPTH = 64  # deeper values cannot travel between Beam workers (pickling recurses per level)


def _depth(value) -> int:
    """How deeply lists and dicts nest in `value` (iteratively: the value may nest past the recursion
    limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d)
            if d > MAX_META_DEPTH:
                return d
            stack.extend((x, d + 1) for x in v if isinstance(x, (dict, list)))
    return deepest


def check_writable(doc: Document) -> None:
    """Raise ValueError naming the first field of `doc` that the document schema cannot hold: a wrong type,
    a number out of its column's range, NaN or infinity, text that is not valid Unicode, meta that is not
    JSON. Readers of untrusted rows call it, so that a bad row is dropped where it is read, not at write."""
    _check_str(doc.doc_id, "doc_id", required=True)
    _check_str(doc.url, "url", required=True)
    _check_str(doc.source_file, "source_file")
    _check_int(doc.source_offset, "source_offset", -_INT64_MAX - 1, _INT64_MAX)
    if doc.crawl_date is not None and not isinstance(doc.crawl_date, datetime):
        raise ValueError(f"crawl_date: expected a datetime, found {type(doc.crawl_date).__name__}")
    _check_str(doc.language, "language")
    _check_float(doc.language_score, "language_score")
    if not isinstance(doc.nodes, list):
        raise ValueError("nodes: expected a list")
    for i, n in enumerate(doc.nodes):
        where = f"node {i}"
        if not isinstance(n, Node) or n.kind not in (TEXT, IMAGE):
            raise ValueError(f"{where}: not a text or image node")
        for name in ("text", "image_url", "alt_text", "image_sha256", "reason", "language"):
            _check_str(getattr(n, name), f"{where} {name}")
        for name in ("declared_width", "declared_height"):
            _check_int(getattr(n, name), f"{where} {name}", 0, _INT32_MAX)
        _check_float(n.clip_score, f"{where} clip_score")
        _check_float(n.language_score, f"{where} language_score")
    if _depth(doc.meta) > MAX_META_DEPTH:
        raise ValueError(f"meta: nested deeper than {MAX_META_DEPTH} levels")
    try:
        json.dumps(doc.meta, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"meta: not JSON ({str(e).splitlines()[0][:120]})") from None
    doc.validate()


def make_doc_id(url: str, nodes: list[Node]) -> str:
    """A stable id from the URL and the content: the same page captured twice with the same content gets the
    same id, a changed page a new one. 32 hex characters of sha256 (128 bits: no collisions at web scale)."""
    h = hashlib.sha256(url.encode("utf-8"))
    for n in nodes:
        h.update(b"\x00T" if n.is_text else b"\x00I")
        h.update((n.text if n.is_text else n.image_url or n.image_sha256 or "").encode("utf-8"))
    return h.hexdigest()[:32]


NODE_TYPE = pa.struct([
    pa.field("kind", pa.string(), nullable=False),
    pa.field("text", pa.string()),
    pa.field("image_url", pa.string()),
    pa.field("alt_text", pa.string()),
    pa.field("declared_width", pa.int32()),
    pa.field("declared_height", pa.int32()),
    pa.field("image_sha256", pa.string()),
    pa.field("clip_score", pa.float32()),
    pa.field("language", pa.string()),
    pa.field("language_score", pa.float32()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
])

DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("url", pa.string(), nullable=False),
        pa.field("source_file", pa.string()),
        pa.field("source_offset", pa.int64()),
        pa.field("crawl_date", pa.timestamp("s", tz="UTC")),
        pa.field("language", pa.string()),
        pa.field("language_score", pa.float32()),
        pa.field("nodes", pa.list_(pa.field("item", NODE_TYPE, nullable=False)), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("meta", pa.string()),  # JSON object, "{}" when empty
    ],
    metadata=schema_metadata(KIND_DOCUMENTS, DOCUMENT_SCHEMA_VERSION),
)

_NODE_FIELDS = [f.name for f in NODE_TYPE]


def _utc(d: datetime | None) -> datetime | None:
    if d is None or d.tzinfo is not None:
        return d
    return d.replace(tzinfo=timezone.utc)


def documents_to_table(docs: list[Document], schema: pa.Schema = DOCUMENT_SCHEMA) -> pa.Table:
    """Documents to an Arrow table with the declared schema (never inferred)."""
    columns: dict[str, list] = {f.name: [] for f in schema}
    for d in docs:
        columns["doc_id"].append(d.doc_id)
        columns["url"].append(d.url)
        columns["source_file"].append(d.source_file)
        columns["source_offset"].append(d.source_offset)
        columns["crawl_date"].append(_utc(d.crawl_date))
        columns["language"].append(d.language)
        columns["language_score"].append(d.language_score)
        columns["nodes"].append([{k: getattr(n, k) for k in _NODE_FIELDS} for n in d.nodes])
        columns["status"].append(d.status)
        columns["reason"].append(d.reason)
        columns["meta"].append(json.dumps(d.meta, sort_keys=True, ensure_ascii=False))
    return pa.Table.from_pydict(columns, schema=schema)


def documents_from_table(table: pa.Table) -> list[Document]:
    """Documents of a table with DOCUMENT_SCHEMA's columns. Raises SchemaMismatchError (one line) for a
    row that cannot be one (a `meta` cell that is not a JSON object, a node of unknown fields)."""
    from interleaf.schemas.meta import SchemaMismatchError

    try:
        rows = table.to_pylist()
    except (OverflowError, ValueError, KeyError) as e:  # a timestamp out of Python's range, an unknown zone
        raise SchemaMismatchError(f"a value that cannot be read: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
    docs = []
    for i, row in enumerate(rows):
        try:
            nodes = [Node(**n) for n in row.pop("nodes")]
            meta = json.loads(row.pop("meta") or "{}")
            if not isinstance(meta, dict):
                raise ValueError("meta is not a JSON object")
            docs.append(Document(**row, nodes=nodes, meta=meta))
        except (ValueError, TypeError) as e:
            raise SchemaMismatchError(f"document row {i}: {str(e).splitlines()[0][:200]}") from None
    return docs
