"""Keep a copy of the lab home in a folder that outlives the machine: `TL_LAB_PERSIST=DIR`.

On a Hugging Face Space, DIR is a Storage Bucket mounted as a volume. Object-storage volumes
do not promise the file locking and shared memory that SQLite's WAL needs, so the live lab
home stays on local disk and DIR only ever receives whole files:

- after a run finishes (done, failed or cancelled) or is deleted: its folder (or its removal),
  and a snapshot of the run store made with SQLite's online backup API into a local file,
  then copied to DIR;
- after a data set changes (created, edited, deleted): the set's folder, and the snapshot.

On start with an empty local home (no run store, no data sets), `restore_if_empty` copies
the data sets, the runs the snapshot knows, and the snapshot back. Caches are not kept (they
are rebuilt on demand). Nothing here ever stops the lab: a failed copy is reported on stderr
and the run or the data set change stands.

Layout of DIR: `runs.sqlite` (the latest snapshot), `runs/RUN_ID/...`, `datasets/NAME/...`.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import threading
import uuid
from contextlib import closing
from pathlib import Path

ENV = "TL_LAB_PERSIST"
STORE = "runs.sqlite"
RESTORING = ".persist-restoring"  # left in the local home while a restore is under way

_restored: set[Path] = set()
_warned: set[str] = set()
_lock = threading.Lock()


def persist_dir() -> Path | None:
    """The folder named by `TL_LAB_PERSIST`, or None when unset or not mounted (a warning)."""
    value = os.environ.get(ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        if value not in _warned:  # once per process, not at every run
            _warned.add(value)
            _warn(f"{ENV}={value} is not a folder (is the bucket mounted?); nothing is kept there")
        return None
    return path


def _warn(message: str) -> None:
    print(f"tl_core.persist: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- copying


def _sync_tree(src: Path, dst: Path) -> None:
    """Make `dst` a copy of `src`: copy new or changed files, remove files gone from `src`.

    A file is rewritten only when its size or modification time differs (copy2 keeps the
    time), so an edited data set sends only what changed. `manifest.json` goes last, after
    the pictures it lists.
    """
    files = sorted(
        (p for p in src.rglob("*") if p.is_file() and not p.is_symlink()),
        key=lambda p: p.name == "manifest.json",
    )
    wanted = set()
    for file in files:
        rel = file.relative_to(src)
        wanted.add(rel)
        target = dst / rel
        stat = file.stat()
        if target.is_file():
            old = target.stat()
            if old.st_size == stat.st_size and int(old.st_mtime) == int(stat.st_mtime):
                continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        shutil.copy2(file, tmp)
        os.replace(tmp, target)
    if dst.is_dir():
        for extra in sorted(dst.rglob("*"), reverse=True):
            rel = extra.relative_to(dst)
            if extra.is_file() and rel not in wanted:
                extra.unlink()
            elif extra.is_dir() and not any(extra.iterdir()):
                extra.rmdir()


def _snapshot_store(home: Path, dest: Path) -> None:
    """Copy the run store to `dest/runs.sqlite` through a local backup, never SQLite on DEST."""
    db = home / STORE
    if not db.is_file():
        return
    local = home / f".persist-{uuid.uuid4().hex[:8]}.sqlite"
    try:
        with (
            closing(sqlite3.connect(db, timeout=30)) as src,
            closing(sqlite3.connect(local)) as out,
        ):
            src.backup(out)
        tmp = dest / f".{STORE}.{uuid.uuid4().hex[:8]}.tmp"
        shutil.copyfile(local, tmp)
        os.replace(tmp, dest / STORE)
    finally:
        local.unlink(missing_ok=True)


def _guarded(what: str, action) -> None:
    try:
        action()
    except (OSError, sqlite3.Error) as exc:
        _warn(f"could not keep {what} in {os.environ.get(ENV)}: {exc}")


# ------------------------------------------------------------------------------- hooks


def _mirror(home: Path, folder: Path, kind: str, what: str) -> None:
    """Copy `folder` (a run's or a data set's, in lab home `home`) to `kind/NAME` of the
    persist folder, or remove the copy when it is gone; then the run store."""
    dest = persist_dir()
    if dest is None:
        return
    kept = dest / kind / folder.name

    def keep() -> None:
        if folder.is_dir():
            _sync_tree(folder, kept)
        elif kept.exists():
            shutil.rmtree(kept)
        _snapshot_store(home, dest)

    _guarded(what, keep)


def run_changed(home: str | Path, run_id: str) -> None:
    """Hook: run `run_id` of lab home `home` finished or was deleted; keep it, and the store."""
    _mirror(Path(home), Path(home) / "runs" / run_id, "runs", f"run {run_id}")


def dataset_changed(folder: str | Path) -> None:
    """Hook: the data set at `folder` (LAB_HOME/datasets/NAME) was written or deleted."""
    folder = Path(folder)
    _mirror(folder.parent.parent, folder, "datasets", f"data set {folder.name}")


# ------------------------------------------------------------------------------- restore


def _is_empty(home: Path) -> bool:
    if (home / RESTORING).exists():  # a restore that was interrupted: do it again
        return True
    datasets = home / "datasets"
    has_sets = datasets.is_dir() and any(not p.name.startswith(".") for p in datasets.iterdir())
    return not (home / STORE).exists() and not has_sets


def _run_ids(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM runs")]


def _restore(home: Path, source: Path) -> None:
    marker = home / RESTORING
    marker.touch()
    local = home / f".persist-restore-{uuid.uuid4().hex[:8]}.sqlite"
    shutil.copyfile(source / STORE, local)
    for folder in sorted((source / "datasets").glob("[!.]*")):
        if folder.is_dir():
            _sync_tree(folder, home / "datasets" / folder.name)
    for run_id in _run_ids(local):
        if (source / "runs" / run_id).is_dir():
            _sync_tree(source / "runs" / run_id, home / "runs" / run_id)
    os.replace(local, home / STORE)
    marker.unlink()


def restore_if_empty(home: str | Path) -> bool:
    """On the first call for an empty lab home, bring back what `TL_LAB_PERSIST` holds.

    Returns True when something was restored. Cheap after the first call (the lab calls it
    whenever it resolves the lab home).
    """
    home = Path(home)
    if home in _restored or not os.environ.get(ENV):
        return False
    with _lock:
        if home in _restored:
            return False
        _restored.add(home)
        source = persist_dir()
        if source is None or not (source / STORE).is_file() or not _is_empty(home):
            return False
        try:
            _restore(home, source)
        except (OSError, sqlite3.Error) as exc:
            _warn(f"could not restore the lab home from {source}: {exc}")
            return False
        _warn(f"restored the lab home {home} from {source}")
        return True
