"""Every page of the web app runs under app.py, the first view of a fresh server included.

Streamlit treats a folder named `pages/` beside the main script as a multipage app of its
own (its first, folder-based design) until `st.navigation` has been called once in the
server's process. So on a fresh server, a first visitor who opened a page by its URL
(`/data`) ran that page alone, without app.py: no workspace from `?ws=`, no worker, no
server set-up (`tl_core.server_gc`), and Streamlit's own list of files in the sidebar.
`run_under_app()`, first thing on each page, leaves that mode as `st.navigation` does and,
for a session app.py has not set up, reruns: app.py then runs and shows the page asked for.
app.py always sets the session's workspace before it runs a page, so this cannot loop.
"""

from __future__ import annotations


def run_under_app() -> bool:
    """Rerun through app.py when this page runs for a session app.py has not set up (no
    workspace in it yet) under the server's app.py; True when it does (the rerun ends this
    run). Decided per session: while a class opens pages at once on a fresh server, every
    session that started the folder-based way reruns, not only the first one to get here."""
    from pathlib import Path

    import streamlit as st
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False  # what st.navigation does on its first call
    if "workspace" in st.session_state:  # app.py ran for this session: carry on
        return False
    ctx = get_script_run_ctx()
    if ctx is None or Path(ctx.main_script_path).name != "app.py":
        return False  # the page itself is the main script (a test runs it alone)
    st.rerun()
    return True  # not reached
