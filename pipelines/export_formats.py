"""The file formats of `interleaf export`: one output shard from its documents and their images' bytes.

Each writer takes `docs`, a list of (position in the run, Document, {node index: StoredImage}) in document
order (only kept nodes; a node whose bytes the store lacks has no entry and keeps its URL), writes one shard
atomically and returns the names of the files it wrote. Every writer is deterministic: the same documents
give the same bytes (fixed timestamps and owners in archives, no wall-clock anywhere).

- obelics: Parquet with OBELICS's four columns (`texts`, `images`, `metadata`, `general_metadata`) exactly as
  HuggingFaceM4/OBELICS has them (images by URL); `embed_images` adds `image_data`, a list parallel to
  `images` whose entries Hugging Face `datasets` decodes as PIL images (its `Image` feature, declared in the
  Parquet schema's `huggingface` metadata the way `datasets` writes it).
- webdataset: a tar with one sample per document: `<key>.json` (the document and its ordered nodes) and
  `<key>.img<k>.<ext>` per image with bytes, which the `webdataset` package groups into one sample (keys
  `json`, `img0.jpg`, ...); an image node names its file in "file". The key is the document's position in
  the run, ten digits: unique where doc_id need not be (a page captured twice with the same content keeps
  one doc_id until dedup runs, and two adjacent samples with one key would merge into one).
- mmc4: MMC4's JSONL (`url`, `text_list`, `image_info` with `image_name`, `raw_url`, `matched_text_index`,
  `matched_sim`, `face_detections`; `similarity_matrix` where the input had one) and, beside each JSONL shard,
  a zip of the images named by `image_name` (<sha256>.<ext>), as MMC4 ships its images in per-shard zips.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from interleaf import storage
from interleaf.schemas.document import Document
from interleaf.schemas.mmc4 import to_mmc4
from interleaf.schemas.obelics import to_obelics

FORMATS = ("obelics", "webdataset", "mmc4")
_EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif"}
_EPOCH_ZIP = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry: fixed, so output reproduces


@dataclass(frozen=True)
class StoredImage:
    """What an export needs of one image in the store."""

    sha256: str
    data: bytes
    format: str | None
    width: int | None
    height: int | None

    @property
    def extension(self) -> str:
        return _EXTENSIONS.get(self.format or "", "bin")

    @property
    def file_name(self) -> str:
        return f"{self.sha256}.{self.extension}"


def shard_files(fmt: str, index: int, count: int) -> list[str]:
    """The names of the files that shard `index` of `count` of format `fmt` consists of."""
    stem = f"part-{index:05d}-of-{count:05d}"
    if fmt == "obelics":
        return [stem + ".parquet"]
    if fmt == "webdataset":
        return [stem + ".tar"]
    if fmt == "mmc4":
        return [f"docs_shard_{index:05d}.jsonl", f"images_shard_{index:05d}.zip"]
    raise ValueError(f"unknown export format {fmt!r}; available: {', '.join(FORMATS)}")


def file_patterns(fmt: str) -> list[str]:
    """Globs (relative to the output) of every file an earlier export of `fmt` may have left."""
    return {"obelics": ["part-*-of-*.parquet"], "webdataset": ["part-*-of-*.tar"],
            "mmc4": ["docs_shard_*.jsonl", "images_shard_*.zip"]}[fmt]


def write_shard(fmt: str, directory: str, index: int, count: int, docs: list, *,
                embed_images: bool = False) -> list[str]:
    names = shard_files(fmt, index, count)
    paths = [storage.join(directory, name) for name in names]
    if fmt == "obelics":
        _write_obelics(paths[0], docs, embed_images)
    elif fmt == "webdataset":
        _write_webdataset(paths[0], docs)
    else:
        _write_mmc4(paths[0], paths[1], docs)
    return names


# ---------------------------------------------------------------- OBELICS (Parquet)

_OBELICS_SCHEMA = pa.schema([("texts", pa.list_(pa.string())), ("images", pa.list_(pa.string())),
                             ("metadata", pa.string()), ("general_metadata", pa.string())])
_IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
# Hugging Face `datasets`' own serialisation of these features (datasets 5.2: Features.to_dict()), which it
# reads back from the Parquet schema's b"huggingface" metadata
_STRINGS = {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"}
_HF_FEATURES = {"texts": _STRINGS, "images": _STRINGS, "metadata": {"dtype": "string", "_type": "Value"},
                "general_metadata": {"dtype": "string", "_type": "Value"}}


def _obelics_schema(embed_images: bool) -> pa.Schema:
    features = dict(_HF_FEATURES)
    schema = _OBELICS_SCHEMA
    if embed_images:
        features["image_data"] = {"feature": {"_type": "Image"}, "_type": "List"}
        schema = schema.append(pa.field("image_data", pa.list_(_IMAGE_STRUCT)))
    return schema.with_metadata({b"huggingface": json.dumps({"info": {"features": features}}).encode()})


def _write_obelics(path: str, docs: list, embed_images: bool) -> None:
    rows = []
    for _, doc, images in docs:
        row = to_obelics(doc)
        if embed_images:
            kept = [(i, n) for i, n in enumerate(doc.nodes) if n.kept]
            row["image_data"] = [
                None if n.is_text or images.get(i) is None else {"bytes": images[i].data, "path": None}
                for i, n in kept]
        rows.append(row)
    table = pa.Table.from_pylist(rows, schema=_obelics_schema(embed_images))
    with storage.atomic_write(path) as f:
        if rows:
            pq.write_table(table, f, row_group_size=min(len(rows), 256))
        else:  # no row group at all: readers (Hugging Face datasets among them) fail on an empty one
            pq.ParquetWriter(f, table.schema).close()


# ---------------------------------------------------------------- WebDataset (tar)


def sample_json(doc: Document, images: dict) -> dict:
    """The JSON of one WebDataset sample: the document and its kept nodes in order."""
    nodes, k = [], 0
    for i, n in enumerate(doc.nodes):
        if not n.kept:
            continue
        if n.is_text:
            node = {"type": "text", "text": n.text}
            if n.language:
                node.update(language=n.language, language_score=n.language_score)
        else:
            stored = images.get(i)
            node = {"type": "image", "url": n.image_url, "alt_text": n.alt_text, "sha256": n.image_sha256,
                    "file": None, "width": None, "height": None, "clip_score": n.clip_score}
            if stored is not None:
                node.update(file=f"img{k}.{stored.extension}", width=stored.width, height=stored.height)
                k += 1
        nodes.append(node)
    return {"doc_id": doc.doc_id, "url": doc.url, "language": doc.language,
            "language_score": doc.language_score,
            "crawl_date": doc.crawl_date.isoformat() if doc.crawl_date else None,
            "source_file": doc.source_file, "source_offset": doc.source_offset, "nodes": nodes}


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _write_webdataset(path: str, docs: list) -> None:
    with storage.atomic_write(path) as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for position, doc, images in docs:
            key = f"{position:010d}"
            sample = sample_json(doc, images)
            _tar_add(tar, f"{key}.json", _dumps(sample).encode())
            for node_index, node in zip((i for i, n in enumerate(doc.nodes) if n.kept), sample["nodes"]):
                if node.get("file"):
                    _tar_add(tar, f"{key}.{node['file']}", images[node_index].data)


# ---------------------------------------------------------------- MMC4 (JSONL + image zip)


def _write_mmc4(jsonl_path: str, zip_path: str, docs: list) -> None:
    lines, files = [], {}
    for _, doc, images in docs:
        row = to_mmc4(doc)
        if row["image_info"] and not row["text_list"]:  # images only: MMC4 attaches each to a sentence
            row["text_list"] = [""]
        by_url = {}
        for i, n in enumerate(doc.nodes):
            if n.kept and n.is_image and images.get(i) is not None:
                by_url.setdefault(n.image_url, images[i])
        for info in row["image_info"]:
            stored = by_url.get(info["raw_url"])
            info["image_name"] = stored.file_name if stored else None
            info.setdefault("face_detections", None)
            if stored:
                files.setdefault(stored.file_name, stored.data)
        lines.append(_dumps(row))
    with storage.atomic_write(jsonl_path) as f:
        f.write("".join(line + "\n" for line in lines).encode())
    # written to a seekable file first: on a stream that cannot seek (an object store's upload) zipfile
    # writes data descriptors, and the same shard would differ by where it is written
    with tempfile.SpooledTemporaryFile(max_size=64 * 2**20) as spool:
        with zipfile.ZipFile(spool, "w", zipfile.ZIP_STORED) as z:
            for name, data in files.items():
                info = zipfile.ZipInfo(name, date_time=_EPOCH_ZIP)
                info.external_attr = 0o644 << 16
                z.writestr(info, data)
        spool.seek(0)
        with storage.atomic_write(zip_path) as f:
            shutil.copyfileobj(spool, f, 2**20)


def _dumps(value) -> str:
    """One JSON line: UTF-8 as is, but U+2028 and U+2029 escaped (some JSONL readers split lines at them)."""
    return json.dumps(value, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
