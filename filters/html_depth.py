"""How deep a page nests, estimated from its tags before any parsing.

An HTML tree builder spends time per start tag that grows with the depth of the open elements (the HTML
standard's "has an element in scope" walks the stack for a <div>, a <li> walks it to close an open one):
measured with Lexbor here, 20,000 nested <div> parse in 0.84 s and 20,000 nested <ul><li> in 4.5 s (10,000:
0.18 s and 0.8 s), so 100,000 never finish. Browsers cap the depth they build (Blink: 512). A page whose
estimated depth passes the limit is not parsed at all; the walk itself is linear (an explicit stack).

The estimate follows the tree builder closely enough: void elements do not nest, an end tag closes every
element opened after its start tag unless the HTML standard has the builder ignore it (another element's
end tag past a "special" element such as a div, a table part outside a table, foreign content left by a
start tag that breaks out of it; a red-team page of "<span><div></span>" repeated nested 2N deep where
an estimate that closed on every end tag saw 4: 2.8 MB took 105 s to parse), and an element whose end tag
is optional (p, li, td, option, ...) closes the open one of the same name. Tags inside comments, scripts
and styles are counted too, which can only raise the estimate.
"""

from __future__ import annotations

import re

_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)([^>]*)>?")
_RAW_TEXT_END = {name: re.compile(f"</{name}", re.IGNORECASE) for name in ("script", "style", "textarea",
                                                                          "title", "xmp", "noembed")}
_COMMENT_END = "-->"
VOID = frozenset(("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
                  "source", "track", "wbr", "keygen", "basefont", "bgsound", "frame", "image", "isindex"))
# an open element of the same name is closed by the next start tag (the end tag is optional)
SELF_CLOSING_SIBLINGS = frozenset(("p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "rb", "rt",
                                   "rp", "rtc", "thead", "tbody", "tfoot", "colgroup"))
# HTML elements for which "/>" means nothing (the element opens); for other names (SVG and MathML
# children, custom elements) "<x/>" is taken as closed, which is what foreign content does
HTML_ELEMENTS = frozenset((
    "a abbr address article aside audio b bdi bdo blockquote body button canvas caption center cite code "
    "data datalist dd del details dfn dialog dir div dl dt em fieldset figcaption figure font footer form "
    "frameset h1 h2 h3 h4 h5 h6 head header hgroup html i iframe ins kbd label legend li main map mark menu "
    "meter nav nobr noframes noscript object ol optgroup option output p picture pre progress q rb rp rt rtc "
    "ruby s samp section select small span strike strong sub summary sup table tbody td template tfoot th "
    "thead time tr tt u ul var video marquee applet big").split())


# The HTML standard's "special" elements: an end tag of another element does not close past one of them
# (the tree builder ignores `</span>` while a <div> opened inside the span is open: "<span><div></span>"
# repeated nests two deeper each time)
SPECIAL = frozenset((
    "address applet area article aside base basefont bgsound blockquote body br button caption center col "
    "colgroup dd details dir div dl dt embed fieldset figcaption figure footer form frame frameset h1 h2 h3 "
    "h4 h5 h6 head header hgroup hr html iframe img input keygen li link listing main marquee menu meta nav "
    "noembed noframes noscript object ol p param plaintext pre script search section select source style "
    "summary table tbody td template textarea tfoot th thead title tr track ul wbr xmp").split())
# formatting elements: their end tag past a special element (the adoption agency) leaves that one open
FORMATTING = frozenset("a b big code em font i nobr s small strike strong tt u".split())
# elements whose end tags close only inside a table; outside one the tree builder ignores their tags
TABLE_PARTS = frozenset("td th tr tbody thead tfoot caption col colgroup".split())
# a start tag of these inside <svg> or <math> leaves the foreign content first (the HTML standard's
# "breakout" list): "<svg><div></svg>" keeps the div open, the </svg> is ignored
BREAKOUT = frozenset((
    "b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 head hr i img li listing "
    "menu meta nobr ol p pre ruby s small span strong strike sub sup table tt u ul var").split())
FOREIGN = frozenset(("svg", "math"))


def nesting_depth(html: str, stop_at: int | None = None) -> int:
    """The deepest nesting of elements the page's tags describe (stops counting past `stop_at`; a page
    with no more tags than `stop_at` is not scanned). Linear in the page's length: each element is opened
    once and closed at most once, and each end tag is judged in constant time; raw text (script, style,
    ...) and comments are skipped. Where the tree builder keeps elements open that their end tags seem to
    close (the cases above), so does the estimate; it may count more than the builder (up to twice as many
    for formatting elements closed past a block), never less for those."""
    if stop_at is not None and html.count("<") <= stop_at:
        return 0
    stack: list[str | None] = []  # None: a formatting element closed in the middle, still counted
    where: dict[str, list[int]] = {}  # name -> stack indices of its open elements, innermost last
    special: list[int] = []  # stack indices of open special elements
    foreign: list[int] = []  # stack indices of open svg / math

    def pop() -> None:
        name = stack.pop()
        if name is not None:
            where[name].pop()
            if name in SPECIAL:
                special.pop()
            if name in FOREIGN:
                foreign.pop()
        while stack and stack[-1] is None:  # a closed formatting element with nothing open above it
            stack.pop()

    deepest, pos, n = 0, 0, len(html)
    while pos < n:
        lt = html.find("<", pos)
        if lt < 0:
            break
        if html.startswith("<!--", lt):
            end = html.find(_COMMENT_END, lt + 4)
            pos = n if end < 0 else end + 3
            continue
        m = _TAG.match(html, lt)
        if m is None:
            pos = lt + 1
            continue
        pos = m.end()
        closing, name = m.group(1), m.group(2).lower()
        if closing:
            open_at = where.get(name)
            if not open_at or (name in TABLE_PARTS and not where.get("table")):
                continue  # nothing to close, or a table part's end tag outside a table: ignored
            at = open_at[-1]
            blocked = name not in SPECIAL and special and special[-1] > at
            if blocked and name not in FORMATTING:
                continue  # "any other end tag": a special element is in the way, the tag is ignored
            if blocked:  # the adoption agency: the formatting element goes, what is above it stays open
                stack[at] = None
                open_at.pop()
                continue
            while len(stack) > at:  # an end tag closes everything opened after its start tag
                if stack[-1] is None:
                    stack.pop()
                else:
                    pop()
            continue
        if name in VOID or (m.group(3).endswith("/") and name not in HTML_ELEMENTS):
            continue
        if name in _RAW_TEXT_END:  # its content is text, whatever it looks like
            end = _RAW_TEXT_END[name].search(html, pos)
            pos = n if end is None else end.start()
            continue
        if name in TABLE_PARTS and not where.get("table"):
            continue  # <td> outside a table: the tree builder ignores it
        if foreign and name in BREAKOUT:  # leaves the svg / math it is in
            outer = foreign[-1]
            while len(stack) > outer:
                pop()
        if name in SELF_CLOSING_SIBLINGS and stack and stack[-1] == name:
            pop()
        stack.append(name)
        where.setdefault(name, []).append(len(stack) - 1)
        if name in SPECIAL:
            special.append(len(stack) - 1)
        if name in FOREIGN:
            foreign.append(len(stack) - 1)
        if len(stack) > deepest:
            deepest = len(stack)
            if stop_at is not None and deepest > stop_at:
                return deepest
    return deepest
