"""What every HTML page interleaf writes goes through, so that nothing from the web can run in it: text is
escaped, a link target is only ever an http(s) URL (anything else, `javascript:`, `data:`, `vbscript:`, is
shown as text), inline images are only raster formats as data: URIs, and the page carries a
Content-Security-Policy that forbids scripts, plugins, forms and a changed base URL."""

from __future__ import annotations

import base64
import html
from urllib.parse import urlsplit

from interleaf.download.urls import as_read

# no script of any kind (inline, event handler, javascript: URL), no plugin, no form, no <base> hijack;
# images, styles and fonts as the page has them
CSP = "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-src 'none'"
CSP_META = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
RASTER_MIME = {"jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png", "gif": "image/gif",
               "webp": "image/webp"}


def safe_url(url: str | None) -> str | None:
    """The URL when a browser would open it as http(s) and nothing else, else None. The check is made on
    the URL as a browser reads it (download.urls.as_read: "java\\tscript:" is javascript:)."""
    if not url:
        return None
    seen = as_read(url)
    try:
        parts = urlsplit(seen)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return seen


def link(url: str | None, text: str | None = None) -> str:
    """An <a> to an http(s) URL, or the URL as text when it is anything else."""
    label = html.escape(text if text is not None else (url or ""))
    target = safe_url(url)
    if target is None:
        return f'<span class="url">{label}</span>'
    return f'<a href="{html.escape(target)}" rel="noopener noreferrer nofollow">{label}</a>'


def data_image(data: bytes, fmt: str | None) -> str | None:
    """A data: URI for raster image bytes of a known format, or None (SVG and unknown types are not
    inlined)."""
    mime = RASTER_MIME.get((fmt or "").lower().removeprefix("image/"))
    if mime is None or not data:
        return None
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
