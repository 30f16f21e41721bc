"""The command line's commands, one module each: `add_parser(subparsers)` and `run(args) -> int`."""

from interleaf.commands import (
    clip_cmd,
    demo_cmd,
    export_cmd,
    inspect_cmd,
    model_cmd,
    optout_cmd,
    report_cmd,
    run_cmd,
    tokenizer_cmd,
)

COMMANDS = [run_cmd, export_cmd, inspect_cmd, report_cmd, demo_cmd, optout_cmd, tokenizer_cmd, clip_cmd,
            model_cmd]
