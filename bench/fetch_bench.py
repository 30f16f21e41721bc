"""Image fetch throughput: interleaf's FetchImages against img2dataset's own download(), same URLs, one run.

A server process serves N distinct real JPEGs (crops of the photos in tests/data, 640x480, quality 90) on
127.0.0.1, spread over H ports (H hosts). Both tools fetch the same URL list and resize to the same size
and mode (img2dataset's Resizer in both), writing their output (img2dataset: parquet shards with the image
bytes; interleaf: the Arrow image store and the resolved documents). Times are wall-clock for the whole
call: img2dataset's process start-up and interleaf's pipeline construction and Beam overheads included.

What interleaf does on top, per URL: robots.txt per host, address guard, X-Robots-Tag (img2dataset too),
header-only size checks before decoding, sha256, journal, dedup and resolution of the documents. Per-host
limits are raised to --per-host-concurrency (img2dataset has none), so both tools are bounded by the same
server and CPUs.

    python bench/fetch_bench.py                # default: 1000 URLs over 8 hosts, 2 rounds, about 2-3 minutes
    python bench/fetch_bench.py --urls 5000 --beam-workers 1,2
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks for updates on import

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))


def make_jpegs(n: int, size=(640, 480), seed: int = 0) -> list[bytes]:
    """n distinct JPEGs: random crops, flips and colour shifts of the real photos in tests/data."""
    from PIL import Image, ImageOps

    sources = sorted(glob.glob(str(REPO / "tests/data/photos/*.jpg"))
                     + glob.glob(str(REPO / "tests/data/sites/*/**/*.jpg"), recursive=True))
    photos = [Image.open(p).convert("RGB") for p in sources if os.path.isfile(p)]
    rng = random.Random(seed)
    out = []
    for i in range(n):
        im = photos[i % len(photos)]
        w, h = im.size
        cw, ch = rng.randint(w * 6 // 10, w), rng.randint(h * 6 // 10, h)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        crop = im.crop((x, y, x + cw, y + ch)).resize(size)
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        shift = rng.randint(-20, 20)
        crop = Image.eval(crop, lambda v, k=shift: max(0, min(255, v + k)))
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def serve(images: list[bytes], hosts: int, ready) -> None:
    """The server process: /img/<i>.jpg on each of `hosts` ports; /robots.txt is 404 (allow all)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            try:
                body = images[int(self.path.rsplit("/", 1)[1].split(".")[0])]
                code, ctype = 200, "image/jpeg"
            except (ValueError, IndexError):
                body, code, ctype = b"not found", 404, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

        def handle_error(self, request, client_address):
            pass  # a client that went away

    ports = []
    for _ in range(hosts):
        httpd = Server(("127.0.0.1", 0), Handler)
        ports.append(httpd.server_address[1])
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    ready.put(ports)
    threading.Event().wait()


def run_img2dataset(urls: list[str], workdir: str, args) -> tuple[float, int]:
    from img2dataset import download

    url_file = os.path.join(workdir, "urls.txt")
    with open(url_file, "w") as f:
        f.write("\n".join(urls) + "\n")
    out = os.path.join(workdir, "img2dataset")
    start = time.perf_counter()
    download(url_list=url_file, image_size=args.image_size, output_folder=out, processes_count=args.processes,
             thread_count=args.threads, resize_mode=args.resize_mode, resize_only_if_bigger=False,
             encode_format="jpg", encode_quality=95, output_format="parquet", input_format="txt",
             timeout=10, retries=0, enable_wandb=False, number_sample_per_shard=10_000,
             distributor="multiprocessing")
    seconds = time.perf_counter() - start
    ok = 0
    for stats in glob.glob(os.path.join(out, "*_stats.json")):
        with open(stats) as f:
            ok += json.load(f)["successes"]
    return seconds, ok


def run_interleaf(urls: list[str], workdir: str, args, workers: int, tag: str) -> tuple[float, int]:
    import apache_beam as beam

    from interleaf.download.fetcher import FetchConfig
    from interleaf.pipelines.common import WriteShards, create_pipeline, funnel_from, pipeline_options
    from interleaf.pipelines.fetch import FetchImages, FetchImagesConfig
    from interleaf.schemas.document import Document, Node, documents_to_table

    docs = []
    for i in range(0, len(urls), 4):  # documents of 4 images each
        nodes = [Node.text_node(f"document {i}")] + [Node.image_node(u) for u in urls[i:i + 4]]
        docs.append(Document(doc_id=f"doc{i:06d}", url=f"http://bench/{i}", nodes=nodes))
    config = FetchImagesConfig(
        fetch=FetchConfig(allow_private_hosts=True, image_size=args.image_size, resize_mode=args.resize_mode,
                          resize_only_if_bigger=False, encode_format="jpg", encode_quality=95, retries=0),
        store_dir=os.path.join(workdir, f"interleaf-{tag}", "images"), threads=args.threads,
        per_host_concurrency=args.per_host_concurrency, per_host_rate=0)
    beam_args = (["--direct_num_workers", str(workers), "--direct_running_mode", "multi_processing"]
                 if workers > 1 else [])
    start = time.perf_counter()
    p = create_pipeline(pipeline_options(beam_args))
    out = p | "Docs" >> beam.Create(docs) | FetchImages(config)
    out["documents"] | WriteShards(os.path.join(workdir, f"interleaf-{tag}", "documents"), documents_to_table,
                                   lambda d: d.doc_id)
    result = p.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - start
    return seconds, funnel_from(result)["fetch"]["images"]["out"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=1000, help="distinct image URLs")
    parser.add_argument("--hosts", type=int, default=8, help="server ports the URLs are spread over")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--resize-mode", default="keep_ratio")
    parser.add_argument("--processes", type=int, default=2, help="img2dataset processes_count")
    parser.add_argument("--threads", type=int, default=32, help="threads per process, both tools")
    parser.add_argument("--per-host-concurrency", type=int, default=8, help="interleaf per-host limit")
    parser.add_argument("--repeat", type=int, default=2,
                        help="rounds, the order of the tools reversed every other round; best time kept")
    parser.add_argument("--beam-workers", default="1",
                        help="comma-separated FnApiRunner worker counts to run (2: multi_processing, whose "
                             "start-up takes seconds)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)

    import logging
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    from results import table, write_section

    images = make_jpegs(args.urls)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    server = ctx.Process(target=serve, args=(images, args.hosts, ready), daemon=True)
    server.start()
    ports = ready.get(timeout=120)
    urls = [f"http://127.0.0.1:{ports[i % len(ports)]}/img/{i}.jpg" for i in range(args.urls)]
    runs: dict[str, list[tuple[float, int]]] = {}
    try:
        for round_ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="fetch-bench-") as workdir:
                tools = [(f"img2dataset download() ({args.processes} processes x {args.threads} threads)",
                          lambda: run_img2dataset(urls, workdir, args))]
                for workers in map(int, args.beam_workers.split(",")):
                    plural = "es" if workers > 1 else ""
                    tools.append((f"interleaf FetchImages ({workers} worker process{plural} x "
                                  f"{args.threads} threads)",
                                  lambda w=workers: run_interleaf(urls, workdir, args, w, f"w{w}")))
                for name, fn in (tools if round_ % 2 == 0 else tools[::-1]):
                    seconds, ok = fn()
                    runs.setdefault(name, []).append((seconds, ok))
                    print(f"round {round_ + 1}: {name}: {ok}/{len(urls)} ok in {seconds:.1f}s "
                          f"({ok / seconds:.0f} images/s)", flush=True)
    finally:
        server.terminate()

    rows, reference = [], None
    for name, results in runs.items():
        seconds, ok = min(results)
        rate = ok / seconds
        reference = reference or rate
        rows.append([name, ok, round(seconds, 2), round(rate, 1), rate / reference])
    body = (f"{args.urls} distinct JPEGs (640x480, from the photos in tests/data) served on 127.0.0.1 over "
            f"{args.hosts} ports by a separate server process; both resize to {args.image_size} px "
            f"({args.resize_mode}, jpg quality 95) with img2dataset's Resizer; best of {args.repeat}. "
            "Wall-clock of the whole call, start-up included. interleaf also fetches robots.txt per host, "
            "checks addresses, sizes from headers before decoding, journals every URL, dedups by sha256 and "
            "resolves the documents; its per-host limit is raised to "
            f"{args.per_host_concurrency} connections (img2dataset has none).\n\n"
            + table(["tool", "ok", "seconds", "images/s", "ratio vs img2dataset"], rows))
    print(body)
    if not args.no_write:
        write_section("fetch", "Image fetch throughput (FetchImages vs img2dataset download())", body)
    return 0


if __name__ == "__main__":  # img2dataset's download() spawns processes: the guard is required
    sys.exit(main())
