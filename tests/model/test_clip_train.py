"""The tiny CLIP trainer: it separates matching from mismatched pairs it never saw (slow: trains once per
session), its evaluation helpers, pairs from documents, and `interleaf train-clip`."""

import argparse
import hashlib
import io
import random
import time

import pytest

from interleaf.commands import clip_cmd
from interleaf.errors import UsageError
from interleaf.filters.clip import ClipModelConfig, checkpoint_metadata
from interleaf.filters.clip_model import TINY_CLIP_NAME, load_clip
from interleaf.model.clip_train import (
    ClipTrainConfig,
    calibrate_threshold,
    mismatched_caption,
    pair_auc,
    pairs_from_documents,
    score_pairs,
    shape_pairs,
    train_on_shapes,
)
from interleaf.schemas.document import Document, Node, documents_to_table
from interleaf.schemas.image import ImageRecord, images_to_table
from interleaf.shards import write_shards


def trained_tiny_clip(tmp_path_factory):
    """The tiny CLIP of the test session: trained by the first module that asks (1 thread: on busy shared
    cores it is 10x faster than 2), then reused from the session's temporary directory."""
    path = tmp_path_factory.getbasetemp() / "tiny-clip" / "tiny-clip.pt"
    if not path.exists():
        start = time.monotonic()
        report = train_on_shapes(str(path), config=ClipTrainConfig(num_threads=1))
        print(f"\ntiny CLIP trained: {report.steps} steps in {report.seconds:.1f} s ({time.monotonic() - start:.1f} s "
              f"with data and calibration), held-out AUC {report.auc:.4f}, threshold {report.threshold:.3f}")
    return path


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return trained_tiny_clip(tmp_path_factory)


@pytest.mark.slow
def test_tiny_clip_separates_pairs_it_never_saw(tiny_clip):
    model = ClipModelConfig(model_name=TINY_CLIP_NAME, pretrained=str(tiny_clip), num_threads=1)
    loaded = load_clip(model)  # the same path as published weights: a name and a checkpoint
    meta = checkpoint_metadata(str(tiny_clip))
    assert meta["model_name"] == TINY_CLIP_NAME and meta["steps"] == ClipTrainConfig.steps

    # training used seed 0 and calibration seed 1; drop any render that also occurs in the training set
    train_images, _, _ = shape_pairs(3000, seed=0)
    seen = {hashlib.sha256(img.tobytes()).digest() for img in train_images}
    images, captions, scenes = shape_pairs(500, seed=1000)
    unseen = [i for i, img in enumerate(images) if hashlib.sha256(img.tobytes()).digest() not in seen]
    assert len(unseen) > 450
    rng = random.Random(1000)
    images = [images[i] for i in unseen]
    matching = [captions[i][rng.randrange(4)] for i in unseen]
    mismatched = [mismatched_caption(scenes[i], rng) for i in unseen]
    pos = score_pairs(loaded, model, images, matching)
    neg = score_pairs(loaded, model, images, mismatched)
    auc = pair_auc(pos, neg)
    threshold = meta["threshold"]
    keep, drop = (pos >= threshold).mean(), (neg < threshold).mean()
    print(f"\nAUC {auc:.4f} on {len(images)} unseen pairs; at the calibrated threshold {threshold:.3f}: "
          f"{keep:.1%} of matching pairs kept, {drop:.1%} of mismatched dropped")
    assert auc >= 0.95
    assert keep >= 0.9 and drop >= 0.9


def test_pair_auc_and_calibration():
    assert pair_auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert pair_auc([0.1], [0.9]) == 0.0
    assert pair_auc([0.5, 0.5], [0.5, 0.5]) == 0.5  # ties count half
    assert pair_auc([0.9, 0.3], [0.4, 0.1]) == 0.75
    t = calibrate_threshold([0.8, 0.9, 0.85], [0.1, 0.2, 0.3])
    assert 0.3 < t < 0.8
    with pytest.raises(ValueError):
        pair_auc([], [0.1])


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _shape_store(n: int, seed: int = 7):
    """One document per image: the image with its caption as alt text, then an unrelated paragraph."""
    images, captions, _ = shape_pairs(n, seed=seed)
    docs, records = [], []
    for i, (img, caps) in enumerate(zip(images, captions)):
        data = _png(img)
        sha = hashlib.sha256(data).hexdigest()
        records.append(ImageRecord(sha256=sha, urls=[f"http://shapes.test/{i}.png"], data=data, format="png",
                                   width=img.width, height=img.height))
        node = Node.image_node(f"http://shapes.test/{i}.png", alt_text=caps[0])
        node.image_sha256 = sha
        docs.append(Document(doc_id=f"d{i}", url=f"http://shapes.test/{i}", nodes=[node, Node.text_node(caps[1])]))
    return docs, records


def test_pairs_from_documents():
    docs, records = _shape_store(5)
    docs[1] = docs[1].dropped("too_short")
    docs[2].nodes[0] = docs[2].nodes[0].dropped("too_small")
    broken = ImageRecord(sha256="f" * 64, urls=["http://shapes.test/x.png"], data=b"not an image")
    node = Node.image_node("http://shapes.test/x.png", alt_text="a red square")
    node.image_sha256 = broken.sha256
    docs.append(Document(doc_id="broken", url="http://shapes.test/x", nodes=[node]))
    store = {r.sha256: r for r in records + [broken]}
    images, captions = pairs_from_documents(docs, store)
    assert len(images) == 3  # dropped document, dropped node and undecodable image left out
    assert captions[0] == [docs[0].nodes[0].alt_text, docs[0].nodes[1].text]


def _cli(argv):
    parser = argparse.ArgumentParser()
    clip_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train-clip", *argv])
    return args.func(args)


def test_train_clip_command_on_shapes(tmp_path, capsys):
    out = tmp_path / "clip.pt"
    assert _cli(["--out", str(out), "--steps", "3", "--pairs", "64", "--batch-size", "16", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "held-out AUC" in printed and str(out) in printed
    loaded = load_clip(ClipModelConfig(model_name=TINY_CLIP_NAME, pretrained=str(out), num_threads=1))
    assert loaded.model_id.startswith(f"{TINY_CLIP_NAME}:clip.pt@")
    with pytest.raises(UsageError, match="go together"):
        _cli(["--out", str(out), "--documents", str(tmp_path)])
    with pytest.raises(UsageError, match="fewer than two batches"):
        _cli(["--out", str(out), "--pairs", "10"])


def test_train_clip_command_on_a_document_store(tmp_path, capsys):
    docs, records = _shape_store(40)
    write_shards(str(tmp_path / "documents"), [documents_to_table(docs)])
    write_shards(str(tmp_path / "images"), [images_to_table(records)])
    out = tmp_path / "store-clip.pt"
    assert _cli(["--out", str(out), "--documents", str(tmp_path / "documents"), "--images", str(tmp_path / "images"),
                 "--steps", "2", "--batch-size", "8", "--threads", "1"]) == 0
    assert "36 (image, text) pairs" in capsys.readouterr().out  # 4 of 40 held out for calibration
    assert "threshold" in checkpoint_metadata(str(out))
