"""The `interleaf` command line: a thin dispatcher over the commands in interleaf.commands.

Each command module has `add_parser(subparsers)` and `run(args) -> int`. Expected failures (missing files,
bad shards, bad arguments) end in one clear line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from interleaf import __version__
from interleaf.commands import COMMANDS

# What the command line treats as a user error: one line, exit 2. Anything else is a bug and shows its
# traceback.
from interleaf.errors import USER_ERRORS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interleaf",
        description="Curate interleaved text-image corpora: ingest, dedup, fetch, CLIP-align and tokenize web "
                    "documents into Arrow shards with Apache Beam, and inspect any shard.")
    parser.add_argument("--version", action="version", version=f"interleaf {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    if verbose < 2:  # Beam and friends are chatty at INFO
        for name in ("apache_beam", "urllib3", "PIL"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # dask.distributed (--runner DaskRunner) sets its loggers' levels from its config when imported
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        for handler in logging.getLogger().handlers:
            handler.addFilter(_no_tracebacks_for_user_errors)


def _no_tracebacks_for_user_errors(record: logging.LogRecord) -> bool:
    """Drop the traceback Beam logs for an exception it then raises, when that exception is the user's to
    fix (bad input, a damaged shard): the command line prints it as one line. -vv keeps them."""
    exc = record.exc_info[1] if record.exc_info else None
    while exc is not None:
        if isinstance(exc, USER_ERRORS):
            return False
        exc = exc.__cause__ or exc.__context__
    return True


def main(argv: list[str] | None = None) -> int:
    # img2dataset imports albumentations, which otherwise checks for updates over the network on import.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "accepts_pipeline_args", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.pipeline_args = rest
    _configure_logging(args.verbose, args.quiet)
    try:
        return args.func(args) or 0
    except USER_ERRORS as e:
        print(f"interleaf {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interleaf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
