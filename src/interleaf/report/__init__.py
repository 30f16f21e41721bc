"""`interleaf report DIR`: one self-contained HTML page about a run directory.

Sections: an overview (headline counts, inputs, timings), the funnel as stacked bars (documents, nodes,
images and WARC records kept and dropped by reason at each stage), distributions (words, images and tokens
per document, image sizes, CLIP scores), safety and consent (languages, personal data replaced, blocklist
and TDM drops), image downloads per host, rejected documents by reason, and sample
documents with their images inline. Charts are inline SVG and images are base64, so the page needs no
network. Data come from the manifest and from memory-mapped shards, column by column (see collect.py).
"""

from __future__ import annotations

import logging
import os
import time

from interleaf import render, storage
from interleaf.htmlsafe import CSP_META
from interleaf.report import sections
from interleaf.report.collect import RunData, read_run, read_samples
from interleaf.report.samples import document_card
from interleaf.report.svg import esc

log = logging.getLogger(__name__)

DEFAULT_NAME = "report.html"

_CSS = """
:root{--ink:#222;--muted:#666;--line:#e2e2e2}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--ink);
 max-width:1120px;margin:1.5em auto;padding:0 1.2em;line-height:1.45;background:#fff}
h1{font-size:1.5em;margin:.2em 0} h1 small{color:var(--muted);font-weight:normal;font-size:.6em}
h2{font-size:1.2em;border-bottom:2px solid var(--line);padding-bottom:.2em;margin-top:1.8em}
nav a{margin-right:1em;color:#0b5cad}
.caption{color:var(--muted);font-size:.88em;margin:.3em 0 .8em}
.tiles{display:flex;flex-wrap:wrap;gap:.8em;margin:.8em 0}
.tile{border:1px solid var(--line);border-radius:8px;padding:.5em .9em;min-width:150px;background:#f8fafc}
.tile .num{font-size:1.7em;font-weight:600;color:#0072B2} .tile .what{font-weight:600}
.tile .sub{color:var(--muted);font-size:.82em}
table{border-collapse:collapse;font-size:.86em;margin:.5em 0}
td,th{border:1px solid var(--line);padding:.2em .55em;text-align:left;vertical-align:top}
th{background:#f6f6f6} td.n{text-align:right;font-variant-numeric:tabular-nums} td.err{color:#8a2d00}
table.facts th{width:7em} table.facts td{word-break:break-word}
svg.chart{max-width:100%;height:auto;display:block;margin:.3em 0}
.scroll{max-height:380px;overflow:auto;display:inline-block}
figure{margin:0} figure.wide{margin:1em 0 1.4em} figure>figcaption{margin-bottom:.2em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:1em}
.card{border:1px solid var(--line);border-radius:8px;padding:.6em .8em}
.legend{display:flex;flex-wrap:wrap;gap:.3em 1.1em;font-size:.82em;color:#333;margin:.2em 0}
.legend i{display:inline-block;width:.85em;height:.85em;margin-right:.35em;vertical-align:-.1em;
 border-radius:2px}
.absent{background:#f6f6f6;border-left:4px solid #9a9a9a;padding:.5em .8em;font-size:.88em;margin:.6em 0}
.absent ul{margin:.3em 0 0 1.2em;padding:0}
.warn{background:#fff1e6;border-left:4px solid #D55E00;padding:.5em .8em;margin:.6em 0}
details{margin:.4em 0;font-size:.9em} summary{cursor:pointer;color:#0b5cad}
.docs{display:grid;grid-template-columns:repeat(auto-fill,minmax(500px,1fr));gap:1em;align-items:start}
.doc{border:1px solid #d6d6d6;border-radius:8px;padding:.6em .9em;font-size:.9em;overflow:hidden}
.doc .meta{font-size:.85em;color:var(--muted);word-break:break-all;margin-bottom:.3em}
.doc p{margin:.35em 0} .doc p.fold{color:var(--muted);font-style:italic;font-size:.9em}
.gallery{display:flex;flex-wrap:wrap;gap:.5em;margin:.4em 0}
.gallery figure.img{max-width:48%}
.gallery img{max-height:200px;max-width:100%;border:1px solid #eee;display:block}
.gallery figcaption{font-size:.75em;color:var(--muted);word-break:break-word}
.noimg{display:inline-block;background:#f3f3f3;border:1px dashed #aaa;padding:.5em;font-size:.78em;
 color:var(--muted);max-width:220px;word-break:break-all}
"""


def samples_section(d: RunData) -> str:
    title = "Sample documents"
    if d.documents is None or not d.documents.samples:
        return sections.section("samples", title, sections.absent_box(
            d.absent.get("documents", "no curated documents to sample")))
    docs = read_samples(d.documents.samples)
    store = storage.join(d.directory, "images")
    images = {}
    if d.images is not None:
        wanted = {k for doc in docs for n in doc.image_nodes if n.kept
                  for k in (n.image_sha256, n.image_url) if k}
        images = render.load_images(store, wanted)
    note = ("Documents from documents/, spread over the run, those with images in the store first; images "
            "inline from images/ (scaled down). Long runs of paragraphs are folded.")
    if d.images is None:
        note += " No image store: images are shown as their URLs."
    cards = "".join(document_card(doc, images) for doc in docs)
    return sections.section("samples", f"{title} ({len(docs)})", sections.caption(esc(note))
                            + f'<div class="docs">{cards}</div>')


def build_report(directory: str, *, samples: int = 4) -> str:
    """The report of run directory `directory` as one HTML string."""
    if samples < 0:
        raise ValueError(f"samples must be 0 or more, found {samples}")
    started = time.time()
    d = read_run(directory, samples=samples)
    log.info("read %s in %.1f s", directory, time.time() - started)
    parts = [("overview", "Overview", sections.overview(d)), ("funnel", "Funnel", sections.funnel_section(d)),
             ("distributions", "Distributions", sections.distributions(d)),
             ("safety", "Safety and consent", sections.safety(d)),
             ("downloads", "Downloads per host", sections.downloads(d)),
             ("rejected", "Rejected", sections.rejected(d))]
    if samples:
        parts.append(("samples", "Samples", samples_section(d)))
    nav = "<nav>" + "".join(f'<a href="#{k}">{esc(t)}</a>' for k, t, _ in parts) + "</nav>"
    status = (d.manifest or {}).get("status", "complete")
    if d.manifest is not None and status != "complete":  # a run killed, failed or still going
        error = (d.manifest or {}).get("error")
        note = (f"this run is not complete (status {status}, started {(d.manifest or {}).get('started')}"
                f"{': ' + error if error else ''}): its shards may be partial and its funnel is missing")
        parts.insert(0, ("status", "Incomplete run",
                         sections.section("status", "Incomplete run", sections.absent_box(note))))
    name = os.path.basename(d.directory.rstrip("/")) or d.directory
    created = (d.manifest or {}).get("created", "")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">" + CSP_META +
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>interleaf report: {esc(name)}</title><style>{_CSS}</style></head>\n<body>\n"
            f"<header><h1>interleaf run report <small>{esc(d.directory)}"
            f"{' · ' + esc(created) if created else ''}</small></h1>{nav}</header>\n<main>\n"
            + "\n".join(html for _, _, html in parts) + "\n</main>\n</body></html>\n")
    log.info("report of %s: %d KiB in %.1f s", directory, len(page) // 1024, time.time() - started)
    return page


def write_report(directory: str, out: str | None = None, *, samples: int = 4) -> str:
    """Write the report of `directory` to `out` (default DIR/report.html); returns the path written."""
    out = out or storage.join(directory.rstrip("/"), DEFAULT_NAME)
    page = build_report(directory, samples=samples)
    parent = os.path.dirname(out)
    if parent:
        storage.makedirs(parent)
    storage.write_bytes(out, page.encode("utf-8"))
    return out
