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

And uploads are given back (issue 12: three 300 MB uploads left the server 2.8 GB larger
for good, `scripts/bench_upload_memory.py`). Streamlit keeps each uploaded file's bytes in its
upload manager until it shuts the session down, but a closed browser's session is kept for
reconnection (`server.disconnectedSessionTTL`) and then dropped without being shut down, so
its uploads stayed for the server's life. And the server, importing `tl_core`, had the
training processes' malloc settings, under which freed blocks stay in the heap. So:
- `release_uploads`: a page that has used an upload (imported it) removes its bytes from
  the manager and closes the file, which frees them at once: the page's variables still
  name the file until the page's namespace, a reference cycle, is collected;
- every `REAP_EVERY` seconds a thread of the server frees what the sessions Streamlit no
  longer has still hold (`DeadSessions`) and runs the rate-limited collection, so the
  namespaces of finished page views go even when nobody views a page afterwards;
- `set_up_server` lets the server's malloc map large blocks again
  (`tl_core.allocator.untune_malloc`), so freed uploads go back to the system.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import threading
import time
import weakref

from tl_core.allocator import release_free_memory, untune_malloc

COLLECT_EVERY = 5.0  # seconds between full collections after page views
REAP_EVERY = 15.0  # seconds between looks for the uploads of sessions Streamlit dropped
MAX_FAILURES = 5  # looks failing in a row before the thread gives up
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


def release_uploads(files) -> int:
    """Free these uploaded files (the page has read them and will not again): their bytes
    leave Streamlit's upload manager and the files are closed. Returns how many were removed
    from the manager (0 outside a page view, where only the closing applies)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    removed = 0
    for upload in files:
        if ctx is not None and ctx.uploaded_file_mgr is not None and upload.file_id:
            ctx.uploaded_file_mgr.remove_file(ctx.session_id, upload.file_id)
            removed += 1
        upload.close()  # the bytes are shared with the manager's record: now nobody's
    return removed


class DeadSessions:
    """Frees what the sessions Streamlit dropped (closed, past their reconnection time) still
    hold: their uploads in the upload manager, and their widgets' state, where an upload's
    file object keeps its bytes for as long as anything still refers to the session (seen:
    a 300 MB zip held by a dropped session's state minutes later). A session is treated as
    dropped once it has been missing from Streamlit's lists at two looks in a row, so one
    that is reconnecting at the moment of a look is never touched."""

    def __init__(self) -> None:
        self.seen: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self.missing: set[str] = set()

    def look(self, runtime) -> int:
        """One look; returns how many sessions' uploads or state were freed."""
        files = runtime.uploaded_file_mgr
        sessions = runtime._session_mgr  # noqa: SLF001 - Streamlit offers no public list
        storage = getattr(getattr(sessions, "_session_storage", None), "_cache", None)
        with getattr(sessions, "_storage_lock", None) or contextlib.nullcontext():
            if hasattr(storage, "expire"):
                storage.expire()  # sessions past their reconnection time go now
            alive = {info.session.id: info.session for info in sessions.list_sessions()}
        self.seen.update(alive)
        gone = (set(self.seen) | set(getattr(files, "file_storage", {}))) - set(alive)
        dropped, self.missing = gone & self.missing, gone
        for session_id in dropped:
            files.remove_session_files(session_id)
            session = self.seen.pop(session_id, None)
            if session is not None:
                session.session_state.clear()  # its widgets' files, and all else it kept
        return len(dropped)


def _reap_forever(every: float) -> None:
    from streamlit import runtime

    log = logging.getLogger(__name__)
    dead = DeadSessions()
    failures = 0
    while True:
        time.sleep(every)
        try:
            runtime.exists() and dead.look(runtime.get_instance())
            failures = 0
        except Exception:  # noqa: BLE001 - a look that met Streamlit mid-change: next time
            failures += 1
            log.exception("freeing closed sessions' uploads failed (%d in a row)", failures)
            if failures >= MAX_FAILURES:  # Streamlit's internals changed: say so, stop
                log.error("not freeing closed sessions' uploads any more")
                return
        if collect_now_and_then():  # finished page views and dropped sessions are cycles
            release_free_memory()


def _serving() -> bool:
    """True in a real Streamlit server; AppTest runs the pages under a mock runtime."""
    from streamlit import runtime

    return runtime.exists() and type(runtime.get_instance()) is runtime.Runtime


def set_up_server(modules: tuple[str, ...], reap_every: float = REAP_EVERY) -> int:
    """Once per web server: large blocks mapped again by malloc, the startup heap frozen, the
    upload reaper started; returns the frozen object count. Under a script that runs the
    pages without a server (Streamlit's AppTest, in the tests' process) only the freezing."""
    if _serving():
        untune_malloc()
        threading.Thread(
            target=_reap_forever, args=(reap_every,), name="upload-reaper", daemon=True
        ).start()
    return freeze_startup_heap(modules)
