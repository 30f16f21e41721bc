"""Small token corpora built inside the tests: a vocabulary laid out like the codec's (specials, image codes,
text) and documents of caption + image block whose image codes follow from the caption, so a model can learn
them in a few steps."""

from __future__ import annotations

import random

import pytest
import torch

from interleaf.model.data import write_token_shards
from interleaf.schemas.tokens import TokenShardInfo
from interleaf.tokenizers.codec import build_vocabulary
from interleaf.tokenizers.layout import grid_token_name


class Corpus:
    """The codec's vocabulary layout with a toy text side: <pad> <bos> <eos> <boi> <eoi> <sep> <grid:RxC>, then
    `codes` image codes, then `text` text tokens."""

    def __init__(self, grid=(4, 4), codes=16, text=24):
        self.vocab = build_vocabulary(text_vocab_size=text, image_codebook_size=codes, image_grid=grid)
        self.info = TokenShardInfo(vocabulary=self.vocab, tokenizers={"text": "t" * 64, "image": "i" * 64})
        self.sp = self.vocab.special_tokens
        self.grid_token = self.sp[grid_token_name(grid)]

    def text(self, ids):
        return [self.vocab.text_offset + i for i in ids]

    def image(self, codes):
        return [self.sp["<boi>"], self.grid_token, *[self.vocab.image_codebook_offset + c for c in codes],
                self.sp["<eoi>"]]

    def captioned(self, rng: random.Random) -> list[int]:
        """<bos> caption(2-5 text tokens, the first is a 'colour' 0..3) image(codes from the colour) <eos>."""
        colour = rng.randrange(4)
        n = self.vocab.image_grid[0] * self.vocab.image_grid[1]
        codes = [(colour * 4 + i % 4) % self.vocab.image_codebook_size for i in range(n)]
        words = [colour] + [rng.randrange(4, self.vocab.text_vocab_size) for _ in range(rng.randrange(1, 5))]
        return [self.sp["<bos>"], *self.text(words), *self.image(codes), self.sp["<eos>"]]

    def interleaved(self, rng: random.Random, images: int = 3) -> list[int]:
        """Text, image, text, image ...: a longer document for splitting tests."""
        out = [self.sp["<bos>"]]
        n = self.vocab.image_grid[0] * self.vocab.image_grid[1]
        for _ in range(images):
            out += self.text([rng.randrange(self.vocab.text_vocab_size) for _ in range(rng.randrange(1, 9))])
            out += self.image([rng.randrange(self.vocab.image_codebook_size) for _ in range(n)])
        return out + [self.sp["<eos>"]]

    def write(self, directory, docs: list[list[int]], shards: int = 1) -> str:
        write_token_shards(str(directory), [(f"doc-{i:05d}", d) for i, d in enumerate(docs)], self.info,
                           shards=shards)
        return str(directory)


@pytest.fixture
def corpus() -> Corpus:
    return Corpus()


@pytest.fixture(autouse=True)
def _few_threads():
    """Two shared cores: one thread per test process keeps the suite from oversubscribing them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
