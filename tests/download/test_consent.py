"""Consent: X-Robots-Tag parsing, robots.txt (RFC 9309) rules and caching, opt-out lists and their
re-application to stores and shards already written (and the `interleaf optout` command)."""

import argparse
import email.message
import importlib.util
import json
from pathlib import Path

import pytest

from interleaf.commands import optout_cmd
from interleaf.download.consent import RobotsTxt, x_robots_directives, x_robots_refusal
from interleaf.download.fetcher import FetchConfig, Fetcher
from interleaf.download.journal import JournalWriter, list_journals, read_journal
from interleaf.filters.optout import OptOutList, OptOutListError, apply_to_paths
from interleaf.schemas.document import (
    DOCUMENT_SCHEMA,
    Document,
    Node,
    documents_from_table,
    documents_to_table,
)
from interleaf.schemas.image import IMAGE_SCHEMA, ImageRecord, images_from_table, images_to_table
from interleaf.shards import read_shard, write_shard

_spec = importlib.util.spec_from_file_location("fetch_servers",
                                               Path(__file__).with_name("test_fetch_servers.py"))
servers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(servers)


# ---------------------------------------------------------------- X-Robots-Tag


@pytest.mark.parametrize("values,refused", [
    (["noai"], True), (["NoImageAI"], True), (["noindex, nofollow"], True), (["none"], True),
    (["nofollow"], False), (["noarchive", "noimageindex"], True),
    (["interleaf: noai"], True), (["Interleaf : noimageindex"], True), (["otherbot: noai"], False),
    (["otherbot: noai, noindex"], False),  # the group continues: noindex is otherbot's too
    (["nofollow, otherbot: noai"], False), (["otherbot: noai, interleaf: noindex"], True),
    (["unavailable_after: 25 Jun 2010 15:00:00 PST"], False), (["max-image-preview: none"], False),
    ([], False), ([""], False),
])
def test_x_robots_tag(values, refused):
    assert (x_robots_refusal(values, "interleaf") is not None) == refused


@pytest.mark.parametrize("value", ["noai", "noindex, nofollow", "interleaf: noai", "otherbot: noai",
                                   "nofollow", "noimageindex"])
def test_x_robots_tag_agrees_with_img2dataset_on_its_forms(value):
    from img2dataset.downloader import is_disallowed

    headers = email.message.Message()
    headers["X-Robots-Tag"] = value
    theirs = is_disallowed(headers, "interleaf", {"noai", "noimageai", "noindex", "noimageindex"})
    assert (x_robots_refusal([value], "interleaf", ("noai", "noimageai", "noindex", "noimageindex"))
            is not None) == theirs


def test_x_robots_directives_for_our_token_only():
    assert x_robots_directives(["googlebot: noindex", "interleaf: noai, nosnippet"], "interleaf") == {
        "noai", "nosnippet"}


# ---------------------------------------------------------------- robots.txt


ROBOTS = """
# comment
User-agent: *
Disallow: /private/
Crawl-delay: 7

User-agent: interleaf/2.1
User-agent: otherbot
Disallow: /images/
Allow: /images/public/
Disallow: /*.gif$
Disallow: /*?session=
Crawl-delay: 2

User-agent: interleaf
Disallow: /tmp
"""


@pytest.mark.parametrize("path,allowed", [
    ("/index.html", True), ("/private/a.jpg", True),  # our group replaces the * group
    ("/images/a.jpg", False), ("/images/public/a.jpg", True),  # longest match wins
    ("/a/b.gif", False), ("/a/b.gif?x", True),  # $ anchors
    ("/p.jpg?session=1", False), ("/tmp/x.jpg", False),  # the two interleaf groups merge
    ("/images%2Fa.jpg", True), ("/%69mages/a.jpg", False),  # %69 is "i": percent-encoding normalised
])
def test_robots_rules(path, allowed):
    robots = RobotsTxt.parse(ROBOTS, "interleaf")
    assert robots.allowed(f"http://h{path}") == allowed
    assert robots.crawl_delay == 2


def test_robots_star_group_and_edge_cases():
    robots = RobotsTxt.parse(ROBOTS, "somebot")
    assert not robots.allowed("http://h/private/x") and robots.allowed("http://h/images/a.jpg")
    assert robots.crawl_delay == 7
    assert RobotsTxt.parse("User-agent: *\nDisallow:\n", "x").allowed("http://h/anything")
    assert RobotsTxt.parse("Disallow: /\n", "x").allowed("http://h/")  # a rule outside any group
    tie = RobotsTxt.parse("User-agent: *\nDisallow: /a\nAllow: /a\n", "x")
    assert tie.allowed("http://h/a")  # equal length: allow wins
    assert not RobotsTxt.parse("User-agent: *\nDisallow: /\n", "x").allowed("http://h/x.jpg")


class _RobotsServer(servers.BaseServer):
    """/robots.txt answers `code` (with `text`); images are served."""

    def __init__(self, code, text=""):
        self.code, self.text, self.image = code, text, servers.jpeg((300, 240))
        super().__init__()

    def handle_get(self, h):
        if h.path == "/robots.txt":
            return self.send(h, self.code, self.text.encode(), "text/plain")
        return self.send(h, 200, self.image)


@pytest.mark.parametrize("code,text,status", [
    (200, "User-agent: *\nDisallow: /\n", "robots_txt"),
    (404, "", "ok"),  # no robots.txt: everything allowed (RFC 9309 2.3.1.3)
    (403, "", "ok"),
    (503, "", "http_5xx"),  # unreachable: nothing fetched from the host (2.3.1.4), transient
    (429, "", "http_4xx"),
])
def test_robots_txt_answers(code, text, status):
    server = _RobotsServer(code, text)
    fetcher = Fetcher(FetchConfig(allow_private_hosts=True, total_timeout_s=3))
    try:
        records = [fetcher.fetch(f"{server.base}/img/{i}.jpg").record for i in range(3)]
    finally:
        fetcher.close()
        server.close()
    assert {r.status for r in records} == {status}, records[0].error
    assert server.hits["/robots.txt"] == 1
    image_hits = sum(n for target, n in server.hits.items() if target.startswith("/img/"))
    assert image_hits == (3 if status == "ok" else 0)


# ---------------------------------------------------------------- opt-out lists

SHA_A = "a" * 64
SHA_B = "b" * 64

LIST = f"""
# opt-out requests received
example.com
*.blocked.org            # a domain, written as a wildcard
url:https://pics.net/private/*
https://pics.net/one.jpg
sha256:{SHA_A}
{SHA_B.upper()}
"""


def test_optout_list_parsing_and_matching():
    optout = OptOutList.from_lines(LIST.splitlines(), source="list.txt")
    assert len(optout) == 6
    assert optout.match_url("http://example.com/a.jpg") == "domain:example.com"
    assert optout.match_url("https://CDN.Example.COM/a.jpg") == "domain:example.com"
    assert optout.match_url("https://notexample.com/a.jpg") is None
    assert optout.match_url("http://x.blocked.org/a") == "domain:blocked.org"
    assert optout.match_url("https://pics.net/private/deep/a.png") == "url:https://pics.net/private/*"
    assert optout.match_url("https://pics.net/one.jpg") == "url:https://pics.net/one.jpg"
    assert optout.match_url("https://pics.net/one.jpg?x") is None
    assert optout.match_url("https://pics.net/two.jpg") is None
    assert optout.match_sha256(None, SHA_B) == f"sha256:{SHA_B}"
    assert optout.match_bytes(b"anything") is None
    with pytest.raises(OptOutListError, match="line 1"):
        OptOutList.from_lines(["sha256:1234"])
    with pytest.raises(OptOutListError, match="line 2"):
        OptOutList.from_lines(["example.com", "not a domain/path"])


def _store_and_docs(tmp_path):
    """A small run: an image store, a journal, and documents that reference its images."""
    images = [
        ImageRecord(sha256=SHA_A, urls=["https://ok.net/a.jpg"], status="ok", data=b"A", format="jpeg"),
        ImageRecord(sha256="c" * 64, urls=["https://pics.net/private/c.jpg", "https://fine.net/c.jpg"],
                    status="ok", data=b"C", format="jpeg"),
        ImageRecord(sha256="d" * 64, urls=["https://fine.net/d.jpg"], status="ok", data=b"D", format="jpeg"),
        ImageRecord(sha256=None, urls=["https://example.com/e.jpg"], status="timeout", error="slow"),
    ]
    write_shard(str(tmp_path / "run" / "images" / "part-00000-of-00001.arrow"), images_to_table(images))
    journal = JournalWriter(str(tmp_path / "run" / "images"))
    journal.append(ImageRecord(sha256="f" * 64, urls=["https://example.com/f.jpg"], status="ok", data=b"F"))
    journal.close()
    nodes = [Node.text_node("t"), Node(kind="image", image_url="https://ok.net/a.jpg", image_sha256=SHA_A),
             Node(kind="image", image_url="https://fine.net/c.jpg", image_sha256="c" * 64),
             Node(kind="image", image_url="https://fine.net/d.jpg", image_sha256="d" * 64)]
    docs = [Document(doc_id="d1", url="https://page/1", nodes=nodes)]
    write_shard(str(tmp_path / "run" / "documents" / "part-00000-of-00001.arrow"), documents_to_table(docs))
    return tmp_path / "run"


def test_apply_to_written_store_journal_and_documents(tmp_path):
    run = _store_and_docs(tmp_path)
    optout = OptOutList.from_lines(LIST.splitlines(), source="list.txt")
    report = apply_to_paths(optout, [str(run)])
    images = images_from_table(read_shard(str(run / "images" / "part-00000-of-00001.arrow"), IMAGE_SCHEMA))
    by_url = {u: r for r in images for u in r.urls}
    assert by_url["https://ok.net/a.jpg"].status == "opted_out"  # by sha256
    assert by_url["https://ok.net/a.jpg"].data is None and by_url["https://ok.net/a.jpg"].sha256 is None
    assert by_url["https://fine.net/c.jpg"].status == "opted_out"  # same image as an opted-out URL
    assert by_url["https://pics.net/private/c.jpg"].status == "opted_out"
    assert by_url["https://fine.net/d.jpg"].status == "ok" and by_url["https://fine.net/d.jpg"].data == b"D"
    assert by_url["https://example.com/e.jpg"].status == "opted_out"  # a failed row, re-marked
    journal = read_journal(list_journals(str(run / "images"))[0])
    assert [r.status for r in journal] == ["opted_out"]
    docs = documents_from_table(read_shard(str(run / "documents" / "part-00000-of-00001.arrow"),
                                           DOCUMENT_SCHEMA))
    nodes = docs[0].nodes
    assert [(n.status, n.reason) for n in nodes[1:]] == [("dropped", "opted_out"), ("dropped", "opted_out"),
                                                         ("kept", None)]
    assert nodes[1].image_sha256 is None
    assert len(report.images_removed) == 3 and len(report.nodes_dropped) == 2
    assert len(report.failed_rows_marked) == 1 and len(report.shards_rewritten) == 3
    assert apply_to_paths(optout, [str(run)]).shards_rewritten == []  # idempotent


def test_optout_command(tmp_path, capsys):
    run = _store_and_docs(tmp_path)
    (tmp_path / "list.txt").write_text(LIST)
    parser = argparse.ArgumentParser()
    optout_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["optout", "--list", str(tmp_path / "list.txt"), str(run), "--dry-run"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["images_removed"] == 3
    assert not list(run.glob("optout-report-*.json"))  # dry run writes nothing
    args = parser.parse_args(["optout", "--list", str(tmp_path / "list.txt"), str(run)])
    assert args.func(args) == 0
    report = json.loads(next(run.glob("optout-report-*.json")).read_text())
    assert report["source"] == str(tmp_path / "list.txt") and len(report["nodes_dropped"]) == 2
