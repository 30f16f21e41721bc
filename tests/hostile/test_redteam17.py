"""Findings of the red-team pass over issue 17's held-out rules (the rescue of a boilerplate-named wrapper,
the lead, the linked-line rule, class-word stems, drop_captions): each test failed before its fix."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from interleaf.filters.html import ExtractConfig, extract

_spec = importlib.util.spec_from_file_location("_redteam2", Path(__file__).with_name("test_redteam2.py"))
_redteam2 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_redteam2)
PROSE = _redteam2.TEXT
PAGE = "http://example.com/page"


def _seconds(html: str) -> float:
    start = time.perf_counter()
    extract(html, PAGE, ExtractConfig(max_seconds=None, max_depth=None))
    return time.perf_counter() - start


def _grows_linearly(make) -> None:
    """Four times the page costs about four times the time (a quadratic step: sixteen)."""
    _seconds(make(100))
    small, large = min(_seconds(make(1000)) for _ in range(2)), min(_seconds(make(4000)) for _ in range(2))
    assert large < 8 * small + 0.05, (small, large)


def _texts(ex) -> list[str]:
    return [n.text for n in ex.nodes if n.is_text]


def test_nested_links_in_a_rescue_candidate_cost_linear_time():
    # an <svg> lets <a> nest; the rescue's link count searched every level's subtree: 116 s for 4 MB
    _grows_linearly(lambda n: f'<html><body><p>short kept</p><div class="share"><p>{PROSE}</p><p>{PROSE}</p>'
                    '<svg>' + "<a href=x>" * n + "y " * (20 * n) + "</a>" * n + "</svg></div></body></html>")


def test_a_long_chain_of_blocks_before_the_body_costs_linear_time():
    # the lead search climbed from every paragraph of the chain to the article: quadratic in its depth (the
    # article holds more text than the chain, so the chain's wrapper is searched for a lead)
    def page(n: int) -> str:
        body = "".join(f"<p>{PROSE} {i}</p>" for i in range(n // 5))
        chain = "".join(f'<div class="c{i}">Sixty-three characters of text in one block of a long chain.'
                        for i in range(n))
        return ('<html><body><div class="outer">' + chain + "</div>" * n
                + f'<div class="article-body">{body}</div></div></body></html>')
    _grows_linearly(page)


def test_a_consent_overlay_bigger_than_the_page_is_not_rescued():
    consent = "We and our 842 partners store and access information on your device, such as cookies. " * 9
    page = ('<html><body><div class="product"><h1>Blue widget</h1><p>The blue widget is our best seller, '
            'made of recycled steel.</p><p>Price: 19 EUR.</p></div>'
            f'<div class="newsletter-signup"><p>{consent}</p></div></body></html>')
    texts = _texts(extract(page, PAGE))
    assert "Price: 19 EUR." in texts and not any("842 partners" in t for t in texts)


def test_linked_headings_and_list_items_stay():
    items = "".join(f'<h2><a href="/costume-{i}">{i}. A costume idea worth a look</a></h2><p>{PROSE}</p>'
                    for i in range(1, 4))
    page = (f'<html><body><article>{items}<ul><li>1/2 cup <a href="/cocoa">dutch cocoa powder</a></li>'
            '<li>2 eggs, beaten with a fork</li><li>200 g of flour, sifted twice</li><li>A pinch of salt</li>'
            '</ul><p>Read more: <a href="/x">Another story</a></p></article></body></html>')
    ex = extract(page, PAGE)
    texts = _texts(ex)
    assert "1. A costume idea worth a look" in texts and "1/2 cup dutch cocoa powder" in texts
    assert "Read more: Another story" not in texts and ex.dropped == {"link_dense": 1}


def test_a_subscript_is_no_subscription_box():
    page = ('<html><body><p>Water is H<span class="subscript">2</span>O, and it boils at 100 degrees.</p>'
            '</body></html>')
    assert _texts(extract(page, PAGE)) == ["Water is H2O, and it boils at 100 degrees."]


def test_drop_captions_keeps_an_amp_image_inside_the_caption():
    page = ('<html><body><p>Body text.</p><figure><figcaption><amp-img src="/p.jpg" width="600" height="400">'
            '</amp-img>A caption</figcaption></figure></body></html>')
    ex = extract(page, PAGE, ExtractConfig(drop_captions=True))
    assert [n.image_url for n in ex.nodes if n.is_image] == ["http://example.com/p.jpg"]


def test_an_author_box_before_the_body_is_no_lead():
    body = "".join(f"<p>{PROSE} {i}</p>" for i in range(6))
    page = ('<html><body><article><div class="author-description"><p>Jane Doe is a staff writer who covers '
            'city hall and has worked here for ten years.</p></div><p class="lead">The council met on '
            'Tuesday and approved a budget that had been delayed for months.</p>'
            f'<div class="body">{body}</div></article></body></html>')
    texts = _texts(extract(page, PAGE))
    assert texts[0].startswith("The council met on Tuesday") and not any("Jane Doe" in t for t in texts)
