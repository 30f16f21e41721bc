"""NSFW scores and faces from NudeNet's detector (the file the nudenet wheel ships, in onnxruntime), on real
photos and artworks: the fixture photos (portraits, a cat, coffee, a rocket, coins, the moon ...) and the
images archived in a real 2013 crawl of Wikipedia's Mona Lisa article (paintings, a group photo)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from warcio.archiveiterator import ArchiveIterator

from interleaf.filters.image_safety import (
    Detector,
    ImageSafetyConfig,
    _nms,
    blur,
    face_boxes,
    letterbox,
    model_path,
    nsfw_score,
    upright,
)

DATA = Path(__file__).resolve().parent.parent / "data"
PHOTOS = DATA / "photos"
FACES = ["astronaut.jpg", "grace_hopper.jpg", "camera.jpg", "hopper.jpg", "hopper.png"]
NO_FACES = ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "coins.png", "moon.png", "horse.png", "flower.jpg",
            "clock_motion.png"]
# artworks and photos of the Mona Lisa crawl: file name fragment -> faces at least
ART_FACES = {"Mona_Lisa,_by_Leonardo": 1, "Marcel_Duchamp_Mona_Lisa_LHOOQ": 1, "La_Joconde_fumant": 1,
             "ARC194219": 2}  # ARC194219: five people at the painting's 1963 Washington showing


@pytest.fixture(scope="module")
def detector():
    return Detector(model_path())


@pytest.fixture(scope="module")
def mona_lisa_images() -> dict[str, bytes]:
    """Every image response archived in the Mona Lisa crawl, by URL."""
    found = {}
    with open(DATA / "warc" / "wikipedia-mona-lisa-with-images.warc.gz", "rb") as f:
        for record in ArchiveIterator(f):
            if record.rec_type == "response" and record.http_headers and (
                    record.http_headers.get_header("Content-Type") or "").startswith("image/"):
                found[record.rec_headers.get_header("WARC-Target-URI")] = record.content_stream().read()
    return found


def _faces(detector, data: bytes, threshold: float = 0.25):
    image = upright(data)
    output, scale = detector.run(image)
    return image, face_boxes(output, scale, image.size, threshold)


@pytest.mark.parametrize("name", FACES)
def test_faces_are_found_on_portraits_with_boxes_on_the_face(detector, name):
    image, faces = _faces(detector, (PHOTOS / name).read_bytes())
    assert len(faces) == 1, faces
    x, y, w, h = faces[0].box
    assert faces[0].label in ("FACE_FEMALE", "FACE_MALE")
    # a face box: inside the picture, in its upper two thirds, a plausible share of a portrait
    assert 0 <= x and 0 <= y and x + w <= image.width and y + h <= image.height
    assert y + h / 2 < image.height * 2 / 3
    assert 0.01 < (w * h) / (image.width * image.height) < 0.5


@pytest.mark.parametrize("name", NO_FACES)
def test_no_face_is_found_where_there_is_none(detector, name):
    _, faces = _faces(detector, (PHOTOS / name).read_bytes())
    assert faces == []


def test_a_16_bit_picture_is_seen_as_its_8_bit_twin(detector):
    # a 16-bit PNG (Pillow's I;16) turned RGB clips at 255: almost white, no face, no NSFW score to speak of
    import io
    grey = Image.open(PHOTOS / "astronaut.jpg").convert("L")
    encoded = {}
    for name, image in (("8", grey), ("16", Image.fromarray(np.asarray(grey).astype(np.uint16) * 257))):
        out = io.BytesIO()
        image.save(out, "PNG")
        encoded[name] = out.getvalue()
    assert Image.open(io.BytesIO(encoded["16"])).mode.startswith("I")
    eight, sixteen = (_faces(detector, encoded[n]) for n in ("8", "16"))
    assert len(sixteen[1]) == len(eight[1]) == 1
    assert np.array_equal(np.asarray(upright(encoded["16"])), np.asarray(upright(encoded["8"])))


def test_faces_in_paintings_and_a_group_photo(detector, mona_lisa_images):
    for fragment, at_least in ART_FACES.items():
        [data] = [d for url, d in mona_lisa_images.items() if fragment in url]
        _, faces = _faces(detector, data)
        assert len(faces) >= at_least, (fragment, faces)


def test_no_fixture_photo_or_artwork_is_nsfw(detector, mona_lisa_images):
    """The false-positive rate at the default threshold on every real image the tests hold: zero."""
    threshold = ImageSafetyConfig().nsfw_threshold
    scores = {}
    for path in PHOTOS.iterdir():
        scores[path.name] = nsfw_score(detector.run(upright(path.read_bytes()))[0])
    for url, data in mona_lisa_images.items():
        try:
            image = upright(data)
        except ValueError:  # the crawl holds an empty tracking response
            continue
        if min(image.size) >= 32:
            scores[url] = nsfw_score(detector.run(image)[0])
    assert len(scores) >= 20
    flagged = {name: s for name, s in scores.items() if not 0 <= s < threshold}
    assert flagged == {}


def test_letterbox_pads_at_the_bottom_right_and_scales_the_long_side():
    x, scale = letterbox(Image.new("RGB", (640, 320), (255, 255, 255)))
    assert x.shape == (1, 3, 320, 320) and x.dtype == np.float32
    assert scale == 2.0
    assert x[0, :, :160].min() == 1.0 and x[0, :, 160:].max() == 0.0  # image on top, black padding below


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 10, 10]], dtype=np.float32)
    assert _nms(boxes, np.array([0.5, 0.9, 0.4]), 0.45) == [1, 2]


def test_blurring_hides_the_face_and_leaves_the_rest(detector):
    data = (PHOTOS / "astronaut.jpg").read_bytes()
    image, faces = _faces(detector, data)
    blurred, fmt = blur(image, [f.box for f in faces], "jpeg")
    assert fmt == "jpeg"
    after = upright(blurred)
    assert after.size == image.size
    before, now = np.asarray(image, dtype=np.float32), np.asarray(after, dtype=np.float32)

    def detail(pixels):  # mean absolute difference between neighbouring pixels: edges, features
        return np.abs(np.diff(pixels, axis=0)).mean() + np.abs(np.diff(pixels, axis=1)).mean()

    x, y, w, h = faces[0].box
    face = (slice(y, y + h), slice(x, x + w))
    assert detail(now[face]) < detail(before[face]) / 2  # eyes, nose and mouth blurred (DataComp strength)
    right = (slice(None), slice(x + w + w // 2, None))  # beyond the blurred (grown) box
    assert detail(now[right]) > 0.9 * detail(before[right])
    assert np.abs(before[right] - now[right]).mean() < 3  # JPEG re-encoding moves pixels a little


def test_settings_are_checked_before_work():
    with pytest.raises(ValueError, match="nsfw_threshold"):
        ImageSafetyConfig(nsfw_threshold=1.5).validate()
    with pytest.raises(ValueError, match="blur_faces needs"):
        ImageSafetyConfig(faces=False, blur_faces=True).validate()
    with pytest.raises(ValueError, match="no file"):
        ImageSafetyConfig(model="/nonexistent/320n.onnx").validate()
    ImageSafetyConfig(nsfw=False, faces=False, model="/nonexistent").validate()  # off: nothing to load


def test_without_the_extra_the_message_says_how_to_install_it_or_turn_it_off():
    """A Python where the nudenet package cannot be found (an import hook hides it, in a child process)."""
    import subprocess
    import sys

    code = ("import sys, importlib.abc\n"
            "class Hide(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'nudenet': raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "from interleaf.filters.image_safety import ImageSafetyConfig\n"
            "try:\n    ImageSafetyConfig().validate()\nexcept ValueError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "pip install 'interleaf[safety]'" in out and "--no-nsfw --no-faces" in out
