"""Binding diagnostics for the shapes benchmark (issue 19): does the model use word order, or only which words
a caption holds?

A caption's bag of content words (colours, shapes, counts, relation words) says what is in the picture but not
what goes with what: "a red circle and a blue square" and "a blue circle and a red square" have the same bag,
and so do "a circle above a square" and "a square above a circle". Its meaning (parse) says which colour goes
with which shape and which shape is above which; twins are captions with the same bag and another meaning.

The bag-of-words oracle is the best an order-blind model can do with its training corpus: for each prompt it
shows a training image whose caption has the prompt's bag of words, drawn as often as the corpus has each
meaning of that bag (BagIndex.sample). Where the prompt's meaning is the only one of its bag, it is
right; where the corpus also holds twins, it is right about as often as the prompt's meaning is among them;
on a held-out prompt, whose meaning training never shows, it is wrong by construction. A model that beats it
on the seen prompts that have twins uses word order.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field

from interleaf.shapes import COLORS, CONVERSE, NUMBER_WORDS, SHAPES

log = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z]+|\d+")
_NUMBERS = {**{w: n for n, w in NUMBER_WORDS.items()}, **{str(n): n for n in NUMBER_WORDS}}
_SHAPE = {**{s: s for s in SHAPES}, **{s + "s": s for s in SHAPES}}
# one canonical direction per relation pair: "a below b" is "b above a"
_CANONICAL = {"above": "above", "left of": "left of"}


def content_words(text: str) -> tuple[str, ...]:
    """The caption's bag of content words, sorted: colours, shapes (singular), numbers, relation words."""
    bag = []
    words = _WORD.findall(text.lower())
    for i, w in enumerate(words):
        if w in COLORS or w in _NUMBERS:
            bag.append(str(_NUMBERS.get(w, w)))
        elif w in _SHAPE:
            bag.append(_SHAPE[w])
        elif w in ("above", "below") or (w in ("left", "right") and i + 1 < len(words)
                                         and words[i + 1] == "of"):
            bag.append(w)
    return tuple(sorted(bag))


def meaning(text: str) -> tuple | None:
    """What a caption says, independent of its wording: the sorted objects (count, colour or "", shape) and,
    for a relation, (subject, relation, object) with the relation read one way ("a below b" is "b above a");
    None when no shape is named."""
    words = _WORD.findall(text.lower())
    objects: list[tuple[int, str, str]] = []
    relation: str | None = None
    count, color = 1, ""
    i = 0
    while i < len(words):
        w = words[i]
        if w in _NUMBERS:
            count = _NUMBERS[w]
        elif w in COLORS:
            color = w
        elif w in _SHAPE:
            objects.append((count, color, _SHAPE[w]))
            count, color = 1, ""
        elif w in ("above", "below"):
            relation = w
        elif w in ("left", "right") and i + 1 < len(words) and words[i + 1] == "of":
            relation = f"{w} of"
            i += 1
        i += 1
    if not objects:
        return None
    fact = None
    if relation is not None and len(objects) == 2:
        a, b = objects
        fact = (a, relation, b) if relation in _CANONICAL else (b, CONVERSE[relation], a)
    return tuple(sorted(objects)), fact


@dataclass
class BagIndex:
    """Training captions by bag of content words: per bag, how often each meaning occurs and up to
    `keep` image references of each (the first ones met)."""

    keep: int = 8
    counts: dict[tuple, Counter] = field(default_factory=dict)  # bag -> meaning -> examples
    refs: dict[tuple, dict[tuple, list]] = field(default_factory=dict)  # bag -> meaning -> image refs

    def add(self, caption: str, ref) -> None:
        m = meaning(caption)
        if m is None:
            return
        bag = content_words(caption)
        self.counts.setdefault(bag, Counter())[m] += 1
        refs = self.refs.setdefault(bag, {}).setdefault(m, [])
        if len(refs) < self.keep:
            refs.append(ref)

    def __len__(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def has_twin(self, prompt: str) -> bool:
        """Does the corpus hold a caption with the prompt's words and another meaning?"""
        return any(m != meaning(prompt) for m in self.counts.get(content_words(prompt), ()))

    def sample(self, prompt: str, rng: random.Random):
        """An image reference of a training caption with the prompt's bag of words, its meaning drawn as
        often as the corpus has it; None when the corpus has no such caption."""
        counts = self.counts.get(content_words(prompt))
        if not counts:
            return None
        meanings = sorted(counts)
        chosen = rng.choices(meanings, weights=[counts[m] for m in meanings])[0]
        return rng.choice(self.refs[content_words(prompt)][chosen])


def index_token_shards(path: str, codec, *, keep: int = 8) -> BagIndex:
    """A BagIndex of a token-shard corpus of captioned images: every image (rows x cols codes, the
    reference) with the text right before it as its caption (the shapes corpus: one caption, one image per
    document; the demo's crawled pages: a <p> caption before each <img>). Images with no text before them
    are counted in the log."""
    from interleaf.model.data import TokenCorpus

    corpus = TokenCorpus(path, quiet=True)
    index, uncaptioned = BagIndex(keep=keep), 0
    for i in range(len(corpus)):
        caption = None
        for kind, value in codec.decode(corpus.document(i).tolist(), strict=False):
            if kind == "text":
                caption = value
            elif caption is None:
                uncaptioned += 1
            else:
                index.add(caption, value)
                caption = None
    log.info("binding: %d training captions indexed by their bag of words (%d bags); %d images without a "
             "text before them skipped", len(index), len(index.counts), uncaptioned)
    return index


def split_seen(suite: list[dict], held: list[bool], index: BagIndex) -> list[str]:
    """Per prompt: "held_out", "seen_twin" (seen, and the corpus has a same-words twin with another meaning)
    or "seen_alone"."""
    return ["held_out" if h else "seen_twin" if index.has_twin(m["prompt"]) else "seen_alone"
            for m, h in zip(suite, held, strict=True)]


def by_group(rows: list[dict], groups: list[str], samples: int) -> dict[str, float | None]:
    """Fraction correct per group of result rows (rows are `samples` per prompt, in suite order)."""
    hits: dict[str, list[bool]] = {"held_out": [], "seen_twin": [], "seen_alone": []}
    for k, row in enumerate(rows):
        hits[groups[k // samples]].append(row["correct"])
    return {g: (sum(v) / len(v) if v else None) for g, v in hits.items()}


def report(suite: list[dict], rows: list[dict], index: BagIndex, held_out, decode, *, samples: int,
           image_size: int, seed: int = 0) -> dict:
    """scores.json's "binding" entry: the model's result rows and the bag-of-words oracle's, split into
    held-out prompts, seen prompts with a same-words twin in the corpus and seen prompts without; whether the
    model beats the oracle. `decode` turns a list of image references (code grids) into images."""
    from PIL import Image

    from interleaf.model.geneval import score_images

    rng = random.Random(seed)
    refs = [[index.sample(m["prompt"], rng) for _ in range(samples)] for m in suite]
    found = [r for row in refs for r in row if r is not None]
    decoded = iter(decode(found) if found else [])
    blank = Image.new("RGB", (image_size, image_size), "white")  # no caption with these words: no answer
    images = [[next(decoded) if r is not None else blank for r in row] for row in refs]
    oracle_rows, oracle = score_images(suite, images, held_out)
    groups = split_seen(suite, [held_out.prompt_held_out(m) for m in suite], index)
    model_groups, oracle_groups = by_group(rows, groups, samples), by_group(oracle_rows, groups, samples)
    model_overall = _overall(rows)

    def beats(a, b):
        return None if a is None or b is None else a > b

    return {"training_captions": len(index), "prompts": dict(Counter(groups)),
            "prompts_without_training_caption": sum(all(r is None for r in row) for row in refs),
            "model": {"overall": model_overall, **model_groups},
            "oracle": {"overall": oracle.overall, "tasks": oracle.tasks, **oracle_groups},
            "model_beats_oracle": {"overall": beats(model_overall, oracle.overall),
                                   "seen_twin": beats(model_groups["seen_twin"], oracle_groups["seen_twin"]),
                                   "held_out": beats(model_groups["held_out"], oracle_groups["held_out"])}}


def _overall(rows: list[dict]) -> float:
    """GenEval's overall (mean of the task scores) of result rows."""
    from interleaf.model.geneval import summarize
    return summarize(rows).overall
