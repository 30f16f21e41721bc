"""Binding diagnostics (model/binding.py, issue 19 item 1): captions read as bags of words and as meanings,
the bag-of-words oracle built from a real training corpus of the shapes benchmark, and the seen prompts split
by whether the corpus holds a same-words twin with another meaning."""

import random

import pytest

from interleaf.model.binding import BagIndex, content_words, meaning, report
from interleaf.model.corpus import CorpusConfig, make_examples
from interleaf.model.geneval import ground_truth, make_suite, score_images
from interleaf.shapes import DEFAULT_HELD_OUT, IMAGE_SIZE, render


@pytest.mark.parametrize("a, b, same_words, same_meaning", [
    ("a photo of a red circle and a blue square", "a blue circle and a red square", True, False),
    ("a photo of a red circle and a blue square", "an image of a blue square and a red circle", True, True),
    ("a photo of a circle above a square", "a square above a circle", True, False),
    ("a photo of a circle above a square", "a square below a circle", False, True),
    ("a photo of a circle left of a square", "a photo of a square right of a circle", False, True),
    ("a photo of a circle left of a square", "a photo of a square left of a circle", True, False),
    ("a photo of three circles", "there are three circles", True, True),
    ("a photo of three circles", "a photo of two circles", False, False),
    ("a photo of a circle and a square", "a square and a circle", True, True),
])
def test_words_and_meanings(a, b, same_words, same_meaning):
    assert (content_words(a) == content_words(b)) is same_words
    assert (meaning(a) == meaning(b)) is same_meaning


def test_no_shape_no_meaning():
    assert meaning("a photo of nothing at all") is None
    index = BagIndex()
    index.add("a photo of nothing at all", "ref")
    assert len(index) == 0


@pytest.fixture(scope="module")
def corpus_index():
    examples = make_examples(CorpusConfig(examples=4000, seed=3))
    index = BagIndex()
    for e in examples:
        index.add(e.caption, e.scene)
    return index


def test_twins_are_found_in_the_corpus(corpus_index):
    suite = make_suite()
    position = [m for m in suite if m["tag"] == "position" and not DEFAULT_HELD_OUT.prompt_held_out(m)]
    # every seen position prompt has its mirror in training ("a square above a circle" for "a circle above a
    # square") unless the mirror is held out; single objects and counts have no twin
    assert sum(corpus_index.has_twin(m["prompt"]) for m in position) >= len(position) // 2
    assert not any(corpus_index.has_twin(m["prompt"]) for m in suite
                   if m["tag"] in ("single_object", "counting"))


def test_the_oracle_scores_zero_on_held_out_and_a_perfect_model_beats_it(corpus_index):
    suite = make_suite()
    samples = 2
    renders = ground_truth(suite, samples, seed=5)  # a perfect model: the checker is right on every render
    perfect_rows, _ = score_images(suite, renders, DEFAULT_HELD_OUT)

    def decode(scenes):
        return [render(s, IMAGE_SIZE) for s in scenes]

    result = report(suite, perfect_rows, corpus_index, DEFAULT_HELD_OUT, decode, samples=samples,
                    image_size=IMAGE_SIZE, seed=0)
    oracle, model = result["oracle"], result["model"]
    assert result["training_captions"] == 4000
    assert set(result["prompts"]) == {"held_out", "seen_twin", "seen_alone"}
    # by construction: a held-out prompt's words only come with the opposite picture in training
    assert oracle["held_out"] == 0.0
    # without a twin the bag of words says it all; with one, the oracle is right about half the time
    assert oracle["seen_alone"] >= 0.95
    assert 0.2 <= oracle["seen_twin"] <= 0.8
    assert model["seen_twin"] == model["held_out"] == 1.0
    assert result["model_beats_oracle"] == {"overall": True, "seen_twin": True, "held_out": True}


def test_an_order_blind_model_does_not_beat_the_oracle(corpus_index):
    suite = make_suite()
    rng = random.Random(1)
    # the oracle's own answers, as a model's: it cannot beat itself
    scenes = [[corpus_index.sample(m["prompt"], rng) for _ in range(2)] for m in suite]
    blank = render(scenes[0][0], IMAGE_SIZE).point(lambda _: 255)
    images = [[render(s, IMAGE_SIZE) if s is not None else blank for s in row] for row in scenes]
    rows, _ = score_images(suite, images, DEFAULT_HELD_OUT)
    result = report(suite, rows, corpus_index, DEFAULT_HELD_OUT,
                    lambda refs: [render(s, IMAGE_SIZE) for s in refs], samples=2, image_size=IMAGE_SIZE,
                    seed=1)
    assert result["model"]["held_out"] == 0.0
    assert abs(result["model"]["overall"] - result["oracle"]["overall"]) < 0.1
    assert result["model_beats_oracle"]["held_out"] is False


def test_counterfactual_twins_are_minimal_pairs_that_the_checker_confirms(tmp_path):
    from interleaf.model.corpus import flatten, to_documents, write_site
    from interleaf.model.geneval import evaluate, prompt_color_attr, prompt_position

    examples = make_examples(CorpusConfig(examples=600, seed=4, counterfactual=1.0))
    twinned = [e for e in examples if e.twin is not None]
    compositional = [e for e in examples if e.kind in ("position", "color_attr")]
    assert len(twinned) >= 0.6 * len(compositional)
    assert all(e.kind in ("position", "color_attr") for e in twinned)
    for e in twinned:
        t = e.twin
        assert content_words(t.caption) == content_words(e.caption)
        assert meaning(t.caption) != meaning(e.caption)
        assert not DEFAULT_HELD_OUT.scene_held_out(t.scene)
        objects, fact = meaning(t.caption)
        if e.kind == "position":
            (_, _, a), relation, (_, _, b) = fact
            metadata = prompt_position(a, relation, b)
        else:
            (_, ca, a), (_, cb, b) = objects
            metadata = prompt_color_attr(ca, a, cb, b)
        ok, why = evaluate(render(t.scene, IMAGE_SIZE), metadata)
        assert ok, (t.caption, why)
    # a twin follows its example in the same document, and on the same page of the site
    doc = to_documents([twinned[0]])[0]
    assert [n.text for n in doc.nodes if n.is_text] == [twinned[0].caption, twinned[0].twin.caption]
    assert len([n for n in doc.nodes if n.is_image]) == 2
    pages = write_site(str(tmp_path / "site"), twinned[:2], per_page=2)
    html = open(pages[0]).read()
    first, twin, second = (html.index(x) for x in (twinned[0].caption, twinned[0].twin.caption,
                                                   twinned[1].caption))
    assert first < twin < second
    assert len(list((tmp_path / "site" / "images").iterdir())) == 4 == len(flatten(twinned[:2]))
