"""Main-text quality and speed of interleaf's extraction against trafilatura and resiliparse, on the
article-extraction benchmark's 181 real pages with their human-written article bodies (issue 17).

    .venv/bin/python bench/extraction_bench.py [--dir DIR]

DIR: the benchmark's folder (html/<id>.html.gz, ground-truth.json); default tests/data/extraction, a copy
of scrapinghub/article-extraction-benchmark (tests/data/SOURCES.md).

The metric is the benchmark's own (scrapinghub/article-extraction-benchmark, evaluate.py, re-implemented
here): the text is split into \\w+ tokens, both texts into 4-token shingles; per page true positives, false
positives and false negatives are counted over shingles and normalised to sum 1; precision and recall are
the means over pages (a page without predicted shingles left out of precision), F1 their harmonic mean.
Speed is pages per CPU-second (process time, one thread) of each tool's work on the page's bytes: for
interleaf, what ingest does per page (charset decode, extraction, the document quality rules); for
trafilatura 2.0.0 (the version of the benchmark's published F1, 0.958) `extract()`, for resiliparse
`extract_plain_text(main_content=True)` (each decodes the bytes itself). trafilatura is a development
dependency (the `bench` extra: `.venv/bin/pip install trafilatura==2.0.0`), not a runtime one. Writes
the "extraction" section of bench/RESULTS.md, with interleaf's ten weakest pages.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import table, write_section  # noqa: E402

from interleaf.filters.quality import apply as apply_quality  # noqa: E402
from interleaf.pipelines.ingest import IngestConfig, page_to_document  # noqa: E402
from interleaf.readers.warc import PAGE, WarcItem  # noqa: E402

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "extraction"
_TOKEN = re.compile(r"\w+", re.UNICODE)


# ---------------------------------------------------------------- the benchmark's metric


def _shingles(text: str, n: int = 4) -> Counter:
    tokens = _TOKEN.findall(text or "")
    return Counter(tuple(tokens[i:i + n]) for i in range(max(1, len(tokens) - n + 1)) if tokens[i:i + n])


def tp_fp_fn(true: str, pred: str) -> tuple[float, float, float]:
    t, p = _shingles(true), _shingles(pred)
    tp = sum((t & p).values())
    fp = sum((p - t).values())
    fn = sum((t - p).values())
    s = tp + fp + fn
    return (tp / s, fp / s, fn / s) if s else (0.0, 0.0, 0.0)


def _precision(tp, fp, fn) -> float:
    return 1.0 if fp == fn == 0 else 0.0 if tp == fp == 0 else tp / (tp + fp)


def _recall(tp, fp, fn) -> float:
    return 1.0 if fp == fn == 0 else 0.0 if tp == fn == 0 else tp / (tp + fn)


def scores(counts: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    precision = statistics.mean(_precision(*c) for c in counts if c[0] + c[1] > 0)
    recall = statistics.mean(_recall(*c) for c in counts if c[0] + c[2] > 0)
    return 2 * precision * recall / (precision + recall), precision, recall


# ---------------------------------------------------------------- the tools


def interleaf_text(body: bytes, url: str, config: IngestConfig) -> str:
    item = WarcItem(kind=PAGE, url=url, date=None, source_file="bench", offset=0, payload_digest=None,
                    content_type="text/html", body=body)
    doc, _ = page_to_document(item, config.extract)
    apply_quality(doc, config.quality)  # timed with the extraction, as ingest does it; the text is the
    return "\n".join(n.text for n in doc.nodes if n.is_text and n.text)  # extraction's, whatever it decides


def trafilatura_text(body: bytes, url: str) -> str:
    import trafilatura
    return trafilatura.extract(body, url=url) or ""


def resiliparse_text(body: bytes, url: str) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    from resiliparse.parse.html import HTMLTree
    return extract_plain_text(HTMLTree.parse(bytes_to_str(body, detect_encoding(body))), main_content=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help="the benchmark: html/<id>.html.gz and ground-truth.json")
    args = parser.parse_args()
    if not (args.dir / "ground-truth.json").exists():
        sys.exit(f"no ground-truth.json in {args.dir}: give --dir (the article-extraction benchmark's "
                 "folder)")
    truth = json.loads((args.dir / "ground-truth.json").read_text(encoding="utf-8"))
    pages = {key: gzip.decompress((args.dir / "html" / f"{key}.html.gz").read_bytes())
             for key in sorted(truth)}
    config = IngestConfig()
    no_captions = dataclasses.replace(config, extract=dataclasses.replace(config.extract, drop_captions=True))
    tools = {"interleaf": lambda body, url: interleaf_text(body, url, config),
             "interleaf, drop_captions": lambda body, url: interleaf_text(body, url, no_captions),
             "trafilatura 2.0.0": trafilatura_text, "resiliparse": resiliparse_text}
    rows, per_page = [], {}
    for name, fn in tools.items():
        fn(pages[next(iter(pages))], "http://warm.up/")  # imports and first-call set-up out of the timing
        counts, cpu = [], 0.0
        for key, body in pages.items():
            start = time.process_time()
            text = fn(body, truth[key]["url"])
            cpu += time.process_time() - start
            counts.append(tp_fp_fn(truth[key]["articleBody"], text))
            if name == "interleaf":
                per_page[key] = counts[-1]
        f1, precision, recall = scores(counts)
        rows.append([name, round(f1, 3), round(precision, 3), round(recall, 3),
                     round(len(pages) / cpu, 1)])
        print(rows[-1], flush=True)
    def f1(c):
        return 2 * c[0] / (2 * c[0] + c[1] + c[2]) if any(c) else 0.0

    weakest = sorted(per_page.items(), key=lambda kv: f1(kv[1]))[:10]
    worst = [[key[:16], truth[key]["url"][:70], round(_precision(*c), 2), round(_recall(*c), 2)]
             for key, c in weakest]
    body = (table(["extractor", "F1", "precision", "recall", "pages per CPU-second"], rows)
            + f"\n\n{len(pages)} pages of scrapinghub/article-extraction-benchmark, scored with its own "
              "metric (4-token shingles, per-page normalised, means over pages). Published there: "
              "trafilatura 2.0.0 0.958, readability.js 0.947, go-domdistiller 0.927. \"drop_captions\": "
              "[ingest.extract] drop_captions = true, figure captions left out (the benchmark's article "
              "bodies leave them out; the default keeps them beside their images). interleaf's time is "
              "what ingest does per "
              "page (charset decode, extraction, the document quality rules); one thread, process time.\n\n"
              "interleaf's ten weakest pages (precision low: boilerplate kept; recall low: article text "
              "lost):\n\n"
            + table(["page", "url", "precision", "recall"], worst))
    print(body)
    write_section("extraction", "Extraction: main text against the article-extraction benchmark "
                                "(bench/extraction_bench.py)", body)


if __name__ == "__main__":
    main()
