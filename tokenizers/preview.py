"""Readable previews of token sequences for `interleaf inspect`: text decoded by the BPE, image blocks shown
as their code grid or decoded by the VQ into pictures.

The tokenizer files are found from what the shard's metadata says (the paths the tokenize stage was given),
or passed explicitly, and used only when their sha256 matches the shard's fingerprints.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import textwrap
from dataclasses import dataclass, field

from interleaf.schemas.tokens import TokenShardInfo
from interleaf.tokenizers.codec import SequenceCodec
from interleaf.tokenizers.text_bpe import TextTokenizer

log = logging.getLogger(__name__)


@dataclass
class Preview:
    """What can be decoded for a token shard: a codec (with its text tokenizer) and the VQ decoder."""

    codec: SequenceCodec | None = None  # None: no matching text tokenizer was found
    vq: object | None = None  # a tokenizers.image.ImageTokenizer, or None: image blocks show their codes
    notes: list[str] = field(default_factory=list)  # why a tokenizer was not used


def _candidates(info: TokenShardInfo, role: str, given: str | None) -> list[str]:
    if given:
        return [given]
    recorded = (info.config.get("tokenize") or {}).get(f"{role}_tokenizer")
    return [recorded] if recorded else []


def load_preview(info: TokenShardInfo, *, text: str | None = None, image: str | None = None,
                 with_images: bool = True, device: str = "cpu") -> Preview:
    """The codec and VQ for shards described by `info`, from the given files or the ones their metadata names.
    A file is used only when its sha256 is the shard's fingerprint for that role. with_images=False skips the
    VQ (terminal output shows codes, not pictures)."""
    from interleaf.storage import file_sha256
    from interleaf.tokenizers import image as image_tokenizers
    preview = Preview()
    want = info.tokenizers
    for path in _candidates(info, "text", text):
        if not os.path.exists(path):
            preview.notes.append(f"text tokenizer {path} not found")
            continue
        tok = TextTokenizer.load(path)
        if tok.sha256 != want.get("text"):
            preview.notes.append(f"text tokenizer {path} has sha256 {tok.sha256[:12]}, the shards were made "
                                 f"with {str(want.get('text'))[:12]}")
            continue
        preview.codec = SequenceCodec(info.vocabulary, tok)
    for path in _candidates(info, "image", image) if with_images else []:
        if not os.path.exists(path):
            preview.notes.append(f"image tokenizer {path} not found")
            continue
        sha = file_sha256(path)
        if sha != want.get("image"):
            preview.notes.append(f"image tokenizer {path} has sha256 {sha[:12]}, the shards were made with "
                                 f"{str(want.get('image'))[:12]}")
            continue
        preview.vq = image_tokenizers.load(path, device)
    if preview.codec is None and not any(n.startswith("text") for n in preview.notes):
        preview.notes.append("no text tokenizer named in the shard metadata; pass one to decode text")
    return preview


def decoded_row_text(tokens: list[int], codec: SequenceCodec, width: int = 100) -> str:
    """Text nodes (shortened, wrapped) and image blocks (grid and first codes), one per line, indented."""
    lines = []
    for kind, value in codec.decode(tokens, strict=False):
        if kind == "text":
            body = textwrap.shorten(value.replace("\n", " ⏎ "), width=width * 3, placeholder=" …") or "''"
            lines.append(textwrap.fill(body, width=width, initial_indent="  ", subsequent_indent="  "))
        else:
            flat = [c for row in value for c in row]
            lines.append(f"  [image {len(value)}x{len(value[0])} codes: {' '.join(map(str, flat[:12]))} …]")
    return "\n".join(lines)


def decoded_row_html(tokens: list[int], codec: SequenceCodec, vq=None, display_px: int = 128) -> str:
    """The sequence as HTML: text paragraphs and, with a VQ, the decoded images inline (PNG, pixelated)."""
    parts = []
    for kind, value in codec.decode(tokens, strict=False):
        if kind == "text":
            parts.append(f"<p>{html.escape(value)}</p>")
        elif vq is None:
            parts.append(f'<span class="placeholder">image {len(value)}x{len(value[0])} codes</span>')
        else:
            import torch

            from interleaf.tokenizers.image import tensor_to_image
            img = tensor_to_image(vq.decode(torch.tensor([value]))[0])
            buf = io.BytesIO()
            img.save(buf, "PNG")
            data = base64.b64encode(buf.getvalue()).decode()
            parts.append(f'<figure><img src="data:image/png;base64,{data}" width="{display_px}" '
                         'style="image-rendering:pixelated" alt="decoded image"><figcaption>decoded from '
                         f"{len(value)}x{len(value[0])} VQ codes</figcaption></figure>")
    return "\n".join(parts)
