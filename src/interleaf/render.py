"""Rendering of summaries and sample rows: readable terminal text, and a self-contained HTML page."""

from __future__ import annotations

import html
import json
import os
import textwrap

import pyarrow as pa
import pyarrow.compute as pc

from interleaf import storage
from interleaf.htmlsafe import CSP_META, data_image, link
from interleaf.inspect import Summary
from interleaf.schemas.document import Document
from interleaf.schemas.meta import KIND_DOCUMENTS, KIND_IMAGES
from interleaf.schemas.tokens import TokenShardInfo
from interleaf.shards import ShardError, open_shards
from interleaf.tokenizers.layout import IMAGE_BLOCK, grid_tokens, token_layout

# ---------------------------------------------------------------- terminal


def summary_text(summary: Summary, path: str) -> str:
    lines = [f"{path}: {summary.kind} shards: {summary.shards}, rows: {summary.rows}"]
    for key, value in summary.stats.items():
        if isinstance(value, dict) and value and all(k.startswith("p") or k == "mean" for k in value):
            lines.append(f"  {key}: " + "  ".join(f"{k}={v:g}" for k, v in value.items()))
        elif isinstance(value, dict):
            lines.append(f"  {key}: " + (json.dumps(value) if value else "none"))
        else:
            lines.append(f"  {key}: {value if value is not None else 'none'}")
    return "\n".join(lines)


def _node_size(n) -> str:
    if n.declared_width and n.declared_height:
        return f"{n.declared_width}x{n.declared_height}"
    return "size ?"


def language_label(language: str | None, score: float | None) -> str:
    """"lang de 0.99", "lang undetermined 0.41", or "lang ?" when the language was not identified."""
    if score is None:
        return f"lang {language or '?'}"
    return f"lang {language or 'undetermined'} {score:.2f}"


def document_text(doc: Document, width: int = 100) -> str:
    head = f"── {doc.doc_id}  {doc.url}  {language_label(doc.language, doc.language_score)}"
    if not doc.kept:
        head += f"  [DROPPED: {doc.reason}]"
    lines = [head]
    for n in doc.nodes:
        mark = "" if n.kept else f"  ✗ {n.reason}"
        if n.is_text:
            body = textwrap.shorten(n.text or "", width=width * 3, placeholder=" …")
            wrapped = textwrap.fill(body, width=width, initial_indent="  ", subsequent_indent="  ")
            scored = n.language_score is not None
            own = f"  [{language_label(n.language, n.language_score)}]" if scored else ""
            lines.append(wrapped + own + mark)
        else:
            alt = f' alt="{n.alt_text}"' if n.alt_text else ""
            sha = f" sha256={n.image_sha256[:12]}" if n.image_sha256 else ""
            score = f" clip={n.clip_score:.3f}" if n.clip_score is not None else ""
            status = "kept" if n.kept else "dropped"
            lines.append(f"  [image {n.image_url}{alt} {_node_size(n)} {status}{sha}{score}]{mark}")
    return "\n".join(lines)


def image_row_text(row: dict) -> str:
    size = f"{row['width']}x{row['height']}" if row.get("width") else "size ?"
    sha = (row.get("sha256") or "-")[:16]
    err = f" error={row['error']}" if row.get("error") else ""
    safety = ""
    if row.get("nsfw_score") is not None:
        safety += f" nsfw={row['nsfw_score']:.3f}"
    if row.get("face_count") is not None:
        safety += f" faces={row['face_count']}"
    return f"── {sha} {row['status']} {row.get('format') or '-'} {size}{safety} {row['urls'][:2]}{err}"


def token_row_text(doc_id: str, tokens: list[int], info: TokenShardInfo, codec=None) -> str:
    """A token row as its layout (text spans and image blocks); decoded text when a codec is given."""
    head = f"── {doc_id}: {len(tokens)} tokens"
    if codec is not None:
        from interleaf.tokenizers.preview import decoded_row_text
        return head + "\n" + decoded_row_text(tokens, codec)
    parts = []
    vocab = info.vocabulary
    grids = grid_tokens(vocab)
    for span in token_layout(tokens, vocab):
        ids = span.tokens
        if span.kind == IMAGE_BLOCK:
            rows, cols = grids.get(ids[0], vocab.image_grid) if ids else vocab.image_grid
            codes = len(ids) - (1 if ids and ids[0] in grids else 0)
            cut = "" if span.closed else ", cut off before <eoi>"
            parts.append(f"[image block: {codes} codes, grid {rows}x{cols}{cut}]")
        else:
            text_ids = [t - vocab.text_offset for t in ids if t >= vocab.text_offset]
            specials = [name for name, i in vocab.special_tokens.items() if i in ids]
            parts.append(f"[text: {len(ids)} tokens{' ' + ' '.join(specials) if specials else ''} "
                         f"ids {text_ids[:8]}{'…' if len(text_ids) > 8 else ''}]")
    return head + "\n  " + "\n  ".join(parts)


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222;line-height:1.45}
h1{font-size:1.4em} h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.9em} td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}
.doc{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;margin:1.2em 0}
.doc.dropped{background:#fff4f4} .meta{color:#666;font-size:.85em;word-break:break-all}
.node.dropped{opacity:.45;text-decoration:line-through} .reason{color:#b00;font-size:.8em}
figure{margin:.6em 0} figure img{max-width:100%;max-height:320px;border:1px solid #eee}
.placeholder{display:inline-block;background:#f3f3f3;border:1px dashed #aaa;padding:.5em;font-size:.85em}
figcaption{font-size:.8em;color:#555;word-break:break-all}
"""


def _summary_table(summary: Summary) -> str:
    rows = []
    for key, value in summary.to_json().items():
        cell = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        rows.append(f"<tr><th>{html.escape(key)}</th><td>{html.escape(cell)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"



def _img_tag(data: bytes | None, fmt: str | None, label: str) -> str:
    uri = data_image(data, fmt) if data else None
    if uri:
        return f'<img src="{uri}" alt="{html.escape(label)}">'
    if data:
        return (f'<span class="placeholder">image ({html.escape(str(fmt))}) not shown: '
                f'{html.escape(label)}</span>')
    return f'<span class="placeholder">image not in the store: {html.escape(label)}</span>'



def _document_html(doc: Document, images: dict[str, tuple[bytes, str]]) -> str:
    parts = [f'<div class="doc{"" if doc.kept else " dropped"}">',
             f'<div class="meta">{html.escape(doc.doc_id)} · {link(doc.url)}'
             f' · {html.escape(language_label(doc.language, doc.language_score))}'
             + (f' · <span class="reason">dropped: {html.escape(doc.reason or "")}</span>' if not doc.kept else "")
             + "</div>"]
    for n in doc.nodes:
        cls = "node" + ("" if n.kept else " dropped")
        reason = "" if n.kept else f' <span class="reason">{html.escape(n.reason or "")}</span>'
        if n.is_text:
            parts.append(f'<p class="{cls}">{html.escape(n.text or "")}{reason}</p>')
        else:
            data, fmt = images.get(n.image_sha256 or "", None) or images.get(n.image_url or "", (None, None))
            size = _node_size(n)
            caption = f"{n.image_url} · {size}" + (f" · alt: {n.alt_text}" if n.alt_text else "")
            parts.append(f'<figure class="{cls}">{_img_tag(data, fmt, n.alt_text or n.image_url or "")}'
                         f"<figcaption>{html.escape(caption)}{reason}</figcaption></figure>")
    parts.append("</div>")
    return "\n".join(parts)


def find_image_store(documents_path: str) -> str | None:
    """The image store beside a run's documents (DIR/documents -> DIR/images), if there is one."""
    base = os.path.dirname(documents_path.rstrip("/"))
    if os.path.basename(documents_path.rstrip("/")) in ("documents", "rejected") or documents_path.endswith(".arrow"):
        for candidate in (os.path.join(base, "images"), os.path.join(os.path.dirname(base), "images")):
            if storage.is_dir(candidate):
                return candidate
    return None


def load_images(store: str, wanted: set[str]) -> dict[str, tuple[bytes, str]]:
    """Bytes and format of the wanted images (by sha256 or URL) from an image store, reading only matches."""
    found: dict[str, tuple[bytes, str]] = {}
    try:
        shards = open_shards(store, kind=KIND_IMAGES)
    except ShardError:
        return found
    want = pa.array(sorted(wanted), pa.string())
    for _, table in shards.tables(columns=["sha256", "urls", "format", "data", "status"]):
        by_sha = pc.is_in(table["sha256"], value_set=want)
        flat_urls = pc.list_flatten(table["urls"])
        parents = pc.list_parent_indices(table["urls"])
        rows = set(pc.filter(parents, pc.is_in(flat_urls, value_set=want)).to_pylist())
        rows |= {i for i, hit in enumerate(by_sha.to_pylist()) if hit}
        for i in sorted(rows):
            row = table.slice(i, 1).to_pylist()[0]
            if row["status"] != "ok" or not row["data"]:
                continue
            for key in [row["sha256"], *row["urls"]]:
                if key in wanted:
                    found[key] = (row["data"], row["format"])
    return found


def html_page(path: str, summary: Summary, *, documents: list[Document] | None = None,
              image_rows: list[dict] | None = None, token_rows: list[str] | None = None,
              token_html: list[str] | None = None, images: dict[str, tuple[bytes, str]] | None = None,
              warning: str | None = None) -> str:
    body = [f"<h1>interleaf inspect: {html.escape(path)}</h1>"]
    if warning:
        body.append(f'<p class="reason"><strong>{html.escape(warning)}</strong></p>')
    body += ["<h2>Summary</h2>", _summary_table(summary)]
    if summary.kind == KIND_DOCUMENTS and documents is not None:
        body.append(f"<h2>Sample documents ({len(documents)})</h2>")
        body += [_document_html(d, images or {}) for d in documents]
    elif image_rows is not None:
        body.append(f"<h2>Sample images ({len(image_rows)})</h2>")
        for row in image_rows:
            body.append(f'<figure>{_img_tag(row.get("data"), row.get("format"), row["urls"][0] if row["urls"] else "")}'
                        f"<figcaption>{html.escape(image_row_text({**row, 'data': None}))}</figcaption></figure>")
    elif token_html is not None:
        body.append(f"<h2>Sample token sequences, decoded ({len(token_html)})</h2>")
        body += [f'<div class="doc">{h}</div>' for h in token_html]
    elif token_rows is not None:
        body.append(f"<h2>Sample token sequences ({len(token_rows)})</h2>")
        body += [f"<pre>{html.escape(t)}</pre>" for t in token_rows]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">" + CSP_META +
            f"<title>interleaf inspect: {html.escape(path)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
