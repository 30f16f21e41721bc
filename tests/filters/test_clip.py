"""CLIP scoring without an engine: MMC4 assignment (golden), text windows, decisions and their re-application,
configuration errors, and open_clip loading (tiny random models, checkpoints, the pretrained-tag path)."""

import copy
import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from interleaf.filters import clip, clip_model
from interleaf.filters.clip import (
    ClipConfig,
    ClipDecisionConfig,
    ClipModelConfig,
    ClipTextConfig,
    assign_images,
    clip_meta_from_mmc4,
    decide,
    decision_changes,
    plan_document,
    reset_decision,
    score_document,
    top_fraction_threshold,
)
from interleaf.filters.clip_model import ClipModelError
from interleaf.imagefile import ImageDecodeError
from interleaf.schemas.document import Document, Node
from interleaf.schemas.mmc4 import from_mmc4, to_mmc4

TINY = ClipModelConfig(model_name=clip_model.TINY_CLIP_NAME, num_threads=1)


@pytest.fixture
def mmc4_doc(data_dir) -> dict:
    return json.loads((data_dir / "mmc4" / "mmc4_readme_example_doc.json").read_text())


# ---------------------------------------------------------------- MMC4 golden


def test_mmc4_golden_assignment_from_shipped_matrix(mmc4_doc):
    matrix = np.array(mmc4_doc["similarity_matrix"])
    assert assign_images(matrix, min_similarity=clip.MMC4_L14_MIN_SIMILARITY) == [(2, None), (1, None)]
    # the shipped assignment and matched_sim agree with ours
    assert [i["matched_text_index"] for i in mmc4_doc["image_info"]] == [2, 1]
    assert [i["matched_sim"] for i in mmc4_doc["image_info"]] == [matrix[0, 2], matrix[1, 1]]


def test_mmc4_golden_through_documents(mmc4_doc):
    # start from a document whose images sit at the wrong sentences; the assignment must move them
    moved = copy.deepcopy(mmc4_doc)
    for info in moved["image_info"]:
        info["matched_text_index"] = 0
    doc = clip_meta_from_mmc4(from_mmc4(moved))
    decided = decide(doc, ClipDecisionConfig(mode="assign"))
    out = to_mmc4(decided)
    assert [i["matched_text_index"] for i in out["image_info"]] == [2, 1]
    assert [i["matched_sim"] for i in out["image_info"]] == pytest.approx([0.27694183588027954, 0.3234919607639313])
    assert out["similarity_matrix"] == mmc4_doc["similarity_matrix"]
    # image 1 before sentence 1, image 0 before sentence 2
    assert [n.kind for n in decided.nodes] == ["text", "image", "text", "image", "text"]
    assert decided.nodes[1].image_url.endswith("index.91.jpg")
    # re-applying is idempotent; resetting restores the original order (both images before sentence 0)
    assert decide(decided, ClipDecisionConfig(mode="assign")).nodes == decided.nodes
    assert [n.kind for n in reset_decision(decided).nodes] == ["image", "image", "text", "text", "text"]
    # a stricter minimum drops both, and nothing moves
    strict = decide(decided, ClipDecisionConfig(mode="assign", min_similarity=0.33))
    assert [n.reason for n in strict.nodes if n.is_image] == ["clip_below_threshold"] * 2


def test_assignment_minimum_and_leftover_images():
    sim = np.array([[0.30, 0.20],   # image 0 -> sentence 0
                    [0.29, 0.10],   # image 1 also prefers sentence 0: left over (2 sentences, 3 eligible)
                    [0.05, 0.25],   # image 2 -> sentence 1
                    [0.10, 0.12]])  # image 3 below the minimum
    assert assign_images(sim, min_similarity=0.15) == [(0, None), (0, None), (1, None), (None, "clip_below_threshold")]
    assert assign_images(sim, min_similarity=0.15, unassigned="drop") == [
        (0, None), (None, "clip_unassigned"), (1, None), (None, "clip_below_threshold")]
    assert assign_images(np.zeros((0, 3)), min_similarity=0.15) == []


# ---------------------------------------------------------------- text windows


def _image(sha, alt=None):
    n = Node.image_node(f"http://x.test/{sha}.png", alt_text=alt)
    n.image_sha256 = sha
    return n


def _doc(nodes):
    return Document(doc_id="d", url="http://x.test/", nodes=nodes)


def test_text_windows_skip_images_and_dropped_text():
    nodes = [Node.text_node("t0"), _image("a", alt="alt a"), Node.text_node("t1"), _image("b"),
             Node.text_node("t2").dropped("too_short"), Node.text_node("t3"), Node.image_node("http://x.test/c.png"),
             _image("d")]
    doc = _doc(nodes)
    plan = plan_document(doc, ClipTextConfig(window_before=1, window_after=1), all_sentences=False)
    assert plan.image_nodes == (1, 3, 7)
    assert plan.sentence_nodes == (0, 2, 5)
    assert [[plan.sentence_nodes[c] for c in w] for w in plan.windows] == [[0, 2], [2, 5], [5]]
    assert plan.texts == ("t0", "t1", "t3", "alt a")
    assert plan.alt_slots == (3, None, None)
    assert plan.drops == ((6, "clip_no_image"),)
    assert plan.shas(doc) == ["a", "b", "d"]
    # wider windows and no alt text
    wide = plan_document(doc, ClipTextConfig(window_before=2, window_after=0, use_alt_text=False), all_sentences=False)
    assert [[wide.sentence_nodes[c] for c in w] for w in wide.windows] == [[0], [0, 2], [2, 5]]
    assert wide.alt_slots == (None, None, None)
    # no text anywhere near: dropped unless every sentence is compared (assign mode)
    lone = _doc([_image("a"), Node.text_node("far away")])
    assert plan_document(lone, ClipTextConfig(window_after=0), all_sentences=False).drops == ((0, "clip_no_text"),)
    everything = plan_document(lone, ClipTextConfig(window_after=0), all_sentences=True)
    assert everything.drops == () and everything.sentence_nodes == (1,) and everything.windows == ((),)


# ---------------------------------------------------------------- scoring and decisions


def _unit(*v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def _scored(all_sentences=False):
    """Four images, each before its caption; image c failed upstream, image e is missing from the store."""
    nodes = [_image("a", alt="a cat"), Node.text_node("cat"), _image("b"), Node.text_node("dog"),
             _image("c"), Node.text_node("bird"), _image("e"), Node.text_node("fish")]
    doc = _doc(nodes)
    plan = plan_document(doc, ClipTextConfig(window_before=0, window_after=1), all_sentences=all_sentences)
    images = {"a": _unit(1, 0, 0), "b": _unit(0.6, 0.8, 0), "c": clip.REASON_IMAGE_ERROR}
    slots = {t: s for s, t in enumerate(plan.texts)}
    texts = {slots["cat"]: _unit(1, 0, 0), slots["dog"]: _unit(0, 1, 0), slots["a cat"]: _unit(0.8, 0.6, 0)}
    texts.update({slots["bird"]: _unit(0, 0, 1), slots["fish"]: _unit(0, 0, 1)})
    return doc, score_document(doc, plan, image_embeddings=images, text_embeddings=texts, model_id="m",
                               all_sentences=all_sentences)


def test_score_document_stores_similarities():
    doc, scored = _scored()
    a, b, c, e = (scored.nodes[i] for i in (0, 2, 4, 6))
    assert a.clip_score == pytest.approx(1.0) and b.clip_score == pytest.approx(0.8)  # best of alt and window
    assert (c.reason, e.reason) == ("clip_image_error", "clip_image_missing")
    stored = scored.meta["clip"]
    assert stored["model"] == "m" and stored["nodes"] == 8 and stored["sentences"] == [1, 3, 5, 7]
    assert stored["images"][0] == {"node": 0, "alt": pytest.approx(0.8), "sims": [1.0, 0.0, 0.0, 0.0], "window": [0]}
    assert json.loads(json.dumps(scored.meta)) == scored.meta  # JSON-serialisable for the Arrow meta column
    assert clip.image_best_similarities(scored) == {"a": pytest.approx(1.0), "b": pytest.approx(0.8)}
    assert decision_changes(doc, scored) == {"documents.in": 1, "documents.out": 1, "nodes.in": 4, "nodes.out": 2,
                                             "nodes.dropped.clip_image_error": 1,
                                             "nodes.dropped.clip_image_missing": 1}


def test_threshold_decisions_reapply_without_recomputing():
    _, scored = _scored()
    strict = decide(scored, ClipDecisionConfig(), threshold=0.9)
    assert [(n.status, n.reason) for n in strict.nodes if n.is_image][:2] == [
        ("kept", None), ("dropped", "clip_below_threshold")]
    assert strict.meta["clip"]["decision"] == {"mode": "threshold", "threshold": 0.9}
    loose = decide(strict, ClipDecisionConfig(), threshold=0.5)  # the dropped image comes back
    assert [n.kept for n in loose.nodes if n.is_image] == [True, True, False, False]
    assert reset_decision(strict).nodes == scored.nodes
    # a document left without images is dropped only when asked
    none = decide(scored, ClipDecisionConfig(drop_empty_documents=True), threshold=1.01)
    assert (none.status, none.reason) == ("dropped", "clip_no_images")
    assert decide(none, ClipDecisionConfig(drop_empty_documents=True), threshold=0.5).kept
    assert decision_changes(reset_decision(none), none)["documents.dropped.clip_no_images"] == 1
    # stripping dropped nodes breaks the stored node indices: refused, not silently misapplied
    with pytest.raises(ValueError, match="changed after scoring"):
        decide(strict.kept_nodes(), ClipDecisionConfig(), threshold=0.5)


def test_assign_needs_every_sentence():
    _, near = _scored(all_sentences=False)
    with pytest.raises(ValueError, match="every sentence"):
        decide(near, ClipDecisionConfig(mode="assign"))
    _, full = _scored(all_sentences=True)
    decided = decide(full, ClipDecisionConfig(mode="assign", min_similarity=0.5))
    kinds = [(n.kind, n.text or n.image_sha256) for n in decided.nodes if n.kept]
    assert kinds == [("image", "a"), ("text", "cat"), ("image", "b"), ("text", "dog"), ("text", "bird"),
                     ("text", "fish")]


def test_top_fraction_threshold_datacomp_semantics():
    scores = [0.1, 0.4, 0.3, 0.2, 0.5, 0.3]
    assert top_fraction_threshold(scores, 0.5) == pytest.approx(0.3)  # 3 of 6 from the top: 0.5, 0.4, 0.3
    assert sum(s >= top_fraction_threshold(scores, 0.5) for s in scores) == 4  # ties kept
    assert top_fraction_threshold(scores, 1.0) == pytest.approx(0.1)
    assert top_fraction_threshold([], 0.3) == float("inf")
    with pytest.raises(ValueError):
        top_fraction_threshold(scores, 0.0)


# ---------------------------------------------------------------- configuration


def test_config_validation_messages(tmp_path):
    with pytest.raises(ValueError, match="mode must be one of"):
        ClipDecisionConfig(mode="best").validate()
    with pytest.raises(ValueError, match="top_fraction"):
        ClipDecisionConfig(mode="top_fraction", top_fraction=1.5).validate()
    with pytest.raises(ValueError, match="unassigned"):
        ClipDecisionConfig(unassigned="keep").validate()
    with pytest.raises(ValueError, match="windows"):
        ClipTextConfig(window_before=-1).validate()
    with pytest.raises(ClipModelError, match="device"):
        ClipModelConfig(device="tpu").validate()
    with pytest.raises(ClipModelError, match="fp16 needs a GPU"):
        ClipModelConfig(precision="fp16").validate()
    with pytest.raises(ClipModelError, match="does not exist"):
        ClipModelConfig(pretrained=str(tmp_path / "missing.pt")).validate()
    with pytest.raises(ValueError, match="no published CLIP-score threshold"):
        ClipConfig(model=TINY).validate()
    with pytest.raises(ValueError, match="all_sentences=False"):
        ClipConfig(model=TINY, text=ClipTextConfig(all_sentences=False), decision=ClipDecisionConfig(mode="assign")
                   ).validate()
    assert ClipConfig().threshold() == clip.LAION_B32_THRESHOLD == 0.28
    assert ClipConfig(model=ClipModelConfig(model_name="ViT-L-14")).threshold() == 0.15
    assert ClipConfig(model=TINY, decision=ClipDecisionConfig(mode="assign")).all_sentences
    with pytest.raises(ClipModelError, match="unknown open_clip model"):
        clip_model.ensure_model_config(ClipModelConfig(model_name="ViT-Q-99"))


def test_register_model_config_is_idempotent():
    cfg = clip_model.tiny_clip_config(image_size=16, patch_size=8)
    clip_model.register_model_config("interleaf-test-tiny-16", cfg)
    clip_model.register_model_config("interleaf-test-tiny-16", copy.deepcopy(cfg))
    import open_clip
    assert open_clip.list_models().count("interleaf-test-tiny-16") == 1
    with pytest.raises(ClipModelError, match="another config"):
        clip_model.register_model_config("interleaf-test-tiny-16", clip_model.tiny_clip_config(image_size=24, patch_size=8))


# ---------------------------------------------------------------- open_clip models


def _png(size, color=(200, 30, 30), fmt="PNG"):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def test_tiny_random_model_scores_mixed_size_images():
    loaded = clip_model.load_clip(TINY)
    assert loaded.model_id == f"{clip_model.TINY_CLIP_NAME}:random"
    transform = clip_model.image_transform(TINY)
    pixels = np.stack([clip_model.preprocess_image(_png(s, fmt=f), transform)
                       for s, f in (((32, 32), "PNG"), ((80, 40), "JPEG"), ((17, 50), "PNG"))])
    assert pixels.shape == (3, 3, 32, 32) and pixels.dtype == np.float32
    images = loaded.encode_images(pixels)
    texts = loaded.encode_texts(clip_model.tokenize(clip_model.make_tokenizer(TINY), ["a red square", "a blue circle"]))
    assert images.shape == (3, 64) and texts.shape == (2, 64)
    assert np.linalg.norm(images, axis=1) == pytest.approx(np.ones(3), abs=1e-5)
    assert (images @ texts.T).shape == (3, 2)
    with pytest.raises(ImageDecodeError, match="cannot decode .* bytes as an image"):
        clip_model.preprocess_image(b"<html>not an image</html>", transform)


def test_checkpoint_loads_by_path_with_the_same_weights(tmp_path):
    from interleaf.model import clip_train

    cfg = clip_train.ClipTrainConfig(steps=2, batch_size=8, num_threads=1)
    images, captions, _ = clip_train.shape_pairs(16, seed=3)
    result = clip_train.train_clip(clip_train.encode_pairs(images, captions, clip_train.model_config_for(cfg)), cfg)
    path = tmp_path / "ckpt.pt"
    clip_train.save_checkpoint(str(path), result.model, cfg, threshold=0.42)
    model = ClipModelConfig(model_name=clip_model.TINY_CLIP_NAME, pretrained=str(path), num_threads=1)
    assert model.is_checkpoint and model.model_id().startswith(f"{clip_model.TINY_CLIP_NAME}:ckpt.pt@")
    assert clip.checkpoint_metadata(str(path))["threshold"] == 0.42
    assert ClipConfig(model=model).threshold() == 0.42  # the calibrated threshold is the default
    loaded = clip_model.load_clip(model)
    tokens = clip_model.tokenize(clip_model.make_tokenizer(model), ["a red circle"])
    import torch
    with torch.inference_mode():
        expected = result.model.encode_text(torch.from_numpy(tokens), normalize=True).numpy()
    assert loaded.encode_texts(tokens) == pytest.approx(expected, abs=1e-6)


def test_pretrained_tag_path_is_real_and_fails_fast_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(ClipModelError, match="neither a checkpoint file nor a pretrained tag"):
        clip_model.image_preprocess_cfg(ClipModelConfig(model_name="ViT-B-32", pretrained="no_such_tag"))
    tagged = ClipModelConfig(model_name="ViT-B-32", pretrained="laion2b_s34b_b79k")
    assert tagged.model_id() == "ViT-B-32:laion2b_s34b_b79k"
    assert clip_model.image_preprocess_cfg(tagged)["size"] == (224, 224)
    start = time.monotonic()
    with pytest.raises(ClipModelError, match="cannot load open_clip ViT-B-32"):
        clip_model.load_clip(tagged)  # the download is attempted and refused offline, without a model hub retry loop
    assert time.monotonic() - start < 20


def test_embeddings_do_not_depend_on_their_batch():
    """An image's or text's embedding is the same bits whatever shares its batch: the CPU's matmul kernels
    handle a batch's last rows by another path, so unpadded batches of 7 and 8 gave different fp32 embeddings
    (7th digit) on an AMD EPYC, and shards then differed with the worker count."""
    model = clip_model.load_clip(TINY)
    rng = np.random.default_rng(0)
    size = model.model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    pixels = rng.standard_normal((40, 3, size, size)).astype(np.float32)
    whole = model.encode_images(pixels)
    for b in (1, 3, 7, 8, 13, 17, 32):
        parts = np.concatenate([model.encode_images(pixels[i:i + b]) for i in range(0, 40, b)])
        assert parts.shape == whole.shape and np.array_equal(parts, whole), b
    texts = ["a photo of a cat", "a red circle above a blue square", "x"] * 7
    whole = model.encode_strings(texts)
    for b in (1, 2, 5):
        parts = np.concatenate([model.encode_strings(texts[i:i + b]) for i in range(0, len(texts), b)])
        assert np.array_equal(parts, whole), b
