"""The background worker: takes queued runs from the run store and trains them, one at a time.

The web app never trains in a Streamlit thread. It calls `ensure_worker()`, which starts
`python -m tl_core worker` as a separate process when none is running for this lab home.
By default one worker runs per lab home, so one run trains at a time (on a 2-core CPU two
runs at once only make both slower); `TL_LAB_MAX_WORKERS=N` allows N. Each worker holds an
exclusive lock on its slot (`worker.lock`, `worker-1.lock`, ...) for its whole life (the
operating system drops the lock when the process dies, however it dies).
The worker

- runs at a lower priority than the web server (`os.nice`), so pages stay responsive;
- writes a heartbeat file (`worker.json`: pid, current run, time) every couple of seconds;
- marks runs `failed`, with the reason, when the process that ran them is gone or their
  heartbeat has gone stale;
- stops cleanly on SIGTERM/SIGINT (the run in progress is marked failed with the reason),
  and exits by itself after a while with nothing to do (the app starts it again).

It also answers "when will my run start?": `queue_view` gives each queued or running run its
position and expected start from `estimate_seconds`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tl_core import paths
from tl_core.errors import LabError

LOCK_FILE = "worker.lock"
HEARTBEAT_FILE = "worker.json"
LOG_FILE = "worker.log"
STALE_AFTER = 300.0  # seconds without a run heartbeat before a running run counts as dead
IDLE_EXIT = 900.0  # seconds with an empty queue before the worker exits
NICENESS = 10


def max_workers() -> int:
    """How many runs may train at once in one lab home (`TL_LAB_MAX_WORKERS`, default 1)."""
    raw = os.environ.get("TL_LAB_MAX_WORKERS", "1")
    try:
        value = int(raw)
    except ValueError:
        raise LabError(f"TL_LAB_MAX_WORKERS must be a whole number, got {raw!r}") from None
    if not 1 <= value <= 16:
        raise LabError(f"TL_LAB_MAX_WORKERS must be between 1 and 16, got {value}")
    return value


def _slot_file(name: str, slot: int) -> str:
    stem, dot, ext = name.partition(".")
    return name if slot == 0 else f"{stem}-{slot}{dot}{ext}"


class Stopped(Exception):
    """Raised inside the worker when it receives SIGTERM or SIGINT."""


# ---------------------------------------------------------------------------- the lock


class WorkerLock:
    """An exclusive, non-blocking lock on `worker.lock`, released when the process dies."""

    def __init__(self, home: Path, slot: int = 0) -> None:
        self.path = Path(home) / _slot_file(LOCK_FILE, slot)
        self.fh = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            _lock(fh)
        except OSError:
            fh.close()
            return False
        self.fh = fh
        return True

    def release(self) -> None:
        if self.fh is not None:
            _unlock(self.fh)
            self.fh.close()
            self.fh = None


def _lock(fh) -> None:
    try:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)


def _unlock(fh) -> None:
    try:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except ImportError:
        import msvcrt

        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)


def busy_slots(home: str | Path | None = None) -> int:
    """How many worker slots of this lab home are held right now."""
    home = Path(home) if home is not None else paths.lab_home()
    busy = 0
    for slot in range(max_workers()):
        lock = WorkerLock(home, slot)
        if lock.acquire():
            lock.release()
        else:
            busy += 1
    return busy


def worker_running(home: str | Path | None = None) -> bool:
    """Whether any worker holds a lock of this lab home right now."""
    return busy_slots(home) > 0


def worker_status(home: str | Path | None = None) -> dict[str, Any]:
    """{'running': bool, 'pid', 'run_id', 'age' (seconds since its last heartbeat), ...}."""
    home = Path(home) if home is not None else paths.lab_home()
    info: dict[str, Any] = {"running": worker_running(home)}
    try:
        beat = json.loads((home / HEARTBEAT_FILE).read_text())
    except (OSError, ValueError):
        return info
    info.update(beat)
    info["age"] = time.time() - float(beat.get("time", 0))
    return info


# ---------------------------------------------------------------------------- starting it


def ensure_worker(home: str | Path | None = None) -> int | None:
    """Start a worker for this lab home unless one is running; returns the new pid or None.

    The worker is a plain subprocess (`python -m tl_core worker`), not a fork of the web
    server: forking a process whose torch threads are running can hang. It stays in the
    server's process group, so stopping the server (Ctrl-C, a container stop) stops it too;
    runs already queued resume when the app starts a worker again. Set
    `TL_LAB_NO_WORKER=1` where something else runs the worker (a service, or tests), and
    `TL_LAB_WORKER_IDLE_EXIT=SECONDS` to change how long an idle worker waits.
    """
    if os.environ.get("TL_LAB_NO_WORKER") == "1":
        return None
    home = Path(home) if home is not None else paths.lab_home()
    with _spawn_lock:
        # A worker this process started may still be importing torch, before it takes the
        # lock: starting another one then would only cost a second import.
        alive = [p for p in _spawned.get(str(home), []) if p.poll() is None]
        busy = busy_slots(home)
        if len(alive) > busy or busy >= max_workers():
            return None
        proc = _spawn(home)
        _spawned[str(home)] = [*alive, proc]
    return proc.pid


_spawn_lock = threading.Lock()
_spawned: dict[str, list[subprocess.Popen]] = {}


def _spawn(home: Path) -> subprocess.Popen:
    package_root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, TL_LAB_HOME=str(home))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p
    )
    command = [sys.executable, "-m", "tl_core", "worker"]
    if os.environ.get("TL_LAB_WORKER_IDLE_EXIT"):
        command += ["--idle-exit", os.environ["TL_LAB_WORKER_IDLE_EXIT"]]
    log = open(home / LOG_FILE, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            command,
            cwd=package_root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            close_fds=True,
        )
    finally:
        log.close()
    # Reap it when it exits, so that no zombie is left behind in a long-lived server.
    threading.Thread(target=proc.wait, daemon=True, name="tl-worker-reaper").start()
    return proc


# ---------------------------------------------------------------------------- the loop


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def fail_orphans(store, stale_after: float = STALE_AFTER) -> list[str]:
    """Mark running runs failed when their process is gone or their heartbeat is stale."""
    failed = []
    for run in store.list(status="running"):
        pid = run.get("worker_pid")
        if pid and pid != os.getpid() and not _pid_alive(pid):
            store.finish(
                run["id"],
                "failed",
                error=f"the process that ran it (pid {pid}) stopped before the run finished "
                "(killed, or the machine restarted); "
                + (
                    f"continue it from its last finished epoch with `python -m tl_core resume {run['id']}`"
                    if (store.run_dir(run["id"], create=False) / "checkpoint.pt").is_file()
                    else "start the run again"
                ),
            )
            failed.append(run["id"])
    return failed + store.fail_stale(stale_after)


class _Heartbeat:
    """Writes `worker.json` every `every` seconds from a daemon thread (no Streamlit here)."""

    def __init__(self, home: Path, slot: int = 0, every: float = 2.0) -> None:
        self.path = home / _slot_file(HEARTBEAT_FILE, slot)
        self.every = every
        self.run_id: str | None = None
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="tl-heartbeat")

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        data = {
            "pid": os.getpid(),
            "started": self.started,
            "time": time.time(),
            "run_id": self.run_id,
        }
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError:
            pass

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.beat()

    def stop(self) -> None:
        self._stop.set()
        self.path.unlink(missing_ok=True)


def advance_recipes(store) -> bool:
    """Queue the next stage of recipe launches whose current stage has finished, so that
    a multi-stage recipe goes on with no page open. Returns whether anything was queued."""
    try:
        from tl_core import recipes
    except ModuleNotFoundError:
        return False
    queued = False
    for launch in recipes.list_launches():
        stages = launch.get("stages") or []
        if len(stages) >= len(launch.get("plan", {}).get("stages", [])):
            continue  # every stage queued already
        try:
            status = recipes.advance_recipe(store, launch["launch_id"])
        except LabError as exc:
            _log(f"recipe {launch.get('launch_id')}: {exc}")
            continue
        queued = queued or len(status.run_ids) > len(stages)
    return queued


def _on_signal(signum, _frame) -> None:
    raise Stopped(signal.Signals(signum).name)


def run_worker(
    home: str | Path | None = None,
    *,
    once: bool = False,
    poll: float = 1.0,
    idle_exit: float = IDLE_EXIT,
    stale_after: float = STALE_AFTER,
    nice: int = NICENESS,
) -> int:
    """Train queued runs until the queue stays empty for `idle_exit` seconds.

    With `once`, train whatever is queued now and return. Returns the number of runs it
    took. Returns 0 at once when another worker holds this lab home's lock.
    """
    from tl_core.allocator import release_free_memory
    from tl_core.jobs import execute_run
    from tl_core.runs import RunStore

    home = Path(home) if home is not None else paths.lab_home()
    lock, slot = None, 0
    for slot in range(max_workers()):  # noqa: B007 - the slot taken is used below
        candidate = WorkerLock(home, slot)
        if candidate.acquire():
            lock = candidate
            break
    if lock is None:
        _log(f"{max_workers()} worker(s) already running for {home} (TL_LAB_MAX_WORKERS); exiting")
        return 0
    if nice:
        with contextlib.suppress(AttributeError, OSError):  # no os.nice on Windows
            os.nice(nice)
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    store = RunStore(home)
    heartbeat = _Heartbeat(home, slot)
    heartbeat.start()
    taken = 0
    idle_since = time.monotonic()
    _log(f"worker {os.getpid()} started for {home}")
    try:
        while True:
            for run_id in fail_orphans(store, stale_after):
                _log(f"run {run_id}: marked failed (its worker stopped)")
            run = store.claim_next(os.getpid())
            if run is None and advance_recipes(store):
                continue
            if run is None:
                if once or time.monotonic() - idle_since > idle_exit:
                    break
                time.sleep(poll)
                continue
            taken += 1
            heartbeat.run_id = run["id"]
            heartbeat.beat()
            _log(f"run {run['id']}: {run['backbone']} {run['strategy']} started")
            try:
                record = execute_run(store, run["id"])
                _log(f"run {run['id']}: {record['status']}")
            except Stopped as exc:
                store.finish(
                    run["id"],
                    "failed",
                    error=f"the worker was stopped ({exc}) while this run was in progress; "
                    "start it again",
                )
                raise
            except Exception as exc:  # noqa: BLE001 - execute_run already marked it failed
                _log(f"run {run['id']}: failed: {exc.__class__.__name__}: {exc}")
            heartbeat.run_id = None
            heartbeat.beat()
            release_free_memory()  # an idle worker should not sit on the last run's memory
            idle_since = time.monotonic()
    except Stopped as exc:
        _log(f"worker {os.getpid()} stopped by {exc}")
    finally:
        heartbeat.stop()
        lock.release()
        if in_main:
            for s, handler in old.items():
                signal.signal(s, handler)
    _log(f"worker {os.getpid()} exiting after {taken} run(s)")
    return taken


def _log(message: str) -> None:
    print(time.strftime("%Y-%m-%d %H:%M:%S"), message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- estimates

# Seconds per image for one training step (forward + backward) and one forward pass, on
# one CPU thread; measured roughly on a 2-core machine and scaled by the threads there are.
# Used only until this lab home has finished runs of the same backbone and strategy.
_CPU_SECONDS_PER_IMAGE = {
    "small_cnn": (0.004, 0.001),
    "efficientnet_lite0": (0.5, 0.15),
    "resnet18": (0.7, 0.2),
    "vgg16": (6.0, 2.0),
}
_GPU_SPEEDUP = 25.0
_OVERHEAD_SECONDS = 10.0  # start-up: building the model, decoding pictures


@dataclass(frozen=True)
class Estimate:
    seconds: float
    basis: str  # "past runs here" or "rough table"


def estimate_seconds(
    spec,
    num_train: int,
    num_val: int,
    store=None,
) -> Estimate:
    """How long a run of `spec` on this many images should take on this machine."""
    from tl_core.train import resolve_device, usable_cpus

    epochs = spec.train.epochs
    images = max(1, num_train + num_val)
    if store is not None:
        rates = []
        for r in store.list(status="done", limit=200):
            if (
                r["backbone"] == spec.backbone
                and r["strategy"] == spec.strategy
                and r.get("train_seconds")
                and r.get("epoch")
            ):
                seen = (r.get("num_train") or 0) + (r.get("num_val") or 0)
                if seen:
                    rates.append(r["train_seconds"] / (r["epoch"] * seen))
            if len(rates) >= 5:
                break
        if rates:
            rates.sort()
            return Estimate(rates[len(rates) // 2] * epochs * images, "past runs here")
    train_cost, fwd_cost = _CPU_SECONDS_PER_IMAGE.get(spec.backbone, (0.3, 0.1))
    try:
        device = resolve_device(spec.train.device).type
    except LabError:
        device = "cpu"
    scale = (1 / _GPU_SPEEDUP) if device == "cuda" else 1 / max(1, usable_cpus())
    if spec.strategy == "feature_extractor" and spec.fast:
        views = 1 if spec.augment == "none" else spec.feature_views
        seconds = (num_train * views + num_val) * fwd_cost * scale + epochs * 0.01 * images
    else:
        if spec.strategy == "feature_extractor":
            train_cost = fwd_cost * 1.3
        seconds = epochs * (num_train * train_cost + num_val * fwd_cost) * scale
        seconds += num_train * 0.01  # decoding
    return Estimate(seconds + _OVERHEAD_SECONDS, "rough table")


def _spec_estimate(run: dict, store) -> float:
    from tl_core.jobs import RunSpec

    spec = RunSpec.from_dict(run["config"])
    n_train = run.get("num_train")
    n_val = run.get("num_val")
    if not n_train:
        try:
            from tl_core.data.folder import scan_dataset

            split = scan_dataset(
                spec.data,
                val_fraction=spec.val_fraction,
                seed=spec.split_seed,
                per_class=spec.per_class,
            )
            n_train, n_val = len(split.train), len(split.val)
        except LabError:
            n_train, n_val = 100, 25
    return estimate_seconds(spec, n_train, n_val or 0, store).seconds


def progress_fraction(run: dict) -> float:
    """How much of a running run is done, 0..1, from its epoch and batch counters."""
    total = run.get("epochs_total") or 0
    if not total:
        return 0.0
    done = run.get("epoch") or 0
    if run.get("phase") == "training" and run.get("batches"):
        done += (run.get("batch") or 0) / run["batches"]
    return max(0.0, min(1.0, done / total))


def time_left(run: dict, estimate: float, now: float | None = None) -> float:
    """Seconds a running run still needs: from its pace once training, else the estimate."""
    now = now or time.time()
    elapsed = max(0.0, now - (run.get("started") or now))
    fraction = progress_fraction(run)
    if fraction > 0.02 and elapsed > 2:
        return max(0.0, elapsed / fraction - elapsed)
    return max(0.0, estimate - elapsed)


def queue_view(store, workspace: str | None = None) -> list[dict]:
    """Queued and running runs in worker order, each with `position` (0 = running now),
    `estimate` (seconds), `time_left` and `expected_start` (epoch seconds).

    The queue is shared by every workspace (one worker), so the expected start of a run
    counts the runs of other workspaces ahead of it; only `workspace`'s runs are returned.
    """
    now = time.time()
    out = []
    clock = now
    position = 0
    cache: dict[str, float] = {}
    for run in store.queue():
        key = json.dumps(run["config"], sort_keys=True)
        if key not in cache:
            cache[key] = _spec_estimate(run, store)
        estimate = cache[key]
        if run["status"] == "running":
            left = time_left(run, estimate, now)
            entry = {**run, "position": 0, "estimate": estimate, "time_left": left}
            entry["expected_start"] = run.get("started") or now
            clock = max(clock, now + left)
        else:
            position += 1
            entry = {**run, "position": position, "estimate": estimate, "time_left": estimate}
            entry["expected_start"] = clock
            clock += estimate
        if workspace is None or run.get("workspace", "") == workspace:
            out.append(entry)
    return out


# ---------------------------------------------------------------------------- CLI


def cmd_worker(args: argparse.Namespace) -> int:
    taken = run_worker(once=args.once, poll=args.poll, idle_exit=args.idle_exit, nice=args.nice)
    print(json.dumps({"runs": taken}) if args.json else f"worker took {taken} run(s)")
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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_worker)


def format_duration(seconds: float | None) -> str:
    """'45 s', '3 min 5 s', '1 h 2 min'."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


__all__: Sequence[str] = (
    "ensure_worker",
    "run_worker",
    "worker_running",
    "worker_status",
    "queue_view",
    "estimate_seconds",
    "format_duration",
)
