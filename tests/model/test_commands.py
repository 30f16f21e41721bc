"""The three commands end to end on a corpus made in the test: captions through a BPE trained here, images
through a randomly initialised small VQ, token shards through the codec, then train -> generate -> eval."""

import json
import os
from pathlib import Path

import pytest

from interleaf.commands import model_cmd
from interleaf.model.corpus import CorpusConfig, make_examples, tokenize_examples
from interleaf.model.geneval import make_suite, write_metadata
from interleaf.shards import open_shards
from interleaf.tokenizers.text_bpe import TextTokenizer
from interleaf.tokenizers.vq import VQConfig, VQModel, load_vq, save_vq


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model_cmd")
    examples = make_examples(CorpusConfig(examples=60, seed=1))
    text = TextTokenizer.train([e.caption for e in examples], vocab_size=300, min_frequency=1)
    text.save(str(tmp / "tokenizer.json"))
    save_vq(VQModel(VQConfig(image_size=16, channels=8, channel_mult=(1, 2, 2), z_channels=8, norm_groups=4,
                             codebook_size=16, attention=False)), str(tmp / "vq.pt"))
    vq = load_vq(str(tmp / "vq.pt"))
    tokenize_examples(examples, str(tmp / "tokens"), text=text, vq=vq, text_path=str(tmp / "tokenizer.json"),
                      vq_path=str(tmp / "vq.pt"), shards=2)
    rc = model_cmd.main(["train", "--shards", str(tmp / "tokens"), "--out", str(tmp / "run"), "--preset", "debug",
                         "--steps", "3", "--batch-size", "4", "--seq-len", "64", "--set", "dim=32", "--set",
                         "n_heads=2", "--set", "n_layers=1", "--warmup", "1", "--threads", "1"])
    assert rc == 0
    return tmp


def test_train_writes_checkpoint_with_tokenizer_copies(trained):
    info = open_shards(str(trained / "tokens")).token_info
    assert info.vocabulary.image_grid == (4, 4) and info.config["shapes"]["held_out"]
    meta = json.loads(Path(trained / "run" / "checkpoints" / "step-000003" / "meta.json").read_text())
    assert set(meta["tokenizer_files"]) == {"text", "image"}  # found through the shards' config
    for rel in meta["tokenizer_files"].values():
        assert os.path.exists(trained / "run" / "checkpoints" / "step-000003" / rel)
    assert len(Path(trained / "run" / "loss.jsonl").read_text().splitlines()) == 3


def test_generate_writes_an_image(trained, capsys):
    out = trained / "gen"
    rc = model_cmd.main(["generate", "--checkpoint", str(trained / "run"), "--prompt", "a photo of a red circle",
                         "--out", str(out), "--image", "--samples", "2", "--top-k", "8"])
    assert rc == 0
    result = json.loads(Path(out / "generation.json").read_text())
    assert len(result["samples"]) == 2
    images = [s["image"] for sample in result["samples"] for s in sample["segments"] if "image" in s]
    assert len(images) == 2 and all((out / name).exists() for name in images)
    assert "prompt: a photo of a red circle" in capsys.readouterr().out


def test_eval_writes_genevals_files(trained, capsys):
    suite = make_suite()
    small = [next(m for m in suite if m["tag"] == t) for t in ("single_object", "colors", "position", "counting")]
    write_metadata(str(trained / "meta.jsonl"), small)
    out = trained / "eval"
    rc = model_cmd.main(["eval", "--checkpoint", str(trained / "run"), "--out", str(out), "--samples", "2",
                         "--metadata", str(trained / "meta.jsonl")])
    assert rc == 0
    scores = json.loads(Path(out / "scores.json").read_text())
    assert scores["images"] == 8 and scores["prompts"] == 4 and 0 <= scores["overall"] <= 1
    assert {"checker_on_ground_truth", "ceiling_vq_reconstructions", "seen", "held_out"} <= set(scores)
    assert len(Path(out / "results.jsonl").read_text().splitlines()) == 8
    assert (out / "images" / "00000" / "samples" / "0001.png").exists()
    assert json.loads(Path(out / "images" / "00002" / "metadata.jsonl").read_text()) == small[2]
    # binding diagnostics from the shards the checkpoint recorded: 60 training captions, the oracle's score
    binding = scores["binding"]
    assert binding["training_captions"] == 60 and sum(binding["prompts"].values()) == 4
    assert 0 <= binding["oracle"]["overall"] <= 1 and "seen_twin" in binding["model"]
    assert "bag-of-words oracle overall" in capsys.readouterr().out


def test_eval_binding_diagnostics_need_the_training_shards(trained, capsys):
    write_metadata(str(trained / "meta1.jsonl"), make_suite()[:1])
    rc = model_cmd.main(["eval", "--checkpoint", str(trained / "run"), "--out", str(trained / "eval2"),
                         "--samples", "1", "--metadata", str(trained / "meta1.jsonl"), "--no-ceiling",
                         "--train-shards", str(trained / "nowhere")])
    assert rc == 2 and "--train-shards" in capsys.readouterr().err
    rc = model_cmd.main(["eval", "--checkpoint", str(trained / "run"), "--out", str(trained / "eval3"),
                         "--samples", "1", "--metadata", str(trained / "meta1.jsonl"), "--no-ceiling",
                         "--no-binding"])
    assert rc == 0 and "binding" not in json.loads(Path(trained / "eval3" / "scores.json").read_text())


def test_usage_errors_are_one_line(trained, capsys):
    rc = model_cmd.main(["generate", "--checkpoint", str(trained / "nothing"), "--prompt", "x", "--out",
                         str(trained / "g2")])
    assert rc == 2 and "no checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        model_cmd.main(["train", "--shards", "x", "--out", "y", "--preset", "huge"])
