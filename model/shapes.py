"""Synthetic scenes of coloured shapes with captions: the data the tiny models (CLIP, VQ, reference
transformer) train on without downloads, and the ground truth of the compositional benchmark.

A scene is a few flat-coloured shapes (circle, square, triangle) on a white background. Colours are far
apart in RGB so a rule-based checker can classify pixels by nearest palette colour; shapes are drawn
without antialiasing so their pixels stay pure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

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
