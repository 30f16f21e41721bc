"""Byte-level BPE: exact round trip of real and hard text, fingerprints, save/load by path."""

import hashlib
import json
import subprocess
import sys

import pytest

from interleaf.tokenizers.text_bpe import TextTokenizer
from tokenizers import Tokenizer, models, pre_tokenizers

from .conftest import HARD_STRINGS


def test_round_trip_is_exact_on_fixture_text_and_other_scripts(text_tokenizer, fixture_texts):
    assert any(any("\u0600" <= ch <= "\u06ff" for ch in t) for t in fixture_texts)  # Arabic in the fixtures
    assert any(any("\u30a0" <= ch <= "\u30ff" for ch in t) for t in fixture_texts)  # katakana
    for text in fixture_texts + HARD_STRINGS:
        ids = text_tokenizer.encode(text)
        assert all(0 <= i < text_tokenizer.vocab_size for i in ids)
        assert text_tokenizer.decode(ids) == text
    # concatenating the ids of two pieces decodes to the concatenated text (the codec relies on it)
    a, b = HARD_STRINGS[0], HARD_STRINGS[2]
    assert text_tokenizer.decode(text_tokenizer.encode(a) + text_tokenizer.encode(b)) == a + b
    assert text_tokenizer.encode_batch([a, b]) == [text_tokenizer.encode(a), text_tokenizer.encode(b)]


def test_training_compresses_and_respects_the_vocabulary_size(text_tokenizer, fixture_texts):
    assert 256 < text_tokenizer.vocab_size <= 1200
    text = fixture_texts[0]
    assert len(text_tokenizer.encode(text)) < len(text.encode("utf-8")) / 2  # merges learned


def test_save_load_fingerprint(tmp_path, text_tokenizer):
    path = tmp_path / "sub" / "tokenizer.json"
    text_tokenizer.save(str(path))
    assert text_tokenizer.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = TextTokenizer.load(str(path))
    assert loaded.sha256 == text_tokenizer.sha256 and loaded.vocab_size == text_tokenizer.vocab_size
    assert loaded.encode(HARD_STRINGS[1]) == text_tokenizer.encode(HARD_STRINGS[1])
    other = TextTokenizer.train(["a different corpus, a different tokenizer"] * 3, vocab_size=300)
    assert other.sha256 != text_tokenizer.sha256


def test_loads_any_tokenizer_json_by_path(tmp_path):
    # a tokenizer.json written by Hugging Face itself (not by interleaf), compact formatting: its fingerprint
    # is of its own bytes
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    path = tmp_path / "external.json"
    tok.save(str(path), pretty=False)
    loaded = TextTokenizer.load(str(path))
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "bad.json").write_text(json.dumps({"not": "a tokenizer"}))
    with pytest.raises(ValueError, match=r"not a Hugging Face tokenizer\.json"):
        TextTokenizer.load(str(tmp_path / "bad.json"))


def test_rejects_impossible_arguments():
    with pytest.raises(ValueError, match="at least 256"):
        TextTokenizer.train(["x"], vocab_size=100)


def test_tokenizers_never_import_beam(tmp_path):
    code = ("import sys\n"
            "import interleaf.tokenizers.codec, interleaf.tokenizers.vq, interleaf.tokenizers.preview\n"
            "from interleaf.tokenizers.text_bpe import TextTokenizer\n"
            "TextTokenizer.train(['a b c'] * 3, vocab_size=260).save(sys.argv[1])\n"
            "TextTokenizer.load(sys.argv[1])\n"
            "assert 'apache_beam' not in sys.modules, 'a tokenizer module imported apache_beam'\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "t.json")], check=True)
