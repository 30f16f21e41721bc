"""The last check of a run: the image-count bounds of the quality rules once more, after the image stages
(fetch, the image rules, image dedup, CLIP) changed which images a document keeps: a page whose images all failed to fetch
no longer has any. Counted as stage "final"."""

from __future__ import annotations

import apache_beam as beam

from interleaf.filters.quality import QualityConfig, image_count_failure
from interleaf.pipelines.common import DecisionDoFn
from interleaf.pipelines.stage import DOCUMENTS, IMAGES, REJECTED, RunContext, Stage, outputs
from interleaf.schemas.document import Document

STAGE = "final"
# the stages that change which images a document keeps (ingest: the image rules on archived images)
IMAGE_STAGES = ("ingest", "fetch", "dedup", "clip")


class _ImageCounts(DecisionDoFn):
    stage, unit = STAGE, "documents"

    def __init__(self, quality: QualityConfig):
        self.quality = quality

    def decide(self, doc: Document) -> str | None:
        return image_count_failure(doc, self.quality)


class FinalStage(Stage):
    name, label, units = STAGE, "Final", ("documents",)

    def __init__(self, quality: QualityConfig):
        super().__init__()
        self.quality = quality

    @classmethod
    def enabled(cls, stages: list[str]) -> bool:
        return any(s in stages for s in IMAGE_STAGES)

    @classmethod
    def create(cls, config, context: RunContext) -> FinalStage:
        return cls(config.ingest.quality)

    def expand(self, streams):
        parts = streams[DOCUMENTS] | "ImageCounts" >> beam.ParDo(_ImageCounts(self.quality)).with_outputs(
            REJECTED, main="kept")
        return outputs(parts.kept.pipeline, documents=parts.kept, images=streams[IMAGES], rejected=parts[REJECTED])
