"""`python -m tl_core bench` and `bench-scale`: time the lab's path (README, "Speed")."""

from __future__ import annotations

import argparse
import sys

from tl_core.bench import BenchConfig, ScaleConfig, run_bench, run_bench_scale
from tl_core.cli.common import add_json_flag, emit
from tl_core.cli.options import add_config_options, config_from_args


def _fmt(x, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def _seconds_or_never(x: float | None) -> str:
    return "never" if x is None else f"{x:.1f} s"


def bench_text(r: dict) -> str:
    pct = ".1%"
    ref_time = (
        "-" if r["reference_seconds"] is None else _seconds_or_never(r["reference_time_to_acc"])
    )
    projected = (
        f" (projected from {r['reference_epochs']} epoch(s), "
        f"{r['reference_measured_seconds']:.1f} s measured)"
        if r.get("reference_projected")
        else ""
    )
    lines = [
        f"bench {r['backbone']} {r['strategy']}, {r['epochs']} epochs, seeds {r['seeds']}, "
        f"{r['num_train']} train / {r['num_val']} val images, {r['device']} ({r['threads']} threads)",
        f"  reference (tutorial loop): {_fmt(r['reference_seconds'], '.1f', ' s')}{projected}, "
        f"val acc {_fmt(r['reference_val_acc'], pct)}, "
        f"{_fmt(r.get('reference_epoch_seconds'), '.2f', ' s')}/epoch",
        f"  lab ({r['lab_path']}): {r['lab_seconds']:.1f} s, val acc {r['lab_val_acc']:.1%}, "
        f"{r['lab_epoch_seconds']:.2f} s/epoch, one-off {r['lab_one_off_seconds']:.1f} s "
        f"(decode {r['lab_decode_seconds']:.1f} s, cache {r['lab_cache_seconds']:.1f} s)",
        f"  speedup {_fmt(r['speedup'], '.1f', 'x')} overall, "
        f"{_fmt(r['speedup_per_epoch'], '.1f', 'x')} per epoch; peak RSS {r['peak_rss_mb']:.0f} MB",
        f"  time to {r['target_acc']:.1%} val acc (mean over seeds; never: a seed did not "
        f"reach it): reference {ref_time}, lab {_seconds_or_never(r['lab_time_to_acc'])}",
    ]
    return "\n".join(lines)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_bench(args: argparse.Namespace) -> int:
    result = run_bench(config_from_args(BenchConfig, args), _log)
    if args.json:
        print(bench_text(result), file=sys.stderr)
    emit(result, args.json, bench_text(result))
    return 0


def scale_text(rows: list[dict]) -> str:
    lines = ["images strategy            one-off s  s/epoch  25-epoch s  val acc  peak MB"]
    for r in rows:
        lines.append(
            f"{r['images']:>6} {r['strategy']:18} {r['one_off_seconds']:>9.1f} "
            f"{r['epoch_seconds']:>8.2f} {r['projected_25_epochs_seconds']:>11.1f} "
            f"{r['val_acc']:>7.1%} {r['peak_rss_mb']:>8.0f}"
        )
    return "\n".join(lines)


def _words(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def cmd_bench_scale(args: argparse.Namespace) -> int:
    config = ScaleConfig(
        data=args.data,
        backbone=args.backbone,
        strategies=_words(args.strategies),
        sizes=tuple(int(s) for s in _words(args.sizes)),
        epochs=args.epochs,
        device=args.device,
        workdir=args.workdir,
    )
    rows = run_bench_scale(config, _log)
    emit(rows, args.json, scale_text(rows))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="time the lab's path against the classic tutorial loop, in one process"
    )
    add_config_options(p, BenchConfig)
    add_json_flag(p)
    p.set_defaults(func=cmd_bench)

    d = ScaleConfig(data="")
    p = sub.add_parser("bench-scale", help="time the lab's path against data set size")
    p.add_argument("--data", required=True, help="the source data set")
    p.add_argument("--backbone", default=d.backbone)
    p.add_argument("--strategies", default=",".join(d.strategies))
    p.add_argument("--sizes", default=",".join(map(str, d.sizes)))
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--device", default=d.device)
    p.add_argument("--workdir", default=d.workdir, help="where the scaled data sets are made")
    add_json_flag(p)
    p.set_defaults(func=cmd_bench_scale)
