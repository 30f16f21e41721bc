"""Synthetic scenes of coloured shapes with captions: the data the tiny models (CLIP, VQ, reference
transformer) train on without downloads, and the ground truth of the compositional benchmark. The world's
layout (where objects go, how relative positions read) and its held-out split live here too, so that the
training corpus, the benchmark, the CLIP trainer and the demo share one definition (and filters/ need not
import model/).

A scene is a few flat-coloured shapes (circle, square, triangle) on a white background. Colours are far
apart in RGB so a rule-based checker can classify pixels by nearest palette colour; shapes are drawn
without antialiasing so their pixels stay pure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
# Palette: mutually distant in RGB (at least 122 apart; blue-purple is the closest pair) and far from white.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 170),
    "black": (20, 20, 20),
}
BACKGROUND = (255, 255, 255)
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}


@dataclass(frozen=True, kw_only=True)
class ShapeObject:
    shape: str  # one of SHAPES
    color: str  # a key of COLORS
    cx: float  # centre, as a fraction of the image width (0 left .. 1 right)
    cy: float  # centre, as a fraction of the image height (0 top .. 1 bottom)
    size: float  # side (or diameter) as a fraction of the image side


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]


def render(scene: Scene, size: int = 32) -> Image.Image:
    """The scene as an RGB image of size x size pixels, flat colours, no antialiasing."""
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        half = o.size * size / 2
        x, y = o.cx * size, o.cy * size
        box = [round(x - half), round(y - half), round(x + half) - 1, round(y + half) - 1]
        fill = COLORS[o.color]
        if o.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif o.shape == "square":
            draw.rectangle(box, fill=fill)
        elif o.shape == "triangle":
            draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) / 2, box[1])], fill=fill)
        else:
            raise ValueError(f"unknown shape {o.shape!r}; expected one of {SHAPES}")
    return img


_SINGLE_TEMPLATES = ("a {color} {shape}", "a photo of a {color} {shape}", "one {color} {shape} on white",
                     "an image showing a {color} {shape}")


def describe(obj: ShapeObject) -> str:
    return f"{obj.color} {obj.shape}"


def caption(scene: Scene, template: int = 0) -> str:
    """A caption naming every object; with two objects, their relative position as well."""
    objs = scene.objects
    if len(objs) == 1:
        t = _SINGLE_TEMPLATES[template % len(_SINGLE_TEMPLATES)]
        return t.format(color=objs[0].color, shape=objs[0].shape)
    if len(objs) == 2:
        a, b = objs
        rel = relation(a, b)
        if rel and template % 2 == 0:
            return f"a {describe(a)} {rel} a {describe(b)}"
        return f"a {describe(a)} and a {describe(b)}"
    return "shapes: " + ", ".join(describe(o) for o in objs)


def relation(a: ShapeObject, b: ShapeObject) -> str | None:
    """Where a is relative to b, by the dominant axis of the centre offset (GenEval's rule), or None when
    the centres are too close to tell."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if max(abs(dx), abs(dy)) < 0.15:
        return None
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def random_object(rng: random.Random, *, shape: str | None = None, color: str | None = None,
                  size_range: tuple[float, float] = (0.35, 0.5)) -> ShapeObject:
    size = rng.uniform(*size_range)
    margin = size / 2 + 0.02
    return ShapeObject(shape=shape or rng.choice(SHAPES), color=color or rng.choice(list(COLORS)),
                       cx=rng.uniform(margin, 1 - margin), cy=rng.uniform(margin, 1 - margin), size=size)


def random_scene(rng: random.Random, n_objects: int = 1) -> Scene:
    """n non-overlapping objects (retrying placements); distinct colour-shape pairs."""
    for _ in range(200):
        objs: list[ShapeObject] = []
        size_range = (0.35, 0.5) if n_objects == 1 else (0.22, 0.3)
        for _ in range(n_objects):
            o = random_object(rng, size_range=size_range)
            if any(abs(o.cx - p.cx) < (o.size + p.size) / 2 + 0.04 and abs(o.cy - p.cy) < (o.size + p.size) / 2
                   + 0.04 for p in objs) or any((o.shape, o.color) == (p.shape, p.color) for p in objs):
                break
            objs.append(o)
        if len(objs) == n_objects:
            return Scene(tuple(objs))
    raise ValueError(f"could not place {n_objects} objects without overlap")


# ---------------------------------------------------------------- the world's layout and held-out split
# Shared by the training corpus (model/corpus.py), the benchmark (model/geneval.py), the CLIP trainer and the
# demo: where objects go, how their relative positions read, and which combinations training never shows.

RELATIONS = ("left of", "right of", "above", "below")
CONVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
POSITION_THRESHOLD = 0.1  # GenEval's default: box-centre offsets are shrunk by 0.1 x (summed box sizes)
IMAGE_SIZE = 32  # the tiny VQ's image side


def with_article(word: str) -> str:
    """The word with its indefinite article: "a circle", "an orange"."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def relative_position(box_a, box_b) -> set[str]:
    """Where a is relative to b under GenEval's rule (boxes x0, y0, x1, y1; image y grows downwards)."""
    a, b = np.asarray(box_a, dtype=float), np.asarray(box_b, dtype=float)
    centre_a, centre_b = (a[:2] + a[2:]) / 2, (b[:2] + b[2:]) / 2
    size_a, size_b = np.abs(a[2:] - a[:2]), np.abs(b[2:] - b[:2])
    offset = centre_a - centre_b
    shrunk = np.maximum(np.abs(offset) - POSITION_THRESHOLD * (size_a + size_b), 0) * np.sign(offset)
    if np.all(np.abs(shrunk) < 1e-3):
        return set()
    dx, dy = shrunk / np.linalg.norm(offset)
    out = set()
    if dx < -0.5:
        out.add("left of")
    if dx > 0.5:
        out.add("right of")
    if dy < -0.5:
        out.add("above")
    if dy > 0.5:
        out.add("below")
    return out


def object_box(o: ShapeObject, size: int = IMAGE_SIZE) -> tuple[int, int, int, int]:
    """The pixel box shapes.render draws the object in."""
    half, x, y = o.size * size / 2, o.cx * size, o.cy * size
    return round(x - half), round(y - half), round(x + half) - 1, round(y + half) - 1


def place(rng: random.Random, specs: list[tuple[str, str]], *, size_range: tuple[float, float],
          gap: float = 0.08, accept=None, tries: int = 500) -> Scene:
    """Objects of the given (shape, color) at random non-overlapping places, `gap` apart (a fraction of the
    image side; 0.08 = 2.5 px at 32, so blurred reconstructions do not merge neighbours), optionally until
    `accept(scene)` holds."""
    for _ in range(tries):
        objs: list[ShapeObject] = []
        for shape, color in specs:
            s = rng.uniform(*size_range)
            m = s / 2 + 0.03
            o = ShapeObject(shape=shape, color=color, cx=rng.uniform(m, 1 - m), cy=rng.uniform(m, 1 - m), size=s)
            if any(abs(o.cx - p.cx) < (o.size + p.size) / 2 + gap and abs(o.cy - p.cy) < (o.size + p.size) / 2 + gap
                   for p in objs):
                break
            objs.append(o)
        if len(objs) == len(specs):
            scene = Scene(tuple(objs))
            if accept is None or accept(scene):
                return scene
    raise ValueError(f"could not place {specs} in {tries} tries")


SINGLE_SIZE = (0.35, 0.5)
PAIR_SIZE = (0.25, 0.32)
COUNT_SIZE = (0.2, 0.25)


def allowed_colors(shape: str, held_out: HeldOut | None) -> list[str]:
    return [c for c in COLORS if held_out is None or not held_out.pair_held_out(c, shape)]


@dataclass(frozen=True, kw_only=True)
class HeldOut:
    """Combinations the training corpus never shows; prompts asking for one are scored as held-out."""

    color_shapes: frozenset = frozenset()  # (color, shape) pairs never drawn
    arrangements: frozenset = frozenset()  # (shape_a, relation, shape_b): a never shown `relation` b

    def pair_held_out(self, color: str | None, shape: str) -> bool:
        return color is not None and (color, shape) in self.color_shapes

    def arrangement_held_out(self, a: str, relation: str, b: str) -> bool:
        return (a, relation, b) in self.arrangements or (b, CONVERSE[relation], a) in self.arrangements

    def scene_held_out(self, scene: Scene) -> bool:
        """Does a (training) scene show a held-out pair or arrangement?"""
        if any(self.pair_held_out(o.color, o.shape) for o in scene.objects):
            return True
        for a in scene.objects:
            for b in scene.objects:
                if a is not b and any(self.arrangement_held_out(a.shape, r, b.shape)
                                      for r in relative_position(object_box(a), object_box(b))):
                    return True
        return False

    def prompt_held_out(self, metadata: dict) -> bool:
        include = metadata["include"]
        if any(self.pair_held_out(r.get("color"), r["class"]) for r in include):
            return True
        for r in include:
            if "position" in r:
                relation, target = r["position"]
                if self.arrangement_held_out(r["class"], relation, include[target]["class"]):
                    return True
        return False

    def to_json(self) -> dict:
        return {"color_shapes": sorted(map(list, self.color_shapes)),
                "arrangements": sorted(map(list, self.arrangements))}

    @classmethod
    def from_json(cls, d: dict) -> HeldOut:
        return cls(color_shapes=frozenset(map(tuple, d.get("color_shapes", []))),
                   arrangements=frozenset(map(tuple, d.get("arrangements", []))))


# Each colour keeps 4-5 of its 6 shapes pairings... and each shape 5 of its 6 colours, so every word is seen.
DEFAULT_HELD_OUT = HeldOut(
    color_shapes=frozenset({("red", "triangle"), ("blue", "circle"), ("yellow", "square")}),
    arrangements=frozenset({("circle", "above", "square"), ("triangle", "left of", "circle")}),
)
