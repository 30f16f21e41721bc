"""The command line's commands, one module each: `add_parser(subparsers)` and `run(args) -> int`."""

from interleaf.commands import inspect_cmd

COMMANDS = [inspect_cmd]
