"""The image rules on every image of a run, through Beam's real runner: images archived in WARCs (a real
crawl of Wikipedia's Mona Lisa page, and a crafted WARC of hostile images) meet the same format, size and
aspect rules as fetched ones, their nodes are dropped with the rule as reason, and the counts reconcile."""

import importlib.util
import io
from pathlib import Path

import pytest
from PIL import Image

from interleaf.filters.image_rules import ImageRules
from interleaf.pipelines.run import RunConfig, run
from interleaf.schemas.document import documents_from_table
from interleaf.schemas.image import images_from_table
from interleaf.shards import open_shards

_spec = importlib.util.spec_from_file_location(
    "fetch_servers", Path(__file__).resolve().parent.parent / "download" / "test_fetch_servers.py")
servers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(servers)

SITE = "http://archive.example/"
PARAGRAPHS = [
    "The harbour town grew around a small fishing fleet that still leaves before dawn every morning.",
    "Visitors walk along the old sea wall, where painted houses lean against each other in the wind.",
    "In summer the market square fills with stalls selling smoked fish, bread and honey from the hills.",
    "A ferry crosses twice a day to the island, whose lighthouse was rebuilt after the storm of 1953.",
    "The museum in the former customs house keeps ship models, charts and letters of the merchants.",
    "Local choirs sing in the chapel on the first Sunday of each month, and the doors stay open late.",
]


def encoded(size, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(out, fmt)
    return out.getvalue()


# name -> (bytes, the rule it breaks or None)
IMAGES = {
    "photo.jpg": (servers.jpeg((320, 240)), None),
    "square.png": (encoded((200, 200), "PNG"), None),
    "thumb.gif": (encoded((64, 64), "GIF"), "too_small"),
    "banner.jpg": (encoded((900, 300), "JPEG"), "bad_aspect"),
    "scan.bmp": (encoded((300, 300), "BMP"), "not_image"),  # Pillow reads it; the store takes no BMP
    "bomb.png": (servers.png_bomb(10000), "too_large"),  # 100 Mpx declared in a 100 KB file
}

CAPTIONS = ["Boats at dawn", "The sea wall", "Market day", "The island ferry", "Ship models", "The chapel"]


def _record(url: str, content_type: str, body: bytes) -> bytes:
    http = (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\n"
            f"WARC-Date: 2024-05-01T10:00:00Z\r\nWARC-Record-ID: <urn:uuid:{abs(hash(url)):032x}>\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n")
    return head.encode() + http + b"\r\n\r\n"


def write_warc(path: Path) -> None:
    figures = "".join(f'<p>{text}</p><figure><img src="/img/{name}" alt="">'
                      f"<figcaption>{caption}</figcaption></figure>"
                      for text, name, caption in zip(PARAGRAPHS, IMAGES, CAPTIONS, strict=True))
    page = f"<html><head><title>Harbour</title></head><body><article><h1>Harbour</h1>{figures}</article></body></html>"
    with open(path, "wb") as f:
        f.write(_record(SITE, "text/html; charset=utf-8", page.encode()))
        for name, (data, _) in IMAGES.items():
            f.write(_record(f"{SITE}img/{name}", "image/" + name.rsplit(".", 1)[1], data))


def _run(tmp_path, warcs, rules=None):
    cfg = RunConfig(stages=["ingest"], image_rules=rules or ImageRules())
    cfg.ingest.quality.min_images = 0
    cfg.ingest.keep_dropped_nodes = True  # the dropped nodes stay, with their reasons, for the checks below
    m = run([str(w) for w in warcs], str(tmp_path / "out"), cfg)
    docs = documents_from_table(open_shards(str(tmp_path / "out" / "documents")).read())
    images = images_from_table(open_shards(str(tmp_path / "out" / "images")).read())
    return m, docs, images


def _reconciled(m):
    assert m["unreconciled"] == []
    for unit, e in m["funnel"]["image_rules"].items():
        assert e["in"] == e["out"] + sum(e["dropped"].values()), unit


@pytest.mark.slow
def test_crafted_archived_images_meet_the_rules(tmp_path):
    warc = tmp_path / "crafted.warc"
    write_warc(warc)
    m, docs, images = _run(tmp_path, [warc])
    _reconciled(m)
    want = {f"{SITE}img/{name}": reason for name, (_, reason) in IMAGES.items()}
    stored = {u: r for r in images for u in r.urls}
    assert set(stored) == set(want)
    for url, reason in want.items():
        record = stored[url]
        assert record.status == (reason or "ok"), (url, record.error)
        assert (record.data is not None) == (reason is None)  # refused bytes leave the store
    [doc] = docs
    assert {n.image_url.rsplit("/", 1)[1]: n.reason for n in doc.image_nodes} == {
        name: reason for name, (_, reason) in IMAGES.items()}
    f = m["funnel"]["image_rules"]
    refused = [r for _, r in IMAGES.values() if r]
    assert f["images"]["in"] == len(IMAGES) and f["images"]["dropped"] == {r: 1 for r in refused}
    assert f["nodes"]["dropped"] == {r: 1 for r in refused}


@pytest.mark.slow
def test_archived_images_of_a_real_crawl(tmp_path, data_dir):
    warc = data_dir / "warc" / "wikipedia-mona-lisa-with-images.warc.gz"
    m, docs, images = _run(tmp_path, [warc])
    _reconciled(m)
    rules = ImageRules()
    ok = {r.sha256: r for r in images if r.status == "ok"}
    refused = [r for r in images if r.status != "ok"]
    assert ok and refused  # the page's icons and thumbnails are refused, its paintings kept
    for record in ok.values():  # judged independently from the bytes
        with Image.open(io.BytesIO(record.data)) as im:
            w, h = im.size
        assert min(w, h) >= rules.min_side and max(w, h) / min(w, h) <= rules.max_aspect_ratio
    for record in refused:
        assert record.status in ("too_small", "bad_aspect", "too_large", "not_image") and record.error
    nodes = [n for d in docs for n in d.image_nodes if n.image_sha256]
    assert all(n.kept == (n.image_sha256 in ok) for n in nodes)
    assert {n.reason for n in nodes if not n.kept} <= {"too_small", "bad_aspect", "too_large", "not_image"}

    # with rules that let everything through, every archived image is kept
    m2, docs2, images2 = _run(tmp_path / "open", [warc], ImageRules(min_side=1, max_aspect_ratio=1e9))
    assert m2["funnel"]["image_rules"]["images"]["dropped"] == {}
    assert all(r.status == "ok" for r in images2) and len(images2) == m["funnel"]["image_rules"]["images"]["in"]
    assert all(n.kept for d in docs2 for n in d.image_nodes if n.image_sha256)
