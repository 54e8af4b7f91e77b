"""What every command group shares: the parser class, argument types, output and progress."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator

from tl_core.fmt import percent
from tl_core.progress import Progress


class Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (argparse prints usage plus the line)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("python -m tl_core").strip()
        hint = f"python -m tl_core {command} --help" if command else "python -m tl_core --help"
        self.exit(2, f"error: {message} (see `{hint}`)\n")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def number(text: str) -> float:
    """argparse type: a number."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def positive_number(text: str) -> float:
    """argparse type: a finite number above 0 (`nan` and `inf` are refused)."""
    value = number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return value


def one_of(names: Iterable[str], what: str) -> Callable[[str], str]:
    """argparse type: one of `names` (a registry's keys); the error lists the choices."""
    names = list(names)

    def check(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {text!r}; choose one of: {', '.join(names)}"
            )
        return text

    check.__name__ = what  # argparse names the type in some messages
    return check


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json", action="store_true", help="print one JSON object as the last stdout line"
    )


def add_queue_flags(p: argparse.ArgumentParser) -> None:
    """--workspace and --queue, for the commands that start runs."""
    p.add_argument(
        "--workspace",
        default="",
        metavar="NAME",
        help="the workspace the runs belong to, as on the app's ?ws= (default: the default one)",
    )
    p.add_argument(
        "--queue",
        action="store_true",
        help="record the runs for the background worker (`python -m tl_core worker`) instead of "
        "training them here; print them with their queue position and exit",
    )


def queue_fields(store, rows: list[dict]) -> list[dict]:
    """Run summaries with `position` (1 = next, 0 = running) and `expected_start_s` (seconds
    from now, queued runs only) under the fair queue (`schedule.queue_view`)."""
    import time

    from tl_core.schedule import queue_view

    ids = {r["run_id"] for r in rows}
    view = {v["id"]: v for v in queue_view(store) if v["id"] in ids} if ids else {}
    now = time.time()
    out = []
    for r in rows:
        v = view.get(r["run_id"])
        wait = None
        if v is not None and v["status"] == "queued":
            wait = round(max(0.0, v["expected_start"] - now), 1)
        out.append({**r, "position": v and v["position"], "expected_start_s": wait})
    return out


def queue_table(rows: list[dict]) -> str:
    """Queued runs by position: where each waits and when it should start."""
    from tl_core.fmt import format_duration

    waiting = sorted((r for r in rows if r.get("expected_start_s") is not None), key=_position)
    lines = [f"{'position':>8} {'run_id':24} {'workspace':16} {'strategy':18} expected start"]
    for r in waiting:
        lines.append(
            f"{r['position']:>8} {r['run_id']:24} {r['workspace'] or '(default)':16} "
            f"{r['strategy']:18} in {format_duration(r['expected_start_s'])}"
        )
    return "\n".join(lines) if waiting else ""


def _position(row: dict) -> int:
    return row["position"]


def summaries(store, records: list[dict]) -> list[dict]:
    """The CLI's run rows: `run_summary`, the workspace, and the queue fields."""
    from tl_core.jobs import run_summary

    rows = [{**run_summary(r), "workspace": r.get("workspace") or ""} for r in records]
    return queue_fields(store, rows)


def queued_text(rows: list[dict], workspace: str) -> str:
    where = f"workspace {workspace}" if workspace else "the default workspace"
    return (
        f"queued {len(rows)} run(s) in {where}; the worker trains them "
        f"(`python -m tl_core worker`, or the app starts one)\n{queue_table(rows)}"
    )


def emit(obj, as_json: bool, text: str) -> None:
    """The command's result on stdout: one JSON line with --json, else `text`."""
    if as_json:
        sys.stdout.write(json.dumps(obj, default=str, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


def runs_table(rows: list[dict]) -> str:
    """Run summaries (`jobs.run_summary`) as a fixed-width table; with a workspace column
    where the rows carry one (`runs`), "(default)" for the default workspace."""
    spaces = any("workspace" in r for r in rows)
    header = f"{'run_id':24} " + (f"{'workspace':16} " if spaces else "")
    header += f"{'backbone':18} {'strategy':18} {'status':10} {'best':>7} {'final':>7} {'epochs':>6} {'seconds':>8} {'trainable':>11}"
    lines = [header, "-" * len(header)]
    for r in rows:
        secs = "-" if r.get("train_seconds") is None else f"{r['train_seconds']:.1f}"
        space = f"{r.get('workspace') or '(default)':16} " if spaces else ""
        lines.append(
            f"{r['run_id']:24} {space}{r['backbone']:18} {r['strategy']:18} {r['status']:10} "
            f"{percent(r['best_val_acc']):>7} {percent(r['final_val_acc']):>7} {r['epochs']:>6} "
            f"{secs:>8} {r['trainable_params'] or 0:>11,}"
        )
    return "\n".join(lines)


class Bars:
    """Progress on stderr: in a terminal, tqdm bars (one per epoch, one per one-off step);
    otherwise (a log, a pipe) plain lines, when a step starts and ends and every `every`
    seconds between, so that a long decoding or caching step is never silent."""

    def __init__(self, label: str = "", *, tty: bool | None = None, every: float = 5.0) -> None:
        self.label = label
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.every = every
        self.last_line = 0.0  # time.monotonic() of the last plain line
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
            )
            self.key = key
        return self.bar

    def _line(self, key, text: str, last: bool) -> None:
        """A plain line for a step's first event, its `last`, and one every `every` seconds."""
        now = time.monotonic()
        if self.key != key or last or now - self.last_line >= self.every:
            print(f"{self.label}{text}", file=sys.stderr, flush=True)
            self.last_line = now
        self.key = key

    def line(self, text: str) -> None:
        """A line of its own (what starts now), between the steps' bars or lines."""
        self.close()
        print(f"{self.label}{text}", file=sys.stderr, flush=True)

    def status(self, message: str, done: int, total: int) -> None:
        if not self.tty:
            self._line(("status", message), f"{message} {done}/{total}", done >= total)
            return
        bar = self._bar(("status", message), total, message)
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    def progress(self, p: Progress) -> None:
        """The library's one progress callback: a bar per one-off step and per epoch."""
        if p.stage != "train":
            self.status(p.message or p.stage, p.done, p.total)
            return
        if p.epoch_stats is None and not self.tty:
            text = f"epoch {p.epoch}/{p.epochs}: batch {p.batch}/{p.batches}"
            self._line(("epoch", p.epoch), f"{text}, loss {p.loss:.3f} acc {p.acc:.3f}", False)
        elif p.epoch_stats is None:
            bar = self._bar(("epoch", p.epoch), p.batches, f"epoch {p.epoch}/{p.epochs}")
            bar.set_postfix(loss=f"{p.loss:.3f}", acc=f"{p.acc:.3f}", refresh=False)
            bar.update(p.batch - bar.n)
        else:
            s = p.epoch_stats
            val = "" if s.val_acc is None else f" val_loss {s.val_loss:.4f} val_acc {s.val_acc:.4f}"
            self.line(
                f"epoch {s.epoch}/{p.epochs}: train_loss {s.train_loss:.4f} "
                f"train_acc {s.train_acc:.4f}{val} ({s.seconds:.1f}s)"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = self.key = None


@contextlib.contextmanager
def bars_on_stderr(label: str = "") -> Iterator[Bars]:
    """Progress bars for one piece of work, closed after it. Third-party loaders may print
    to stdout, so stdout goes to stderr meanwhile: stdout keeps the result alone."""
    bars = Bars(label)
    with contextlib.redirect_stdout(sys.stderr):
        try:
            yield bars
        finally:
            bars.close()


def open_store():
    from tl_core.runs import RunStore

    return RunStore()
