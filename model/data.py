"""Token shards to training batches: memory-mapped documents, first-fit packing, a resumable cursor.

Documents stay in the memory-mapped Arrow shards; each is a numpy view into the mapped file, read only when a
window of documents is packed. Packing is first-fit (Krell et al. 2021, "Efficient sequence packing without
cross-contamination") within a window of shuffled documents: each document goes into the first row with room
for it, and attention and positions are kept per document (see transformer.py), so nothing leaks between the
documents of a row. A document longer than a row is cut into chunks, never inside an image block.

The stream of packed rows is a pure function of (seed, epoch, window): the cursor (epoch, window, row) is all a
checkpoint needs to resume exactly, and every data-parallel rank computes the same stream and keeps its own
slice of each global batch (`rank_slice`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import torch

from interleaf.model.transformer import PAD_DOC
from interleaf.schemas.meta import KIND_TOKENS
from interleaf.schemas.tokens import TokenShardInfo, Vocabulary
from interleaf.shards import open_shards, read_shard
from interleaf.tokenizers.layout import IMAGE_BLOCK, grid_tokens, token_layout

log = logging.getLogger(__name__)

IGNORE = -100  # target of positions that carry no loss (padding, a document's last token, a row's end)


class TokenCorpus:
    """The documents of a directory (or glob) of token shards, memory-mapped, addressed by a global index."""

    def __init__(self, path: str, *, quiet: bool = False):
        self.shards = open_shards(path, kind=KIND_TOKENS)
        self.info: TokenShardInfo = self.shards.token_info
        self.vocab: Vocabulary = self.info.vocabulary
        self._offsets: list[np.ndarray] = []  # per record batch: (rows + 1,) offsets into its values
        self._values: list[np.ndarray] = []  # per record batch: the flat token ids (a view of the mapping)
        for shard in self.shards.paths:
            # a local shard is memory-mapped: the table's buffers are views of the file, nothing is copied
            for column in read_shard(shard, self.shards.schema, ["tokens"]).column("tokens").chunks:
                if column.null_count:
                    raise ValueError(f"{shard}: token shard has null token lists")
                self._offsets.append(np.asarray(column.offsets))
                self._values.append(np.asarray(column.values))  # zero-copy: the column has no nulls
        counts = np.array([len(o) - 1 for o in self._offsets], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])  # first global index of each batch
        self.lengths = np.concatenate([np.diff(o) for o in self._offsets]) if self._offsets else \
            np.zeros(0, np.int64)
        (log.debug if quiet else log.info)("token corpus %s: %d documents, %d tokens, vocabulary %d (%d image codes, grid %s)", path,
                 len(self), int(self.lengths.sum()), self.vocab.size, self.vocab.image_codebook_size,
                 "x".join(map(str, self.vocab.image_grid)))

    def __len__(self) -> int:
        return int(self._starts[-1])

    def document(self, index: int) -> np.ndarray:
        """Token ids of document `index` (a read-only view into the mapped shard)."""
        b = int(np.searchsorted(self._starts, index, side="right")) - 1
        row = index - self._starts[b]
        offsets = self._offsets[b]
        return self._values[b][offsets[row]:offsets[row + 1]]


# ---------------------------------------------------------------- documents: image blocks, captions, chunks

def image_blocks(tokens, vocab: Vocabulary) -> list[tuple[int, int]]:
    """[start, end) of each image block, <boi> and <eoi> included (from tokenizers.layout)."""
    blocks, at = [], 0
    for span in token_layout(list(tokens), vocab):
        if span.kind == IMAGE_BLOCK:
            n = len(span.tokens) + (2 if span.closed else 1)
            blocks.append((at, at + n))
        else:
            n = len(span.tokens)
        at += n
    return blocks


def next_cells(tokens: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """(T, 2): for each position, the (row, column) in its image grid of the code the *next* token is, or
    (-1, -1) where the next token is no image code. The model adds embeddings of these cells (transformer.py,
    `grid_positions`), so it knows where in the image the code it predicts goes.

    An image block is `<boi> <grid:RxC> codes <eoi>`: the grid token predicts cell (0, 0), code k predicts
    cell k + 1 in raster order, the last code predicts <eoi> (no cell)."""
    tokens = np.asarray(tokens)
    cells = np.full((len(tokens), 2), -1, dtype=np.int64)
    grids = grid_tokens(vocab)
    for b in np.flatnonzero(tokens == vocab.special_tokens["<boi>"]):
        grid = grids.get(int(tokens[b + 1])) if b + 1 < len(tokens) else None
        if grid is None:
            continue
        rows, cols = grid
        k = np.arange(min(rows * cols, len(tokens) - b - 1))
        cells[b + 1 + k, 0], cells[b + 1 + k, 1] = k // cols, k % cols
    return cells


def drop_captions(tokens: np.ndarray, vocab: Vocabulary, rng: np.random.Generator, p: float) -> np.ndarray:
    """Caption dropout for classifier-free guidance: with probability p per image block, the text tokens between
    the previous block (or the document start) and this block are removed; special tokens (<bos>, separators)
    stay. The model thereby learns p(image | no caption), the unconditional half of guidance."""
    if p <= 0:
        return tokens
    specials = set(vocab.special_tokens.values())
    keep = np.ones(len(tokens), dtype=bool)
    previous_end = 0
    for start, end in image_blocks(tokens, vocab):
        if rng.random() < p:
            for i in range(previous_end, start):
                keep[i] = int(tokens[i]) in specials
        previous_end = end
    return tokens if keep.all() else tokens[keep]


def split_document(tokens: np.ndarray, max_len: int, vocab: Vocabulary) -> list[np.ndarray]:
    """Cut a document into chunks of at most max_len tokens, never inside an image block, and right after
    the last image block that ends in the chunk when there is one: the text that follows an image (the next
    image's caption) then starts the next chunk with its image, not cut in two across chunks."""
    if len(tokens) <= max_len:
        return [tokens]
    blocks = image_blocks(tokens, vocab)
    chunks, start = [], 0
    while len(tokens) - start > max_len:
        end = start + max_len
        ends = [b1 for _, b1 in blocks if start < b1 <= end]
        if ends:
            end = ends[-1]
        for b0, b1 in blocks:
            if b0 < end < b1:  # the cut would fall inside this block: cut before it
                end = b0
                break
        if end <= start:
            raise ValueError(f"an image block of {b1 - b0} tokens does not fit in a row of {max_len}; "
                             "raise seq_len above the image block length")
        chunks.append(tokens[start:end])
        start = end
    chunks.append(tokens[start:])
    return chunks


def first_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins (lists of item indices, in arrival order) filled first-fit: each item goes to the first bin with room."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i, n in enumerate(lengths):
        if n > capacity:
            raise ValueError(f"item {i} of length {n} exceeds the bin capacity {capacity}")
        for b, r in enumerate(room):
            if n <= r:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(capacity - n)
    return bins


# ---------------------------------------------------------------- packed rows and batches

@dataclass(frozen=True)
class PackedRow:
    tokens: np.ndarray  # (T,) token ids, <pad> after the last document
    doc: np.ndarray  # (T,) document index within the row, PAD_DOC for padding
    pos: np.ndarray  # (T,) position within the document (rotary restarts per document)
    cells: np.ndarray  # (T, 2) image-grid cell of the next token's code, -1 where it is none (next_cells)


def pack_row(chunks: list[np.ndarray], seq_len: int, pad_id: int, vocab: Vocabulary) -> PackedRow:
    tokens = np.full(seq_len, pad_id, dtype=np.int64)
    doc = np.full(seq_len, PAD_DOC, dtype=np.int64)
    pos = np.zeros(seq_len, dtype=np.int64)
    cells = np.full((seq_len, 2), -1, dtype=np.int64)
    at = 0
    for d, chunk in enumerate(chunks):
        n = len(chunk)
        tokens[at:at + n] = chunk
        doc[at:at + n] = d
        pos[at:at + n] = np.arange(n)
        cells[at:at + n] = next_cells(chunk, vocab)
        at += n
    return PackedRow(tokens, doc, pos, cells)


@dataclass(kw_only=True, frozen=True)
class PackConfig:
    seq_len: int  # tokens per packed row (T)
    window: int = 256  # documents shuffled and packed together; larger packs tighter, costs more per window
    caption_dropout: float = 0.0  # probability of dropping the text before an image block (for CFG)
    seed: int = 0  # shuffling and caption dropout
    shuffle: bool = True  # a new permutation of the documents each epoch


@dataclass
class Cursor:
    """Where the stream stands: the next row is row `row` of window `window` of epoch `epoch`."""

    epoch: int = 0
    window: int = 0
    row: int = 0


class PackedStream:
    """An endless, deterministic stream of packed rows over a corpus, resumable from its cursor."""

    def __init__(self, corpus: TokenCorpus, config: PackConfig):
        if len(corpus) == 0:
            raise ValueError("the token corpus has no documents")
        self.corpus, self.config, self.vocab = corpus, config, corpus.vocab
        self.cursor = Cursor()
        self._cached: tuple[tuple[int, int], list[PackedRow]] | None = None

    @property
    def windows_per_epoch(self) -> int:
        return -(-len(self.corpus) // self.config.window)

    def order(self, epoch: int) -> np.ndarray:
        n = len(self.corpus)
        if not self.config.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.config.seed, epoch]).permutation(n)

    def window_rows(self, epoch: int, window: int) -> list[PackedRow]:
        """The packed rows of one window: a pure function of (seed, epoch, window)."""
        if self._cached and self._cached[0] == (epoch, window):
            return self._cached[1]
        c = self.config
        docs = self.order(epoch)[window * c.window:(window + 1) * c.window]
        chunks: list[np.ndarray] = []
        for d in docs:
            tokens = self.corpus.document(int(d))
            if c.caption_dropout > 0:
                rng = np.random.default_rng([c.seed, epoch, int(d), 1])
                tokens = drop_captions(tokens, self.vocab, rng, c.caption_dropout)
            chunks += split_document(tokens, c.seq_len, self.vocab)
        bins = first_fit([len(x) for x in chunks], c.seq_len)
        pad = self.vocab.special_tokens["<pad>"]
        rows = [pack_row([chunks[i] for i in b], c.seq_len, pad, self.vocab) for b in bins]
        self._cached = ((epoch, window), rows)
        return rows

    def next_rows(self, n: int) -> list[PackedRow]:
        out: list[PackedRow] = []
        cur = self.cursor
        while len(out) < n:
            rows = self.window_rows(cur.epoch, cur.window)
            take = rows[cur.row:cur.row + n - len(out)]
            out += take
            cur.row += len(take)
            if cur.row >= len(rows):
                cur.window, cur.row = cur.window + 1, 0
                if cur.window >= self.windows_per_epoch:
                    cur.epoch, cur.window = cur.epoch + 1, 0
                    log.debug("data: starting epoch %d", cur.epoch)
        return out

    def state_dict(self) -> dict:
        return {"cursor": asdict(self.cursor), "config": asdict(self.config), "documents": len(self.corpus)}

    def load_state_dict(self, state: dict) -> None:
        if state["config"] != asdict(self.config) or state["documents"] != len(self.corpus):
            raise ValueError(f"the data cursor was saved for {state['documents']} documents packed with "
                             f"{state['config']}, but this run has {len(self.corpus)} documents packed with "
                             f"{asdict(self.config)}; resume with the same shards and packing settings")
        self.cursor = Cursor(**state["cursor"])


def rank_slice(n: int, rank: int, world: int) -> slice:
    """The rows of a global batch of n that data-parallel rank `rank` of `world` trains on (contiguous)."""
    if n % world:
        raise ValueError(f"a global batch of {n} rows does not split over {world} ranks")
    per = n // world
    return slice(rank * per, (rank + 1) * per)


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, T) input ids
    targets: torch.Tensor  # (B, T) next token within the same document, IGNORE elsewhere
    doc_ids: torch.Tensor  # (B, T) document within the row, PAD_DOC for padding
    positions: torch.Tensor  # (B, T) position within the document
    cells: torch.Tensor  # (B, T, 2) image-grid cell of the next token's code, -1 where none

    def to(self, device) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in (self.tokens, self.targets, self.doc_ids,
                                                                 self.positions, self.cells)))


def collate(rows: list[PackedRow]) -> Batch:
    tokens = torch.from_numpy(np.stack([r.tokens for r in rows]))
    doc = torch.from_numpy(np.stack([r.doc for r in rows]))
    pos = torch.from_numpy(np.stack([r.pos for r in rows]))
    cells = torch.from_numpy(np.stack([r.cells for r in rows]))
    targets = torch.full_like(tokens, IGNORE)
    same = (doc[:, 1:] == doc[:, :-1]) & (doc[:, :-1] != PAD_DOC)  # next token is in the same document
    targets[:, :-1] = torch.where(same, tokens[:, 1:], IGNORE)
    return Batch(tokens, targets, doc, pos, cells)


def write_token_shards(directory: str, documents: list[tuple[str, list[int]]], info: TokenShardInfo,
                       *, shards: int = 1) -> list[str]:
    """Write documents as token shards (for tests, recipes and benchmarks that build their own corpus)."""
    from interleaf.schemas.tokens import tokens_to_table
    from interleaf.shards import write_shards

    per = -(-len(documents) // shards)
    tables: list[pa.Table] = [tokens_to_table(documents[i:i + per], info) for i in range(0, len(documents), per)]
    return write_shards(directory, tables)
