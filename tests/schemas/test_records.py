"""Every record kind survives Arrow and a shard file unchanged, and bad records are refused clearly."""

from datetime import datetime, timezone

import pyarrow as pa
import pytest

from interleaf.schemas.document import (DOCUMENT_SCHEMA, Document, Node, documents_from_table,
                                        documents_to_table, make_doc_id)
from interleaf.schemas.image import IMAGE_SCHEMA, ImageRecord, images_from_table, images_to_table
from interleaf.schemas.meta import SchemaMismatchError, shard_kind
from interleaf.schemas.tokens import TokenShardInfo, Vocabulary, token_info_from_schema, tokens_to_table
from interleaf.shards import read_shard, write_shard


def sample_document() -> Document:
    nodes = [Node.text_node("Le café ☕ est prêt. 東京"),
             Node.image_node("https://example.org/a.jpg", alt_text="a cup", width=640, height=480),
             Node.text_node("Second paragraph.").dropped("too_short")]
    nodes[1].image_sha256 = "ab" * 32
    nodes[1].clip_score = 0.25
    return Document(doc_id=make_doc_id("https://example.org/", nodes), url="https://example.org/",
                    source_file="crawl.warc.gz", source_offset=1234,
                    crawl_date=datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc), language="fr", nodes=nodes,
                    meta={"k": [1, 2]})


def test_document_round_trip_through_a_shard(tmp_path):
    docs = [sample_document(), sample_document().dropped("too_few_words")]
    table = documents_to_table(docs)
    assert table.schema.equals(DOCUMENT_SCHEMA, check_metadata=True)
    path = str(tmp_path / "part-00000-of-00001.arrow")
    write_shard(path, table)
    back = documents_from_table(read_shard(path, DOCUMENT_SCHEMA))
    assert back == docs
    assert back[1].reason == "too_few_words" and back[0].nodes[2].reason == "too_short"
    for d in back:
        d.validate()


def test_doc_id_is_stable_and_content_derived():
    a, b = sample_document(), sample_document()
    assert a.doc_id == b.doc_id and len(a.doc_id) == 32
    changed = [Node.text_node("other text")]
    assert make_doc_id(a.url, changed) != a.doc_id
    assert make_doc_id("https://example.org/other", a.nodes) != a.doc_id


def test_node_validation_catches_inconsistent_status():
    with pytest.raises(ValueError, match="needs a reason"):
        Node(kind="text", text="x", status="dropped").validate()
    with pytest.raises(ValueError, match="kind must be"):
        Node(kind="video", text="x").validate()
    doc = sample_document()
    doc.nodes.append(Node(kind="image"))
    with pytest.raises(ValueError, match="node 3: image node without"):
        doc.validate()


def test_image_record_round_trip(tmp_path):
    ok = ImageRecord(sha256="cd" * 32, urls=["http://a/x.jpg", "http://b/x.jpg"], width=256, height=192,
                     original_width=640, original_height=480, original_bytes=51234, format="jpeg",
                     phash="8f3c3c3c3c3c3c3c", source="fetch", data=b"\xff\xd8\xff", clip_model="tiny",
                     clip_embedding=[0.5, -0.5], clip_score=0.31)
    failed = ImageRecord(sha256=None, urls=["http://c/y.png"], status="http_4xx", error="404 Not Found")
    for r in (ok, failed):
        r.validate()
    path = str(tmp_path / "images.arrow")
    write_shard(path, images_to_table([ok, failed]))
    back = images_from_table(read_shard(path, IMAGE_SCHEMA))
    assert back[1] == failed
    assert back[0].clip_embedding == pytest.approx([0.5, -0.5]) and back[0].data == ok.data
    with pytest.raises(ValueError, match="status must be one of"):
        ImageRecord(sha256=None, urls=["u"], status="weird").validate()


def _info(text_vocab=1000, codes=512, tokenizer="t" * 64) -> TokenShardInfo:
    vocab = Vocabulary.build(image_codebook_size=codes, text_vocab_size=text_vocab, image_grid=(8, 8))
    return TokenShardInfo(vocabulary=vocab, tokenizers={"text": tokenizer, "image": "i" * 64},
                          config={"max_length": 2048}, producer="interleaf test")


def test_token_shard_round_trip_and_metadata(tmp_path):
    info = _info()
    vocab = info.vocabulary
    assert vocab.special_tokens["<pad>"] == 0 and vocab.image_codebook_offset == 5
    assert vocab.text_offset == 5 + 512 and vocab.size == 5 + 512 + 1000
    rows = [("d1", [1, 3, 5, 6, 4, 600, 2]), ("d2", [1, 2])]
    table = tokens_to_table(rows, info)
    assert table.schema.field("tokens").type.value_type == pa.uint16()
    path = str(tmp_path / "t.arrow")
    write_shard(path, table)
    back = read_shard(path)
    assert shard_kind(back.schema) == "tokens"
    assert token_info_from_schema(back.schema) == info
    assert back["tokens"].to_pylist() == [r[1] for r in rows]


def test_large_vocabulary_uses_int32():
    info = _info(text_vocab=70000)
    assert tokens_to_table([("d", [70000])], info).schema.field("tokens").type.value_type == pa.int32()


def test_token_ids_outside_the_vocabulary_are_refused():
    with pytest.raises(ValueError, match="out of the vocabulary"):
        tokens_to_table([("d", [99999])], _info())


def test_overlapping_vocabulary_is_refused():
    vocab = Vocabulary(special_tokens={"<pad>": 0, "<bos>": 1, "<eos>": 2, "<boi>": 3, "<eoi>": 4},
                       image_codebook_offset=4, image_codebook_size=10, text_offset=14, text_vocab_size=5,
                       image_grid=(2, 2))
    with pytest.raises(SchemaMismatchError, match="overlap"):
        vocab.validate()
