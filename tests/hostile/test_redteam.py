"""What an independent red-team pass found after items 1-7 (each a crash, a hang or a silent loss before
its fix), through the command line."""

import json

import pyarrow as pa
import pytest

from interleaf.cli import main
from interleaf.schemas.document import Document, Node, documents_to_table
from interleaf.shards import write_shards

PAGE = (b"<html><body><article><p>" + b"The tide tables for the estuary are printed every spring, and the "
        b"fishermen pin them to the wall of the harbour office. " * 4 + b"</p></article></body></html>")


def record(url: str, body: bytes, headers: str = "", date: str = "2024-05-01T10:00:00Z") -> bytes:
    http = (f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n{headers}\r\n".encode() + body)
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\nWARC-Date: {date}\r\n"
            f"WARC-Record-ID: <urn:uuid:{abs(hash(url)):032x}>\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n")
    return head.encode() + http + b"\r\n\r\n"


def _run(tmp_path, path, stages="ingest"):
    (tmp_path / "run.toml").write_text("[ingest.quality]\nmin_words = 5\nmin_images = 0\n")
    code = main(["run", str(path), "--output", str(tmp_path / "out"), "--config", str(tmp_path / "run.toml"),
                 "--stages", stages])
    return code, json.loads((tmp_path / "out" / "manifest.json").read_text())


def test_a_negative_chunk_size_and_a_bad_date_cost_their_record_only(tmp_path):
    warc = tmp_path / "odd.warc"
    warc.write_bytes(record("http://a.example/", PAGE)
                     + record("http://b.example/", b"-6\r\n" + PAGE, "Transfer-Encoding: chunked\r\n")
                     + record("http://c.example/", PAGE, date="0000-01-01T00:00:00Z")
                     + record("http://d.example/", PAGE))
    code, m = _run(tmp_path, warc)
    records = m["funnel"]["ingest"]["records"]
    assert code == 0 and m["unreconciled"] == [] and records["in"] == 4
    assert records["out"] == 3 and records["dropped"] == {"bad_record": 1}  # the dechunk falls back to raw
    assert m["funnel"]["ingest"]["documents"]["in"] == 3  # a.example, b.example and d.example are read


@pytest.mark.parametrize("bad,dropped", [
    ({"metadata": [None, {"rendered_width": float("inf")}]}, 1),  # a width that is no whole number: bad_row
    ({"general_metadata": {"url": "http://x.example/", "warc_filename": "f",
                           "warc_record_offset": float("inf")}}, 1),  # the offset: meta keeps infinity
    ({"metadata": [None, {"deep": json.loads("[" * 900 + "]" * 900)}]}, 1),  # cannot travel to workers
])
def test_rows_with_infinity_or_deep_metadata_do_not_stop_a_run(tmp_path, bad, dropped):
    good = {"texts": ["The ferry leaves the harbour at seven on calm mornings.", None],
            "images": [None, "http://i.example/a.jpg"], "general_metadata": {"url": "http://g.example/"}}
    rows = [good, {**good, **bad}, {**good, "general_metadata": {"url": "http://h.example/"}}]
    path = tmp_path / "rows.obelics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")  # json.dumps writes Infinity
    code, m = _run(tmp_path, path)
    assert code == 0 and m["status"] == "complete" and m["unreconciled"] == []
    assert m["funnel"]["ingest"]["documents"]["dropped"].get("bad_row", 0) == dropped


def test_inspect_refuses_shards_that_lie_about_their_kind_or_cells(tmp_path, capsys):
    doc = Document(doc_id="d", url="http://d/", nodes=[Node.text_node("x")])
    table = documents_to_table([doc])
    relabelled = table.replace_schema_metadata({**table.schema.metadata, b"interleaf.kind": b"images"})
    write_shards(str(tmp_path / "liar"), [relabelled])
    bad_meta = table.set_column(table.schema.get_field_index("meta"), "meta", pa.array(["{not json"]))
    write_shards(str(tmp_path / "badmeta"), [bad_meta])
    for directory in ("liar", "badmeta"):
        capsys.readouterr()
        assert main(["inspect", str(tmp_path / directory), "--sample", "2"]) == 2, directory
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("manifest", ["[1, 2, 3]", '"hello"', '{"funnel": "x", "stages": 5}',
                                      '{"funnel": {"ingest": {"documents": [1]}, "x": 5}, "config": []}'])
def test_report_and_inspect_read_manifests_of_any_shape(tmp_path, manifest, capsys):
    out = tmp_path / "run"
    write_shards(str(out / "documents"), [documents_to_table([Document(doc_id="d", url="http://d/", nodes=[
        Node.text_node("a paragraph of text")])])])
    (out / "manifest.json").write_text(manifest)
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    assert main(["inspect", str(out / "documents")]) == 0
