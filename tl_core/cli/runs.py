"""Training and run commands: train, compare, resume, runs, show, predict, export, cancel, store.

The train/compare flags are made from `RunSpec`'s and `TrainConfig`'s fields
(`tl_core.cli.options`), so a new setting needs no change here.
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path

from tl_core.cli.common import (
    add_json_flag,
    add_queue_flags,
    bars_on_stderr,
    emit,
    open_store,
    positive_int,
    queue_table,
    queued_text,
    runs_table,
    summaries,
)
from tl_core.cli.options import add_config_options, config_from_args
from tl_core.errors import LabError
from tl_core.runs import FINISHED
from tl_core.spec import RunSpec, expand
from tl_core.strategies import get_strategy


def spec_from_args(
    args: argparse.Namespace, strategy: str, *, workspace: str = "", queue: bool = False
) -> RunSpec:
    """The `RunSpec` the train options describe, for `strategy`. In a `workspace`, a data
    set name (not a path) is that workspace's data set, as on its Data page; a queued run
    keeps its folder as an absolute path (the worker may run in another folder)."""
    from tl_core.data.folder import looks_like_path
    from tl_core.workspaces import dataset_name

    if args.weights is not None and not Path(args.weights).expanduser().is_file():
        raise LabError(f"weights file not found: {args.weights}")
    data = args.data
    if workspace and not looks_like_path(data):
        data = dataset_name(workspace, data)
    elif queue and looks_like_path(data):
        data = str(Path(data).expanduser().resolve())
    return config_from_args(RunSpec, args, strategy=strategy, data=data)


def _queue_args(args: argparse.Namespace) -> dict:
    """--workspace (checked, lowercase) and --queue, as `spec_from_args` takes them."""
    from tl_core.workspaces import check_workspace

    args.workspace = check_workspace(args.workspace)
    return {"workspace": args.workspace, "queue": args.queue}


def _queue_args(args: argparse.Namespace) -> dict:
    """--workspace (checked, lowercase) and --queue, as `spec_from_args` takes them."""
    from tl_core.workspaces import check_workspace

    args.workspace = check_workspace(args.workspace)
    return {"workspace": args.workspace, "queue": args.queue}


def _queue_specs(args: argparse.Namespace, specs: list[RunSpec]) -> list[dict]:
    """Record `specs` as one group for the worker, within the workspace's and the lab's
    queue limits; their rows with queue positions."""
    from tl_core import workspaces

    store = open_store()
    ids = workspaces.queue_runs(
        store, specs, workspace=args.workspace, request_id=str(uuid.uuid4())
    )
    return summaries(store, [store.get(i) for i in ids])


def _run_specs(args: argparse.Namespace, specs: list[RunSpec]) -> list[dict]:
    """Queue `specs` as one group and train them here, one after another."""
    from tl_core.jobs import execute_run, queue_runs, run_summary

    store = open_store()
    ids = queue_runs(store, specs, request_id=str(uuid.uuid4()), workspace=args.workspace)
    results = []
    for n, run_id in enumerate(ids, start=1):
        label = f"[{n}/{len(ids)} {specs[n - 1].strategy}] " if len(ids) > 1 else ""
        with bars_on_stderr(label) as bars:
            spec = specs[n - 1]
            bars.line(f"run {run_id}: {spec.strategy} on {spec.backbone}, data {spec.data}")
            try:
                record = execute_run(store, run_id, on_progress=bars.progress)
            except KeyboardInterrupt:
                store.finish(run_id, "cancelled", error="interrupted from the keyboard")
                raise
        results.append(run_summary(record))
    return results


def _exit_code(results: list[dict]) -> int:
    return 0 if all(r["status"] == "done" for r in results) else 1


def cmd_train(args: argparse.Namespace) -> int:
    from tl_core import distributed

    specs = [spec_from_args(args, args.strategy, **_queue_args(args))]
    if distributed.launched():  # under torchrun: one run over its processes (DDP)
        if args.queue:
            raise LabError("--queue trains in the worker; run torchrun without --queue")
        record = distributed.train_run(open_store, specs[0], args.workspace)
        if record is None:  # not rank 0: rank 0 reports
            return 0
        results = [summaries(open_store(), [record])[0]]
        emit(results[0], args.json, runs_table(results))
        return _exit_code(results)
    if args.queue:
        rows = _queue_specs(args, specs)
        emit(rows[0], args.json, queued_text(rows, args.workspace))
        return 0
    results = _run_specs(args, specs)
    emit(results[0], args.json, runs_table(results))
    return _exit_code(results)


def cmd_compare(args: argparse.Namespace) -> int:
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not strategies:
        raise LabError(
            "--strategies is empty; give a comma-separated list such as scratch,feature_extractor"
        )
    for s in strategies:
        get_strategy(s)
    base = spec_from_args(args, strategies[0], **_queue_args(args))
    specs = expand(base, strategies, args.seeds)
    if args.queue:
        rows = _queue_specs(args, specs)
        emit(rows, args.json, queued_text(rows, args.workspace))
        return 0
    results = _run_specs(args, specs)
    emit(results, args.json, runs_table(results))
    return _exit_code(results)


def cmd_resume(args: argparse.Namespace) -> int:
    from tl_core.jobs import resume_run, run_summary

    with bars_on_stderr() as bars:
        bars.line(f"resuming run {args.run_id} from its last finished epoch")
        record = resume_run(open_store(), args.run_id, on_progress=bars.progress)
    result = run_summary(record)
    emit(result, args.json, runs_table([result]))
    return _exit_code([result])


def cmd_runs(args: argparse.Namespace) -> int:
    from tl_core.workspaces import check_workspace

    workspace = None if args.workspace is None else check_workspace(args.workspace)
    store = open_store()
    records = store.list(status=args.status, workspace=workspace, limit=args.limit)
    rows = summaries(store, records)
    text = "\n\n".join(t for t in (runs_table(rows), queue_table(rows)) if t)
    emit(rows, args.json, text if rows else "no runs")
    return 0


def _epoch_line(e: dict) -> str:
    val_loss = e["val_loss"] if e["val_loss"] is None else round(e["val_loss"], 4)
    val_acc = e["val_acc"] if e["val_acc"] is None else round(e["val_acc"], 4)
    return (
        f"epoch {e['epoch']:>3}: train_loss {e['train_loss']:.4f} train_acc {e['train_acc']:.4f} "
        f"val_loss {val_loss} val_acc {val_acc} ({e['seconds']:.1f}s, lr {e['lr']:g})"
    )


def cmd_show(args: argparse.Namespace) -> int:
    from tl_core.jobs import run_summary

    store = open_store()
    record = store.get(args.run_id)
    summary = run_summary(record)
    summary["config"] = record.get("config")
    summary["classes"] = record.get("classes")
    summary["history"] = store.epochs(args.run_id)
    lines = [runs_table([summary]), "", *map(_epoch_line, summary["history"])]
    if record.get("error"):
        lines.append(f"note: {record['error']}")
    emit(summary, args.json, "\n".join(lines))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tl_core.evaluate import load_trained, predict_files

    trained = load_trained(open_store(), args.run)  # an unknown run is said first
    missing = [f for f in args.images if not Path(f).expanduser().is_file()]
    if missing:  # bad input (exit 2), unlike a file that exists and cannot be read (1)
        raise LabError(f"image file not found: {', '.join(missing)} (check the path)")
    results = predict_files(trained, args.images, top_k=args.top_k)
    text = []
    for r in results:
        if "error" in r:
            text.append(f"{r['image']}: cannot read ({r['error']})")
        else:
            tops = ", ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"])
            text.append(f"{r['image']}: {tops}")
    emit(results if args.json else None, args.json, "\n".join(text))
    return 0 if all("error" not in r for r in results) else 1


def cmd_export(args: argparse.Namespace) -> int:
    from tl_core.evaluate import load_trained
    from tl_core.export import export_model

    info = export_model(load_trained(open_store(), args.run), args.format, args.out)
    emit(
        info,
        args.json,
        f"exported run {args.run} as {args.format} to {info['path']} (details in {info['path']}.json)",
    )
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from tl_core.groups import cancel_group, cancel_runs

    if bool(args.run_ids) == bool(args.group):
        raise LabError("give run ids or --group GROUP_ID (one of the two)")
    store = open_store()
    if len(args.run_ids) == 1:  # one run: the single object this command always printed
        status = store.request_cancel(args.run_ids[0])
        row = {"run_id": args.run_ids[0], "status": status}
        emit(row, args.json, f"run {row['run_id']}: {status}")
        return 0
    rows = cancel_group(store, args.group) if args.group else cancel_runs(store, args.run_ids)
    text = "\n".join(f"run {r['run_id']}: {r['status']}" for r in rows) or "nothing to cancel"
    emit(rows, args.json, text)
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from tl_core import paths
    from tl_core.runs import check_store, move_store_aside

    found = check_store()
    if args.action == "check":
        emit({"status": found}, args.json, f"run store: {found}")
        return 0 if found == "ok" else 1
    if found == "ok" and not args.force:
        raise LabError(
            "the run store is healthy; nothing to reset (add --force to start afresh anyway)"
        )
    kept = move_store_aside()
    emit(
        {"status": "reset", "kept": str(kept) if kept else None},
        args.json,
        f"started a new run store in {paths.lab_home()}; the old one is kept as {kept}",
    )
    return 0


def _command(sub, name: str, func, help: str, *, run_id: bool = False):
    p = sub.add_parser(name, help=help)
    if run_id:
        p.add_argument("run_id")
    add_json_flag(p)
    p.set_defaults(func=func)
    return p


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the training and run commands to the main CLI's subparsers."""
    p = _command(sub, "train", cmd_train, "train one run")
    add_config_options(p, RunSpec)
    add_queue_flags(p)

    p = _command(
        sub, "compare", cmd_compare, "train several strategies on the same split, as one group"
    )
    add_config_options(p, RunSpec, skip={"strategy"})
    p.add_argument(
        "--strategies", required=True, help="comma-separated, e.g. scratch,feature_extractor"
    )
    p.add_argument(
        "--seeds", type=positive_int, default=1, help="runs per strategy, with seeds seed..seed+N-1"
    )
    add_queue_flags(p)

    _command(
        sub,
        "resume",
        cmd_resume,
        "continue a failed or cancelled run from its last epoch",
        run_id=True,
    )
    p = _command(sub, "runs", cmd_runs, "list runs, newest first")
    p.add_argument("--limit", type=positive_int, default=None)
    p.add_argument(
        "--status",
        choices=("queued", "running", *FINISHED),
        default=None,
        help="only runs in this state",
    )
    p.add_argument(
        "--workspace", default=None, metavar="NAME", help="only this workspace's runs ('' default)"
    )
    _command(sub, "show", cmd_show, "one run in full", run_id=True)

    p = _command(sub, "predict", cmd_predict, "classify images with a finished run")
    p.add_argument("--run", required=True, metavar="RUN_ID")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=positive_int, default=3)

    p = _command(sub, "export", cmd_export, "export a finished run's model")
    p.add_argument("--run", required=True, metavar="RUN_ID")
    p.add_argument("--format", required=True, choices=["state_dict", "torchscript", "onnx"])
    p.add_argument("--out", required=True, metavar="PATH")

    p = _command(
        sub,
        "cancel",
        cmd_cancel,
        "ask queued or running runs to stop: run ids, or a whole comparison or recipe",
    )
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    p.add_argument(
        "--group",
        metavar="GROUP_ID",
        help="every run of a comparison (its group_id) or recipe launch (its launch id)",
    )
    p = _command(sub, "store", cmd_store, "check the run store, or move a damaged one aside")
    p.add_argument("action", choices=["check", "reset"])
    p.add_argument("--force", action="store_true", help="reset even a healthy store")
