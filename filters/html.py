"""HTML to ordered text and image nodes, with the boilerplate left out and counted by reason.

One walk over the DOM of <body> (selectolax's Lexbor parser: the fastest of the parsers we measured, see
docs/extraction.md) in document order. Text is gathered into paragraphs that end at block elements; an
<img> that passes the image rules becomes an image node in place, between the paragraphs around it.

Candidate nodes, and how they are counted so that `candidates = len(nodes) + sum(dropped.values())`:
- every paragraph of text and every <img> or <amp-img> (including those inside <noscript>) met in <body>;
- every <script>, <style>, <template>, embedded object (iframe, video ...) and inline graphic (svg,
  canvas, math) counts as one candidate, and so does a <noscript> with text but no image; each is dropped
  under its own kind, wherever it is: their content is never reader-visible text.
A paragraph or image inside a boilerplate subtree (nav, footer, form, ad ...) is dropped with the reason of
the outermost such subtree. The <head> is not walked: it gives the title and language only.

The traversal is filters/html_walk.py's; what it does with text, images and containers is _Walk's, here;
main-content selection is filters/html_main.py's.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter

from selectolax.lexbor import LexborHTMLParser, LexborNode

from interleaf.download.urls import query_encoding
from interleaf.filters.html_boilerplate import class_words
from interleaf.filters.html_config import (  # noqa: F401 (re-exported: callers import them from here)
    ExtractConfig,
    Extraction,
    PageRefused,
    PageTooDeep,
    PageTooSlow,
)
from interleaf.filters.html_depth import nesting_depth
from interleaf.filters.html_head import base_url, declared_language, headline_index, meta_tags, title
from interleaf.filters.html_images import (
    AD_HOST,
    ICON_CLASSES,
    ICON_URL,
    NOT_A_URL,
    SPACER_NAME,
    STYLE_SIDE,
    TRACKER,
    image_source,
    parse_dimension,
    resolve_url,
)
from interleaf.filters.html_main import keep_main_content
from interleaf.filters.html_walk import LINK_CONTAINERS, walk_page
from interleaf.schemas.document import Node

log = logging.getLogger(__name__)

# the longest line left of a container of navigation that goes with it as its heading (walk.close)
ORPHAN_HEADING_CHARS = 80
# the longest paragraph of its own that goes as "link_dense" when it is mostly a link, and the most
# characters it may have outside links ("Read more:", "LE PUEDE INTERESAR:"; a sentence whose end is a link,
# "The suspect, Michael Webb, was convicted and <a>sentenced to life ...</a>.", stays) (extract)
LINKED_LINE_CHARS = 100
LINKED_LINE_OUTSIDE = 25
LINKED_LINE_KEEPS = frozenset(("h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd"))
_BLANK_LINES = re.compile(r"\n[^\S\n]*\n\s*")


# ---------------------------------------------------------------- the walk


class _Walk:
    """State of one extraction: nodes so far, the paragraph being gathered, drop counts."""

    def __init__(self, base_url: str, config: ExtractConfig, encoding: str | None = None,
                 exempt: frozenset[int] = frozenset()):
        self.base_url, self.config = base_url, config
        # elements whose class or id words are not read (see extract: a "boilerplate" wrapper of the text)
        self.exempt = exempt
        self.left_out_chars = 0  # characters of the paragraphs left out as boilerplate so far
        self.left_out_links = 0  # ... of them inside <a href>
        # (characters, characters in links, element) of each subtree of main_content_min_chars or more
        # characters left out by its class or id words (html_boilerplate.rescuable)
        self.suspects: list[tuple[int, int, LexborNode]] = []
        self.query_encoding = query_encoding(encoding)  # None for UTF-8 pages
        self.nodes: list[Node] = []
        self.dropped: Counter[str] = Counter()
        self.dropped_images: list[Node] = []
        self.parts: list[str] = []  # text of the current paragraph
        self.reason: str | None = None  # why the current subtree is dropped (outermost wins)
        self.pre = 0  # depth inside <pre>: keep whitespace
        self.in_section = 0  # depth inside article, main, section
        self.last_image: tuple[LexborNode, int] | None = None  # last kept <img> and its index in nodes
        self.picture_source: str | None = None
        self.link = 0  # depth inside <a href>
        self.link_chars = 0  # characters of the current paragraph inside a link
        # per open element, innermost last: [text nodes, their characters in links, their characters, text
        # nodes of inner containers left out as link_dense] of what it holds so far (a closed element adds
        # its first three counts to its parent's unless it is left out)
        self.frames: list[list[int]] = [[0, 0, 0, 0]]
        self.removed: set[int] = set()  # text nodes of link-dense containers, left out at the end
        self.removed_spans: dict[int, int] = {}  # start -> end of each container left out
        # for main-content selection (filters/html_main.py): every block element entered outside
        # boilerplate, the open ones innermost last, and node index -> (owner, chars, commas, link share)
        # of each paragraph kept
        self.elements: list[list] = []
        self.open_blocks: list[int] = []
        self.paragraphs: dict[int, tuple[int, int, int, float]] = {}
        self.linked_images: set[int] = set()  # node indices of images inside <a href>

    # -- text
    def text(self, value: str) -> None:
        if self.pre:
            self.parts.append(value)
        elif self.parts or not value.isspace():  # whitespace before a paragraph's first word is nothing
            self.parts.append(value.replace("\n", " "))
            if self.link:
                self.link_chars += len("".join(value.split()))

    def line_break(self) -> None:  # <br>: a new line in the paragraph; two in a row end it (see flush)
        if self.parts:
            self.parts.append("\n")

    def flush(self) -> None:
        if not self.parts:
            return
        raw, self.parts = "".join(self.parts), []
        link_chars, self.link_chars = self.link_chars, 0
        paragraphs = [raw.strip("\n")] if self.pre else _BLANK_LINES.split(raw)
        if self.reason:  # left out: only counted (a paragraph counts when it has more than whitespace)
            count = sum(1 for p in paragraphs if p and not p.isspace())
            if count:
                self.dropped[self.reason] += count
                self.left_out_chars += len("".join(raw.split()))
                self.left_out_links += link_chars
            return
        share = link_chars / max(1, len("".join(raw.split())))
        for p in paragraphs:
            # whitespace runs within a line made one space (str.split's whitespace is the regex engine's \s)
            p = p if self.pre else "\n".join(" ".join(line.split()) for line in p.split("\n")).strip()
            if not p.strip():
                continue
            chars = len("".join(p.split()))
            frame = self.frames[-1]
            frame[0] += 1
            frame[1] += round(share * chars)
            frame[2] += chars
            owner = self.open_blocks[-1] if self.open_blocks else -1
            self.paragraphs[len(self.nodes)] = (owner, chars, p.count(",") + p.count("，"), share)
            self.nodes.append(Node.text_node(p))
            self.last_image = None

    def open_block(self, tag: str, attrs: dict) -> int:
        """Record a block element entered (filters/html_main.py's element record); its index."""
        parent = self.open_blocks[-1] if self.open_blocks else -1
        names = f"{attrs.get('class') or ''}\x00{attrs.get('id') or ''}"
        self.elements.append([tag, parent, len(self.nodes), len(self.nodes), names, 0, 0])
        self.open_blocks.append(len(self.elements) - 1)
        return len(self.elements) - 1

    def close_block(self, element: int, in_links: int, chars: int) -> None:
        e = self.elements[element]
        e[3], e[5], e[6] = len(self.nodes), chars, in_links
        self.open_blocks.pop()

    def close(self, tag: str, start: int, element: int = -1) -> None:
        """An element ends (its nodes are those from index `start` on). A container that is mostly links (a
        menu, a list of related stories with their teasers; Readability's link density: its text in links
        over all its text) loses its text; else its counts go to its parent. Containers are judged
        innermost first, so a menu inside the article's wrapper goes before the wrapper is judged on what
        remains; each element is judged once on running counts, so the cost stays linear in the page."""
        texts, in_links, chars, inner_removed = self.frames.pop()
        if element >= 0:
            self.close_block(element, in_links, chars)
        density = self.config.max_link_density
        # one linked paragraph in a container is a link in the text, not navigation; but what is left of a
        # container whose lists were navigation, when that is one short line, is their heading ("Related
        # stories", "Weitere Artikel", "Dans la même rubrique")
        if tag in LINK_CONTAINERS and density is not None and (
                texts >= 2 and in_links > density * chars
                or texts == 1 and inner_removed >= 2 and chars <= ORPHAN_HEADING_CHARS):
            i, end = start, len(self.nodes)
            while i < end:
                if i in self.removed_spans:  # an inner container's, already left out: jump over it
                    i = self.removed_spans[i]
                    continue
                if self.nodes[i].is_text:
                    self.removed.add(i)
                i += 1
            self.removed_spans[start] = end
            self.dropped["link_dense"] += texts
            self.frames[-1][3] += texts
            return
        parent = self.frames[-1]
        parent[0] += texts
        parent[1] += in_links
        parent[2] += chars

    # -- images
    def image(self, node: LexborNode, attrs: dict, in_noscript: bool = False) -> None:
        reason, url, width, height = self._judge(attrs)
        alt = " ".join((attrs.get("alt") or "").split()) or None
        if in_noscript and reason is None and self.last_image is not None and self._is_placeholder_of(node):
            # <img placeholder><noscript><img real></noscript>: the noscript one is the image (Readability's
            # _unwrapNoscriptImages). The placeholder already kept is dropped in its favour.
            placeholder = self.nodes.pop(self.last_image[1])
            self._drop_image(placeholder, "lazy_placeholder")
        if reason:
            self.dropped[reason] += 1
            if url:
                self.dropped_images.append(Node.image_node(url, alt_text=alt, width=width, height=height)
                                           .dropped(reason))
            return
        self.flush()
        if self.link:
            self.linked_images.add(len(self.nodes))
        self.nodes.append(Node.image_node(url, alt_text=alt, width=width, height=height))
        self.last_image = (node, len(self.nodes) - 1)

    def drop_repeated(self, max_repeats: int) -> None:
        counts = Counter(n.image_url for n in self.nodes if n.is_image)
        if not counts or max(counts.values()) <= max_repeats:
            return
        kept = []
        for n in self.nodes:
            if n.is_image and counts[n.image_url] > max_repeats:
                self._drop_image(n, "repeated")
            else:
                kept.append(n)
        self.nodes = kept

    def _drop_image(self, image: Node, reason: str) -> None:
        self.dropped[reason] += 1
        self.dropped_images.append(image.dropped(reason))

    def _is_placeholder_of(self, noscript_img: LexborNode) -> bool:
        """Whether the last kept image sits right before the <noscript> holding this one (as the element
        before it, or inside a wrapper that is), with no text in between."""
        placeholder = self.last_image[0]
        noscript = noscript_img.parent
        for _ in range(_PLACEHOLDER_STEPS):  # the <noscript> is the image's parent or a few levels up
            if noscript is None or noscript.tag == "noscript":
                break
            noscript = noscript.parent
        prev = noscript.prev if noscript is not None and noscript.tag == "noscript" else None
        # skip blank text, comments and <img> elements with no source at all (Medium's canvas targets), a
        # few of them: bounded, or 6,000 empty <img> before a <noscript> of 6,000 images cost 36 million steps
        for _ in range(_PLACEHOLDER_STEPS):
            if prev is None or not (
                    (prev.tag in ("-text", "-comment") and not (prev.text_content or "").strip())
                    or (prev.tag == "img" and prev.mem_id != placeholder.mem_id
                        and image_source(prev.attributes, self.config) is None)):
                break
            prev = prev.prev
        node = placeholder
        for _ in range(6):  # the placeholder itself, or a wrapper of it a few levels up
            if node is None or prev is None:
                return False
            if node.mem_id == prev.mem_id:
                return True
            node = node.parent
        return False

    def _judge(self, attrs: dict) -> tuple[str | None, str | None, int | None, int | None]:
        """(drop reason or None, resolved URL, declared width, declared height) of an <img>."""
        c = self.config
        width = parse_dimension(attrs.get("width"), limit=c.max_declared_side)
        height = parse_dimension(attrs.get("height"), limit=c.max_declared_side)
        if (width is None or height is None) and attrs.get("style"):
            for side, value in STYLE_SIDE.findall(attrs["style"]):
                if side.lower() == "width" and width is None:
                    width = parse_dimension(value, limit=c.max_declared_side)
                elif side.lower() == "height" and height is None:
                    height = parse_dimension(value, limit=c.max_declared_side)
        src = image_source(attrs, c, self.picture_source)
        is_data = bool(src) and src.lower().startswith("data:")
        url = src if is_data else resolve_url(self.base_url, src, self.query_encoding) if src else None
        if self.reason:
            return self.reason, (None if is_data else url), width, height
        if not src:
            return "no_src", None, width, height
        if is_data:
            return ((None, src) if c.keep_data_uris else ("data_uri", None)) + (width, height)
        if url is None or src.lower() in NOT_A_URL or url.split("#")[0] == self.base_url.split("#")[0]:
            return "bad_url", url, width, height
        sides = [s for s in (width, height) if s is not None]
        if TRACKER.search(url) or (sides and max(sides) <= c.pixel_max_side):
            return "tracking_pixel", url, width, height
        if AD_HOST.search(url):
            return "ad", url, width, height
        if SPACER_NAME.search(url) or (sides and min(sides) <= c.pixel_max_side):
            return "spacer", url, width, height
        if ICON_URL.search(url) or (sides and max(sides) <= c.icon_max_side) or (
                attrs.get("class") and ICON_CLASSES.intersection(class_words(attrs))):
            return "icon", url, width, height
        return None, url, width, height


_PLACEHOLDER_STEPS = 8


RESCUES = 2  # walks again with a boilerplate-named wrapper of the text exempt (see extract)


def extract(html: str, url: str, config: ExtractConfig | None = None,
            encoding: str | None = None) -> Extraction:
    """The ordered text and image nodes of a page, with what was left out counted by reason. Raises
    PageTooDeep for a page nested deeper than config.max_depth (before parsing it), PageTooSlow for one
    whose walk takes longer than config.max_seconds. `encoding`: the codec the page was decoded with
    (filters/charset.decode_html_as); the query of its image URLs is encoded in it, as a browser does."""
    config = config or ExtractConfig()
    deadline = None if config.max_seconds is None else time.monotonic() + config.max_seconds
    if config.max_depth is not None:
        depth = nesting_depth(html, stop_at=config.max_depth)
        if depth > config.max_depth:
            raise PageTooDeep(f"elements nest more than {config.max_depth} deep")
    # Some WARC writers store WARC-Target-URI as "<url>" (the WARC 1.0 grammar's brackets taken literally).
    url = url.strip().removeprefix("<").removesuffix(">")
    tree = LexborHTMLParser(html)
    page_url = base_url(tree, url)
    walk = _Walk(page_url, config, encoding)
    if tree.body is not None:
        walk_page(tree.body, walk, deadline)
        # A wrapper named like boilerplate that holds more text than everything kept (and more than a
        # short page's worth) is the page's text under an unlucky name: "entry themeform share" around a
        # WordPress post, a page-wide <header> or id="header", "TestReport__Section--Ads", a "subnav_true"
        # column. Walked again with its words not read (Readability retries with its class rules off when
        # its article comes out short), at most RESCUES times: a page costs at most RESCUES + 1 walks.
        for _ in range(RESCUES):
            # the largest not mostly links (a site header of menus is, and is no article under a wrong name)
            kept = walk.frames[0][2]
            chars, suspect = next(((c, e) for c, links, e in sorted(walk.suspects, key=lambda s: -s[0])
                                   if c > kept and links <= 0.5 * c), (0, None))
            if suspect is None:
                break
            log.debug("%s: %d characters left out in <%s class=%r id=%r>, more than kept: walked again with "
                      "its words not read", url, chars, suspect.tag, suspect.attributes.get("class"),
                      suspect.attributes.get("id"))
            walk = _Walk(page_url, config, encoding, exempt=walk.exempt | {suspect.mem_id})
            walk_page(tree.body, walk, deadline)
        if config.main_content:
            keep_main_content(walk)
    else:  # a frameset page, or not HTML at all
        log.debug("no <body> in %s: nothing to extract", url)
    # A short paragraph that is mostly a link and little else, standing alone: "Read more: <a>...</a>",
    # "LE PUEDE INTERESAR: <a>...</a>", a "Buy now" button, a linked teaser. The container rule (walk.close)
    # judges two or more paragraphs; this is its cut for a single one.
    # A heading or list item that is a link stays: a listicle's numbered item titles, a FAQ's questions, an
    # ingredient linked to its recipe (a review's findings); a list of them is the container rule's to judge.
    if config.max_link_density is not None:
        for i, (owner, chars, _, share) in walk.paragraphs.items():
            if (share > config.max_link_density and chars <= LINKED_LINE_CHARS
                    and chars * (1 - share) <= LINKED_LINE_OUTSIDE and i not in walk.removed
                    and (owner < 0 or walk.elements[owner][0] not in LINKED_LINE_KEEPS)):
                walk.removed.add(i)
                walk.dropped["link_dense"] += 1
    page_title = title(tree)
    if config.drop_title and page_title:
        kept_texts = [i for i, n in enumerate(walk.nodes) if n.is_text and i not in walk.removed]
        headline = headline_index([walk.nodes[i].text for i in kept_texts], page_title)
        if headline is not None:
            walk.dropped["title"] += 1
            walk.removed.add(kept_texts[headline])
    if walk.removed:
        walk.nodes = [n for i, n in enumerate(walk.nodes) if i not in walk.removed]
    if config.max_repeats is not None:
        walk.drop_repeated(config.max_repeats)
    return Extraction(nodes=walk.nodes, dropped=dict(sorted(walk.dropped.items())), title=page_title,
                      language=declared_language(tree), meta=meta_tags(tree),
                      dropped_images=walk.dropped_images)

