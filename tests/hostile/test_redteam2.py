"""What a second independent red-team pass of issue 13 found (each a traceback, a crash, unbounded memory or
a read twice before its fix), through the command line."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from interleaf.cli import main
from interleaf.schemas.document import DOCUMENT_SCHEMA, Document, Node, documents_to_table
from interleaf.shards import write_shards

TEXT = ("The ferry leaves the harbour at seven on calm mornings and returns before the evening tide. Its "
        "captain has sailed the same route for twenty years, and he knows every buoy and sandbank by name. "
        "In winter the crossing is often cancelled, when storms from the west push the waves over the pier, "
        "and the islanders then wait for the post and the newspapers until the weather turns again.")


def _obelics(url: str) -> dict:
    return {"texts": [TEXT, None], "images": [None, f"{url}a.jpg"], "metadata": [None, None],
            "general_metadata": json.dumps({"url": url})}


def _run(tmp_path, *inputs, config: str = "[ingest.quality]\nmin_images = 0\n", stages: str = "ingest"):
    (tmp_path / "run.toml").write_text(config)
    code = main(["run", *map(str, inputs), "--output", str(tmp_path / "out"), "--config",
                 str(tmp_path / "run.toml"), "--stages", stages])
    manifest = tmp_path / "out" / "manifest.json"
    return code, json.loads(manifest.read_text()) if manifest.exists() else None


def test_a_parquet_value_out_of_range_costs_its_row_only(tmp_path):
    rows = [_obelics(f"http://{c}.example/") for c in "abc"]
    table = pa.Table.from_pylist(rows).append_column(
        "seen", pa.array([0, 2**62, 0], pa.int64()).cast(pa.timestamp("us")))  # row 1: past year 9999
    pq.write_table(table, tmp_path / "rows.obelics.parquet")
    code, m = _run(tmp_path, tmp_path / "rows.obelics.parquet")
    docs = m["funnel"]["ingest"]["documents"]
    assert code == 0 and m["unreconciled"] == [] and docs["dropped"] == {"bad_row": 1} and docs["out"] == 2


def test_a_parquet_decompression_bomb_is_too_large_without_being_decoded(tmp_path, capsys):
    bomb = {**_obelics("http://bomb.example/"), "texts": ["x" * (64 << 20), None]}  # 64 MiB of one letter
    path = tmp_path / "bomb.obelics.parquet"
    pq.write_table(pa.Table.from_pylist([_obelics("http://a.example/"), bomb]), path, compression="zstd",
                   row_group_size=1)
    assert path.stat().st_size < 100_000
    code, m = _run(tmp_path, path)
    docs = m["funnel"]["ingest"]["documents"]
    assert code == 0 and docs["dropped"] == {"too_large": 1} and docs["out"] == 1


def test_a_damaged_shard_is_one_line_in_inspect_report_and_export(tmp_path, capsys):
    doc = Document(doc_id="d", url="http://a.example/", nodes=[Node.text_node(TEXT)])
    table = documents_to_table([doc])
    column = pa.array([2**62], pa.int64()).view(pa.timestamp("s", tz="UTC"))  # valid Arrow, no datetime
    field = DOCUMENT_SCHEMA.field("crawl_date")
    table = table.set_column(table.schema.get_field_index("crawl_date"), field, column.cast(field.type))
    write_shards(str(tmp_path / "run" / "documents"), [table])
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"status": "complete", "funnel": {}}))
    for argv in (["inspect", str(tmp_path / "run" / "documents"), "--sample", "1"],
                 ["export", str(tmp_path / "run"), "--format", "obelics", "--output", str(tmp_path / "ds")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "a value that cannot be read" in err, err[-2000:]


@pytest.mark.parametrize("config, message", [
    ("[dedup.documents.minhash]\nseed = -1\n", "seed must be between 0 and 2**32 - 1"),
    ("[fetch]\nthreads = 100000000\n", "fetch.threads must be between 1 and 1024"),
    ("[ingest.quality]\nmax_images = -5\n", "is above max_images"),
])
def test_settings_checked_inside_workers_are_checked_before_the_output_is_touched(tmp_path, capsys, config,
                                                                                   message):
    path = tmp_path / "rows.obelics.jsonl"
    path.write_text(json.dumps(_obelics("http://a.example/")) + "\n")
    assert _run(tmp_path, path)[0] == 0  # a complete run first
    before = sorted(p.name for p in (tmp_path / "out" / "documents").iterdir())
    capsys.readouterr()
    code, _ = _run(tmp_path, path, config=config, stages="ingest,dedup,fetch")
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err[-2000:]
    assert sorted(p.name for p in (tmp_path / "out" / "documents").iterdir()) == before  # untouched


def test_one_file_under_two_spellings_is_read_once_and_an_output_file_is_refused(tmp_path, capsys,
                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.obelics.jsonl").write_text(json.dumps(_obelics("http://a.example/")) + "\n")
    code, m = _run(tmp_path, "a.obelics.jsonl", "./a.obelics.jsonl", tmp_path / "a.obelics.jsonl")
    assert code == 0 and m["funnel"]["ingest"]["records"]["in"] == 1
    (tmp_path / "afile").write_text("x")
    capsys.readouterr()
    assert main(["run", "a.obelics.jsonl", "--output", "afile", "--stages", "ingest"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a directory" in err and "Traceback" not in err


def _record(url: str, body: bytes, headers: str = "") -> bytes:
    http = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n{headers}\r\n".encode() + body
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\n"
            f"WARC-Date: 2024-05-01T10:00:00Z\r\n"
            f"WARC-Record-ID: <urn:uuid:{abs(hash(url)):032x}>\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n")
    return head.encode() + http + b"\r\n\r\n"


def test_one_long_http_header_line_costs_its_record_not_the_rest_of_the_file(tmp_path):
    """A legal 40 KB Set-Cookie is over FastWARC's header limit: the file's reading used to end there, the
    records after it lost with one "malformed" count."""
    page = f"<html><body><article><p>{TEXT}</p></article></body></html>".encode()
    warc = tmp_path / "long.warc"
    warc.write_bytes(_record("http://a.example/", page)
                     + _record("http://b.example/", page, "Set-Cookie: s=" + "x" * 40_000 + "\r\n")
                     + b"".join(_record(f"http://c{i}.example/",
                                        page.replace(b"ferry", f"ferry {i}".encode())) for i in range(3)))
    code, m = _run(tmp_path, warc)
    records = m["funnel"]["ingest"]["records"]
    assert code == 0 and m["unreconciled"] == []
    assert (records["in"], records["out"], records["dropped"]) == (5, 4, {"bad_http_header": 1})


def _rgba_png(side: int) -> bytes:
    import io

    from PIL import Image

    image = Image.new("RGBA", (side, side), (200, 30, 30, 128))
    image.paste((20, 90, 200, 255), (side // 4, side // 4, side // 2, side // 2))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_a_large_transparent_image_is_flattened_as_img2dataset_would_in_bounded_memory():
    """img2dataset's Resizer mattes alpha in float64 (56 bytes a pixel: one 88-Mpx RGBA PNG of 0.36 MB took a
    worker past 4 GB); a large transparent image is flattened with Pillow first, to the same picture."""
    import io

    import numpy as np
    from img2dataset.resizer import Resizer
    from PIL import Image

    from interleaf.download.fetcher import FetchConfig, LockedResizer

    data = _rgba_png(2200)  # 4.8 Mpx: above FLATTEN_PIXELS
    ours, width, height, ow, oh = LockedResizer(FetchConfig())(data)
    theirs = Resizer(image_size=256, resize_mode="keep_ratio", resize_only_if_bigger=True)(io.BytesIO(data))
    assert (width, height, ow, oh) == theirs[1:5] == (256, 256, 2200, 2200)
    a = np.asarray(Image.open(io.BytesIO(ours)).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(theirs[0])).convert("RGB"), dtype=np.int16)
    assert np.abs(a - b).mean() < 2.0


@pytest.mark.slow
def test_a_huge_transparent_image_is_resized_in_bounded_memory(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "huge.png"
    path.write_bytes(_rgba_png(9000))  # 81 Mpx, under Pillow's limit like the red team's 88-Mpx PNGs
    code = ("import resource; from interleaf.download.fetcher import FetchConfig, LockedResizer; "
            "resizer = LockedResizer(FetchConfig()); data = open(%r, 'rb').read(); "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; out = resizer(data); "
            "print(out[1:], '|', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)" % str(path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    sizes, grown_kb = result.stdout.split("|")
    assert sizes.strip() == "(256, 256, 9000, 9000)"
    # the decoded RGBA picture (324 MB) and little more; the Resizer's own matting: about 4.5 GB
    assert int(grown_kb) < 600_000, f"grew {int(grown_kb) // 1024} MB"


def test_dead_letters_per_file_are_capped_and_every_bad_row_still_counted(tmp_path):
    from interleaf.pipelines.ingest_rows import MAX_DEAD_LETTERS
    from interleaf.schemas.failure import failures_from_table
    from interleaf.shards import open_shards

    path = tmp_path / "numbers.obelics.json"
    path.write_text(json.dumps(list(range(MAX_DEAD_LETTERS + 500))))  # a list of numbers: every row is bad
    code, m = _run(tmp_path, path)
    assert code == 0 and m["unreconciled"] == []
    assert m["funnel"]["ingest"]["documents"]["dropped"] == {"bad_row": MAX_DEAD_LETTERS + 500}
    letters = failures_from_table(open_shards(str(tmp_path / "out" / "failed")).read())
    [summary] = [f for f in letters if f.key.endswith(":*")]
    assert len(letters) == MAX_DEAD_LETTERS + 1 and "500 more bad rows" in summary.error
