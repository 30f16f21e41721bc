import random

import numpy as np
import pytest

from interleaf.model.data import (
    IGNORE,
    PackConfig,
    PackedStream,
    TokenCorpus,
    collate,
    drop_captions,
    first_fit,
    image_blocks,
    next_cells,
    rank_slice,
    split_document,
)
from interleaf.model.transformer import PAD_DOC
from interleaf.shards import ShardError


def _docs_of_row(row):
    """The document chunks of a packed row, in order."""
    out = []
    for d in range(int(row.doc.max()) + 1):
        sel = row.doc == d
        idx = np.nonzero(sel)[0]
        assert (np.diff(idx) == 1).all(), "a document's tokens are contiguous in its row"
        assert (row.pos[sel] == np.arange(sel.sum())).all(), "positions restart at each document"
        out.append(row.tokens[sel])
    return out


def test_packing_never_crosses_documents_or_splits_images(tmp_path, corpus):
    rng = random.Random(0)
    docs = [corpus.captioned(rng) if i % 3 else corpus.interleaved(rng, images=rng.randrange(1, 5))
            for i in range(60)]
    path = corpus.write(tmp_path / "tok", docs, shards=3)
    tc = TokenCorpus(path)
    assert len(tc) == 60 and tc.vocab == corpus.vocab
    assert [list(tc.document(i)) for i in range(60)] == docs

    seq_len = 48  # shorter than the interleaved documents: they must be cut, between image blocks
    stream = PackedStream(tc, PackConfig(seq_len=seq_len, window=16, seed=1))
    rows = [r for w in range(stream.windows_per_epoch) for r in stream.window_rows(0, w)]
    chunks = [c for r in rows for c in _docs_of_row(r)]
    boi, eoi = corpus.sp["<boi>"], corpus.sp["<eoi>"]
    block = 3 + 16
    for c in chunks:
        for s, e in image_blocks(c, corpus.vocab):
            assert e - s == block and c[s] == boi and c[e - 1] == eoi, "image blocks are whole"
        assert (c == boi).sum() == (c == eoi).sum()
    # each chunk is a contiguous piece of one document, and no token is lost or duplicated
    texts = [",".join(map(str, d)) + "," for d in docs]
    for c in chunks:
        piece = ",".join(map(str, c.tolist())) + ","
        assert any(piece in t for t in texts), "a packed chunk spans two documents"
    assert sum(len(c) for c in chunks) == sum(len(d) for d in docs)
    # rows are full-length, and padding only at the end
    for r in rows:
        assert len(r.tokens) == seq_len
        pad = r.doc == PAD_DOC
        assert not pad.any() or pad[np.argmax(pad):].all()

    batch = collate(rows[:4])
    t, y, d = batch.tokens.numpy(), batch.targets.numpy(), batch.doc_ids.numpy()
    for b in range(4):
        for i in range(seq_len - 1):
            if y[b, i] != IGNORE:
                assert d[b, i] == d[b, i + 1] != PAD_DOC and y[b, i] == t[b, i + 1]
            else:
                assert d[b, i] != d[b, i + 1] or d[b, i] == PAD_DOC
        assert y[b, -1] == IGNORE
    # every position whose target is an image code carries that code's grid cell, and no other position does
    cells, lo = batch.cells.numpy(), corpus.vocab.image_codebook_offset
    is_code = (y >= lo) & (y < lo + corpus.vocab.image_codebook_size)
    assert ((cells[..., 0] >= 0) == is_code).all() and is_code.any()
    assert ((cells[..., 0] >= 0) == (cells[..., 1] >= 0)).all()


def test_next_cells_name_the_grid_cell_of_the_code_each_position_predicts(corpus):
    codes = list(range(16))  # a 4x4 grid
    doc = np.array([corpus.sp["<bos>"], *corpus.text([1, 2]), *corpus.image(codes), *corpus.text([3]),
                    *corpus.image(codes), corpus.sp["<eos>"]])
    cells = next_cells(doc, corpus.vocab)
    for b in np.flatnonzero(doc == corpus.sp["<boi>"]):
        assert tuple(cells[b]) == (-1, -1)  # <boi> predicts the grid token
        # the grid token predicts cell (0, 0); code k predicts cell k + 1 in raster order; the last one <eoi>
        assert [tuple(c) for c in cells[b + 1:b + 17]] == [(k // 4, k % 4) for k in range(16)]
        assert tuple(cells[b + 17]) == (-1, -1)
    assert (cells[:4] == -1).all() and (cells[-1] == -1).all()
    # a block cut off (a prompt that has just opened an image) still names the cells it reaches
    cut = doc[:5 + 3]  # <bos> 2 text <boi> <grid> code0 code1 code2
    assert [tuple(c) for c in next_cells(cut, corpus.vocab)[4:]] == [(0, 0), (0, 1), (0, 2), (0, 3)]


def test_split_cuts_before_an_image_and_refuses_blocks_longer_than_a_row(corpus):
    doc = np.array(corpus.text([1, 2, 3]) + corpus.image(list(range(16))) + corpus.text([4]))
    with pytest.raises(ValueError, match="does not fit"):
        split_document(doc, 10, corpus.vocab)  # 10 < the block's 19 tokens
    chunks = split_document(doc, 20, corpus.vocab)
    assert [len(c) for c in chunks] == [3, 20]  # cut before <boi>, not at 20 (inside the block)
    assert chunks[1][0] == corpus.sp["<boi>"]


def test_split_keeps_each_caption_with_the_image_after_it(corpus):
    # caption, image, caption, image: a cut at the row's end would put the second caption's first tokens in
    # the first chunk and its image in the second; the cut goes right after the first image instead
    first = corpus.text([1, 2, 3]) + corpus.image(list(range(16)))
    second = corpus.text([4, 5, 6, 7]) + corpus.image(list(range(16)))
    chunks = split_document(np.array(first + second), len(first) + 2, corpus.vocab)
    assert [c.tolist() for c in chunks] == [first, second]


def test_first_fit():
    assert first_fit([5, 3, 4, 2, 1], 6) == [[0, 4], [1, 3], [2]]
    with pytest.raises(ValueError):
        first_fit([7], 6)


def test_caption_dropout_keeps_specials_and_images(corpus):
    doc = np.array([corpus.sp["<bos>"], *corpus.text([1, 2, 3]), *corpus.image([0] * 16), corpus.sp["<eos>"]])
    rng = np.random.default_rng(0)
    dropped = drop_captions(doc, corpus.vocab, rng, p=0.999999)
    assert dropped.tolist() == [corpus.sp["<bos>"], *corpus.image([0] * 16), corpus.sp["<eos>"]]
    assert drop_captions(doc, corpus.vocab, rng, p=0.0) is doc


def test_cursor_resumes_the_same_rows(tmp_path, corpus):
    rng = random.Random(1)
    path = corpus.write(tmp_path / "tok", [corpus.captioned(rng) for _ in range(50)])
    config = PackConfig(seq_len=64, window=8, caption_dropout=0.3, seed=3)
    straight = PackedStream(TokenCorpus(path), config)
    first = straight.next_rows(5)
    state = straight.state_dict()
    rest = straight.next_rows(40)  # crosses windows and an epoch boundary
    resumed = PackedStream(TokenCorpus(path), config)
    resumed.load_state_dict(state)
    again = resumed.next_rows(40)
    assert all((a.tokens == b.tokens).all() and (a.doc == b.doc).all() for a, b in zip(rest, again))
    assert straight.cursor.epoch >= 1
    assert first  # and a cursor from other packing settings is refused
    other = PackedStream(TokenCorpus(path), PackConfig(seq_len=32, window=8))
    with pytest.raises(ValueError, match="same shards and packing"):
        other.load_state_dict(state)


def test_rank_slice_partitions_the_global_batch():
    assert [rank_slice(8, r, 2) for r in range(2)] == [slice(0, 4), slice(4, 8)]
    with pytest.raises(ValueError):
        rank_slice(7, 0, 2)


def test_refuses_shards_from_different_tokenizers(tmp_path, corpus):
    from interleaf.model.data import write_token_shards
    from interleaf.schemas.tokens import TokenShardInfo

    rng = random.Random(2)
    corpus.write(tmp_path / "tok", [corpus.captioned(rng) for _ in range(4)], shards=2)
    other = TokenShardInfo(vocabulary=corpus.vocab, tokenizers={"text": "x" * 64, "image": "i" * 64})
    write_token_shards(str(tmp_path / "tok2"), [("a", corpus.captioned(rng))], other)
    import shutil
    shutil.copy(tmp_path / "tok2" / "part-00000-of-00001.arrow", tmp_path / "tok" / "part-00001-of-00002.arrow")
    with pytest.raises(ShardError, match="different tokenizers"):
        TokenCorpus(str(tmp_path / "tok"))


def test_corpus_is_memory_mapped_not_loaded(tmp_path, corpus):
    import pyarrow as pa

    rng = random.Random(3)
    path = corpus.write(tmp_path / "tok", [corpus.interleaved(rng, images=4) for _ in range(1500)], shards=2)
    before = pa.total_allocated_bytes()
    tc = TokenCorpus(path)
    size = int(tc.lengths.sum()) * 2  # uint16 ids
    assert size > 200_000
    assert pa.total_allocated_bytes() - before < size // 20  # the token values stay in the mapped files
    assert tc.document(1499).base is not None  # a view, not a copy
