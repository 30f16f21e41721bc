"""What filters/html.py's extract() takes and gives: its settings (ExtractConfig), its result (Extraction)
and the pages it refuses (PageRefused: too deep to parse, too slow to walk)."""

from __future__ import annotations

from dataclasses import dataclass, field

from interleaf.schemas.document import Node


@dataclass(kw_only=True)
class ExtractConfig:
    """What extract() keeps. Sizes are the width/height the page declares, in CSS pixels."""

    # An image whose every declared side is at most this is an icon. Favicons and UI icons are drawn at
    # 16, 24 or 32 px (Material Design's icon grid is 24 px); 32 keeps Wikipedia's 30x40 Commons logo and
    # Medium's 48x48 author avatars, which Readability's expected output keeps. Real pixel sizes are
    # checked after the fetch (OBELICS dropped images under 150 px on a side, Laurençon et al. 2023, 2.4).
    icon_max_side: int = 32
    # Every declared side at most this: a tracking pixel (the 1x1 GIF of web beacons, 0x0 variants).
    # One side at most this and the other larger: a spacer or rule image of the table-layout era.
    pixel_max_side: int = 2
    # srcset: the candidate with the largest width up to this many pixels (2x of a 1024 px layout column);
    # the multi-megapixel originals above it cost bandwidth the image stage resizes away anyway.
    max_srcset_width: int = 2048
    # srcset with density descriptors only: the largest density up to this (retina 2x).
    max_srcset_density: float = 2.0
    # Take the srcset pick over a plain src (see image_source for why src is the default).
    prefer_srcset: bool = False
    # data: URIs are kept only when True. They are mostly lazy-loading placeholders (1x1 GIF, blank SVG)
    # and the image store is keyed by fetched bytes, so by default they are dropped as "data_uri".
    keep_data_uris: bool = False
    # A page whose elements nest deeper than this (estimated from its tags, filters/html_depth.py) is not
    # parsed: tree building slows down with depth (20,000 nested <ul><li> take 4.5 s to parse, 100,000 never
    # finish). Real pages nest 10-50 deep (at most 50 on the 181 pages of the extraction benchmark, measured
    # once by hand on 2026-12-07, not by a test); Blink stops nesting at 512. None parses every page.
    max_depth: int | None = 4000
    # Seconds of extraction a page may take; past them it is a dropped document ("too_slow"), so that no
    # page the rules handle badly can stall a worker. A page of 16 MB took 23.5 s in a run (measured once, by
    # the third red-team pass); the 181 pages of the extraction benchmark take under 10 ms each. None: no
    # limit.
    max_seconds: float | None = 60.0
    # Comment threads (class/id comment, disqus, respond) are user content, not the page's: Readability
    # treats them as unlikely candidates too. False keeps them.
    drop_comments: bool = True
    # Figure captions (<figcaption>, and class words caption/captions on an element without an image) are
    # left out as "caption" when True: a text-only corpus, or an extraction benchmark that counts captions as
    # boilerplate (trafilatura's evaluation set does), wants that; an interleaved corpus keeps the caption
    # beside its image, so False is the default.
    drop_captions: bool = False
    # An image URL met more often than this on one page is decoration (list bullets, rating stars, per-item
    # social icons: 15 stars on archive.org, 30 icons on the Semantic Scholar team page): every occurrence
    # is dropped as "repeated". 3 keeps what Readability keeps: the same base-URL test image 3 times, Medium's
    # section separator 3 times. None keeps them all.
    max_repeats: int | None = 3
    # A container (list, division, table) of two or more paragraphs whose text lies more than this much
    # inside links is navigation: a menu, related stories with teasers, a reference list. 0.5 as
    # Readability's link density cut for heavy candidates; judged from the innermost container out, over
    # what inner containers left. On the article-extraction benchmark: F1 0.862 -> 0.903 (0.4: 0.905, 0.33:
    # 0.902; bench/extraction_bench.py). None keeps them.
    max_link_density: float | None = 0.5
    # Keep only the page's main content (filters/html_main.py: Readability's scoring of blocks by their
    # paragraphs, link density and class names); the rest is left out as "not_main_content". A page whose
    # best block holds fewer characters than main_content_min_chars is kept whole (Readability's
    # charThreshold, 500: below it, it retries with its rules relaxed).
    main_content: bool = True
    main_content_min_chars: int = 500
    # The main content holds at least this share of the page's text; a smaller best block (one publication
    # of a homepage's list: 3% of its text) gives way to the nearest ancestor that holds this much. On the
    # article-extraction benchmark the block chosen holds 31-100% of each page's text.
    main_content_min_share: float = 0.25
    # A paragraph that repeats the page's <title> (the headline, usually the title without the site's name)
    # is left out as "title": the document keeps the title in its meta, and the article-extraction benchmark's
    # article bodies, like trafilatura's text, leave it out (F1 0.945 -> 0.949 there). False keeps it.
    drop_title: bool = True
    # Declared sizes above this are garbage: JPEG, GIF and PNG encoders in practice stop at 65535 px.
    max_declared_side: int = 65535


@dataclass
class Extraction:
    nodes: list[Node]  # ordered text (paragraphs) and image nodes, all status "kept"
    dropped: dict[str, int]  # candidate nodes left out, by reason
    title: str | None
    language: str | None  # ISO 639-1 when the page declares a language we can map
    # <meta name=... content=...> pairs, name in lower case (robots directives, tdm-reservation; read by
    # filters/tdm.py), at most MAX_META_TAGS
    meta: list[tuple[str, str]] = field(default_factory=list)
    # for audit: the dropped <img> candidates that had a URL, as image nodes with status "dropped" and the
    # reason (also counted in `dropped`), in page order
    dropped_images: list[Node] = field(default_factory=list)

    @property
    def candidates(self) -> int:
        """Nodes in: kept plus dropped."""
        return len(self.nodes) + sum(self.dropped.values())


class PageRefused(ValueError):
    """A page that is not extracted; `reason` is the drop reason of its document."""

    reason = "refused"


class PageTooDeep(PageRefused):
    """A page nested deeper than ExtractConfig.max_depth: not parsed."""

    reason = "too_deep"


class PageTooSlow(PageRefused):
    """A page whose extraction took longer than ExtractConfig.max_seconds: given up."""

    reason = "too_slow"
