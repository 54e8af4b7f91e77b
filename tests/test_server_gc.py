"""The web server's garbage collection: the startup heap frozen once, full collections
rate-limited, Streamlit's own per-view collection off in the app's settings."""

from __future__ import annotations

import gc
import re
from pathlib import Path

from tl_core import server_gc

ROOT = Path(__file__).resolve().parent.parent


def test_streamlit_does_not_collect_after_every_view():
    text = (ROOT / ".streamlit" / "config.toml").read_text()
    runner = re.search(r"^\[runner\]\n(.*?)(?:^\[|\Z)", text, re.M | re.S)
    assert runner and re.search(r"^postScriptGC = false$", runner.group(1), re.M)
    # ...and the app collects instead, after each view, at most every few seconds.
    assert "server_gc.collect_now_and_then()" in (ROOT / "app.py").read_text()


def test_full_collections_run_at_most_every_interval(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(server_gc.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(server_gc, "_last_collect", 0.0)
    ran = []
    monkeypatch.setattr(server_gc.gc, "collect", lambda *a: ran.append(clock[0]) or 0)
    assert server_gc.collect_now_and_then(every=5) is True
    clock[0] += 1
    assert server_gc.collect_now_and_then(every=5) is False  # a second view, 1 s later
    clock[0] += 4.5
    assert server_gc.collect_now_and_then(every=5) is True
    assert ran == [1000.0, 1005.5]


def test_freezing_takes_the_imported_modules_out_of_the_collectors_walks():
    try:
        frozen = server_gc.freeze_startup_heap(("json",))
        assert frozen > 1000 and gc.get_freeze_count() == frozen
        # A cycle made afterwards is still collected.
        cycle: list = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
