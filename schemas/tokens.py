"""Token shards: rows of (doc_id, tokens) whose schema metadata fully describes the vocabulary.

One vocabulary for text and images (Chameleon-style early fusion): special tokens first, then the image
codebook in one contiguous range, then the text tokens. A shard states the layout, the image grid, the
sha256 fingerprints of the tokenizer files and the producing config, so a trainer needs nothing else and can
refuse shards made by different tokenizers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from interleaf.schemas.meta import KIND_TOKENS, SchemaMismatchError, metadata_json, schema_metadata

TOKEN_SCHEMA_VERSION = 1
UINT16_MAX_VOCAB = 1 << 16  # ids fit uint16 when the vocabulary has at most 65,536 entries (as Chameleon)

DEFAULT_SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<boi>", "<eoi>")


@dataclass(kw_only=True, frozen=True)
class Vocabulary:
    """The layout of the joint id space."""

    special_tokens: dict[str, int]  # name -> id, ids 0..len-1
    image_codebook_offset: int  # id of image code 0
    image_codebook_size: int  # number of image codes
    text_offset: int  # id of text token 0
    text_vocab_size: int  # number of text tokens (the BPE's vocabulary size)
    image_grid: tuple[int, int]  # (rows, cols) of codes per image

    @property
    def size(self) -> int:
        return max(self.text_offset + self.text_vocab_size,
                   self.image_codebook_offset + self.image_codebook_size,
                   max(self.special_tokens.values(), default=-1) + 1)

    @property
    def token_type(self) -> pa.DataType:
        return pa.uint16() if self.size <= UINT16_MAX_VOCAB else pa.int32()

    @classmethod
    def build(cls, *, image_codebook_size: int, text_vocab_size: int, image_grid: tuple[int, int],
              special_tokens: tuple[str, ...] = DEFAULT_SPECIAL_TOKENS) -> Vocabulary:
        specials = {name: i for i, name in enumerate(special_tokens)}
        return cls(special_tokens=specials, image_codebook_offset=len(specials),
                   image_codebook_size=image_codebook_size,
                   text_offset=len(specials) + image_codebook_size, text_vocab_size=text_vocab_size,
                   image_grid=tuple(image_grid))

    def validate(self) -> None:
        ranges = sorted([(i, i + 1, f"special {n}") for n, i in self.special_tokens.items()] + [
            (self.image_codebook_offset, self.image_codebook_offset + self.image_codebook_size, "image codes"),
            (self.text_offset, self.text_offset + self.text_vocab_size, "text tokens")])
        for (a0, a1, an), (b0, b1, bn) in zip(ranges, ranges[1:]):
            if b0 < a1:
                raise SchemaMismatchError(f"vocabulary ranges overlap: {an} [{a0}, {a1}) and {bn} [{b0}, {b1})")
        for name in ("<bos>", "<eos>", "<boi>", "<eoi>", "<pad>"):
            if name not in self.special_tokens:
                raise SchemaMismatchError(f"vocabulary lacks the special token {name}")
        if len(self.image_grid) != 2 or min(self.image_grid) < 1:
            raise SchemaMismatchError(f"image grid must be two positive sizes, found {self.image_grid}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["image_grid"] = list(self.image_grid)
        d["size"] = self.size
        return d

    @classmethod
    def from_json(cls, d: dict) -> Vocabulary:
        return cls(special_tokens={k: int(v) for k, v in d["special_tokens"].items()},
                   image_codebook_offset=int(d["image_codebook_offset"]),
                   image_codebook_size=int(d["image_codebook_size"]), text_offset=int(d["text_offset"]),
                   text_vocab_size=int(d["text_vocab_size"]), image_grid=tuple(d["image_grid"]))


@dataclass(kw_only=True, frozen=True)
class TokenShardInfo:
    """Everything a token shard's schema metadata says about how its tokens were made."""

    vocabulary: Vocabulary
    tokenizers: dict[str, str]  # role ("text", "image") -> sha256 of the tokenizer file
    config: dict = field(default_factory=dict)  # the producing configuration
    producer: str = ""  # "interleaf <version>"

    def fingerprint(self) -> str:
        """What must agree for two shards to be mixed in one training run: tokenizers and vocabulary."""
        return json.dumps({"tokenizers": self.tokenizers, "vocabulary": self.vocabulary.to_json()},
                          sort_keys=True)


def token_schema(info: TokenShardInfo) -> pa.Schema:
    info.vocabulary.validate()
    return pa.schema(
        [
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("tokens", pa.list_(pa.field("item", info.vocabulary.token_type, nullable=False)),
                     nullable=False),
        ],
        metadata=schema_metadata(KIND_TOKENS, TOKEN_SCHEMA_VERSION, {
            "vocabulary": info.vocabulary.to_json(),
            "tokenizers": info.tokenizers,
            "config": info.config,
            "producer": info.producer,
        }),
    )


def token_info_from_schema(schema: pa.Schema) -> TokenShardInfo:
    vocab = metadata_json(schema, "vocabulary")
    tokenizers = metadata_json(schema, "tokenizers")
    if vocab is None or tokenizers is None:
        raise SchemaMismatchError("token shard metadata lacks 'interleaf.vocabulary' or 'interleaf.tokenizers'")
    info = TokenShardInfo(vocabulary=Vocabulary.from_json(vocab), tokenizers=tokenizers,
                          config=metadata_json(schema, "config") or {},
                          producer=metadata_json(schema, "producer") or "")
    info.vocabulary.validate()
    want = info.vocabulary.token_type
    found = schema.field("tokens").type.value_type
    if found != want:
        raise SchemaMismatchError(f"token ids stored as {found}, but a vocabulary of {info.vocabulary.size} "
                                  f"needs {want}")
    return info


def tokens_to_table(rows: list[tuple[str, list[int]]], info: TokenShardInfo) -> pa.Table:
    schema = token_schema(info)
    size = info.vocabulary.size
    for doc_id, tokens in rows:
        if tokens and (min(tokens) < 0 or max(tokens) >= size):
            raise ValueError(f"document {doc_id}: token id out of the vocabulary [0, {size})")
    return pa.Table.from_pydict({"doc_id": [r[0] for r in rows], "tokens": [r[1] for r in rows]},
                                schema=schema)
