"""The last settings of a page's form, per workspace, kept in the lab home.

A reload, a new tab or another day starts the form where the workspace left it, not at the
defaults: `<lab home>/forms/<workspace>/<form>.json` (`_default` for the default workspace).
Only plain JSON values are kept; the page checks each value against its widget before use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from pathlib import Path

from tl_core import paths
from tl_core.runs import atomic_write_bytes
from tl_core.workspaces import check_workspace

Check = Callable[[object], bool]  # does a saved value fit its widget?


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


def one_of(options: Iterable) -> Check:
    options = list(options)
    return lambda v: v in options


def number(lo: float, hi: float, like: float) -> Check:
    """A number of `like`'s type (a widget's int or float) between `lo` and `hi`."""
    return lambda v: type(v) is type(like) and lo <= v <= hi


def restore(
    state: MutableMapping, workspace: str, form: str, fields: Mapping[str, tuple[object, Check]]
) -> None:
    """Fill the form's keys missing from `state` (a page's session state) with the
    workspace's saved values, else the defaults (`fields`: key -> (default, check); a None
    default leaves the widget's own). A saved value that fails its check gets the default;
    another workspace's values in `state` are forgotten first."""
    marker = f"{form}_form_workspace"
    if state.get(marker) != workspace:
        for key in fields:
            state.pop(key, None)
        state[marker] = workspace
    saved = load(workspace, form)
    for key, (default, ok) in fields.items():
        if key in state:
            continue
        if key in saved and ok(saved[key]):
            state[key] = saved[key]
        elif default is not None:
            state[key] = default


def remember(state: MutableMapping, workspace: str, form: str, keys: Iterable[str]) -> None:
    """Save the form's values in `state` for the next visit, when they changed."""
    values = {k: state[k] for k in keys if k in state}
    marker = f"{form}_form_saved"
    if values != state.get(marker):
        save(workspace, form, values)
        state[marker] = values
