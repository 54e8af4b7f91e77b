"""Where the lab keeps its data sets, runs and caches.

Everything lives under one folder, the lab home: `$TL_LAB_HOME` when set, otherwise a per-user
data folder. Never `/data` by default: on Hugging Face Spaces that is where a Storage Bucket is
mounted, and object storage does not give SQLite the locking it needs; the bucket is a mirror
(`TL_LAB_PERSIST`, tl_core/persist.py), not the live home.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tl_core import persist
from tl_core.errors import LabError

APP_DIR_NAME = "transfer-learning-lab"


def _user_data_dir() -> Path:
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / APP_DIR_NAME


def lab_home() -> Path:
    """The lab home folder, created if missing."""
    env = os.environ.get("TL_LAB_HOME")
    home = Path(env).expanduser() if env else _user_data_dir()
    _make(home, f"the lab home {home}", "set TL_LAB_HOME to a writable folder")
    persist.restore_if_empty(home)  # TL_LAB_PERSIST: an empty home comes back from there
    return home


def _make(path: Path, what: str, remedy: str) -> None:
    """Create `path` (and its parents); a LabError naming `what` and the `remedy` if it fails."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LabError(f"cannot create {what}: {exc.strerror or exc}; {remedy}") from exc


def _folder(path: Path) -> Path:
    """`path`, created if missing; a LabError saying what to do when it cannot be."""
    _make(
        path,
        f"{path} in the lab home",
        "make the lab home writable, or set TL_LAB_HOME to a writable folder",
    )
    return path


def check_writable_home() -> Path:
    """The lab home, after proving that a file can be written there (a read-only disk or
    mount, or a home owned by another user, fails here with one clear LabError)."""
    home = lab_home()
    probe = home / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise LabError(
            f"the lab home {home} is not writable ({exc.strerror or exc}); make it writable, "
            "or set TL_LAB_HOME to a writable folder and restart the app"
        ) from exc
    return home


def datasets_dir() -> Path:
    return _folder(lab_home() / "datasets")


def cache_dir(kind: str) -> Path:
    """A cache folder (`features`, `images`, ...): safe to delete, rebuilt on demand."""
    return _folder(lab_home() / "cache" / kind)


def load_cache(path: Path) -> dict | None:
    """A cache file written by `save_cache`, or None when there is none; a damaged one is
    deleted (and so rebuilt), never trusted."""
    import torch

    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable cache is rebuilt
        path.unlink(missing_ok=True)
        return None


def save_cache(data: dict, path: Path) -> None:
    """Write a cache file whole (or not at all); a cache that cannot be written only makes
    the next run slower."""
    import torch

    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def locks_dir() -> Path:
    """Lock files (one per data set): empty files that `flock` needs, kept out of the way."""
    return _folder(lab_home() / "locks")
