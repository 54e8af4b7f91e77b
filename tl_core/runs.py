"""The run store: SQLite for records, a folder per run for weights and predictions.

One database file (`runs.sqlite` in the lab home) holds every run and its epochs. It is used
from the web app's sessions, the background worker and the CLI at once, so every access opens
a short-lived connection, keeps transactions short, waits on a busy timeout, and uses WAL (or
the rollback journal where the file system cannot do WAL, such as some network-mounted homes).
The schema version lives in `PRAGMA user_version`; `run_schema.MIGRATIONS` brings an older
file up to date.

Files a run writes (weights, predictions) are written to a temporary name and renamed, so an
interrupted write never leaves a broken file behind.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tl_core import paths, persist
from tl_core.atomic import atomic_torch_save, atomic_write_bytes  # noqa: F401 - re-exported
from tl_core.errors import LabError, as_lab_error
from tl_core.owners import end_orphan, remove_run_leftovers, this_host
from tl_core.run_deps import GROUP_REF, fail_broken_dependents, resolve_group_ref  # noqa: F401
from tl_core.run_groups import NewGroup, RoomCheck, insert_group, request_runs
from tl_core.run_schema import JSON_FIELDS, MIGRATIONS, SCHEMA_VERSION
from tl_core.store_repair import check_store, move_store_aside, refuse_if_damaged, store_error  # noqa: F401

FINISHED = ("done", "failed", "cancelled")


def library_versions() -> dict[str, str]:
    import torch
    import torchvision

    from tl_core import __version__

    return {
        "tl_core": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class NewRun:
    """What is known about a run when it is queued."""

    data_path: str
    backbone: str
    strategy: str
    config: dict
    name: str | None = None
    seed: int = 0
    recipe: str | None = None
    workspace: str = ""


_READY: dict[tuple, str] = {}  # database files set up by this process: their journal mode


def _file_key(path: Path) -> tuple | None:
    """The identity of a database file (a replaced or recreated file is a new one)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path), st.st_dev, st.st_ino)


class RunStore:
    """All access to runs; safe to use from several processes and threads at once."""

    def __init__(self, home: str | Path | None = None, *, busy_timeout: float = 30.0):
        self.home = Path(home) if home is not None else paths.lab_home()
        self.db_path = self.home / "runs.sqlite"
        self.runs_root = self.home / "runs"
        try:
            self.runs_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise as_lab_error(exc) or exc from exc
        self.busy_timeout = busy_timeout
        self.journal_mode = "wal"
        self._checked = False
        # Every page view opens the store (30 sessions: dozens a second): the schema and
        # journal set-up runs once per process and database file, not on each opening.
        key = _file_key(self.db_path)
        if key is None or key not in _READY:
            self._init_db()
            if (key := _file_key(self.db_path)) is not None:
                _READY[key] = self.journal_mode
        else:
            self.journal_mode = _READY[key]
        remove_run_leftovers(self.home, self.runs_root)

    # ------------------------------------------------------------------ connections

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=self.busy_timeout, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextmanager
    def _conn(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._open()
        except sqlite3.DatabaseError as exc:
            raise store_error(self.db_path, exc) from exc
        try:
            if write:
                self._checked = self._checked or refuse_if_damaged(conn, self.db_path)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                yield conn
        except sqlite3.DatabaseError as exc:
            raise store_error(self.db_path, exc) from exc
        finally:
            conn.close()

    def _init_db(self) -> None:
        with self._conn() as conn:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                # Network file systems cannot share WAL's memory-mapped index.
                mode = conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
            self.journal_mode = str(mode).lower()
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LabError(
                    f"the run store {self.db_path} was written by a newer version of the lab "
                    f"(schema {version}, this one knows {SCHEMA_VERSION}); upgrade the lab"
                )
            if version < SCHEMA_VERSION:
                self._checked = refuse_if_damaged(conn, self.db_path)
            for v in range(version, SCHEMA_VERSION):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    # Statement by statement: executescript() would commit half-way.
                    if conn.execute("PRAGMA user_version").fetchone()[0] == v:
                        for statement in MIGRATIONS[v].split(";"):
                            if statement.strip():
                                conn.execute(statement)
                        conn.execute(f"PRAGMA user_version = {v + 1}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise

    # ------------------------------------------------------------------ creating

    def create_group(
        self,
        runs: Sequence[NewRun],
        *,
        request_id: str | None = None,
        group_id: str | None = None,
        depends_on: str | None = None,
        check: RoomCheck | None = None,
    ) -> list[str]:
        """Queue runs that belong together (one comparison); returns their ids.

        With a `request_id` (one per click on Start), asking twice returns the runs of the
        first request instead of queueing a second set. With `depends_on` (a group id), the
        runs wait until every run of that group is done (see `claim_next`). `check` is as
        in `create_groups`.
        """
        (ids,) = self.create_groups([NewGroup(runs, request_id, group_id, depends_on)], check=check)
        return ids

    def create_groups(
        self, groups: Sequence[NewGroup], *, check: RoomCheck | None = None
    ) -> list[list[str]]:
        """Queue several groups (a recipe's stages) in one write transaction; their ids.

        A group whose `request_id` is in the store already is not queued again: its runs are
        returned. `check(queue, adding)`, when given, runs inside the same transaction, under
        the write lock, before anything is written: `queue` is the queued and running runs
        (dicts of id, workspace, request_id), `adding` the number of runs about to be
        recorded. It raises to refuse them all, so limits it checks hold however many
        processes queue at once.
        """
        if not groups or not all(g.runs for g in groups):
            raise LabError("nothing to run: choose at least one strategy")
        with self._conn(write=True) as conn:
            found = [request_runs(conn, g.request_id) for g in groups]
            adding = sum(len(g.runs) for g, ids in zip(groups, found, strict=True) if not ids)
            if check is not None and adding:
                rows = conn.execute(
                    "SELECT id, workspace, request_id FROM runs "
                    "WHERE status IN ('queued', 'running')"
                ).fetchall()
                check([dict(r) for r in rows], adding)
            return [ids or insert_group(conn, g) for g, ids in zip(groups, found, strict=True)]

    # ------------------------------------------------------------------ reading

    @staticmethod
    def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        out = dict(row)
        for key in JSON_FIELDS:
            if out.get(key):
                out[key] = json.loads(out[key])
        return out

    def get(self, run_id: str) -> dict[str, Any]:
        with self._conn() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise LabError(f"no run with id {run_id!r} (list them with `python -m tl_core runs`)")
        return self._row(row)

    def list(
        self,
        *,
        status: str | Sequence[str] | None = None,
        group_id: str | None = None,
        workspace: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Runs, newest first."""
        where, args = [], []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        if group_id is not None:
            where.append("group_id = ?")
            args.append(group_id)
        if workspace is not None:
            where.append("workspace = ?")
            args.append(workspace)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, slot DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._conn() as conn:
            return [self._row(r) for r in conn.execute(sql, args).fetchall()]

    def queue(self, workspace: str | None = None) -> list[dict[str, Any]]:
        """Queued and running runs, oldest first (`schedule.queue_view` gives worker order)."""
        sql = "SELECT * FROM runs WHERE status IN ('queued', 'running')"
        args: list = []
        if workspace is not None:
            sql += " AND workspace = ?"
            args.append(workspace)
        sql += " ORDER BY status = 'queued', created, slot"
        with self._conn() as conn:
            return [self._row(r) for r in conn.execute(sql, args).fetchall()]

    def epochs(self, run_id: str) -> list[dict[str, Any]]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,)
            ).fetchall()
        return [dict(r) for r in rows]

    def latest_group(self, workspace: str | None = None) -> str | None:
        runs = self.list(workspace=workspace, limit=1)
        return runs[0]["group_id"] if runs else None

    # ------------------------------------------------------------------ updating

    def update(self, run_id: str, **fields: Any) -> None:
        if not fields:
            return
        for key in JSON_FIELDS:
            if key in fields and not isinstance(fields[key], str | type(None)):
                fields[key] = json.dumps(fields[key])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._conn(write=True) as conn:
            conn.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))

    def claim_next(
        self,
        worker_pid: int | None = None,
        workspace: str | None = None,
        groups: Sequence[str] | None = None,
    ) -> dict | None:
        """Atomically mark the next queued run (`schedule.fair_order`; of `groups` if given) whose
        dependency group is all done as running, and return it. Runs whose dependency group
        has a failed or cancelled run are failed first, with the reason (`run_deps`)."""
        from tl_core.schedule import fair_order

        now = time.time()
        with self._conn(write=True) as conn:
            fail_broken_dependents(conn, now)
            sql = (
                "SELECT id, workspace, created, slot, group_id, depends_on, config FROM runs r "
                "WHERE status = 'queued' AND cancel_requested = 0 AND NOT EXISTS (SELECT 1 "
                "FROM runs d WHERE d.group_id = r.depends_on AND d.status != 'done')"
            )
            args: list = []
            if workspace is not None:
                sql += " AND workspace = ?"
                args.append(workspace)
            if groups is not None:
                sql += f" AND group_id IN ({', '.join('?' * len(groups))})"
                args.extend(groups)
            rows = [dict(r) for r in conn.execute(sql, args).fetchall()]
            order = fair_order(rows, self._last_starts(conn))
            if not order:
                return None
            run_id = order[0]["id"]
            resolve_group_ref(conn, order[0])
            conn.execute(
                "UPDATE runs SET status = 'running', started = ?, heartbeat = ?, worker_pid = ?, "
                "owner_host = ? WHERE id = ?",
                (now, now, worker_pid or os.getpid(), this_host(), run_id),
            )
        return self.get(run_id)

    @staticmethod
    def _last_starts(conn: sqlite3.Connection) -> dict[str, float]:
        rows = conn.execute(
            "SELECT workspace, MAX(started) FROM runs WHERE started IS NOT NULL GROUP BY workspace"
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def last_starts(self) -> dict[str, float]:
        """When each workspace's latest run started (workspaces that never ran are absent)."""
        with self._conn() as conn:
            return self._last_starts(conn)

    def mark_running(self, run_id: str) -> None:
        now, owner = time.time(), {"worker_pid": os.getpid(), "owner_host": this_host()}
        self.update(run_id, status="running", started=now, heartbeat=now, **owner)

    def heartbeat(self, run_id: str, **progress: Any) -> None:
        self.update(run_id, heartbeat=time.time(), **progress)

    def add_epoch(self, run_id: str, stats: dict[str, Any]) -> None:
        with self._conn(write=True) as conn:
            conn.execute(
                """INSERT OR REPLACE INTO epochs (run_id, epoch, train_loss, train_acc, val_loss, val_acc, seconds, lr)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    run_id,
                    stats["epoch"],
                    stats["train_loss"],
                    stats["train_acc"],
                    stats.get("val_loss"),
                    stats.get("val_acc"),
                    stats["seconds"],
                    stats["lr"],
                ),
            )
            conn.execute(
                "UPDATE runs SET epoch = ?, heartbeat = ? WHERE id = ?",
                (stats["epoch"], time.time(), run_id),
            )

    def finish(self, run_id: str, status: str, **fields: Any) -> None:
        if status not in FINISHED:
            raise ValueError(f"not a finished status: {status}")
        self.update(run_id, status=status, finished=time.time(), **fields)
        persist.run_changed(self.home, run_id)  # TL_LAB_PERSIST: keep it beyond a restart

    def request_cancel(self, run_id: str) -> str:
        """Ask a run to stop; a queued one, or one whose process is gone, stops at once."""
        with self._conn(write=True) as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise LabError(f"no run with id {run_id!r}")
            if end_orphan(conn, row, "cancelled"):
                return "cancelled"
            if row["status"] == "queued":
                conn.execute(
                    "UPDATE runs SET status = 'cancelled', cancel_requested = 1, finished = ? WHERE id = ?",
                    (time.time(), run_id),
                )
                return "cancelled"
            if row["status"] == "running":
                conn.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
            return row["status"]

    def cancel_requested(self, run_id: str) -> bool:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT cancel_requested FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
        return bool(row and row["cancel_requested"])

    def fail_if_orphaned(self, run_id: str) -> bool:
        """Mark `run_id` failed when it is running but its process is gone (`owner_gone`);
        True when it did. A killed `train` can then be resumed or cancelled at once."""
        with self._conn(write=True) as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            return end_orphan(conn, row, "failed")

    def fail_stale(self, max_age: float) -> list[str]:
        """Mark running runs whose heartbeat is older than `max_age` seconds as failed."""
        cutoff = time.time() - max_age
        with self._conn(write=True) as conn:
            rows = conn.execute(
                "SELECT id FROM runs WHERE status = 'running' AND COALESCE(heartbeat, started, created) < ?",
                (cutoff,),
            ).fetchall()
            ids = [r["id"] for r in rows]
            for run_id in ids:
                conn.execute(
                    "UPDATE runs SET status = 'failed', finished = ?, error = ? WHERE id = ?",
                    (
                        time.time(),
                        f"the worker stopped responding (no heartbeat for over {int(max_age)} s); "
                        "it was probably killed or the machine restarted",
                        run_id,
                    ),
                )
        return ids

    def delete(self, run_id: str) -> None:
        import shutil

        self.get(run_id)
        with self._conn(write=True) as conn:
            conn.execute("DELETE FROM epochs WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        shutil.rmtree(self.run_dir(run_id, create=False), ignore_errors=True)
        persist.run_changed(self.home, run_id)  # TL_LAB_PERSIST: forget it there too

    # ------------------------------------------------------------------ files

    def run_dir(self, run_id: str, *, create: bool = True) -> Path:
        path = self.runs_root / run_id
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return path

    def write_json(self, run_id: str, name: str, data: Any) -> Path:
        return atomic_write_bytes(self.run_dir(run_id) / name, json.dumps(data, indent=1).encode())

    def read_json(self, run_id: str, name: str) -> Any:
        path = self.run_dir(run_id, create=False) / name
        if not path.is_file():
            raise LabError(f"run {run_id} has no {name} (did it finish?)")
        return json.loads(path.read_text())
