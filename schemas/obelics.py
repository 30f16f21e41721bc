"""OBELICS rows to and from Document.

An OBELICS row (HuggingFaceM4/OBELICS) has parallel lists `texts` and `images` (at each position exactly one
is set; the project's own extraction writes "" rather than None for the unused image slot), `metadata` (a
JSON string: a list with one entry per position, image entries carrying src, alt_text, rendered and
original sizes) and `general_metadata` (a JSON string: url, warc_filename, warc_record_offset, ...).
Fields the Document has no place for are kept in `Document.meta["obelics"]`, keyed by image URL so they
survive node filtering, and written back on the way out.
"""

from __future__ import annotations

import json

from interleaf.schemas.document import Document, Node, make_doc_id


def _json(value, what: str):
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return value
    try:
        return json.loads(value)
    except (TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"OBELICS {what} is not valid JSON: {e}") from None


def _int(v) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError, OverflowError):
        return None


_IMAGE_SIZES = ("original_width", "original_height", "rendered_width", "rendered_height")


def _check_count(value, name: str, limit: int) -> None:
    """A size or offset of the format: absent, or a whole number from 0 below `limit` (ValueError naming
    the field otherwise; OBELICS writes them as integers, some copies as floats such as 640.0)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"OBELICS {name} must be a number, found {type(value).__name__}")
    if not (0 <= value < limit) or value != int(value):
        raise ValueError(f"OBELICS {name} must be a whole number from 0 below {limit}, found {value!r:.40}")


def from_obelics(row: dict, *, source_file: str | None = None, row_number: int | None = None) -> Document:
    """One OBELICS row to a Document. Raises ValueError for a row that is not in the format."""
    texts, images = row.get("texts"), row.get("images")
    if not isinstance(texts, list) or not isinstance(images, list):
        raise ValueError("OBELICS row needs 'texts' and 'images' lists")
    if len(texts) != len(images):
        raise ValueError(f"OBELICS row has {len(texts)} texts but {len(images)} images; they must be parallel")
    metadata = _json(row.get("metadata"), "metadata") or [None] * len(texts)
    if len(metadata) != len(texts):
        raise ValueError(f"OBELICS metadata has {len(metadata)} entries for {len(texts)} positions")
    general = _json(row.get("general_metadata"), "general_metadata") or {}
    if not isinstance(general, dict):
        raise ValueError(f"OBELICS general_metadata must be a JSON object, found {type(general).__name__}")
    for key in ("warc_record_offset", "warc_record_length"):
        _check_count(general.get(key), f"general_metadata.{key}", 2**63)
    url = general.get("url") or row.get("url")
    if not url:
        raise ValueError("OBELICS row has no URL (general_metadata.url)")
    if not isinstance(url, str):
        raise ValueError(f"OBELICS general_metadata.url must be a string, found {type(url).__name__}")

    nodes, image_meta = [], {}
    for i, (text, image, md) in enumerate(zip(texts, images, metadata)):
        if image:
            md = md or {}
            if not isinstance(image, str) or not isinstance(md, dict):
                raise ValueError(f"OBELICS position {i}: images[{i}] must be a string and metadata[{i}] an "
                                 "object")
            for key in _IMAGE_SIZES:
                _check_count(md.get(key), f"metadata[{i}].{key}", 2**31)
            nodes.append(Node.image_node(image, alt_text=md.get("alt_text"), width=_int(md.get("rendered_width")),
                                         height=_int(md.get("rendered_height"))))
            extra = {k: v for k, v in md.items() if k not in ("src", "alt_text", "rendered_width",
                                                               "rendered_height", "document_url")}
            if extra:
                image_meta[image] = extra
        elif isinstance(text, str):
            nodes.append(Node.text_node(text))
        elif text is not None:
            raise ValueError(f"OBELICS texts[{i}] must be a string or null, found {type(text).__name__}")
        else:
            raise ValueError(f"OBELICS position {i} has neither text nor image")

    meta = {"obelics": {"general_metadata": general}}
    if image_meta:
        meta["obelics"]["image_metadata"] = image_meta
    return Document(
        doc_id=make_doc_id(url, nodes), url=url,
        source_file=general.get("warc_filename") or source_file,
        source_offset=_int(general.get("warc_record_offset")) if general.get("warc_filename") else row_number,
        nodes=nodes, meta=meta)


def to_obelics(doc: Document, *, kept_only: bool = True) -> dict:
    """A Document to an OBELICS row (images None at text positions, as in the published dataset)."""
    nodes = [n for n in doc.nodes if n.kept] if kept_only else list(doc.nodes)
    saved = doc.meta.get("obelics", {})
    image_meta = saved.get("image_metadata", {})
    texts, images, metadata = [], [], []
    for n in nodes:
        if n.is_text:
            texts.append(n.text)
            images.append(None)
            metadata.append(None)
        else:
            texts.append(None)
            images.append(n.image_url)
            md = {"document_url": doc.url, **image_meta.get(n.image_url, {}), "src": n.image_url}
            if n.alt_text is not None:
                md["alt_text"] = n.alt_text
            if n.declared_width is not None:
                md["rendered_width"] = n.declared_width
            if n.declared_height is not None:
                md["rendered_height"] = n.declared_height
            metadata.append(md)
    general = dict(saved.get("general_metadata") or {"url": doc.url})
    general.setdefault("url", doc.url)
    return {"texts": texts, "images": images, "metadata": json.dumps(metadata),
            "general_metadata": json.dumps(general)}
