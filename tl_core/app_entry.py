"""Every page of the web app runs under app.py, the first view of a fresh server included.

Streamlit treats a folder named `pages/` beside the main script as a multipage app of its
own (its first, folder-based design) until `st.navigation` has been called once in the
server's process. So on a fresh server, a first visitor who opened a page by its URL
(`/data`) ran that page alone, without app.py: no workspace from `?ws=`, no worker, no
server set-up (`tl_core.server_gc`), and Streamlit's own list of files in the sidebar.
`run_under_app()`, first thing on each page, leaves that mode as `st.navigation` does and,
for a session app.py has not set up, reruns: app.py then runs and shows the page asked for.
"""

from __future__ import annotations


def run_under_app() -> bool:
    """Rerun through app.py when Streamlit ran this page on its own for a session app.py
    has not seen (no workspace in it yet); True when it did (the rerun ends this run)."""
    import streamlit as st
    from streamlit.runtime.pages_manager import PagesManager

    if not getattr(PagesManager, "uses_pages_directory", False):
        return False
    PagesManager.uses_pages_directory = False  # what st.navigation does on its first call
    if "workspace" in st.session_state:  # app.py ran for this session (as under AppTest,
        return False  # which runs the folder-based way each time): carry on, lose no click
    st.rerun()
    return True  # not reached
