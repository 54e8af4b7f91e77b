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

How long queued runs will wait is `tl_core.schedule`'s job; the `worker` command is in
`tl_core.cli.worker`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tl_core import paths
from tl_core.errors import LabError
from tl_core.owners import pid_alive
from tl_core.ray_exec import executor

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


def fail_orphans(store, stale_after: float = STALE_AFTER) -> list[str]:
    """Mark running runs failed when their process is gone or their heartbeat is stale."""
    failed = []
    for run in store.list(status="running"):
        pid = run.get("worker_pid")
        if pid and pid != os.getpid() and not pid_alive(pid):
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
    from tl_core.runs import RunStore

    home = Path(home) if home is not None else paths.lab_home()
    lock, slot = _take_slot(home)
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
    mode = executor()  # TL_LAB_EXECUTOR: local (here) or ray (tl_core.ray_exec)
    try:
        if mode == "ray":
            from tl_core.ray_exec import serve

            once_args = {"once": once, "poll": poll, "idle_exit": idle_exit}
            taken = serve(store, heartbeat, limit=max_workers(), **once_args)
        while mode == "local":
            for run_id in fail_orphans(store, stale_after):
                _log(f"run {run_id}: marked failed (its worker stopped)")
            run = store.claim_next(os.getpid())
            if run is None:
                if once or time.monotonic() - idle_since > idle_exit:
                    break
                time.sleep(poll)
                continue
            taken += 1
            _run_one(store, run, heartbeat)
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


def _take_slot(home: Path) -> tuple[WorkerLock | None, int]:
    """The first free worker slot's lock, held, and its number; (None, 0) when all are busy."""
    for slot in range(max_workers()):
        lock = WorkerLock(home, slot)
        if lock.acquire():
            return lock, slot
    return None, 0


def _run_one(store, run: dict, heartbeat: _Heartbeat) -> None:
    """Train one claimed run; a failure is recorded on the run, a stop fails it and re-raises."""
    from tl_core.allocator import release_free_memory
    from tl_core.jobs import execute_run

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
            error=f"the worker was stopped ({exc}) while this run was in progress; start it again",
        )
        raise
    except Exception as exc:  # noqa: BLE001 - execute_run already marked it failed
        _log(f"run {run['id']}: failed: {exc.__class__.__name__}: {exc}")
    heartbeat.run_id = None
    heartbeat.beat()
    release_free_memory()  # an idle worker should not sit on the last run's memory


def _log(message: str) -> None:
    print(time.strftime("%Y-%m-%d %H:%M:%S"), message, file=sys.stderr, flush=True)
