"""The web server's memory: the startup heap frozen once, full collections rate-limited,
Streamlit's own per-view collection off in the app's settings, uploads given back."""

from __future__ import annotations

import gc
import re
import threading
from pathlib import Path
from types import SimpleNamespace

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
        # Other threads of the test process may free a few frozen objects meanwhile.
        assert frozen > 1000 and gc.get_freeze_count() >= 0.99 * frozen
        # A cycle made afterwards is still collected.
        cycle: list = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()


def _uploads(*session_ids: str):
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    from streamlit.runtime.uploaded_file_manager import UploadedFileRec

    files = MemoryUploadedFileManager("/_stcore/upload_file")
    for sid in session_ids:
        files.add_file(sid, UploadedFileRec(file_id=f"{sid}-f", name="a.zip", type="", data=b"x"))
    return files


def test_a_page_lets_go_of_the_uploads_it_has_read(monkeypatch):
    """After an import the page removes the upload's bytes from Streamlit's manager, where
    they would otherwise stay until the session is shut down (issue 12)."""
    import streamlit.runtime.scriptrunner as scriptrunner

    files = _uploads("me", "other")
    ctx = SimpleNamespace(uploaded_file_mgr=files, session_id="me")
    monkeypatch.setattr(scriptrunner, "get_script_run_ctx", lambda: ctx)
    from streamlit.runtime.uploaded_file_manager import UploadedFile

    page_file = UploadedFile(files.get_files("me", ["me-f"])[0], None)  # as the widget gives
    assert server_gc.release_uploads([page_file]) == 1
    assert files.get_files("me", ["me-f"]) == []
    assert page_file.closed  # the page's own name for it no longer holds the bytes
    assert len(files.get_files("other", ["other-f"])) == 1  # another session's stay
    monkeypatch.setattr(scriptrunner, "get_script_run_ctx", lambda: None)
    other = UploadedFile(files.get_files("other", ["other-f"])[0], None)
    assert server_gc.release_uploads([other]) == 0  # outside a page view: closed only
    assert other.closed


def test_what_sessions_streamlit_dropped_still_hold_is_freed():
    """A closed browser's session is kept for reconnection, then dropped from Streamlit's
    storage without a shutdown, which was what removed its uploads; its state (the upload's
    file object) could outlive it too (issue 12)."""
    from streamlit.runtime.state.session_state import SessionState

    files = _uploads("live", "waiting", "expired", "gone")

    class Storage:  # Streamlit's TTL cache: an expired entry goes on the next expire()
        def __init__(self):
            self.entries = {"waiting": 1, "expired": 1}

        def expire(self):
            self.entries.pop("expired", None)

    class Session:  # an AppSession as far as the look goes: an id and a session state
        def __init__(self, sid):
            self.id, self.session_state = sid, SessionState()
            self.session_state["upload"] = b"300 MB"

    held = {sid: Session(sid) for sid in ("live", "waiting", "expired")}  # still referenced
    storage = Storage()
    listed = ["live", *storage.entries]
    manager = SimpleNamespace(
        _session_storage=SimpleNamespace(_cache=storage),
        list_sessions=lambda: [SimpleNamespace(session=held[sid]) for sid in listed],
    )
    runtime = SimpleNamespace(uploaded_file_mgr=files, _session_mgr=manager)
    dead = server_gc.DeadSessions()
    assert dead.look(runtime) == 0  # "gone" missing once: not yet touched
    listed[:] = ["live", *storage.entries]  # Streamlit dropped "expired" at that look
    assert "upload" in held["expired"].session_state
    assert dead.look(runtime) == 1  # "gone": missing twice
    assert dead.look(runtime) == 1  # "expired": missing twice now
    assert sorted(files.file_storage) == ["live", "waiting"]
    assert "upload" not in held["expired"].session_state
    assert "upload" in held["live"].session_state and "upload" in held["waiting"].session_state
    assert dead.look(runtime) == 0


def test_a_session_missing_at_one_look_only_is_left_alone():
    """A session between Streamlit's lists at one look (reconnecting) and back at the next
    keeps its uploads and state."""
    from streamlit.runtime.state.session_state import SessionState

    class Session:  # an AppSession as far as the look goes (weakly referable, as it is)
        id, session_state = "s", SessionState()

    files = _uploads("s")
    session = Session()
    session.session_state["upload"] = b"x"
    listed = [["s"], [], ["s"], [], ["s"]]
    manager = SimpleNamespace(
        _storage_lock=threading.Lock(),
        list_sessions=lambda: [SimpleNamespace(session=session)] * len(listed.pop(0)),
    )
    runtime = SimpleNamespace(uploaded_file_mgr=files, _session_mgr=manager)
    dead = server_gc.DeadSessions()
    assert [dead.look(runtime) for _ in range(5)] == [0, 0, 0, 0, 0]
    assert "upload" in session.session_state and files.get_files("s", ["s-f"])


def test_the_server_is_set_up_once_and_not_under_apptest():
    """app.py sets the server up in a cached resource; under AppTest (a mock runtime) the
    tests' process keeps its malloc settings and starts no reaper thread."""
    from streamlit.testing.v1 import AppTest

    app = (ROOT / "app.py").read_text()
    assert app.count("server_gc.set_up_server(") == 1
    script = """
import threading
import streamlit as st
from tl_core import server_gc
server_gc.set_up_server(("json",), reap_every=0.01)
st.write(f"serving={server_gc._serving()} " + ",".join(t.name for t in threading.enumerate()))
"""
    try:
        at = AppTest.from_string(script).run()
    finally:
        gc.unfreeze()
    text = at.markdown[0].value
    assert text.startswith("serving=False") and "upload-reaper" not in text


def test_no_page_keeps_an_upload_in_a_global():
    """A page's cached functions keep its namespace alive after the run, so an upload named
    by a page global stayed in the server's memory (issue 12): uploads are local names."""
    import ast

    widgets = {"file_uploader", "camera_input"}
    for page in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        for stmt in ast.parse(page.read_text()).body:
            if isinstance(stmt, ast.FunctionDef):
                continue  # inside a function an upload is a local name
            for call in ast.walk(stmt):
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
                    assert call.func.attr not in widgets, f"{page.name}:{call.lineno}"
