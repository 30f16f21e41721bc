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
