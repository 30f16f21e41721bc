"""docs/architecture.md's "where to add", done here: a document filter, an input format and an image
tokenizer, each written in this one file and plugged in the way the page says (one STAGE_ORDER entry, one
`readers.register`, one `tokenizers.image.register`), then run through `interleaf run` on Beam's runner."""

import hashlib
import io
import json
from urllib.parse import urlsplit

import apache_beam as beam
import pytest
import torch
from PIL import Image

from interleaf import readers
from interleaf.pipelines import run as run_module
from interleaf.pipelines.common import DecisionDoFn
from interleaf.pipelines.run import RunConfig, run
from interleaf.pipelines.stage import DOCUMENTS, IMAGES, REJECTED, Stage, outputs
from interleaf.readers import RowFormat
from interleaf.schemas.document import Document, Node, documents_from_table, documents_to_table, make_doc_id
from interleaf.schemas.image import ImageRecord, images_to_table
from interleaf.shards import open_shards, write_shards
from interleaf.storage import file_sha256
from interleaf.tokenizers import image as image_tokenizers
from interleaf.tokenizers.image import ImageTokenizerInfo, ImageTokenizerKind
from interleaf.tokenizers.text_bpe import TextTokenizer

# ---------------------------------------------------------------- an input format: one converter


def from_pages(row: dict, *, source_file: str, row_number: int) -> Document:
    """A row {"page_url": str, "blocks": [{"text": str} | {"img": str}]} to a Document."""
    url = row["page_url"]
    if not isinstance(url, str) or not isinstance(row["blocks"], list):
        raise TypeError("page_url must be a string and blocks a list")
    nodes = [Node.text_node(b["text"]) if "text" in b else Node.image_node(b["img"]) for b in row["blocks"]]
    return Document(doc_id=make_doc_id(url, nodes), url=url, nodes=nodes,
                    meta={"source_file": source_file, "row": row_number})


PAGES = RowFormat("pages", f"{__name__}:from_pages", frozenset({"page_url", "blocks"}))

# ---------------------------------------------------------------- a document filter: one stage


class _Blocked(DecisionDoFn):
    stage, unit = "blocked_domains", "documents"

    def __init__(self, domains: frozenset[str]):
        self.domains = domains

    def decide(self, doc: Document) -> str | None:
        host = (urlsplit(doc.url).hostname or "").lower()
        return "blocked_domain" if any(host == d or host.endswith("." + d) for d in self.domains) else None


class BlockedDomainsStage(Stage):
    name, label, units = "blocked_domains", "BlockedDomains", ("documents",)
    domains = frozenset({"blocked.example"})

    @classmethod
    def enabled(cls, stages):
        return "ingest" in stages

    @classmethod
    def create(cls, config, context):
        return cls()

    def expand(self, streams):
        parts = streams[DOCUMENTS] | "Decide" >> beam.ParDo(_Blocked(self.domains)).with_outputs(
            REJECTED, main="kept")
        return outputs(parts.kept.pipeline, documents=parts.kept, images=streams[IMAGES],
                       rejected=parts[REJECTED])


@pytest.fixture
def plugged(monkeypatch):
    """The filter after dedup in the run's order, and the input format registered; both undone after."""
    order = list(run_module.STAGE_ORDER)
    at = order.index(("dedup", "interleaf.pipelines.dedup", "DedupDocumentsStage")) + 1
    order.insert(at, ("blocked_domains", __name__, "BlockedDomainsStage"))
    monkeypatch.setattr(run_module, "STAGE_ORDER", tuple(order))
    monkeypatch.setitem(readers.ROW_FORMATS, PAGES.name, PAGES)


TEXT = ["The river floods every spring and the town has learned to live with the water rising.",
        "Boats replace bicycles for a week, and the bakery delivers bread from a small green rowing boat.",
        "Old maps show the river in another bed, two streets further east than where it runs today.",
        "The new observatory opened on the hill last winter, with a telescope built by local students.",
        "On clear nights the dome turns slowly, and visitors queue on the gravel path to see Saturn.",
        "A retired teacher keeps the logbook, where every comet and meteor shower since 1990 is written."]


def test_an_added_input_format_and_filter_run_end_to_end(tmp_path, plugged):
    hosts = ["news.example", "www.blocked.example", "blog.example"]
    rows = [{"page_url": f"http://{host}/story-{i}", "blocks": [{"text": t} for t in TEXT[2 * i:2 * i + 2]]}
            for i, host in enumerate(hosts)]
    path = tmp_path / "crawl.jsonl"  # no format in the name: told by the first row's keys
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n" + '{"page_url": 5, "blocks": []}\n')
    assert readers.detect_format(str(path)) == "pages" and "pages" in readers.formats()

    cfg = RunConfig(stages=["ingest", "dedup"])
    cfg.ingest.quality.min_images, cfg.ingest.quality.min_words = 0, 20
    m = run([str(path)], str(tmp_path / "out"), cfg)

    assert m["unreconciled"] == []
    assert m["funnel"]["ingest"]["documents"]["dropped"] == {"bad_row": 1}
    assert m["funnel"]["blocked_domains"]["documents"] == {"in": 3, "out": 2,
                                                           "dropped": {"blocked_domain": 1}}
    kept = documents_from_table(open_shards(str(tmp_path / "out" / "documents")).read())
    rejected = documents_from_table(open_shards(str(tmp_path / "out" / "rejected")).read())
    assert sorted(urlsplit(d.url).hostname for d in kept) == ["blog.example", "news.example"]
    assert [(d.url, d.reason) for d in rejected] == [("http://www.blocked.example/story-1", "blocked_domain")]


# ---------------------------------------------------------------- an image tokenizer: one kind


class ColourGrid:
    """Each cell of a grid x grid split of the image becomes its mean colour, `levels` steps per channel."""

    def __init__(self, grid: int, levels: int, image_size: int, fingerprint: str):
        self.grid, self.levels = (grid, grid), levels
        self.image_size, self.fingerprint = image_size, fingerprint
        self.codebook_size = levels ** 3

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        cells = torch.nn.functional.adaptive_avg_pool2d(images, self.grid)  # (B, 3, g, g) in [-1, 1]
        q = ((cells + 1) / 2 * self.levels).long().clamp(0, self.levels - 1)
        return q[:, 0] * self.levels ** 2 + q[:, 1] * self.levels + q[:, 2]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        q = torch.stack([codes // self.levels ** 2, codes // self.levels % self.levels, codes % self.levels], 1)
        cells = (q.float() + 0.5) / self.levels * 2 - 1
        return torch.nn.functional.interpolate(cells, size=(self.image_size, self.image_size), mode="nearest")


def read_colour_grid(path: str, ckpt: dict) -> ImageTokenizerInfo:
    g, levels, size = ckpt["grid"], ckpt["levels"], ckpt["image_size"]
    return ImageTokenizerInfo(kind="test.colourgrid", grid=(g, g), codebook_size=levels ** 3,
                              image_size=size, fingerprint=file_sha256(path),
                              config={"grid": g, "levels": levels, "image_size": size})


def load_colour_grid(path: str, device="cpu") -> ColourGrid:
    info = image_tokenizers.read_info(path)
    return ColourGrid(info.grid[0], info.config["levels"], info.image_size, info.fingerprint)


COLOUR_GRID = ImageTokenizerKind("test.colourgrid", f"{__name__}:read_colour_grid",
                                 f"{__name__}:load_colour_grid")


def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, "PNG")
    return buf.getvalue()


def test_an_added_image_tokenizer_tokenizes_a_run(tmp_path, monkeypatch):
    from interleaf.pipelines.tokenize import TokenizeConfig
    from interleaf.tokenizers.preview import load_preview

    monkeypatch.setitem(image_tokenizers.KINDS, COLOUR_GRID.name, COLOUR_GRID)
    tok_path = str(tmp_path / "colourgrid.pt")
    torch.save({"format": "test.colourgrid", "grid": 2, "levels": 4, "image_size": 16}, tok_path)
    tokenizer = image_tokenizers.load(tok_path)
    assert isinstance(tokenizer, image_tokenizers.ImageTokenizer) and tokenizer.codebook_size == 64
    text = TextTokenizer.train(TEXT * 3, vocab_size=300)
    text.save(str(tmp_path / "tokenizer.json"))

    red, blue = _png((250, 10, 10)), _png((10, 10, 250))
    store = [ImageRecord(sha256=hashlib.sha256(b).hexdigest(), urls=[f"http://i/{n}.png"],
                         width=32, height=32, format="png", data=b, source="fetch")
             for n, b in (("red", red), ("blue", blue))]
    red_node, blue_node = (Node(kind="image", image_url=r.urls[0], image_sha256=r.sha256) for r in store)
    docs = [Document(doc_id="d", url="http://d/", nodes=[Node.text_node(TEXT[0]), red_node,
                                                          Node.text_node(TEXT[1])]),
            Document(doc_id="e", url="http://e/", nodes=[blue_node, Node.text_node(TEXT[2])])]
    write_shards(str(tmp_path / "in" / "documents"), [documents_to_table(docs)])
    write_shards(str(tmp_path / "in" / "images"), [images_to_table(store)])

    cfg = RunConfig(stages=["tokenize"], tokenize=TokenizeConfig(
        text_tokenizer=str(tmp_path / "tokenizer.json"), image_tokenizer=tok_path, num_threads=1))
    m = run([str(tmp_path / "in" / "documents")], str(tmp_path / "out"), cfg)
    assert m["unreconciled"] == [] and m["funnel"]["tokenize"]["images"]["out"] == 2

    shards = open_shards(str(tmp_path / "out" / "tokens"))
    info = shards.token_info
    assert info.config["image_tokenizer"] == {"kind": "test.colourgrid", "grid": 2, "levels": 4,
                                              "image_size": 16}
    assert info.tokenizers["image"] == tokenizer.fingerprint
    preview = load_preview(info, text=str(tmp_path / "tokenizer.json"), image=tok_path)
    table = shards.read()
    rows = dict(zip(table["doc_id"].to_pylist(), table["tokens"].to_pylist(), strict=True))
    [(kind, codes)] = [p for p in preview.codec.decode(rows["e"], strict=False) if p[0] == "image"]
    decoded = preview.vq.decode(torch.tensor([codes]))[0]  # the blue image comes back blue
    assert decoded[2].mean() > 0.5 and decoded[0].mean() < -0.5
