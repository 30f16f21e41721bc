"""Stage 6, tokenize: curated Documents plus the image store to (doc_id, tokens) rows and token shards.

Images go through the image tokenizer (tokenizers/image.py: the VQ, or any registered kind) with Beam's
RunInference (batched; the model is loaded once per worker
process and shared by its threads; cpu or cuda), text through the byte-level BPE, and the two meet in the
engine: image references are grouped with the image store by sha256, encoded once however many documents
use them, and their codes are grouped back with their documents by doc_id. Nothing is gathered into one
worker. An image node whose image is not in the store (or cannot be decoded or encoded) is left out of its
document's sequence and counted with a reason; the document is kept.

Counters (namespace interleaf.tokenize, see pipelines/common.Funnel):
  documents  in / out / dropped.{not_kept, empty}             + info: split (extra sequences from max_length)
  nodes      in / out / dropped.{empty_text, image_unresolved, image_missing, image_undecodable,
                                 image_inference_error}          (kept nodes of kept documents)
  images     in / out / dropped.{not_stored, duplicate, unreferenced, undecodable, inference_error}
             (image store rows; each used image is encoded once)
A document split by max_length gives rows "<doc_id>:0", "<doc_id>:1", ... (concatenated, the original).
  tokens     info: text, image (token counts written)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import apache_beam as beam
import torch
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from interleaf import __version__, precision, storage
from interleaf.imagefile import ImageDecodeError, decode
from interleaf.pipelines.common import CountingDoFn, ReadShards, WriteShards
from interleaf.pipelines.stage import DOCUMENTS, IMAGES, RunContext, Stage, outputs
from interleaf.schemas.document import DOCUMENT_SCHEMA, Document, documents_from_table
from interleaf.schemas.image import IMAGE_SCHEMA, STATUS_OK, ImageRecord, images_from_table
from interleaf.schemas.tokens import TokenShardInfo, Vocabulary, tokens_to_table
from interleaf.tokenizers import image as image_tokenizers
from interleaf.tokenizers.codec import (
    SKIP_EMPTY_TEXT,
    SKIP_IMAGE_MISSING,
    SKIP_IMAGE_UNRESOLVED,
    SequenceCodec,
    build_vocabulary,
)
from interleaf.tokenizers.image import ImageTokenizer, ImageTokenizerInfo, image_to_tensor
from interleaf.tokenizers.text_bpe import TextTokenizer

log = logging.getLogger(__name__)

STAGE = "tokenize"
# node drop reasons beyond the codec's (empty_text, image_unresolved, image_missing)
SKIP_IMAGE_UNDECODABLE = "image_undecodable"
SKIP_IMAGE_INFERENCE = "image_inference_error"


@dataclass(kw_only=True)
class TokenizeConfig:
    text_tokenizer: str  # path of the BPE's tokenizer.json (interleaf train-text-tokenizer)
    image_tokenizer: str  # path of the image tokenizer file (tokenizers/image.py; the VQ: interleaf
    # train-image-tokenizer, or save_vq of any)
    device: str = "cpu"  # where the image tokenizer's encoder runs: "cpu" or "cuda" ("cuda:N")
    max_batch_size: int = 64  # RunInference batches at most this many images
    # and at least this many when a bundle has them (None: max_batch_size, fixed batches; Beam's default of
    # growing batches from 1 costs throughput in batch pipelines)
    min_batch_size: int | None = None
    num_threads: int | None = None  # torch.set_num_threads in each worker process (None: torch's default)
    max_length: int | None = None  # split longer sequences at node boundaries (None: never split)
    num_shards: int = 1  # token shards to write

    @property
    def batch_min(self) -> int:
        return self.max_batch_size if self.min_batch_size is None else self.min_batch_size

    def validate(self) -> None:
        if not self.device.startswith(("cpu", "cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', found {self.device!r}")
        if not 1 <= self.batch_min <= self.max_batch_size:
            raise ValueError(f"need 1 <= min_batch_size <= max_batch_size, found {self.min_batch_size}, "
                             f"{self.max_batch_size}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, found {self.num_threads}")
        if self.num_shards < 1:
            raise ValueError(f"num_shards must be at least 1, found {self.num_shards}")


@dataclass(frozen=True)
class TokenizerSet:
    """What the launcher learns about the tokenizers before the pipeline starts: the vocabulary, the
    fingerprints and the image tokenizer's description (read from the files; the image tokenizer's weights
    are loaded only by workers)."""

    vocabulary: Vocabulary
    text_sha256: str
    image: ImageTokenizerInfo

    @property
    def image_sha256(self) -> str:
        return self.image.fingerprint

    @classmethod
    def read(cls, config: TokenizeConfig) -> TokenizerSet:
        text = TextTokenizer.load(config.text_tokenizer)
        image = image_tokenizers.read_info(config.image_tokenizer)
        vocab = build_vocabulary(text_vocab_size=text.vocab_size, image_codebook_size=image.codebook_size,
                                 image_grid=image.grid)
        return cls(vocabulary=vocab, text_sha256=text.sha256, image=image)

    def shard_info(self, config: TokenizeConfig) -> TokenShardInfo:
        return TokenShardInfo(vocabulary=self.vocabulary,
                              tokenizers={"text": self.text_sha256, "image": self.image_sha256},
                              config={"tokenize": asdict(config),
                                      "image_tokenizer": {"kind": self.image.kind, **self.image.config}},
                              producer=f"interleaf {__version__}")


# ---------------------------------------------------------------- the image tokenizer through RunInference


class ImageTokenizerHandler(ModelHandler[torch.Tensor, list[int], ImageTokenizer]):
    """RunInference's handler for the image tokenizer's encoder: (3, S, S) tensors in, flat code lists
    (raster order) out."""

    def __init__(self, path: str, *, expected_sha256: str | None = None, device: str = "cpu",
                 num_threads: int | None = None, min_batch_size: int = 1, max_batch_size: int = 64):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self.path, self.expected_sha256 = path, expected_sha256
        self.device, self.num_threads = device, num_threads

    def load_model(self) -> ImageTokenizer:
        # checked here, on the worker, not at launch: a CPU-only launcher may start a job on GPU workers
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"image tokenizer device {self.device!r} asked, but torch sees no CUDA device "
                               "on this worker; run on GPU workers or set device='cpu'")
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        model = image_tokenizers.load(self.path, self.device)
        if self.expected_sha256 and model.fingerprint != self.expected_sha256:
            raise ValueError(f"image tokenizer {self.path} changed since the pipeline started (sha256 "
                             f"{model.fingerprint[:12]}, expected {self.expected_sha256[:12]}); the shards' "
                             "metadata would be wrong. Rerun the stage")
        log.info("loaded image tokenizer %s (%s, grid %s, %d codes) on %s", self.path, model.fingerprint[:12],
                 model.grid, model.codebook_size, self.device)
        return model

    def run_inference(self, batch: Sequence[torch.Tensor], model: ImageTokenizer,
                      inference_args=None) -> list[list[int]]:
        x = torch.stack(list(batch))  # (B, 3, H, W)
        # padded so that an image's codes do not depend on what shares its batch (interleaf.precision)
        missing = precision.batch_padding(len(x))
        if missing:
            x = torch.cat([x, x[-1:].expand(missing, *x.shape[1:])])
        codes = model.encode(x.to(self.device))[:len(batch)]  # (B, h, w)
        return [c.flatten().tolist() for c in codes.cpu()]

    def get_num_bytes(self, batch: Sequence[torch.Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in batch)

    def get_metrics_namespace(self) -> str:
        return "RunInference.image_tokenizer"  # outside interleaf.*, so the funnel does not read these as a stage

    def batch_elements_kwargs(self):
        return self._batching_kwargs


# ---------------------------------------------------------------- steps


def _image_refs(doc: Document):
    """(sha256, doc_id) once per distinct image of a kept document's kept image nodes."""
    if not doc.kept:
        return
    for sha in dict.fromkeys(n.image_sha256 for n in doc.nodes if n.kept and n.is_image and n.image_sha256):
        yield sha, doc.doc_id


class _JoinImages(CountingDoFn):
    """Per sha256: the store's record(s) and the documents that use it. Emits images to encode as
    ((sha, doc_ids), tensor) on the main output, and (doc_id, (sha, None, reason)) answers on 'answers'."""

    stage = STAGE

    ANSWERS = "answers"

    def __init__(self, image_size: int):
        self.image_size = image_size

    def process(self, item):
        sha, grouped = item
        doc_ids = sorted(set(grouped["refs"]))
        records: list[ImageRecord] = list(grouped["images"])
        self.funnel.inc("images", "in", len(records))
        usable = [r for r in records if r.status == STATUS_OK and r.data]
        self.funnel.drop("images", "not_stored", len(records) - len(usable))
        if len(usable) > 1:  # the store is keyed by sha256: equal bytes, keep one
            self.funnel.drop("images", "duplicate", len(usable) - 1)
        if not doc_ids:
            self.funnel.drop("images", "unreferenced", min(1, len(usable)))
            return
        if not usable:
            for d in doc_ids:
                yield beam.pvalue.TaggedOutput(self.ANSWERS, (d, (sha, None, SKIP_IMAGE_MISSING)))
            return
        try:
            tensor = image_to_tensor(decode(usable[0].data), self.image_size)
        except ImageDecodeError as e:
            log.debug("image %s does not decode: %s", sha[:12], e)
            self.funnel.drop("images", "undecodable")
            for d in doc_ids:
                yield beam.pvalue.TaggedOutput(self.ANSWERS, (d, (sha, None, SKIP_IMAGE_UNDECODABLE)))
            return
        yield (sha, doc_ids), tensor


class _Encoded(CountingDoFn):
    """RunInference results ((sha, doc_ids), codes) to (doc_id, (sha, codes, None)) answers."""

    stage = STAGE

    def process(self, item):
        (sha, doc_ids), codes = item
        self.funnel.inc("images", "out")
        for d in doc_ids:
            yield d, (sha, codes, None)


class _FailedBatch(CountingDoFn):
    """A batch RunInference could not encode, (batch, exception): every image in it is a counted failure."""

    stage = STAGE

    def process(self, item):
        batch, error = item
        log.warning("image tokenizer inference failed on a batch of %d images: %s", len(batch), error)
        for (sha, doc_ids), _ in batch:
            self.funnel.drop("images", "inference_error")
            for d in doc_ids:
                yield d, (sha, None, SKIP_IMAGE_INFERENCE)


class _EncodeDocuments(CountingDoFn):
    """(doc_id, {"docs": [Document], "codes": [(sha, codes | None, reason | None)]}) -> (doc_id, tokens)."""

    stage = STAGE

    def __init__(self, vocab: Vocabulary, text_path: str, text_sha256: str, max_length: int | None):
        self.vocab, self.text_path = vocab, text_path
        self.text_sha256, self.max_length = text_sha256, max_length

    def setup(self):
        super().setup()
        text = TextTokenizer.load(self.text_path)
        if text.sha256 != self.text_sha256:
            raise ValueError(f"text tokenizer {self.text_path} changed since the pipeline started (sha256 "
                             f"{text.sha256[:12]}, expected {self.text_sha256[:12]}); rerun the stage")
        self.codec = SequenceCodec(self.vocab, text)

    def process(self, item):
        _, grouped = item
        codes, failures = {}, {}
        for sha, c, reason in grouped["codes"]:
            if c is not None:
                codes[sha] = c
            else:
                failures[sha] = reason
        for doc in grouped["docs"]:
            yield from self._encode(doc, codes, failures)

    def _encode(self, doc: Document, codes: dict, failures: dict):
        f = self.funnel
        f.inc("documents", "in")
        if not doc.kept:
            f.drop("documents", "not_kept")
            return
        kept = [n for n in doc.nodes if n.kept]
        f.inc("nodes", "in", len(kept))
        for n in kept:  # why each left-out node is left out (the codec only knows "missing")
            if n.is_text and not n.text:
                f.drop("nodes", SKIP_EMPTY_TEXT)
            elif n.is_image and not n.image_sha256:
                f.drop("nodes", SKIP_IMAGE_UNRESOLVED)
            elif n.is_image and n.image_sha256 not in codes:
                f.drop("nodes", failures.get(n.image_sha256, SKIP_IMAGE_MISSING))
        # codes are keyed by sha256 only: a node without one is unresolved, never matched by URL here
        tokens, report = self.codec.encode_counted(doc, codes)
        written = report.text_nodes + report.image_nodes
        f.inc("nodes", "out", written)
        if not written:
            f.drop("documents", "empty")
            return
        f.inc("documents", "out")
        f.inc("tokens", "image", report.image_nodes * self.codec.codes_per_image)
        f.inc("tokens", "text", sum(1 for t in tokens if t >= self.vocab.text_offset))
        if self.max_length is None or len(tokens) <= self.max_length:
            yield doc.doc_id, tokens
            return
        pieces = self.codec.split(tokens, self.max_length)
        f.inc("documents", "split", len(pieces) - 1)
        for k, piece in enumerate(pieces):
            yield f"{doc.doc_id}:{k}", piece


class Tokenize(beam.PTransform):
    """(documents, images) -> (doc_id, tokens) rows. documents: kept Documents whose image nodes carry
    image_sha256; images: the image store's ImageRecords. Pass a tuple or {"documents": .., "images": ..}."""

    def __init__(self, config: TokenizeConfig, tokenizers: TokenizerSet | None = None):
        super().__init__()
        config.validate()
        self.config = config
        self.tokenizers = tokenizers or TokenizerSet.read(config)
        if config.max_length is not None:
            SequenceCodec(self.tokenizers.vocabulary, None).split([], config.max_length)  # validates it

    def shard_info(self) -> TokenShardInfo:
        """The metadata of the token shards this transform's rows belong in (for WriteTokens)."""
        return self.tokenizers.shard_info(self.config)

    def expand(self, inputs):
        if isinstance(inputs, dict):
            documents, images = inputs["documents"], inputs["images"]
        else:
            documents, images = inputs
        c, t = self.config, self.tokenizers
        # (sha256, doc_id): the images each kept document uses, once per document
        refs = documents | "ImageRefs" >> beam.FlatMap(_image_refs)
        # (sha256, ImageRecord) for the store's rows that have bytes' hash
        keyed_images = (images | "StoredOnly" >> beam.Filter(lambda r: r.sha256 is not None)
                        | "KeyImagesBySha" >> beam.Map(lambda r: (r.sha256, r)))
        # store rows without a sha256 (failed fetches) are counted as they pass
        _ = images | "CountUnstored" >> beam.ParDo(_CountUnstored())
        # ((sha256, doc_ids), tensor) to encode, and (doc_id, (sha256, None, reason)) for images that
        # cannot be
        joined = ({"refs": refs, "images": keyed_images} | "GroupBySha" >> beam.CoGroupByKey()
                  | "JoinImages" >> beam.ParDo(_JoinImages(t.image.image_size)).with_outputs(
                      _JoinImages.ANSWERS, main="encode"))
        handler = KeyedModelHandler(ImageTokenizerHandler(
            c.image_tokenizer, expected_sha256=t.image_sha256, device=c.device, num_threads=c.num_threads,
            min_batch_size=c.batch_min, max_batch_size=c.max_batch_size))
        # ((sha256, doc_ids), flat codes), and the batches that failed
        encoded, failed = (joined.encode | "EncodeImages" >> RunInference(handler).with_exception_handling())
        # (doc_id, (sha256, codes | None, reason | None)): every image reference answered
        answers = ((encoded | "Encoded" >> beam.ParDo(_Encoded()),
                    failed.failed_inferences | "FailedBatches" >> beam.ParDo(_FailedBatch()),
                    joined[_JoinImages.ANSWERS])
                   | "FlattenAnswers" >> beam.Flatten())
        # (doc_id, Document)
        keyed_docs = documents | "KeyDocsById" >> beam.Map(lambda d: (d.doc_id, d))
        # (doc_id, tokens)
        return ({"docs": keyed_docs, "codes": answers} | "GroupByDoc" >> beam.CoGroupByKey()
                | "EncodeDocuments" >> beam.ParDo(_EncodeDocuments(t.vocabulary, c.text_tokenizer,
                                                                   t.text_sha256, c.max_length)))


class _CountUnstored(CountingDoFn):
    stage = STAGE

    def process(self, record: ImageRecord):
        if record.sha256 is None:
            self.funnel.inc("images", "in")
            self.funnel.drop("images", "not_stored")
        return []


# ---------------------------------------------------------------- token shards


class _TokenTable:
    """rows -> Arrow table with the token schema of `info` (a picklable callable for WriteShards)."""

    def __init__(self, info: TokenShardInfo):
        self.info = info

    def __call__(self, rows: list[tuple[str, list[int]]]):
        return tokens_to_table(rows, self.info)


def _row_key(row) -> str:
    return row[0]


class WriteTokens(beam.PTransform):
    """(doc_id, tokens) rows to token shards under `directory` (uint16 ids when the vocabulary fits)."""

    def __init__(self, directory: str, info: TokenShardInfo, num_shards: int = 1):
        super().__init__()
        self.directory, self.info, self.num_shards = directory, info, num_shards

    def expand(self, rows):
        return rows | "WriteTokenShards" >> WriteShards(self.directory, _TokenTable(self.info), _row_key,
                                                        num_shards=self.num_shards)


def tokenize_stage(pipeline: beam.Pipeline, *, documents: str, images: str, out: str,
                   config: TokenizeConfig) -> beam.PCollection:
    """Read document shards and an image store, tokenize, write token shards under `out`.
    Returns the (path, rows) PCollection of the written shards."""
    tokenizers = TokenizerSet.read(config)
    # Document, ImageRecord
    docs = pipeline | "ReadDocuments" >> ReadShards(documents, DOCUMENT_SCHEMA, documents_from_table)
    store = pipeline | "ReadImages" >> ReadShards(images, IMAGE_SCHEMA, images_from_table)
    tokenize = Tokenize(config, tokenizers)
    # (doc_id, tokens)
    rows = (docs, store) | "Tokenize" >> tokenize
    return rows | "WriteTokens" >> WriteTokens(out, tokenize.shard_info(), config.num_shards)


class TokenizeStage(Stage):
    """The tokenize stage: the run's curated documents and image store to token shards in DIR/tokens/.
    Documents and images pass through unchanged. The accelerator resource hint, when given, applies to the
    encoding step (the image tokenizer), not to the writing."""

    name, label, units = "tokenize", "Tokenize", ("documents", "nodes", "images", "tokens")

    def __init__(self, config: TokenizeConfig, directory: str, accelerator: str | None = None):
        super().__init__()
        self.config, self.directory, self.accelerator = config, directory, accelerator

    @classmethod
    def validate(cls, config) -> None:
        if config.tokenize is None:
            raise ValueError("the tokenize stage needs --text-tokenizer FILE and --image-tokenizer FILE "
                             "(interleaf train-text-tokenizer / train-image-tokenizer)")
        config.tokenize.validate()
        for path in (config.tokenize.text_tokenizer, config.tokenize.image_tokenizer):
            if not storage.exists(path):
                raise ValueError(f"tokenizer file {path} does not exist")

    @classmethod
    def create(cls, config, context: RunContext) -> TokenizeStage:
        return cls(config.tokenize, storage.join(context.output, "tokens"), config.tokenize_accelerator)

    def expand(self, streams):
        docs, images = streams[DOCUMENTS], streams[IMAGES]
        encode = Tokenize(self.config)
        info = encode.shard_info()
        if self.accelerator:
            encode = encode.with_resource_hints(accelerator=self.accelerator)
        # (doc_id, tokens)
        rows = {DOCUMENTS: docs, IMAGES: images} | "Encode" >> encode
        _ = rows | "WriteTokens" >> WriteTokens(self.directory, info, self.config.num_shards)
        return outputs(docs.pipeline, documents=docs, images=images)
