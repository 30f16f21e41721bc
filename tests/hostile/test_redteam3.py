"""What a third independent red-team pass of issue 13 found: pages whose extraction was quadratic (minutes
for a page of 155 KB), and no per-page time budget. Extraction is linear in these pages now, and a page past
ExtractConfig.max_seconds is a counted drop (too_slow)."""

import importlib.util
import json
import time
from pathlib import Path

from interleaf.cli import main
from interleaf.filters import text_stats
from interleaf.filters.html import ExtractConfig, extract

_spec = importlib.util.spec_from_file_location("redteam2_test", Path(__file__).resolve().parent /
                                               "test_redteam2.py")
_redteam2 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_redteam2)
PROSE = _redteam2.TEXT
PAGE = "http://example.com/page"


def _seconds(html: str) -> float:
    start = time.perf_counter()
    extract(html, PAGE, ExtractConfig(max_seconds=None))
    return time.perf_counter() - start


def _grows_linearly(make) -> None:
    """Four times the page costs about four times the time (a quadratic walk: sixteen)."""
    _seconds(make(100))
    small, large = min(_seconds(make(1500)) for _ in range(2)), min(_seconds(make(6000)) for _ in range(2))
    assert large < 8 * small + 0.05, (small, large)


def test_empty_images_before_a_noscript_of_images_cost_linear_time():
    # each <noscript> image looked back over every empty <img> for its placeholder: 118 s for 6,000
    _grows_linearly(lambda n: f"<html><body><p>{PROSE}</p><img src=/a.jpg>" + "<img>" * n + "<noscript>"
                    + "".join(f"<img src=/b{i}.jpg>" for i in range(n)) + "</noscript></body></html>")


def test_nested_sidebars_above_an_article_cost_linear_time():
    # each sidebar level searched its whole subtree for an article: 138 s for 3,900 levels
    _grows_linearly(lambda n: "<html><body>" + '<div class="sidebar">' * (n // 2) + "<b>x</b>" * n
                    + f"<article><p>{PROSE}</p></article></body></html>")


def test_nested_pictures_cost_linear_time():
    # each <picture> searched its subtree for a <source>: the innermost one's, below all the others
    _grows_linearly(lambda n: "<html><body>" + "<picture>" * (n // 2) + "<b>x</b>" * n
                    + "<source srcset=/s.jpg><img src=/p.jpg></body></html>")


def test_nested_noscripts_cost_linear_time():
    # each <noscript> level searched its subtree for an <img>: 0.08 s for 4,000 levels, 1.2 s for 16,000
    def seconds(levels: int) -> float:
        html = (f"<html><body><p>{PROSE}</p><nav>" + "<noscript>" * levels + "<img src=/a.jpg width=300 "
                "height=300>" + "</noscript>" * levels + "</nav></body></html>")
        start = time.perf_counter()
        ex = extract(html, PAGE, ExtractConfig(max_seconds=None, max_depth=None))
        assert ex.dropped == {"nav": 1}
        return time.perf_counter() - start

    seconds(100)
    small, large = min(seconds(4000) for _ in range(2)), min(seconds(16000) for _ in range(2))
    assert large < 8 * small + 0.05, (small, large)


def test_a_long_run_of_punctuation_inside_a_token_is_stripped_in_linear_time():
    token = "!a" + "!" * 200_000 + "b!"
    start = time.perf_counter()
    assert text_stats.words(f"one {token} two") == ["one", token[1:-1], "two"]
    assert time.perf_counter() - start < 1.0  # 50 s before


def test_a_page_past_the_time_budget_is_a_counted_drop(tmp_path):
    warc = tmp_path / "pages.warc"
    slow = "<html><body>" + f"<div><p>{PROSE}</p></div>" * 4000 + "</body></html>"
    with open(warc, "wb") as f:
        f.write(_redteam2._record("http://ok.example/", f"<html><body><p>{PROSE}</p></body></html>".encode()))
        f.write(_redteam2._record("http://slow.example/", slow.encode()))
    # a budget that the big page cannot meet and the small one does (it walks fewer than 256 elements
    # between looks at the clock)
    (tmp_path / "run.toml").write_text("[ingest.quality]\nmin_images = 0\n"
                                       "[ingest.extract]\nmax_seconds = 1e-6\n")
    assert main(["run", str(warc), "--output", str(tmp_path / "out"), "--config", str(tmp_path / "run.toml"),
                 "--stages", "ingest"]) == 0
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    docs = m["funnel"]["ingest"]["documents"]
    assert docs["dropped"] == {"too_slow": 1} and docs["out"] == 1 and m["unreconciled"] == []


def test_bodies_of_several_gzip_members_or_zstd_frames_are_read_whole(tmp_path):
    """Only the first member or frame was decoded: the page kept its <head> and lost its text
    (too_few_words)."""
    import gzip

    import zstandard

    head, body = b"<html><head><title>t</title></head>", f"<body><p>{PROSE}</p></body></html>".encode()
    zstd = zstandard.ZstdCompressor()
    warc = tmp_path / "enc.warc"
    with open(warc, "wb") as f:
        f.write(_redteam2._record("http://gzip.example/", gzip.compress(head) + gzip.compress(body),
                                  "Content-Encoding: gzip\r\n"))
        f.write(_redteam2._record("http://zstd.example/", zstd.compress(head) + zstd.compress(body),
                                  "Content-Encoding: zstd\r\n"))
    (tmp_path / "run.toml").write_text("[ingest.quality]\nmin_images = 0\n")
    assert main(["run", str(warc), "--output", str(tmp_path / "out"), "--config", str(tmp_path / "run.toml"),
                 "--stages", "ingest"]) == 0
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["funnel"]["ingest"]["documents"]["out"] == 2, m["funnel"]["ingest"]["documents"]


def test_hosts_that_no_lookup_can_be_made_for_cannot_be_requested():
    """They ended as a failed lookup (dns, transient) and were tried again on every rerun; a ValueError
    from request_url makes the fetch status bad_url, which is permanent."""
    import pytest

    from interleaf.download.urls import request_url

    for url in ("http://" + "a" * 64 + ".com/x.jpg", "http://" + "abcdefghi." * 26 + "com/x.jpg",
                "http://[::1%25lo]/x.jpg", "http://xn--zz-zz.com/x.jpg"):
        with pytest.raises(ValueError):
            request_url(url)
    assert request_url("http://xn--bcher-kva.example./x.jpg") == "http://xn--bcher-kva.example./x.jpg"


def test_report_and_export_read_a_hand_edited_manifest_without_failing(tmp_path, capsys):
    """Values of the wrong type in manifest.json made report and export fail with a traceback (a count
    "7" or 10**400, stages [1, null], processing_by_stage [1, 2], inputs with a null, info "xx")."""
    warc = tmp_path / "page.warc"
    warc.write_bytes(_redteam2._record("http://ok.example/", f"<html><body><p>{PROSE}</p></body></html>"
                                       .encode()))
    (tmp_path / "run.toml").write_text("[ingest.quality]\nmin_images = 0\n")
    run = tmp_path / "run"
    assert main(["run", str(warc), "--output", str(run), "--config", str(tmp_path / "run.toml"),
                 "--stages", "ingest"]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    documents = manifest["funnel"]["ingest"]["documents"]
    documents["dropped"]["<img src=x onerror=alert(1)>"] = "7"
    documents["info"] = "xx"
    manifest["funnel"]["ingest"]["nodes"]["in"] = 10**400
    manifest["stages"] = [1, None, "ingest"]
    manifest["timings_s"] = {"total": "<script>", "processing_by_stage": [1, 2]}
    manifest["inputs"] = {"warc": [None, 5, str(warc)]}
    (run / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    assert main(["export", str(run), "--format", "obelics", "--output", str(tmp_path / "exp")]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    html = (run / "report.html").read_text()
    assert "onerror=alert" not in html and "<script>" not in html.split("</head>", 1)[1]


def test_numbers_and_urls_of_the_row_formats_are_checked_and_named():
    """An MMC4 raw_url that is a list failed as "unhashable type: 'list'"; OBELICS sizes of 10**30, -1,
    "wide" or true and a warc_record_length of 1.2e29 were kept and written again."""
    import pytest

    from interleaf.schemas.mmc4 import from_mmc4
    from interleaf.schemas.obelics import from_obelics

    def obelics(md: dict, general: dict | None = None) -> dict:
        return {"texts": [PROSE, None], "images": [None, "http://a.example/x.jpg"],
                "metadata": json.dumps([None, md]),
                "general_metadata": json.dumps({"url": "http://a.example/", **(general or {})})}

    for row, field in [(obelics({"original_width": 10**30}), "metadata[1].original_width"),
                       (obelics({"original_width": -1}), "metadata[1].original_width"),
                       (obelics({"original_width": "wide"}), "metadata[1].original_width"),
                       (obelics({"original_height": True}), "metadata[1].original_height"),
                       (obelics({}, {"warc_record_length": 1.2e29}), "general_metadata.warc_record_length")]:
        with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
            from_obelics(row)
    assert from_obelics(obelics({"original_width": 640.0, "original_height": 480})).nodes[1].is_image

    def mmc4(**fields) -> dict:
        info = {"raw_url": "http://a.example/x.jpg", "matched_text_index": 0, "matched_sim": 0.3}
        return {"url": "http://a.example/", "text_list": [PROSE], **fields,
                "image_info": [{**info, **fields.pop("info", {})}]}

    for doc, field in [(mmc4(info={"raw_url": ["http://a.example/x.jpg"]}), "raw_url"),
                       (mmc4(info={"matched_sim": "high"}), "matched_sim"),
                       (mmc4(similarity_matrix=[[1], "x", None]), "similarity_matrix"),
                       (mmc4(could_have_url_duplicate="yes"), "could_have_url_duplicate")]:
        with pytest.raises(ValueError, match=field):
            from_mmc4(doc)
    assert from_mmc4(mmc4(similarity_matrix=[[0.3]], could_have_url_duplicate=0)).nodes[0].is_image


def test_declared_charsets_are_read_as_a_browser_reads_them():
    """ISO-2022-JP (all ASCII bytes) was read as UTF-8, UTF-16LE without a BOM under its header too, and
    Python's narrower codecs stood for the WHATWG decoders (Shift_JIS is Windows-31J, EUC-KR is UHC, Big5
    has HKSCS, windows-874 has the Windows punctuation)."""
    from interleaf.filters.charset import decode_html

    cases = [("日本語のテキスト", "iso2022_jp", "iso-2022-jp"), ("héllo wörld", "utf-16-le", "utf-16le"),
             ("①②③ 日本", "cp932", "shift_jis"), ("똠 한국어", "cp949", "euc-kr"),
             ("嘅 廣東話", "big5hkscs", "big5"), ("“ภาษาไทย” … €", "cp874", "windows-874")]
    for text, codec, label in cases:
        body = f"<html><body><p>{text}</p></body></html>".encode(codec)
        assert f"<p>{text}</p>" in decode_html(body, f"text/html; charset={label}"), label
    meta = "<meta charset=iso-2022-jp><p>日本語</p>"
    assert decode_html(meta.encode("iso2022_jp"), None) == meta
    assert decode_html(b"<p>plain \x1b ascii</p>", None) == "<p>plain \x1b ascii</p>"  # nothing declared


def test_a_time_budget_that_is_no_positive_number_is_refused_before_the_run(tmp_path, capsys):
    warc = tmp_path / "page.warc"
    warc.write_bytes(_redteam2._record("http://ok.example/", b"<html><body><p>x</p></body></html>"))
    (tmp_path / "run.toml").write_text("[ingest.extract]\nmax_seconds = -1\n")
    assert main(["run", str(warc), "--output", str(tmp_path / "out"), "--config", str(tmp_path / "run.toml"),
                 "--stages", "ingest"]) == 2
    assert "max_seconds must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
