"""What a page's <head> says, for filters/html.py's extract(): its base URL, title, declared language and
(bounded) named <meta> tags, the consent ones kept apart so that other tags cannot push them out."""

from __future__ import annotations

import re

from selectolax.lexbor import LexborHTMLParser

from interleaf.filters.html_images import resolve_url


def normalise_language(value: str | None) -> str | None:
    """An ISO 639-1 code from a language tag ("en-US", "en_us", "EN", "eng", "english"), or None."""
    if not value:
        return None
    tag = value.strip().lower().replace("_", "-").split(",")[0].split("-")[0].strip()
    tag = _LEGACY_639.get(tag, tag)
    if len(tag) == 2 and tag.isalpha():
        return tag
    return _TO_639_1.get(tag)


# ISO 639-2/3 codes and English names of the languages most common on the web (W3Techs content languages),
# plus the 639-1 codes that were withdrawn (iw, in, ji) but still appear in old pages.
_LEGACY_639 = {"iw": "he", "in": "id", "ji": "yi"}
_TO_639_1 = {name: code for code, names in {
    "en": "eng english", "de": "deu ger german deutsch", "fr": "fra fre french francais",
    "es": "spa spanish", "it": "ita italian", "pt": "por portuguese", "nl": "nld dut dutch",
    "ru": "rus russian", "ja": "jpn japanese", "zh": "zho chi chinese", "ko": "kor korean",
    "ar": "ara arabic", "pl": "pol polish", "tr": "tur turkish", "fa": "fas per persian",
    "vi": "vie vietnamese", "id": "ind indonesian", "sv": "swe swedish", "cs": "ces cze czech",
    "uk": "ukr ukrainian", "el": "ell gre greek", "hu": "hun hungarian", "ro": "ron rum romanian",
    "da": "dan danish", "fi": "fin finnish", "no": "nor norwegian", "he": "heb hebrew", "hi": "hin hindi",
    "th": "tha thai",
}.items() for name in names.split()}


def base_url(tree: LexborHTMLParser, url: str) -> str:
    """The URL the page's relative URLs are read against: its <base href> when that is http(s), else the
    page's URL, serialised as the WHATWG URL standard does (so that an image URL can be compared with it)."""
    base = tree.css_first("base[href]")
    href = (base.attributes.get("href") or "").strip() if base is not None else ""
    if href:
        resolved = resolve_url(url, href)
        if resolved:
            return resolved
    return resolve_url(url, "") or url


def title(tree: LexborHTMLParser) -> str | None:
    node = tree.css_first("title")
    title = " ".join(node.text().split()) if node is not None else ""
    if not title:
        meta = tree.css_first('meta[property="og:title"]')
        title = " ".join((meta.attributes.get("content") or "").split()) if meta is not None else ""
    return title or None


_TITLE_WORDS = re.compile(r"\w+")
_TITLE_MIN_CHARS = 10  # a shorter paragraph inside the title ("News", "Home") says too little to match
_TITLE_MAX_CHARS = 1000  # a longer <title> is no headline (and comparing each paragraph with it costs)
_HEADLINE_WITHIN = 8  # paragraphs from the top (breadcrumbs, a kicker, a date may come before the headline)


def headline_index(texts: list[str], page_title: str) -> int | None:
    """Which of a page's kept paragraphs is its headline, the one ExtractConfig.drop_title leaves out: the
    first whose words are a run of the title's words (compared as lower-case \\w+ words: "Title | Site"
    holds "Title"), looked for before the text starts (the first _HEADLINE_WITHIN paragraphs, none longer
    than twice the title), and none when it is the only paragraph (a post that is its title keeps it). A
    subheading or a quote further down that repeats words of the title stays."""
    if len(texts) < 2 or len(page_title) > _TITLE_MAX_CHARS:
        return None
    title_words = f" {' '.join(_TITLE_WORDS.findall(page_title.lower()))} "
    for i, text in enumerate(texts[:_HEADLINE_WITHIN]):
        if len(text) > 2 * len(page_title):
            return None  # the text has started
        words = " ".join(_TITLE_WORDS.findall(text.lower()))
        if len(words) > _TITLE_MIN_CHARS and f" {words} " in title_words:
            return i
    return None


MAX_META_TAGS = 64


_CONSENT_META = ("robots", "tdm-reservation", "tdm-policy")
MAX_CONSENT_META = 1024  # distinct consent tags kept
# http-equiv metas read as the named metas that say the same
_HTTP_EQUIV = {"x-robots-tag": "robots", "tdm-reservation": "tdm-reservation", "tdm-policy": "tdm-policy"}


def meta_tags(tree: LexborHTMLParser) -> list[tuple[str, str]]:
    """The page's named <meta> tags, distinct and bounded (a hostile page may hold thousands): up to
    MAX_META_TAGS of any name, and besides them up to MAX_CONSENT_META that carry consent (robots, tdm-*
    names, or noai / noimageai addressed to any crawler by name; http-equiv X-Robots-Tag and tdm-reservation
    read as those), so that other tags cannot push those out."""
    found: dict[tuple[str, str], None] = {}
    consent: dict[tuple[str, str], None] = {}  # distinct pairs: 300 "index, follow" tags are one
    for meta in tree.css("meta[name][content], meta[http-equiv][content]"):
        attrs = meta.attributes
        name, content = attrs.get("name"), attrs.get("content")
        if not name:  # <meta http-equiv="X-Robots-Tag" content="noai">: a header written into the page
            name = _HTTP_EQUIV.get((attrs.get("http-equiv") or "").strip().lower())
        if not name or content is None or len(name) > 64:
            continue
        pair = (name.strip().lower(), content[:1024])
        lowered = pair[1].lower()
        if pair[0] in _CONSENT_META or "noai" in lowered or "noimageai" in lowered:
            if len(consent) < MAX_CONSENT_META:
                consent[pair] = None
        elif len(found) < MAX_META_TAGS:
            found[pair] = None
        if len(found) == MAX_META_TAGS and len(consent) == MAX_CONSENT_META:
            break
    return list(consent) + list(found)


def declared_language(tree: LexborHTMLParser) -> str | None:
    html = tree.css_first("html")
    candidates = [html.attributes.get("lang") or html.attributes.get("xml:lang")] if html is not None else []
    for selector in ('meta[http-equiv="content-language" i]', 'meta[name="language" i]',
                     'meta[property="og:locale"]'):
        meta = tree.css_first(selector)
        if meta is not None:
            candidates.append(meta.attributes.get("content"))
    for value in candidates:
        if (code := normalise_language(value)) is not None:
            return code
    return None
