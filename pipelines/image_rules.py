"""The image rules (filters/image_rules.py: format, sides, aspect, area) on every image of a run, after
fetched images and images archived in the WARCs (or taken from an earlier run's store) have met. The fetcher
already refused what it downloaded by the same rules, before decoding; here the rest meet them.

A refused image leaves the store: its bytes are dropped and each of its URLs becomes a failed row with the
rule as status (as a refused download does), and every image node that points at it is dropped with the
rule as reason. The final step then checks the documents' image counts again.

Funnel (stage "image_rules"): images (stored images, i.e. ok records): in = out + dropped by rule; nodes
(kept image nodes that point at a stored image): in = out + dropped by rule. Rows of failed URLs pass
uncounted, as do documents (a document is dropped, if at all, by the final image-count check).
"""

from __future__ import annotations

from dataclasses import replace

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from interleaf.filters.image_rules import ImageRules, refusal, size_refusal
from interleaf.pipelines.common import CountingDoFn
from interleaf.pipelines.final import IMAGE_STAGES
from interleaf.pipelines.stage import DOCUMENTS, IMAGES, RunContext, Stage, outputs
from interleaf.schemas.document import Document
from interleaf.schemas.image import STATUS_OK, ImageRecord

STAGE = "image_rules"
REFUSED = "refused"
# verdicts on a stored image, for the nodes that point at it: drop them (value: the reason), or point them at
# new bytes (value: their sha256)
DROP, MOVE = "drop", "move"


def judge(record: ImageRecord, rules: ImageRules) -> tuple[str, str] | None:
    """(reason, message) for the rule a stored image breaks, or None. The size judged is the original one
    (as served or archived, before any resize), as the fetcher judged it."""
    size = None
    if record.original_width and record.original_height:
        size = (record.original_width, record.original_height)
    if record.data is not None:
        return refusal(record.data, rules, size)
    return size_refusal(*size, rules) if size else None


def refused_rows(record: ImageRecord, reason: str, message: str) -> list[ImageRecord]:
    """One failed store row per URL of a refused image, as the fetcher writes for a refused download."""
    return [ImageRecord(sha256=None, urls=[url], status=reason, error=message,
                        original_width=record.original_width, original_height=record.original_height,
                        original_bytes=record.original_bytes, source=record.source)
            for url in record.urls]


class _CheckImages(CountingDoFn):
    """ImageRecord -> itself when kept; else failed rows, and (sha256, (DROP, reason)) tagged REFUSED."""

    stage = STAGE

    def __init__(self, rules: ImageRules):
        self.rules = rules

    def process(self, record: ImageRecord):
        if record.status != STATUS_OK:
            yield record
            return
        self.funnel.inc("images", "in")
        problem = judge(record, self.rules)
        if problem is None:
            self.funnel.inc("images", "out")
            yield record
            return
        reason, message = problem
        self.funnel.drop("images", reason)
        yield TaggedOutput(REFUSED, (record.sha256, (DROP, reason)))
        yield from refused_rows(record, reason, message)


def image_shas(doc: Document) -> list[str]:
    """The stored images that the document's kept image nodes point at."""
    return sorted({n.image_sha256 for n in doc.nodes if n.is_image and n.kept and n.image_sha256})


class _RouteDocuments(beam.DoFn):
    """Documents that point at stored images to the main output; the others, with nothing to judge, to
    "untouched"."""

    def process(self, doc: Document):
        yield doc if image_shas(doc) else TaggedOutput("untouched", doc)


def _verdicts(item):
    """(sha256, {"verdict": [(kind, value)], "doc": [doc_id]}) -> (doc_id, (sha256, kind, value))."""
    sha, joined = item
    verdicts = list(joined["verdict"])
    if verdicts:
        kind, value = verdicts[0]
        for doc_id in sorted(set(joined["doc"])):
            yield doc_id, (sha, kind, value)


class _ApplyToNodes(CountingDoFn):
    """(doc_id, {"doc": [Document], "verdict": [(sha256, kind, value)]}) -> each Document with the image
    nodes that point at a judged image dropped (DROP, with the reason) or pointed at its new bytes (MOVE)."""

    def process(self, item):
        _, joined = item
        verdicts = {sha: (kind, value) for sha, kind, value in joined["verdict"]}
        for doc in joined["doc"]:
            nodes, changed = [], False
            for node in doc.nodes:
                if node.is_image and node.kept and node.image_sha256:
                    self.funnel.inc("nodes", "in")
                    kind, value = verdicts.get(node.image_sha256, (None, None))
                    if kind == DROP:
                        node, changed = node.dropped(value), True
                        self.funnel.drop("nodes", value)
                    else:
                        if kind == MOVE:
                            node, changed = replace(node, image_sha256=value), True
                        self.funnel.inc("nodes", "out")
                nodes.append(node)
            yield replace(doc, nodes=nodes) if changed else doc


class ApplyImageVerdicts(beam.PTransform):
    """{"documents": Documents, "verdicts": (sha256, (kind, value))} -> the Documents, every kept image node
    that points at a judged image dropped (DROP) or moved to new bytes (MOVE), counted as `stage` nodes."""

    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage

    def expand(self, inputs):
        routed = inputs[DOCUMENTS] | "Route" >> beam.ParDo(_RouteDocuments()).with_outputs(
            "untouched", main="judged")
        # (doc_id, (sha256, kind, value)) for each document that uses a judged image
        verdicts = ({"verdict": inputs["verdicts"],
                     "doc": routed.judged | "DocsBySha" >> beam.FlatMap(
                         lambda d: [(sha, d.doc_id) for sha in image_shas(d)])}
                    | "JoinVerdicts" >> beam.CoGroupByKey()
                    | "Verdicts" >> beam.FlatMap(_verdicts))
        keyed = routed.judged | "KeyByDocId" >> beam.Map(lambda d: (d.doc_id, d))
        judged = ({"doc": keyed, "verdict": verdicts}
                  | "JoinDocuments" >> beam.CoGroupByKey()
                  | "ApplyToNodes" >> beam.ParDo(_ApplyToNodes(self.stage)))
        return (judged, routed.untouched) | "AllDocuments" >> beam.Flatten()


class ImageRulesStage(Stage):
    """Every image of the run against the image rules, and the nodes of refused images dropped."""

    name, label, units = STAGE, "ImageRules", ("images", "nodes")

    def __init__(self, rules: ImageRules):
        super().__init__()
        self.rules = rules

    @classmethod
    def enabled(cls, stages: list[str]) -> bool:
        return any(s in stages for s in IMAGE_STAGES)

    @classmethod
    def validate(cls, config) -> None:
        config.image_rules.validate()

    @classmethod
    def create(cls, config, context: RunContext) -> ImageRulesStage:
        return cls(config.image_rules)

    def expand(self, streams):
        checked = streams[IMAGES] | "Check" >> beam.ParDo(_CheckImages(self.rules)).with_outputs(
            REFUSED, main="kept")
        documents = ({DOCUMENTS: streams[DOCUMENTS], "verdicts": checked[REFUSED]}
                     | "DropNodes" >> ApplyImageVerdicts(STAGE))
        return outputs(documents.pipeline, documents=documents, images=checked.kept)
