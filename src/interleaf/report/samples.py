"""Sample documents for the run report: their text and images in reading order, images inline.

Images come from the run's image store (bytes read for the sampled documents' images only) and are scaled
down to thumbnails before they are embedded, so a report of a run with large images stays small.
"""

from __future__ import annotations

import io
import logging
import textwrap

from interleaf.htmlsafe import data_image, link
from interleaf.imagefile import ImageDecodeError, decode, read_header
from interleaf.report.svg import esc, fmt
from interleaf.schemas.document import Document

log = logging.getLogger(__name__)

THUMB_SIDE = 320  # px: the longest side of an embedded image (the page shows them at most 200 px high)
PARAGRAPH_CHARS = 320  # a paragraph longer than this is shortened
RUN_OF_TEXT = 3  # consecutive paragraphs shown before the rest of the run is folded into a count


def thumbnail(data: bytes, fmt_: str | None) -> tuple[bytes, str]:
    """(bytes, MIME type) of an image no larger than THUMB_SIDE; the stored bytes when they already are, or
    when Pillow cannot read them (the browser may still)."""
    mime = f"image/{(fmt_ or 'jpeg').lower()}"
    try:
        width, height, _ = read_header(data)
        if max(width, height) <= THUMB_SIDE and len(data) < 64_000:
            return data, mime
        im = decode(data)  # the first frame of an animation
        im = im.convert("RGBA") if im.mode in ("RGBA", "LA", "P") else im.convert("RGB")
        im.thumbnail((THUMB_SIDE, THUMB_SIDE))
        out = io.BytesIO()
        if im.mode == "RGBA":
            im.save(out, "PNG", optimize=True)
            return out.getvalue(), "image/png"
        im.save(out, "JPEG", quality=82)
        return out.getvalue(), "image/jpeg"
    except (ImageDecodeError, OSError) as e:  # OSError: an encoder failing on what it was given
        log.debug("cannot thumbnail an image (%s); embedding it as stored", e)
        return data, mime


def _image_html(node, images: dict[str, tuple[bytes, str]]) -> str:
    found = images.get(node.image_sha256 or "") or images.get(node.image_url or "")
    alt = node.alt_text or ""
    size = (f"{node.declared_width}×{node.declared_height}" if node.declared_width and node.declared_height
            else "")
    score = f"CLIP {node.clip_score:.3f}" if node.clip_score is not None else ""
    bits = [b for b in (alt and f"alt: {alt}", size, score) if b]
    uri = data_image(*thumbnail(*found)) if found else None
    if uri:
        img = f'<img src="{uri}" alt="{esc(alt or node.image_url)}">'
    else:
        why = "image of a format not shown" if found else "not in the image store"
        img = f'<span class="noimg">{why}<br>{esc(textwrap.shorten(node.image_url or "", 60))}</span>'
    return f'<figure class="img">{img}<figcaption>{esc(" · ".join(bits))}</figcaption></figure>'


def document_card(doc: Document, images: dict[str, tuple[bytes, str]]) -> str:
    """One document as a card: URL, counts, then its nodes in order (long runs of text folded)."""
    kept = [n for n in doc.nodes if n.kept]
    n_img = sum(1 for n in kept if n.is_image)
    words = sum(len((n.text or "").split()) for n in kept if n.is_text)
    parts = [(f'<div class="doc"><div class="meta">{link(doc.url)}'
             f'<span> · {fmt(words)} words · {n_img} image{"s" if n_img != 1 else ""}</span></div>')]
    run: list[str] = []

    def flush():
        shown = run[:RUN_OF_TEXT]
        parts.extend(f"<p>{esc(textwrap.shorten(t, PARAGRAPH_CHARS, placeholder=' …'))}</p>" for t in shown)
        if len(run) > RUN_OF_TEXT:
            rest = run[RUN_OF_TEXT:]
            parts.append(f'<p class="fold">… {len(rest)} more paragraph{"s" if len(rest) > 1 else ""} '
                         f'({fmt(sum(len(t.split()) for t in rest))} words)</p>')
        run.clear()

    gallery: list[str] = []
    for n in kept:
        if n.is_text:
            if gallery:
                parts.append('<div class="gallery">' + "".join(gallery) + "</div>")
                gallery = []
            run.append(n.text or "")
        else:
            flush()
            gallery.append(_image_html(n, images))
    flush()
    if gallery:
        parts.append('<div class="gallery">' + "".join(gallery) + "</div>")
    parts.append("</div>")
    return "\n".join(parts)
