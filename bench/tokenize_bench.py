"""Tokenize stage throughput: the Beam stage (document shards and an image store read, joins in the engine,
VQ through RunInference, token shards written) against a plain Python loop over the same tokenizers doing the
same work (read the same shards, decode each used image once, encode in batches of the same size, encode the
documents, write one token shard).

    .venv/bin/python bench/tokenize_bench.py [--docs 400] [--repeats 2]

Prints a table and writes section "tokenize" of bench/RESULTS.md. Both sides run with torch on one thread,
so the ratio measures the engine's overhead (and, with --direct_num_workers 2, its parallelism).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import os
import random
import sys
import tempfile
import time

import torch
from PIL import Image
from results import table, write_section  # bench/ is sys.path[0] when run as a script

from interleaf.pipelines.common import create_pipeline, pipeline_options
from interleaf.pipelines.tokenize import TokenizeConfig, TokenizerSet, tokenize_stage
from interleaf.schemas.document import Document, Node, documents_from_table, documents_to_table
from interleaf.schemas.image import ImageRecord, images_from_table, images_to_table
from interleaf.schemas.tokens import tokens_to_table
from interleaf.shapes import caption, random_scene, render
from interleaf.shards import open_shards, read_shard, write_shard, write_shards
from interleaf.tokenizers.codec import SequenceCodec
from interleaf.tokenizers.image import image_to_tensor
from interleaf.tokenizers.text_bpe import TextTokenizer
from interleaf.tokenizers.vq import VQModel, load_vq, save_vq, vq_preset

BATCH = 64
SHARD = "part-00000-of-00001.arrow"


def corpus(n_docs: int, seed: int = 0):
    """Documents of 1-3 shape images, each new one with 2-4 captions; a quarter of the images are shared
    between documents."""
    rng = random.Random(seed)
    store: list[ImageRecord] = []
    docs = []
    for i in range(n_docs):
        nodes = []
        for _ in range(rng.randint(1, 3)):
            if store and rng.random() < 0.25:
                rec = rng.choice(store)
            else:
                buf = io.BytesIO()
                scene = random_scene(rng, rng.choice([1, 2]))
                render(scene).save(buf, "PNG")
                data = buf.getvalue()
                rec = ImageRecord(sha256=hashlib.sha256(data).hexdigest(), urls=[f"http://i/{len(store)}"],
                                  data=data, format="png")
                store.append(rec)
                captions = [caption(scene, t) + "." for t in range(rng.randint(2, 4))]
                nodes.append(Node.text_node(" ".join(captions)))
            nodes.append(Node(kind="image", image_url=rec.urls[0], image_sha256=rec.sha256))
        docs.append(Document(doc_id=f"doc-{i:05d}", url=f"http://d/{i}", nodes=nodes))
    uniq = {r.sha256: r for r in store}
    return docs, list(uniq.values())


def plain_loop(inputs: str, config: TokenizeConfig, out: str) -> int:
    """The same work without Beam; returns image tokens written."""
    torch.set_num_threads(1)
    docs = documents_from_table(read_shard(os.path.join(inputs, "documents", SHARD)))
    store = images_from_table(read_shard(os.path.join(inputs, "images", SHARD)))
    vq = load_vq(config.image_tokenizer)
    codec = SequenceCodec.build(TextTokenizer.load(config.text_tokenizer), vq)
    by_sha = {r.sha256: r for r in store}
    wanted = sorted({n.image_sha256 for d in docs for n in d.nodes
                     if n.is_image and n.image_sha256 in by_sha})
    codes: dict[str, list[int]] = {}
    for i in range(0, len(wanted), BATCH):
        shas = wanted[i:i + BATCH]
        tensors = []
        for sha in shas:
            with Image.open(io.BytesIO(by_sha[sha].data)) as img:
                tensors.append(image_to_tensor(img, vq.config.image_size))
        for sha, c in zip(shas, vq.encode(torch.stack(tensors))):
            codes[sha] = c.flatten().tolist()
    rows, image_tokens = [], 0
    for d in docs:
        tokens, report = codec.encode_counted(d, codes)
        image_tokens += report.image_nodes * codec.codes_per_image
        rows.append((d.doc_id, tokens))
    info = TokenizerSet.read(config).shard_info(config)
    write_shard(os.path.join(out, "part-00000-of-00001.arrow"), tokens_to_table(sorted(rows), info))
    return image_tokens


def beam_stage(inputs: str, config: TokenizeConfig, out: str, args: list[str]) -> None:
    p = create_pipeline(pipeline_options(args))
    tokenize_stage(p, documents=os.path.join(inputs, "documents"), images=os.path.join(inputs, "images"),
                   out=out, config=config)
    p.run().wait_until_finish()


def _rows(directory: str) -> list[tuple[str, list[int]]]:
    table = open_shards(directory).read()
    return sorted(zip(table["doc_id"].to_pylist(), table["tokens"].to_pylist()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1500, help="documents in the synthetic corpus")
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs per configuration")
    parser.add_argument("--no-write", action="store_true", help="print only, do not touch RESULTS.md")
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in ("apache_beam", "__main__"):  # worker processes log every bundle at INFO
        logging.getLogger(name).setLevel(logging.WARNING)

    tmp = tempfile.mkdtemp(prefix="tokenize-bench-")
    docs, store = corpus(a.docs)
    inputs = os.path.join(tmp, "inputs")
    write_shards(os.path.join(inputs, "documents"), [documents_to_table(docs)])
    write_shards(os.path.join(inputs, "images"), [images_to_table(store)])
    text = TextTokenizer.train([d.text() for d in docs], vocab_size=1000)
    text.save(os.path.join(tmp, "tokenizer.json"))
    torch.manual_seed(0)
    save_vq(VQModel(vq_preset("tiny")), os.path.join(tmp, "vq.pt"))  # throughput does not depend on training
    config = TokenizeConfig(text_tokenizer=os.path.join(tmp, "tokenizer.json"),
                            image_tokenizer=os.path.join(tmp, "vq.pt"), max_batch_size=BATCH, num_threads=1)
    n_refs = sum(1 for d in docs for n in d.nodes if n.is_image)

    def best(fn) -> tuple[float, str]:
        times, out = [], ""
        for _ in range(a.repeats):
            out = os.path.join(tmp, f"out-{time.monotonic_ns()}")
            os.makedirs(out)
            t = time.perf_counter()
            fn(out)
            times.append(time.perf_counter() - t)
        return min(times), out

    image_tokens = plain_loop(inputs, config, os.path.join(tmp, "warm"))  # warm caches, count tokens
    multi = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    runs = [("plain loop (1 process)", best(lambda out: plain_loop(inputs, config, out))),
            ("Beam stage, FnApiRunner, 1 worker", best(lambda out: beam_stage(inputs, config, out, []))),
            ("Beam stage, FnApiRunner, 2 worker processes",
             best(lambda out: beam_stage(inputs, config, out, multi)))]
    reference = _rows(runs[0][1][1])
    for name, (_, out) in runs[1:]:
        if _rows(out) != reference:
            raise SystemExit(f"{name} wrote other tokens than the plain loop: a bug, not a benchmark result")
    loop_s = runs[0][1][0]
    rows = [[name, s, len(docs) / s, image_tokens / s, loop_s / s] for name, (s, _) in runs]
    headers = ["configuration", "seconds", "documents/s", "image tokens/s", "speed vs loop"]
    body = (f"{len(docs)} documents, {len(store)} unique 32x32 images ({n_refs} image nodes, "
            f"{image_tokens} image tokens), tiny VQ (8x8 codes of 256), byte-level BPE of "
            f"{text.vocab_size} tokens; torch on 1 thread, RunInference batches of {BATCH}; best of "
            f"{a.repeats}. Both sides read the same document shard and image store shard and write a token "
            "shard; the outputs are checked equal. Beam times include pipeline start-up (worker processes "
            "each import torch and load the tokenizers) and the two shuffles (images by sha256, codes back "
            "to documents by doc_id).\n\n"
            + table(headers, rows))
    print(body)
    if not a.no_write:
        write_section("tokenize", "Tokenize stage throughput", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
