"""`python -m tl_core`: everything the app does, from a terminal.

The commands, flags and JSON fields here are a contract that scripts and docs rely on. With
`--json`, the last line on stdout is one JSON object (or list); progress bars go to stderr.
Bad input exits with code 2 and one line on stderr, never a traceback.

One module per command group: `runs` (train, compare, resume, runs, show, predict, export,
cancel, store), `data`, `worker`, `recipe`, `bench`, `lr_find`, `report` and `app`; `common`
holds what they share and `options` makes flags from config dataclasses. Library modules never
import from here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tl_core.cli import app, bench, data, lr_find, recipe, report, runs, worker
from tl_core.cli.common import Parser
from tl_core.errors import DISK_ERRNOS, LabError, disk_error_message


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m tl_core", description="Transfer Learning Lab from the command line."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    runs.add_parsers(sub)
    for group in (data, worker, recipe, bench, lr_find, report, app):
        group.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        print(f"error: {disk_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
