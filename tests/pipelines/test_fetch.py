"""FetchImages on Beam's local runner against real HTTP servers on 127.0.0.1: the fixture sites served from
their manifests, resume from a store, and a run killed part-way then rerun without fetching anything twice."""

import hashlib
import importlib.util
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pytest
from PIL import Image

from interleaf.download.fetcher import FetchConfig
from interleaf.download.journal import list_journals, read_journal
from interleaf.filters.image_rules import ImageRules
from interleaf.filters.optout import OptOutList
from interleaf.pipelines.common import (
    WriteShards,
    create_pipeline,
    funnel_from,
    pipeline_options,
    unreconciled,
)
from interleaf.pipelines.fetch import FetchImages, FetchImagesConfig, fetch_url, host_key, merge_records
from interleaf.schemas.document import Document, Node, documents_from_table, documents_to_table, make_doc_id
from interleaf.schemas.image import ImageRecord, images_from_table
from interleaf.shards import open_shards, write_shard

_spec = importlib.util.spec_from_file_location(
    "fetch_servers", Path(__file__).resolve().parent.parent / "download" / "test_fetch_servers.py")
servers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(servers)

SITES = ("netzliteratur-2008", "wikipedia-mona-lisa-2013")


def fetch_config(**overrides) -> FetchConfig:
    base = dict(allow_private_hosts=True, connect_timeout_s=2.0, read_timeout_s=2.0, total_timeout_s=5.0,
                retries=1, backoff_s=0.2)
    return FetchConfig(**{**base, **overrides})


def run_fetch(docs, store_dir, *, store=None, fetch=None, rules=None, **config):
    """Run FetchImages once; returns (documents, image store records, funnel), read back from the shards the
    run wrote (the documents through WriteShards beside the store)."""
    cfg = FetchImagesConfig(fetch=fetch or fetch_config(), store_dir=str(store_dir),
                            **{"per_host_rate": 0, "threads": 8, **config})
    docs_dir = f"{store_dir}-documents"
    p = create_pipeline(pipeline_options())
    inputs = {"documents": p | "Docs" >> beam.Create(docs)}
    if store is not None:
        inputs["store"] = p | "Store" >> beam.Create(store)
    result = inputs | FetchImages(cfg, rules)
    result["documents"] | "WriteDocs" >> WriteShards(docs_dir, documents_to_table, lambda d: d.doc_id)
    outcome = p.run()
    outcome.wait_until_finish()
    out_docs = documents_from_table(open_shards(docs_dir).read())
    images = images_from_table(open_shards(str(store_dir)).read())
    return out_docs, images, funnel_from(outcome)


def manifest_documents(sites: "servers.Sites") -> tuple[list[Document], dict[str, dict]]:
    """A Document per captured HTML page: its img links as image nodes (mapped to the local servers).
    Also {local url: img_ref}."""
    docs, refs = [], {}
    for site, entries in sites.manifests.items():
        for entry in entries:
            if not entry.get("img_refs"):
                continue
            nodes = [Node.text_node(f"page {entry['url']}")]
            for ref in entry["img_refs"]:
                url = sites.local(ref["resolved"])
                nodes.append(Node.image_node(url, alt_text=ref["src"]))
                refs[url] = {**ref, "site": site}
            docs.append(Document(doc_id=make_doc_id(entry["url"], nodes), url=entry["url"], nodes=nodes))
    return docs, refs


def expected_status(site: str, ref: dict, rules: ImageRules) -> str:
    """What the stage must say about one captured img link, decided from the fixture file itself."""
    if not ref["in_tree"]:
        return "http_4xx"
    entry = next(e for e in servers.load_manifest(site) if e["url"] == ref["resolved"])
    with Image.open(servers.SITES / site / entry["file"]) as im:
        w, h = im.size
    if min(w, h) < rules.min_side:
        return "too_small"
    if max(w, h) / min(w, h) > rules.max_aspect_ratio:
        return "bad_aspect"
    return "ok"


@pytest.fixture
def sites():
    s = servers.Sites(*SITES)
    yield s
    s.close()


def test_fixture_sites_end_to_end(sites, tmp_path):
    docs, refs = manifest_documents(sites)
    # a document dropped upstream passes through untouched; a node already resolved (from a WARC) is kept
    dropped = Document(doc_id="dropped", url="http://x/", nodes=[Node.image_node(sites.local(next(iter(
        r["resolved"] for r in refs.values()))))]).dropped("too_short")
    resolved = Node(kind="image", image_url="http://archived.example/a.jpg", image_sha256="e" * 64)
    odd = Document(doc_id="odd", url="http://odd/", nodes=[Node.image_node("http://[::1/x.jpg"),
                                                           Node.image_node("data:image/png;base64,iVBORw0KGgo=")])
    docs += [odd, dropped, Document(doc_id="warc", url="http://archived.example/", nodes=[resolved])]
    out_docs, images, funnel = run_fetch(docs, tmp_path / "images", num_shards=2)
    rules = ImageRules()

    by_id = {d.doc_id: d for d in out_docs}
    assert set(by_id) == {d.doc_id for d in docs}
    assert by_id["dropped"] == dropped and by_id["warc"].nodes == [resolved]
    store = {u: r for r in images for u in r.urls}
    checked = set()
    assert [n.reason for n in by_id["odd"].nodes] == ["bad_url", "unsupported_scheme"]  # decided, not fetched
    for doc in docs[:-3]:
        for before, after in zip(doc.nodes, by_id[doc.doc_id].nodes, strict=True):
            if not before.is_image:
                assert after == before
                continue
            ref = refs[before.image_url]
            want = expected_status(ref["site"], ref, rules)
            got = "ok" if after.kept else after.reason
            assert got == want, (before.image_url, store[before.image_url].error)
            record = store[before.image_url]
            assert record.status == want
            if want == "ok":
                assert after.image_sha256 == record.sha256 == hashlib.sha256(record.data).hexdigest()
                with Image.open(io.BytesIO(record.data)) as im:
                    assert im.size == (record.width, record.height) and im.format == "JPEG"
            checked.add(before.image_url)
    statuses = {store[u].status for u in checked}
    assert {"ok", "too_small", "http_4xx"} <= statuses  # the fixtures exercise each
    assert sum(1 for r in refs.values() if not r["in_tree"]) == 1

    # unique URLs only: every image requested once, the consent files (robots.txt, tdmrep.json) once per host
    hits = sites.hits()
    assert max(hits.values()) == 1, hits.most_common(3)
    image_hosts = {r["resolved"].split("/")[2] for r in refs.values()}
    consent = ("/robots.txt", "/.well-known/tdmrep.json")
    assert {k for k in hits if k.endswith(consent)} == {f"{h}{c}" for h in image_hosts for c in consent}
    every_link = {r["resolved"].split("://")[1] for r in refs.values()}
    assert {k for k in hits if not k.endswith(consent)} == every_link

    # the funnel reconciles, in unique URLs, nodes and documents
    assert unreconciled(funnel) == []
    f = funnel["fetch"]
    assert f["images"]["in"] == len(checked) + 2 and f["images"]["info"]["fetched"] == len(checked)
    assert f["images"]["out"] == sum(1 for u in checked if store[u].status == "ok")
    n_nodes = sum(len(d.image_nodes) for d in docs if d.kept)
    node_drops = Counter(n.reason for d in docs if d.kept for n in by_id[d.doc_id].image_nodes if not n.kept)
    assert f["nodes"] == {"in": n_nodes, "out": n_nodes - sum(node_drops.values()),
                          "dropped": dict(node_drops)}
    assert f["documents"] == {"in": len(docs) - 1, "out": len(docs) - 1, "dropped": {}}

    # the store was written as 2 shards; the journals were absorbed and removed
    assert len(open_shards(str(tmp_path / "images")).paths) == 2
    assert list_journals(str(tmp_path / "images")) == []


class _ResumeServer(servers.BaseServer):
    """Images at /img/<n>.jpg and a 120x100 one at /small.jpg; /flaky.jpg answers 503 on its first request;
    /gone.jpg is 404."""

    def __init__(self, n):
        self.images = {f"/img/{i}.jpg": servers.jpeg((300, 240), seed=i) for i in range(n)}
        self.images["/small.jpg"] = servers.jpeg((120, 100), seed=99)
        self.flaky = 0
        super().__init__()

    def handle_get(self, h):
        if h.path == "/flaky.jpg":
            self.flaky += 1
            if self.flaky == 1:
                return self.send(h, 503, b"later", "text/plain")
            return self.send(h, 200, self.images["/img/0.jpg"])
        if h.path in self.images:
            return self.send(h, 200, self.images[h.path])
        return self.send(h, 404, b"", "text/plain")


def _docs_for(base, paths, per_doc=3):
    docs = []
    for i in range(0, len(paths), per_doc):
        nodes = [Node.text_node(f"doc {i}")] + [Node.image_node(base + p) for p in paths[i:i + per_doc]]
        docs.append(Document(doc_id=f"doc{i:03d}", url=f"http://page/{i}", nodes=nodes))
    return docs


def test_resume_skips_stored_and_permanent_failures_and_retries_transient(tmp_path):
    server = _ResumeServer(6)
    try:
        paths = [f"/img/{i}.jpg" for i in range(5)] + ["/flaky.jpg", "/gone.jpg", "/img/1.jpg", "/small.jpg"]
        docs = _docs_for(server.base, paths)
        docs[2].nodes[2].image_url += "#section"  # /img/1.jpg again: a fragment is never sent
        archived = ImageRecord(sha256="a" * 64, urls=[server.base + "/img/5.jpg"], status="ok", data=b"x",
                               source="warc")
        docs.append(Document(doc_id="warcdoc", url="http://page/w",
                             nodes=[Node.image_node(archived.urls[0])]))
        store_dir = tmp_path / "images"
        fetch = fetch_config(retries=0)  # the 503 stays a failure in run 1

        docs1, images1, funnel1 = run_fetch(docs, store_dir, store=[archived], fetch=fetch)
        status1 = {r.urls[0]: r.status for r in images1 if r.status != "ok"}
        assert status1 == {server.base + "/flaky.jpg": "http_5xx", server.base + "/gone.jpg": "http_4xx",
                           server.base + "/small.jpg": "too_small"}
        assert server.hits["/img/5.jpg"] == 0  # archived: never fetched
        assert server.hits["/img/1.jpg"] == 1
        assert funnel1["fetch"]["images"]["info"]["fetched"] == 8

        # run 2: a new opt-out entry, the same documents, the store from run 1
        optout = OptOutList.from_lines([f"url:{server.base}/img/4.jpg"])
        hits_before = dict(server.hits)
        docs2, images2, funnel2 = run_fetch(docs, store_dir, fetch=fetch_config(retries=0, optout=optout))
        new_hits = {k: v - hits_before.get(k, 0) for k, v in server.hits.items()
                    if v != hits_before.get(k, 0)}
        # only the transient failure is fetched again (and the host's consent files, once per run)
        assert new_hits == {"/flaky.jpg": 1, "/robots.txt": 1, "/.well-known/tdmrep.json": 1}
        info = funnel2["fetch"]["images"]["info"]
        assert info["fetched"] == 1 and info["from_store"] == 8  # img 0-4 (4 opted out), gone, small, warc
        assert unreconciled(funnel2) == []
        by_url = {u: r for r in images2 for u in r.urls}
        assert by_url[server.base + "/flaky.jpg"].status == "ok"
        assert by_url[server.base + "/flaky.jpg"].sha256 == by_url[server.base + "/img/0.jpg"].sha256
        opted = by_url[server.base + "/img/4.jpg"]
        assert opted.status == "opted_out" and opted.data is None
        assert by_url[archived.urls[0]].source == "warc"
        nodes = {n.image_url: n for d in docs2 for n in d.image_nodes}
        assert nodes[server.base + "/img/4.jpg"].reason == "opted_out"
        assert nodes[server.base + "/gone.jpg"].reason == "http_4xx"
        assert nodes[archived.urls[0]].image_sha256 == "a" * 64
        one = nodes[server.base + "/img/1.jpg"]
        assert one.image_sha256 and nodes[server.base + "/img/1.jpg#section"].image_sha256 == one.image_sha256
        assert (nodes[server.base + "/flaky.jpg"].image_sha256
                == nodes[server.base + "/img/0.jpg"].image_sha256)
        # the same bytes at two URLs are one image with both URLs
        flaky = by_url[server.base + "/flaky.jpg"]
        assert sorted(flaky.urls) == sorted([server.base + "/flaky.jpg", server.base + "/img/0.jpg"])

        # run 3: nothing left to fetch
        hits_before = dict(server.hits)
        _, images3, funnel3 = run_fetch(docs, store_dir, fetch=fetch_config(optout=optout))
        assert {k: v for k, v in server.hits.items() if v != hits_before.get(k, 0)} == {}
        assert "fetched" not in funnel3["fetch"]["images"].get("info", {})
        assert sorted(map(repr, images3)) == sorted(map(repr, images2))

        # run 4: smaller images now allowed; only the one refused for its size is fetched again
        hits_before = dict(server.hits)
        docs4, _, _ = run_fetch(docs, store_dir, fetch=fetch_config(optout=optout),
                                rules=ImageRules(min_side=100))
        assert {k: v - hits_before.get(k, 0) for k, v in server.hits.items()
                if v != hits_before.get(k, 0)} == {"/small.jpg": 1, "/robots.txt": 1,
                                                   "/.well-known/tdmrep.json": 1}
        small = next(n for d in docs4 for n in d.image_nodes if n.image_url.endswith("/small.jpg"))
        assert small.kept and small.image_sha256
    finally:
        server.close()


# ---------------------------------------------------------------- a killed run


class _GateServer(servers.BaseServer):
    """Serves /img/<n>.jpg; after `limit` images it holds further image requests until released, then
    drops them unanswered. `served` counts only responses written in full."""

    def __init__(self, n, limit):
        self.images = {f"/img/{i}.jpg": servers.jpeg((300, 240), seed=i) for i in range(n)}
        self.limit, self.gate, self.closed = limit, threading.Event(), False
        super().__init__()

    def handle_get(self, h):
        if h.path not in self.images:
            return self.send(h, 404, b"", "text/plain")
        with self._lock:
            done = sum(n for path, n in self.served.items() if path in self.images)
            admitted = done + getattr(self, "_inflight", 0) < self.limit or self.gate.is_set()
            if admitted:
                self._inflight = getattr(self, "_inflight", 0) + 1
        if not admitted:
            self.gate.wait()
            if self.closed:
                h.close_connection = True
                return
        try:
            self.send(h, 200, self.images[h.path])
        finally:
            if admitted:
                with self._lock:
                    self._inflight -= 1


RUNNER = """
import json, sys
import apache_beam as beam
from interleaf.download.fetcher import FetchConfig
from interleaf.pipelines.common import create_pipeline, pipeline_options
from interleaf.pipelines.fetch import FetchImages, FetchImagesConfig
from interleaf.schemas.document import DOCUMENT_SCHEMA, documents_from_table
from interleaf.shards import read_shard

docs_path, store_dir = sys.argv[1], sys.argv[2]
docs = documents_from_table(read_shard(docs_path, DOCUMENT_SCHEMA))
fetch = FetchConfig(allow_private_hosts=True, read_timeout_s=120, total_timeout_s=120)  # held requests wait
config = FetchImagesConfig(fetch=fetch, store_dir=store_dir,
                           threads=4, per_host_concurrency=4, per_host_rate=0)
p = create_pipeline(pipeline_options())
p | beam.Create(docs) | FetchImages(config)
p.run().wait_until_finish()
"""


@pytest.mark.slow
def test_killed_run_loses_nothing_finished_and_rerun_fetches_nothing_twice(tmp_path):
    n, limit = 30, 12
    server = _GateServer(n, limit)
    try:
        paths = [f"/img/{i}.jpg" for i in range(n)]
        docs = _docs_for(server.base, paths)
        docs_path, store_dir = tmp_path / "docs.arrow", tmp_path / "images"
        write_shard(str(docs_path), documents_to_table(docs))
        (tmp_path / "runner.py").write_text(RUNNER)
        env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
        proc = subprocess.Popen([sys.executable, str(tmp_path / "runner.py"), str(docs_path), str(store_dir)],
                                env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        journaled = 0
        while time.monotonic() < deadline and proc.poll() is None:
            journaled = sum(len(read_journal(p)) for p in list_journals(str(store_dir)))
            if journaled >= limit:
                break
            time.sleep(0.2)
        stderr = proc.stderr.read()[-2000:] if proc.poll() is not None else ""
        assert journaled == limit, f"run 1 journaled {journaled}; stderr: {stderr}"
        os.killpg(proc.pid, signal.SIGKILL)  # mid-run: requests are held at the gate
        proc.wait(timeout=30)
        proc.stderr.close()
        server.closed = True
        server.gate.set()
        assert sum(n for path, n in server.served.items() if path in server.images) == limit

        out_docs, images, funnel = run_fetch(docs, store_dir, threads=4)
        served = {path: count for path, count in server.served.items() if path in server.images}
        assert len(served) == n and set(served.values()) == {1}  # every image served exactly once
        assert funnel["fetch"]["images"]["info"]["fetched"] == n - limit
        assert funnel["fetch"]["images"]["info"]["from_store"] == limit
        assert sorted(r.status for r in images) == ["ok"] * n
        assert all(node.image_sha256 for d in out_docs for node in d.image_nodes)
        assert list_journals(str(store_dir)) == []
    finally:
        server.gate.set()
        server.close()


# ---------------------------------------------------------------- pure helpers


def test_host_key_and_merge():
    assert host_key("HTTP://Example.COM:8080/a?b") == "http://example.com:8080"
    assert fetch_url(" http://h/a.jpg?x=1#frag ") == "http://h/a.jpg?x=1"
    a = ImageRecord(sha256="s", urls=["u2"], status="ok", data=b"1", source="fetch")
    b = ImageRecord(sha256="s", urls=["u1", "u2"], status="ok", data=b"1", source="warc")
    merged = merge_records([a, b])
    assert merged.urls == ["u1", "u2"] and merged.source == "fetch"
    t = ImageRecord(sha256=None, urls=["u"], status="timeout", error="slow")
    g = ImageRecord(sha256=None, urls=["u"], status="http_4xx", error="HTTP 404")
    assert merge_records([t, g]).status == "http_4xx"


