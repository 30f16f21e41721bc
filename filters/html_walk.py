"""The traversal of filters/html.py's extraction: one document-order walk over <body> with an explicit stack
(pages nest deeper than Python's recursion limit), and a lighter walk over each subtree left out as
boilerplate. What the walk recognises (block, skipped and sectioning tags) is here; what it does with text,
images and containers is the state object's (filters/html.py, _Walk), passed in as `w`."""

from __future__ import annotations

import time

from selectolax.lexbor import LexborNode

from interleaf.filters.html_boilerplate import Holders, boilerplate_reason, is_caption, rescuable
from interleaf.filters.html_config import PageTooSlow
from interleaf.filters.html_images import picture_source

# ---------------------------------------------------------------- what the walk recognises

# Tags whose end starts a new paragraph (HTML's block-level and table elements).
BLOCK_TAGS = frozenset([
    "address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details", "dialog",
    "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4",
    "h5", "h6", "header", "hgroup", "hr", "legend", "li", "main", "menu", "nav", "noscript", "ol", "option",
    "p", "pre", "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
])
# Never reader-visible text: skipped whole, one candidate each, under this reason.
SKIP_TAGS = {"script": "script", "style": "style", "template": "template", "iframe": "embed",
             "object": "embed", "embed": "embed", "video": "embed", "audio": "embed", "map": "embed",
             "canvas": "graphics", "svg": "graphics", "math": "graphics", "title": "metadata"}
# A <header> inside these introduces it (title, byline) and is content (HTML: "nearest sectioning content").
SECTIONS = frozenset(("article", "main", "section"))
# the containers judged by ExtractConfig.max_link_density
LINK_CONTAINERS = frozenset(("div", "ul", "ol", "dl", "section", "table", "tbody", "aside", "nav", "menu"))


_CLOCK_EVERY = 256  # elements walked between two looks at the clock


def walk_page(body_node: LexborNode, w, deadline: float | None) -> None:
    """Walk <body> into `w` (filters/html.py's _Walk): the body's block record, the walk, the last
    paragraph."""
    body = w.open_block("body", body_node.attributes)
    _walk_body(body_node, w, deadline)
    w.flush()
    w.close_block(body, w.frames[0][1], w.frames[0][2])


def _leaf(node: LexborNode, tag: str | None, w, in_noscript: bool, holds_img: Holders) -> bool:
    """Handle a node whose subtree the walks do not enter (both of them: _walk_body and _walk_left_out),
    and say whether it was one: text, comments and the like, script/style/embeds (counted under their
    kind), an image, a line break, a <noscript> without an image (counted when it holds text)."""
    if tag == "-text":
        w.text(node.text_content or "")
        return True
    if tag is None or tag[0] == "-" or tag[0] == "!":  # comments, doctype, processing instructions
        return True
    if tag in SKIP_TAGS:
        w.dropped[SKIP_TAGS[tag]] += 1
        return True
    if tag == "img" or tag == "amp-img":  # AMP pages; an <amp-img>'s own <noscript> <img> repeats it
        w.image(node, node.attributes, in_noscript=in_noscript)
        return True
    if tag == "br":
        w.line_break()
        return True
    if tag == "noscript" and not holds_img(node):
        if (node.text() or "").strip():
            w.dropped["noscript"] += 1
        return True
    return False


def _walk_body(body: LexborNode, w, deadline: float | None = None) -> None:
    """Document-order walk with an explicit stack (pages nest deeper than Python's recursion limit); raises
    PageTooSlow once past the deadline (time.monotonic())."""
    # stack entries: (element, tag, picture source before it, its first node's index, its block element
    # record or -1); a subtree left out as boilerplate is walked apart (_walk_left_out)
    stack: list[tuple[LexborNode, str, str | None, int, int]] = []
    noscript = 0
    node = body.child
    steps = 0
    holds_main = Holders(body)
    holds_img = Holders(body, "img")  # a <noscript> holding an image is walked, one holding text is not
    while True:
        steps += 1
        if deadline is not None and steps % _CLOCK_EVERY == 0 and time.monotonic() > deadline:
            raise PageTooSlow(f"extraction took more than {w.config.max_seconds} s")
        if node is None:
            if not stack:
                return
            parent, tag, w.picture_source, start, element = stack.pop()
            if tag in BLOCK_TAGS:
                w.flush()
            w.close(tag, start, element)
            if tag == "pre":
                w.pre -= 1
            elif tag in SECTIONS:
                w.in_section -= 1
            elif tag == "a" and parent.attributes.get("href"):
                w.link -= 1
            elif tag == "noscript":
                noscript -= 1
            node = parent.next
            continue
        tag = node.tag
        if _leaf(node, tag, w, noscript > 0, holds_img):
            node = node.next
            continue
        attrs = node.attributes
        reason = boilerplate_reason(node, tag, attrs, w.in_section > 0, w.config.drop_comments, holds_main)
        if reason is None and w.config.drop_captions and is_caption(node, tag, attrs):
            reason = "caption"
        if reason and w.exempt and node.mem_id in w.exempt:
            reason = None
        if tag in BLOCK_TAGS or reason:
            w.flush()
        if node.child is None:
            node = node.next
            continue
        if reason:  # the subtree is left out: counted by the lighter walk, then the walk goes on after it
            before, links_before = w.left_out_chars, w.left_out_links
            _walk_left_out(node, tag, reason, w, noscript, holds_img, deadline)
            chars = w.left_out_chars - before
            if chars > w.config.main_content_min_chars and rescuable(tag, attrs, reason):
                w.suspects.append((chars, w.left_out_links - links_before, node))
            node = node.next
            continue
        element = w.open_block(tag, attrs) if tag in BLOCK_TAGS else -1
        stack.append((node, tag, w.picture_source, len(w.nodes), element))
        w.frames.append([0, 0, 0, 0])
        if tag == "pre":
            w.pre += 1
        elif tag == "a" and attrs.get("href"):
            w.link += 1
        elif tag in SECTIONS:
            w.in_section += 1
        elif tag == "noscript":
            noscript += 1
        elif tag == "picture":
            w.picture_source = picture_source(node) or w.picture_source
        node = node.child


def _walk_left_out(root: LexborNode, root_tag: str, reason: str, w, noscript: int, holds_img: Holders,
                   deadline: float | None) -> None:
    """The subtree of `root`, an element left out as `reason`: what it holds is counted under that reason
    as _walk_body would (its paragraphs, its images with their URLs, scripts and styles, empty noscripts),
    without what only kept text needs: the elements inside are not judged (the outermost reason wins), and
    no link, section or density counts are kept. About two thirds of a news page's text nodes are in such
    subtrees (the article-extraction benchmark's pages), so this walk is most of the work."""
    saved = w.reason, w.picture_source, w.pre, w.link
    w.reason = reason
    if root_tag == "a" and root.attributes.get("href"):
        w.link += 1
    if root_tag == "pre":
        w.pre += 1
    elif root_tag == "noscript":
        noscript += 1
    elif root_tag == "picture":
        w.picture_source = picture_source(root) or w.picture_source
    stack: list[tuple[LexborNode, str, str | None]] = []  # (element, tag, picture source before it)
    node = root.child
    steps = 0
    while True:
        steps += 1
        if deadline is not None and steps % _CLOCK_EVERY == 0 and time.monotonic() > deadline:
            raise PageTooSlow(f"extraction took more than {w.config.max_seconds} s")
        if node is None:
            if not stack:
                break
            parent, tag, w.picture_source = stack.pop()
            if tag == "a" and parent.attributes.get("href"):
                w.link -= 1
            if tag in BLOCK_TAGS:
                w.flush()
            if tag == "pre":
                w.pre -= 1
            elif tag == "noscript":
                noscript -= 1
            node = parent.next
            continue
        tag = node.tag
        if _leaf(node, tag, w, noscript > 0, holds_img):
            node = node.next
            continue
        if tag in BLOCK_TAGS:
            w.flush()
        if node.child is None:
            node = node.next
            continue
        stack.append((node, tag, w.picture_source))
        if tag == "a" and node.attributes.get("href"):
            w.link += 1
        if tag == "pre":
            w.pre += 1
        elif tag == "noscript":
            noscript += 1
        elif tag == "picture":
            w.picture_source = picture_source(node) or w.picture_source
        node = node.child
    w.flush()
    w.reason, w.picture_source, w.pre, w.link = saved
