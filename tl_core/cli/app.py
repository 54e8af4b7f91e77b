"""`tl-lab app [streamlit options]` (or `python -m tl_core app`): start the web app."""

from __future__ import annotations

import argparse

from tl_core import launcher


def cmd_app(args: argparse.Namespace) -> int:
    return launcher.run_app(args.streamlit_args)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    # '+' as the only option prefix: every `--server.*` option reaches streamlit untouched.
    p = subparsers.add_parser(
        "app",
        help="start the web app (options after `app` go to `streamlit run`)",
        prefix_chars="+",
        add_help=False,
    )
    p.add_argument("streamlit_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_app)
