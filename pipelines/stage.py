"""The stage contract: what every step of `interleaf run` takes and gives, so that the run is a loop.

A stage is a composite PTransform. It takes the streams of the run so far,

    {"documents": PCollection[Document], "images": PCollection[ImageRecord]}

(a source stage, the first of a run, takes the pipeline's start instead), and gives

    {"documents": the documents it keeps (nodes it dropped stay, marked, until the run writes them),
     "images":    the image store as it leaves the stage,
     "rejected":  the documents it dropped, each with its reason,
     "failed":    dead letters (schemas/failure.py): elements it could not process}

Each stage class owns its place in the run: `name` (its name in --stages, whose config section it reads),
`label` (its Beam step: the run's per-stage timings are attributed by it), `units` (what its funnel counts,
in = out + dropped for each), `enabled()` (whether a run with these stages includes it), `validate()` (its
settings, checked before any work starts) and `create()` (the transform, from the run's config). Adding a
stage is one class and one entry in pipelines/run.py's STAGE_ORDER.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import apache_beam as beam

DOCUMENTS, IMAGES, REJECTED, FAILED = "documents", "images", "rejected", "failed"
SHARDS_FORMAT = "shards"  # an input that is a directory of interleaf document shards (run.resolve_inputs)


@dataclass(frozen=True)
class RunContext:
    """What a stage may need beyond its config section: where the run reads and writes."""

    inputs: dict[str, list[str]]  # {format: [paths]} (run.resolve_inputs)
    output: str  # the run directory
    images_path: str | None = None  # the image store beside document-shard inputs


class Stage(beam.PTransform):
    """Base of every stage; see the module docstring for the contract."""

    name: ClassVar[str]  # the stage as users name it (--stages), and its config section
    label: ClassVar[str]  # its Beam step's label
    units: ClassVar[tuple[str, ...]] = ()  # funnel units it counts: "records", "documents", "nodes", "images"
    source: ClassVar[bool] = False  # True: takes the pipeline's start, not the streams of a previous stage

    @classmethod
    def enabled(cls, stages: list[str]) -> bool:
        """Whether a run of these stages includes this one."""
        return cls.name in stages

    @classmethod
    def validate(cls, config) -> None:
        """Raise ValueError when this stage's settings in `config` (a RunConfig) cannot work."""

    @classmethod
    def create(cls, config, context: RunContext) -> Stage:
        """The transform for a run with `config` (a RunConfig)."""
        raise NotImplementedError


def outputs(pipeline, *, documents, images=None, rejected=None, failed=None) -> dict:
    """The four outputs of a stage (call it inside the stage's expand); an absent one becomes empty."""
    def empty(what: str):
        return pipeline | f"No{what.capitalize()}" >> beam.Create([]).with_output_types(object)

    return {DOCUMENTS: documents, IMAGES: images if images is not None else empty(IMAGES),
            REJECTED: rejected if rejected is not None else empty(REJECTED),
            FAILED: failed if failed is not None else empty(FAILED)}


class _SplitKept(beam.DoFn):
    """Documents to the main output (kept) or "rejected"; counting is the stages' own."""

    def process(self, doc):
        yield doc if doc.kept else beam.pvalue.TaggedOutput(REJECTED, doc)


def split_kept(docs, label: str = "SplitKept"):
    """(kept documents, dropped documents) of a stream where a stage marked documents dropped."""
    parts = docs | label >> beam.ParDo(_SplitKept()).with_outputs(REJECTED, main="kept")
    return parts.kept, parts[REJECTED]
