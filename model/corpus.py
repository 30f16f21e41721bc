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
from dataclasses import dataclass, field

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


@dataclass(kw_only=True)
class CorpusConfig:
    examples: int = 20_000  # captioned scenes
    seed: int = 0  # scene and caption sampling
    held_out: HeldOut = DEFAULT_HELD_OUT  # combinations never shown
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))  # kind -> relative share


def sample_example(rng: random.Random, kind: str, held_out: HeldOut) -> Example:
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
    return Example(template.format(**words), scene, kind)


def _sample_placed(rng: random.Random, kind: str, held_out: HeldOut, tries: int = 20) -> Example:
    """An example of `kind`; a scene whose objects found no room (rarely: four shapes of the largest counting
    size) is drawn again."""
    for _ in range(tries - 1):
        try:
            return sample_example(rng, kind, held_out)
        except ValueError:
            continue
    return sample_example(rng, kind, held_out)


def make_examples(config: CorpusConfig) -> list[Example]:
    rng = random.Random(config.seed)
    kinds, weights = zip(*config.mix.items())
    out = [_sample_placed(rng, rng.choices(kinds, weights)[0], config.held_out) for _ in range(config.examples)]
    assert not any(config.held_out.scene_held_out(e.scene) for e in out)
    return out


def image_url(base_url: str, index: int) -> str:
    return f"{base_url.rstrip('/')}/images/{index:06d}.png"


def to_documents(examples: list[Example], *, base_url: str = "http://shapes.example") -> list[Document]:
    """One Document per example: the caption's text node, then the image node (its URL keys the image)."""
    return [Document(doc_id=f"shapes-{i:06d}", url=f"{base_url}/examples/{i:06d}.html",
                     nodes=[Node.text_node(e.caption),
                            Node.image_node(image_url(base_url, i), alt_text=e.caption, width=IMAGE_SIZE,
                                            height=IMAGE_SIZE)])
            for i, e in enumerate(examples)]


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
            e = examples[i]
            render(e.scene, size).save(os.path.join(directory, "images", f"{i:06d}.png"))
            cap = html.escape(e.caption)
            body.append(f"<p>Figure {i}: {cap}.</p>\n<img src=\"../images/{i:06d}.png\" alt=\"{cap}\" "
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
    log.info("wrote a site of %d pages and %d images to %s", len(pages), len(examples), directory)
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
    for i in range(0, len(examples), batch_size):
        x = torch.stack([image_to_tensor(render(e.scene, size), size) for e in examples[i:i + batch_size]])
        for j, c in enumerate(vq.encode(x).flatten(1).tolist()):
            codes[image_url(base_url, i + j)] = c
        if (i // batch_size) % 20 == 0:
            log.info("tokenize: %d/%d images encoded", min(i + batch_size, len(examples)), len(examples))
    rows = [(d.doc_id, codec.encode(d, codes)) for d in docs]
    info = TokenShardInfo(vocabulary=codec.vocab, tokenizers={"text": text.sha256, "image": vq.fingerprint or file_sha256(vq_path)},
                          config={"tokenize": {"text_tokenizer": os.path.abspath(text_path),
                                               "image_tokenizer": os.path.abspath(vq_path)},
                                  "shapes": {"examples": len(examples), "held_out": held_out.to_json()}},
                          producer=f"interleaf {__version__} (model.corpus)")
    return write_token_shards(directory, rows, info, shards=shards)
