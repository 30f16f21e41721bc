"""`interleaf inspect PATH`: summary, samples, HTML page or JSON of any shard or directory of shards."""

from __future__ import annotations

import argparse
import json
import os
import sys

from interleaf import render, storage
from interleaf.errors import UsageError
from interleaf.inspect import sample_documents, sample_rows, summarize

MAX_SAMPLE = 1_000_000  # rows shown; more is a dump, which `export` or pyarrow do better
from interleaf.schemas.meta import KIND_DOCUMENTS, KIND_FAILURES, KIND_IMAGES, KIND_TOKENS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="summarize a shard or directory of shards (documents, images, tokens)",
                       description="Summarize any interleaf shard or directory of shards; the kind is read "
                                   "from the shard's metadata.")
    p.add_argument("path", help="a shard file, a directory of part-*.arrow shards, or a glob (local or gs://)")
    p.add_argument("--sample", type=int, default=0, metavar="N", help="also show N rows readably")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML page with the summary and "
                                                   "sample rows (images inline when an image store is found)")
    p.add_argument("--images", metavar="DIR", help="image store for --html (default: DIR/images beside a run's "
                                                    "documents)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--text-tokenizer", metavar="FILE", help="tokenizer.json to decode token shards (default: "
                                                            "the file their metadata names, if its sha256 matches)")
    p.add_argument("--image-tokenizer", metavar="FILE", help="VQ checkpoint to draw image blocks in --html")
    p.set_defaults(func=run)


def incomplete_warning(path: str) -> str | None:
    """A line saying that the run which wrote `path` did not finish, or None."""
    from interleaf.pipelines.rundir import COMPLETE, run_status

    status = run_status(path)
    if status is None or status["status"] == COMPLETE:
        return None
    why = f": {status['error']}" if status.get("error") else ""
    return (f"the run that wrote {path} is not complete (status {status['status']}, started "
            f"{status.get('started') or 'at an unknown time'}{why}); its shards may be partial")


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.sample <= MAX_SAMPLE:
        raise UsageError(f"--sample must be between 0 and {MAX_SAMPLE:,}, found {args.sample}")
    if args.images and not storage.exists(args.images):
        raise UsageError(f"--images {args.images}: no such image store")
    summary = summarize(args.path)
    n = args.sample or (5 if args.html else 0)

    texts, documents, image_rows, token_rows, token_html = [], None, None, None, None
    if n:
        if summary.kind == KIND_DOCUMENTS:
            documents = sample_documents(args.path, n)
            texts = [render.document_text(d) for d in documents]
        else:
            shards, table = sample_rows(args.path, n, with_image_bytes=bool(args.html))
            rows = table.to_pylist()
            if summary.kind == KIND_IMAGES:
                image_rows = rows
                texts = [render.image_row_text(r) for r in rows]
            elif summary.kind == KIND_TOKENS:
                from interleaf.tokenizers.preview import decoded_row_html, load_preview
                pv = load_preview(shards.token_info, text=args.text_tokenizer, image=args.image_tokenizer,
                                  with_images=bool(args.html))
                for note in pv.notes:
                    print(f"note: {note}", file=sys.stderr)
                token_rows = texts = [render.token_row_text(r["doc_id"], r["tokens"], shards.token_info,
                                                            codec=pv.codec) for r in rows]
                if args.html and pv.codec is not None:
                    token_html = [decoded_row_html(r["tokens"], pv.codec, pv.vq) for r in rows]
            elif summary.kind == KIND_FAILURES:
                texts = [f"{r['stage']}/{r['step']} {r['kind']} {r['key']}: {r['error']}" for r in rows]

    warning = incomplete_warning(args.path)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({**summary.to_json(), **({"warning": warning} if warning else {})}, indent=2))
    else:
        print(render.summary_text(summary, args.path))
    if args.sample:
        print()
        print("\n\n".join(texts))

    if args.html:
        images = {}
        if documents is not None:
            store = args.images or render.find_image_store(args.path)
            if store:
                wanted = {k for d in documents for node in d.image_nodes
                          for k in (node.image_sha256, node.image_url) if k}
                images = render.load_images(store, wanted)
        page = render.html_page(args.path, summary, documents=documents, image_rows=image_rows,
                                token_rows=token_rows, token_html=token_html, images=images, warning=warning)
        directory = os.path.dirname(args.html)
        if directory:
            storage.makedirs(directory)
        storage.write_bytes(args.html, page.encode("utf-8"))
        if not args.json:
            print(f"\nwrote {args.html}")
    return 0
