"""Hostile dataset rows through `interleaf run` (issue 13 items 2 and 4): every bad line costs that line only,
is counted under a reason, and leaves a dead letter in DIR/failed/ naming the file, the line and the field;
the good rows around it come through intact."""

import datetime
import decimal
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from interleaf.cli import main
from interleaf.schemas.document import documents_from_table
from interleaf.schemas.failure import failures_from_table
from interleaf.shards import open_shards

PROSE = ("The ferry leaves the harbour at seven, and on calm mornings the whole crossing takes less than an "
         "hour, "
         "long enough for a coffee and a look at the seals on the sandbank")


def obelics(url: str, text: str = PROSE, **extra) -> dict:
    row = {"texts": [text, None], "images": [None, "http://img.example/a.jpg"],
           "metadata": json.dumps([None, {"rendered_width": 300}]),
           "general_metadata": json.dumps({"url": url})}
    row.update(extra)
    return row


def line(row) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode("utf-8")


# (the line's bytes, the reason it is dropped or None when kept, a word the dead letter must contain)
LINES = [
    (line(obelics("http://a.example/1")), None, None),
    (line(obelics("http://a.example/2", PROSE + " \u2028 and a line separator inside the text")), None, None),
    (line(obelics("http://a.example/3", PROSE + " \u0085 next line")), None, None),
    (b'{"texts": ["caf\xe9 au lait"], "images": [null]}', "bad_row", "JSON"),  # Latin-1, not UTF-8
    (b"[" * 100_000 + b"]" * 100_000, "bad_row", "nested"),
    (b'{"texts": [5, null], "images": [null, "http://i/x.jpg"], '
     b'"general_metadata": "{\\"url\\": \\"http://b/\\"}"}',
     "bad_row", "text"),
    (line(obelics("http://a.example/4", metadata=json.dumps([None, {"rendered_width": 10 ** 400}]))),
     "bad_row", "rendered_width"),
    (line(obelics("http://a.example/5", metadata=json.dumps([None, {"rendered_width": 300, "x": 1e999}]))),
     "bad_row", "meta"),
    (line(obelics(12345)), "bad_row", "url"),
    (b'{"texts": ["\\ud800 lone surrogate ' + PROSE.encode() + b'", null], '
     b'"images": [null, "http://i/y.jpg"],'
     b' "general_metadata": "{\\"url\\": \\"http://c/\\"}"}', "bad_row", "Unicode"),
    (b'["a", "list", "not", "an", "object"]', "bad_row", "object"),
    (b"{not json}", "bad_row", "JSON"),
    (b"", None, None),  # a blank line is no row
    (line(obelics("http://a.example/6", PROSE + " x" * 700_000)), "too_large", "max_row_bytes"),
    (line(obelics("http://a.example/7")), None, None),
]


def _run(tmp_path, path):
    (tmp_path / "run.toml").write_text("[ingest]\nmax_row_bytes = 1000000\n\n"
                                       "[ingest.quality]\nmin_images = 0\nmin_words = 10\n")
    out = tmp_path / "out"
    assert main(["run", str(path), "--output", str(out), "--config", str(tmp_path / "run.toml"),
                 "--stages", "ingest"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    docs = documents_from_table(open_shards(str(out / "documents")).read())
    failed = failures_from_table(open_shards(str(out / "failed")).read()) if (out / "failed").exists() else []
    return m, docs, failed


@pytest.mark.parametrize("compress", [False, True])
def test_bad_lines_cost_that_line_only(tmp_path, compress):
    data = b"\n".join(b for b, _, _ in LINES) + b"\n"
    path = tmp_path / ("rows.obelics.jsonl.gz" if compress else "rows.obelics.jsonl")
    path.write_bytes(gzip.compress(data) if compress else data)
    m, docs, failed = _run(tmp_path, path)

    assert m["unreconciled"] == []
    f = m["funnel"]["ingest"]["documents"]
    want_dropped = {}
    for _, reason, _ in LINES:
        if reason:
            want_dropped[reason] = want_dropped.get(reason, 0) + 1
    assert f["in"] == sum(1 for b, _, _ in LINES if b)  # the blank line is not a row
    assert {k: v for k, v in f["dropped"].items() if k in ("bad_row", "too_large")} == want_dropped
    kept_urls = sorted(d.url for d in docs)
    assert kept_urls == [f"http://a.example/{i}" for i in (1, 2, 3, 7)]
    two = next(d for d in docs if d.url.endswith("/2"))
    assert "\u2028" in two.nodes[0].text  # one row, not cut at the line separator

    by_line = {int(x.key.rsplit(":", 1)[1]): x for x in failed}
    for number, (_, reason, word) in enumerate(LINES):
        if reason:
            letter = by_line[number]
            assert letter.stage == "ingest" and letter.key.startswith(path.name + ":")
            assert letter.error.startswith(reason) and word.lower() in letter.error.lower(), letter.error
    assert len(failed) == sum(want_dropped.values())


def test_a_broken_gzip_stream_keeps_the_rows_before_it(tmp_path):
    data = gzip.compress(b"\n".join(line(obelics(f"http://g.example/{i}")) for i in range(40)) + b"\n")
    path = tmp_path / "cut.obelics.jsonl.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    m, docs, failed = _run(tmp_path, path)
    assert m["unreconciled"] == [] and 0 < len(docs) < 40
    assert m["funnel"]["ingest"]["documents"]["dropped"].get("bad_file") == 1
    assert [x.error.split(":")[0] for x in failed] == ["bad_file"]


def test_parquet_extra_columns_of_any_type(tmp_path):
    rows = [obelics(f"http://p.example/{i}") for i in range(3)]
    table = pa.table({
        "texts": [r["texts"] for r in rows], "images": [r["images"] for r in rows],
        "metadata": [r["metadata"] for r in rows], "general_metadata": [r["general_metadata"] for r in rows],
        "fetched": pa.array([datetime.datetime(2024, 1, i + 1, tzinfo=datetime.timezone.utc)
                             for i in range(3)]),
        "price": pa.array([decimal.Decimal("1.50")] * 3, pa.decimal128(5, 2)),
        "blob": pa.array([b"\x00\xff"] * 3, pa.binary()),
        "nested": pa.array([[{"a": 1, "b": [1.5]}]] * 3),
    })
    path = tmp_path / "rows.obelics.parquet"
    pq.write_table(table, path)
    m, docs, failed = _run(tmp_path, path)
    assert m["unreconciled"] == [] and len(docs) == 3 and failed == []
