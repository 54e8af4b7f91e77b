"""`python -m tl_core lr-find`: loss against a rising learning rate, and a suggested --lr."""

from __future__ import annotations

import argparse
import sys

from tl_core.cli.common import add_json_flag, bars_on_stderr, emit
from tl_core.cli.options import add_config_options, config_from_args
from tl_core.cli.runs import spec_from_args
from tl_core.lr_find import LRFindConfig, find_lr
from tl_core.spec import RunSpec


def lr_find_text(result: dict) -> str:
    lines = [
        f"lr-find {result['backbone']} {result['strategy']}: {len(result['lrs'])} batches of "
        f"{result['batch_size']}, stopped: {result['stopped']}",
        f"{'lr':>10} {'loss':>8}",
    ]
    every = max(1, len(result["lrs"]) // 20)
    for lr, loss in list(zip(result["lrs"], result["losses"], strict=True))[::every]:
        lines.append(f"{lr:>10.2e} {loss:>8.4f}")
    suggested = result["suggested_lr"]
    lines.append(
        "suggested lr: -" if suggested is None else f"suggested lr: {suggested:.2e} (--lr)"
    )
    return "\n".join(lines)


def cmd_lr_find(args: argparse.Namespace) -> int:
    sweep = config_from_args(LRFindConfig, args).validate()
    spec = spec_from_args(args, args.strategy)
    with bars_on_stderr() as bars:
        result = find_lr(spec, sweep, on_progress=bars.progress)
    if args.json:
        print(lr_find_text(result), file=sys.stderr)
    emit(result, args.json, lr_find_text(result))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lr-find", help="loss against a rising learning rate, and a suggested --lr")
    add_config_options(p, RunSpec)
    add_config_options(p, LRFindConfig)
    add_json_flag(p)
    p.set_defaults(func=cmd_lr_find)
