"""`python -m tl_core recipe NAME|--list`: run a named experiment from `tl_core.recipes`."""

from __future__ import annotations

import argparse
import sys

from tl_core.cli.common import (
    add_json_flag,
    add_queue_flags,
    bars_on_stderr,
    emit,
    positive_int,
    queued_text,
    summaries,
)
from tl_core.errors import LabError
from tl_core.fmt import percent
from tl_core.recipes import OFFLINE_BACKBONE, RECIPES, Recipe, plan, run_recipe
from tl_core.workspaces import check_workspace


def _results_text(res: dict) -> str:
    lines = [f"{res['title']} ({res['recipe']}, {res['status']})"]
    lines += [f"note: {n}" for n in res["notes"]]
    header = f"{'run':36} {'backbone':18} {'runs':>4} {'best val acc':>16} {'reference':>9}"
    lines += ["", header, "-" * len(header)]
    for s in res["summary"]:
        spread = f" ± {100 * s['best_val_acc_std']:.1f}" if s["runs"] > 1 and s["done"] else ""
        lines.append(
            f"{s['label'][:36]:36} {s['backbone']:18} {s['runs']:>4} "
            f"{percent(s['best_val_acc']) + spread:>16} {percent(s['reference']):>9}"
        )
    lines += ["", f"reference: {res['reference']['text']} ({res['reference']['source']})"]
    failed = [r for r in res["runs"] if r["status"] != "done"]
    lines += [f"run {r['run_id']} ({r['label']}) {r['status']}: {r['error']}" for r in failed]
    if res.get("launch_id"):
        lines.append(f"launch {res['launch_id']}; runs: python -m tl_core show RUN_ID")
    return "\n".join(lines)


def _list_text() -> str:
    lines = []
    for r in RECIPES.values():
        lines.append(f"{r.name:18} {r.title}")
        lines.append(f"{'':18} reference: {r.reference.text}")
        lines.append(f"{'':18} data: {r.data_hint}")
        if r.needs_network:
            lines.append(f"{'':18} needs network: {r.needs_network} (or use --offline)")
    return "\n".join(lines)


def _recipe_row(r: Recipe) -> dict:
    return {
        "name": r.name,
        "title": r.title,
        "description": r.description,
        "reference": {
            "text": r.reference.text,
            "figures": r.reference.figures,
            "source": r.reference.source,
        },
        "data": r.data_hint,
        "needs_network": r.needs_network,
    }


def _sizes_arg(text: str) -> tuple[int | None, ...]:
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "all":
            out.append(None)
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise argparse.ArgumentTypeError(
                f"expected numbers or 'all', comma-separated, got {text!r}"
            )
    return tuple(out)


def _plan_text(p) -> str:
    lines = [f"{p.title} ({p.recipe})", *(f"note: {n}" for n in p.notes)]
    lines += [f"data: {d.description}" for d in p.prepare]
    for k, st in enumerate(p.stages):
        lines.append(f"stage {k}: {st.title}")
        lines += [
            f"  {s.name}: {s.backbone} {s.strategy} on {s.data}, {s.train.epochs} epochs, "
            f"seed {s.train.seed}" + (f", from {s.init_from}" if s.init_from else "")
            for s in st.specs
        ]
    return "\n".join(lines)


def _queue_plan(p, workspace: str, as_json: bool) -> int:
    """Build the plan's data and queue every stage for the worker, within the queue limits;
    print the runs with their positions: {"launch_id", "runs"} with --json."""
    from tl_core.recipes import launch_runs, prepare_data, start_recipe
    from tl_core.runs import RunStore
    from tl_core.workspaces import check_room, room_check

    store = RunStore()
    check_room(store, workspace, len(p.specs))  # before building data; checked again in the write
    prepare_data(p)
    launch_id = start_recipe(store, p, workspace=workspace, check=room_check(workspace))
    rows = summaries(store, [r for stage in launch_runs(store, launch_id) for r in stage])
    text = queued_text(rows, workspace)
    text += f"\nlaunch {launch_id}; cancel it with python -m tl_core cancel --group {launch_id}"
    emit({"launch_id": launch_id, "runs": rows}, as_json, text)
    return 0


def cmd_recipe(args: argparse.Namespace) -> int:
    if args.list:
        emit([_recipe_row(r) for r in RECIPES.values()], args.json, _list_text())
        return 0
    if not args.name:
        raise LabError(f"name a recipe, or use --list; recipes: {', '.join(RECIPES)}")
    workspace = check_workspace(args.workspace)
    p = plan(
        args.name,
        args.data,
        args.offline,
        epochs=args.epochs,
        seeds=args.seeds,
        sizes=args.sizes,
        workspace=workspace,
    )
    for note in p.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:
        emit(p.to_dict(), args.json, _plan_text(p))
        return 0
    if args.queue:
        return _queue_plan(p, workspace, args.json)
    with bars_on_stderr() as bars:

        def on_run(n: int, total: int, record: dict) -> None:
            bars.close()
            bars.label = f"[{n}/{total} {record['name'] or record['strategy']}] "
            print(
                f"{bars.label}run {record['id']} ({record['backbone']} {record['strategy']})",
                file=sys.stderr,
            )

        res = run_recipe(p, on_run=on_run, on_progress=bars.progress, workspace=workspace)
    emit(res, args.json, _results_text(res))
    return 0 if res["status"] == "done" else 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "recipe",
        help="run a named experiment (recipe --list shows them)",
        description="Run a named transfer-learning experiment: " + ", ".join(RECIPES),
    )
    p.add_argument("name", nargs="?", metavar="NAME", help=", ".join(RECIPES))
    p.add_argument("--list", action="store_true", help="list the recipes and their references")
    p.add_argument(
        "--data", default=None, help="a data set folder or name, where the recipe takes one"
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help=f"use {OFFLINE_BACKBONE} for ResNet-18/VGG16 and Fashion-MNIST for CIFAR-10",
    )
    p.add_argument("--dry-run", action="store_true", help="show the plan, train nothing")
    p.add_argument("--epochs", type=positive_int, default=None, help="override every run's epochs")
    p.add_argument(
        "--seeds", type=positive_int, default=None, help="seeds per run (data-efficiency: 3)"
    )
    p.add_argument(
        "--sizes",
        type=_sizes_arg,
        default=None,
        help="data-efficiency: images per class, e.g. 5,10,all",
    )
    add_queue_flags(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_recipe)
