"""Who owns a run or a temporary file: whether that process still lives, and removing the
temporaries of processes that are gone.

A process that is killed (`kill -9`, a machine restart) leaves behind what it was writing: a
`.checkpoint.pt.tmpPID` beside a run's files, a `.tmp-NAME-PID-*` folder beside a data set.
Each such name carries the writer's pid, so a later process can tell a leftover from work in
progress: it is stale when it is older than `STALE_TEMP_AGE` AND its pid is no longer a live
process on this machine. Both conditions, so that neither a slow import nor a recycled pid
loses anything.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

STALE_TEMP_AGE = 3600.0  # seconds: a temporary younger than this is never removed
# A running run on another machine whose heartbeat is this old has lost its process.
OWNER_STALE_AFTER = 300.0

# Names of temporaries. Each has a `pid` group; a name without one (written by an older
# version) is judged by its age alone.
TEMP_PATTERNS = (
    re.compile(r"^\..+\.tmp(?P<pid>\d+)$"),  # runs.atomic_write_bytes
    re.compile(r"^\.(?:tmp|old|trash)-.+?(?:-p(?P<pid>\d+))?-[0-9a-f]{8}$"),  # data sets
)


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid exists on this machine."""
    if not pid or pid < 0:
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


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), where the system says (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def owner_alive(pid: int | None, since: float | None = None) -> bool:
    """Whether process `pid` on this machine lives and is the one that started at `since` or
    before (a pid recycled by a newer process is not the owner)."""
    if not pid_alive(pid):
        return False
    if pid == os.getpid() or since is None:
        return True
    started = process_start_time(int(pid))
    # Start times are rounded to clock ticks and the boot time to seconds: allow 2 s.
    return started is None or started <= since + 2.0


def _is_stale(path: Path, now: float, max_age: float) -> bool:
    for pattern in TEMP_PATTERNS:
        match = pattern.match(path.name)
        if match is None:
            continue
        try:
            age = now - path.lstat().st_mtime
        except OSError:
            return False
        pid = match.group("pid")
        return age > max_age and not (pid and pid_alive(int(pid)))
    return False


def remove_stale_temporaries(
    folders: Iterable[Path], *, max_age: float = STALE_TEMP_AGE
) -> list[Path]:
    """Remove the stale temporaries directly inside `folders`; returns what was removed.

    Only names that `TEMP_PATTERNS` recognise are considered; anything else is left alone.
    """
    removed = []
    now = time.time()
    for folder in folders:
        try:
            entries = list(Path(folder).iterdir())
        except OSError:
            continue
        for path in entries:
            if not _is_stale(path, now, max_age):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            if not path.exists():
                removed.append(path)
    return removed


_LAST_RUN_CLEANUP: dict[Path, float] = {}


def remove_run_leftovers(home: Path, runs_root: Path, *, every: float = 600.0) -> None:
    """Remove killed writers' temporaries in the lab home and the run folders (a half-written
    checkpoint can be tens of MB); at most every `every` seconds per process and home."""
    now = time.time()
    if now - _LAST_RUN_CLEANUP.get(runs_root, 0.0) < every:
        return
    _LAST_RUN_CLEANUP[runs_root] = now
    try:
        folders = [p for p in runs_root.iterdir() if p.is_dir()]
    except OSError:
        return
    remove_stale_temporaries([home, *folders])


def owner_gone(record: dict[str, Any], *, stale_after: float = OWNER_STALE_AFTER) -> bool:
    """Whether a running run has lost the process that ran it.

    On this machine the recorded pid tells: gone when no such process lives, or when the
    process with that pid started after the run's last heartbeat (the pid was reused). For a
    run of another machine, or one recorded without its machine, only a heartbeat older than
    `stale_after` seconds tells.
    """
    if record.get("status") != "running":
        return False
    beat = record.get("heartbeat") or record.get("started") or record.get("created") or 0.0
    if record.get("owner_host") == this_host():
        return not owner_alive(record.get("worker_pid"), since=beat)
    return time.time() - beat > stale_after


def orphan_reason(record: dict[str, Any]) -> str:
    where = f"pid {record.get('worker_pid')} on {record.get('owner_host') or 'an unknown machine'}"
    return (
        f"its process ({where}) ended without finishing (killed, or the machine restarted); "
        f"continue it from its last finished epoch with `python -m tl_core resume {record['id']}`"
    )


def end_orphan(conn: sqlite3.Connection, row: sqlite3.Row | None, status: str) -> bool:
    """End a running run whose process is gone (`owner_gone`); True when it did as `status`."""
    if row is None or not owner_gone(dict(row)):
        return False
    conn.execute(
        "UPDATE runs SET status = ?, finished = ?, error = ? WHERE id = ?",
        (status, time.time(), orphan_reason(dict(row)), row["id"]),
    )
    return True
