"""NSFW scores and faces on every stored image of a run (filters/image_safety.py), after the image rules and
image dedup, before CLIP: one detector pass per image gives both.

An image whose NSFW score reaches the threshold leaves the store as the image rules' refusals do: each of its
URLs becomes a failed row with status "nsfw" (and its score), and every image node that points at it is
dropped with reason "nsfw"; the final step then checks the documents' image counts again. A kept image gets
its score, its face count and face boxes; with blur_faces, its faces are blurred in the stored bytes, which
get a new sha256, and the nodes that pointed at the old bytes point at the new ones. Blurring can make two
stored images one (the same photo in two encodings, or a blurred copy equal to an image already stored): such
records merge into one store row with every URL of each, so the store keeps one row per sha256.

Funnel (stage "image_safety"): images (stored images): in = out + dropped by reason ("nsfw",
"decode_error" for bytes that no longer decode, "same_bytes_as_another" for a record merged into another
after blurring); nodes (kept image nodes that point at a stored image):
in = out + dropped by reason. Information: images.faces.images (images with a face), images.faces.found
(faces), images.faces.blurred (images blurred), images.animated.images (animated pictures, scored on later
frames too), images.animated.partly_scored (those with frames past the decoding budget, not looked at).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from interleaf.filters.image_safety import (
    ANIMATION_PIXELS,
    NSFW,
    Detector,
    ImageSafetyConfig,
    blur,
    face_boxes,
    model_path,
    nsfw_score,
    over_backgrounds,
    upright,
)
from interleaf.imagefile import ImageDecodeError, later_frames
from interleaf.pipelines.common import CountingDoFn
from interleaf.pipelines.final import IMAGE_STAGES
from interleaf.pipelines.image_rules import DROP, MOVE, REFUSED, ApplyImageVerdicts, refused_rows
from interleaf.pipelines.stage import DOCUMENTS, IMAGES, RunContext, Stage, outputs
from interleaf.schemas.image import STATUS_OK, ImageRecord

STAGE = "image_safety"


class _Judge(CountingDoFn):
    """ImageRecord -> itself, scored (and blurred); or failed rows and (sha256, (DROP, reason)) tagged
    REFUSED. A blurred image also gives (old sha256, (MOVE, new sha256)) tagged REFUSED."""

    stage = STAGE

    def __init__(self, config: ImageSafetyConfig):
        super().__init__()
        self.config = config

    def setup(self):
        super().setup()
        self.detector = Detector(model_path(self.config.model), self.config.threads)

    def process(self, record: ImageRecord):
        if record.status != STATUS_OK:
            yield record
            return
        self.funnel.inc("images", "in")
        try:
            image = upright(record.data)
            # a transparent picture is judged as it shows over white and over black
            runs = [self.detector.run(view) for view in over_backgrounds(image)]
        except ImageDecodeError as e:
            yield from self._refuse(record, "decode_error", str(e), None)
            return
        cfg = self.config
        score = max(nsfw_score(output) for output, _ in runs) if cfg.nsfw else None
        if score is not None and score < cfg.nsfw_threshold and cfg.nsfw_frames:
            score = self._animated_score(record.data, score)
        if score is not None and score >= cfg.nsfw_threshold:
            yield from self._refuse(record, NSFW, f"NSFW score {score:.3f} >= {cfg.nsfw_threshold}", score)
            return
        faces = max((face_boxes(output, scale, image.size, cfg.face_threshold) for output, scale in runs),
                    key=len) if cfg.faces else None
        record = replace(record, nsfw_score=score, face_count=None if faces is None else len(faces),
                         face_boxes=None if faces is None else [list(f.box) for f in faces])
        if faces:
            self.funnel.inc("images", "faces.images")
            self.funnel.inc("images", "faces.found", len(faces))
            if cfg.blur_faces:
                data, fmt = blur(image, [f.box for f in faces], record.format)
                sha = hashlib.sha256(data).hexdigest()
                self.funnel.inc("images", "faces.blurred")
                yield TaggedOutput(REFUSED, (record.sha256, (MOVE, sha)))
                record = replace(record, sha256=sha, data=data, format=fmt, width=image.width,
                                 height=image.height)
        if not cfg.blur_faces:  # else counted by _MergeSameBytes
            self.funnel.inc("images", "out")
        yield record

    def _animated_score(self, data: bytes, score: float) -> float:
        """The highest NSFW score of the first frame (`score`) and the later frames scored."""
        total, reachable, frames = later_frames(data, self.config.nsfw_frames, ANIMATION_PIXELS)
        if total <= 1:
            return score
        self.funnel.inc("images", "animated.images")
        if reachable < total:
            self.funnel.inc("images", "animated.partly_scored")
        for frame in frames:
            score = max(score, nsfw_score(self.detector.run(frame)[0]))
            if score >= self.config.nsfw_threshold:
                break
        return score

    def _refuse(self, record: ImageRecord, reason: str, message: str, score: float | None):
        self.funnel.drop("images", reason)
        yield TaggedOutput(REFUSED, (record.sha256, (DROP, reason)))
        for row in refused_rows(record, reason, message):
            yield replace(row, nsfw_score=score)


def merge_same_bytes(records) -> ImageRecord:
    """Stored records of one sha256 as one: every URL of each (sorted), the rest from the record whose URLs
    sort first (deterministic whatever order the runner delivers them in)."""
    records = sorted(records, key=lambda r: (r.urls, r.original_bytes or 0, r.source or ""))
    return replace(records[0], urls=sorted({u for r in records for u in r.urls}))


class _CountMerged(CountingDoFn):
    """(sha256, [ImageRecord]) -> one ImageRecord, counted out; the others counted as merged."""

    stage = STAGE

    def process(self, element):
        _, records = element
        records = list(records)
        self.funnel.inc("images", "out")
        if len(records) > 1:
            self.funnel.drop("images", "same_bytes_as_another", len(records) - 1)
        yield merge_same_bytes(records)


class _MergeSameBytes(beam.PTransform):
    """ImageRecords after blurring -> one stored record per sha256; failed rows pass as they are."""

    def expand(self, records):
        split = records | "OkOrFailed" >> beam.Partition(lambda r, _n: int(r.status == STATUS_OK), 2)
        merged = (split[1] | "BySha" >> beam.Map(lambda r: (r.sha256, r))
                  | "GroupBySha" >> beam.GroupByKey()
                  | "Merge" >> beam.ParDo(_CountMerged()))
        return (split[0], merged) | "Together" >> beam.Flatten()


class ImageSafetyStage(Stage):
    """Every stored image scored for nudity and searched for faces ([image_safety]); NSFW images dropped
    with their nodes, faces optionally blurred."""

    name, label, units = STAGE, "ImageSafety", ("images", "nodes")

    def __init__(self, config: ImageSafetyConfig):
        super().__init__()
        self.config = config

    @classmethod
    def enabled(cls, stages: list[str]) -> bool:
        return any(s in stages for s in IMAGE_STAGES)

    @classmethod
    def validate(cls, config) -> None:
        config.image_safety.validate()

    @classmethod
    def create(cls, config, context: RunContext) -> ImageSafetyStage:
        return cls(config.image_safety)

    def expand(self, streams):
        if not self.config.enabled:
            return outputs(streams[DOCUMENTS].pipeline, documents=streams[DOCUMENTS], images=streams[IMAGES])
        judged = streams[IMAGES] | "Judge" >> beam.ParDo(_Judge(self.config)).with_outputs(
            REFUSED, main="kept")
        documents = ({DOCUMENTS: streams[DOCUMENTS], "verdicts": judged[REFUSED]}
                     | "ApplyToNodes" >> ApplyImageVerdicts(STAGE))
        images = judged.kept
        if self.config.blur_faces:
            images = images | "MergeSameBytes" >> _MergeSameBytes()
        return outputs(documents.pipeline, documents=documents, images=images)
