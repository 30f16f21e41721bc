"""A synthetic analogue of GenEval (Ghosh et al. 2023, github.com/djghosh13/geneval) that runs on the CPU.

GenEval asks a text-to-image model for prompts of six kinds and checks each image with an object detector
and a CLIP colour classifier. Here the objects are the flat-coloured shapes of interleaf.shapes (circle, square,
triangle; the palette's colours), so the detector is a rule: every pixel takes the nearest palette colour
(or the white background), each colour's 4-connected components are objects, and an object's shape follows
from its bounding box: how much of the box it fills (square ~1, circle ~pi/4, triangle ~1/2) and how its area
splits between the box's top and bottom halves (a triangle, apex up, has about a third as much above the middle
as below it; circles and squares are balanced), which keeps triangles apart from the rounded shapes a VQ
reconstruction blurs them into. The scoring logic is
GenEval's own (evaluation/evaluate_images.py): `include` clauses must all hold, checked on the largest objects
of a class; any `exclude` clause fails an image; relative positions use its rule (the offset of the box
centres, shrunk by 0.1 of the summed box sizes, must point mostly along the named direction).

Prompts are written in GenEval's metadata format (one JSON object per line of evaluation_metadata.jsonl:
tag, include [{class, count, color?, position?}], exclude?, prompt) with its six tags: single_object,
two_object, counting, colors, position, color_attr. Images are written in its folder layout
(NNNNN/metadata.jsonl, NNNNN/samples/MMMM.png) and results as its results.jsonl; the overall score is the mean
of the task scores, as in its summary_scores.py.

Some combinations are held out of training (see HeldOut): colour-shape pairs never drawn, and shape-relation-
shape arrangements never shown. Prompts that ask for one are scored apart as "held_out".
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from interleaf.shapes import (
    BACKGROUND,
    COLORS,
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

TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


# Detector thresholds, calibrated on renders of 6 to 16 pixel shapes and on their round trips through the
# recipe's tiny VQ (27 dB): renders fill their box 1.0 (square), 0.71-0.81 (circle), 0.50-0.58 (triangle),
# reconstructions 0.81-1.0 (square, 5th percentile 0.86) and 0.61-0.86 (circle, 95th percentile 0.80).
# A triangle's top/bottom area balance is 0.29-0.43 rendered, 0.0-0.67 reconstructed (95th percentile 0.54);
# a circle's or square's is 1.0 rendered and 0.55-1.62 reconstructed (5th percentile 0.77).
SQUARE_MIN_FILL = 0.84
TRIANGLE_MAX_BALANCE = 0.65
# What a detector's confidence threshold does for GenEval: blobs that look like no shape are not objects.
MIN_FILL = 0.4  # sparser components are scribbles
MAX_ASPECT = 1.6  # box width / height (or height / width) beyond this is no shape of ours
MIN_AREA_FRACTION = 0.008  # components smaller than this share of the image (8 px at 32x32) are noise
# Palette colours and white are at least 122 apart in RGB (blue-purple); a pixel farther than 75 from all of
# them is a blend (a blurred edge) or noise and belongs to no object.
MAX_COLOR_DISTANCE = 75.0


# ---------------------------------------------------------------- prompts in GenEval's format

def _plural(shape: str) -> str:
    return shape + "s"


def prompt_single(shape: str) -> dict:
    return {"tag": "single_object", "include": [{"class": shape, "count": 1}], "prompt": f"a photo of {with_article(shape)}"}


def prompt_two(a: str, b: str) -> dict:
    return {"tag": "two_object", "include": [{"class": a, "count": 1}, {"class": b, "count": 1}],
            "prompt": f"a photo of {with_article(a)} and {with_article(b)}"}


def prompt_counting(shape: str, n: int) -> dict:
    return {"tag": "counting", "include": [{"class": shape, "count": n}],
            "exclude": [{"class": shape, "count": n + 1}],
            "prompt": f"a photo of {NUMBER_WORDS[n]} {_plural(shape)}"}


def prompt_color(color: str, shape: str) -> dict:
    return {"tag": "colors", "include": [{"class": shape, "count": 1, "color": color}],
            "prompt": f"a photo of {with_article(color)} {shape}"}


def prompt_position(a: str, relation: str, b: str) -> dict:
    """`a` `relation` `b`: GenEval lists the target b first and a with ("relation", 0)."""
    return {"tag": "position", "include": [{"class": b, "count": 1},
                                           {"class": a, "count": 1, "position": [relation, 0]}],
            "prompt": f"a photo of {with_article(a)} {relation} {with_article(b)}"}


def prompt_color_attr(ca: str, a: str, cb: str, b: str) -> dict:
    return {"tag": "color_attr", "include": [{"class": a, "count": 1, "color": ca},
                                             {"class": b, "count": 1, "color": cb}],
            "prompt": f"a photo of {with_article(ca)} {a} and {with_article(cb)} {b}"}


def make_suite(*, seed: int = 0, color_attr: int = 30, held_out: HeldOut = DEFAULT_HELD_OUT) -> list[dict]:
    """The benchmark's prompts: every single-object, two-object, counting (2-4), colour and position prompt
    there is (3 + 6 + 9 + 18 + 24), and `color_attr` colour-attribution prompts sampled with a third of them
    held out (there are 180)."""
    rng = random.Random(seed)
    pairs = [(a, b) for a in SHAPES for b in SHAPES if a != b]
    suite = [prompt_single(s) for s in SHAPES]
    suite += [prompt_two(a, b) for a, b in pairs]
    suite += [prompt_counting(s, n) for s in SHAPES for n in (2, 3, 4)]
    suite += [prompt_color(c, s) for s in SHAPES for c in COLORS]
    suite += [prompt_position(a, r, b) for a, b in pairs for r in RELATIONS]
    attrs = [prompt_color_attr(ca, a, cb, b) for a, b in pairs for ca in COLORS for cb in COLORS if ca != cb]
    rng.shuffle(attrs)
    held = [m for m in attrs if held_out.prompt_held_out(m)]
    seen = [m for m in attrs if not held_out.prompt_held_out(m)]
    n_held = min(len(held), color_attr // 3)
    suite += held[:n_held] + seen[:color_attr - n_held]
    return suite


def write_metadata(path: str, suite: list[dict]) -> None:
    """evaluation_metadata.jsonl: one GenEval metadata object per line."""
    with open(path, "w") as f:
        f.writelines(json.dumps(m) + "\n" for m in suite)


def read_metadata(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- the detector

@dataclass(frozen=True)
class Detection:
    shape: str  # the class: one of SHAPES
    color: str  # a palette colour name
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, inclusive
    area: int  # pixels
    fill: float  # area / box area


def pixel_classes(image: Image.Image) -> np.ndarray:
    """(H, W) palette index of each pixel's nearest colour (order of COLORS), -1 for the white background, -2
    for a pixel near no palette colour (farther than MAX_COLOR_DISTANCE)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    palette = np.array([BACKGROUND, *COLORS.values()], dtype=np.float32)  # (1 + K, 3)
    dist = ((rgb[:, :, None, :] - palette[None, None]) ** 2).sum(-1)  # (H, W, 1 + K)
    classes = dist.argmin(-1) - 1
    classes[dist.min(-1) > MAX_COLOR_DISTANCE ** 2] = -2
    return classes


def shape_of(fill: float, balance: float) -> str:
    """The class of a component from its box fill and its top/bottom area balance."""
    if balance < TRIANGLE_MAX_BALANCE:
        return "triangle"
    return "square" if fill >= SQUARE_MIN_FILL else "circle"


def detect(image: Image.Image) -> list[Detection]:
    """The objects of an image, largest first (GenEval checks the most confident detections first)."""
    classes = pixel_classes(image)
    min_area = max(1, round(MIN_AREA_FRACTION * classes.size))
    names = list(COLORS)
    found = []
    for k, color in enumerate(names):
        labels, _ = ndimage.label(classes == k)  # 4-connected components
        for i, sl in enumerate(ndimage.find_objects(labels), start=1):
            mask = labels[sl] == i  # (h, w) the component within its box
            area = int(mask.sum())
            if area < min_area:
                continue
            ys, xs = sl
            h, w = mask.shape
            fill = area / (h * w)
            if fill < MIN_FILL or max(h / w, w / h) > MAX_ASPECT:
                continue
            balance = mask[:h // 2].sum() / max(1, mask[h - h // 2:].sum())  # top half / bottom half
            found.append(Detection(shape_of(fill, balance), color, (xs.start, ys.start, xs.stop - 1, ys.stop - 1),
                                   area, fill))
    return sorted(found, key=lambda d: -d.area)


def evaluate(image: Image.Image, metadata: dict) -> tuple[bool, str]:
    """GenEval's verdict on one image: (correct, reasons). Includes are ANDed, excludes ORed; colour and
    position are checked on the largest `count` objects of the class."""
    objects: dict[str, list[Detection]] = {}
    for d in detect(image):
        objects.setdefault(d.shape, []).append(d)
    correct, reasons, matched = True, [], []
    for req in metadata.get("include", []):
        cls, count = req["class"], req["count"]
        found = objects.get(cls, [])[:count]
        ok = len(found) >= count
        if not ok:
            reasons.append(f"expected {cls}>={count}, found {len(found)}")
        if ok and "color" in req:
            colors = [d.color for d in found]
            if colors.count(req["color"]) < count:
                ok = False
                reasons.append(f"expected {req['color']} {cls}>={count}, found {', '.join(colors)}")
        if ok and "position" in req:
            relation, target = req["position"]
            if matched[target] is None:
                ok = False
                reasons.append(f"no target for {cls} to be {relation}")
            else:
                for d in found:
                    for t in matched[target]:
                        rel = relative_position(d.box, t.box)
                        if relation not in rel:
                            ok = False
                            reasons.append(f"expected {cls} {relation} target, found {' and '.join(rel) or 'none'}")
                            break
                    if not ok:
                        break
        correct &= ok
        matched.append(found if ok else None)
    for req in metadata.get("exclude", []):
        n = len(objects.get(req["class"], []))
        if n >= req["count"]:
            correct = False
            reasons.append(f"expected {req['class']}<{req['count']}, found {n}")
    return correct, "\n".join(reasons)


# ---------------------------------------------------------------- scenes that satisfy a prompt

def scene_for(metadata: dict, rng: random.Random, *, held_out: HeldOut | None = None) -> Scene:
    """A scene that satisfies a prompt. Unspecified colours are drawn at random (never a held-out pair when
    `held_out` is given, nor two identical colour-shape objects unless counting)."""
    include = metadata["include"]
    tag = metadata["tag"]

    def color_for(req):
        return req.get("color") or rng.choice(allowed_colors(req["class"], held_out))

    if tag == "counting":
        req = include[0]
        color = color_for(req)
        return place(rng, [(req["class"], color)] * req["count"], size_range=COUNT_SIZE)
    if len(include) == 1:
        return place(rng, [(include[0]["class"], color_for(include[0]))], size_range=SINGLE_SIZE)
    specs = [(r["class"], color_for(r)) for r in include]
    accept = None
    if tag == "position":
        relation = include[1]["position"][0]

        def accept(scene):
            target, subject = scene.objects
            return relative_position(object_box(subject), object_box(target)) == {relation}
    elif held_out is not None:
        def accept(scene):
            return not held_out.scene_held_out(scene)
    return place(rng, specs, size_range=PAIR_SIZE, accept=accept)


# ---------------------------------------------------------------- scoring a set of images

@dataclass
class Scores:
    tasks: dict[str, float] = field(default_factory=dict)  # tag -> fraction of correct images
    overall: float = 0.0  # mean of the task scores (GenEval's overall)
    seen: float | None = None  # fraction correct over images of prompts with no held-out combination
    held_out: float | None = None  # ... of prompts asking for a held-out combination
    images: int = 0
    prompts: int = 0

    def to_json(self) -> dict:
        return {"overall": self.overall, "tasks": self.tasks, "seen": self.seen, "held_out": self.held_out,
                "images": self.images, "prompts": self.prompts}


def summarize(results: list[dict]) -> Scores:
    """Scores of result rows ({tag, correct, held_out, metadata})."""
    by_tag: dict[str, list[bool]] = {}
    split: dict[bool, list[bool]] = {True: [], False: []}
    for r in results:
        by_tag.setdefault(r["tag"], []).append(r["correct"])
        split[r["held_out"]].append(r["correct"])
    tasks = {t: float(np.mean(by_tag[t])) for t in TASKS if t in by_tag}
    return Scores(tasks=tasks, overall=float(np.mean(list(tasks.values()))) if tasks else 0.0,
                  seen=float(np.mean(split[False])) if split[False] else None,
                  held_out=float(np.mean(split[True])) if split[True] else None, images=len(results),
                  prompts=len({r["metadata"] for r in results}))


def score_images(suite: list[dict], images: list[list[Image.Image]], held_out: HeldOut,
                 filenames: list[list[str]] | None = None) -> tuple[list[dict], Scores]:
    """Check images[i][j] (sample j of prompt i) against suite[i]; result rows as GenEval's results.jsonl."""
    rows = []
    for i, (metadata, samples) in enumerate(zip(suite, images)):
        h = held_out.prompt_held_out(metadata)
        for j, img in enumerate(samples):
            ok, reason = evaluate(img, metadata)
            rows.append({"filename": filenames[i][j] if filenames else f"{i:05d}/samples/{j:04d}.png",
                         "tag": metadata["tag"], "prompt": metadata["prompt"], "correct": ok, "reason": reason,
                         "metadata": json.dumps(metadata), "held_out": h})
    return rows, summarize(rows)


def ground_truth(suite: list[dict], samples: int, *, seed: int = 0, size: int = IMAGE_SIZE) -> list[list[Image.Image]]:
    """`samples` rendered scenes per prompt that satisfy it (the checker's calibration set)."""
    rng = random.Random(seed)
    return [[render(scene_for(m, rng), size) for _ in range(samples)] for m in suite]


def write_geneval_folder(out: str, suite: list[dict], images: list[list[Image.Image]]) -> list[list[str]]:
    """GenEval's layout: out/NNNNN/metadata.jsonl and out/NNNNN/samples/MMMM.png. Returns the file names."""
    names = []
    for i, (metadata, samples) in enumerate(zip(suite, images)):
        folder = os.path.join(out, f"{i:05d}")
        os.makedirs(os.path.join(folder, "samples"), exist_ok=True)
        with open(os.path.join(folder, "metadata.jsonl"), "w") as f:
            json.dump(metadata, f)
        row = []
        for j, img in enumerate(samples):
            rel = os.path.join(f"{i:05d}", "samples", f"{j:04d}.png")
            img.save(os.path.join(out, rel))
            row.append(rel)
        names.append(row)
    return names


# ---------------------------------------------------------------- evaluating a checkpoint

def vq_reconstructions(vq, images: list[list[Image.Image]], *, batch_size: int = 256) -> list[list[Image.Image]]:
    """The images after a round trip through the image tokenizer (`vq`: a tokenizers.image.ImageTokenizer;
    encode, decode): what a perfect generator could show."""
    import torch

    from interleaf.tokenizers.image import image_to_tensor, tensor_to_image
    size = vq.image_size
    flat = [img for row in images for img in row]
    out = []
    for i in range(0, len(flat), batch_size):
        x = torch.stack([image_to_tensor(img, size) for img in flat[i:i + batch_size]])
        out += [tensor_to_image(t) for t in vq.decode(vq.encode(x))]
    it = iter(out)
    return [[next(it) for _ in row] for row in images]


def run_eval(generator, out: str, *, suite: list[dict] | None = None, samples: int = 4, config=None,
             held_out: HeldOut = DEFAULT_HELD_OUT, batch_prompts: int = 16, ceiling: bool = True,
             binding=None) -> dict:
    """Generate `samples` images per prompt with a Generator, check them, and write GenEval's files:
    out/evaluation_metadata.jsonl, out/images/NNNNN/{metadata.jsonl,samples/*.png}, out/results.jsonl, and
    out/scores.json (task scores, overall, seen vs held-out; with the VQ, the checker on ground-truth renders
    and on their VQ reconstructions, the ceiling; with `binding`, a model/binding.BagIndex of the training
    corpus, the binding diagnostics: the bag-of-words oracle and the seen prompts split by twins). Returns
    the scores.json content."""
    import time
    from dataclasses import asdict

    import torch

    from interleaf.model.generate import GenerationConfig

    config = config or GenerationConfig()
    suite = suite if suite is not None else make_suite(held_out=held_out)
    os.makedirs(out, exist_ok=True)
    write_metadata(os.path.join(out, "evaluation_metadata.jsonl"), suite)
    grid = next(t for t, g in generator.grids.items() if tuple(g) == tuple(generator.vocab.image_grid))
    rng = torch.Generator().manual_seed(config.seed)
    images: list[list[Image.Image]] = []
    started = time.perf_counter()
    for i in range(0, len(suite), batch_prompts):
        chunk = suite[i:i + batch_prompts]
        contexts = [generator.prompt(m["prompt"], open_image=True) + [grid] for m in chunk for _ in range(samples)]
        decoded = generator.decode_images(generator.image_codes(contexts, config, rng))
        images += [decoded[j * samples:(j + 1) * samples] for j in range(len(chunk))]
        log.info("eval: %d/%d prompts generated (%.0fs)", len(images), len(suite), time.perf_counter() - started)
    seconds = time.perf_counter() - started
    names = write_geneval_folder(os.path.join(out, "images"), suite, images)
    rows, scores = score_images(suite, images, held_out, [[os.path.join("images", n) for n in r] for r in names])
    with open(os.path.join(out, "results.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    result = {**scores.to_json(), "samples_per_prompt": samples, "generation": asdict(config),
              "held_out_combinations": held_out.to_json(), "generation_seconds": seconds,
              "seconds_per_image": seconds / max(1, scores.images)}
    if ceiling and generator.vq is not None:
        truth = ground_truth(suite, samples, seed=config.seed + 1, size=generator.vq.image_size)
        result["checker_on_ground_truth"] = score_images(suite, truth, held_out)[1].to_json()
        result["ceiling_vq_reconstructions"] = score_images(suite, vq_reconstructions(generator.vq, truth),
                                                            held_out)[1].to_json()
    if binding is not None:
        from interleaf.model.binding import report

        def decode(codes: list) -> list[Image.Image]:
            return [img for i in range(0, len(codes), 256)
                    for img in generator.decode_images(torch.tensor(codes[i:i + 256]))]
        result["binding"] = b = report(suite, rows, binding, held_out, decode, samples=samples,
                                       image_size=generator.vq.image_size, seed=config.seed + 2)
        log.info("eval: bag-of-words oracle overall %.3f (seen with a same-words twin %s, without %s, "
                 "held-out %s); the model %s (%s, %s, %s)", b["oracle"]["overall"],
                 _fmt(b["oracle"]["seen_twin"]),
                 _fmt(b["oracle"]["seen_alone"]), _fmt(b["oracle"]["held_out"]),
                 "beats it" if b["model_beats_oracle"]["overall"] else "does not beat it",
                 _fmt(b["model"]["seen_twin"]), _fmt(b["model"]["seen_alone"]), _fmt(b["model"]["held_out"]))
    with open(os.path.join(out, "scores.json"), "w") as f:
        json.dump(result, f, indent=2)
    log.info("eval: overall %.3f (seen %s, held-out %s) over %d images; %s", scores.overall,
             _fmt(scores.seen), _fmt(scores.held_out), scores.images,
             ", ".join(f"{t} {v:.2f}" for t, v in scores.tasks.items()))
    return result


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
