"""Image safety (filters/image_safety.py: NudeNet's detector for NSFW scores and faces) on real photos and
artworks: the NSFW false-positive rate, the faces found on the pictures that show faces, and the cost per
image against the CLIP stage's own work with ViT-B-32, both measured here in the same run on one thread.
Writes the "image_safety" section of bench/RESULTS.md.

Images: tests/data/photos and every image archived in the 2013 crawl of Wikipedia's Mona Lisa article
(tests/data/warc), plus ../shared/fixtures/photos when it is there (more real photos and Pillow's decode edge
cases). Which pictures show faces is written below, by looking at each one; the crawl's photo of a crowd
seen from behind is left out of both counts.

What the fixtures cannot measure: recall on NSFW images (there are none among them).

    .venv/bin/python bench/image_safety_bench.py
"""

from __future__ import annotations

import glob
import os
import statistics
import time

import numpy as np
import torch
from results import table, write_section  # bench/ is sys.path[0] when run as a script
from warcio.archiveiterator import ArchiveIterator

from interleaf.filters.image_safety import (
    Detector,
    ImageSafetyConfig,
    face_boxes,
    model_path,
    nsfw_score,
    upright,
)
from interleaf.imagefile import ImageDecodeError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_PHOTOS = os.path.join(ROOT, "..", "shared", "fixtures", "photos")
# name fragments of the pictures that show at least one face (a person, a painted face)
FACES = ("astronaut", "grace_hopper", "camera", "hopper", "Mona_Lisa,_by_Leonardo", "Marcel_Duchamp",
         "La_Joconde_fumant", "Self-Portrait", "ARC194219")
UNLABELLED = ("Mona-lisa_in_the_Louvre",)  # a crowd seen from behind: faces too small to say
MIN_SIDE = 32  # what the image rules let through (smaller icons never reach the step)


def images() -> dict[str, bytes]:
    """name -> bytes of every real image the bench reads."""
    found = {}
    paths = glob.glob(os.path.join(ROOT, "tests", "data", "photos", "*"))
    if os.path.isdir(SHARED_PHOTOS):
        paths += glob.glob(os.path.join(SHARED_PHOTOS, "*", "*.*"))
    for path in sorted(paths):
        if not path.endswith((".txt", ".md", ".tsv")):
            found.setdefault(os.path.basename(path), open(path, "rb").read())
    crawl = os.path.join(ROOT, "tests", "data", "warc", "wikipedia-mona-lisa-with-images.warc.gz")
    with open(crawl, "rb") as f:
        for record in ArchiveIterator(f):
            if record.rec_type == "response" and record.http_headers and (
                    record.http_headers.get_header("Content-Type") or "").startswith("image/"):
                url = record.rec_headers.get_header("WARC-Target-URI")
                found[url.rsplit("/", 1)[1]] = record.content_stream().read()
    return found


def clip_cost(pictures: list, texts_per_image: float) -> float:
    """Seconds per image of ViT-B-32 (open_clip, random weights: the same compute as LAION's) in fp32 on one
    thread: preprocess, encode the image and `texts_per_image` texts, as the CLIP stage does in batches."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32")
    model.eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    n_texts = max(1, round(len(pictures) * texts_per_image))
    texts = tokenizer([f"a photo of picture number {i} in the collection" for i in range(n_texts)])
    with torch.no_grad():
        model.encode_image(torch.stack([preprocess(p) for p in pictures[:4]]))  # warm-up
        start = time.perf_counter()
        model.encode_image(torch.stack([preprocess(p.convert("RGB")) for p in pictures]))
        model.encode_text(texts)
        return (time.perf_counter() - start) / len(pictures)


def main() -> None:
    torch.set_num_threads(1)
    config = ImageSafetyConfig()
    detector = Detector(model_path(), threads=1)
    rows, decoded = [], []
    for name, data in images().items():
        try:
            image = upright(data)
        except ImageDecodeError:
            continue  # broken on purpose (Pillow's edge cases, an empty tracking response)
        if min(image.size) < MIN_SIDE:
            continue
        output, scale = detector.run(image)
        faces = face_boxes(output, scale, image.size, config.face_threshold)
        face_max = float(output[4:][[1, 12]].max())
        truth = None if any(u in name for u in UNLABELLED) else any(f in name for f in FACES)
        rows.append((name, nsfw_score(output), len(faces), face_max, truth))
        decoded.append(image)

    # cost: the step (decode + letterbox + detector) and the CLIP work on the same pictures, best of 3
    datas = [d for d in images().values()]
    step = []
    for _ in range(3):
        start, n = time.perf_counter(), 0
        for data in datas:
            try:
                image = upright(data)
            except ImageDecodeError:
                continue
            if min(image.size) >= MIN_SIDE:
                detector.run(image)
                n += 1
        step.append((time.perf_counter() - start) / n)
    texts_per_image = 1.6  # the CLIP stage's mean texts per image on real pages (bench/clip_bench.py: 151/96)
    clip = min(clip_cost(decoded, texts_per_image) for _ in range(3))
    safety = min(step)

    scores = [r[1] for r in rows]
    with_faces = [r for r in rows if r[4] is True]
    without = [r for r in rows if r[4] is False]
    found = sum(1 for r in with_faces if r[2] > 0)
    false_faces = sum(1 for r in without if r[2] > 0)
    flagged = sum(1 for s in scores if s >= config.nsfw_threshold)
    summary = [
        ["images (real photos and artworks)", len(rows)],
        [f"NSFW at the threshold {config.nsfw_threshold} (false positives: none is NSFW)",
         f"{flagged} of {len(rows)}"],
        ["NSFW score: median / 95th percentile / max", f"{statistics.median(scores):.3f} / "
         f"{np.percentile(scores, 95):.3f} / {max(scores):.3f}"],
        [f"pictures with faces where a face is found (face threshold {config.face_threshold})",
         f"{found} of {len(with_faces)}"],
        ["pictures without faces where a face is found", f"{false_faces} of {len(without)}"],
        ["highest face score on a picture without faces", f"{max(r[3] for r in without):.3f}"],
        ["image safety, ms per image (decode, letterbox, detector; 1 thread)", f"{safety * 1000:.1f}"],
        ["ViT-B-32 CLIP work, ms per image (preprocess, image + 1.6 texts; 1 thread, fp32)",
         f"{clip * 1000:.1f}"],
        ["image safety / CLIP (target: at most 0.30)", f"{safety / clip:.2f}"],
    ]
    missed = sorted(r[0] for r in with_faces if r[2] == 0)
    body = (table(["measure", "value"], summary)
            + f"\n\nPictures with faces where none was found: {', '.join(missed) or 'none'}. NudeNet's face "
              "classes were trained on people in photos: small close-up crops (Pillow's 128-pixel hopper "
              "variants) and some paintings fall below the threshold. Recall on NSFW images is not measured: "
              "the fixtures hold none.")
    print(body)
    write_section("image_safety", "Image safety: NSFW scores and faces on real photos and artworks "
                                  "(bench/image_safety_bench.py)", body)


if __name__ == "__main__":
    main()
