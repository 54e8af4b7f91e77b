"""`python -m tl_core worker`: train queued runs in the background (the web app starts it)."""

from __future__ import annotations

import argparse

from tl_core.cli.common import add_json_flag, emit
from tl_core.worker import IDLE_EXIT, NICENESS, run_worker


def cmd_worker(args: argparse.Namespace) -> int:
    taken = run_worker(once=args.once, poll=args.poll, idle_exit=args.idle_exit, nice=args.nice)
    emit({"runs": taken}, args.json, f"worker took {taken} run(s)")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "worker", help="train queued runs in the background (the web app starts it)"
    )
    p.add_argument("--once", action="store_true", help="train what is queued now, then exit")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between queue checks")
    p.add_argument(
        "--idle-exit",
        type=float,
        default=IDLE_EXIT,
        help="exit after this many seconds with nothing queued",
    )
    p.add_argument(
        "--nice", type=int, default=NICENESS, help="how much lower its priority is (0: same)"
    )
    add_json_flag(p)
    p.set_defaults(func=cmd_worker)
