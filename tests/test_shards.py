"""Shard IO: atomic writes, validated reads, clear errors, and the same code on an object store."""

import os

import pyarrow as pa
import pytest

from interleaf import storage
from interleaf.schemas.document import (
    DOCUMENT_SCHEMA,
    DOCUMENT_SCHEMA_VERSION,
    Document,
    Node,
    documents_to_table,
    make_doc_id,
)
from interleaf.schemas.meta import SchemaMismatchError, schema_metadata
from interleaf.schemas.tokens import TokenShardInfo, Vocabulary, tokens_to_table
from interleaf.shards import (
    ShardError,
    list_shards,
    open_shards,
    read_shard,
    shard_name,
    write_shard,
    write_shards,
)


def _docs(n: int, prefix: str = "p") -> pa.Table:
    docs = []
    for i in range(n):
        nodes = [Node.text_node(f"{prefix} paragraph {i}"), Node.image_node(f"http://x/{prefix}{i}.jpg")]
        docs.append(Document(doc_id=make_doc_id(f"http://x/{prefix}{i}", nodes), url=f"http://x/{prefix}{i}",
                             nodes=nodes))
    return documents_to_table(docs)


def test_shard_names():
    assert shard_name(3, 12) == "part-00003-of-00012.arrow"
    with pytest.raises(ValueError):
        shard_name(12, 12)


def test_write_and_read_a_directory(tmp_path):
    paths = write_shards(str(tmp_path / "docs"), [_docs(3, "a"), _docs(2, "b")])
    assert [os.path.basename(p) for p in paths] == ["part-00000-of-00002.arrow", "part-00001-of-00002.arrow"]
    shards = open_shards(str(tmp_path / "docs"))
    assert shards.kind == "documents" and shards.read().num_rows == 5
    assert shards.read(columns=["url"]).column_names == ["url"]


def test_truncated_shard_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "part-00000-of-00001.arrow"
    write_shard(str(path), _docs(50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match="not a complete Arrow IPC shard.*truncated"):
        read_shard(str(path), DOCUMENT_SCHEMA)


def test_a_failed_write_leaves_nothing_a_reader_accepts(tmp_path):
    path = tmp_path / "part-00000-of-00001.arrow"
    with pytest.raises(RuntimeError), storage.atomic_write(str(path)) as f:
        f.write(b"half a shard")
        raise RuntimeError("writer died")
    assert list(tmp_path.iterdir()) == []


def test_leftover_temporary_files_are_ignored(tmp_path):
    write_shards(str(tmp_path), [_docs(1)])
    (tmp_path / ".tmp-part-00001-of-00002.arrow-abc").write_bytes(b"half a shard")
    assert [os.path.basename(p) for p in list_shards(str(tmp_path))] == ["part-00000-of-00001.arrow"]


def test_version_and_kind_mismatches_are_explained(tmp_path):
    future = _docs(1).replace_schema_metadata(schema_metadata("documents", 99))
    write_shard(str(tmp_path / "v99.arrow"), future)
    with pytest.raises(SchemaMismatchError, match=f"version 99, this interleaf reads version {DOCUMENT_SCHEMA_VERSION}"):
        read_shard(str(tmp_path / "v99.arrow"), DOCUMENT_SCHEMA)
    plain = tmp_path / "plain.arrow"
    with pa.OSFile(str(plain), "wb") as f, pa.ipc.new_stream(f, pa.schema([("a", pa.int32())])) as w:
        w.write_table(pa.table({"a": pa.array([1], pa.int32())}))
    with pytest.raises(SchemaMismatchError, match="not an interleaf shard"):
        read_shard(str(plain))
    with pytest.raises(ShardError, match="no such file"):
        list_shards(str(tmp_path / "missing"))


def test_token_shards_from_two_tokenizers_are_not_mixed(tmp_path):
    def info(fp):
        return TokenShardInfo(vocabulary=Vocabulary.build(image_codebook_size=16, text_vocab_size=100,
                                                          image_grid=(2, 2)), tokenizers={"text": fp})
    write_shard(str(tmp_path / shard_name(0, 2)), tokens_to_table([("a", [1, 2])], info("a" * 64)))
    write_shard(str(tmp_path / shard_name(1, 2)), tokens_to_table([("b", [1, 2])], info("b" * 64)))
    with pytest.raises(ShardError, match="different tokenizers"):
        open_shards(str(tmp_path))


def test_the_same_code_reads_and_writes_an_object_store(memfs):
    paths = write_shards("memfs://bucket/run/documents", [_docs(2), _docs(3, "q")])
    assert paths[0] == "memfs://bucket/run/documents/part-00000-of-00002.arrow"
    assert sorted(memfs) == paths  # renamed into place: no temporary object left behind
    shards = open_shards("memfs://bucket/run/documents")
    assert shards.read().num_rows == 5


def test_a_shard_cut_at_a_batch_boundary_is_still_refused(tmp_path):
    # The stream format has no footer: a file cut exactly between record batches parses cleanly, so the
    # writer's row count in the metadata is what catches it.
    path = tmp_path / "part-00000-of-00001.arrow"
    table = _docs(10000)
    write_shard(str(path), table)
    reader = pa.ipc.open_stream(pa.memory_map(str(path)))
    first = reader.read_next_batch()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, reader.schema) as w:  # same schema and metadata, only the first batch
        w.write_batch(first)
    path.write_bytes(sink.getvalue().to_pybytes())
    with pytest.raises(ShardError, match=r"has 4096 rows where its metadata says 10000: truncated"):
        read_shard(str(path), DOCUMENT_SCHEMA)
