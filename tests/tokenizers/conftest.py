"""Fixture text for the tokenizer tests: the real OBELICS rows under tests/data (English, Arabic, Japanese
katakana, emoji, typographic punctuation), as Documents and as plain texts."""

import json
from pathlib import Path

import pytest

from interleaf.schemas.obelics import from_obelics

OBELICS = Path(__file__).parent.parent / "data" / "obelics"

# written here on purpose: scripts and characters a byte-level BPE must carry through unchanged
HARD_STRINGS = [
    "漢字とひらがなとカタカナ、中文简体与繁體字。",
    "مرحبا بالعالم — النص العربي من اليمين إلى اليسار",
    "emoji 👩‍👩‍👧‍👦 🎉🇯🇵 and skin tones 👍🏽",
    "Ελληνικά, русский, עברית, हिन्दी, ภาษาไทย, 한국어",
    "combining: e\u0301 vs é, zero width\u200bjoiner\u200d, BOM \ufeff, NUL \x00 and \t tabs\r\n",
    "   leading and trailing spaces   ",
    "",
    "\n\n\n",
]


def obelics_documents():
    docs = []
    for path in sorted(OBELICS.glob("*.jsonl")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                docs.append(from_obelics(json.loads(line), source_file=path.name, row_number=i))
    return docs


@pytest.fixture(scope="session")
def fixture_docs():
    return obelics_documents()


@pytest.fixture(scope="session")
def fixture_texts(fixture_docs):
    return [n.text for d in fixture_docs for n in d.nodes if n.is_text and n.text]


@pytest.fixture(scope="session")
def text_tokenizer(fixture_texts):
    from interleaf.tokenizers.text_bpe import TextTokenizer
    return TextTokenizer.train(fixture_texts, vocab_size=1200)
