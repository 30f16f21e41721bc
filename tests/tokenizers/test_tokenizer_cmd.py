"""The train-text-tokenizer and train-image-tokenizer commands, called as the command line would."""

import argparse
import hashlib
import io
import json
import random

import pytest

from interleaf.commands import tokenizer_cmd
from interleaf.errors import UsageError
from interleaf.schemas.document import documents_to_table
from interleaf.schemas.image import ImageRecord, images_to_table
from interleaf.shapes import random_scene, render
from interleaf.shards import write_shards
from interleaf.tokenizers.text_bpe import TextTokenizer
from interleaf.tokenizers.vq import load_vq

from .conftest import HARD_STRINGS


def _main(argv):
    parser = argparse.ArgumentParser(prog="interleaf")
    tokenizer_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_train_text_tokenizer_from_document_shards(tmp_path, fixture_docs, capsys):
    write_shards(str(tmp_path / "documents"), [documents_to_table(fixture_docs[:5]),
                                               documents_to_table(fixture_docs[5:])])
    out = tmp_path / "tok" / "tokenizer.json"
    assert _main(["train-text-tokenizer", "--documents", str(tmp_path / "documents"), "--out", str(out),
                  "--vocab-size", "800"]) == 0
    report = json.loads(capsys.readouterr().out)
    tok = TextTokenizer.load(str(out))
    assert report["sha256"] == tok.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert report["texts"] > 100 and 256 < tok.vocab_size <= 800
    assert all(tok.decode(tok.encode(t)) == t for t in HARD_STRINGS)
    # a sample of documents gives a tokenizer too
    assert _main(["train-text-tokenizer", "--documents", str(tmp_path / "documents"), "--out",
                  str(tmp_path / "s.json"), "--vocab-size", "300", "--sample", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["texts"] < report["texts"]
    with pytest.raises(UsageError, match="at least 256"):
        _main(["train-text-tokenizer", "--documents", str(tmp_path / "documents"), "--out", str(out),
               "--vocab-size", "10"])


def test_train_image_tokenizer_from_an_image_store_checkpoints_and_resumes(tmp_path, capsys):
    rng = random.Random(0)
    records = []
    for _ in range(40):
        buf = io.BytesIO()
        render(random_scene(rng, 1)).save(buf, "PNG")
        data = buf.getvalue()
        records.append(ImageRecord(sha256=hashlib.sha256(data).hexdigest(), urls=["http://x"], data=data,
                                   format="png"))
    records.append(ImageRecord(sha256=None, urls=["http://y"], status="timeout"))
    write_shards(str(tmp_path / "images"), [images_to_table(records)])
    out = str(tmp_path / "vq.pt")
    argv = ["train-image-tokenizer", "--images", str(tmp_path / "images"), "--out", out, "--preset", "tiny",
            "--batch-size", "8", "--held-out", "0.2", "--threads", "1", "--checkpoint-every", "2"]
    assert _main([*argv, "--steps", "2"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["train_images"] + first["held_out_images"] == 40 and first["held_out_images"] > 0
    assert set(first["held_out"]) >= {"mse", "psnr", "usage", "codes_used"}
    assert _main([*argv, "--steps", "4"]) == 0  # resumes from OUT.train at step 2
    second = json.loads(capsys.readouterr().out)
    assert second["steps"] == 4 and second["held_out_images"] == first["held_out_images"]
    model = load_vq(out)
    assert model.grid == (8, 8) and model.sha256 == second["sha256"]
    write_shards(str(tmp_path / "failed-only"), [images_to_table(records[-1:])])
    with pytest.raises(UsageError, match="no decodable images"):
        _main([*argv, "--steps", "1", "--images", str(tmp_path / "failed-only")])
