"""Images archived in a WARC meet what the fetch stage would have refused (red-team findings of issue 16):
a blocked URL, a response whose own headers reserve it (tdm-reservation, X-Robots-Tag in any spelling),
the images of a page that says noimageai, and images no page uses leave no bytes in the image store; the
nodes that point at refused responses are dropped under the same reason; the funnel reconciles."""

from __future__ import annotations

import io
import json

from PIL import Image
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from interleaf.cli import main
from interleaf.schemas.document import documents_from_table
from interleaf.schemas.image import images_from_table
from interleaf.shards import open_shards

SITE = "http://museum.example"
TEXT = ("The museum's new wing opened on Saturday, after four years of building, with a hall of paintings "
        "from the northern provinces, most of them shown for the first time since the war. The curators "
        "spent the last winter restoring frames and cleaning varnish, and they wrote new labels in three "
        "languages for visitors who come from across the border. Entry is free on the first Sunday of "
        "every month, and guided tours start at eleven in the morning from the main staircase.")


def _png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), colour).save(out, "PNG")
    return out.getvalue()


def _page(images: list[str], head: str = "") -> bytes:
    figures = "".join(f'<p>{TEXT}</p><figure><img src="{SITE}/img/{name}" width="320" height="240">'
                      f"<figcaption>Picture {name}</figcaption></figure>" for name in images)
    return f"<html><head>{head}</head><body><article>{figures}</article></body></html>".encode()


def _write(writer: WARCWriter, url: str, content_type: str, body: bytes, headers=()) -> None:
    http = StatusAndHeaders("200 OK", [("Content-Type", content_type), *headers], protocol="HTTP/1.1")
    record = writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http)
    writer.write_record(record)


def test_archived_images_meet_the_blocklist_and_their_own_consent_headers(tmp_path, capsys):
    warc = tmp_path / "museum.warc.gz"
    with open(warc, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        _write(writer, f"{SITE}/wing", "text/html; charset=utf-8",
               _page(["ok.png", "blocked.png", "reserved.png", "noai.png"]))
        _write(writer, f"{SITE}/private", "text/html; charset=utf-8",
               _page(["private.png"], head='<meta name="robots" content="index;noimageai">'))
        # a page the blocklist drops: its image is used by no kept page (recheck finding)
        _write(writer, f"{SITE}/blocked/page.html", "text/html; charset=utf-8", _page(["of-blocked.png"]))
        images = {"ok.png": ((200, 30, 30), ()), "blocked.png": ((30, 200, 30), ()),
                  "reserved.png": ((30, 30, 200), [("tdm-reservation", "1, 1")]),
                  "noai.png": ((200, 200, 30), [("X-Robots-Tag", "noindex noai")]),
                  "private.png": ((30, 200, 200), ()), "unused.png": ((90, 90, 90), ()),
                  "of-blocked.png": ((120, 60, 200), ())}
        for name, (colour, headers) in images.items():
            _write(writer, f"{SITE}/img/{name}", "image/png", _png(colour), headers)
    listing = tmp_path / "blocked.txt"
    listing.write_text("museum.example/img/blocked.png\nmuseum.example/blocked\n", encoding="utf-8")
    config = tmp_path / "run.toml"
    config.write_text(f'[blocklist]\nfiles = ["{listing}"]\nut1 = false\n', encoding="utf-8")
    out = tmp_path / "out"
    assert main(["run", str(warc), "-o", str(out), "--stages", "ingest", "--config", str(config),
                 "--min-images", "0", "--no-nsfw", "--no-faces", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["unreconciled"] == []
    store = images_from_table(open_shards(str(out / "images")).read())
    assert [(r.urls, r.status) for r in store] == [([f"{SITE}/img/ok.png"], "ok")]
    funnel = manifest["funnel"]["ingest"]["images"]
    assert funnel["in"] == 7 and funnel["out"] == 1
    assert funnel["dropped"] == {"blocked_url": 1, "tdm_reserved": 1, "x_robots_tag": 1, "unreferenced": 3}
    docs = documents_from_table(open_shards(str(out / "documents")).read())
    assert len(docs) == 2, documents_from_table(open_shards(str(out / "rejected")).read())
    images_of = {d.url: [(n.image_url.rsplit("/", 1)[1], n.image_sha256 is not None) for n in d.nodes
                         if n.is_image] for d in docs}
    # curated documents keep only their kept nodes: the refused ones are gone, counted by reason
    assert images_of == {f"{SITE}/wing": [("ok.png", True)], f"{SITE}/private": []}
    nodes = manifest["funnel"]["ingest"]["nodes"]["dropped"]
    assert (nodes["blocked_url"], nodes["tdm_reserved"], nodes["x_robots_tag"]) == (1, 2, 1)
