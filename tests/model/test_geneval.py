import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from interleaf.model.corpus import CorpusConfig, make_examples, to_documents, write_site
from interleaf.model.geneval import (
    TASKS,
    detect,
    evaluate,
    ground_truth,
    make_suite,
    read_metadata,
    scene_for,
    score_images,
    write_metadata,
)
from interleaf.shapes import (
    COLORS,
    CONVERSE,
    DEFAULT_HELD_OUT,
    SHAPES,
    HeldOut,
    Scene,
    ShapeObject,
    relative_position,
    render,
)


def test_suite_is_in_genevals_metadata_format(tmp_path):
    suite = make_suite()
    assert {m["tag"] for m in suite} == set(TASKS)
    for m in suite:
        assert set(m) <= {"tag", "include", "exclude", "prompt"} and m["prompt"].startswith("a photo of")
        for r in m["include"]:
            assert set(r) <= {"class", "count", "color", "position"} and r["class"] in SHAPES
    counting = next(m for m in suite if m["tag"] == "counting")
    assert counting["exclude"][0]["count"] == counting["include"][0]["count"] + 1
    position = next(m for m in suite if m["tag"] == "position")
    assert position["include"][1]["position"][1] == 0  # relative to the first include, as GenEval writes it
    write_metadata(tmp_path / "evaluation_metadata.jsonl", suite)
    assert read_metadata(tmp_path / "evaluation_metadata.jsonl") == json.loads(json.dumps(suite))
    held = [m for m in suite if DEFAULT_HELD_OUT.prompt_held_out(m)]
    assert {m["tag"] for m in held} == {"colors", "position", "color_attr"} and 10 <= len(held) < len(suite) // 3


def _wrong(m, rng):
    """The same prompt's typical failure: another shape, a missing object, a wrong count, a wrong colour, the
    converse relation, swapped colours (attribute binding)."""
    m = copy.deepcopy(m)
    inc, tag = m["include"], m["tag"]
    if tag == "single_object":
        inc[0]["class"] = rng.choice([s for s in SHAPES if s != inc[0]["class"]])
    elif tag == "two_object":
        inc[1]["class"] = next(s for s in SHAPES if s not in (inc[0]["class"], inc[1]["class"]))
    elif tag == "counting":
        inc[0]["count"] += -1 if inc[0]["count"] > 2 else 1
    elif tag == "colors":
        inc[0]["color"] = rng.choice([c for c in COLORS if c != inc[0]["color"]])
    elif tag == "position":
        inc[1]["position"][0] = CONVERSE[inc[1]["position"][0]]
    else:
        inc[0]["color"], inc[1]["color"] = inc[1]["color"], inc[0]["color"]
    return m


def test_checker_calibration_one_on_ground_truth_zero_on_wrong_renders():
    suite = make_suite()
    _, truth = score_images(suite, ground_truth(suite, 6, seed=11), DEFAULT_HELD_OUT)
    assert truth.overall == 1.0 and truth.seen == 1.0 and truth.held_out == 1.0 and truth.images == 6 * len(suite)
    # blurred edges, as a VQ round trip leaves them, do not fool the detector
    blurred = [[img.filter(ImageFilter.GaussianBlur(0.5)) for img in row] for row in ground_truth(suite, 2, seed=12)]
    assert score_images(suite, blurred, DEFAULT_HELD_OUT)[1].overall >= 0.95
    rng = random.Random(5)
    wrong = [[render(scene_for(_wrong(m, rng), rng)) for _ in range(3)] for m in suite]
    _, bad = score_images(suite, wrong, DEFAULT_HELD_OUT)
    assert bad.overall == 0.0, bad.tasks
    blank = [[Image.new("RGB", (32, 32), (255, 255, 255))] for _ in suite]
    assert score_images(suite, blank, DEFAULT_HELD_OUT)[1].overall == 0.0
    # noise is no object: neither pixel noise nor coarse 4x4-pixel blotches (what an untrained VQ draws)
    noise_rng = np.random.default_rng(0)
    pixels = [[Image.fromarray(noise_rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))] for _ in suite]
    blotches = [[Image.fromarray(noise_rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((32, 32),
                                                                                                Image.NEAREST)]
                for _ in suite]
    assert score_images(suite, pixels, DEFAULT_HELD_OUT)[1].overall == 0.0
    assert score_images(suite, blotches, DEFAULT_HELD_OUT)[1].overall < 0.15


def test_detector_reads_shape_colour_and_box():
    scene = Scene((ShapeObject(shape="circle", color="red", cx=0.3, cy=0.3, size=0.3),
                   ShapeObject(shape="triangle", color="blue", cx=0.72, cy=0.7, size=0.4)))
    found = detect(render(scene))
    assert [(d.shape, d.color) for d in found] == [("triangle", "blue"), ("circle", "red")]
    assert "left of" in relative_position(found[1].box, found[0].box)
    assert evaluate(render(scene), {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}]})[0]


def test_genevals_position_rule():
    assert relative_position((0, 0, 9, 9), (20, 0, 29, 9)) == {"left of"}
    assert relative_position((0, 20, 9, 29), (0, 0, 9, 9)) == {"below"}
    assert relative_position((0, 0, 9, 9), (1, 1, 10, 10)) == set()  # offsets within 0.1 x sizes: no relation
    assert relative_position((0, 0, 9, 9), (20, 20, 29, 29)) == {"left of", "above"}  # diagonal: both


def test_training_corpus_leaves_held_out_combinations_out(tmp_path):
    examples = make_examples(CorpusConfig(examples=600, seed=2))
    assert not any(DEFAULT_HELD_OUT.scene_held_out(e.scene) for e in examples)
    assert {e.kind for e in examples} == set(TASKS)
    pairs = {(o.color, o.shape) for e in examples for o in e.scene.objects}
    assert len(pairs) == len(COLORS) * len(SHAPES) - len(DEFAULT_HELD_OUT.color_shapes)
    docs = to_documents(examples[:3])
    assert [n.kind for n in docs[0].nodes] == ["text", "image"] and docs[0].nodes[0].text == examples[0].caption
    pages = write_site(str(tmp_path / "site"), examples[:10], per_page=4)
    assert len(pages) == 3 and (tmp_path / "site" / "index.html").exists()
    html = Path(pages[0]).read_text()
    assert html.count("<img ") == 4 and examples[0].caption in html
    img = Image.open(tmp_path / "site" / "images" / "000000.png")
    assert img.size == (32, 32) and img.format == "PNG"


def test_held_out_round_trips_through_json():
    h = HeldOut.from_json(json.loads(json.dumps(DEFAULT_HELD_OUT.to_json())))
    assert h == DEFAULT_HELD_OUT
    assert h.arrangement_held_out("square", "below", "circle")  # the converse of circle above square
    with pytest.raises(KeyError):
        h.arrangement_held_out("square", "near", "circle")
