"""NSFW scores and face boxes for every stored image, from one pass of NudeNet's detector; optional blurring
of the faces in the stored bytes.

The detector is NudeNet 3.4's `320n.onnx` (a YOLOv8n trained on 18 body-part classes, two of them faces),
the file that the `nudenet` wheel ships (12 MB), run with onnxruntime; nothing is downloaded, and NudeNet's
own Python code (which decodes untrusted bytes with OpenCV) is not used: images are decoded here with
interleaf's guarded decoder and letterboxed as NudeNet does (padded to a square at the bottom and the right,
resized to 320 x 320). One pass gives both, at 0.14 of the CLIP stage's work per image with ViT-B-32 on the
CPU (bench/image_safety_bench.py).

Licence: the nudenet wheel's metadata says MIT, but both licence files inside it are the AGPL-3.0 (and the
model is an Ultralytics YOLOv8, AGPL-3.0). interleaf (Apache-2.0) therefore does not depend on it: it is the
`safety` extra (`pip install 'interleaf[safety]'`), which scripts/setup.sh installs. The filter is on by
default, as OBELICS's NSFW filter is: without the extra, a run refuses to start with one line that names both
ways out (install the extra, or turn the filter off), so no corpus goes unfiltered by accident.

What is measured on the fixtures' real photos and artworks (bench/image_safety_bench.py, bench/RESULTS.md):
the NSFW false-positive rate, the faces found on the pictures that show faces, and the cost per image.

Engine-free: pipelines/image_safety.py calls `Detector.detect`, `nsfw_score`, `face_boxes` and `blur`.
"""

from __future__ import annotations

import importlib.util
import io
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from interleaf.imagefile import decode

NSFW = "nsfw"  # reason: an image whose NSFW score reaches the threshold

MODEL_FILE = "320n.onnx"
INPUT_SIDE = 320  # NudeNet 3.4's detector was trained and is run at 320 x 320
# The detector's classes, in the order of its output rows (nudenet/nudenet.py, 3.4.2)
LABELS = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)
# The classes that make an image NSFW: exposed genitalia, anus, buttocks and female breasts. Exposed bellies,
# feet, armpits and male chests are not (beach and sport photos would go).
NSFW_LABELS = ("FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED",
               "BUTTOCKS_EXPOSED", "ANUS_EXPOSED")
FACE_LABELS = ("FACE_FEMALE", "FACE_MALE")
_NSFW_ROWS = [LABELS.index(label) for label in NSFW_LABELS]
_FACE_ROWS = [LABELS.index(label) for label in FACE_LABELS]
NMS_IOU = 0.45  # NudeNet's own non-maximum suppression (cv2.dnn.NMSBoxes(..., 0.25, 0.45))
MAX_FACES = 64  # boxes kept per image (the most confident); the count is capped with them
# Pixels decoded, all frames together, to reach the later frames of an animated picture: 200 frames of
# 1000 x 1000 (about 1.4 s); frames past it are not looked at (counted: images.animated.partly_scored).
ANIMATION_PIXELS = 200_000_000


@dataclass(kw_only=True)
class ImageSafetyConfig:
    """Settings of the image safety step ([image_safety] in a config file)."""

    # Score every stored image for nudity and drop those at or above `nsfw_threshold` (reason "nsfw"; the
    # documents' image-count rules then decide whether a page stays), OBELICS's policy. On by default, as in
    # OBELICS, NeMo Curator, Data-Juicer and MINT-1T.
    nsfw: bool = True
    # 0.5: Data-Juicer's image_nsfw_filter default score_threshold; NudeNet itself reports a detection from
    # 0.25. On 61 real photos and artworks none of which is NSFW, the 95th percentile is 0.14 and the highest
    # 0.34 (a cup of coffee) (bench/image_safety_bench.py).
    nsfw_threshold: float = 0.5
    # An animated picture (GIF, APNG, WebP) is also scored on up to this many of its later frames, spread
    # evenly over those within ANIMATION_PIXELS of decoding, and its score is the highest (0: the first frame
    # only, which is what the trainer and the CLIP stage see). 8: one detector pass costs about as much as
    # decoding a 1-Mpx frame; a page's animated banner stays under a tenth of a second.
    nsfw_frames: int = 8
    # Face boxes and a face count on every stored image (DataComp released its pool with faces blurred).
    faces: bool = True
    # A face is a face-class detection at this score or above: 0.25, NudeNet's own detection threshold. On
    # the fixtures no picture without a face reaches 0.12, and 14 of the 20 with faces reach 0.25
    # (bench/image_safety_bench.py).
    face_threshold: float = 0.25
    # Blur the faces found in the stored bytes (img2dataset's BoundingBoxBlurrer, as DataComp did); the
    # image gets a new sha256 and the documents point at the blurred bytes. Off by default, as in
    # img2dataset.
    blur_faces: bool = False
    # A NudeNet-format ONNX detector file; None: the 320n.onnx inside the installed nudenet package.
    model: str | None = None
    # onnxruntime threads per worker process (Beam runs one process per core).
    threads: int = 1

    @property
    def enabled(self) -> bool:
        return self.nsfw or self.faces

    def validate(self) -> None:
        for name in ("nsfw_threshold", "face_threshold"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"image_safety.{name} is a score in [0, 1], found {value!r}")
        if self.blur_faces and not self.faces:
            raise ValueError("image_safety.blur_faces needs image_safety.faces = true")
        if self.nsfw_frames < 0:
            raise ValueError(f"image_safety.nsfw_frames must be at least 0, found {self.nsfw_frames!r}")
        if self.threads < 1:
            raise ValueError(f"image_safety.threads must be at least 1, found {self.threads!r}")
        if self.enabled:
            model_path(self.model)


def model_path(model: str | None = None) -> str:
    """The detector file: `model`, or the one the nudenet package ships. ValueError (one line, saying what to
    do) when there is none."""
    if model is not None:
        if not os.path.isfile(model):
            raise ValueError(f"image_safety.model: no file {model!r}")
        return model
    try:
        spec = importlib.util.find_spec("nudenet")  # the package's location only: its code is not imported
    except (ImportError, ValueError):  # a broken installation
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = os.path.join(folder, MODEL_FILE)
            if os.path.isfile(path):
                return path
    raise ValueError("the NSFW and face filters need NudeNet's detector (AGPL-3.0, an optional extra): "
                     "pip install 'interleaf[safety]', or turn them off with --no-nsfw --no-faces "
                     "([image_safety] nsfw = false, faces = false)")


@dataclass(frozen=True)
class Detection:
    label: str  # one of LABELS
    score: float
    box: tuple[int, int, int, int]  # x, y, width, height in pixels of the upright image


def letterbox(image: Image.Image) -> tuple[np.ndarray, float]:
    """(the detector's input (1, 3, 320, 320) float32 in [0, 1], pixels of the image per input pixel): the
    image padded with black to a square at the bottom and right, then resized, as NudeNet does."""
    side = max(image.size)
    scale = INPUT_SIDE / side
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    canvas = Image.new("RGB", (INPUT_SIDE, INPUT_SIDE))
    canvas.paste(image.convert("RGB").resize(size, Image.Resampling.BILINEAR), (0, 0))
    x = np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0  # (1, 3, H, W)
    return x, 1.0 / scale


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices of the boxes (N, 4: x, y, w, h) kept by greedy non-maximum suppression, best first."""
    order = np.argsort(-scores, kind="stable")
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    area = boxes[:, 2] * boxes[:, 3]
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = w * h
        order = rest[inter / np.maximum(area[i] + area[rest] - inter, 1e-9) <= iou]
    return keep


def detections(output: np.ndarray, scale: float, size: tuple[int, int], rows: list[int],
               min_score: float) -> list[Detection]:
    """Detections of the classes `rows` at `min_score` or above from the detector's output (4 + 18, N):
    boxes as (centre x, centre y, w, h) in input pixels, then one score per class."""
    scores = output[4:][rows]  # (len(rows), N)
    best = scores.max(axis=0)
    candidates = np.flatnonzero(best >= min_score)
    if not candidates.size:
        return []
    cx, cy, w, h = (output[k][candidates] * scale for k in range(4))
    boxes = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    width, height = size
    boxes[:, 0] = boxes[:, 0].clip(0, width)
    boxes[:, 1] = boxes[:, 1].clip(0, height)
    boxes[:, 2] = np.minimum(boxes[:, 2], width - boxes[:, 0])
    boxes[:, 3] = np.minimum(boxes[:, 3], height - boxes[:, 1])
    found = []
    for i in _nms(boxes, best[candidates], NMS_IOU):
        label = LABELS[rows[int(scores[:, candidates[i]].argmax())]]
        x, y, bw, bh = (int(v) for v in boxes[i])
        found.append(Detection(label=label, score=float(best[candidates[i]]), box=(x, y, bw, bh)))
    return found


class Detector:
    """NudeNet's detector in onnxruntime. Load once per worker (a DoFn's setup): about 0.2 s."""

    def __init__(self, path: str, threads: int = 1):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings are about graph rewrites
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def run(self, image: Image.Image) -> tuple[np.ndarray, float]:
        """(the raw output (22, N), pixels per input pixel) for an upright image."""
        x, scale = letterbox(image)
        return self.session.run(None, {self.input: x})[0][0], scale


def nsfw_score(output: np.ndarray) -> float:
    """The highest score of any NSFW class anywhere in the image (0 when none is seen)."""
    return float(output[4:][_NSFW_ROWS].max()) if output.shape[1] else 0.0


def face_boxes(output: np.ndarray, scale: float, size: tuple[int, int], threshold: float) -> list[Detection]:
    """The faces at `threshold` or above, most confident first, at most MAX_FACES."""
    return detections(output, scale, size, _FACE_ROWS, threshold)[:MAX_FACES]


def upright(data: bytes) -> Image.Image:
    """The stored bytes decoded, EXIF orientation applied (boxes are in this image's pixels), high bit
    depths scaled to 8 bits. Raises ImageDecodeError."""
    return _eight_bit(ImageOps.exif_transpose(decode(data)))


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit or 32-bit greyscale image (Pillow's I;16, I, F modes: 16-bit PNGs) as 8-bit L, its range
    scaled: convert("RGB") clips such values at 255, which made a 16-bit photo almost white to the detector
    (no face found, NSFW score near 0)."""
    if image.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return image
    values = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
    if image.mode == "F" and values.max(initial=0) <= 1.0:
        top = 1.0
    return Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8), "L")


def over_backgrounds(image: Image.Image) -> list[Image.Image]:
    """The picture as a reader may see it: a transparent one composited over white and over black (a page's
    background is either; what its alpha channel alone draws shows only over one of them), else itself."""
    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in image.info:
        return [image]
    rgba = image.convert("RGBA")
    low, _ = rgba.getchannel("A").getextrema()
    if low == 255:
        return [image]
    return [Image.alpha_composite(Image.new("RGBA", rgba.size, (c, c, c, 255)), rgba).convert("RGB")
            for c in (255, 0)]


_SAVE_FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "PNG"}


def blur(image: Image.Image, boxes: list[tuple[int, int, int, int]], fmt: str | None) -> tuple[bytes, str]:
    """(encoded bytes, format) of the upright image with every box blurred by img2dataset's blurrer (boxes
    grown by a tenth of their diagonal, Gaussian blur, blended through a blurred mask). The format stays,
    except GIF, which becomes PNG (one frame)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI for news on import
    from img2dataset.blurrer import BoundingBoxBlurrer

    rgb = np.array(image.convert("RGB"))
    if boxes:
        # The blurrer works on the whole array it is given; give it the faces' region only, with a margin
        # that holds its Gaussian (sigma a tenth of the largest box diagonal) and its blurred mask, so the
        # cost follows the faces, not the picture (a whole 8000 x 8000 photo took a minute and 6 GB).
        diagonal = max(max(w, h) for _, _, w, h in boxes)
        margin = int(0.1 * diagonal) + 4 * (int(np.ceil(0.1 * diagonal)) + 2)
        x0 = max(0, min(x for x, _, _, _ in boxes) - margin)
        y0 = max(0, min(y for _, y, _, _ in boxes) - margin)
        x1 = min(rgb.shape[1], max(x + w for x, _, w, _ in boxes) + margin)
        y1 = min(rgb.shape[0], max(y + h for _, y, _, h in boxes) + margin)
        crop = rgb[y0:y1, x0:x1]
        cw, ch = x1 - x0, y1 - y0
        relative = [[(x - x0) / cw, (y - y0) / ch, (x + w - x0) / cw, (y + h - y0) / ch]
                    for x, y, w, h in boxes]
        rgb[y0:y1, x0:x1] = BoundingBoxBlurrer()(crop, relative)
    save = _SAVE_FORMATS.get((fmt or "").lower(), "PNG")
    result = Image.fromarray(rgb)
    if image.mode == "L":  # a greyscale photo stays greyscale
        result = result.convert("L")
    out = io.BytesIO()
    result.save(out, format=save, **({"quality": 95} if save in ("JPEG", "WEBP") else {}))
    return out.getvalue(), save.lower()
