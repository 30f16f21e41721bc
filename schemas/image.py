"""The image store: one row per unique image (keyed by the sha256 of the stored bytes), and its Arrow schema.

A URL that could not be fetched also gets a row, with no sha256 and no bytes, so that every URL ends in
exactly one status (see FETCH_STATUSES) and a rerun knows what not to fetch again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from interleaf.schemas.meta import KIND_IMAGES, schema_metadata

IMAGE_SCHEMA_VERSION = 2  # 2: nsfw_score, face_count, face_boxes (filters/image_safety.py)

STATUS_OK = "ok"
# The fixed taxonomy of fetch outcomes: "ok" or one failure reason. Archived images read from a WARC get
# "ok" like fetched ones.
FETCH_STATUSES = (
    STATUS_OK, "dns", "connect", "timeout", "http_4xx", "http_5xx", "too_many_redirects", "robots_txt",
    "x_robots_tag", "opted_out", "private_address", "too_large", "not_image", "decode_error", "too_small",
    "bad_aspect", "unsupported_scheme", "error", "bad_url", "blocked_domain", "blocked_url",
    "banned_url_word", "tdm_reserved", "nsfw",
)


@dataclass(kw_only=True)
class ImageRecord:
    """One image: its bytes (after resizing), where it came from, and what interleaf learned about it."""

    sha256: str | None  # hex sha256 of `data`; None when the fetch failed
    urls: list[str] = field(default_factory=list)  # every URL that resolved to these bytes
    width: int | None = None  # of the stored (possibly resized) image
    height: int | None = None
    original_width: int | None = None  # as served, before resizing
    original_height: int | None = None
    original_bytes: int | None = None  # size in bytes as served
    format: str | None = None  # of the stored bytes: "jpeg", "png", "webp", "gif"
    phash: str | None = None  # 64-bit perceptual hash, 16 hex characters
    status: str = STATUS_OK  # one of FETCH_STATUSES
    error: str | None = None  # the underlying error message when status is not "ok"
    source: str | None = None  # "warc" for archived responses, "fetch" for downloads
    data: bytes | None = None  # the stored image bytes
    clip_model: str | None = None  # which CLIP model produced the embedding
    clip_embedding: list[float] | None = None  # L2-normalised image embedding
    clip_score: float | None = None  # best similarity with the text of any document that uses it
    nsfw_score: float | None = None  # NudeNet's highest NSFW-class score, 0-1 (None: not scored)
    face_count: int | None = None  # faces found (None: not looked for)
    face_boxes: list[list[int]] | None = None  # [x, y, width, height] of each face, upright image's pixels

    def validate(self) -> None:
        if self.status not in FETCH_STATUSES:
            raise ValueError(f"image status must be one of {FETCH_STATUSES}, found {self.status!r}")
        if self.status == STATUS_OK and (self.sha256 is None or self.data is None):
            raise ValueError(f"image {self.urls[:1]}: status ok needs sha256 and data")
        if not self.urls and self.sha256 is None:
            raise ValueError("image record with neither sha256 nor any URL")


_BOX = pa.list_(pa.int32(), 4)  # x, y, width, height

IMAGE_SCHEMA = pa.schema(
    [
        pa.field("sha256", pa.string()),
        pa.field("urls", pa.list_(pa.field("item", pa.string(), nullable=False)), nullable=False),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("original_width", pa.int32()),
        pa.field("original_height", pa.int32()),
        pa.field("original_bytes", pa.int64()),
        pa.field("format", pa.string()),
        pa.field("phash", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("source", pa.string()),
        pa.field("data", pa.large_binary()),
        pa.field("clip_model", pa.string()),
        pa.field("clip_embedding", pa.list_(pa.field("item", pa.float32(), nullable=False))),
        pa.field("clip_score", pa.float32()),
        pa.field("nsfw_score", pa.float32()),
        pa.field("face_count", pa.int32()),
        pa.field("face_boxes", pa.list_(pa.field("item", _BOX, nullable=False))),
    ],
    metadata=schema_metadata(KIND_IMAGES, IMAGE_SCHEMA_VERSION),
)

_FIELDS = [f.name for f in IMAGE_SCHEMA]


def images_to_table(records: list[ImageRecord]) -> pa.Table:
    columns = {name: [getattr(r, name) for r in records] for name in _FIELDS}
    return pa.Table.from_pydict(columns, schema=IMAGE_SCHEMA)


def images_from_table(table: pa.Table) -> list[ImageRecord]:
    """Image records of a table with IMAGE_SCHEMA's columns. Raises SchemaMismatchError (one line) for a
    value that cannot be read or a row that cannot be one."""
    from interleaf.schemas.meta import SchemaMismatchError

    try:
        return [ImageRecord(**row) for row in table.to_pylist()]
    except (OverflowError, ValueError, KeyError, TypeError) as e:
        raise SchemaMismatchError(f"an image row that cannot be read: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
