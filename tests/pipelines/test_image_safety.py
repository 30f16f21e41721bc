"""The image safety step of `interleaf run`, through Beam's real runner: real photos archived in a WARC get
an NSFW score and their faces (boxes and a count) in the image store; images at the NSFW threshold leave the
store with their nodes, as failed rows with status "nsfw"; blurred faces give new bytes that the documents
point at; the funnel reconciles; a machine without the detector gets one line saying what to do."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from interleaf.cli import main
from interleaf.filters.image_safety import ImageSafetyConfig, upright
from interleaf.pipelines.run import RunConfig, run
from interleaf.report import build_report
from interleaf.schemas.document import documents_from_table
from interleaf.schemas.image import images_from_table
from interleaf.shards import open_shards

PHOTOS = Path(__file__).resolve().parent.parent / "data" / "photos"
SITE = "http://archive.example/"
# photo -> faces in it
PHOTO_FACES = {"astronaut.jpg": 1, "grace_hopper.jpg": 1, "camera.jpg": 1, "chelsea.jpg": 0, "coffee.jpg": 0,
               "rocket.jpg": 0}
PARAGRAPHS = [
    "The exhibition opens with a portrait of an astronaut in her flight suit, taken before her mission.",
    "Beside it hangs the official portrait of an admiral who wrote one of the first compilers for computers.",
    "A photographer stands behind his camera on a tripod in a park, a picture used to test software.",
    "The cat in the next room has watched visitors from its frame for many years without once looking away.",
    "A cup of espresso on a wooden table shows how the light of a late morning falls across a small cafe.",
    "The rocket on its launch pad at night closes the first hall, lit by floodlights from every direction.",
    "The last picture of the series was damaged in transport; only its outline survives in the catalogue.",
]


def _record(url: str, content_type: str, body: bytes) -> bytes:
    http = (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\n"
            f"WARC-Date: 2024-05-01T10:00:00Z\r\nWARC-Record-ID: <urn:uuid:{abs(hash(url)):032x}>\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n")
    return head.encode() + http + b"\r\n\r\n"


def _truncated_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (300, 300), (200, 10, 10)).save(out, "PNG")
    return out.getvalue()[:80]  # the header says 300 x 300 (the image rules pass it); the pixels are cut


def write_warc(path: Path, images: dict[str, bytes] | None = None) -> None:
    if images is None:
        images = {name: (PHOTOS / name).read_bytes() for name in PHOTO_FACES} | {"cut.png": _truncated_png()}
    figures = "".join(f'<p>{text}</p><figure><img src="/img/{name}" alt=""><figcaption>{name}</figcaption>'
                      f"</figure>" for text, name in zip(PARAGRAPHS, images, strict=False))
    page = f"<html><head><title>Exhibition</title></head><body><article>{figures}</article></body></html>"
    with open(path, "wb") as f:
        f.write(_record(SITE, "text/html; charset=utf-8", page.encode()))
        for name, data in images.items():
            kind = "jpeg" if name.endswith(".jpg") else "png"
            f.write(_record(f"{SITE}img/{name}", f"image/{kind}", data))


def _run(tmp_path, safety: ImageSafetyConfig, min_images: int = 0, images: dict[str, bytes] | None = None):
    warc = tmp_path / "exhibition.warc"
    write_warc(warc, images)
    cfg = RunConfig(stages=["ingest"], image_safety=safety)
    cfg.ingest.quality.min_images = min_images
    cfg.ingest.keep_dropped_nodes = True
    out = tmp_path / "out"
    m = run([str(warc)], str(out), cfg)
    docs = documents_from_table(open_shards(str(out / "documents")).read())
    rejected = documents_from_table(open_shards(str(out / "rejected")).read())
    images = images_from_table(open_shards(str(out / "images")).read())
    return m, docs + rejected, images


def _name(record) -> str:
    return record.urls[0].rsplit("/", 1)[1]


def test_every_stored_image_gets_a_score_and_its_faces(tmp_path, capsys):
    m, [doc], images = _run(tmp_path, ImageSafetyConfig())
    assert m["unreconciled"] == []
    stored = {_name(r): r for r in images if r.status == "ok"}
    assert set(stored) == set(PHOTO_FACES)
    for name, faces in PHOTO_FACES.items():
        r = stored[name]
        assert 0 <= r.nsfw_score < 0.5
        assert r.face_count == faces == len(r.face_boxes)
        for x, y, w, h in r.face_boxes:
            assert 0 <= x and 0 <= y and x + w <= r.width and y + h <= r.height
    # the cut PNG passed the image rules (its header is whole) and could not be decoded here
    [cut] = [r for r in images if r.status != "ok"]
    assert (_name(cut), cut.status) == ("cut.png", "decode_error")
    funnel = m["funnel"]["image_safety"]
    assert funnel["images"]["in"] == 7 and funnel["images"]["out"] == 6
    assert funnel["images"]["dropped"] == {"decode_error": 1}
    assert funnel["images"]["info"] == {"faces.images": 3, "faces.found": 3}
    assert [n.reason for n in doc.nodes if n.is_image and not n.kept] == ["decode_error"]
    # `interleaf inspect` shows each image's score and face count, and their distribution
    assert main(["inspect", str(tmp_path / "out" / "images"), "--sample", "10"]) == 0
    out = capsys.readouterr().out
    assert "images_with_faces: 3" in out and "nsfw_score: " in out
    astronaut = next(line for line in out.splitlines() if "astronaut.jpg" in line)
    assert " faces=1 " in astronaut and " nsfw=0.0" in astronaut
    # and `interleaf report` their distributions
    page = build_report(str(tmp_path / "out"), samples=0)
    assert "NSFW score of the images" in page and "3 of 6 stored images show a face (3 faces" in page


def test_images_at_the_nsfw_threshold_leave_with_their_nodes(tmp_path):
    """Threshold 0: every score reaches it, so every image takes the path an NSFW image takes."""
    m, [doc], images = _run(tmp_path, ImageSafetyConfig(nsfw_threshold=0.0), min_images=1)
    assert m["unreconciled"] == []
    rows = {_name(r): r for r in images}
    assert all(r.status == "nsfw" and r.sha256 is None and r.data is None and r.nsfw_score is not None
               for name, r in rows.items() if name != "cut.png")
    assert m["funnel"]["image_safety"]["images"]["dropped"] == {"nsfw": 6, "decode_error": 1}
    assert m["funnel"]["image_safety"]["nodes"]["dropped"] == {"nsfw": 6, "decode_error": 1}
    # no image left: the final image-count check rejects the page
    assert not doc.kept and [n for n in doc.nodes if n.is_image and n.kept] == []


def test_blurred_faces_are_new_bytes_that_the_documents_point_at(tmp_path):
    m, [doc], images = _run(tmp_path, ImageSafetyConfig(blur_faces=True))
    assert m["unreconciled"] == []
    assert m["funnel"]["image_safety"]["images"]["info"]["faces.blurred"] == 3
    stored = {r.sha256: r for r in images if r.status == "ok"}
    node_shas = [n.image_sha256 for n in doc.nodes if n.is_image and n.kept]
    assert len(node_shas) == 6 and set(node_shas) == set(stored)  # every node finds its bytes, nothing else
    for record in stored.values():
        original = upright((PHOTOS / _name(record)).read_bytes())
        assert upright(record.data).mode == original.mode
        changed = np.abs(np.asarray(upright(record.data), dtype=np.int16)
                         - np.asarray(original, dtype=np.int16)).max()
        assert (changed > 60) == bool(record.face_count), _name(record)  # only pictures with faces changed


def _with_comment(jpeg: bytes) -> bytes:
    """The same JPEG with a comment segment after its start marker: other bytes, the same pixels."""
    comment = b"the same picture, saved by another program"
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def test_images_that_blur_to_the_same_bytes_become_one_store_row(tmp_path):
    photo = (PHOTOS / "astronaut.jpg").read_bytes()
    copy = _with_comment(photo)
    assert copy != photo and np.array_equal(np.asarray(upright(copy)), np.asarray(upright(photo)))
    images = {"astronaut.jpg": photo, "copy.jpg": copy, "coffee.jpg": (PHOTOS / "coffee.jpg").read_bytes()}
    m, [doc], stored = _run(tmp_path, ImageSafetyConfig(blur_faces=True), images=images)
    assert m["unreconciled"] == []
    ok = [r for r in stored if r.status == "ok"]
    assert len(ok) == len({r.sha256 for r in ok}) == 2  # one row per sha256 in the store
    [blurred] = [r for r in ok if r.face_count]
    assert blurred.urls == [f"{SITE}img/astronaut.jpg", f"{SITE}img/copy.jpg"]  # both URLs kept
    funnel = m["funnel"]["image_safety"]["images"]
    assert (funnel["in"], funnel["out"], funnel["dropped"]) == (3, 2, {"same_bytes_as_another": 1})
    assert funnel["info"]["faces.blurred"] == 2
    node_shas = [n.image_sha256 for n in doc.nodes if n.is_image and n.kept]
    assert sorted(node_shas) == sorted([blurred.sha256] * 2 + [r.sha256 for r in ok if not r.face_count])


def _animation(*frames: Image.Image) -> bytes:
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=list(frames[1:]), duration=100)
    return out.getvalue()


@pytest.mark.parametrize("frames", [8, 0])
def test_an_animated_picture_is_judged_by_its_later_frames_too(tmp_path, frames):
    """The coffee photo scores 0.33 as a GIF frame, a grey frame about 0: at threshold 0.3 the animation that
    shows the photo after a grey first frame goes when later frames are scored, stays when they are not."""
    coffee = Image.open(PHOTOS / "coffee.jpg").convert("RGB")
    grey = Image.new("RGB", coffee.size, (128, 128, 128))
    images = {"animation.gif": _animation(grey, coffee, grey),
              "rocket.jpg": (PHOTOS / "rocket.jpg").read_bytes()}
    config = ImageSafetyConfig(nsfw_threshold=0.3, nsfw_frames=frames)
    m, [doc], stored = _run(tmp_path, config, images=images)
    assert m["unreconciled"] == []
    status = {_name(r): r.status for r in stored}
    assert status == {"animation.gif": "nsfw" if frames else "ok", "rocket.jpg": "ok"}
    funnel = m["funnel"]["image_safety"]["images"]
    assert funnel.get("dropped", {}) == ({"nsfw": 1} if frames else {})
    assert funnel.get("info", {}).get("animated.images", 0) == (1 if frames else 0)


def test_a_picture_drawn_by_its_alpha_channel_alone_is_judged_as_it_shows(tmp_path):
    """Red-team finding: a face carried only in the alpha channel (white pixels, the photo's luminance as
    alpha) shows over a dark page and was not seen (the alpha was dropped); it is judged over white and
    over black now."""
    photo = Image.open(PHOTOS / "astronaut.jpg").convert("L")
    out = io.BytesIO()
    Image.merge("RGBA", [Image.new("L", photo.size, 255)] * 3 + [photo]).save(out, "PNG")
    images = {"alpha.png": out.getvalue(), "rocket.jpg": (PHOTOS / "rocket.jpg").read_bytes()}
    m, [doc], stored = _run(tmp_path, ImageSafetyConfig(), images=images)
    assert m["unreconciled"] == []
    faces = {_name(r): r.face_count for r in stored}
    assert faces == {"alpha.png": 1, "rocket.jpg": 0}


def test_a_machine_without_the_detector_is_told_what_to_do(tmp_path, capsys):
    warc = tmp_path / "exhibition.warc"
    write_warc(warc)
    config = tmp_path / "run.toml"
    config.write_text('[image_safety]\nmodel = "/nonexistent/320n.onnx"\n')
    assert main(["run", str(warc), "-o", str(tmp_path / "out"), "--stages", "ingest",
                 "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "image_safety.model: no file" in err and len(err.splitlines()) == 1
    # turned off, the same run needs no detector
    assert main(["run", str(warc), "-o", str(tmp_path / "out"), "--stages", "ingest", "--config", str(config),
                 "--no-nsfw", "--no-faces", "--min-images", "0"]) == 0


@pytest.mark.parametrize("flag", ["--no-nsfw", "--blur-faces"])
def test_flags_reach_the_config(flag):
    import argparse

    from interleaf.commands import run_cmd
    parser = argparse.ArgumentParser()
    run_cmd.add_parser(parser.add_subparsers())
    args, _ = parser.parse_known_args(["run", "x.warc", "-o", "out", flag])
    cfg = run_cmd.build_config(args)
    safety = cfg.image_safety
    assert (safety.nsfw, safety.blur_faces) == (flag != "--no-nsfw", flag == "--blur-faces")
