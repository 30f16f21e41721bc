"""Personal data replaced in the text of every document read at ingest (filters/pii.py): text nodes, the
alt text of image nodes and the page's title. URLs are left as they are (a page or image URL must stay the
address it is; one with an address in its query keeps it). Nothing is dropped; the funnel of stage "pii"
counts documents in and out, and, as information, the replacements of each kind (`documents.pii.email`,
...) and the documents that had any (`documents.pii.documents`). It runs right after ingest, so that
dedup, the CLIP stage and the tokenizer see only redacted text."""

from __future__ import annotations

from dataclasses import replace

import apache_beam as beam

from interleaf.filters.pii import PiiConfig, redact
from interleaf.pipelines.common import CountingDoFn
from interleaf.pipelines.stage import DOCUMENTS, IMAGES, RunContext, Stage, outputs
from interleaf.schemas.document import Document

STAGE = "pii"


def redact_document(doc: Document, config: PiiConfig) -> tuple[Document, dict[str, int]]:
    """`doc` with personal data replaced in its text and alt text, and the count of each kind."""
    counts: dict[str, int] = {}
    nodes, changed = [], False
    for node in doc.nodes:
        field = "text" if node.is_text else "alt_text"
        value = getattr(node, field)
        if value:
            new, found = redact(value, config.kinds)
            if found:
                node, changed = replace(node, **{field: new}), True
                for kind, n in found.items():
                    counts[kind] = counts.get(kind, 0) + n
        nodes.append(node)
    title = doc.meta.get("title") if isinstance(doc.meta, dict) else None
    if isinstance(title, str) and title:  # the page's <title> is text a reader sees too
        new, found = redact(title, config.kinds)
        if found:
            doc = replace(doc, meta={**doc.meta, "title": new})
            for kind, n in found.items():
                counts[kind] = counts.get(kind, 0) + n
    return (replace(doc, nodes=nodes) if changed else doc), counts


class _Redact(CountingDoFn):
    stage = STAGE

    def __init__(self, config: PiiConfig):
        super().__init__()
        self.config = config

    def process(self, doc: Document):
        self.funnel.inc("documents", "in")
        doc, counts = redact_document(doc, self.config)
        for kind, n in counts.items():
            self.funnel.inc("documents", f"pii.{kind}", n)
        if counts:
            self.funnel.inc("documents", "pii.documents")
        self.funnel.inc("documents", "out")
        yield doc


class PiiStage(Stage):
    """Personal data in the documents of an ingest run, replaced by typed placeholders ([pii])."""

    name, label, units = STAGE, "Pii", ("documents",)

    def __init__(self, config: PiiConfig):
        super().__init__()
        self.config = config

    @classmethod
    def enabled(cls, stages: list[str]) -> bool:
        return "ingest" in stages

    @classmethod
    def validate(cls, config) -> None:
        config.pii.validate()

    @classmethod
    def create(cls, config, context: RunContext) -> PiiStage:
        return cls(config.pii)

    def expand(self, streams):
        docs = streams[DOCUMENTS]
        if self.config.enabled and self.config.kinds:
            docs = docs | "Redact" >> beam.ParDo(_Redact(self.config))
        return outputs(docs.pipeline, documents=docs, images=streams[IMAGES])
