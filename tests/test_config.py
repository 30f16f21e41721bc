"""Config files: sections mirror the config dataclasses; a wrong or moved key is one line that says what to
write instead."""

import pytest

from interleaf.cli import main


def _run(tmp_path, toml: str, capsys):
    (tmp_path / "run.toml").write_text(toml)
    (tmp_path / "in.jsonl").write_text("")
    code = main(["run", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out"),
                 "--config", str(tmp_path / "run.toml"), "--stages", "ingest"])
    return code, capsys.readouterr().err.strip()


def test_a_key_that_moved_says_where_it_went(tmp_path, capsys):
    code, err = _run(tmp_path, "[fetch.fetch]\nmin_side = 32\n", capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "'fetch.fetch.min_side' moved: write it as min_side in [image_rules]" in err


def test_an_unknown_key_lists_the_known_ones(tmp_path, capsys):
    code, err = _run(tmp_path, "[image_rules]\nmin_sides = 32\n", capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "unknown config key 'image_rules.min_sides'" in err and "min_side" in err


def test_image_rules_are_read_and_validated(tmp_path, capsys):
    code, err = _run(tmp_path, "[image_rules]\nmin_side = 500\nmax_side = 100\n", capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "min_side" in err


def test_an_unknown_key_in_a_section_with_required_keys(tmp_path, capsys):
    code, err = _run(tmp_path, '[tokenize]\ntext_tokenizer = "t.json"\nimage_tokenizer = "v.pt"\nbogus = 1\n',
                     capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "unknown config key 'tokenize.bogus'" in err


@pytest.mark.parametrize("toml,word", [
    ('[image_rules]\nallowed_formats = [["jpeg"]]\n', "allowed_formats[0]"),  # was a TypeError traceback
    ("[image_rules]\nallowed_formats = 5\n", "expected a list"),
    ('[image_rules]\nallowed_formats = "jpeg"\n', "expected a list"),
    ("[image_rules]\nallowed_formats = []\n", "empty"),
    ("[image_rules]\nmax_aspect_ratio = nan\n", "nan"),  # nan < 1 is false: it passed and disabled the rule
    ("[image_rules]\nmin_side = true\n", "expected int"),
    ("[ingest.quality]\nmax_top_ngram_char_share = 5\n", "expected a list"),
])
def test_settings_of_the_wrong_type_are_one_line(tmp_path, capsys, toml, word):
    code, err = _run(tmp_path, toml, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and word in err, err


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    (tmp_path / "run.toml").write_bytes(b"\xff\xfe[image_rules]\n")
    (tmp_path / "in.jsonl").write_text("")
    code = main(["run", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out"),
                 "--config", str(tmp_path / "run.toml"), "--stages", "ingest"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "run.toml" in err
