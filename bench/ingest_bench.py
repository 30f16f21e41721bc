"""Ingest throughput: pages/s through the Beam ingest stage against a plain loop over the same WARC with the
same reader, extractor and filters (the ratio is the engine's overhead), plus the record rate of the two
WARC libraries considered (FastWARC, warcio) on the same file.

    .venv/bin/python bench/ingest_bench.py [--copies 40]

The input is the dolma sample WARC (22 real pages) concatenated `copies` times into one WARC.gz (gzip
members concatenate into a valid multi-member file).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import table, write_section  # noqa: E402

from interleaf.filters.blocklist import load_blocklist  # noqa: E402
from interleaf.pipelines.ingest import filter_document, page_to_document  # noqa: E402
from interleaf.pipelines.run import RunConfig, run  # noqa: E402
from interleaf.readers.warc import PAGE, WarcItem, iter_warc  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "warc" / "dolma-sample-0000.warc.gz"


def plain_loop(path: str, config: RunConfig) -> tuple[int, float]:
    """The same work as the stage, in one Python loop: read, extract (TDM reservations read), filter (the
    blocklist, language identification and quality rules, as the stage's filter_document)."""
    start = time.perf_counter()
    kept = 0
    ingest = config.ingest
    token = config.fetch.fetch.user_agent_token if ingest.respect_tdm else None
    blocklist = load_blocklist(config.blocklist) if config.blocklist.active else None
    with open(path, "rb") as f:
        for item in iter_warc(f, os.path.basename(path)):
            if isinstance(item, WarcItem) and item.kind == PAGE and not item.revisit:
                doc, _ = page_to_document(item, ingest.extract, token)
                kept += filter_document(doc, ingest.quality, ingest.language, blocklist).kept
    return kept, time.perf_counter() - start


def record_rate(path: str) -> tuple[float, float]:
    from fastwarc.warc import ArchiveIterator
    from warcio.archiveiterator import ArchiveIterator as WarcioIterator

    start = time.perf_counter()
    n = sum(1 for rec in ArchiveIterator(path, parse_http=True, fsspec_args=False) if rec.reader.read() is not None)
    fast = n / (time.perf_counter() - start)
    start = time.perf_counter()
    with open(path, "rb") as f:
        m = sum(1 for rec in WarcioIterator(f) if rec.content_stream().read() is not None)
    slow = m / (time.perf_counter() - start)
    assert n == m, (n, m)
    return fast, slow


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        warc = os.path.join(tmp, "bench.warc.gz")
        with open(warc, "wb") as f:
            data = SAMPLE.read_bytes()
            for _ in range(args.copies):
                f.write(data)
        pages = 22 * args.copies
        cfg = RunConfig(stages=["ingest"], num_shards=2)
        fast, slow = record_rate(warc)
        kept_loop, t_loop = plain_loop(warc, cfg)
        t0 = time.perf_counter()
        m1 = run([warc], os.path.join(tmp, "out1"), cfg)
        t_beam1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        m2 = run([warc], os.path.join(tmp, "out2"), cfg,
                 ["--direct_num_workers", str(args.workers), "--direct_running_mode", "multi_processing"])
        t_beam2 = time.perf_counter() - t0
        kept_beam = m1["funnel"]["ingest"]["documents"]["out"]
        assert kept_beam == kept_loop == m2["funnel"]["ingest"]["documents"]["out"], (kept_beam, kept_loop)
    rows = [
        ["plain loop (FastWARC + extract + blocklist, language, quality)", pages, round(pages / t_loop, 1), 1.0],
        ["Beam ingest stage, 1 worker (FnApiRunner)", pages, round(pages / t_beam1, 1), round(t_loop / t_beam1, 3)],
        [f"Beam ingest stage, {args.workers} processes", pages, round(pages / t_beam2, 1),
         round(t_loop / t_beam2, 3)],
    ]
    t1 = table(["what", "pages", "pages/s", "ratio vs plain loop"], rows)
    t2 = table(["WARC library", "records/s", "ratio"],
               [["FastWARC 2.0.1", round(fast), round(fast / slow, 2)], ["warcio 1.8.1", round(slow), 1.0]])
    body = (f"Input: the dolma sample WARC ({pages} pages, {args.copies} copies). Beam times include pipeline "
            f"start-up and shard writing; the plain loop writes nothing.\n\n{t1}\n\nRecord iteration with "
            f"payloads read, same file:\n\n{t2}")
    print(body)
    write_section("ingest", "Ingest (bench/ingest_bench.py)", body)


if __name__ == "__main__":
    main()
