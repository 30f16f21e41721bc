"""Input formats: told by file name, else by the keys of the first row; anything else is one clear error."""

import json

import pytest

from interleaf.readers import detect_format, formats


@pytest.mark.parametrize("name,first,fmt", [
    ("crawl.warc.gz", None, "warc"),
    ("part-0.obelics.jsonl", None, "obelics"),
    ("docs_mmc4.json", None, "mmc4"),
    ("rows.jsonl", {"texts": [None], "images": ["http://x/a.jpg"], "metadata": "[]"}, "obelics"),
    ("rows.jsonl", {"text_list": ["a"], "image_info": []}, "mmc4"),
])
def test_format_from_name_or_first_row(tmp_path, name, first, fmt):
    path = tmp_path / name
    path.write_text(json.dumps(first) + "\n" if first is not None else "")
    assert detect_format(str(path)) == fmt


@pytest.mark.parametrize("content", ["not json at all\n", "[1, 2]\n", '{"other": 1}\n', ""])
def test_an_unknown_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "rows.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match="cannot tell the format") as e:
        detect_format(str(path))
    assert "--input-format" in str(e.value) and all(f in str(e.value) for f in formats())


@pytest.mark.parametrize("name,content,forced", [
    ("crawl.warc.gz", b"", "obelics"),  # a WARC read as rows: every line a bad row, the run "succeeded"
    ("rows.jsonl", b'{"texts": [], "images": []}\n', "warc"),
    ("rows.jsonl", b'{"texts": ["a"], "images": [null]}\n', "mmc4"),
    ("rows.jsonl", b'{"url": "http://x/", "text_list": ["a"]}\n', "obelics"),
])
def test_a_forced_format_that_plainly_does_not_fit_is_one_error(tmp_path, name, content, forced):
    from interleaf.readers import check_forced_format

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match="leave out --input-format"):
        check_forced_format(str(path), forced)


def test_a_forced_format_is_taken_when_nothing_says_otherwise(tmp_path):
    from interleaf.readers import check_forced_format

    path = tmp_path / "rows.jsonl"
    path.write_text('{"url": "http://x/", "text_list": ["a"], "texts": [], "images": []}\n')
    check_forced_format(str(path), "mmc4")  # both formats' keys: the user decides
    check_forced_format(str(path), "obelics")
