"""NSFW scores and faces on every stored image of a run (filters/image_safety.py), after the image rules and
image dedup, before CLIP: one detector pass per image gives both.

An image whose NSFW score reaches the threshold leaves the store as the image rules' refusals do: each of its
URLs becomes a failed row with status "nsfw" (and its score), and every image node that points at it is
dropped with reason "nsfw"; the final step then checks the documents' image counts again. A kept image gets
its score, its face count and face boxes; with blur_faces, its faces are blurred in the stored bytes, which
get a new sha256, and the nodes that pointed at the old bytes point at the new ones.

Funnel (stage "image_safety"): images (stored images): in = out + dropped by reason ("nsfw", or
"decode_error" for bytes that no longer decode); nodes (kept image nodes that point at a stored image):
in = out + dropped by reason. Information: images.faces.images (images with a face), images.faces.found
(faces), images.faces.blurred (images blurred).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from interleaf.filters.image_safety import (
    NSFW,
    Detector,
    ImageSafetyConfig,
    blur,
    face_boxes,
    model_path,
    nsfw_score,
    upright,
)
from interleaf.imagefile import ImageDecodeError
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
            output, scale = self.detector.run(image)
        except ImageDecodeError as e:
            yield from self._refuse(record, "decode_error", str(e), None)
            return
        cfg = self.config
        score = nsfw_score(output) if cfg.nsfw else None
        if score is not None and score >= cfg.nsfw_threshold:
            yield from self._refuse(record, NSFW, f"NSFW score {score:.3f} >= {cfg.nsfw_threshold}", score)
            return
        faces = face_boxes(output, scale, image.size, cfg.face_threshold) if cfg.faces else None
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
        self.funnel.inc("images", "out")
        yield record

    def _refuse(self, record: ImageRecord, reason: str, message: str, score: float | None):
        self.funnel.drop("images", reason)
        yield TaggedOutput(REFUSED, (record.sha256, (DROP, reason)))
        for row in refused_rows(record, reason, message):
            yield replace(row, nsfw_score=score)


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
        return outputs(documents.pipeline, documents=documents, images=judged.kept)
