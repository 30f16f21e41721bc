"""The shared Beam pieces: deterministic shard writing, shard reading, and funnel counters."""

import apache_beam as beam

from interleaf.pipelines.common import (DecisionDoFn, Funnel, ReadShards, WriteShards, create_pipeline,
                                        funnel_from, pipeline_options, unreconciled)
from interleaf.schemas.document import (DOCUMENT_SCHEMA, Document, Node, documents_from_table,
                                        documents_to_table, make_doc_id)
from interleaf.shards import open_shards


def _docs(n):
    out = []
    for i in range(n):
        nodes = [Node.text_node(f"text {i}")]
        out.append(Document(doc_id=make_doc_id(f"http://x/{i}", nodes), url=f"http://x/{i}", nodes=nodes))
    return out


class _DropOdd(DecisionDoFn):
    """A filter written as a decision: the base counts and routes."""

    stage = "test"

    def decide(self, doc):
        return "odd" if int(doc.url.rsplit("/", 1)[1]) % 2 else None


def _write(tmp, docs, shards, args=(), rejected=None):
    p = create_pipeline(pipeline_options(list(args)))
    parts = p | beam.Create(docs) | beam.ParDo(_DropOdd()).with_outputs("rejected", main="kept")
    parts.kept | WriteShards(str(tmp), documents_to_table, lambda d: d.doc_id, num_shards=shards)
    if rejected is not None:
        parts.rejected | "WriteRejected" >> WriteShards(str(rejected), documents_to_table, lambda d: d.doc_id)
    result = p.run()
    result.wait_until_finish()
    return funnel_from(result)


def test_a_decision_is_counted_and_routed_by_the_base(tmp_path):
    docs = _docs(2 * Funnel.FLUSH_EVERY + 501)  # several flushes inside one bundle, then the bundle's end
    funnel = _write(tmp_path / "kept", docs, 1, rejected=tmp_path / "rejected")
    n = len(docs)
    assert funnel == {"test": {"documents": {"in": n, "out": (n + 1) // 2, "dropped": {"odd": n // 2}}}}
    rejected = documents_from_table(open_shards(str(tmp_path / "rejected")).read())
    assert len(rejected) == n // 2 and {(d.status, d.reason) for d in rejected} == {("dropped", "odd")}


def test_write_shards_is_deterministic_and_complete(tmp_path):
    docs = _docs(20)
    funnel = _write(tmp_path / "a", docs, 4)
    _write(tmp_path / "b", list(reversed(docs)), 4, ["--direct_num_workers", "2",
                                                       "--direct_running_mode", "multi_threading"])
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == [f"part-{i:05d}-of-00004.arrow" for i in range(4)]
    for name in names:  # byte-identical whatever the input order and worker count
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert open_shards(str(tmp_path / "a")).read().num_rows == 10
    assert funnel == {"test": {"documents": {"in": 20, "out": 10, "dropped": {"odd": 10}}}}
    assert unreconciled(funnel) == []


def test_empty_input_still_writes_every_shard(tmp_path):
    _write(tmp_path, [], 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00000-of-00002.arrow",
                                                          "part-00001-of-00002.arrow"]


def test_read_shards_round_trip(tmp_path):
    docs = [d for d in _docs(12)]
    _write(tmp_path, docs, 3)
    p = create_pipeline(pipeline_options())
    got = p | ReadShards(str(tmp_path), DOCUMENT_SCHEMA, documents_from_table) | beam.Map(lambda d: d.url)
    from apache_beam.testing.util import assert_that, equal_to
    assert_that(got, equal_to([f"http://x/{i}" for i in range(0, 12, 2)]), label="CheckUrls")
    p.run().wait_until_finish()


def test_unreconciled_reports_a_leak():
    assert unreconciled({"s": {"nodes": {"in": 5, "out": 3, "dropped": {"x": 1}}}}) == [
        "s/nodes: in 5 != out 3 + dropped 1"]
