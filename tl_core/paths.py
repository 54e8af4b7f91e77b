"""Where the lab keeps its data sets, runs and caches.

Everything lives under one folder, the lab home: `$TL_LAB_HOME` when set; otherwise `/data`
when that folder exists and is writable (a Hugging Face Space's persistent storage, since the
rest of a Space's disk is wiped on restart); otherwise a per-user data folder.
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
    if env:
        home = Path(env).expanduser()
    elif Path("/data").is_dir() and os.access("/data", os.W_OK):
        home = Path("/data") / APP_DIR_NAME
    else:
        home = _user_data_dir()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LabError(
            f"cannot create the lab home {home}: {exc.strerror or exc}; "
            "set TL_LAB_HOME to a writable folder"
        ) from exc
    persist.restore_if_empty(home)  # TL_LAB_PERSIST: an empty home comes back from there
    return home


def datasets_dir() -> Path:
    path = lab_home() / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(kind: str) -> Path:
    """A cache folder (`features`, `images`, ...): safe to delete, rebuilt on demand."""
    path = lab_home() / "cache" / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


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
    path = lab_home() / "locks"
    path.mkdir(parents=True, exist_ok=True)
    return path
