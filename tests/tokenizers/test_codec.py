"""The sequence codec: one vocabulary, image blocks readable from the vocabulary alone, exact round trips,
splits only at node boundaries."""

import copy
import random

import pytest

from interleaf.schemas.document import Document, Node
from interleaf.schemas.tokens import Vocabulary
from interleaf.tokenizers.codec import SequenceCodec, build_vocabulary
from interleaf.tokenizers.layout import IMAGE_BLOCK, grid_tokens, image_block_length, token_layout

from .conftest import HARD_STRINGS

GRID = (8, 8)
K = 256


class _VQShape:  # what SequenceCodec.build reads from a VQModel (the real one is tested in test_vq.py)
    codebook_size = K
    grid = GRID


@pytest.fixture(scope="module")
def codec(text_tokenizer):
    return SequenceCodec.build(text_tokenizer, _VQShape())


def _codes(rng):
    return [rng.randrange(K) for _ in range(GRID[0] * GRID[1])]


def _with_codes(docs, rng):
    """The fixture documents with a sha256 and random codes for every image node."""
    codes = {}
    for d in docs:
        for i, n in enumerate(d.nodes):
            if n.is_image:
                n.image_sha256 = f"{d.doc_id}-{i}"
                codes[n.image_sha256] = _codes(rng)
    return codes


def _expected(doc, codes):
    out = []
    for n in doc.nodes:
        if n.kept and n.is_text and n.text:
            out.append(("text", n.text))
        elif n.kept and n.is_image and n.image_sha256 in codes:
            c = codes[n.image_sha256]
            out.append(("image", [c[r * GRID[1]:(r + 1) * GRID[1]] for r in range(GRID[0])]))
    return out


def test_vocabulary_layout(codec, text_tokenizer):
    v = codec.vocab
    assert list(v.special_tokens) == ["<pad>", "<bos>", "<eos>", "<boi>", "<eoi>", "<sep>", "<grid:8x8>"]
    assert v.image_codebook_offset == 7 and v.image_codebook_size == K
    assert v.text_offset == 7 + K and v.text_vocab_size == text_tokenizer.vocab_size
    assert v.size == 7 + K + text_tokenizer.vocab_size and str(v.token_type) == "uint16"
    # what a generator needs, from the vocabulary alone (as a trainer reads it from shard metadata)
    v2 = Vocabulary.from_json(v.to_json())
    assert grid_tokens(v2) == {6: (8, 8)} and image_block_length(v2) == 67


def test_image_block(codec):
    block = codec.image_block(list(range(64)))
    assert block[:2] == [3, 6] and block[-1] == 4 and block[2:-1] == [7 + c for c in range(64)]
    with pytest.raises(ValueError, match="64 codes"):
        codec.image_block([0] * 63)
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        codec.image_block([256] * 64)


def test_round_trip_on_fixture_documents(codec, fixture_docs):
    rng = random.Random(0)
    fixture_docs = copy.deepcopy(fixture_docs)  # the fixture is shared by other tests
    codes = _with_codes(fixture_docs, rng)
    assert sum(len(d.image_nodes) for d in fixture_docs) > 10
    for doc in fixture_docs:
        tokens = codec.encode(doc, codes)
        assert tokens[0] == codec.bos and tokens[-1] == codec.eos
        assert all(0 <= t < codec.vocab.size for t in tokens)
        assert codec.decode(tokens) == _expected(doc, codes)


def test_round_trip_of_hard_text_and_consecutive_nodes(codec):
    rng = random.Random(1)
    nodes = [Node.text_node(t) for t in HARD_STRINGS] + [
        Node(kind="image", image_url="u1", image_sha256="a"),
        Node(kind="image", image_url="u2", image_sha256="b"),
        Node.text_node("after")]
    doc = Document(doc_id="d", url="http://x", nodes=nodes)
    codes = {"a": _codes(rng), "b": _codes(rng)}
    tokens, report = codec.encode_counted(doc, codes)
    assert codec.decode(tokens) == _expected(doc, codes)
    assert report.text_nodes == len([t for t in HARD_STRINGS if t]) + 1 and report.image_nodes == 2
    assert report.skipped == {"empty_text": 1}


def test_skips_dropped_and_missing_nodes_and_keys_by_url(codec):
    rng = random.Random(2)
    nodes = [Node.text_node("kept"), Node.text_node("gone").dropped("too_short"),
             Node(kind="image", image_url="http://img/1"),  # no sha256: found by URL
             Node(kind="image", image_url="http://img/2", image_sha256="missing"),
             Node(kind="image", image_url="http://img/3", image_sha256="x").dropped("clip_low")]
    doc = Document(doc_id="d", url="http://x", nodes=nodes)
    by_url = _codes(rng)
    tokens, report = codec.encode_counted(doc, {"http://img/1": by_url, "x": _codes(rng)})
    assert report.skipped == {"image_missing": 1}
    grid = [by_url[r * 8:(r + 1) * 8] for r in range(8)]
    assert codec.decode(tokens) == [("text", "kept"), ("image", grid)]


def test_decode_rejects_malformed_blocks_unless_lenient(codec):
    good = codec.image_block([5] * 64)
    text = codec.text_ids("hi")
    cut = [codec.bos, *text, *good[:-10]]  # a block cut off before <eoi>
    with pytest.raises(ValueError, match="needs 64 image codes"):
        codec.decode(cut)
    assert codec.decode(cut, strict=False) == [("text", "hi")]
    no_grid = [codec.boi, *good[2:], *text]
    with pytest.raises(ValueError, match="grid token"):
        codec.decode(no_grid)
    wrong = [*good[:5], text[0], *good[6:], *text]  # a text id inside the block
    assert codec.decode(wrong, strict=False) == [("text", "hi")]


def _random_doc(rng, i):
    nodes = []
    for _ in range(rng.randrange(1, 12)):
        if rng.random() < 0.4:
            nodes.append(Node(kind="image", image_url=f"u{i}", image_sha256=str(rng.randrange(5))))
        else:
            nodes.append(Node.text_node(" ".join(rng.choice(["word", "漢字", "🎉", "x"])
                                                 for _ in range(rng.randrange(1, 60)))))
    return Document(doc_id=str(i), url="http://x", nodes=nodes)


def test_split_never_cuts_an_image_block(codec):
    rng = random.Random(3)
    codes = {str(k): _codes(rng) for k in range(5)}
    pieces_seen = 0
    for i in range(60):
        doc = _random_doc(rng, i)
        tokens = codec.encode(doc, codes)
        for max_length in (67, 80, 150, 400):
            pieces = codec.split(tokens, max_length)
            pieces_seen += len(pieces)
            assert [t for p in pieces for t in p] == tokens  # lossless
            assert all(1 <= len(p) <= max_length for p in pieces)
            for p in pieces:  # every image block is whole inside its piece
                for span in token_layout(p, codec.vocab):
                    if span.kind == IMAGE_BLOCK:
                        assert span.closed and len(span.tokens) == 65
                assert p.count(codec.boi) == p.count(codec.eoi)
            # cuts fall on node boundaries unless a single text node is longer than max_length
            bounds = {s for s, _, _ in codec.units(tokens)} | {len(tokens)}
            longest_text = max((e - s for s, e, img in codec.units(tokens) if not img), default=0)
            cut, at = 0, []
            for p in pieces[:-1]:
                cut += len(p)
                at.append(cut)
            if longest_text <= max_length:
                assert set(at) <= bounds
    assert pieces_seen > 240
    with pytest.raises(ValueError, match="shorter than one image block"):
        codec.split([codec.bos], 66)


def test_codec_refuses_a_text_tokenizer_of_another_size(text_tokenizer):
    vocab = build_vocabulary(text_vocab_size=text_tokenizer.vocab_size + 1, image_codebook_size=K,
                             image_grid=GRID)
    with pytest.raises(ValueError, match="not the tokenizer"):
        SequenceCodec(vocab, text_tokenizer)
    plain = Vocabulary.build(image_codebook_size=K, text_vocab_size=text_tokenizer.vocab_size,
                             image_grid=GRID)
    with pytest.raises(ValueError, match="lacks the codec's special tokens"):
        SequenceCodec(plain, text_tokenizer)
