"""The tokenize stage on Beam's local runner: real BPE, real VQ (tiny preset), real Arrow shards.

Expected sequences come from a plain loop over the same tokenizers, so the test checks the engine's joins,
batching and counting, not a copy of the codec.
"""

import hashlib
import io
import random
import shutil

import apache_beam as beam
import pyarrow as pa
import pytest
import torch
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from interleaf.pipelines.common import create_pipeline, funnel_from, pipeline_options, unreconciled
from interleaf.pipelines.tokenize import Tokenize, TokenizeConfig, TokenizerSet, tokenize_stage
from interleaf.schemas.document import Document, Node, documents_to_table
from interleaf.schemas.image import ImageRecord, images_to_table
from interleaf.shapes import caption, random_scene, render
from interleaf.shards import ShardError, open_shards, write_shards
from interleaf.storage import file_sha256
from interleaf.tokenizers.codec import SequenceCodec
from interleaf.tokenizers.image import image_to_tensor
from interleaf.tokenizers.text_bpe import TextTokenizer
from interleaf.tokenizers.vq import VQModel, load_vq, save_vq, vq_preset


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _record(data: bytes, url: str) -> ImageRecord:
    return ImageRecord(sha256=hashlib.sha256(data).hexdigest(), urls=[url], width=32, height=32, format="png",
                       data=data, source="fetch")


def _image(rec: ImageRecord) -> Node:
    return Node(kind="image", image_url=rec.urls[0], image_sha256=rec.sha256)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tokenizer files, an image store and documents covering every path through the stage."""
    tmp = tmp_path_factory.mktemp("tokenize")
    rng = random.Random(0)
    scenes = [random_scene(rng, rng.choice([1, 2])) for _ in range(7)]
    captions = [caption(s) for s in scenes]
    text = TextTokenizer.train(captions * 3 + ["Ein Absatz. 一段文字。 فقرة. 🎨"] * 3, vocab_size=400)
    text.save(str(tmp / "tokenizer.json"))
    torch.manual_seed(0)
    save_vq(VQModel(vq_preset("tiny")), str(tmp / "vq.pt"))  # untrained is enough here: codes are codes

    good = [_record(_png(render(s)), f"http://img.test/{i}.png") for i, s in enumerate(scenes)]
    garbage = _record(b"\x89PNG not really", "http://img.test/broken.png")
    failed = ImageRecord(sha256=None, urls=["http://img.test/404.png"], status="http_4xx", error="404")
    unreferenced = good.pop()
    store = [*good, garbage, failed, unreferenced]
    missing_sha = "f" * 64

    docs = [
        Document(doc_id="two-images", url="http://d/0", nodes=[
            Node.text_node(captions[0]), _image(good[0]), Node.text_node("Ein Absatz. 一段文字。 فقرة. 🎨"),
            _image(good[1]), _image(good[0])]),
        Document(doc_id="shares-an-image", url="http://d/1",
                 nodes=[_image(good[0]), Node.text_node(captions[1])]),
        Document(doc_id="image-missing", url="http://d/2", nodes=[
            Node.text_node(captions[2]), Node(kind="image", image_url="http://img.test/gone.png",
                                              image_sha256=missing_sha)]),
        Document(doc_id="image-broken", url="http://d/3", nodes=[Node.text_node("x"), _image(garbage)]),
        Document(doc_id="unresolved-and-empty", url="http://d/4", nodes=[
            Node(kind="image", image_url="http://img.test/never-fetched.png"), Node.text_node(""),
            Node.text_node(captions[3]), Node.text_node("dropped").dropped("too_short")]),
        Document(doc_id="nothing-left", url="http://d/5", nodes=[
            Node(kind="image", image_url="http://img.test/404.png", image_sha256=missing_sha)]),
        Document(doc_id="dropped-doc", url="http://d/6",
                 nodes=[Node.text_node("y")]).dropped("near_duplicate"),
        Document(doc_id="long", url="http://d/7", nodes=[
            n for i in range(2, 6)
            for n in (Node.text_node(captions[i] + " " + captions[i - 1]), _image(good[i]))]),
    ]
    return {"tmp": tmp, "docs": docs, "store": store, "good": good,
            "config": TokenizeConfig(text_tokenizer=str(tmp / "tokenizer.json"),
                                     image_tokenizer=str(tmp / "vq.pt"), max_batch_size=4, num_threads=1)}


def _expected(world, max_length=None):
    """The rows a plain loop over the same tokenizer files gives."""
    vq = load_vq(world["config"].image_tokenizer)
    text = TextTokenizer.load(world["config"].text_tokenizer)
    codec = SequenceCodec.build(text, vq)
    codes = {}
    for rec in world["good"]:
        with Image.open(io.BytesIO(rec.data)) as img:
            codes[rec.sha256] = vq.encode(image_to_tensor(img, 32)[None])[0].flatten().tolist()
    rows = []
    for doc in world["docs"]:
        if not doc.kept:
            continue
        tokens = codec.encode(doc, codes)
        if len(tokens) == 2:  # <bos> <eos>: nothing left
            continue
        if max_length and len(tokens) > max_length:
            rows += [(f"{doc.doc_id}:{k}", p) for k, p in enumerate(codec.split(tokens, max_length))]
        else:
            rows.append((doc.doc_id, tokens))
    return rows


def _run(world, config, check):
    p = create_pipeline(pipeline_options())
    docs = p | "Docs" >> beam.Create(world["docs"])
    store = p | "Store" >> beam.Create(world["store"])
    rows = (docs, store) | "Tokenize" >> Tokenize(config)
    check(rows)
    result = p.run()
    result.wait_until_finish()
    return funnel_from(result)


def test_tokenize_matches_a_plain_loop_and_counts_every_drop(world):
    expected = _expected(world)
    funnel = _run(world, world["config"],
                  lambda rows: assert_that(rows, equal_to(expected), label="RowsAsPlainLoop"))
    f = funnel["tokenize"]
    assert f["documents"] == {"in": 8, "out": 6, "dropped": {"empty": 1, "not_kept": 1}}
    assert f["nodes"] == {"in": 23, "out": 18, "dropped": {
        "empty_text": 1, "image_missing": 2, "image_undecodable": 1, "image_unresolved": 1}}
    # 6 good + broken + failed fetch + unreferenced; each good image encoded once, however many documents
    # use it
    assert f["images"] == {"in": 9, "out": 6,
                           "dropped": {"not_stored": 1, "undecodable": 1, "unreferenced": 1}}
    assert f["tokens"]["info"]["image"] == 64 * 8
    assert unreconciled(funnel) == []


def test_max_length_splits_at_node_boundaries(world):
    config = TokenizeConfig(**{**world["config"].__dict__, "max_length": 100})
    expected = _expected(world, max_length=100)
    assert any(k.startswith("long:") for k, _ in expected)
    funnel = _run(world, config, lambda rows: assert_that(rows, equal_to(expected), label="SplitRows"))
    split_docs = {k.split(":")[0] for k, _ in expected if ":" in k}
    extra = sum(1 for k, _ in expected if ":" in k) - len(split_docs)
    assert funnel["tokenize"]["documents"]["info"]["split"] == extra > 0


def test_config_is_validated_before_any_work(world):
    with pytest.raises(ValueError, match="shorter than one image block"):
        Tokenize(TokenizeConfig(**{**world["config"].__dict__, "max_length": 50}))
    with pytest.raises(ValueError, match="min_batch_size"):
        Tokenize(TokenizeConfig(**{**world["config"].__dict__, "min_batch_size": 8, "max_batch_size": 4}))


def _write_inputs(world, tmp):
    write_shards(str(tmp / "documents"),
                 [documents_to_table(world["docs"][:4]), documents_to_table(world["docs"][4:])])
    write_shards(str(tmp / "images"), [images_to_table(world["store"])])


def _stage(world, tmp, out, config):
    p = create_pipeline(pipeline_options())
    tokenize_stage(p, documents=str(tmp / "documents"), images=str(tmp / "images"), out=str(out),
                   config=config)
    p.run().wait_until_finish()


def test_token_shards_are_self_describing_and_open_without_interleaf(world, tmp_path):
    _write_inputs(world, tmp_path)
    config = TokenizeConfig(**{**world["config"].__dict__, "num_shards": 2})
    _stage(world, tmp_path, tmp_path / "tokens", config)

    shards = open_shards(str(tmp_path / "tokens"))
    info = shards.token_info
    tokenizers = TokenizerSet.read(config)
    assert info.vocabulary == tokenizers.vocabulary
    assert info.tokenizers == {"text": file_sha256(config.text_tokenizer),
                               "image": file_sha256(config.image_tokenizer)}
    assert info.config["tokenize"]["text_tokenizer"] == config.text_tokenizer
    assert info.config["image_tokenizer"]["codebook_size"] == 256
    assert info.config["image_tokenizer"]["kind"] == "interleaf.vq" and info.producer.startswith("interleaf ")
    assert shards.schema.field("tokens").type.value_type == pa.uint16()
    table = shards.read()
    assert sorted(zip(table["doc_id"].to_pylist(), table["tokens"].to_pylist())) == sorted(_expected(world))

    # plain pyarrow, no interleaf: the vocabulary is JSON in the schema metadata
    import json
    with pa.memory_map(shards.paths[0]) as source:
        plain = pa.ipc.open_stream(source)
        vocab = json.loads(plain.schema.metadata[b"interleaf.vocabulary"])
        assert vocab["special_tokens"]["<grid:8x8>"] == 6 and vocab["size"] == info.vocabulary.size
        assert plain.read_all().num_rows > 0

    # Hugging Face datasets opens a shard directly (the shards are Arrow IPC streams, its own cache format)
    import datasets
    ds = datasets.concatenate_datasets([datasets.Dataset.from_file(p) for p in shards.paths])
    assert sorted(ds["doc_id"]) == sorted(table["doc_id"].to_pylist())
    assert str(ds.features["tokens"].feature.dtype) == "uint16"


def test_reader_refuses_shards_of_two_tokenizer_sets(world, tmp_path):
    _write_inputs(world, tmp_path)
    _stage(world, tmp_path, tmp_path / "a", world["config"])
    # the same documents through a differently trained text tokenizer (same vocabulary size, other merges)
    other = TextTokenizer.train([d.text() for d in world["docs"]] * 2, vocab_size=400)
    other.save(str(tmp_path / "other.json"))
    _stage(world, tmp_path, tmp_path / "b",
           TokenizeConfig(**{**world["config"].__dict__, "text_tokenizer": str(tmp_path / "other.json")}))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(tmp_path / "a" / "part-00000-of-00001.arrow", mixed / "part-00000-of-00002.arrow")
    shutil.copy(tmp_path / "b" / "part-00000-of-00001.arrow", mixed / "part-00001-of-00002.arrow")
    with pytest.raises(ShardError, match="different tokenizers"):
        open_shards(str(mixed))


def test_preview_decodes_a_shard_sample_with_the_files_its_metadata_names(world, tmp_path):
    from interleaf.tokenizers.preview import decoded_row_html, decoded_row_text, load_preview
    _write_inputs(world, tmp_path)
    _stage(world, tmp_path, tmp_path / "tokens", world["config"])
    shards = open_shards(str(tmp_path / "tokens"))
    row = next(r for r in shards.read().to_pylist() if r["doc_id"] == "two-images")
    preview = load_preview(shards.token_info)  # finds the files through the metadata, checks their sha256
    assert preview.codec is not None and preview.vq is not None and preview.notes == []
    text = decoded_row_text(row["tokens"], preview.codec)
    assert "一段文字" in text and text.count("[image 8x8 codes:") == 3
    page = decoded_row_html(row["tokens"], preview.codec, preview.vq)
    assert page.count("data:image/png;base64,") == 3
    assert load_preview(shards.token_info, with_images=False).vq is None
    other = tmp_path / "other.json"
    TextTokenizer.train(["something else entirely"] * 3, vocab_size=300).save(str(other))
    wrong = load_preview(shards.token_info, text=str(other), image=str(tmp_path / "nope.pt"))
    assert wrong.codec is None and wrong.vq is None and len(wrong.notes) == 2


def test_inspect_decodes_token_shards(world, tmp_path, capsys):
    from interleaf.cli import main
    _write_inputs(world, tmp_path)
    _stage(world, tmp_path, tmp_path / "tokens", world["config"])
    assert main(["inspect", str(tmp_path / "tokens"), "--sample", "50", "--html", str(tmp_path / "t.html")]) == 0
    out = capsys.readouterr().out
    assert "一段文字" in out and "[image 8x8 codes:" in out  # text decoded by the BPE the metadata names
    page = (tmp_path / "t.html").read_text()
    assert "Sample token sequences, decoded" in page and "data:image/png;base64," in page  # VQ-decoded images
