"""How the web server collects its garbage: cheaply enough for a class of thirty.

Streamlit runs a full garbage collection after every page view (`runner.postScriptGC`). In a
process that has imported torch, Plotly and pandas, a full collection walks millions of
module objects: it was most of a page view's time (about 0.25 s of 0.3 s, profiled with
py-spy under `scripts/loadtest.py`), and the views of all sessions wait on it in turn.

Two changes keep memory bounded at a fraction of the cost:
- `freeze_startup_heap`: once, after importing the pages' heavy modules, move every object
  alive then into the collector's permanent generation (`gc.freeze`): module objects are not
  garbage and are not walked again. Objects made later (sessions, uploads) are collected as
  before; reference counting still frees frozen objects that stop being used.
- `collect_now_and_then`: with Streamlit's own collection off (`.streamlit/config.toml`), a
  full collection after a page view at most every `COLLECT_EVERY` seconds: a lone user still
  gets one after nearly every view, a class shares one every few seconds.
"""

from __future__ import annotations

import gc
import importlib
import threading
import time

COLLECT_EVERY = 5.0  # seconds between full collections after page views
_lock = threading.Lock()
_last_collect = 0.0


def freeze_startup_heap(modules: tuple[str, ...]) -> int:
    """Import `modules`, collect, and freeze what is alive; returns the frozen object count."""
    for name in modules:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def collect_now_and_then(every: float = COLLECT_EVERY) -> bool:
    """A full collection unless one ran less than `every` seconds ago (any session);
    returns whether it ran."""
    global _last_collect
    now = time.monotonic()
    with _lock:
        if now - _last_collect < every:
            return False
        _last_collect = now
    gc.collect()
    return True
