"""Byte-level BPE text tokenizer (Hugging Face `tokenizers`), as GPT-2 and Chameleon's text side.

Byte-level means every string maps to bytes first, so any text (any script, emoji, control characters)
encodes without unknown tokens and decodes back to the same string: no normaliser, no prefix space, no
added special tokens (the sequence codec owns BOS/EOS and the image markers). A tokenizer.json from
elsewhere loads by path through the same class; its round trip is exact only if it is byte-level too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

log = logging.getLogger(__name__)

BYTE_ALPHABET = 256  # a byte-level BPE starts from the 256 byte symbols; merges come on top


class TextTokenizer:
    """A Hugging Face Tokenizer plus the sha256 of its tokenizer.json (the fingerprint token shards carry)."""

    def __init__(self, tokenizer: Tokenizer, *, sha256: str | None = None):
        self.tokenizer = tokenizer
        # the fingerprint is of the bytes on disk: those of the loaded file, or those save() would write
        self.sha256 = sha256 or hashlib.sha256(self._serialized()).hexdigest()

    def _serialized(self) -> bytes:
        return self.tokenizer.to_str(pretty=True).encode("utf-8")

    # ------------------------------------------------------------ construction

    @classmethod
    def train(cls, texts: Iterable[str], *, vocab_size: int, min_frequency: int = 2) -> TextTokenizer:
        """Train a byte-level BPE of at most `vocab_size` tokens (256 bytes + merges) on `texts`.

        The result may be smaller than asked when the corpus has fewer pairs seen `min_frequency` times.
        """
        if vocab_size < BYTE_ALPHABET:
            raise ValueError(f"vocab_size must be at least {BYTE_ALPHABET} (the byte alphabet), "
                             f"found {vocab_size}")
        if min_frequency < 1:
            raise ValueError(f"min_frequency must be at least 1, found {min_frequency}")
        tok = Tokenizer(models.BPE())
        # GPT-2's split regex on bytes; add_prefix_space=False keeps the round trip exact
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False, special_tokens=[])
        count = 0

        def counted():
            nonlocal count
            for t in texts:
                if t:
                    count += 1
                    yield t

        tok.train_from_iterator(counted(), trainer=trainer)
        out = cls(tok)
        log.info("trained byte-level BPE on %d texts: %d tokens (asked %d)", count, out.vocab_size,
                 vocab_size)
        return out

    @classmethod
    def load(cls, path: str) -> TextTokenizer:
        """Any tokenizer.json by path (local or a URI interleaf.storage reads)."""
        from interleaf import storage
        data = storage.read_bytes(path)
        try:
            tok = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as e:  # noqa: BLE001 (the Rust side raises a bare Exception for malformed files)
            raise ValueError(f"{path}: not a Hugging Face tokenizer.json ({e})") from None
        return cls(tok, sha256=hashlib.sha256(data).hexdigest())

    def save(self, path: str) -> None:
        """Write tokenizer.json atomically; the file's sha256 is `self.sha256`."""
        data = self._serialized()
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tokenizer-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self.sha256 = hashlib.sha256(data).hexdigest()

    # ------------------------------------------------------------ use

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no special tokens added)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of many texts at once (Rust threads)."""
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        """The text of `ids`; exact inverse of encode for a byte-level tokenizer. Ids that cut a multi-byte
        character in two decode to U+FFFD."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"TextTokenizer(vocab_size={self.vocab_size}, sha256={self.sha256[:12]})"
