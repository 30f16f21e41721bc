"""The interleaved sequence codec: Documents to token ids in one vocabulary, and back.

Vocabulary (schemas.tokens.Vocabulary, Chameleon-style early fusion), in id order:
    0..S-1      special tokens: <pad> <bos> <eos> <boi> <eoi> <sep> <grid:RxC>
    S..S+K-1    the K image codes of the VQ codebook (one contiguous range, code c is id S + c)
    S+K..       the text tokens of the byte-level BPE (text id t is id S + K + t)

A document is `<bos> node node ... <eos>` over its kept nodes, in reading order:
    text node   its BPE ids; two text nodes in a row are separated by <sep> (an image block already
                separates a text node from its neighbours), so node boundaries are visible in the ids alone
    image node  an image block, `<boi> <grid:RxC> c_0 ... c_{R*C-1} <eoi>`: the grid token right after <boi>
                names the shape, then exactly R*C codes in raster order (row by row), then <eoi>. The tiny
                VQ's block is <boi> <grid:8x8> + 64 codes + <eoi> = 67 tokens.
A generator needs only the vocabulary to sample a well-formed block: after <boi> allow only the grid tokens
(interleaf.tokenizers.layout.grid_tokens; today one, the vocabulary's image_grid), then R*C tokens restricted
to the image range, then force <eoi>. Empty text nodes and image nodes whose codes are not given are skipped
(encode_counted says which and why). <pad> is never written inside a document; it is for batching.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from interleaf.schemas.document import Document
from interleaf.schemas.tokens import DEFAULT_SPECIAL_TOKENS, Vocabulary
from interleaf.tokenizers.layout import SEP, grid_token_name, grid_tokens, image_block_length
from interleaf.tokenizers.text_bpe import TextTokenizer

log = logging.getLogger(__name__)

# reasons a node is left out of the sequence (counters under the tokenize stage)
SKIP_EMPTY_TEXT = "empty_text"
SKIP_IMAGE_UNRESOLVED = "image_unresolved"  # image node with neither sha256 nor url
SKIP_IMAGE_MISSING = "image_missing"  # its codes were not given (not in the image store, or not encodable)


def codec_special_tokens(grid: tuple[int, int]) -> tuple[str, ...]:
    """The special tokens of a codec vocabulary for images of `grid` codes."""
    return (*DEFAULT_SPECIAL_TOKENS, SEP, grid_token_name(grid))


def build_vocabulary(*, text_vocab_size: int, image_codebook_size: int,
                     image_grid: tuple[int, int]) -> Vocabulary:
    return Vocabulary.build(image_codebook_size=image_codebook_size, text_vocab_size=text_vocab_size,
                            image_grid=tuple(image_grid), special_tokens=codec_special_tokens(image_grid))


@dataclass
class EncodeReport:
    """What encode_counted did with a document's kept nodes."""

    text_nodes: int = 0  # text nodes written
    image_nodes: int = 0  # image blocks written
    skipped: Counter = field(default_factory=Counter)  # reason -> nodes left out


class SequenceCodec:
    """Documents <-> token ids in one vocabulary (see the module docstring for the layout)."""

    def __init__(self, vocab: Vocabulary, text: TextTokenizer | None):
        vocab.validate()
        self.vocab = vocab
        self.text = text
        s = vocab.special_tokens
        missing = [n for n in (SEP, grid_token_name(vocab.image_grid)) if n not in s]
        if missing:
            raise ValueError(f"vocabulary lacks the codec's special tokens {missing}; build it with "
                             "interleaf.tokenizers.codec.build_vocabulary (special tokens "
                             f"{codec_special_tokens(vocab.image_grid)})")
        if text is not None and text.vocab_size != vocab.text_vocab_size:
            raise ValueError(f"text tokenizer has {text.vocab_size} tokens but the vocabulary says "
                             f"{vocab.text_vocab_size}: it is not the tokenizer these tokens were made with")
        self.pad, self.bos, self.eos = s["<pad>"], s["<bos>"], s["<eos>"]
        self.boi, self.eoi, self.sep = s["<boi>"], s["<eoi>"], s[SEP]
        self.grid = tuple(vocab.image_grid)
        self.grid_token = s[grid_token_name(self.grid)]
        self.grids = grid_tokens(vocab)  # grid token id -> (rows, cols)
        self.codes_per_image = self.grid[0] * self.grid[1]
        self.block_length = image_block_length(vocab)

    @classmethod
    def build(cls, text: TextTokenizer, vq) -> SequenceCodec:
        """The codec of a text tokenizer and a VQModel (anything with codebook_size and grid)."""
        vocab = build_vocabulary(text_vocab_size=text.vocab_size, image_codebook_size=vq.codebook_size,
                                 image_grid=vq.grid)
        return cls(vocab, text)

    def _need_text(self) -> TextTokenizer:
        if self.text is None:
            raise ValueError("this codec has no text tokenizer: load the tokenizer.json named in the token "
                             "shard's metadata and pass it to SequenceCodec")
        return self.text

    # ------------------------------------------------------------ encode

    def text_ids(self, text: str) -> list[int]:
        off = self.vocab.text_offset
        return [off + t for t in self._need_text().encode(text)]

    def image_block(self, codes: list[int]) -> list[int]:
        """<boi> <grid:RxC> codes + offset <eoi> for R*C codebook indices in raster order."""
        codes = [int(c) for c in codes]
        if len(codes) != self.codes_per_image:
            raise ValueError(f"an image of grid {self.grid[0]}x{self.grid[1]} has {self.codes_per_image} "
                             f"codes, found {len(codes)}")
        k = self.vocab.image_codebook_size
        if codes and (min(codes) < 0 or max(codes) >= k):
            raise ValueError(f"image codes must be in [0, {k}), found [{min(codes)}, {max(codes)}]")
        off = self.vocab.image_codebook_offset
        return [self.boi, self.grid_token, *(off + c for c in codes), self.eoi]

    def encode_counted(self, doc: Document,
                       image_codes: dict[str, list[int]]) -> tuple[list[int], EncodeReport]:
        """The sequence of `doc`'s kept nodes and a report of what was written and skipped.

        `image_codes` maps an image node's image_sha256 (or, failing that, its image_url) to its codes.
        """
        report = EncodeReport()
        texts: list[str] = []
        plan: list[tuple[str, object]] = []  # ("text", index into texts) or ("image", codes)
        for node in doc.nodes:
            if not node.kept:
                continue
            if node.is_text:
                if not node.text:
                    report.skipped[SKIP_EMPTY_TEXT] += 1
                    continue
                plan.append(("text", len(texts)))
                texts.append(node.text)
            elif node.is_image:
                key = node.image_sha256 or node.image_url
                if not key:
                    report.skipped[SKIP_IMAGE_UNRESOLVED] += 1
                    continue
                codes = image_codes.get(node.image_sha256) if node.image_sha256 else None
                if codes is None and node.image_url:
                    codes = image_codes.get(node.image_url)
                if codes is None:
                    report.skipped[SKIP_IMAGE_MISSING] += 1
                    continue
                plan.append(("image", codes))
        encoded = self._need_text().encode_batch(texts) if texts else []
        off = self.vocab.text_offset
        out = [self.bos]
        previous = None
        for kind, value in plan:
            if kind == "text":
                if previous == "text":
                    out.append(self.sep)
                out.extend(off + t for t in encoded[value])
                report.text_nodes += 1
            else:
                out.extend(self.image_block(value))
                report.image_nodes += 1
            previous = kind
        out.append(self.eos)
        return out, report

    def encode(self, doc: Document, image_codes: dict[str, list[int]]) -> list[int]:
        """<bos> kept nodes <eos>; image nodes without codes in `image_codes` are skipped."""
        return self.encode_counted(doc, image_codes)[0]

    # ------------------------------------------------------------ decode

    def decode(self, tokens: list[int], *, strict: bool = True) -> list[tuple[str, object]]:
        """[("text", str) | ("image", rows x cols list of codebook indices)] in order.

        <bos>, <eos> and <pad> are dropped; <sep> ends a text node. A malformed image block (wrong grid token,
        a non-code inside, cut off before <eoi>) raises ValueError, or with strict=False is left out and
        logged (for generated sequences).
        """
        v = self.vocab
        img_lo, img_hi = v.image_codebook_offset, v.image_codebook_offset + v.image_codebook_size
        txt_lo, txt_hi = v.text_offset, v.text_offset + v.text_vocab_size
        out: list[tuple[str, object]] = []
        text_run: list[int] = []

        def flush_text():
            if text_run:
                out.append(("text", self._need_text().decode([t - txt_lo for t in text_run])))
                text_run.clear()

        def bad(msg: str):
            if strict:
                raise ValueError(msg)
            log.warning("skipping a malformed image block: %s", msg)

        i, n = 0, len(tokens)
        while i < n:
            t = int(tokens[i])
            if t == self.boi:
                flush_text()
                grid = self.grids.get(int(tokens[i + 1])) if i + 1 < n else None
                if grid is None:
                    bad(f"position {i}: <boi> must be followed by a grid token {sorted(self.grids)}, found "
                        f"{tokens[i + 1] if i + 1 < n else 'the end'}")
                    i += 1
                    continue
                count = grid[0] * grid[1]
                start, end = i + 2, i + 2 + count
                body = [int(c) for c in tokens[start:end]]
                if len(body) < count or end >= n or int(tokens[end]) != self.eoi or any(
                        not img_lo <= c < img_hi for c in body):
                    bad(f"position {i}: an image block of grid {grid[0]}x{grid[1]} needs {count} image codes "
                        f"then <eoi> ({count + 3} tokens)")
                    # resume after this block's <eoi> if there is one, else after the <boi>
                    nxt = next((j for j in range(i + 1, n) if int(tokens[j]) == self.eoi), None)
                    i = (nxt + 1) if nxt is not None else i + 1
                    continue
                codes = [c - img_lo for c in body]
                out.append(("image", [codes[r * grid[1]:(r + 1) * grid[1]] for r in range(grid[0])]))
                i = end + 1
            elif t == self.sep:
                flush_text()
                i += 1
            elif txt_lo <= t < txt_hi:
                text_run.append(t)
                i += 1
            elif t in (self.bos, self.eos, self.pad):
                flush_text()
                i += 1
            else:
                flush_text()
                bad(f"position {i}: token {t} outside any text span or image block")
                i += 1
        flush_text()
        return out

    # ------------------------------------------------------------ split

    def units(self, tokens: list[int]) -> list[tuple[int, int, bool]]:
        """The sequence cut at node boundaries: (start, end, is_image_block) spans that tile `tokens`.
        <bos>, <eos> and <sep> are units of their own; an image block (even one cut off) is one unit."""
        spans = []
        i, n = 0, len(tokens)
        while i < n:
            t = int(tokens[i])
            if t == self.boi:
                j = i + 1
                while j < n and int(tokens[j]) != self.eoi:
                    j += 1
                end = min(j + 1, n)
                spans.append((i, end, True))
                i = end
            elif t in (self.bos, self.eos, self.sep, self.pad, self.eoi):
                spans.append((i, i + 1, False))
                i += 1
            else:
                j = i
                while j < n and int(tokens[j]) not in (self.boi, self.bos, self.eos, self.sep, self.pad,
                                                       self.eoi):
                    j += 1
                spans.append((i, j, False))
                i = j
        return spans

    def split(self, tokens: list[int], max_length: int) -> list[list[int]]:
        """Pieces of at most `max_length` tokens whose concatenation is `tokens`, cut at node boundaries and
        never inside an image block. A text node longer than max_length is the one exception: it is cut
        between its tokens (there is no node boundary to use). Raises ValueError when max_length is shorter
        than an image block."""
        if max_length < self.block_length:
            raise ValueError(f"max_length {max_length} is shorter than one image block ({self.block_length} "
                             "tokens); it must be at least that")
        pieces: list[list[int]] = []
        current: list[int] = []
        for start, end, _ in self.units(tokens):
            unit = list(tokens[start:end])
            if len(current) + len(unit) <= max_length:
                current.extend(unit)
                continue
            if current:
                pieces.append(current)
                current = []
            while len(unit) > max_length:  # only a text node can be this long (blocks are <= block_length)
                pieces.append(unit[:max_length])
                unit = unit[max_length:]
            current = unit
        if current:
            pieces.append(current)
        return pieces
