"""The CLIP stage in Beam: embed images and texts with open_clip through RunInference, join them with the
documents in the engine, score, and keep the images that belong to their text.

    {"documents": PCollection[Document], "images": PCollection[ImageRecord]}
        | ClipFilter(ClipConfig(...))
    -> {"documents": PCollection[Document],     # clip_score on image nodes, similarities in meta["clip"],
                                                # nodes dropped with clip_* reasons; dropped documents as given
        "images": PCollection[ImageRecord],     # clip_model, clip_embedding, clip_score filled where scored
        "failed": PCollection[Failure]}         # dead letters: undecodable images, failed inference batches

Joins are by key in the engine (images by sha256, texts and image embeddings by document), never gathered
into one worker. The model is loaded once per worker process by RunInference (shared across its threads).
Funnel counters under `interleaf.clip`: images (ok records with bytes: in = out + dropped), nodes (image
nodes only; CLIP judges no text node) and documents.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from interleaf.filters.clip import (
    REASON_IMAGE_ERROR,
    REASON_IMAGE_MISSING,
    ClipConfig,
    ClipDecisionConfig,
    ClipModelConfig,
    decide,
    decision_changes,
    image_best_similarities,
    image_scores,
    plan_document,
    reset_decision,
    score_document,
)
from interleaf.filters.clip_model import LoadedClip, image_transform, load_clip, preprocess_image
from interleaf.imagefile import ImageDecodeError
from interleaf.pipelines.common import CountingDoFn
from interleaf.pipelines.stage import DOCUMENTS, IMAGES, RunContext, Stage, outputs, split_kept
from interleaf.schemas.document import KEPT, Document
from interleaf.schemas.failure import Failure
from interleaf.schemas.image import STATUS_OK, ImageRecord

log = logging.getLogger(__name__)

STAGE = "clip"
# RunInference's own metrics (batch sizes, latencies) go here: outside `interleaf.`, so not in the funnel.
INFERENCE_NAMESPACE = "BeamML_OpenClip"

IMAGE, TEXT = "image", "text"  # the two kinds of RunInference examples
FAILED = "failed"
# Image-level drop reasons (images unit); their nodes are dropped with REASON_IMAGE_ERROR.
IMAGE_DECODE_ERROR = "clip_decode_error"
IMAGE_INFERENCE_ERROR = "clip_inference_error"
# The top-fraction threshold is found exactly in two global passes: a histogram of every score over
# cosine similarity's [-1, 1] (512 KiB per accumulator), then the scores of the one bin holding the k-th
# best. A bin is 3e-5 wide, so the second pass carries a handful of floats, not the corpus.
HISTOGRAM_BINS = 1 << 16


# ---------------------------------------------------------------- RunInference


class OpenClipModelHandler(ModelHandler[tuple[str, np.ndarray | str], np.ndarray, LoadedClip]):
    """RunInference handler for any open_clip model.

    Examples are (IMAGE, (3, H, W) float32 pixels already preprocessed to the model's size, so batches of
    mixed-size images stack) or (TEXT, str), tokenized here a batch at a time (the tokenizer pads every
    text to the model's context). Inferences are L2-normalised (D,) float32 embeddings. One batch may mix
    both kinds; each kind is one forward pass.
    """

    def __init__(self, config: ClipModelConfig, *, model_id: str | None = None):
        config.validate()
        super().__init__(min_batch_size=config.min_batch_size or config.max_batch_size,
                         max_batch_size=config.max_batch_size)
        self._config = config
        self._model_id = model_id or config.model_id()

    def load_model(self) -> LoadedClip:
        return load_clip(self._config, model_id=self._model_id)

    def run_inference(self, batch: Sequence[tuple[str, np.ndarray | str]], model: LoadedClip,
                      inference_args: dict | None = None) -> Iterable[PredictionResult]:
        results: list[PredictionResult | None] = [None] * len(batch)
        for kind in (IMAGE, TEXT):
            index = [i for i, (k, _) in enumerate(batch) if k == kind]
            if not index:
                continue
            if kind == IMAGE:
                embeddings = model.encode_images(np.stack([batch[i][1] for i in index]))  # (B, D)
            else:
                embeddings = model.encode_strings([batch[i][1] for i in index])  # (B, D)
            for i, e in zip(index, embeddings):
                results[i] = PredictionResult(batch[i], e, self._model_id)
        if any(r is None for r in results):
            kinds = sorted({k for k, _ in batch} - {IMAGE, TEXT})
            raise ValueError(f"CLIP examples must be ({IMAGE!r}, pixels) or ({TEXT!r}, tokens), found kinds {kinds}")
        return results

    def get_num_bytes(self, batch: Sequence[tuple[str, np.ndarray | str]]) -> int:
        return sum(a.nbytes if isinstance(a, np.ndarray) else len(a.encode("utf-8")) for _, a in batch)

    def get_metrics_namespace(self) -> str:
        return INFERENCE_NAMESPACE


class ClipEmbed(beam.PTransform):
    """(key, (kind, array)) -> {"embeddings": (key, embedding), "failed": Failure} through RunInference.

    A batch whose inference raises goes to the dead letters element by element (RunInference's
    with_exception_handling), counted as images.dropped.clip_inference_error or texts' info counter.
    Keys are (IMAGE, sha256) or (TEXT, document key, slot).
    """

    def __init__(self, config: ClipModelConfig, *, model_id: str | None = None):
        super().__init__()
        self.config, self.model_id = config, model_id or config.model_id()

    def expand(self, examples):
        handler = KeyedModelHandler(OpenClipModelHandler(self.config, model_id=self.model_id))
        # (key, PredictionResult), and the failed batches
        results, dead = (examples
                         | "RunInference" >> RunInference(handler).with_exception_handling(
                             exc_class=(RuntimeError, ValueError, TypeError)))
        # (key, embedding)
        embeddings = results | "Embeddings" >> beam.Map(lambda kv: (kv[0], kv[1].inference))
        # a Failure per element of each failed batch
        failed = dead.failed_inferences | "FailedBatches" >> beam.ParDo(_FailedBatch())
        return {"embeddings": embeddings, "failed": failed}


class _FailedBatch(CountingDoFn):
    stage = STAGE

    def process(self, item):
        batch, (_, error, _) = item
        for key, _ in batch:
            if key[0] == IMAGE:
                self.funnel.drop("images", IMAGE_INFERENCE_ERROR)
                yield Failure(stage=STAGE, step="inference", kind=IMAGE, key=key[1], error=error)
            else:
                self.funnel.inc("nodes", "text_inference_errors")  # informational
                yield Failure(stage=STAGE, step="inference", kind=TEXT, key=f"{key[1]}/{key[2]}", error=error)


# ---------------------------------------------------------------- preparing examples


class _PrepareImages(CountingDoFn):
    """ImageRecord -> main (sha256, record) for ok records with bytes, and their example
    ((IMAGE, sha256), (IMAGE, pixels)); other records pass through; undecodable ones become dead letters."""

    EXAMPLES, OTHER = "examples", "other"
    stage = STAGE

    def __init__(self, config: ClipModelConfig):
        self.config = config

    def setup(self):
        super().setup()
        self.transform = image_transform(self.config)

    def process(self, record: ImageRecord):
        if record.status != STATUS_OK or record.data is None or not record.sha256:
            self.funnel.inc("images", "not_ok")  # informational: failed fetches, passed through
            yield pvalue.TaggedOutput(self.OTHER, record)
            return
        self.funnel.inc("images", "in")
        yield record.sha256, record
        try:
            pixels = preprocess_image(record.data, self.transform)  # (3, H, W) at the model's size
        except ImageDecodeError as e:
            self.funnel.drop("images", IMAGE_DECODE_ERROR)
            yield pvalue.TaggedOutput(FAILED, Failure(stage=STAGE, step="decode", kind=IMAGE, key=record.sha256,
                                                      error=str(e)))
            return
        yield pvalue.TaggedOutput(self.EXAMPLES, ((IMAGE, record.sha256), (IMAGE, pixels)))


def document_key(doc: Document, texts: Sequence[str], shas: Sequence[str]) -> str:
    """The join key of a document: its id plus a digest of what it asks for, so that two documents sharing
    an id (not yet deduplicated) share embeddings only when they need the same ones."""
    h = hashlib.sha256()
    for part in (*texts, "\x00", *shas):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return f"{doc.doc_id}:{h.hexdigest()[:16]}"


class _PrepareDocuments(beam.DoFn):
    """Document -> main (key, doc) for kept documents; text examples ((TEXT, key, slot), (TEXT, text));
    image references (sha256, key); dropped documents pass through."""

    TEXTS, REFS, OTHER = "texts", "refs", "other"

    def __init__(self, config: ClipConfig):
        self.config = config

    def process(self, doc: Document):
        if doc.status != KEPT:
            yield pvalue.TaggedOutput(self.OTHER, doc)
            return
        plan = plan_document(doc, self.config.text, all_sentences=self.config.all_sentences)
        shas = plan.shas(doc)
        key = document_key(doc, plan.texts, shas)
        yield key, doc
        for slot, text in enumerate(plan.texts):
            yield pvalue.TaggedOutput(self.TEXTS, ((TEXT, key, slot), (TEXT, text)))
        for sha in sorted(set(shas)):
            yield pvalue.TaggedOutput(self.REFS, (sha, key))


# ---------------------------------------------------------------- joins and scoring


def _route_image_embeddings(item):
    """(sha256, {"refs": [key], "embedding": [emb], "failed": [reason]}) -> (key, (sha256, emb or reason))."""
    sha, grouped = item
    if grouped["embedding"]:
        value = grouped["embedding"][0]
    elif grouped["failed"]:
        value = REASON_IMAGE_ERROR
    else:
        value = REASON_IMAGE_MISSING
    for key in sorted(set(grouped["refs"])):
        yield key, (sha, value)


class _ScoreDocuments(CountingDoFn):
    """(key, {"doc": [Document], "images": [(sha, emb|reason)], "texts": [(slot, emb)]}) -> scored Document."""

    stage = STAGE

    def __init__(self, config: ClipConfig, model_id: str):
        self.config, self.model_id = config, model_id

    def process(self, item):
        _, grouped = item
        images, texts = dict(grouped["images"]), dict(grouped["texts"])
        for doc in grouped["doc"]:
            plan = plan_document(doc, self.config.text, all_sentences=self.config.all_sentences)
            scored = score_document(doc, plan, image_embeddings=images, text_embeddings=texts,
                                    model_id=self.model_id, all_sentences=self.config.all_sentences)
            changes = decision_changes(doc, scored)
            for name in ("documents.in", "nodes.in"):
                unit, _, what = name.partition(".")
                self.funnel.inc(unit, what, changes.get(name, 0))
            for name, n in changes.items():
                if name.startswith("nodes.dropped."):
                    self.funnel.drop("nodes", name[len("nodes.dropped."):], n)
            yield scored


class _Decide(CountingDoFn):
    """Scored (or previously decided) Document -> decided Document, counted.

    With count_in False the document and node "in" counts (and scoring-time drops) were made upstream
    (ClipFilter's scoring step); with True this is a stage of its own (ReapplyClipDecision)."""

    def __init__(self, decision: ClipDecisionConfig, stage: str, count_in: bool):
        self.decision, self.stage, self.count_in = decision, stage, count_in

    def process(self, doc: Document, threshold: float | None = None):
        before = reset_decision(doc)
        after = decide(before, self.decision, threshold=threshold)
        for name, n in decision_changes(before, after).items():
            unit, _, what = name.partition(".")
            if what == "in" and not self.count_in:
                continue
            if what.startswith("dropped."):
                self.funnel.drop(unit, what[len("dropped."):], n)
            else:
                self.funnel.inc(unit, what, n)
        yield after


def score_bin(score: float) -> int:
    """Histogram bin of a cosine similarity (values outside [-1, 1] go to the end bins)."""
    return min(HISTOGRAM_BINS - 1, max(0, math.floor((score + 1.0) / 2.0 * HISTOGRAM_BINS)))


class _ScoreHistogram(beam.CombineFn):
    """Scores -> counts per bin (int64, HISTOGRAM_BINS)."""

    def create_accumulator(self):
        return np.zeros(HISTOGRAM_BINS, dtype=np.int64)

    def add_input(self, counts, score):
        counts[score_bin(score)] += 1
        return counts

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        total = next(accumulators).copy()
        for counts in accumulators:
            total += counts
        return total

    def extract_output(self, counts):
        return counts


def _locate(counts: np.ndarray, fraction: float) -> tuple[int, int] | None:
    """The bin holding the k-th best score (k = ceil(fraction * n), as top_fraction_threshold) and its rank
    from the top inside that bin; None without scores."""
    n = int(counts.sum())
    if n == 0:
        return None
    k = max(1, math.ceil(fraction * n))
    above = np.cumsum(counts[::-1])  # above[j]: scores in the top j + 1 bins
    j = int(np.searchsorted(above, k))
    before = int(above[j - 1]) if j else 0
    return HISTOGRAM_BINS - 1 - j, k - before


def _threshold_in_bin(values: list[float], located: tuple[int, int] | None) -> float:
    if located is None:
        return math.inf
    return sorted(values, reverse=True)[located[1] - 1]


class ApplyClipDecision(beam.PTransform):
    """Scored documents -> decided documents: a fixed threshold, a corpus top fraction (the exact threshold
    found in the engine over every scored image, handed to the workers as a side input), or MMC4
    assignment. Counted under `stage`; count_in=False when the "in" side was counted upstream."""

    def __init__(self, decision: ClipDecisionConfig, *, threshold: float | None = None, stage: str = STAGE,
                 count_in: bool = True):
        super().__init__()
        decision.validate()
        if decision.mode == "threshold" and threshold is None:
            raise ValueError("mode 'threshold' needs a threshold (ClipConfig.threshold() resolves the default)")
        self.decision, self.threshold, self.stage, self.count_in = decision, threshold, stage, count_in

    def expand(self, docs):
        fn = _Decide(self.decision, self.stage, self.count_in)
        if self.decision.mode != "top_fraction":
            return docs | "Decide" >> beam.ParDo(fn, threshold=self.threshold)
        fraction = self.decision.top_fraction
        # one score per scored, kept image node of a kept document
        scores = docs | "Scores" >> beam.FlatMap(lambda d: image_scores(reset_decision(d)))
        # (bin, rank inside it) of the k-th best score, or None
        located = (scores
                   | "Histogram" >> beam.CombineGlobally(_ScoreHistogram())
                   | "Locate" >> beam.Map(_locate, fraction))
        # the corpus threshold, one float: the k-th best among the few scores of that bin
        threshold = (scores
                     | "InBin" >> beam.Filter(lambda s, loc: loc is not None and score_bin(s) == loc[0],
                                              pvalue.AsSingleton(located))
                     | "BinScores" >> beam.combiners.ToList()
                     | "Threshold" >> beam.Map(_threshold_in_bin, pvalue.AsSingleton(located)))
        return docs | "Decide" >> beam.ParDo(fn, threshold=pvalue.AsSingleton(threshold))


class ReapplyClipDecision(beam.PTransform):
    """Already-scored documents -> documents decided again with another mode or threshold, from the
    similarities stored in meta["clip"]: no model, no image store. Earlier CLIP decisions are undone first
    (assigned images go back to their original places). Counted under stage "clip_reapply"."""

    def __init__(self, decision: ClipDecisionConfig, *, threshold: float | None = None,
                 stage: str = "clip_reapply"):
        super().__init__()
        self.decision, self.threshold, self.stage = decision, threshold, stage

    def expand(self, docs):
        return docs | "Apply" >> ApplyClipDecision(self.decision, threshold=self.threshold, stage=self.stage)


def _fill_image(item, model_id: str):
    """(sha256, {"record": [ImageRecord], "embedding": [emb], "best": [score]}) -> filled ImageRecords."""
    _, grouped = item
    embedding = grouped["embedding"][0] if grouped["embedding"] else None
    best = max(grouped["best"]) if grouped["best"] else None
    for record in grouped["record"]:
        if embedding is None:  # failed (counted and dead-lettered where it failed): as given
            yield record
        else:
            yield replace(record, clip_model=model_id, clip_embedding=[float(v) for v in embedding],
                          clip_score=best)


class _CountImagesOut(CountingDoFn):
    stage = STAGE

    def process(self, record: ImageRecord):
        if record.clip_embedding is not None:
            self.funnel.inc("images", "out")
            if record.clip_score is None:  # informational: no kept document compared it with any text
                self.funnel.inc("images", "unscored")
        yield record


# ---------------------------------------------------------------- the stage


class ClipFilter(beam.PTransform):
    """The CLIP stage. Input: {"documents": PCollection[Document], "images": PCollection[ImageRecord]}.
    Output: {"documents", "images", "failed"} (see the module docstring)."""

    def __init__(self, config: ClipConfig):
        super().__init__()
        config.validate()  # before any work: unknown model, missing checkpoint, no threshold
        self.config = config
        self.model_id = config.model.model_id()
        self.threshold = config.threshold() if config.decision.mode == "threshold" else None

    def expand(self, inputs):
        config, model_id = self.config, self.model_id
        docs, images = inputs["documents"], inputs["images"]

        # (sha256, ok ImageRecord); image examples; records not to score; undecodable images
        prepared_images = images | "PrepareImages" >> beam.ParDo(_PrepareImages(config.model)).with_outputs(
            _PrepareImages.EXAMPLES, _PrepareImages.OTHER, FAILED, main="records")
        # (key, kept Document); text examples; (sha256, key) references; dropped documents
        prepared_docs = docs | "PrepareDocuments" >> beam.ParDo(_PrepareDocuments(config)).with_outputs(
            _PrepareDocuments.TEXTS, _PrepareDocuments.REFS, _PrepareDocuments.OTHER, main="documents")

        # ((kind, ...), embedding) for every image and text, one RunInference (one model per process)
        embedded = ((prepared_images[_PrepareImages.EXAMPLES], prepared_docs[_PrepareDocuments.TEXTS])
                    | "AllExamples" >> beam.Flatten()
                    | "Embed" >> ClipEmbed(config.model, model_id=model_id))
        # (sha256, embedding)
        image_embeddings = (embedded["embeddings"]
                            | "ImageEmbeddings" >> beam.Filter(lambda kv: kv[0][0] == IMAGE)
                            | "KeyBySha" >> beam.Map(lambda kv: (kv[0][1], kv[1])))
        # (document key, (slot, embedding))
        text_embeddings = (embedded["embeddings"]
                           | "TextEmbeddings" >> beam.Filter(lambda kv: kv[0][0] == TEXT)
                           | "KeyByDocument" >> beam.Map(lambda kv: (kv[0][1], (kv[0][2], kv[1]))))
        failures = ((prepared_images[FAILED], embedded["failed"]) | "AllFailures" >> beam.Flatten())
        # (sha256, reason) for images that failed
        failed_shas = (failures
                       | "FailedImages" >> beam.Filter(lambda f: f.kind == IMAGE)
                       | "KeyFailedBySha" >> beam.Map(lambda f: (f.key, f.step)))

        # (document key, (sha256, embedding or reason)): image embeddings routed to the documents using them
        routed = ({"refs": prepared_docs[_PrepareDocuments.REFS], "embedding": image_embeddings,
                   "failed": failed_shas}
                  | "JoinBySha" >> beam.CoGroupByKey()
                  | "RouteToDocuments" >> beam.FlatMap(_route_image_embeddings))
        # scored Documents (similarities stored, no decision yet)
        scored = ({"doc": prepared_docs["documents"], "images": routed, "texts": text_embeddings}
                  | "JoinByDocument" >> beam.CoGroupByKey()
                  | "Score" >> beam.ParDo(_ScoreDocuments(config, model_id)))
        # decided Documents
        decided = scored | "Decide" >> ApplyClipDecision(config.decision, threshold=self.threshold, count_in=False)
        documents = ((decided, prepared_docs[_PrepareDocuments.OTHER]) | "AllDocuments" >> beam.Flatten())

        # (sha256, best similarity in any document)
        best = (scored
                | "BestPerDocument" >> beam.FlatMap(lambda d: image_best_similarities(d).items())
                | "BestOverall" >> beam.CombinePerKey(max))
        # ImageRecords with clip fields filled
        filled = ({"record": prepared_images["records"], "embedding": image_embeddings, "best": best}
                  | "JoinImages" >> beam.CoGroupByKey()
                  | "FillImages" >> beam.FlatMap(_fill_image, model_id)
                  | "CountImages" >> beam.ParDo(_CountImagesOut()))
        images_out = ((filled, prepared_images[_PrepareImages.OTHER]) | "AllImages" >> beam.Flatten())
        return {"documents": documents, "images": images_out, "failed": failures}


class ClipStage(Stage):
    """The clip stage: ClipFilter, then documents it dropped split off; its dead letters go to DIR/failed/.
    The accelerator resource hint, when given, applies to the whole stage (only it runs on GPU workers)."""

    name, label, units = STAGE, "Clip", ("documents", "nodes", "images")

    def __init__(self, config: ClipConfig):
        super().__init__()
        self.config = config

    @classmethod
    def validate(cls, config) -> None:
        if config.clip.model.pretrained is None:
            raise ValueError("the clip stage needs weights: --clip-pretrained TAG (an open_clip pretrained "
                             "tag, downloaded) or a checkpoint file (interleaf train-clip)")
        config.clip.validate()

    @classmethod
    def create(cls, config, context: RunContext) -> ClipStage:
        stage = cls(config.clip)
        return stage.with_resource_hints(accelerator=config.clip_accelerator) if config.clip_accelerator else stage

    def expand(self, streams):
        out = {DOCUMENTS: streams[DOCUMENTS], IMAGES: streams[IMAGES]} | "Filter" >> ClipFilter(self.config)
        kept, rejected = split_kept(out[DOCUMENTS])
        return outputs(kept.pipeline, documents=kept, images=out[IMAGES], rejected=rejected, failed=out[FAILED])
