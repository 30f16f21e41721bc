"""Main-content selection for filters/html.py's walk: which block of the page is the article, scored as
Readability does (Mozilla's Readability.js, _grabArticle), on what the walk already gathered.

The walk records every block element it enters outside boilerplate (its tag, class and id, its parent block,
the span of nodes it holds, and the text and link characters it holds), and every paragraph it emits (the
innermost block open at the time, its characters and commas). Selection then works on those records alone:

1. A paragraph of at least 25 characters scores 1 + its commas + one per 100 characters (at most 3). Its
   score goes to the block holding it, half to that block's parent, and a third of it divided by the level
   to the blocks above up to five levels; headings other than h1, p, pre, td, div, section and the like are
   the blocks that hold paragraphs, lists and their items are not.
2. A block starts from its tag's weight (div 5; pre, td, blockquote 3; lists and forms -3; headings -5) and
   25 for each of its class and id that names content (article, body, content, entry, post, story ...)
   less 25 for each that names boilerplate (comment, footer, meta, related, share, sidebar ...). Its score
   is scaled by 1 - its link density.
3. The best block is the top candidate; it is replaced by the nearest ancestor that holds three of the
   candidates that score within three quarters of it (an article split by an advert), or by a parent that
   scores more than it does.
4. The top candidate's siblings join it when they score at least max(10, half of it), or when they are a
   paragraph of more than 80 characters with link density under 0.25 (or a short one with no link that
   ends a sentence); so do blocks anywhere with exactly its class (an article cut into chunks by adverts
   or figures, each chunk a block of its own).
5. The lead joins too: in the ancestors of the top candidate that hold at most twice its text, the
   paragraphs before it in a block whose class or id names a lead, standfirst or excerpt (_lead).
6. Inside what was selected, a block whose class or id names boilerplate and whose paragraphs do not make up
   for it (class weight plus score below zero: a promo box in the article's wrapper) is taken out, unless
   it holds an image (a figure's caption is content): part of Readability's _cleanConditionally.

Every node outside what was selected is left out as "not_main_content". A page whose best block gathers
less than `min_chars` characters is left whole: too little text to judge, as a gallery or a page of
captioned pictures. A best block that holds less than `min_share` of the page's text is one item of a list
(a publication on a homepage, a post in a thread): its ancestors are tried until one holds that much.
"""

from __future__ import annotations

import logging
import re

from interleaf.filters.html_boilerplate import names_words

log = logging.getLogger(__name__)

# Readability.js REGEXPS.positive / negative (2024), matched against class and id apart
_POSITIVE = re.compile(r"article|body|content|entry|hentry|h-entry|main|page|pagination|post|text|blog|story",
                       re.IGNORECASE)
_NEGATIVE = re.compile(r"-ad-|hidden|^hid$| hid$| hid |^hid |banner|combx|comment|com-|contact|footer|gdpr|"
                       r"masthead|media|meta|outbrain|promo|related|scroll|share|shoutbox|sidebar|skyscraper|"
                       r"sponsor|shopping|tags|widget", re.IGNORECASE)
# Readability's _initializeNode weights
_TAG_WEIGHT = {"div": 5, "pre": 3, "td": 3, "blockquote": 3, "address": -3, "ol": -3, "ul": -3, "dl": -3,
               "dd": -3, "dt": -3, "li": -3, "form": -3, "h1": -5, "h2": -5, "h3": -5, "h4": -5, "h5": -5,
               "h6": -5, "th": -5}
# blocks whose paragraphs are scored (Readability's DEFAULT_TAGS_TO_SCORE, plus the divs and sections it
# turns into paragraphs when they hold text directly)
SCORED = frozenset(("p", "pre", "td", "h2", "h3", "h4", "h5", "h6", "div", "section", "article", "main",
                    "blockquote", "center", "body", "font"))
MIN_PARAGRAPH_CHARS = 25  # Readability: shorter paragraphs do not score
MAX_LEVELS = 5  # ancestors a paragraph's score reaches
SIBLING_SHARE = 0.5  # a sibling block joins the top candidate from this share of its score

# element record fields (a list per block element, for speed)
TAG, PARENT, START, END, NAMES, TEXT, LINKS = range(7)


def class_weight(names: str) -> int:
    """Readability's _getClassWeight over "class\\x00id"."""
    weight = 0
    for value in names.split("\x00"):
        if value:
            if _NEGATIVE.search(value):
                weight -= 25
            if _POSITIVE.search(value):
                weight += 25
    return weight


def select(nodes: list, elements: list[list], paragraphs: dict[int, tuple[int, int, int, float]],
           left_out: set[int], min_chars: int, min_share: float) -> set[int] | None:
    """The indices of the nodes outside the main content, or None to keep the page whole.

    nodes: the walk's nodes; elements: per block element [tag, parent index or -1, first node, end node,
    "class\\x00id", characters of text, characters in links]; paragraphs: node index -> (owning element,
    characters, commas, share of the characters in links); left_out: nodes already dropped by the walk."""
    scores: dict[int, float] = {}
    for i, (owner, chars, commas, _) in paragraphs.items():
        if i in left_out or chars < MIN_PARAGRAPH_CHARS or owner < 0:
            continue
        score = 1 + commas + min(chars // 100, 3)
        element = owner
        if elements[element][TAG] not in SCORED:
            continue
        for level in range(MAX_LEVELS):
            element = elements[element][PARENT]
            if element < 0:
                break
            if element not in scores:
                e = elements[element]
                scores[element] = _TAG_WEIGHT.get(e[TAG], 0) + class_weight(e[NAMES])
            scores[element] += score if level == 0 else score / 2 if level == 1 else score / (level * 3)
    if not scores:
        return None

    def final(i: int) -> float:
        e = elements[i]
        return scores.get(i, 0.0) * (1 - (e[LINKS] / e[TEXT] if e[TEXT] else 0.0))

    ranked = sorted(scores, key=lambda i: (-final(i), i))
    top = ranked[0]
    if final(top) <= 0:
        return None
    top = _climb(elements, ranked, top, final)
    # a block holding little of the page's text is one item of a list page (a publication on a homepage, one
    # post of a forum thread), not an article: its ancestors are tried until one holds min_share
    total = sum(e[TEXT] for e in elements if e[PARENT] < 0)
    while elements[top][TEXT] < min_share * total and elements[top][PARENT] >= 0:
        top = elements[top][PARENT]
    if elements[top][TEXT] < min_chars:
        return None
    kept = _with_siblings(nodes, elements, paragraphs, top, final)
    kept += _lead(elements, paragraphs, left_out, top)
    log.debug("main content: top %s, spans %s", top, kept)
    inside = bytearray(len(nodes))
    for start, end in kept:
        inside[start:end] = b"\x01" * (end - start)
    _clean(nodes, elements, scores, inside)
    return {i for i in range(len(nodes)) if not inside[i]}


# blocks that cleaning may take out of the main content (Readability's _cleanConditionally on div, section,
# ul, ol, table and so on)
_CLEANED = frozenset(("div", "section", "ul", "ol", "dl", "table", "aside", "header", "footer", "center"))


def _clean(nodes: list, elements: list[list], scores: dict[int, float], inside: bytearray) -> None:
    """Inside the main content, take out the blocks whose class or id names boilerplate and whose paragraphs
    do not make up for it (Readability: class weight plus score below zero): a promo box or a row of share
    buttons inside the article's wrapper. A block holding an image stays (a figure's caption is content)."""
    for i, e in enumerate(elements):
        start, end = e[START], e[END]
        if (e[TAG] not in _CLEANED or start == end or not inside[start] or not e[NAMES].strip("\x00")
                or not _NEGATIVE.search(e[NAMES])):
            continue
        weight = class_weight(e[NAMES])
        score = scores[i] if i in scores else _TAG_WEIGHT.get(e[TAG], 0) + weight
        if weight + score < 0 and not any(n.is_image for n in nodes[start:end]):
            inside[start:end] = bytes(end - start)


def _contains(elements: list[list], outer: int, inner: int) -> bool:
    return elements[outer][START] <= elements[inner][START] and elements[inner][END] <= elements[outer][END]


def _climb(elements: list[list], ranked: list[int], top: int, final) -> int:
    """Readability's move up: to the nearest ancestor holding three of the alternative candidates (within
    0.75 of the top's score), then to a parent that scores more than the candidate below it."""
    best = final(top)
    alternatives = [i for i in ranked[1:5] if final(i) >= 0.75 * best]
    if len(alternatives) >= 3:
        parent = elements[top][PARENT]
        while parent >= 0:
            if sum(_contains(elements, parent, a) for a in alternatives) >= 3:
                top = parent
                break
            parent = elements[parent][PARENT]
    last, threshold = final(top), final(top) / 3
    parent = elements[top][PARENT]
    while parent >= 0 and elements[parent][TAG] != "body":
        score = final(parent)
        if score <= 0:  # not a candidate
            parent = elements[parent][PARENT]
            continue
        if score < threshold:
            break
        if score > last:
            top = parent
            break
        last = score
        parent = elements[parent][PARENT]
    return top


_SENTENCE_END = re.compile(r"\.( |$)")


def _with_siblings(nodes: list, elements: list[list], paragraphs, top: int, final) -> list[tuple[int, int]]:
    """Node spans of the top candidate and of its siblings that join it."""
    parent = elements[top][PARENT]
    spans = [(elements[top][START], elements[top][END])]
    if parent < 0:
        return spans
    # Readability's threshold is a fifth of the top's score; half keeps out more teaser blocks (benchmark F1
    # 0.942 -> 0.944, recall unchanged; bench/extraction_bench.py)
    threshold = max(10.0, final(top) * SIBLING_SHARE)
    top_names = elements[top][NAMES]
    for i in range(parent + 1, len(elements)):
        e = elements[i]
        if e[START] >= elements[parent][END]:
            break
        if e[PARENT] != parent or i == top:
            continue
        bonus = final(top) * 0.2 if top_names.strip("\x00") and e[NAMES] == top_names else 0.0
        if final(i) + bonus >= threshold or (e[TAG] == "p" and _good_paragraph(nodes, e)):
            spans.append((e[START], e[END]))
    # the article split into blocks of one class by adverts or figures, further away than siblings
    if top_names.split("\x00")[0].strip():
        for i, e in enumerate(elements):
            if e[NAMES] == top_names and final(i) > 0 and not any(s <= e[START] < end for s, end in spans):
                spans.append((e[START], e[END]))
    # text directly in the parent, between its child blocks: a paragraph owned by the parent itself
    for i, (owner, chars, _, share) in paragraphs.items():
        if owner == parent and not (spans[0][0] <= i < spans[0][1]) and (
                (chars > 80 and share < 0.25)):
            spans.append((i, i + 1))
    return spans


# the lead (_lead): ancestors of the top candidate holding at most this many times its text are searched,
# for paragraphs of at least LEAD_MIN_CHARS characters
LEAD_GROWTH = 2.0
LEAD_MIN_CHARS = 50
# class and id words of a block that introduces an article, in the newsroom words of several languages:
# perex (Czech), chapo (French), Vorspann (German), entradilla / bajada (Spanish), sommario (Italian) ...
LEAD_WORDS = frozenset(("intro", "introduction", "lead", "leader", "lede", "perex", "teaser", "excerpt",
                        "subtitle", "subhead", "subheadline", "deck", "dek", "standfirst", "summary",
                        "abstract", "description", "chapo", "chapeau", "kicker", "synopsis", "vorspann",
                        "entradilla", "bajada", "sumario", "sommario"))
# ... and words of blocks whose "description" or "teaser" is no lead: an author box, a caption, a card of
# another story (a review's findings: cicero.de's author description, hoy.com's teasers of other articles)
NOT_LEAD_WORDS = frozenset(("author", "authors", "bio", "profile", "caption", "credit", "credits", "related",
                            "card", "comment", "comments"))


def _lead(elements: list[list], paragraphs, left_out: set[int], top: int) -> list[tuple[int, int]]:
    """Spans of the paragraphs that introduce the top candidate from outside it: a lead, standfirst, deck or
    excerpt in the article's header or in a block of its own before the body ("intro", "perex", "teaser",
    "entry__subtitle"). Found in the ancestors of the top that hold little more than it does (wrappers,
    the article element with its header), up to MAX_LEVELS up: their paragraphs before the top with few
    links and at least LEAD_MIN_CHARS characters."""
    outer, limit = top, LEAD_GROWTH * elements[top][TEXT]
    for _ in range(MAX_LEVELS):
        parent = elements[outer][PARENT]
        if parent < 0 or elements[parent][TAG] == "body" or elements[parent][TEXT] > limit:
            break
        outer = parent
    if outer == top:
        return []
    memo: dict[int, bool | None] = {outer: None}
    return [(i, i + 1) for i in range(elements[outer][START], elements[top][START])
            if i in paragraphs and i not in left_out and paragraphs[i][1] >= LEAD_MIN_CHARS
            and paragraphs[i][3] < 0.25 and _named_lead(elements, paragraphs[i][0], memo)]


def _named_lead(elements: list[list], element: int, memo: dict[int, bool | None]) -> bool:
    """Whether the blocks from `element` up to the outer one (memo's first key) name a lead (LEAD_WORDS)
    and none names what only looks like one (NOT_LEAD_WORDS: an author's "description", a caption). Each
    block is read once per page (memo: block -> True lead, False not one, None nothing said), so a chain of
    thousands of nested blocks costs linear time."""
    path = []
    while element >= 0 and element not in memo:
        path.append(element)
        element = elements[element][PARENT]
    verdict = memo.get(element) if element >= 0 else None
    for e in reversed(path):  # outermost first: a NOT_LEAD word anywhere up the chain wins
        if verdict is not False:
            class_value, _, id_value = elements[e][NAMES].partition("\x00")
            words = names_words(class_value, id_value)
            if NOT_LEAD_WORDS.intersection(words):
                verdict = False
            elif LEAD_WORDS.intersection(words):
                verdict = True
        memo[e] = verdict
    return memo[path[0]] is True if path else verdict is True


def _good_paragraph(nodes: list, e: list) -> bool:
    density = e[LINKS] / e[TEXT] if e[TEXT] else 0.0
    if e[TEXT] > 80:
        return density < 0.25
    text = " ".join(n.text for n in nodes[e[START]:e[END]] if n.is_text)
    return 0 < e[TEXT] and density == 0 and _SENTENCE_END.search(text) is not None


def keep_main_content(w) -> None:
    """Leave out, in filters/html.py's walk `w`, the text outside the page's main content (select) and the
    images there that are links (teasers of other pages), counted as "not_main_content". An image outside
    it that is no link stays: the picture of an item page or a homepage's portrait often sits in a column
    of its own."""
    c = w.config
    outside = select(w.nodes, w.elements, w.paragraphs, w.removed, c.main_content_min_chars,
                     c.main_content_min_share)
    for i in sorted(outside or ()):
        if i in w.removed:
            continue
        if w.nodes[i].is_text:
            w.dropped["not_main_content"] += 1
            w.removed.add(i)
        elif i in w.linked_images:
            w._drop_image(w.nodes[i], "not_main_content")
            w.removed.add(i)
