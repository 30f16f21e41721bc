"""`interleaf optout --list FILE PATH...`: apply an opt-out list to image stores and shards written before."""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timezone

from interleaf import storage
from interleaf.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "optout", help="remove opted-out images and nodes from image stores and document shards",
        description="Apply an opt-out list (domains, URL patterns, image sha256; see "
                    "interleaf.filters.optout) "
                    "to data already written: opted-out images lose their bytes and become 'opted_out' rows "
                    "(so no rerun fetches them again), document nodes that use them are dropped with reason "
                    "'opted_out', and a JSON report records every change. Token shards cannot be edited: the "
                    "report lists those that need re-tokenizing.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image store, fetch journal, document shard, or a directory holding any of them "
                        "(walked recursively)")
    p.add_argument("--list", dest="list_file", required=True, metavar="FILE", help="the opt-out list")
    p.add_argument("--report", metavar="FILE",
                   help="where to write the JSON report (default: optout-report-<UTC time>.json in the first "
                        "PATH when it is a directory, else beside it)")
    p.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from interleaf.filters.optout import OptOutList, OptOutListError, apply_to_paths, write_report

    if not storage.exists(args.list_file):
        raise UsageError(f"--list {args.list_file}: no such file")
    for path in args.paths:
        if not storage.exists(path):
            raise UsageError(f"{path}: no such file or directory")
    try:
        optout = OptOutList.load(args.list_file)
    except OptOutListError as e:
        raise UsageError(str(e)) from None
    if not len(optout):
        raise UsageError(f"--list {args.list_file} has no entries")
    report = apply_to_paths(optout, args.paths, dry_run=args.dry_run)
    path = args.report or _default_report(args.paths[0])
    if not args.dry_run or args.report:
        write_report(report, path)
    summary = {name: len(getattr(report, name)) for name in (
        "images_removed", "failed_rows_marked", "nodes_dropped", "shards_rewritten", "token_shards_stale")}
    print(json.dumps(summary))
    if not args.dry_run or args.report:
        print(f"report: {path}")
    for stale in report.token_shards_stale:
        print(f"warning: {stale} was tokenized before the opt-out; re-run tokenize on the updated documents")
    return 0


def _default_report(first: str) -> str:
    name = f"optout-report-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    directory = first if storage.is_dir(first) else os.path.dirname(first) or "."
    return storage.join(directory, name)
