"""Transfer Learning Lab, the web app: `streamlit run app.py`.

This script runs on every page view: it sets up the page, the workspace (from the URL's
`?ws=` query string), the background worker, and the navigation; the Home page is below.
The other pages live in `pages/`; none of them trains: runs are queued in the run store and
trained by `python -m tl_core worker`, which this script starts when there is work for it.
"""

from __future__ import annotations

import streamlit as st

from tl_core import machine, paths, server_gc, workspaces
from tl_core.backbones import BACKBONES
from tl_core.errors import LabError
from tl_core.escape import markdown as md
from tl_core.fmt import format_duration
from tl_core.recipes import CLASSROOM, plan, queue_recipe
from tl_core.recipes.classroom import lesson_seconds
from tl_core.runs import RunStore
from tl_core.store_repair import home_problem
from tl_core.worker import ensure_worker

st.set_page_config(
    page_title="Transfer Learning Lab", page_icon=":material/biotech:", layout="wide"
)


@st.cache_resource(show_spinner=False)
def _set_up_server() -> int:
    """Once per server: the pages' heavy modules imported, then kept out of the garbage
    collector's walks; uploads given back (tl_core/server_gc.py says why)."""
    return server_gc.set_up_server(
        ("pandas", "plotly.graph_objects", "tl_core.charts", "tl_core.evaluate",
         "tl_core.export", "tl_core.models", "tl_core.recipes.charts")
    )  # fmt: skip


_set_up_server()


def _set_workspace() -> None:
    st.session_state["workspace_raw"] = st.session_state["workspace_box"]


def current_workspace() -> str:
    """The workspace of this page view: the URL's `?ws=`, else the last one chosen here."""
    raw = st.session_state.pop("workspace_raw", None)
    if raw is None:
        raw = st.query_params.get("ws") or st.session_state.get("workspace", "")
    try:
        ws = workspaces.check_workspace(raw)
    except LabError as exc:
        st.sidebar.error(str(exc))
        ws = st.session_state.get("workspace", "")
    st.session_state["workspace"] = ws
    if ws and st.query_params.get("ws") != ws:
        st.query_params["ws"] = ws
    elif not ws and "ws" in st.query_params:
        del st.query_params["ws"]
    return ws


@st.cache_data(ttl=600, show_spinner=False)
def downloads_reachable() -> bool:
    return machine.downloads_reachable()


def home() -> None:
    ws = st.session_state.get("workspace", "")
    st.title("Transfer Learning Lab")
    st.write(
        "Train a network on a handful of your own pictures, starting from one that learned "
        "ImageNet's million photos, and compare the ways of doing it: from **scratch**, as a "
        "fixed **feature extractor**, **partially** or **fully fine-tuned**. Runs train in the "
        "background: close or refresh the page whenever you like."
    )
    if not downloads_reachable():
        online = [
            f"`{b.name}`" for b in BACKBONES.values() if b.weights_url and not b.works_offline
        ]
        offline = [f"`{b.name}`" for b in BACKBONES.values() if b.works_offline]
        st.warning(
            f"Pretrained downloads are unreachable from this server, so {' and '.join(online)} "
            f"work only if their weights are already cached here. **{' and '.join(offline)} "
            "works offline**: its ImageNet weights ship with the lab.",
            icon=":material/cloud_off:",
        )
    st.header("Quick start")
    c1, c2, c3 = st.columns(3)
    with c1:
        st.subheader("1. Pick data")
        st.write("Build the `shapes` set, upload a zip, or snap webcam pictures per class.")
        st.page_link("pages/data.py", label="Data", icon=":material/photo_library:")
    with c2:
        st.subheader("2. Run a comparison")
        st.write("Choose a backbone and strategies; Start queues the runs.")
        st.page_link("pages/experiments.py", label="Experiments", icon=":material/science:")
    with c3:
        st.subheader("3. Read the results")
        st.write("Accuracy and loss per epoch, time, confusion matrix, mistakes.")
        st.page_link("pages/results.py", label="Results", icon=":material/monitoring:")

    lesson = CLASSROOM["classroom_quick"]
    st.info(f"**{lesson.title}** — {lesson.description}", icon=":material/bolt:")
    seconds = lesson_seconds(plan(lesson.name, workspace=ws), RunStore())
    took = "" if seconds is None else f" (about {format_duration(seconds)} of training)"
    label = f"Run the classroom quick comparison{took}"
    if st.button(label, key="classroom_quick", type="primary"):
        try:
            request_id = workspaces.click_request_id(
                st.session_state, "home_last_click", lesson.name
            )
            queue_recipe(RunStore(), lesson.name, workspace=ws, request_id=request_id)
        except LabError as exc:
            st.error(md(exc))
        else:
            ensure_worker()
            st.switch_page("pages/experiments.py")

    st.header("This machine")
    device = machine.device_summary()
    st.write(f"**Device:** {device['name']}")
    st.dataframe(
        [{"what": k, "where": v} for k, v in machine.storage_summary().items()],
        hide_index=True,
    )
    st.caption(
        f"Workspace: **{ws or 'default'}** (it is in this page's address; bookmark it to come "
        "back). Set `TL_LAB_HOME` to store everything somewhere else."
    )


problem = home_problem()
ws = current_workspace()
st.session_state["workspace_box"] = ws
with st.sidebar:
    st.text_input(
        "Workspace",
        key="workspace_box",
        on_change=_set_workspace,
        help="Keeps your data sets and runs apart from others' on a shared server.",
    )


@st.cache_data(ttl=2, show_spinner=False)
def runs_waiting(home: str) -> bool:
    """Whether any run is queued or running: one store read every 2 s for all sessions."""
    return bool(RunStore(home).queue())


# Runs left queued (a server restart, a Space waking up) resume without a click.
if problem is None and runs_waiting(str(paths.lab_home())):
    ensure_worker()

page = st.navigation(
    [
        st.Page(home, title="Home", icon=":material/home:", default=True),
        st.Page("pages/data.py", title="Data", icon=":material/photo_library:"),
        st.Page("pages/experiments.py", title="Experiments", icon=":material/science:"),
        st.Page("pages/results.py", title="Results", icon=":material/monitoring:"),
        st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
        st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
    ]
)
if problem is not None:  # one clear message on every page instead of a traceback on each
    st.error(md(problem), icon=":material/folder_off:")
    st.stop()
try:
    page.run()
finally:  # Streamlit's collection after every view is off (.streamlit/config.toml)
    server_gc.collect_now_and_then()
