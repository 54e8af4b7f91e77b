"""The last settings of a page's form, per workspace, kept in the lab home.

A reload, a new tab or another day starts the form where the workspace left it, not at the
defaults: `<lab home>/forms/<workspace>/<form>.json` (`_default` for the default workspace).
Only plain JSON values are kept; the page checks each value against its widget before use.
"""

from __future__ import annotations

import json
from pathlib import Path

from tl_core import paths
from tl_core.runs import atomic_write_bytes
from tl_core.workspaces import check_workspace


def form_path(workspace: str, form: str) -> Path:
    return paths.lab_home() / "forms" / (check_workspace(workspace) or "_default") / f"{form}.json"


def load(workspace: str, form: str) -> dict:
    """The saved values of `form` in `workspace`; {} when none (or the file is unreadable)."""
    try:
        values = json.loads(form_path(workspace, form).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


def save(workspace: str, form: str, values: dict) -> bool:
    """Keep `values` for the next visit; False when the lab home cannot be written (the form
    still works, it only forgets)."""
    path = form_path(workspace, form)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(values, indent=1, sort_keys=True).encode())
    except OSError:
        return False
    return True
