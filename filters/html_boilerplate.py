"""Which elements of a page are boilerplate, and why: the rules of filters/html.py's walk by tag, ARIA role,
hidden state and class or id words (docs/extraction.md has the table and its sources)."""

from __future__ import annotations

import re
from functools import lru_cache

from selectolax.lexbor import LexborNode

# Elements that are boilerplate by their tag (HTML5 sectioning and form controls).
TAG_REASON = {"nav": "nav", "footer": "footer", "aside": "aside", "form": "form", "button": "form",
              "select": "form", "input": "form", "textarea": "form", "label": "form", "dialog": "popup"}
ROLE_REASON = {"navigation": "nav", "menubar": "nav", "menu": "nav", "banner": "header",
               "contentinfo": "footer", "complementary": "aside", "search": "form", "dialog": "popup",
               "alertdialog": "popup"}
# class/id words (split on non-alphanumerics, so "site-footer" matches and "shadow" never matches "ad").
CLASS_REASON = {
    **dict.fromkeys(["nav", "navbar", "navigation", "topnav", "subnav", "menu", "menubar", "breadcrumb",
                     "breadcrumbs", "pagination", "pager", "navbox", "skiplink", "skip", "toc"], "nav"),
    **dict.fromkeys(["header", "masthead", "topbar"], "header"),
    **dict.fromkeys(["footer", "colophon", "copyright"], "footer"),
    # not "widget": page builders (Elementor) put it on every content block
    **dict.fromkeys(["sidebar", "related"], "aside"),
    **dict.fromkeys(["comment", "comments", "disqus", "respond", "replies"], "comments"),
    **dict.fromkeys(["share", "sharing", "social", "sharedaddy", "addthis"], "social"),
    # who wrote it and when, and whose photo it is: metadata lines, not the text (trafilatura leaves them out
    # too); not on inline elements (BYLINE_NOT_ON), and not the broader "date", "author", "credits" or
    # "meta" (WordPress's entry-meta line, but also Quanta's post__title__meta around the standfirst), which
    # name event schedules, author bios, publication lists and film credits as often (a review found each)
    **dict.fromkeys(["byline", "dateline", "timestamp", "pubdate", "credit"], "byline"),
    **dict.fromkeys(["ad", "ads", "advert", "adverts", "advertisement", "advertising", "sponsor", "sponsored",
                     "adsbygoogle", "adslot", "adunit", "dfp", "googleads"], "ad"),
    **dict.fromkeys(["cookie", "cookies", "gdpr", "consent", "popup", "modal", "newsletter"], "popup"),
}
# Compound class words that start with one of these (first STEM characters) name the same boilerplate:
# "jp-relatedposts", "relatedlinks__content", "c-native-newsletterbox", "account-paywall-form",
# "wp-block-mmo-recirculation-box", "readmore-links", "subscribe-box". Only stems no content word starts
# with ("comment" would take "commentary", "share" "shared", "ad" everything).
STEM = 7
STEM_REASON = {"related": "aside", "recircu": "aside", "readmor": "aside", "newslet": "popup",
               "paywall": "paywall", "subscri": "popup"}
NOT_STEMS = ("subscript",)  # <span class="subscript">2</span> in H2O (stems are not read on inline elements)
# Inline elements a byline word does not drop: a <span class="date"> inside a sentence is part of it
BYLINE_NOT_ON = frozenset(("a", "abbr", "b", "cite", "em", "font", "i", "small", "span", "strong", "time"))
# Words that mark a content container even beside a boilerplate word ("content-sidebar-wrap"): Readability's
# okMaybeItsACandidate without "main" and "column", which name menus and sidebars as often ("main-nav").
CONTENT_WORDS = frozenset(["article", "body", "content"])
NEVER_DROP_BY_CLASS = frozenset(("html", "body", "main", "article"))
# ASP.NET Web Forms wraps every page in one <form runat="server">: a form with this much text, or with one
# of those ids, is a layout wrapper, not a search box or a comment form (WordPress's is ~300 characters).
FORM_WRAPPER_CHARS = 1000
FORM_WRAPPER_IDS = frozenset(("aspnetform", "form1"))
_WORDS = re.compile(r"[^a-z0-9]+")
_TOPIC_CLASSES = ("category-", "tag-", "tags-", "topic-", "topics-")
_CAMEL = re.compile(r"([a-z])([A-Z])")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)


def class_words(attrs: dict) -> tuple[str, ...]:
    """class and id as sorted lowercase words: "site-footer mainNav" -> ("footer", "main", "nav", "site").
    Classes that name what the content is about rather than what the element is (WordPress's post_class()
    puts "category-<slug>" and "tag-<slug>" on every article: "category-native-advertising") say nothing."""
    return names_words(attrs.get("class") or "", attrs.get("id") or "")


@lru_cache(maxsize=4096)  # a page repeats its class names on every item of a list
def names_words(class_value: str, id_value: str) -> tuple[str, ...]:
    classes = " ".join(c for c in class_value.split() if not c.lower().startswith(_TOPIC_CLASSES))
    value = _CAMEL.sub(r"\1 \2", f"{classes} {id_value}")
    return tuple(sorted(set(_WORDS.split(value.lower()))))  # sorted: the same reason on every run


MAIN_SELECTOR = "article, main, [role=main]"


class Holders:
    """Which elements of a page hold an element matching `selector` (by default an article, main or
    role=main element): found once per page (each match's ancestors, marked up to the first already
    marked), so that asking costs no walk over the subtree (3,900 nested sidebar divs above an article, or
    8,000 nested <noscript> around one image, made that quadratic)."""

    def __init__(self, root: LexborNode, selector: str = MAIN_SELECTOR):
        self.root, self.selector, self.ids = root, selector, None

    def __call__(self, node: LexborNode) -> bool:
        if self.ids is None:
            self.ids = set()
            for found in self.root.css(self.selector):
                up = found.parent
                while up is not None and up.mem_id not in self.ids:
                    self.ids.add(up.mem_id)
                    up = up.parent
        return node.mem_id in self.ids


CAPTION_WORDS = frozenset(("caption", "captions"))


def is_caption(node: LexborNode, tag: str, attrs: dict) -> bool:
    """A figure's caption (ExtractConfig.drop_captions): a <figcaption>, or an element whose class or id
    words name a caption ("wp-caption-text"), holding no image (WordPress's "wp-caption" <div> holds the
    image with its caption)."""
    if tag != "figcaption" and not (attrs and CAPTION_WORDS.intersection(class_words(attrs))):
        return False
    return node.css_first("img, amp-img") is None


def boilerplate_reason(node: LexborNode, tag: str, attrs: dict, in_section: bool,
                       drop_comments: bool = True, holds_main=None) -> str | None:
    """The reason an element's whole subtree is boilerplate, or None. `in_section`: the element is inside
    article, main or section; `drop_comments`: comment threads are boilerplate (ExtractConfig);
    `holds_main`: a Holders of the page (else the subtree is searched)."""
    if not attrs:  # most elements: only the tag can say
        return None if tag == "form" and len(node.text() or "") > FORM_WRAPPER_CHARS else (
            TAG_REASON.get(tag) or ("header" if tag == "header" and not in_section else None))
    if tag == "form" and ((attrs.get("id") or "").lower() in FORM_WRAPPER_IDS
                          or len(node.text() or "") > FORM_WRAPPER_CHARS):
        return None
    if tag in TAG_REASON:
        return TAG_REASON[tag]
    if tag == "header" and not in_section:
        return "header"
    # not on <html>/<body>: anti-flicker snippets hide the whole page until a script shows it
    if tag not in ("html", "body") and (
            "hidden" in attrs or (attrs.get("aria-hidden") or "").lower() == "true"
            or (attrs.get("style") and _HIDDEN_STYLE.search(attrs["style"]))):
        return "hidden"
    role = (attrs.get("role") or "").strip().lower()
    if role in ROLE_REASON:
        return ROLE_REASON[role]
    if tag == "ins" and "adsbygoogle" in (attrs.get("class") or ""):
        return "ad"
    if tag in NEVER_DROP_BY_CLASS or not (attrs.get("class") or attrs.get("id")):
        return None
    words = class_words(attrs)
    if CONTENT_WORDS.intersection(words):
        return None
    for word in words:
        reason = CLASS_REASON.get(word)
        if reason is None and word[:STEM] in STEM_REASON and tag not in BYLINE_NOT_ON \
                and not word.startswith(NOT_STEMS):  # most words miss the stems: the dict is asked first
            reason = STEM_REASON[word[:STEM]]
        if (reason == "comments" and not drop_comments or reason == "header" and in_section
                or reason == "byline" and tag in BYLINE_NOT_ON):
            continue
        if reason:
            # a wrapper named "page-with-sidebar" may hold the article itself
            if holds_main(node) if holds_main is not None else node.css_first(MAIN_SELECTOR) is not None:
                return None
            return reason
    return None


# Left-out reasons never undone by extract()'s rescue of a boilerplate-named wrapper: a comment thread may
# well hold more text than its post, what is hidden is not shown, and a consent or newsletter overlay can
# hold more text than a short product page under it (a review's finding). "paywall" is rescued: Barron's
# puts the article itself in <div class="paywall">.
NOT_RESCUED = frozenset(("comments", "hidden", "popup"))


def rescuable(tag: str, attrs: dict, reason: str) -> bool:
    """Whether a subtree left out as `reason` was judged by its class or id words (or is a <header>, which
    some pages wrap around everything) rather than by its tag, role or hidden state: only those words can
    name the page's own text wrongly."""
    if reason in NOT_RESCUED or tag in TAG_REASON:
        return False
    return (attrs.get("role") or "").strip().lower() not in ROLE_REASON
