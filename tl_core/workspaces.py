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
from collections.abc import MutableMapping

from tl_core.errors import LabError

SEPARATOR = "--"
MAX_QUEUED_DEFAULT = 48  # a data-efficiency recipe is 45 runs
_WORKSPACE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def check_workspace(name: str) -> str:
    """'' (the default workspace) or lowercase letters, digits, '-' and '_', up to 32."""
    name = (name or "").strip().lower()
    if name and (not _WORKSPACE.match(name) or SEPARATOR in name):
        raise LabError(
            f"invalid workspace name {name!r}: use lowercase letters, digits, '-' or '_' "
            "(up to 32, no '--'), e.g. 'team-a'"
        )
    return name


def dataset_name(workspace: str, short: str) -> str:
    """The stored name of data set `short` in `workspace`."""
    from tl_core.data.store import check_dataset_name

    check_dataset_name(short)
    if SEPARATOR in short:
        raise LabError(f"a data set name cannot contain {SEPARATOR!r}: {short!r}")
    return f"{workspace}{SEPARATOR}{short}" if workspace else short


def short_name(stored: str) -> str:
    """`team-a--shapes` -> `shapes`."""
    return stored.split(SEPARATOR, 1)[1] if SEPARATOR in stored else stored


def in_workspace(stored: str, workspace: str) -> bool:
    if workspace:
        return stored.startswith(workspace + SEPARATOR)
    return SEPARATOR not in stored


def list_datasets(workspace: str) -> list:
    """The `DatasetInfo`s of one workspace, by name."""
    from tl_core.data.store import list_datasets as all_datasets

    return [d for d in all_datasets() if in_workspace(d.name, workspace)]


def max_queued() -> int:
    """Queued runs allowed per workspace (`TL_LAB_MAX_QUEUED`, default 48)."""
    try:
        return max(1, int(os.environ.get("TL_LAB_MAX_QUEUED", MAX_QUEUED_DEFAULT)))
    except ValueError:
        return MAX_QUEUED_DEFAULT


def queue_runs(store, specs: list, *, workspace: str, request_id: str | None = None) -> list[str]:
    """`jobs.queue_runs` within the workspace's limit of queued and running runs."""
    from tl_core.jobs import queue_runs as queue

    workspace = check_workspace(workspace)
    if request_id is not None:
        existing = [r for r in store.list(workspace=workspace) if r.get("request_id") == request_id]
        if existing:  # the same click arriving twice
            return [r["id"] for r in sorted(existing, key=lambda r: r["created"])]
    check_room(store, workspace, len(specs))
    return queue(store, specs, request_id=request_id, workspace=workspace)


def check_room(store, workspace: str, adding: int) -> None:
    """Raise LabError when `adding` more runs would pass the workspace's queue limit."""
    waiting = len(store.queue(workspace=workspace))
    limit = max_queued()
    if waiting + adding > limit:
        raise LabError(
            f"this workspace already has {waiting} run(s) queued or running, and {adding} "
            f"more would pass its limit of {limit}; wait for some to finish or cancel them"
        )


def server_folders_allowed() -> bool:
    """Whether the Data page may import a folder on the server.

    Off on a public Hugging Face Space (`SPACE_ID` is set there) unless
    `TL_LAB_SERVER_FOLDERS=1`; on by default elsewhere (a laptop, a classroom machine), and
    `TL_LAB_SERVER_FOLDERS=0` turns it off.
    """
    setting = os.environ.get("TL_LAB_SERVER_FOLDERS")
    if setting is not None:
        return setting == "1"
    return not os.environ.get("SPACE_ID")


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
