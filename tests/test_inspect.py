"""`interleaf inspect` on each shard kind: numbers checked against the fixtures, samples, HTML and JSON."""

import io
import json
from html.parser import HTMLParser

import pytest
from PIL import Image

from interleaf.cli import main
from interleaf.schemas.document import documents_to_table
from interleaf.schemas.image import ImageRecord, images_to_table
from interleaf.schemas.obelics import from_obelics
from interleaf.schemas.tokens import TokenShardInfo, Vocabulary, tokens_to_table
from interleaf.shards import write_shards

FIXTURES = ["IAH-urls-wget", "cc", "dolma-sample-0000", "issue-493", "wikipedia-mona-lisa"]


@pytest.fixture
def run_dir(tmp_path, data_dir):
    """A run directory with documents (all OBELICS fixture rows, 2 shards) and an image store."""
    docs = [from_obelics(json.loads(line)) for name in FIXTURES
            for line in (data_dir / "obelics" / f"{name}.obelics.jsonl").open()]
    docs[0] = docs[0].dropped("too_few_words")
    docs[1].nodes[0] = docs[1].nodes[0].dropped("boilerplate")
    write_shards(str(tmp_path / "documents"), [documents_to_table(docs[:10]), documents_to_table(docs[10:])])
    # the store holds the first image of the cc page (document 4 after the two wget and the cc rows)
    cc = next(d for d in docs if d.url == "http://commoncrawl.org/")
    photo = (data_dir / "photos" / "hopper.jpg").read_bytes()
    w, h = Image.open(io.BytesIO(photo)).size
    images = [ImageRecord(sha256="11" * 32, urls=[cc.image_nodes[0].image_url], width=w, height=h,
                          original_bytes=len(photo), format="jpeg", data=photo, source="warc"),
              ImageRecord(sha256=None, urls=["http://gone/x.png"], status="http_4xx", error="404")]
    write_shards(str(tmp_path / "images"), [images_to_table(images)])
    return tmp_path


def _json(capsys, *args):
    assert main(["inspect", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_document_summary_matches_the_fixture_counts(run_dir, data_dir, capsys):
    s = _json(capsys, str(run_dir / "documents"))
    assert (s["kind"], s["shards"], s["rows"]) == ("documents", 2, 31)
    assert s["documents"] == {"kept": 30, "dropped": 1}
    assert s["document_drop_reasons"] == {"too_few_words": 1}
    # 126 text and 244 image nodes in the five fixture files; one text node marked dropped
    assert s["nodes"] == {"text": {"kept": 125, "dropped": 1}, "image": {"kept": 244, "dropped": 0}}
    assert s["node_drop_reasons"] == {"boilerplate": 1}
    per_doc = sorted(sum(1 for i in json.loads(line)["images"] if i) for name in FIXTURES
                     for line in (data_dir / "obelics" / f"{name}.obelics.jsonl").open())
    assert s["images_per_document"]["p0"] == per_doc[0] and s["images_per_document"]["p100"] == per_doc[-1]
    assert s["text_words_per_document"]["p50"] > 0


def test_image_summary(run_dir, capsys):
    s = _json(capsys, str(run_dir / "images"))
    assert (s["kind"], s["rows"], s["images_ok"]) == ("images", 2, 1)
    assert s["fetch_status"] == {"ok": 1, "http_4xx": 1}
    assert s["width"]["p50"] == 128 and s["formats"] == {"jpeg": 1}


def test_token_summary_and_layout(tmp_path, capsys):
    vocab = Vocabulary.build(image_codebook_size=16, text_vocab_size=100, image_grid=(2, 2))
    info = TokenShardInfo(vocabulary=vocab, tokenizers={"text": "a" * 64, "image": "b" * 64})
    t0 = vocab.text_offset
    img = [vocab.special_tokens["<boi>"], 5, 6, 7, 8, vocab.special_tokens["<eoi>"]]
    rows = [("d1", [1, t0 + 3, t0 + 4, *img, t0 + 9, 2]), ("d2", [1, *img, *img, 2])]
    write_shards(str(tmp_path / "tokens"), [tokens_to_table(rows, info)])
    s = _json(capsys, str(tmp_path / "tokens"))
    assert (s["rows"], s["tokens"], s["image_tokens"], s["text_tokens"]) == (2, 25, 12, 3)
    assert s["images_per_document"]["p100"] == 2
    assert main(["inspect", str(tmp_path / "tokens"), "--sample", "1"]) == 0
    out = capsys.readouterr().out
    assert "[image block: 4 codes, grid 2x2]" in out and "[text: 3 tokens <bos>" in out


def test_sample_renders_documents_readably(run_dir, capsys):
    assert main(["inspect", str(run_dir / "documents"), "--sample", "3"]) == 0
    out = capsys.readouterr().out
    assert "documents shards: 2, rows: 31" in out
    assert "[DROPPED: too_few_words]" in out
    assert "[image http" in out and "✗ boilerplate" in out


class _WellFormed(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input", "source"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.images = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_html_page_is_well_formed_and_shows_images_from_the_store(run_dir, capsys):
    out = run_dir / "report" / "inspect.html"
    assert main(["inspect", str(run_dir / "documents"), "--html", str(out), "--sample", "31"]) == 0
    page = out.read_text()
    parser = _WellFormed()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []
    inline = [i for i in parser.images if i["src"].startswith("data:image/jpeg;base64,")]
    assert len(inline) == 1  # the one image the store holds, inline; the rest are placeholders
    assert page.count("image not in the store") == 244 - 1
    assert "too_few_words" in page


def test_html_for_an_image_store(run_dir):
    out = run_dir / "images.html"
    assert main(["inspect", str(run_dir / "images"), "--html", str(out)]) == 0
    assert out.read_text().count("data:image/jpeg;base64,") == 1


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interleaf inspect: error: no such file or directory")
    (tmp_path / "bad.arrow").write_bytes(b"not arrow at all")
    assert main(["inspect", str(tmp_path / "bad.arrow")]) == 2
    assert "not a complete Arrow IPC shard" in capsys.readouterr().err
