"""Workspaces: several people on one deployment (a classroom server, a public Space).

A workspace is a short name kept in the page URL (`?ws=team-a`), so a bookmark returns to
it. Runs carry their workspace in the run store; a data set belongs to a workspace by its
name: `team-a--shapes` is `shapes` in workspace `team-a`, and names without `--` belong to
the default workspace (the empty name), which is also where the CLI puts things.

Workspaces keep people's lists apart; they are not a security boundary (anyone who knows a
workspace name can open it).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, MutableMapping
from pathlib import Path

from tl_core.errors import LabError

SEPARATOR = "--"
MAX_QUEUED_DEFAULT = 64  # a data-efficiency recipe is 60 runs (4 strategies, 5 sizes, 3 seeds)
MAX_QUEUED_TOTAL_DEFAULT = 200
# Words of letters and digits joined by single '-' or '_': no leading, trailing or doubled
# separator, so `team-` (whose `team---x` would read as `-x` in `team`) cannot exist.
_WORKSPACE = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
MAX_WORKSPACE = 32


def check_workspace(name: str) -> str:
    """'' (the default workspace) or words of lowercase letters and digits joined by single
    '-' or '_', up to 32 characters (`team-a`, `lab_2`)."""
    name = (name or "").strip().lower()
    if name and (len(name) > MAX_WORKSPACE or not _WORKSPACE.match(name)):
        raise LabError(
            f"invalid workspace name {name!r}: use lowercase letters and digits, words joined "
            "by single '-' or '_' (up to 32, not starting or ending with one), e.g. 'team-a'"
        )
    return name


def check_short_name(short: str) -> str:
    """A data set name as a workspace sees it: a data set name without '--'."""
    from tl_core.data.store import check_dataset_name

    check_dataset_name(short)
    if SEPARATOR in short:
        raise LabError(
            f"invalid data set name {short!r}: it cannot contain {SEPARATOR!r} (that separates "
            "the workspace from the name); use a single '-', e.g. 'ants-bees'"
        )
    return short


def dataset_name(workspace: str, short: str) -> str:
    """The stored name of data set `short` in `workspace`.

    The mapping is one-to-one: a workspace holds no '--' and does not end with '-', and a
    short name holds no '--' and starts with a letter or digit, so the first '--' of a stored
    name is always the separator (`split_stored` undoes it).
    """
    from tl_core.data.store import check_dataset_name

    check_short_name(short)
    if not workspace:
        return short
    stored = f"{check_workspace(workspace)}{SEPARATOR}{short}"
    try:
        check_dataset_name(stored)
    except LabError:
        room = 64 - len(workspace) - len(SEPARATOR)
        raise LabError(
            f"data set name {short!r} is too long for workspace {workspace!r}: "
            f"use at most {room} characters"
        ) from None
    return stored


def split_stored(stored: str) -> tuple[str, str] | None:
    """(workspace, short name) of a stored data set name; None for a name that no valid
    pair makes (such as `team---x`, left by older versions: it belongs to no workspace)."""
    workspace, sep, short = stored.partition(SEPARATOR)
    if not sep:
        workspace, short = "", stored
    try:
        if check_workspace(workspace) != workspace or dataset_name(workspace, short) != stored:
            return None
    except LabError:
        return None
    return workspace, short


def short_name(stored: str) -> str:
    """`team-a--shapes` -> `shapes`."""
    pair = split_stored(stored)
    return pair[1] if pair else stored


def in_workspace(stored: str, workspace: str) -> bool:
    pair = split_stored(stored)
    return pair is not None and pair[0] == workspace


def list_datasets(workspace: str) -> list:
    """The `DatasetInfo`s of one workspace, by name."""
    from tl_core.data.store import list_datasets as all_datasets

    return [d for d in all_datasets() if in_workspace(d.name, workspace)]


def _limit(variable: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(variable, default)))
    except ValueError:
        return default


def max_queued() -> int:
    """Queued runs allowed per workspace (`TL_LAB_MAX_QUEUED`, default 48)."""
    return _limit("TL_LAB_MAX_QUEUED", MAX_QUEUED_DEFAULT)


def max_queued_total() -> int:
    """Queued runs allowed on the whole lab, all workspaces together
    (`TL_LAB_MAX_QUEUED_TOTAL`, default 200): made-up workspace names cannot pass it."""
    return _limit("TL_LAB_MAX_QUEUED_TOTAL", MAX_QUEUED_TOTAL_DEFAULT)


def queue_runs(store, specs: list, *, workspace: str, request_id: str | None = None) -> list[str]:
    """`jobs.queue_runs` within the workspace's limit of queued and running runs and the lab's.

    The limits are checked in the run store's write transaction that records the runs
    (`room_check`), so simultaneous clicks cannot pass them together. The same click arriving
    twice gets the first click's runs back (the store de-duplicates request ids) and does not
    count against the limits.
    """
    from tl_core.jobs import queue_runs as queue

    workspace = check_workspace(workspace)
    return queue(
        store, specs, request_id=request_id, workspace=workspace, check=room_check(workspace)
    )


def check_room(store, workspace: str, adding: int, *, request_id: str | None = None) -> None:
    """Raise LabError when `adding` more runs would pass the workspace's queue limit or the
    lab's limit for all workspaces together. Runs of `request_id` itself do not count: a
    repeated click adds nothing (the store returns its runs).

    An early answer (before building a recipe's data, say): only `room_check`, given to the
    store's write, holds against simultaneous clicks."""
    everyone = [r for r in store.queue() if request_id is None or r.get("request_id") != request_id]
    room_check(workspace)(everyone, adding)


def room_check(workspace: str) -> Callable[[list[dict], int], None]:
    """A `RunStore.create_group` check: refuse when the runs being added would pass the
    workspace's queue limit (`TL_LAB_MAX_QUEUED`) or the lab's (`TL_LAB_MAX_QUEUED_TOTAL`)."""

    def check(everyone: list[dict], adding: int) -> None:
        waiting = sum(1 for r in everyone if r.get("workspace", "") == workspace)
        limit = max_queued()
        if waiting + adding > limit:
            raise LabError(
                f"this workspace already has {waiting} run(s) queued or running, and {adding} "
                f"more would pass its limit of {limit}; wait for some to finish or cancel them"
            )
        total = max_queued_total()
        if len(everyone) + adding > total:
            raise LabError(
                f"the lab already has {len(everyone)} run(s) queued or running in all "
                f"workspaces, and {adding} more would pass its limit of {total} "
                "(TL_LAB_MAX_QUEUED_TOTAL); wait for some to finish, or queue fewer runs"
            )

    return check


def server_folders_allowed() -> bool:
    """Whether the Data page may import a folder on the server: only with
    `TL_LAB_SERVER_FOLDERS=1` (otherwise any workspace could read any folder the server can,
    another workspace's data sets included)."""
    return os.environ.get("TL_LAB_SERVER_FOLDERS") == "1"


def import_root() -> Path | None:
    """`TL_LAB_IMPORT_ROOT`, resolved, when set: the only folder server imports may read."""
    root = os.environ.get("TL_LAB_IMPORT_ROOT")
    return Path(root).expanduser().resolve() if root else None


def check_server_folder(path: str | Path) -> Path:
    """The resolved path of a folder (or zip) on the server that the Data page may import.

    Refused unless `server_folders_allowed()`, and for the lab home or a folder in it (other
    workspaces' data sets); with `TL_LAB_IMPORT_ROOT` set, the path must lie under it after
    links are resolved (so neither `..` nor a symbolic link escapes).
    """
    if not server_folders_allowed():
        raise LabError(
            "importing server folders is turned off on this deployment "
            "(the server's administrator can allow it with TL_LAB_SERVER_FOLDERS=1)"
        )
    from tl_core.paths import lab_home

    resolved = Path(path).expanduser().resolve()
    home = lab_home().resolve()
    if resolved.is_relative_to(home) or home.is_relative_to(resolved):
        raise LabError(
            f"{path} holds the lab's own data (every workspace's data sets); "
            "give a folder outside the lab home"
        )
    root = import_root()
    if root is not None and not resolved.is_relative_to(root):
        raise LabError(
            f"{path} is outside the folder this server imports from ({root}); "
            f"give a folder under {root}"
        )
    return resolved


def click_request_id(
    state: MutableMapping, key: str, settings: object, *, window: float = 10.0
) -> str:
    """The request id of one click on a Start button, stable across a double click.

    A double click reaches the app as two reruns, each seeing the button pressed. The second
    gets the same id as the first when it asks for the same settings within `window` seconds,
    and the run store's request id then makes it return the first click's runs instead of
    queueing a second set. A deliberate repeat later, or with other settings, is a new request.
    """
    fingerprint = json.dumps(settings, sort_keys=True, default=str)
    now = time.time()
    last = state.get(key)
    if last and last["settings"] == fingerprint and now - last["time"] < window:
        last["time"] = now
        return last["id"]
    request_id = str(uuid.uuid4())
    state[key] = {"settings": fingerprint, "time": now, "id": request_id}
    return request_id
