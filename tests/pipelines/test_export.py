"""`interleaf export` through Beam's real runner, each output read with its ecosystem's own reader: Hugging
Face `datasets` on the OBELICS Parquet (images decoding to PIL with --embed-images), the `webdataset`
package on the tars, plain `json` and `zipfile` on MMC4's files; `interleaf run EXPORTED --stages ingest`
gives the documents back; a run whose store lost an image exports it counted as image_missing; an
incomplete or newer run is refused with one line."""

import importlib.util
import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from interleaf.cli import main
from interleaf.filters.image_safety import ImageSafetyConfig
from interleaf.pipelines.export import ExportConfig, export
from interleaf.pipelines.run import RunConfig, run
from interleaf.schemas.document import documents_from_table
from interleaf.schemas.image import IMAGE_SCHEMA, images_from_table, images_to_table
from interleaf.shards import list_shards, open_shards, read_shard, write_shard

# the WARC response-record writer of the image safety test (one copy, not another)
_spec = importlib.util.spec_from_file_location("image_safety_test", Path(__file__).resolve().parent /
                                               "test_image_safety.py")
_safety = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_safety)
_record = _safety._record

PHOTOS = Path(__file__).resolve().parent.parent / "data" / "photos"
SITE = "http://museum.example/"
# page -> (paragraphs, archived photos); a page may also show an image the crawl did not archive
PAGES = {
    "rooms/1": (["The first room shows a rocket on its launch pad at night, lit by floodlights all around.",
                 "Visitors stop here longest: it was taken minutes before the engines were started."],
                ["rocket.jpg", "coins.png"]),
    "rooms/2": (["A cup of espresso on a wooden table shows how the light of a late morning falls in a cafe.",
                 "The photographer waited for the steam to rise before taking the picture, the guide says."],
                ["coffee.jpg"]),
    "rooms/3": (["The cat in the third room has watched the visitors from its frame for many years now.",
                 "It was photographed in a garden, and the picture is among the most loved of the museum."],
                ["chelsea.jpg", "horse.png"]),
    "rooms/4": (["The last room holds a plate of old coins found in a field during the building of a road.",
                 "Each coin was cleaned by hand, and the plate was photographed from directly above it."],
                ["coins.png"]),
    "rooms/5": (["The reading room has no pictures of its own, only a long shelf of catalogues and letters.",
                 "Researchers may ask for any of them at the desk, where the archivist keeps the register."],
                []),
}
GUIDE = ("This page of the guide to {page} is written for visitors who come on weekdays, when the galleries "
         "are quiet and the guides have time to answer every question about the collection and its history.")
UNARCHIVED = "rooms/3"  # also shows /img/lost.jpg, which the crawl never captured


def _write_warc(path: Path) -> None:
    with open(path, "wb") as f:
        for page, (paragraphs, photos) in PAGES.items():
            body = "".join(f"<p>{text}</p>" for text in [*paragraphs, GUIDE.format(page=page)])
            body += "".join(f'<figure><img src="/img/{name}" alt="{name[:-4]}"></figure>' for name in photos)
            if page == UNARCHIVED:
                body += '<figure><img src="/img/lost.jpg" alt="lost"></figure>'
            html = f"<html><head><title>{page}</title></head><body><article>{body}</article></body></html>"
            f.write(_record(SITE + page, "text/html; charset=utf-8", html.encode()))
        for name in sorted({n for _, photos in PAGES.values() for n in photos}):
            kind = "jpeg" if name.endswith(".jpg") else "png"
            f.write(_record(f"{SITE}img/{name}", f"image/{kind}", (PHOTOS / name).read_bytes()))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("export")
    warc = tmp / "museum.warc"
    _write_warc(warc)
    cfg = RunConfig(stages=["ingest"], image_safety=ImageSafetyConfig(nsfw=False, faces=False), num_shards=2)
    cfg.ingest.quality.min_images = 0
    out = tmp / "run"
    manifest = run([str(warc)], str(out), cfg)
    assert manifest["status"] == "complete"
    return out


def _run_documents(run_dir: Path):
    """The run's documents in its own order (shard by shard, row by row)."""
    return [d for p in list_shards(str(run_dir / "documents"))
            for d in documents_from_table(read_shard(p))]


def _nodes(doc) -> list[tuple[str, str]]:
    return [("text", n.text) if n.is_text else ("image", n.image_url) for n in doc.nodes if n.kept]


def test_obelics_parquet_reads_with_hf_datasets_and_embedded_images_decode(run_dir, tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "obelics"
    assert main(["export", str(run_dir), "--format", "obelics", "--output", str(out), "--embed-images",
                 "--shard-size", "2"]) == 0
    docs = _run_documents(run_dir)
    assert len(docs) == len(PAGES)
    names = sorted(p.name for p in out.glob("*.parquet"))
    assert names == [f"part-{i:05d}-of-00003.parquet" for i in range(3)]
    ds = datasets.load_dataset("parquet", data_files=str(out / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds.column_names == ["texts", "images", "metadata", "general_metadata", "image_data"]
    assert len(ds) == len(docs)
    by_url = {d.url: d for d in docs}
    decoded = 0
    for i, row in enumerate(ds):
        doc = docs[i]  # the run's order is kept
        assert json.loads(row["general_metadata"])["url"] == doc.url
        assert [("text", t) if t is not None else ("image", u) for t, u in zip(row["texts"], row["images"])] \
            == _nodes(by_url[doc.url])
        for node, image in zip([n for n in doc.nodes if n.kept], row["image_data"]):
            if node.is_text or node.image_sha256 is None:
                assert image is None
            else:
                assert isinstance(image, Image.Image) and image.size[0] > 0
                decoded += 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert decoded == manifest["counts"]["images_embedded"] == 6  # 6 archived image positions
    assert manifest["counts"]["image_missing"] == 1  # lost.jpg, kept by URL
    assert manifest["status"] == "complete" and manifest["unreconciled"] == []
    assert manifest["counts"]["documents"] == manifest["counts"]["documents_in_run"] == len(PAGES)
    card = (out / "README.md").read_text()
    assert "data_files" in card and "ingest" in card and manifest["source_run"]["config_fingerprint"] in card


def test_obelics_without_images_has_exactly_the_four_columns_and_round_trips(run_dir, tmp_path):
    out = tmp_path / "obelics"
    export(str(run_dir), str(out), ExportConfig(format="obelics"))
    import pyarrow.parquet as pq
    assert pq.read_schema(out / "part-00000-of-00001.parquet").names == ["texts", "images", "metadata",
                                                                        "general_metadata"]
    again = tmp_path / "again"
    assert main(["run", str(out / "*.parquet"), "--stages", "ingest", "--output", str(again), "--min-images",
                 "0", "--no-nsfw", "--no-faces"]) == 0
    back = {d.url: _nodes(d) for d in documents_from_table(open_shards(str(again / "documents")).read())}
    assert back == {d.url: _nodes(d) for d in _run_documents(run_dir)}


def test_webdataset_tars_group_into_one_sample_per_document(run_dir, tmp_path):
    wds = pytest.importorskip("webdataset")
    out = tmp_path / "wds"
    m = export(str(run_dir), str(out), ExportConfig(format="webdataset", shard_size=3))
    tars = sorted(str(p) for p in out.glob("*.tar"))
    assert len(tars) == 2
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    docs = _run_documents(run_dir)
    assert [s["__key__"] for s in samples] == [f"{i:010d}" for i in range(len(docs))]
    assert [json.loads(s["json"])["doc_id"] for s in samples] == [d.doc_id for d in docs]
    files = 0
    for sample, doc in zip(samples, docs):
        meta = json.loads(sample["json"])
        assert meta["url"] == doc.url
        assert [("text", n["text"]) if n["type"] == "text" else ("image", n["url"]) for n in meta["nodes"]] \
            == _nodes(doc)
        for node in meta["nodes"]:
            if node.get("file"):
                Image.open(io.BytesIO(sample[node["file"]])).verify()
                files += 1
            elif node["type"] == "image":
                assert node["url"].endswith("/img/lost.jpg")
    assert files == m["counts"]["images_embedded"] == 6


def test_mmc4_jsonl_has_mmc4_keys_and_images_beside_it_round_trips(run_dir, tmp_path):
    out = tmp_path / "mmc4"
    m = export(str(run_dir), str(out), ExportConfig(format="mmc4", shard_size=10))
    lines = (out / "docs_shard_00000.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(PAGES)
    images = zipfile.ZipFile(out / "images_shard_00000.zip")
    named = 0
    for line in lines:
        doc = json.loads(line)
        assert {"url", "text_list", "image_info"} <= doc.keys()
        for info in doc["image_info"]:
            assert {"raw_url", "image_name", "matched_text_index", "matched_sim",
                    "face_detections"} <= info.keys()
            assert 0 <= info["matched_text_index"] < len(doc["text_list"])
            if info["image_name"]:
                Image.open(io.BytesIO(images.read(info["image_name"]))).verify()
                named += 1
    assert named == m["counts"]["images_embedded"]
    assert len(images.namelist()) == 5  # coins.png is on two pages and stored once
    again = tmp_path / "again"
    assert main(["run", str(out / "docs_shard_*.jsonl"), "--stages", "ingest", "--output", str(again),
                 "--input-format", "mmc4", "--min-images", "0", "--no-nsfw", "--no-faces"]) == 0
    back = {d.url: d for d in documents_from_table(open_shards(str(again / "documents")).read())}
    for doc in _run_documents(run_dir):
        # MMC4 attaches images to sentences: text and image URLs come back, an image before its sentence
        texts = [t for k, t in _nodes(doc) if k == "text"]
        assert [t for k, t in _nodes(back[doc.url]) if k == "text"] == texts
        assert sorted(u for k, u in _nodes(back[doc.url]) if k == "image") == \
            sorted(u for k, u in _nodes(doc) if k == "image")


def test_an_image_lost_from_the_store_is_counted_and_kept_or_dropped(run_dir, tmp_path):
    damaged = tmp_path / "damaged"
    import shutil
    shutil.copytree(run_dir, damaged)
    for path in list_shards(str(damaged / "images")):
        table = read_shard(path, IMAGE_SCHEMA)
        records = [r for r in images_from_table(table) if not (r.urls and r.urls[0].endswith("coffee.jpg"))]
        write_shard(path, images_to_table(records))
    kept = export(str(damaged), str(tmp_path / "keep"), ExportConfig(format="webdataset"))
    assert kept["counts"]["image_missing"] == 2 and kept["counts"]["images_exported"] == 7
    dropped = export(str(damaged), str(tmp_path / "drop"), ExportConfig(format="webdataset",
                                                                       missing_images="drop"))
    assert dropped["counts"]["images_dropped"] == 2 and dropped["counts"]["images_exported"] == 5
    assert dropped["funnel"]["export"]["images"]["dropped"] == {"image_missing": 2}
    assert dropped["unreconciled"] == [] and dropped["counts"]["documents"] == len(PAGES)


def test_incomplete_or_newer_runs_are_refused_with_one_line(run_dir, tmp_path, capsys):
    running = tmp_path / "running"
    import shutil
    shutil.copytree(run_dir, running)
    manifest = json.loads((running / "manifest.json").read_text())
    (running / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    assert main(["export", str(running), "--format", "obelics", "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "is not complete (status running)" in err and len(err.strip().splitlines()) == 1
    newer = tmp_path / "newer"
    shutil.copytree(run_dir, newer)
    for path in list_shards(str(newer / "documents")):
        table = read_shard(path)
        md = dict(table.schema.metadata)
        md[b"interleaf.schema_version"] = b"99"
        write_shard(path, table.replace_schema_metadata(md))
    assert main(["export", str(newer), "--format", "mmc4", "--output", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "schema version 99" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert main(["export", str(run_dir), "--format", "obelics", "--output", str(run_dir / "documents")]) == 2
    assert "its outputs" in capsys.readouterr().err


def test_the_same_run_exports_to_the_same_bytes(run_dir, tmp_path):
    for fmt in ("obelics", "webdataset", "mmc4"):
        a, b = tmp_path / f"{fmt}-a", tmp_path / f"{fmt}-b"
        export(str(run_dir), str(a), ExportConfig(format=fmt, shard_size=2))
        export(str(run_dir), str(b), ExportConfig(format=fmt, shard_size=2),
                pipeline_args=["--direct_num_workers", "2", "--direct_running_mode", "multi_threading"])
        names = sorted(p.name for p in a.iterdir() if p.name not in ("manifest.json", "README.md"))
        assert names == sorted(p.name for p in b.iterdir() if p.name not in ("manifest.json", "README.md"))
        for name in names:
            assert (a / name).read_bytes() == (b / name).read_bytes(), (fmt, name)


def test_a_run_can_end_with_exports(run_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(run_dir.parent / "museum.warc"), "--stages", "ingest", "--output", str(out),
                 "--min-images", "0", "--no-nsfw", "--no-faces", "--export", "webdataset,obelics",
                 "--export-embed-images"]) == 0
    assert "exported as webdataset: 5 documents" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["exports"]) == {"webdataset", "obelics"}
    assert manifest["exports"]["obelics"]["counts"]["images_embedded"] == 6
    assert (out / "export" / "webdataset" / "part-00000-of-00001.tar").exists()
    assert json.loads((out / "export" / "obelics" / "manifest.json").read_text())["settings"]["embed_images"]
    assert main(["run", str(run_dir.parent / "museum.warc"), "--stages", "ingest", "--output", str(out),
                 "--export", "tar"]) == 2
    assert "unknown export format 'tar'" in capsys.readouterr().err


def test_exports_can_be_set_in_a_config_file(run_dir, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('stages = ["ingest"]\n[ingest.quality]\nmin_images = 0\n'
                      '[image_safety]\nnsfw = false\nfaces = false\n'
                      '[export]\nformats = ["mmc4"]\nshard_size = 2\nmissing_images = "drop"\n')
    out = tmp_path / "run"
    warc = run_dir.parent / "museum.warc"
    assert main(["run", str(warc), "--config", str(config), "--output", str(out)]) == 0
    done = json.loads((out / "manifest.json").read_text())["exports"]["mmc4"]
    assert done["counts"]["images_dropped"] == 1 and done["unreconciled"] == []  # lost.jpg
    assert sorted(p.name for p in (out / "export" / "mmc4").glob("docs_shard_*.jsonl")) == [
        "docs_shard_00000.jsonl", "docs_shard_00001.jsonl", "docs_shard_00002.jsonl"]


def _copy(run_dir: Path, to: Path) -> Path:
    import shutil
    shutil.copytree(run_dir, to)
    return to


def test_an_output_holding_anything_but_an_earlier_export_is_never_written_into(run_dir, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "part-00000-of-00001.parquet").write_bytes(b"my own data")
    (mine / "docs_shard_0_v2.jsonl").write_text("{}\n")
    for fmt in ("obelics", "mmc4"):
        assert main(["export", str(run_dir), "--format", fmt, "--output", str(mine)]) == 2
        assert "holds no earlier export" in capsys.readouterr().err
    assert (mine / "part-00000-of-00001.parquet").read_bytes() == b"my own data"
    # another run is not an export either; a file is not a directory
    other = _copy(run_dir, tmp_path / "other-run")
    assert main(["export", str(run_dir), "--format", "mmc4", "--output", str(other)]) == 2
    assert json.loads((other / "manifest.json").read_text())["status"] == "complete"
    a_file = str(mine / "docs_shard_0_v2.jsonl")
    assert main(["export", str(run_dir), "--format", "mmc4", "--output", a_file]) == 2
    assert "is a file" in capsys.readouterr().err
    # an earlier export of another format and shard count is replaced whole, and nothing else goes
    out = tmp_path / "out"
    export(str(run_dir), str(out), ExportConfig(format="obelics", shard_size=2))
    (out / "notes.txt").write_text("mine")
    export(str(run_dir), str(out), ExportConfig(format="mmc4"))
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "docs_shard_00000.jsonl",
                                                     "images_shard_00000.zip", "manifest.json", "notes.txt"]


def test_glob_characters_in_names_are_taken_literally(run_dir, tmp_path):
    literal = _copy(run_dir, tmp_path / "r[x]")
    decoy = _copy(run_dir, tmp_path / "rx")
    for shard in (decoy / "documents").iterdir():
        shard.unlink()
    m = export(str(literal), str(tmp_path / "out[1]"), ExportConfig(format="obelics"))
    assert m["counts"]["documents"] == len(PAGES)
    (tmp_path / "out1").mkdir()
    (tmp_path / "out1" / "part-00000-of-00001.parquet").write_bytes(b"other")
    export(str(literal), str(tmp_path / "out[1]"), ExportConfig(format="obelics"))
    assert (tmp_path / "out1" / "part-00000-of-00001.parquet").read_bytes() == b"other"


def test_a_damaged_run_is_refused_before_the_output_is_touched(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    export(str(run_dir), str(out), ExportConfig(format="obelics"))
    before = (out / "part-00000-of-00001.parquet").read_bytes()
    missing = _copy(run_dir, tmp_path / "missing")
    (missing / "documents" / "part-00001-of-00002.arrow").unlink()
    assert main(["export", str(missing), "--format", "obelics", "--output", str(out)]) == 2
    assert "1 of 2 shards present" in capsys.readouterr().err
    cut = _copy(run_dir, tmp_path / "cut")
    shard = cut / "documents" / "part-00000-of-00002.arrow"
    shard.write_bytes(shard.read_bytes()[:-200])
    assert main(["export", str(cut), "--format", "obelics", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (out / "part-00000-of-00001.parquet").read_bytes() == before


def test_a_store_row_without_bytes_is_an_image_missing(run_dir, tmp_path):
    emptied = _copy(run_dir, tmp_path / "emptied")
    for path in list_shards(str(emptied / "images")):
        records = images_from_table(read_shard(path, IMAGE_SCHEMA))
        for r in records:
            if r.urls and r.urls[0].endswith("coffee.jpg"):
                r.data = b""
        write_shard(path, images_to_table(records))
    for fmt in ("webdataset", "mmc4"):
        m = export(str(emptied), str(tmp_path / fmt), ExportConfig(format=fmt))
        assert m["counts"]["image_missing"] == 2 and m["counts"]["images_embedded"] == 5


def test_a_rerun_removes_the_exports_of_the_run_it_replaces(run_dir, tmp_path):
    out = tmp_path / "run"
    warc = str(run_dir.parent / "museum.warc")
    flags = ["--stages", "ingest", "--output", str(out), "--no-nsfw", "--no-faces"]
    assert main(["run", warc, *flags, "--min-images", "0", "--export", "obelics"]) == 0
    assert main(["run", warc, *flags, "--min-images", "2", "--export", "mmc4"]) == 0
    assert list((out / "export" / "obelics").iterdir()) == []
    assert json.loads((out / "export" / "mmc4" / "manifest.json").read_text())["counts"]["documents"] == 2


def test_the_command_line_offers_every_format_the_writers_have():
    from interleaf.commands import export_cmd
    from interleaf.pipelines.export_formats import FORMATS
    assert export_cmd.FORMATS == FORMATS  # a copy there, so that `interleaf --help` imports no pyarrow


def test_a_rerun_replaces_a_killed_or_hand_edited_export_whole(run_dir, tmp_path):
    """Found by a red-team pass: a killed export's hidden temporary files, and the shards of an export whose
    manifest was edited (its format no longer one we write), outlived every rerun into the directory."""
    out = tmp_path / "ds"
    export(str(run_dir), str(out), ExportConfig(format="obelics"))
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format": 5, "files": "x"}))
    (out / ".tmp-docs_shard_00016.jsonl-4d749a643053").write_bytes(b"half a shard")
    export(str(run_dir), str(out), ExportConfig(format="webdataset"))
    assert sorted(p.name for p in out.iterdir() if p.name != ".interleaf.lock") == [
        "README.md", "manifest.json", "part-00000-of-00001.tar"]
