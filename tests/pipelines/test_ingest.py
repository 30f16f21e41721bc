"""The ingest stage on the real fixture WARCs and datasets, through Beam's real local runner."""

import json
import socket

import pytest

from interleaf.cli import main
from interleaf.filters.image_rules import ImageRules
from interleaf.pipelines.common import create_pipeline, pipeline_options
from interleaf.pipelines.run import RunConfig, run
from interleaf.schemas.document import DOCUMENT_SCHEMA, documents_from_table
from interleaf.schemas.image import IMAGE_SCHEMA, images_from_table
from interleaf.shards import open_shards, read_shard

ALL_WARCS = [
    "IAH-20080430204825-00000-blackbook-truncated.warc.gz", "IAH-urls-wget.warc.gz", "brotli-transfer.warc.gz",
    "commoncrawl-record.warc.gz", "dolma-sample-0000.warc.gz", "example-iana.org-chunked.warc",
    "example-wget-bad-target-uri.warc.gz", "example.warc.gz", "issue-493.warc", "issue-514.warc",
    "malformed-content-length.warc", "truncated-record.warc.gz", "wikipedia-mona-lisa-with-images.warc.gz",
]


def _docs(path):
    return documents_from_table(open_shards(str(path)).read())


def _ingest(tmp_path, inputs, *, args=(), **quality):
    # every archived image passes the image rules here: what ingest itself does is checked (the rules on
    # archived images are tests/pipelines/test_image_rules.py's)
    cfg = RunConfig(stages=["ingest"], image_rules=ImageRules(min_side=1, max_aspect_ratio=1e9))
    for k, v in quality.items():
        setattr(cfg.ingest.quality, k, v)
    return run([str(i) for i in inputs], str(tmp_path), cfg, list(args))


def _check_reconciled(manifest):
    assert manifest["unreconciled"] == []
    for unit, e in manifest["funnel"]["ingest"].items():
        assert e["in"] == e["out"] + sum(e["dropped"].values()), unit


@pytest.mark.slow
def test_every_fixture_warc_ingests_and_reconciles(tmp_path, data_dir):
    m = _ingest(tmp_path, [data_dir / "warc" / n for n in ALL_WARCS], min_images=0)
    _check_reconciled(m)
    f = m["funnel"]["ingest"]
    # records: every record of the 13 files read; pages + revisits + images passed on
    assert f["records"]["in"] == 259  # the sum of tests/readers/test_warc.py's per-file counts
    assert f["records"]["out"] == 44 + 1 + 33 + 5  # pages, page revisits, images, image revisits
    assert f["records"]["dropped"]["truncated"] == 1 and f["records"]["dropped"]["no_target_uri"] == 1
    # documents: 44 pages + 1 resolved revisit enter; kept + rejected shards hold what left
    assert f["documents"]["in"] == 45
    kept, rejected = _docs(tmp_path / "documents"), _docs(tmp_path / "rejected")
    assert len(kept) == f["documents"]["out"] and len(rejected) == sum(f["documents"]["dropped"].values())
    assert all(d.reason for d in rejected) and all(d.kept for d in kept)
    # nodes in kept documents are all kept (dropped ones stripped)
    assert all(n.kept for d in kept for n in d.nodes)
    assert sum(len(d.nodes) for d in kept) == f["nodes"]["out"]


def test_truncated_and_malformed_files_are_counted_not_fatal(tmp_path, data_dir):
    m = _ingest(tmp_path, [data_dir / "warc" / "truncated-record.warc.gz",
                           data_dir / "warc" / "malformed-content-length.warc"], min_images=0)
    _check_reconciled(m)
    f = m["funnel"]["ingest"]
    assert f["records"]["dropped"]["truncated"] == 1
    assert f["records"]["dropped"]["no_target_uri"] == 1
    assert f["documents"]["in"] == 6


def test_revisits_are_resolved_against_their_originals(tmp_path, data_dir):
    m = _ingest(tmp_path, [data_dir / "warc" / "example.warc.gz", data_dir / "warc" / "issue-493.warc"],
                min_images=0)
    _check_reconciled(m)
    f = m["funnel"]["ingest"]
    assert "revisit_unresolved" not in f["documents"]["dropped"]
    # example.warc.gz: the page and its revisit, same URL and content, two captures
    docs = [d for d in _docs(tmp_path / "documents") + _docs(tmp_path / "rejected")
            if "example.com" in d.url]
    assert len(docs) == 2 and {d.crawl_date for d in docs}.__len__() == 2
    assert any(d.meta.get("revisit_of") for d in docs)
    # issue-493: 5 GIF responses and 5 revisits of them -> image records carry both URLs' bytes once
    images = images_from_table(open_shards(str(tmp_path / "images")).read())
    assert f["images"]["in"] == 10 and len(images) == f["images"]["out"]
    assert sum(len(r.urls) for r in images) <= 10 and all(r.status == "ok" and r.format == "gif" for r in images)


def test_archived_images_resolve_image_nodes(tmp_path, data_dir):
    m = _ingest(tmp_path, [data_dir / "warc" / "wikipedia-mona-lisa-with-images.warc.gz"], min_images=0)
    _check_reconciled(m)
    f = m["funnel"]["ingest"]
    resolved = f["nodes"]["info"]["resolved_from_archive"]
    docs = _docs(tmp_path / "documents") + _docs(tmp_path / "rejected")
    with_sha = [n for d in docs for n in d.image_nodes if n.image_sha256]
    assert resolved == len(with_sha) > 0
    shas = {r.sha256 for r in images_from_table(open_shards(str(tmp_path / "images")).read())}
    assert {n.image_sha256 for n in with_sha} <= shas


def test_obelics_and_mmc4_inputs(tmp_path, data_dir):
    m = _ingest(tmp_path, [data_dir / "obelics" / "cc.obelics.jsonl", data_dir / "obelics" / "issue-493.obelics.jsonl",
                           data_dir / "mmc4" / "mmc4_readme_example_doc.json"], args=(), min_images=0)
    _check_reconciled(m)
    f = m["funnel"]["ingest"]
    assert f["documents"]["in"] == 1 + 4 + 1
    assert f["nodes"]["in"] == (2 + 8) + (3 + 1) + (3 + 2)


def test_bad_rows_are_counted(tmp_path):
    src = tmp_path / "bad.obelics.jsonl"
    src.write_text('{"texts": ["a"], "images": [null], "general_metadata": "{\\"url\\": \\"http://x/\\"}"}\n'
                   'not json\n{"texts": ["a", "b"], "images": [null]}\n')
    m = _ingest(tmp_path / "out", [src], min_images=0)
    _check_reconciled(m)
    assert m["funnel"]["ingest"]["documents"]["dropped"]["bad_row"] == 2


def test_same_inputs_give_byte_identical_shards_across_worker_counts(tmp_path, data_dir):
    inputs = [data_dir / "warc" / "issue-493.warc", data_dir / "warc" / "IAH-urls-wget.warc.gz"]
    _ingest(tmp_path / "a", inputs, min_images=0)
    _ingest(tmp_path / "b", inputs, args=("--direct_num_workers", "2", "--direct_running_mode",
                                          "multi_threading"), min_images=0)
    for sub in ("documents", "rejected", "images"):
        a = sorted((tmp_path / "a" / sub).iterdir())
        assert a and [p.read_bytes() for p in a] == [(tmp_path / "b" / sub / p.name).read_bytes() for p in a]


def test_local_runner_never_reaches_the_network(tmp_path, data_dir, monkeypatch):
    attempts = []
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if not (str(host).startswith("127.") or host in ("localhost", "::1")):
            attempts.append(address)
            raise OSError("network disabled in this test")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    assert type(create_pipeline(pipeline_options(["--runner", "DirectRunner"])).runner).__name__ == "FnApiRunner"
    _ingest(tmp_path, [data_dir / "warc" / "commoncrawl-record.warc.gz"], min_images=0)
    assert attempts == []


def test_command_line(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    code = main(["run", str(data_dir / "warc" / "dolma-sample-0000.warc.gz"), "--output", str(out),
                 "--stages", "ingest", "--min-images", "0", "--num-shards", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ingest   documents" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["ingest"]["quality"]["min_images"] == 0 and manifest["unreconciled"] == []
    assert sorted(p.name for p in (out / "documents").iterdir()) == ["part-00000-of-00002.arrow",
                                                                     "part-00001-of-00002.arrow"]
    assert read_shard(str(out / "documents" / "part-00000-of-00002.arrow"), DOCUMENT_SCHEMA).num_rows >= 0
    assert read_shard(str(out / "images" / "part-00000-of-00002.arrow"), IMAGE_SCHEMA).num_rows == 0


def test_command_line_errors_are_one_line(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.warc.gz"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no input matches" in err[0]
    (tmp_path / "x.txt").write_text("hello")
    assert main(["run", str(tmp_path / "x.txt"), "--output", str(tmp_path / "o")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "x.txt"), "--output", str(tmp_path / "o"), "--stages", "nope"]) == 2
    assert "unknown stage" in capsys.readouterr().err
