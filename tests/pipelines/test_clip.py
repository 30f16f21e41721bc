"""The CLIP stage on Beam's local runner: a tiny CLIP trained in the test filters synthetic documents with
planted mismatches; dead letters, pass-through, funnel counters, image records, re-applied decisions, MMC4
assignment with real embeddings, and ViT-B-32 (random weights) through the same code path."""

import hashlib
import io
import pickle
import random
import time

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from interleaf import shapes
from interleaf.filters.clip import (
    ClipConfig,
    ClipDecisionConfig,
    ClipModelConfig,
    ClipTextConfig,
    checkpoint_metadata,
    image_scores,
    top_fraction_threshold,
)
from interleaf.filters.clip_model import TINY_CLIP_NAME, image_transform, preprocess_image
from interleaf.model.clip_train import ClipTrainConfig, mismatched_caption, pair_auc, train_on_shapes
from interleaf.pipelines.clip import IMAGE, TEXT, ClipEmbed, ClipFilter, ReapplyClipDecision
from interleaf.pipelines.common import (
    WriteShards,
    create_pipeline,
    funnel_from,
    pipeline_options,
    unreconciled,
)
from interleaf.schemas.document import Document, Node, documents_from_table, documents_to_table
from interleaf.schemas.failure import Failure
from interleaf.schemas.image import ImageRecord, images_from_table, images_to_table
from interleaf.shards import open_shards


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """The session's tiny CLIP (shared with tests/filters/test_clip_train.py through the session's temporary
    directory: whichever module runs first trains it, on 1 thread)."""
    path = tmp_path_factory.getbasetemp() / "tiny-clip" / "tiny-clip.pt"
    if not path.exists():
        report = train_on_shapes(str(path), config=ClipTrainConfig(num_threads=1))
        print(f"\ntiny CLIP trained: {report.steps} steps in {report.seconds:.1f} s, held-out AUC {report.auc:.4f}")
    return path


def _tiny(path, **kw) -> ClipModelConfig:
    return ClipModelConfig(model_name=TINY_CLIP_NAME, pretrained=str(path), num_threads=1, max_batch_size=64, **kw)


# ---------------------------------------------------------------- synthetic corpus


def _record(img) -> ImageRecord:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    return ImageRecord(sha256=sha, urls=[f"http://shapes.test/{sha[:12]}.png"], data=data, format="png",
                       width=img.width, height=img.height)


def _image_node(record: ImageRecord, alt=None) -> Node:
    node = Node.image_node(record.urls[0], alt_text=alt)
    node.image_sha256 = record.sha256
    return node


def _corpus(seed: int, n_docs: int, per_doc: int = 5, mismatch_rate: float = 0.5):
    """Pages of shape images, each followed by its caption, some with the caption as alt text too; some
    of the pairs (mismatch_rate) are planted mismatches: caption and alt text name another colour-shape pair,
    often only the shape differs, the hardest case at 32 px. Images are stored at
    32, 48 or 64 px. Returns documents, image records and {(doc_id, node index): matching?}."""
    rng = random.Random(seed)
    docs, records, truth = [], {}, {}
    for d in range(n_docs):
        nodes = [Node.text_node(f"Shape gallery, page {d}.")]
        for _ in range(per_doc):
            scene = shapes.random_scene(rng, 1)
            record = _record(shapes.render(scene, rng.choice([32, 48, 64])))
            records[record.sha256] = record
            planted = rng.random() < mismatch_rate
            caption = mismatched_caption(scene, rng) if planted else shapes.caption(scene, rng.randrange(4))
            alt = caption if rng.random() < 0.5 else None
            truth[(f"page-{d}", len(nodes))] = not planted
            nodes += [_image_node(record, alt), Node.text_node(caption)]
        docs.append(Document(doc_id=f"page-{d}", url=f"http://shapes.test/page-{d}", nodes=nodes))
    return docs, records, truth


def _run(transform, inputs: dict, tmp_path, name: str):
    """Run `inputs | transform` on the local runner; documents and images through real Arrow shards."""
    p = create_pipeline(pipeline_options())
    pcolls = {k: p | f"Create{k}" >> beam.Create(v) for k, v in inputs.items()}
    out = (pcolls if len(pcolls) > 1 else pcolls["documents"]) | name >> transform
    outputs = out if isinstance(out, dict) else {"documents": out}
    _ = outputs["documents"] | "WriteDocs" >> WriteShards(str(tmp_path / "documents"), documents_to_table,
                                                          lambda d: d.doc_id)
    if "images" in outputs:
        _ = outputs["images"] | "WriteImages" >> WriteShards(str(tmp_path / "images"), images_to_table,
                                                             lambda r: r.sha256 or r.urls[0])
    if "failed" in outputs:
        failed_path = tmp_path / "failed.pkl"
        _ = (outputs["failed"] | "AllFailed" >> beam.combiners.ToList()
             | "SaveFailed" >> beam.Map(lambda xs: failed_path.write_bytes(pickle.dumps(xs))))
    start = time.monotonic()
    result = p.run()
    result.wait_until_finish()
    seconds = time.monotonic() - start
    got = {"documents": documents_from_table(open_shards(str(tmp_path / "documents")).read())}
    if "images" in outputs:
        got["images"] = images_from_table(open_shards(str(tmp_path / "images")).read())
    if "failed" in outputs:
        got["failed"] = pickle.loads(failed_path.read_bytes())
    return got, funnel_from(result), seconds


# ---------------------------------------------------------------- the stage, threshold mode


@pytest.fixture(scope="module")
def filtered(tiny_clip, tmp_path_factory):
    # about 150 true pairs and 150 planted mismatches; seeds 0 and 1 trained and calibrated the model
    docs, records, truth = _corpus(seed=2024, n_docs=60, mismatch_rate=0.5)
    # edge cases: an undecodable image, a sha256 missing from the store, a node never resolved
    broken = ImageRecord(sha256="b" * 64, urls=["http://shapes.test/broken.png"], data=b"GIF89a not really")
    missing = Node.image_node("http://shapes.test/missing.png")
    missing.image_sha256 = "c" * 64
    edge = Document(doc_id="edge", url="http://shapes.test/edge", nodes=[
        _image_node(broken), Node.text_node("a red circle"), missing, Node.text_node("a blue square"),
        Node.image_node("http://shapes.test/unresolved.png"), Node.text_node("a green triangle")])
    # an image used by two pages, matching in one and not in the other
    rng = random.Random(7)
    scene = shapes.random_scene(rng, 1)
    shared = _record(shapes.render(scene, 48))
    good = Document(doc_id="shared-good", url="http://shapes.test/g",
                    nodes=[_image_node(shared), Node.text_node(shapes.caption(scene))])
    bad = Document(doc_id="shared-bad", url="http://shapes.test/b",
                   nodes=[_image_node(shared), Node.text_node(mismatched_caption(scene, rng))])
    dropped = Document(doc_id="rejected", url="http://shapes.test/r", nodes=[_image_node(shared)]).dropped("spam")
    unused = _record(shapes.render(shapes.random_scene(rng, 1), 32))
    failed_fetch = ImageRecord(sha256=None, urls=["http://shapes.test/404.png"], status="http_4xx", error="404")
    images = [*records.values(), broken, shared, unused, failed_fetch]
    config = ClipConfig(model=_tiny(tiny_clip), text=ClipTextConfig(window_before=0, window_after=1))
    out, funnel, seconds = _run(ClipFilter(config), {"documents": [*docs, edge, good, bad, dropped], "images": images},
                                tmp_path_factory.mktemp("clip-threshold"), "Clip")
    print(f"\nClipFilter (tiny CLIP): {len(images)} images, {len(docs) + 4} documents in {seconds:.1f} s")
    return {"out": out, "funnel": funnel, "truth": truth, "config": config, "records": records, "shared": shared,
            "unused": unused, "broken": broken}


@pytest.mark.slow
def test_clip_filter_drops_planted_mismatches_and_keeps_true_pairs(filtered):
    docs = {d.doc_id: d for d in filtered["out"]["documents"]}
    pos, neg = [], []
    for (doc_id, i), matching in filtered["truth"].items():
        node = docs[doc_id].nodes[i]
        assert node.is_image and node.clip_score is not None
        (pos if matching else neg).append(node)
    kept_true = sum(n.kept for n in pos) / len(pos)
    dropped_planted = sum(not n.kept for n in neg) / len(neg)
    auc = pair_auc([n.clip_score for n in pos], [n.clip_score for n in neg])
    threshold = filtered["config"].threshold()
    print(f"\nthreshold {threshold:.3f} (calibrated, from the checkpoint): kept {kept_true:.1%} of {len(pos)} true "
          f"pairs, dropped {dropped_planted:.1%} of {len(neg)} planted mismatches; AUC of clip_score {auc:.4f}")
    assert kept_true >= 0.9
    assert dropped_planted >= 0.9
    assert auc >= 0.95
    assert {n.reason for n in neg if not n.kept} == {"clip_below_threshold"}
    # scores and similarities are stored, so a decision can be re-applied later
    page = docs["page-0"]
    assert page.meta["clip"]["model"] == filtered["config"].model.model_id()
    assert page.meta["clip"]["decision"] == {"mode": "threshold", "threshold": threshold}
    assert len(page.meta["clip"]["images"]) == 5


@pytest.mark.slow
def test_clip_filter_edge_cases_dead_letters_and_funnel(filtered):
    out, funnel = filtered["out"], filtered["funnel"]
    docs = {d.doc_id: d for d in out["documents"]}
    n_pages = len({doc_id for doc_id, _ in filtered["truth"]})
    assert len(docs) == n_pages + 4
    edge = docs["edge"]
    assert [n.reason for n in edge.nodes if n.is_image] == ["clip_image_error", "clip_image_missing", "clip_no_image"]
    assert (docs["rejected"].status, docs["rejected"].reason, docs["rejected"].nodes[0].clip_score) == (
        "dropped", "spam", None)  # passed through untouched
    assert docs["shared-good"].nodes[0].kept and not docs["shared-bad"].nodes[0].kept
    assert out["failed"] == [Failure(stage="clip", step="decode", kind=IMAGE, key="b" * 64,
                                     error=out["failed"][0].error)]
    assert "cannot decode 17 bytes as an image" in out["failed"][0].error

    assert unreconciled(funnel) == []
    clip = funnel["clip"]
    n_ok = len(filtered["records"]) + 3  # + broken, shared, unused
    assert (clip["images"]["in"], clip["images"]["out"]) == (n_ok, n_ok - 1)
    assert clip["images"]["dropped"] == {"clip_decode_error": 1}
    assert clip["images"]["info"] == {"not_ok": 1, "unscored": 1}  # a failed fetch; the unused image
    assert clip["documents"] == {"in": n_pages + 3, "out": n_pages + 3, "dropped": {}}
    assert clip["nodes"]["in"] == len(filtered["truth"]) + 3 + 2
    assert set(clip["nodes"]["dropped"]) == {"clip_below_threshold", "clip_image_error", "clip_image_missing",
                                             "clip_no_image"}


@pytest.mark.slow
def test_clip_filter_fills_image_records(filtered):
    images = {r.sha256 or r.urls[0]: r for r in filtered["out"]["images"]}
    model_id = filtered["config"].model.model_id()
    docs = {d.doc_id: d for d in filtered["out"]["documents"]}
    for sha in filtered["records"]:
        record = images[sha]
        assert record.clip_model == model_id and len(record.clip_embedding) == 64
        assert np.linalg.norm(record.clip_embedding) == pytest.approx(1.0, abs=1e-4)
        assert record.clip_score is not None and record.data == filtered["records"][sha].data
    shared = images[filtered["shared"].sha256]  # the best over the two pages that use it
    assert shared.clip_score == pytest.approx(max(docs["shared-good"].nodes[0].clip_score,
                                                  docs["shared-bad"].nodes[0].clip_score), abs=1e-5)
    unused = images[filtered["unused"].sha256]
    assert unused.clip_embedding is not None and unused.clip_score is None
    broken = images["b" * 64]
    assert broken.clip_embedding is None and broken.clip_model is None and broken.status == "ok"
    assert images["http://shapes.test/404.png"].status == "http_4xx"


@pytest.mark.slow
def test_reapplied_decisions_need_no_model(filtered, tmp_path):
    scored = filtered["out"]["documents"]
    scores = [s for d in scored for s in image_scores(d)]
    fraction = 0.5
    expected = top_fraction_threshold(scores, fraction)
    p = create_pipeline(pipeline_options())
    docs = p | beam.Create(scored)
    loose = docs | "Loose" >> ReapplyClipDecision(ClipDecisionConfig(), threshold=-1.0)
    top = docs | "Top" >> ReapplyClipDecision(ClipDecisionConfig(mode="top_fraction", top_fraction=fraction),
                                              stage="clip_top")

    def kept(ds):  # kept image nodes of kept documents
        return sum(n.kept for d in ds if d.kept for n in d.nodes if n.is_image)

    def reasons(ds):
        return sorted({n.reason for d in ds if d.kept for n in d.nodes if n.is_image and not n.kept})

    # threshold -1: every scored image is back; those that could not be scored stay dropped
    assert_that(loose | "LooseKept" >> beam.combiners.ToList() | beam.Map(kept), equal_to([len(scores)]),
                label="AllScoredKept")
    assert_that(loose | "LooseReasons" >> beam.combiners.ToList() | "R1" >> beam.Map(reasons),
                equal_to([["clip_image_error", "clip_image_missing", "clip_no_image"]]), label="ScoringDropsStay")
    # top fraction: the corpus threshold is exact below 1,001 scores (DataComp's rule, ties kept)
    want = sum(s >= expected for s in scores)
    assert_that(top | "TopKept" >> beam.combiners.ToList() | "K2" >> beam.Map(kept), equal_to([want]),
                label="TopFractionKept")
    result = p.run()
    result.wait_until_finish()
    funnel = funnel_from(result)
    assert unreconciled(funnel) == []
    assert funnel["clip_reapply"]["nodes"]["out"] == len(scores)
    assert funnel["clip_top"]["nodes"]["out"] == want
    assert abs(want - fraction * len(scores)) <= 2


# ---------------------------------------------------------------- the stage, MMC4 assignment mode


@pytest.mark.slow
def test_assignment_places_images_before_their_captions(tiny_clip, tmp_path):
    """Pages with their images first and their captions after, in another order, plus one image per page that
    no caption describes: assignment moves each image before its caption and drops the stray one."""
    rng = random.Random(99)
    docs, images, caption_of, stray = [], [], {}, set()
    for d in range(30):
        scenes = []
        while len(scenes) < 4:  # distinct colour-shape pairs, so each caption has one right image
            s = shapes.random_scene(rng, 1)
            if all((s.objects[0].color, s.objects[0].shape) != (o.objects[0].color, o.objects[0].shape)
                   for o in scenes):
                scenes.append(s)
        records = [_record(shapes.render(s, rng.choice([32, 48, 64]))) for s in scenes]
        images += records
        for r, s in zip(records[:3], scenes):
            caption_of[r.sha256] = shapes.caption(s)
        stray.add(records[3].sha256)  # the fourth scene has no caption on the page
        captions = [Node.text_node(caption_of[records[i].sha256]) for i in (2, 0, 1)]
        docs.append(Document(doc_id=f"a{d}", url=f"http://shapes.test/a{d}",
                             nodes=[_image_node(r) for r in records] + captions))
    threshold = checkpoint_metadata(str(tiny_clip))["threshold"]  # this model's scale, not ViT-L/14's 0.15
    config = ClipConfig(model=_tiny(tiny_clip), decision=ClipDecisionConfig(mode="assign", min_similarity=threshold))
    out, funnel, _ = _run(ClipFilter(config), {"documents": docs, "images": images}, tmp_path, "Assign")
    placed = strays_dropped = 0
    for doc in out["documents"]:
        for i, node in enumerate(doc.nodes):
            if node.is_image and node.image_sha256 in stray:
                strays_dropped += node.reason == "clip_below_threshold"
            elif node.is_image and node.kept:
                placed += doc.nodes[i + 1].is_text and doc.nodes[i + 1].text == caption_of[node.image_sha256]
        assert doc.meta["clip"]["all_sentences"] and len(doc.meta["clip"]["sentences"]) == 3
    print(f"\nassignment: {placed}/90 images placed before their caption, {strays_dropped}/30 stray images dropped")
    assert placed >= 0.9 * 90  # a stray image that takes a caption displaces the right one
    assert strays_dropped >= 0.8 * 30  # each stray has three captions to be confused with
    assert unreconciled(funnel) == []


# ---------------------------------------------------------------- a full-size architecture, dead letters


@pytest.mark.slow
def test_vit_b32_random_weights_through_the_same_path(tmp_path):
    rng = random.Random(3)
    records = [_record(shapes.render(shapes.random_scene(rng, 1), size)) for size in (32, 64, 96, 224)]
    docs = [Document(doc_id="vit", url="http://shapes.test/vit",
                     nodes=[n for r in records for n in (_image_node(r, alt="a shape"), Node.text_node("a caption"))])]
    config = ClipConfig(model=ClipModelConfig(model_name="ViT-B-32", pretrained=None, num_threads=1, max_batch_size=4),
                        decision=ClipDecisionConfig(threshold=0.0))
    out, funnel, seconds = _run(ClipFilter(config), {"documents": docs, "images": records}, tmp_path, "ViT")
    print(f"\nViT-B-32 (random weights): 4 images and 2 texts through ClipFilter in {seconds:.1f} s")
    assert all(r.clip_model == "ViT-B-32:random" and len(r.clip_embedding) == 512 for r in out["images"])
    scores = [n.clip_score for n in out["documents"][0].nodes if n.is_image]
    assert len(scores) == 4 and all(-1 <= s <= 1 for s in scores)
    assert funnel["clip"]["images"] == {"in": 4, "out": 4, "dropped": {}}
    assert unreconciled(funnel) == []


def test_failed_inference_batches_go_to_the_dead_letters():
    model = ClipModelConfig(model_name=TINY_CLIP_NAME, num_threads=1, max_batch_size=1)
    transform = image_transform(model)
    good = preprocess_image(_record(shapes.render(shapes.random_scene(random.Random(1), 1), 40)).data, transform)
    examples = [((IMAGE, "good"), (IMAGE, good)),
                ((IMAGE, "wrong-size"), (IMAGE, np.zeros((3, 8, 8), np.float32))),  # not the model's 32 px
                ((TEXT, "doc", 0), (TEXT, "a red circle"))]
    p = create_pipeline(pipeline_options())
    out = p | beam.Create(examples) | ClipEmbed(model)
    assert_that(out["embeddings"] | beam.Map(lambda kv: (kv[0], kv[1].shape)),
                equal_to([((IMAGE, "good"), (64,)), ((TEXT, "doc", 0), (64,))]), label="Embedded")
    assert_that(out["failed"] | beam.Map(lambda f: (f.kind, f.key, f.step)),
                equal_to([(IMAGE, "wrong-size", "inference")]), label="DeadLetter")
    result = p.run()
    result.wait_until_finish()
    assert funnel_from(result)["clip"]["images"]["dropped"] == {"clip_inference_error": 1}


def test_top_fraction_threshold_is_exact_in_the_engine():
    from interleaf.pipelines.clip import _locate, _ScoreHistogram, _threshold_in_bin, score_bin

    rng = random.Random(5)
    scores = [round(rng.uniform(-0.2, 0.6), 6) for _ in range(5000)] + [0.3] * 50 + [1.0, -1.0]
    fn = _ScoreHistogram()
    halves = [fn.create_accumulator(), fn.create_accumulator()]
    for i, s in enumerate(scores):
        fn.add_input(halves[i % 2], s)
    counts = fn.merge_accumulators(halves)
    for fraction in (0.001, 0.1, 0.3, 0.5, 0.99, 1.0):
        located = _locate(counts, fraction)
        in_bin = [s for s in scores if score_bin(s) == located[0]]
        assert _threshold_in_bin(in_bin, located) == top_fraction_threshold(scores, fraction)
    assert _threshold_in_bin([], _locate(fn.create_accumulator(), 0.3)) == float("inf")


def test_a_run_writes_the_clip_dead_letters_to_failed(tiny_clip, tmp_path, capsys):
    """The stage contract end to end: what the clip stage could not process lands in DIR/failed/ (one row per
    element, with the error), is counted in the funnel, and `interleaf inspect` reads it."""
    from interleaf.cli import main
    from interleaf.filters.image_rules import ImageRules
    from interleaf.filters.image_safety import ImageSafetyConfig
    from interleaf.pipelines.run import RunConfig, run
    from interleaf.schemas.failure import failures_from_table
    from interleaf.shards import write_shards

    docs, records, _ = _corpus(seed=5, n_docs=3, per_doc=2)
    # a PNG cut after its header: it passes the image rules (read from the header) and fails to decode
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(png, "PNG")
    broken = ImageRecord(sha256="d" * 64, urls=["http://shapes.test/broken.png"], data=png.getvalue()[:60])
    docs.append(Document(doc_id="edge", url="http://shapes.test/edge",
                         nodes=[_image_node(broken), Node.text_node("a red circle")]))
    write_shards(str(tmp_path / "in" / "documents"), [documents_to_table(docs)])
    write_shards(str(tmp_path / "in" / "images"), [images_to_table([*records.values(), broken])])
    # the image safety step would drop it first (decode_error): off, so that it reaches the clip stage
    cfg = RunConfig(stages=["clip"], clip=ClipConfig(model=_tiny(tiny_clip)),
                    image_rules=ImageRules(min_side=16), image_safety=ImageSafetyConfig(nsfw=False, faces=False))
    cfg.ingest.quality.min_images = 0
    m = run([str(tmp_path / "in" / "documents")], str(tmp_path / "out"), cfg)
    assert m["unreconciled"] == []
    failed = failures_from_table(open_shards(str(tmp_path / "out" / "failed")).read())
    assert [(f.stage, f.step, f.kind, f.key) for f in failed] == [("clip", "decode", IMAGE, "d" * 64)]
    assert failed[0].error and m["funnel"]["clip"]["images"]["dropped"]["clip_decode_error"] == 1
    assert main(["inspect", str(tmp_path / "out" / "failed"), "--sample", "1"]) == 0
    out = capsys.readouterr().out
    assert "failures shards: 1, rows: 1" in out and "clip/decode image " + "d" * 64 in out
