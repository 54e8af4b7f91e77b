"""`python -m tl_core`: everything the app does, from a terminal.

The commands, flags and JSON fields here are a contract that scripts and docs rely on. With
`--json`, the last line on stdout is one JSON object (or list); progress bars go to stderr.
Bad input exits with code 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from tl_core.errors import DISK_ERRNOS, LabError, disk_error_message
from tl_core.strategies import STRATEGIES

# ---------------------------------------------------------------------------- helpers


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (argparse prints usage plus the line)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("python -m tl_core").strip()
        hint = f"python -m tl_core {command} --help" if command else "python -m tl_core --help"
        self.exit(2, f"error: {message} (see `{hint}`)\n")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (shared by the command groups)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _emit(obj, as_json: bool, text: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, default=str) + "\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _table(rows: list[dict]) -> str:
    header = f"{'run_id':24} {'backbone':18} {'strategy':18} {'status':10} {'best':>7} {'final':>7} {'epochs':>6} {'seconds':>8} {'trainable':>11}"
    lines = [header, "-" * len(header)]
    for r in rows:
        secs = "-" if r.get("train_seconds") is None else f"{r['train_seconds']:.1f}"
        lines.append(
            f"{r['run_id']:24} {r['backbone']:18} {r['strategy']:18} {r['status']:10} "
            f"{_pct(r['best_val_acc']):>7} {_pct(r['final_val_acc']):>7} {r['epochs']:>6} {secs:>8} "
            f"{r['trainable_params'] or 0:>11,}"
        )
    return "\n".join(lines)


class _Bars:
    """tqdm progress bars on stderr: one per epoch, one per one-off step."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.bar = None
        self.key = None

    def _bar(self, key, total: int, desc: str):
        from tqdm import tqdm

        if self.key != key:
            self.close()
            self.bar = tqdm(
                total=total,
                desc=f"{self.label}{desc}",
                file=sys.stderr,
                leave=False,
                mininterval=0.5,
                disable=None,  # bars in a terminal; logs and pipes get the epoch lines only
            )
            self.key = key
        return self.bar

    def status(self, message: str, done: int, total: int) -> None:
        bar = self._bar(("status", message), total, message)
        bar.update(done - bar.n)

    def progress(self, p) -> None:
        bar = self._bar(("epoch", p.epoch), p.batches, f"epoch {p.epoch}/{p.epochs}")
        bar.set_postfix(loss=f"{p.loss:.3f}", acc=f"{p.acc:.3f}", refresh=False)
        bar.update(p.batch - bar.n)
        if p.epoch_stats is not None:
            s = p.epoch_stats
            self.close()
            val = "" if s.val_acc is None else f" val_loss {s.val_loss:.4f} val_acc {s.val_acc:.4f}"
            print(
                f"{self.label}epoch {s.epoch}/{p.epochs}: train_loss {s.train_loss:.4f} "
                f"train_acc {s.train_acc:.4f}{val} ({s.seconds:.1f}s)",
                file=sys.stderr,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = self.key = None


# ---------------------------------------------------------------------------- train options


def _default_views() -> int:
    from tl_core.jobs import RunSpec

    return RunSpec.__dataclass_fields__["feature_views"].default


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from tl_core.train import TrainConfig

    d = TrainConfig()
    p.add_argument(
        "--data", required=True, help="a data set folder, or the name of an imported data set"
    )
    p.add_argument(
        "--backbone", required=True, help="resnet18, vgg16, efficientnet_lite0 or small_cnn"
    )
    p.add_argument("--epochs", type=positive_int, default=d.epochs)
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--lr", type=_float, default=d.lr)
    p.add_argument("--momentum", type=_float, default=d.momentum)
    p.add_argument("--weight-decay", type=_float, default=d.weight_decay)
    p.add_argument("--optimizer", default=d.optimizer, help="sgd, adam or adamw")
    p.add_argument("--schedule", default=d.schedule, help="none, step (StepLR), cosine or onecycle")
    p.add_argument("--step-size", type=positive_int, default=d.step_size)
    p.add_argument("--gamma", type=_float, default=d.gamma)
    p.add_argument(
        "--backbone-lr-mult",
        type=_float,
        default=d.backbone_lr_mult,
        help="learning rate of pretrained layers relative to the new head (default 1)",
    )
    p.add_argument(
        "--bn",
        default=d.bn,
        help="BatchNorm running statistics: train (updated) or frozen (kept; default train)",
    )
    p.add_argument(
        "--warmup-epochs",
        type=int,
        default=d.warmup_epochs,
        help="epochs over which the learning rate rises linearly from ~0 (default 0)",
    )
    p.add_argument(
        "--probe-epochs",
        type=positive_int,
        default=d.probe_epochs,
        help=f"probe_finetune: epochs of the head alone on cached features (default {d.probe_epochs})",
    )
    p.add_argument(
        "--early-stopping",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="stop after this many epochs without a better validation accuracy",
    )
    p.add_argument("--augment", default="crop_flip", help="crop_flip, none or crop_flip_jitter")
    p.add_argument("--per-class", type=int, default=None, help="cap training images per class")
    p.add_argument("--val-fraction", type=_float, default=0.2)
    p.add_argument(
        "--trainable-blocks",
        type=int,
        default=1,
        help="layer groups that train in partial_finetune",
    )
    p.add_argument(
        "--init-from", default=None, metavar="RUN_ID", help="start from a finished run's weights"
    )
    p.add_argument("--weights", default=None, metavar="FILE", help="a local ImageNet weights file")
    p.add_argument(
        "--feature-views",
        type=int,
        default=_default_views(),
        help=f"augmented views cached per image (feature_extractor; default {_default_views()})",
    )
    p.add_argument("--no-fast", action="store_true", help="disable the cached-feature fast path")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or mps")
    p.add_argument("--precision", default=d.precision, help="auto, fp32 or bf16")
    p.add_argument("--name", default=None)
    p.add_argument(
        "--json", action="store_true", help="print one JSON object as the last stdout line"
    )


def _spec(args: argparse.Namespace, strategy: str, seed: int | None = None):
    from tl_core.jobs import RunSpec
    from tl_core.train import TrainConfig

    if args.weights is not None and not Path(args.weights).expanduser().is_file():
        raise LabError(f"weights file not found: {args.weights}")
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        schedule=args.schedule,
        step_size=args.step_size,
        gamma=args.gamma,
        backbone_lr_mult=args.backbone_lr_mult,
        bn=args.bn,
        warmup_epochs=args.warmup_epochs,
        probe_epochs=args.probe_epochs,
        early_stopping=args.early_stopping,
        seed=args.seed if seed is None else seed,
        device=args.device,
        precision=args.precision,
    )
    return RunSpec(
        data=args.data,
        backbone=args.backbone,
        strategy=strategy,
        train=config,
        trainable_blocks=args.trainable_blocks,
        augment=args.augment,
        per_class=args.per_class,
        val_fraction=args.val_fraction,
        init_from=args.init_from,
        weights=args.weights,
        feature_views=args.feature_views,
        fast=not args.no_fast,
        name=args.name,
    ).validate()


def _store():
    from tl_core.runs import RunStore

    return RunStore()


def _run_specs(specs: list, as_json: bool) -> list[dict]:
    from tl_core.jobs import execute_run, queue_runs, run_summary

    store = _store()
    ids = queue_runs(store, specs, request_id=str(uuid.uuid4()))
    results = []
    for n, run_id in enumerate(ids, start=1):
        label = f"[{n}/{len(ids)} {specs[n - 1].strategy}] " if len(ids) > 1 else ""
        bars = _Bars(label)
        # Third-party loaders may print to stdout; keep stdout for the result alone.
        with contextlib.redirect_stdout(sys.stderr):
            try:
                record = execute_run(
                    store, run_id, on_progress=bars.progress, on_status=bars.status
                )
            except KeyboardInterrupt:
                store.finish(run_id, "cancelled", error="interrupted from the keyboard")
                raise
            finally:
                bars.close()
        results.append(run_summary(record))
    return results


# ---------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    (result,) = _run_specs([_spec(args, args.strategy)], args.json)
    _emit(result, args.json, _table([result]))
    return 0 if result["status"] == "done" else 1


def cmd_compare(args: argparse.Namespace) -> int:
    from tl_core.models import check_strategy

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not strategies:
        raise LabError(
            "--strategies is empty; give a comma-separated list such as scratch,feature_extractor"
        )
    for s in strategies:
        check_strategy(s)
    specs = [_spec(args, s, seed=args.seed + k) for s in strategies for k in range(args.seeds)]
    results = _run_specs(specs, args.json)
    _emit(results, args.json, _table(results))
    return 0 if all(r["status"] == "done" for r in results) else 1


def cmd_resume(args: argparse.Namespace) -> int:
    from tl_core.jobs import resume_run, run_summary

    store = _store()
    bars = _Bars()
    with contextlib.redirect_stdout(sys.stderr):
        try:
            record = resume_run(
                store, args.run_id, on_progress=bars.progress, on_status=bars.status
            )
        finally:
            bars.close()
    result = run_summary(record)
    _emit(result, args.json, _table([result]))
    return 0 if result["status"] == "done" else 1


def cmd_runs(args: argparse.Namespace) -> int:
    from tl_core.jobs import run_summary

    rows = [run_summary(r) for r in _store().list(limit=args.limit)]
    _emit(rows, args.json, _table(rows) if rows else "no runs yet")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from tl_core.jobs import run_summary

    store = _store()
    record = store.get(args.run_id)
    summary = run_summary(record)
    summary["config"] = record.get("config")
    summary["classes"] = record.get("classes")
    summary["history"] = store.epochs(args.run_id)
    lines = [_table([summary]), ""]
    for e in summary["history"]:
        lines.append(
            f"epoch {e['epoch']:>3}: train_loss {e['train_loss']:.4f} train_acc {e['train_acc']:.4f} "
            f"val_loss {e['val_loss'] if e['val_loss'] is None else round(e['val_loss'], 4)} "
            f"val_acc {e['val_acc'] if e['val_acc'] is None else round(e['val_acc'], 4)} "
            f"({e['seconds']:.1f}s, lr {e['lr']:g})"
        )
    if record.get("error"):
        lines.append(f"note: {record['error']}")
    _emit(summary, args.json, "\n".join(lines))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tl_core.evaluate import load_trained, predict_files

    trained = load_trained(_store(), args.run)
    results = predict_files(trained, args.images, top_k=args.top_k)
    text = []
    for r in results:
        if "error" in r:
            text.append(f"{r['image']}: cannot read ({r['error']})")
        else:
            text.append(
                f"{r['image']}: "
                + ", ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"])
            )
    _emit(results if args.json else None, args.json, "\n".join(text))
    return 0 if all("error" not in r for r in results) else 1


def cmd_export(args: argparse.Namespace) -> int:
    from tl_core.evaluate import load_trained
    from tl_core.export import export_model

    info = export_model(load_trained(_store(), args.run), args.format, args.out)
    _emit(
        info,
        args.json,
        f"exported run {args.run} as {args.format} to {info['path']} (details in {info['path']}.json)",
    )
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from tl_core.groups import cancel_group, cancel_runs

    if bool(args.run_ids) == bool(args.group):
        raise LabError("give run ids or --group GROUP_ID (one of the two)")
    if len(args.run_ids) == 1:  # one run: the single object this command always printed
        status = _store().request_cancel(args.run_ids[0])
        row = {"run_id": args.run_ids[0], "status": status}
        _emit(row, args.json, f"run {row['run_id']}: {status}")
        return 0
    rows = cancel_group(_store(), args.group) if args.group else cancel_runs(_store(), args.run_ids)
    text = "\n".join(f"run {r['run_id']}: {r['status']}" for r in rows) or "nothing to cancel"
    _emit(rows, args.json, text)
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from tl_core import paths
    from tl_core.runs import check_store, move_store_aside

    found = check_store()
    if args.action == "check":
        _emit({"status": found}, args.json, f"run store: {found}")
        return 0 if found == "ok" else 1
    if found == "ok" and not args.force:
        raise LabError(
            "the run store is healthy; nothing to reset (add --force to start afresh anyway)"
        )
    kept = move_store_aside()
    _emit(
        {"status": "reset", "kept": str(kept) if kept else None},
        args.json,
        f"started a new run store in {paths.lab_home()}; the old one is kept as {kept}",
    )
    return 0


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m tl_core", description="Transfer Learning Lab from the command line."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train one run")
    _add_train_options(p)
    p.add_argument(
        "--strategy",
        required=True,
        help=", ".join(STRATEGIES),
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="train several strategies on the same split, as one group")
    _add_train_options(p)
    p.add_argument(
        "--strategies", required=True, help="comma-separated, e.g. scratch,feature_extractor"
    )
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        help="runs per strategy, with seeds seed..seed+N-1",
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("resume", help="continue a failed or cancelled run from its last epoch")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("runs", help="list runs, newest first")
    p.add_argument("--limit", type=positive_int, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", help="one run in full")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("predict", help="classify images with a finished run")
    p.add_argument("--run", required=True, metavar="RUN_ID")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=positive_int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a finished run's model")
    p.add_argument("--run", required=True, metavar="RUN_ID")
    p.add_argument("--format", required=True, choices=["state_dict", "torchscript", "onnx"])
    p.add_argument("--out", required=True, metavar="PATH")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "cancel",
        help="ask queued or running runs to stop: run ids, or a whole comparison or recipe",
    )
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    p.add_argument(
        "--group",
        metavar="GROUP_ID",
        help="every run of a comparison (its group_id) or recipe launch (its launch id)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("store", help="check the run store, or move a damaged one aside")
    p.add_argument("action", choices=["check", "reset"])
    p.add_argument("--force", action="store_true", help="reset even a healthy store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_store)

    for module in _plugins():
        module.add_parser(sub)
    return parser


def _plugins() -> list:
    """Command groups that live beside the concept they drive (data, worker, recipes, bench)."""
    import importlib

    found = []
    for name in (
        "tl_core.data.cli",
        "tl_core.worker",
        "tl_core.recipes",
        "tl_core.bench",
        "tl_core.lr_find",
        "tl_core.launcher",
    ):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        if hasattr(module, "add_parser"):
            found.append(module)
    return found


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
