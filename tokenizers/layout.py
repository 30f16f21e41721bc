"""Split a joint token sequence into its text spans and image blocks (between <boi> and <eoi>).

Needs only the vocabulary from a token shard's metadata, so any reader (inspect, the trainer's packer) can
see where image blocks start and end without loading a tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

from interleaf.schemas.tokens import Vocabulary

TEXT_SPAN = "text"
IMAGE_BLOCK = "image"


@dataclass(frozen=True)
class Span:
    kind: str  # TEXT_SPAN or IMAGE_BLOCK
    tokens: list[int]  # for an image block, the ids between <boi> and <eoi>
    closed: bool = True  # False for an image block cut off before its <eoi>


def token_layout(tokens: list[int], vocab: Vocabulary) -> list[Span]:
    boi, eoi = vocab.special_tokens["<boi>"], vocab.special_tokens["<eoi>"]
    spans: list[Span] = []
    current: list[int] = []
    in_image = False
    for t in tokens:
        if t == boi and not in_image:
            if current:
                spans.append(Span(TEXT_SPAN, current))
            current, in_image = [], True
        elif t == eoi and in_image:
            spans.append(Span(IMAGE_BLOCK, current))
            current, in_image = [], False
        else:
            current.append(t)
    if current or in_image:
        spans.append(Span(IMAGE_BLOCK, current, closed=False) if in_image else Span(TEXT_SPAN, current))
    return spans


# ---------------------------------------------------------------- image blocks, from the vocabulary alone
# An image block is `<boi> <grid:RxC> code_0 ... code_{R*C-1} <eoi>`: the grid token right after <boi> names
# the shape, codes follow in raster order (row by row). A vocabulary carries one grid token per grid it
# allows (today one: its `image_grid`), so a generator that has just emitted <boi> knows from the vocabulary
# alone which grid tokens may follow and, once one is chosen, exactly how many code tokens come next.

GRID_PREFIX = "<grid:"
SEP = "<sep>"  # between two consecutive text nodes (a node boundary that text alone would not show)


def grid_token_name(grid: tuple[int, int]) -> str:
    """The special token that announces an image block of `grid` = (rows, cols) codes: "<grid:8x8>"."""
    rows, cols = grid
    return f"{GRID_PREFIX}{int(rows)}x{int(cols)}>"


def parse_grid_token(name: str) -> tuple[int, int] | None:
    """(rows, cols) of a grid token name, or None when `name` is not a grid token."""
    if not (name.startswith(GRID_PREFIX) and name.endswith(">")):
        return None
    rows, sep, cols = name[len(GRID_PREFIX):-1].partition("x")
    if not sep or not rows.isdigit() or not cols.isdigit():
        return None
    return int(rows), int(cols)


def grid_tokens(vocab: Vocabulary) -> dict[int, tuple[int, int]]:
    """Grid token id -> (rows, cols), for every grid token in the vocabulary."""
    out = {}
    for name, i in vocab.special_tokens.items():
        grid = parse_grid_token(name)
        if grid is not None:
            out[i] = grid
    return out


def image_block_length(vocab: Vocabulary, grid: tuple[int, int] | None = None) -> int:
    """Tokens in one image block, <boi> and <eoi> included: rows * cols codes + 3."""
    rows, cols = grid or vocab.image_grid
    return rows * cols + 3
