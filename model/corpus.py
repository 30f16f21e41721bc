"""The synthetic training corpus of the shapes benchmark: captioned scenes, held-out combinations left out.

Each example is a caption and the scene it describes, of the six kinds the benchmark asks for (model/geneval.py),
with several caption templates per kind (GenEval's "a photo of ..." among them). The same examples come out as
interleaf Documents (a text node, then an image node), ready for the sequence codec, or as a small web site
(HTML pages with <p> captions and <img> PNGs) that the whole interleaf pipeline can crawl.
"""

from __future__ import annotations

import html
import logging
import os
import random
from dataclasses import dataclass, field, replace

from interleaf.schemas.document import Document, Node
from interleaf.shapes import (
    COUNT_SIZE,
    DEFAULT_HELD_OUT,
    IMAGE_SIZE,
    NUMBER_WORDS,
    PAIR_SIZE,
    RELATIONS,
    SHAPES,
    SINGLE_SIZE,
    HeldOut,
    Scene,
    allowed_colors,
    object_box,
    place,
    relative_position,
    render,
    with_article,
)

log = logging.getLogger(__name__)

# Caption templates per kind; {a_x} is x with its article. The first of each is GenEval's phrasing.
TEMPLATES = {
    "single_object": ("a photo of {a_s}", "{a_s}", "an image of {a_s}"),
    "colors": ("a photo of {a_c} {s}", "{a_c} {s}", "one {c} {s} on white", "an image showing {a_c} {s}"),
    "two_object": ("a photo of {a_s} and {a_t}", "{a_s} and {a_t}", "an image of {a_s} and {a_t}"),
    "counting": ("a photo of {n} {s}s", "{n} {s}s", "there are {n} {s}s"),
    "position": ("a photo of {a_s} {r} {a_t}", "{a_s} {r} {a_t}", "a photo of {a_c} {s} {r} {a_d} {t}"),
    "color_attr": ("a photo of {a_c} {s} and {a_d} {t}", "{a_c} {s} and {a_d} {t}",
                   "an image of {a_c} {s} and {a_d} {t}"),
}
# Share of each kind: the compositional kinds (position, colour attribution) get more examples.
DEFAULT_MIX = {"single_object": 1.0, "colors": 2.0, "two_object": 1.5, "counting": 2.0, "position": 3.0,
               "color_attr": 3.0}


@dataclass(frozen=True)
class Example:
    caption: str
    scene: Scene
    kind: str  # the benchmark task it teaches
    # its counterfactual twin (CorpusConfig.counterfactual): the same words in another order and the picture
    # that goes with them, shown right after it in the same document
    twin: Example | None = None


@dataclass(kw_only=True)
class CorpusConfig:
    examples: int = 20_000  # captioned scenes
    seed: int = 0  # scene and caption sampling
    held_out: HeldOut = DEFAULT_HELD_OUT  # combinations never shown
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))  # kind -> relative share
    # Share of the position and color_attr examples that carry their counterfactual twin (issue 19): "a
    # circle above a square" followed by "a square above a circle" with the two objects' places swapped; "a
    # red circle and a blue square" by "a blue circle and a red square" with the colours swapped. A twin
    # that shows a held-out combination is left out. 0 draws the corpus of before, example for example.
    counterfactual: float = 0.0


def sample_example(rng: random.Random, kind: str, held_out: HeldOut, *, twin: bool = False) -> Example:
    """An example of `kind`; with `twin`, a position or color_attr example carries its counterfactual twin
    (see counterfactual), unless the twin would show a held-out combination."""
    template = rng.choice(TEMPLATES[kind])
    s, t = rng.sample(SHAPES, 2)
    c = rng.choice(allowed_colors(s, held_out))
    d = rng.choice([x for x in allowed_colors(t, held_out) if x != c])
    words = {"s": s, "t": t, "c": c, "d": d, "a_s": with_article(s), "a_t": with_article(t),
             "a_c": with_article(c), "a_d": with_article(d)}
    if kind in ("single_object", "colors"):
        scene = place(rng, [(s, c)], size_range=SINGLE_SIZE)
    elif kind == "counting":
        n = rng.choice((2, 3, 4))
        words["n"] = NUMBER_WORDS[n]
        scene = place(rng, [(s, c)] * n, size_range=COUNT_SIZE)
    elif kind == "position":
        allowed = [r for r in RELATIONS if not held_out.arrangement_held_out(s, r, t)]
        r = rng.choice(allowed)
        words["r"] = r
        scene = place(rng, [(t, d), (s, c)], size_range=PAIR_SIZE,
                      accept=lambda sc: relative_position(object_box(sc.objects[1]), object_box(sc.objects[0]))
                      == {r} and not held_out.scene_held_out(sc))
    else:  # two_object, color_attr
        scene = place(rng, [(s, c), (t, d)], size_range=PAIR_SIZE,
                      accept=lambda sc: not held_out.scene_held_out(sc))
    example = Example(template.format(**words), scene, kind)
    if twin and kind in ("position", "color_attr"):
        return Example(example.caption, scene, kind, counterfactual(kind, template, words, scene, held_out))
    return example


def counterfactual(kind: str, template: str, words: dict, scene: Scene, held_out: HeldOut) -> Example | None:
    """The minimal pair of a position or color_attr example: the same words in another order and the
    picture that goes with them. Position: subject and object swapped in the caption (with their colours)
    and their places swapped in the scene (GenEval's relation rule is symmetric in the two boxes, so the
    relation reads the other way round exactly). color_attr: the two colours swapped, in the caption and on
    the shapes. None when the twin would show a held-out combination."""
    swapped = dict(words)
    if kind == "position":
        for x, y in (("s", "t"), ("a_s", "a_t"), ("c", "d"), ("a_c", "a_d")):
            swapped[x], swapped[y] = words[y], words[x]
        target, subject = scene.objects
        twin_scene = Scene((replace(target, cx=subject.cx, cy=subject.cy),
                            replace(subject, cx=target.cx, cy=target.cy)))
        margin = [(o.size / 2, o.cx, o.cy) for o in twin_scene.objects]
        if any(not (m <= cx <= 1 - m and m <= cy <= 1 - m) for m, cx, cy in margin):
            return None  # a larger shape moved to a smaller one's place near the border
    else:
        for x, y in (("c", "d"), ("a_c", "a_d")):
            swapped[x], swapped[y] = words[y], words[x]
        a, b = scene.objects
        twin_scene = Scene((replace(a, color=b.color), replace(b, color=a.color)))
    if held_out.scene_held_out(twin_scene):
        return None
    return Example(template.format(**swapped), twin_scene, kind)


def _sample_placed(rng: random.Random, kind: str, held_out: HeldOut, tries: int = 20, twin: bool = False
                   ) -> Example:
    """An example of `kind`; a scene whose objects found no room (rarely: four shapes of the largest counting
    size) is drawn again."""
    for _ in range(tries - 1):
        try:
            return sample_example(rng, kind, held_out, twin=twin)
        except ValueError:
            continue
    return sample_example(rng, kind, held_out, twin=twin)


def make_examples(config: CorpusConfig) -> list[Example]:
    rng = random.Random(config.seed)
    kinds, weights = zip(*config.mix.items())
    out = []
    for _ in range(config.examples):
        kind = rng.choices(kinds, weights)[0]
        twin = config.counterfactual > 0 and rng.random() < config.counterfactual
        out.append(_sample_placed(rng, kind, config.held_out, twin=twin))
    assert not any(config.held_out.scene_held_out(s) for s in scenes(out))
    return out


def _with_twin(e: Example) -> list[tuple[bool, Example]]:
    """(is the twin, example): the example, then its twin if it has one, in document order."""
    return [(False, e), (True, e.twin)] if e.twin is not None else [(False, e)]


def flatten(examples: list[Example]) -> list[Example]:
    """Every example and, right after it, its twin if it has one."""
    return [x for e in examples for _, x in _with_twin(e)]


def scenes(examples: list[Example]) -> list[Scene]:
    return [x.scene for x in flatten(examples)]


def image_url(base_url: str, index: int, twin: bool = False) -> str:
    return f"{base_url.rstrip('/')}/images/{index:06d}{'-twin' if twin else ''}.png"


def _images(examples: list[Example]) -> list[tuple[int, bool, Example]]:
    """(index, is the twin, example) of every image of the corpus, in document order."""
    return [(i, t, x) for i, e in enumerate(examples) for t, x in _with_twin(e)]


def to_documents(examples: list[Example], *, base_url: str = "http://shapes.example") -> list[Document]:
    """One Document per example: the caption's text node, then the image node (its URL keys the image), then
    the same for its twin if it has one."""
    docs = []
    for i, e in enumerate(examples):
        nodes = []
        for twin, x in _with_twin(e):
            nodes += [Node.text_node(x.caption),
                      Node.image_node(image_url(base_url, i, twin), alt_text=x.caption, width=IMAGE_SIZE,
                                      height=IMAGE_SIZE)]
        docs.append(Document(doc_id=f"shapes-{i:06d}", url=f"{base_url}/examples/{i:06d}.html", nodes=nodes))
    return docs


def write_site(directory: str, examples: list[Example], *, per_page: int = 8, size: int = IMAGE_SIZE,
               title: str = "Shapes") -> list[str]:
    """A small web site: index.html linking pages/page-NNNNN.html, each a few paragraphs with the image they
    describe (images/NNNNNN.png). Returns the page paths."""
    from interleaf.htmlsafe import CSP_META

    os.makedirs(os.path.join(directory, "pages"), exist_ok=True)
    os.makedirs(os.path.join(directory, "images"), exist_ok=True)
    pages = []
    for p in range(0, len(examples), per_page):
        body = []
        for i in range(p, min(p + per_page, len(examples))):
            for twin, e in _with_twin(examples[i]):
                name = os.path.basename(image_url("", i, twin))
                render(e.scene, size).save(os.path.join(directory, "images", name))
                cap = html.escape(e.caption)
                label = f"{i}{'b' if twin else ''}"
                body.append(f"<p>Figure {label}: {cap}.</p>\n<img src=\"../images/{name}\" alt=\"{cap}\" "
                            f"width=\"{size}\" height=\"{size}\">")
        name = f"page-{p // per_page:05d}.html"
        page = (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{CSP_META}"
                f"<title>{html.escape(title)}, "
                f"page {p // per_page}</title></head>\n<body><article>\n<h1>{html.escape(title)}: flat shapes "
                f"on white</h1>\n" + "\n".join(body) + "\n</article></body></html>\n")
        path = os.path.join(directory, "pages", name)
        with open(path, "w") as f:
            f.write(page)
        pages.append(path)
    links = "\n".join(f"<li><a href=\"pages/{os.path.basename(p)}\">{os.path.basename(p)}</a></li>" for p in pages)
    with open(os.path.join(directory, "index.html"), "w") as f:
        f.write(f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{CSP_META}"
                f"<title>{html.escape(title)}"
                f"</title></head>\n<body><h1>{html.escape(title)}</h1><ul>\n{links}\n</ul></body></html>\n")
    log.info("wrote a site of %d pages and %d images to %s", len(pages), len(_images(examples)), directory)
    return pages


def tokenize_examples(examples: list[Example], directory: str, *, text, vq, text_path: str, vq_path: str,
                      held_out: HeldOut = DEFAULT_HELD_OUT, shards: int = 1, batch_size: int = 256,
                      base_url: str = "http://shapes.example") -> list[str]:
    """Token shards of the examples through the sequence codec: the caption's BPE ids, then the image block of
    its image tokenizer's codes (`vq`: a tokenizers.image.ImageTokenizer). The shards' config records the tokenizer paths (as the tokenize stage does) and the held-out
    combinations, so `interleaf eval` scores seen and held-out prompts apart.

    The pipeline's tokenize stage does the same for crawled documents; this is its in-process shortcut for a
    corpus generated on the spot."""
    import torch

    from interleaf import __version__
    from interleaf.model.data import write_token_shards
    from interleaf.schemas.tokens import TokenShardInfo
    from interleaf.storage import file_sha256
    from interleaf.tokenizers.codec import SequenceCodec
    from interleaf.tokenizers.image import image_to_tensor

    codec = SequenceCodec.build(text, vq)
    docs = to_documents(examples, base_url=base_url)
    size = vq.image_size
    codes: dict[str, list[int]] = {}
    images = _images(examples)
    for i in range(0, len(images), batch_size):
        batch = images[i:i + batch_size]
        x = torch.stack([image_to_tensor(render(e.scene, size), size) for _, _, e in batch])
        for (k, twin, _), c in zip(batch, vq.encode(x).flatten(1).tolist(), strict=True):
            codes[image_url(base_url, k, twin)] = c
        if (i // batch_size) % 20 == 0:
            log.info("tokenize: %d/%d images encoded", min(i + batch_size, len(images)), len(images))
    rows = [(d.doc_id, codec.encode(d, codes)) for d in docs]
    info = TokenShardInfo(vocabulary=codec.vocab, tokenizers={"text": text.sha256, "image": vq.fingerprint or file_sha256(vq_path)},
                          config={"tokenize": {"text_tokenizer": os.path.abspath(text_path),
                                               "image_tokenizer": os.path.abspath(vq_path)},
                                  "shapes": {"examples": len(examples), "images": len(images),
                                             "held_out": held_out.to_json()}},
                          producer=f"interleaf {__version__} (model.corpus)")
    return write_token_shards(directory, rows, info, shards=shards)
