"""The run report's sections as HTML: overview, funnel, distributions, downloads per host, rejections.

Each section is a function of the collected RunData that returns one <section> with a heading, a short
caption saying what the chart shows and where its numbers come from, and the chart; a section whose data
the run did not produce says what is absent and why instead.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from interleaf.htmlsafe import link
from interleaf.report import svg
from interleaf.report.collect import ARCHIVED, FETCHED, RunData, describe_inputs, host_table
from interleaf.report.svg import DROP_COLOURS, KEPT, OTHER, Row, Segment, esc, fmt

STAGE_ORDER = ("ingest", "pii", "dedup", "fetch", "image_rules", "clip", "clip_reapply", "tokenize", "final")
UNITS = (("documents", "Documents"), ("nodes", "Nodes (paragraphs and images)"),
         ("images", "Images"), ("records", "WARC records"))
TOP_HOSTS = 20  # hosts drawn; the table lists up to TABLE_HOSTS
TABLE_HOSTS = 50
SCATTER_POINTS = 3000  # points drawn in the image dimensions plot (SVG stays light on large stores)


def section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def caption(text: str) -> str:
    return f'<p class="caption">{text}</p>'


def absent_box(text: str) -> str:
    return f'<div class="absent"><strong>Absent:</strong> {esc(text)}</div>'


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "–"


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def card(title: str, body: str) -> str:
    return f'<figure class="card"><figcaption><strong>{esc(title)}</strong></figcaption>{body}</figure>'


# ---------------------------------------------------------------- overview


def overview(d: RunData) -> str:
    m = d.manifest or {}
    funnel = d.funnel
    tiles = []
    docs = _first_last(funnel, "documents")
    if docs:
        tiles.append(("documents kept", docs[1], f"of {fmt(docs[0])} parsed ({_pct(docs[1], docs[0])})"))
    elif d.documents:
        tiles.append(("documents kept", d.documents.documents, "in documents/"))
    if d.documents:
        tiles.append(("images in documents", d.documents.image_nodes,
                      f"{fmt(d.documents.image_nodes_stored)} with bytes in the store"))
    if d.images:
        tiles.append(("images stored", d.images.ok, f"{fmt(d.images.rows - d.images.ok)} URLs failed"))
    if d.tokens:
        tiles.append(("tokens", d.tokens.tokens, f"in {fmt(d.tokens.rows)} sequences"))
    if d.rejected:
        tiles.append(("documents rejected", d.rejected.documents, "in rejected/"))
    body = ['<div class="tiles">' + "".join(
        f'<div class="tile"><div class="num">{fmt(v)}</div><div class="what">{esc(k)}</div>'
        f'<div class="sub">{esc(sub)}</div></div>' for k, v, sub in tiles) + "</div>"]
    facts = []
    if m:
        inputs = ", ".join(f"{n} {esc(kind)} input{_s(n)} ({esc(first)}{', …' if n > 1 else ''})"
                           for kind, n, first in describe_inputs(m))
        facts += [("stages", esc(" → ".join(m.get("stages", [])))), ("inputs", inputs),
                  ("created", esc(m.get("created", "?"))),
                  ("versions", esc(", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items())))]
    body.append("<table class=\"facts\">" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
                + "</table>")
    timings = (m.get("timings_s") or {})
    by_stage = {k: v for k, v in (timings.get("processing_by_stage") or {}).items() if v}
    if by_stage:
        body.append(svg.bars(list(by_stage.items()), "Processing seconds per stage", unit=" s"))
        total = fmt(timings.get("total", 0))
        body.append(caption(f"Processing time per stage summed over workers, from the runner's per-step "
                            f"metrics (manifest timings_s); the whole run took {total} s of wall time."))
    if m.get("unreconciled"):
        body.append('<div class="warn"><strong>The funnel does not reconcile:</strong> '
                    + esc("; ".join(m["unreconciled"])) + "</div>")
    if d.absent:
        body.append('<div class="absent"><strong>Not in this run:</strong><ul>' + "".join(
            f"<li><code>{esc(k)}</code>: {esc(v)}</li>" for k, v in d.absent.items()) + "</ul></div>")
    return section("overview", "Overview", "\n".join(body))


def _first_last(funnel: dict, unit: str) -> tuple[int, int] | None:
    stages = [s for s in _stages(funnel) if unit in funnel[s]]
    if not stages:
        return None
    return funnel[stages[0]][unit]["in"], funnel[stages[-1]][unit]["out"]


def _stages(funnel: dict) -> list[str]:
    known = [s for s in STAGE_ORDER if s in funnel]
    return known + [s for s in funnel if s not in known]


# ---------------------------------------------------------------- funnel


def reason_colours(per_stage: list[dict[str, int]]) -> dict[str, str]:
    """Colours for the drop reasons that matter most: each stage's largest reason first, then each stage's
    second, and so on, so that a small stage's main reason is not lost to a big stage's tail."""
    chosen: dict[str, str] = {}
    ranked = [sorted(d, key=lambda r: (-d[r], r)) for d in per_stage]
    for rank in range(max((len(r) for r in ranked), default=0)):
        for reasons in ranked:
            if rank < len(reasons) and reasons[rank] not in chosen and len(chosen) < len(DROP_COLOURS):
                chosen[reasons[rank]] = DROP_COLOURS[len(chosen)]
    return chosen


def funnel_chart(funnel: dict, unit: str, title: str) -> str:
    stages = [s for s in _stages(funnel) if unit in funnel[s]]
    entries = [funnel[s][unit] for s in stages]
    colours = reason_colours([e["dropped"] for e in entries])
    rows = []
    for stage, e in zip(stages, entries):
        segments = [Segment("kept", e["out"], KEPT)]
        segments += [Segment(r, e["dropped"][r], c) for r, c in colours.items() if e["dropped"].get(r)]
        rest = {r: n for r, n in e["dropped"].items() if r not in colours and n}
        if rest:
            segments.append(Segment("other: " + ", ".join(f"{r} {n}" for r, n in rest.items()),
                                    sum(rest.values()), OTHER))
        note = f"{fmt(e['in'])} → {fmt(e['out'])} kept ({_pct(e['out'], e['in'])})"
        rows.append(Row(stage, segments, note))
    totals = Counter()
    for e in entries:
        totals.update(e["dropped"])
    items = [("kept (survived the stage)", KEPT)]
    items += [(f"{r} ({fmt(totals[r])})", c) for r, c in colours.items()]
    others = [r for r in totals if r not in colours and totals[r]]
    if others:
        items.append((f"{len(others)} other reason{_s(len(others))} ({fmt(sum(totals[r] for r in others))})",
                      OTHER))
    chart = svg.stacked_bars(rows, f"{title}: in, kept and dropped by reason at each stage")
    info = _info(zip(stages, entries))
    details = "".join(f"<tr><td>{esc(s)}</td><td>{esc(r)}</td><td class=\"n\">{fmt(n)}</td></tr>"
                      for s, e in zip(stages, entries)
                      for r, n in sorted(e["dropped"].items(), key=lambda kv: -kv[1]))
    return (f'<figure class="wide"><figcaption><strong>{esc(title)}</strong></figcaption>{chart}'
            + svg.legend(items)
            + (caption("Also counted (informational): " + esc(info)) if info else "")
            + (f"<details><summary>every drop reason</summary><table><tr><th>stage</th><th>reason</th>"
               f"<th>count</th></tr>{details}</table></details>" if details else "")
            + "</figure>")


def _info(stage_entries) -> str:
    """The informational counters (neither in, out nor dropped) of (stage, entry) pairs, in one line."""
    return "; ".join(f"{s} {k} {fmt(v)}" for s, e in stage_entries for k, v in e.get("info", {}).items())


def funnel_section(d: RunData) -> str:
    if not d.funnel:
        why = d.absent.get("manifest", "the manifest has no funnel")
        return section("funnel", "Funnel", absent_box(why))
    body = [caption("What entered each stage and what it kept; each bar is as long as the stage's input, its "
                    "blue part survived, the coloured parts were dropped for the reasons named. Bars of one "
                    "unit share a scale. From the manifest's funnel (Beam counters; in = kept + dropped).")]
    present = list(dict.fromkeys(u for units in d.funnel.values() for u in units))
    titles = dict(UNITS)
    for unit in [u for u, _ in UNITS if u in present] + [u for u in present if u not in titles]:
        title = titles.get(unit, unit.capitalize())
        entries = [(s, d.funnel[s][unit]) for s in _stages(d.funnel) if unit in d.funnel[s]]
        if any(e["in"] or e["out"] or e["dropped"] for _, e in entries):
            body.append(funnel_chart(d.funnel, unit, title))
        else:  # a unit with informational counters only (e.g. tokens: text and image counts)
            info = _info(entries)
            body.append(f"<p><strong>{esc(title)}</strong>: {esc(info or 'no counts')}</p>")
    return section("funnel", "Funnel", "\n".join(body))


# ---------------------------------------------------------------- distributions


def _stats_line(values: np.ndarray, unit: str = "") -> str:
    if not values.size:
        return "no values"
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    def r(v: float) -> str:
        return fmt(round(float(v), 3)) + unit

    return f"n = {fmt(values.size)}, median {r(p50)}, 10–90% {r(p10)}–{r(p90)}, max {r(values.max())}"


def _hist_card(title: str, values: np.ndarray | None, source: str, x_label: str, why_absent: str,
               **kwargs) -> str:
    if values is None or not values.size:
        return card(title, absent_box(why_absent))
    series = kwargs.pop("series", None) or [(x_label, values, KEPT)]
    median = float(np.median(values))
    markers = kwargs.pop("markers", None) or [(median, f"median {fmt(round(median, 3))}")]
    chart = svg.histogram(series, title, x_label=x_label, markers=markers, **kwargs)
    legend = svg.legend([(name, c) for name, _, c in series]) if len(series) > 1 else ""
    return card(title, chart + legend + caption(esc(_stats_line(values)) + ". " + source))


def distributions(d: RunData) -> str:
    docs, images, tokens = d.documents, d.images, d.tokens
    no_docs = d.absent.get("documents", "documents/ holds no documents")
    no_ok = (d.absent.get("images", "no image store") if images is None else
             "no image in the store has status ok")
    stored = (f"Kept image nodes per document in documents/; {fmt(docs.image_nodes_stored)} of "
              f"{fmt(docs.image_nodes)} have their bytes in the image store.") if docs else ""
    vocab = tokens.vocabulary if tokens else {}
    token_note = (f"Token ids per doc_id in tokens/ (rows split at max length summed), read from the list "
                  f"offsets alone. Vocabulary {fmt(vocab.get('size', 0))}: "
                  f"{fmt(vocab.get('text_vocab_size', 0))} text, {fmt(vocab.get('image_codebook_size', 0))} "
                  "image codes.")
    words_note = "Whitespace-separated words in the kept text nodes of documents/"
    if docs and docs.word_shards < docs.shards:
        words_note += (f" (counted on {docs.word_shards} of {docs.shards} shards: a random sample, as the "
                       "writers partition documents by a hash of doc_id)")
    words_note += "."
    formats = ", ".join(f"{k} {v}" for k, v in images.formats.most_common()) if images else ""
    cards = [
        _hist_card("Words per document", docs.words_per_doc if docs else None, words_note, "words", no_docs),
        _hist_card("Images per document", docs.images_per_doc if docs else None, stored, "images", no_docs),
        _hist_card("Tokens per document", tokens.per_doc if tokens else None, token_note, "tokens",
                   d.absent.get("tokens", "no token shards") + " (the tokenize stage did not run)"),
        _size_card(d, no_ok),
        _hist_card("Image file size (KiB, as served)", images.kilobytes if images else None,
                   "original_bytes of the images with status ok in images/"
                   + (f"; formats: {esc(formats)}." if formats else "."), "KiB", no_ok),
        _clip_card(d),
    ]
    return section("distributions", "Distributions", caption(
        "How documents and images are shaped after curation. The dashed line marks the median (or the CLIP "
        "threshold); hover a bar or point for its numbers.") + f'<div class="grid">{"".join(cards)}</div>')


# ---------------------------------------------------------------- safety and consent

# (reason, what it means) of the safety and consent filters (docs/safety.md), in the order shown
SAFETY_REASONS = (
    ("blocked_domain", "URL on a blocked domain (UT1 or your list)"),
    ("blocked_url", "URL on the blocklist"),
    ("banned_url_word", "banned word in the URL"),
    ("tdm_reserved", "TDM reservation, noai or noimageai"),
    ("nsfw", "NSFW score at the threshold (NudeNet)"),
    ("language_not_kept", "language outside --languages"),
    ("language_uncertain", "no language with confidence (with --languages)"),
)
TOP_LANGUAGES = 15


def safety(d: RunData) -> str:
    """Language identification, personal data replaced, and what the blocklist and consent filters dropped."""
    docs, funnel = d.documents, d.funnel or {}
    cards = []
    if docs and docs.languages:
        top = docs.languages.most_common(TOP_LANGUAGES)
        rest = sum(docs.languages.values()) - sum(n for _, n in top)
        items = [(code, float(n)) for code, n in top] + ([("other", float(rest))] if rest else [])
        cards.append(card("Languages of the curated documents", svg.bars(items, "Languages", width=330)
                          + caption(f"{fmt(len(docs.languages))} languages; fastText lid.176 at ingest "
                                    "(docs/safety.md).")))
    else:
        cards.append(card("Languages of the curated documents", absent_box(
            d.absent.get("documents", "documents/ holds no documents"))))
    cards.append(_hist_card("Language identification score", docs.language_scores if docs else None,
                            "The identifier's probability for each curated document's language; below 0.65 "
                            "the language is undetermined.", "score", "no document was identified",
                            markers=[(0.65, "threshold 0.65")]))
    pii = (funnel.get("pii", {}).get("documents") or {}).get("info", {})
    replaced = [(k.removeprefix("pii."), v) for k, v in pii.items() if k != "pii.documents"]
    rows = [f"<tr><td>{esc(kind)}</td><td>{fmt(n)}</td></tr>" for kind, n in replaced]
    cards.append(card("Personal data replaced", (
        f"<table><tr><th>kind</th><th>replaced</th></tr>{''.join(rows)}</table>"
        + caption(f"In {fmt(pii.get('pii.documents', 0))} documents, by typed placeholders.")) if replaced
        else absent_box("none replaced" if "pii" in funnel else "the pii step did not run")))
    images = d.images
    cards.append(_hist_card("NSFW score of the images", images.nsfw if images else None,
                            "NudeNet's highest NSFW-class score of every image scored, kept or dropped "
                            "(nsfw_score in images/); at the threshold an image is dropped.", "score",
                            "no image was scored (the image safety step did not run)"))
    if images is not None and images.faces.size:
        counts = np.bincount(np.minimum(images.faces.astype(int), 5))
        items = [(f"{k}" if k < 5 else "5+", float(n)) for k, n in enumerate(counts)]
        cards.append(card("Faces per stored image", svg.bars(items, "Faces per image", width=330) + caption(
            f"{fmt(int((images.faces > 0).sum()))} of {fmt(images.faces.size)} stored images show a face "
            f"({fmt(int(images.faces.sum()))} faces; face_count in images/).")))
    dropped = []
    for reason, meaning in SAFETY_REASONS:
        for stage in _stages(funnel):
            for unit, e in funnel[stage].items():
                if e["dropped"].get(reason):
                    dropped.append(f"<tr><td>{esc(reason)}</td><td>{esc(stage)}</td><td>{esc(unit)}</td>"
                                   f"<td>{fmt(e['dropped'][reason])}</td><td>{esc(meaning)}</td></tr>")
    cards.append(card("Blocklist, consent, language and NSFW drops", (
        "<table><tr><th>reason</th><th>stage</th><th>unit</th><th>dropped</th><th>meaning</th></tr>"
        + "".join(dropped) + "</table>") if dropped else absent_box("nothing dropped by these filters")))
    return section("safety", "Safety and consent", caption(
        "What the safety and consent filters found and did (docs/safety.md).")
        + f'<div class="grid">{"".join(cards)}</div>')


def _size_card(d: RunData, why_absent: str) -> str:
    title = "Image dimensions (px, as served)"
    images = d.images
    if images is None or not images.width.size:
        return card(title, absent_box(why_absent))
    chart = svg.scatter(images.width, images.height, title, x_label="width", y_label="height",
                        max_points=SCATTER_POINTS)
    square = int(np.sum(images.width == images.height))
    note = (f"original_width × original_height of the {fmt(images.width.size)} images with status ok in "
            f"images/ (before resizing); {fmt(square)} square, on the dashed diagonal. Width: "
            f"{_stats_line(images.width, ' px')}. Height: {_stats_line(images.height, ' px')}.")
    if images.width.size > SCATTER_POINTS:
        note += f" {fmt(SCATTER_POINTS)} images drawn, evenly sampled."
    return card(title, chart + caption(esc(note)))


def _clip_card(d: RunData) -> str:
    """Scores of image nodes (the unit the clip stage decides on), kept and dropped; when the dropped nodes
    were stripped from the shards, the image store's best score per image instead, split at the threshold."""
    title, x_label = "CLIP image-text similarity", "cosine similarity"
    kept = d.documents.clip_kept if d.documents else np.zeros(0)
    dropped = np.concatenate([d.documents.clip_dropped if d.documents else np.zeros(0),
                              d.rejected.clip_dropped if d.rejected else np.zeros(0)])
    t = d.clip_threshold
    markers = [(t, f"threshold {t:.3g}")] if t is not None else None
    clip_nodes = (d.funnel.get("clip") or {}).get("nodes") or {}
    missing = sum(n for r, n in clip_nodes.get("dropped", {}).items() if r != "clip_no_image") - dropped.size
    store = d.images.clip if d.images is not None else np.zeros(0)
    if (kept.size or dropped.size) and (missing <= 0 or not store.size):
        series = [("kept image nodes", kept, KEPT), ("dropped image nodes", dropped, DROP_COLOURS[1])]
        series = [s for s in series if s[1].size]
        source = ("clip_score of the kept image nodes in documents/ and of dropped ones in documents/ and "
                  "rejected/.")
        if missing > 0:
            source += (f" {fmt(missing)} image nodes the clip stage dropped are not in the shards (dropped "
                       "nodes are stripped unless --keep-dropped-nodes): low scores are under-counted.")
        return _hist_card(title, np.concatenate([kept, dropped]), source, x_label, "", series=series,
                          markers=markers, kind="linear")
    if store.size:
        series = ([("at or above the threshold", store[store >= t], KEPT),
                   ("below the threshold", store[store < t], DROP_COLOURS[1])] if t is not None else
                  [("images", store, KEPT)])
        source = "Best clip_score of each image in the image store (its best match with any document's text)"
        if missing > 0:
            source += (f"; the image nodes' own scores are partly absent ({fmt(missing)} dropped nodes were "
                       "stripped from the documents, keep them with --keep-dropped-nodes).")
        else:
            source += "."
        return _hist_card(title, store, source, x_label, "", series=[s for s in series if s[1].size],
                          markers=markers, kind="linear")
    stages = (d.manifest or {}).get("stages")
    stages = stages if isinstance(stages, list) else None
    why = ("no CLIP scores in documents/ or images/" if stages is None else
           "the clip stage ran but no image node or stored image has a score" if "clip" in stages else
           "no CLIP scores: the clip stage did not run")
    return _hist_card(title, None, "", "", why)


# ---------------------------------------------------------------- downloads


OUTCOME_COLOURS = {FETCHED: KEPT, ARCHIVED: "#56B4E9"}


def _outcome_colours(outcomes: Counter) -> dict[str, str]:
    colours = dict(OUTCOME_COLOURS)
    failures = Counter()
    for (_, outcome), n in outcomes.items():
        if outcome not in colours:
            failures[outcome] += n
    palette = [c for c in DROP_COLOURS if c != "#56B4E9"]
    for i, (outcome, _) in enumerate(failures.most_common()):
        colours[outcome] = palette[i] if i < len(palette) else OTHER
    return colours


def downloads(d: RunData) -> str:
    title = "Image downloads per host"
    if d.images is None or not d.images.outcomes:
        why = d.absent.get("images", "no image store") if d.images is None else "the image store has no URLs"
        return section("downloads", title, absent_box(why))
    colours = _outcome_colours(d.images.outcomes)
    hosts = host_table(d.images.outcomes)
    order = [o for o in colours if any(o in c for _, _, c in hosts)]
    rows = [Row(h, [Segment(o, c[o], colours[o]) for o in order if c.get(o)],
                f"{fmt(n)} URL{_s(n)}, {_pct(c[FETCHED] + c[ARCHIVED], n)} ok")
            for h, n, c in hosts[:TOP_HOSTS]]
    totals = Counter()
    for _, _, c in hosts:
        totals.update(c)
    chart = svg.stacked_bars(rows, "Image URLs per host by outcome", bar_h=16)
    legend = svg.legend([(f"{o} ({fmt(totals[o])})", colours[o]) for o in order])
    head = "".join(f"<th>{esc(o)}</th>" for o in order)
    table_rows = "".join(
        f"<tr><td>{esc(h)}</td>" + "".join(f'<td class="n">{v}</td>' for v in (
            fmt(n), _pct(c[FETCHED] + c[ARCHIVED], n), *(fmt(c[o]) if c.get(o) else "" for o in order)))
        + "</tr>" for h, n, c in hosts[:TABLE_HOSTS])
    more = f" ({len(hosts) - TABLE_HOSTS} more hosts not listed)" if len(hosts) > TABLE_HOSTS else ""
    errors = "".join(f"<tr><td>{esc(k)}</td><td class=\"err\">{esc(v[:200])}</td></tr>"
                     for k, v in sorted(d.images.errors.items()))
    shown = f"the {TOP_HOSTS} hosts with most URLs" if len(hosts) > TOP_HOSTS else f"all {len(hosts)} hosts"
    body = [caption(f"Every image URL the run resolved or tried, by host and outcome: archived in the WARC, "
                    f"fetched, or the fetch status that stopped it. From the image store (images/: status, "
                    f"source, urls; an image counts once per URL that led to it, with the source of the "
                    f"stored bytes). Showing {shown}."),
            f'<figure class="wide">{chart}{legend}</figure>',
            (f'<div class="scroll"><table class="hosts"><tr><th>host</th><th>URLs</th><th>ok</th>{head}</tr>'
            f"{table_rows}</table></div>{caption(esc(more)) if more else ''}")]
    if errors:
        body.append(f"<details><summary>an example error per failure status</summary><table>{errors}</table>"
                    "</details>")
    return section("downloads", title, "\n".join(body))


# ---------------------------------------------------------------- rejected


def rejected(d: RunData) -> str:
    r, title = d.rejected, "Rejected documents"
    if r is None:
        return section("rejected", title, absent_box(d.absent.get("rejected", "no rejected/")))
    if not r.documents:
        return section("rejected", title, caption("No document was rejected (rejected/ is empty)."))
    items = r.reasons.most_common()
    chart = svg.bars(items, "Rejected documents by reason", colour=DROP_COLOURS[0])
    examples = "".join(
        f"<tr><td>{esc(reason)}</td><td class=\"n\">{fmt(n)}</td><td>"
        + "<br>".join(link(u) for u in r.examples.get(reason, [])) + "</td></tr>"
        for reason, n in items)
    return section("rejected", title, caption(
        f"{fmt(r.documents)} documents in rejected/, by the reason of the stage that dropped them, with "
        "example pages.") + chart + "<details><summary>example URLs per reason</summary><table><tr>"
        f"<th>reason</th><th>documents</th><th>examples</th></tr>{examples}</table></details>")
