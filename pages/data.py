"""Data: gather pictures into a data set (every source), look through it, fix it."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import streamlit as st

from tl_core import charts, server_gc, workspaces
from tl_core.app_entry import run_under_app
from tl_core.data import builtin, curate, download, search, sources
from tl_core.data.store import dataset_path, load_manifest
from tl_core.data.writer import delete_dataset
from tl_core.errors import LabError
from tl_core.escape import markdown as md
from tl_core.store_repair import home_problem

run_under_app()  # a page opened by its URL on a fresh server runs through app.py

if problem := home_problem():  # a lab home that cannot be written: one clear message
    st.error(md(problem), icon=":material/folder_off:")
    st.stop()

ws = st.session_state.get("workspace", "")
PAGE_SIZE = 24
NEW = "(new data set)"

st.title("Data")

if "data_next" in st.session_state:  # select the set an import just made
    st.session_state["data_set"] = st.session_state.pop("data_next")
names = [workspaces.short_name(d.name) for d in workspaces.list_datasets(ws)]
choice = st.selectbox("Data set", [*names, NEW], key="data_set")
if choice == NEW:
    short = st.text_input("Name of the new data set", "my-images", key="data_new_name")
else:
    short = choice
try:
    target = workspaces.dataset_name(ws, short)
except LabError as exc:
    st.error(md(exc))
    st.stop()


def progress_bar(label: str):
    bar = st.progress(0.0, text=label)

    def update(done: int, total: int, message: str) -> None:
        bar.progress(done / max(1, total), text=f"{label}: {done}/{total} {message}"[:120])

    return update


def upload_key(name: str) -> str:
    """An uploader's key: a new one after each import from an upload, so the page shows the
    uploaders empty again (Streamlit offers no other way to clear one)."""
    generation = st.session_state.get("data_uploads", 0)
    return f"{name}_{generation}" if generation else name


def run_import(
    title: str, fn, /, *args, done: str | None = None, uploads: tuple = (), **kwargs
) -> None:
    """Call an importer with a progress bar; keep its report to show after the rerun.

    `title` is positional-only: importers take a `label=` of their own (the URL list's).
    `done` says what a change other than an import did ("2 picture(s) deleted").
    `uploads`: the uploaded files the import read; once it has succeeded their bytes leave
    the server's memory (a failed import keeps them, to try again).
    """
    try:
        report = fn(*args, on_progress=progress_bar(title), **kwargs)
    except LabError as exc:
        st.error(md(exc))
        return
    if uploads:
        server_gc.release_uploads(uploads)
        st.session_state["data_uploads"] = st.session_state.get("data_uploads", 0) + 1
    st.session_state["data_report"] = {**report.to_dict(), "done": done}
    st.session_state["data_next"] = workspaces.short_name(report.name)
    st.rerun()


def confirmed(key: str, clicked: bool, what: str, question: str) -> bool:
    """Two steps for what cannot be undone: the click asks `question` about `what`, and
    "Yes, delete" does it (once); "Keep" or another `what` forgets the question."""
    if clicked:
        st.session_state[key] = what
    if st.session_state.get(key) != what:
        st.session_state.pop(key, None)
        return False
    st.warning(question, icon=":material/warning:")
    yes, keep = st.columns([1, 4])
    if yes.button("Yes, delete", key=f"{key}_yes", type="primary"):
        del st.session_state[key]
        return True
    if keep.button("Keep", key=f"{key}_keep"):
        del st.session_state[key]
        st.rerun()
    return False


def show_report(report: dict) -> None:
    """What an import or a change did, in the colour it deserves, with short names only."""
    name = md(workspaces.short_name(report["name"]))
    skipped = len(report["skipped"])
    classes = md(", ".join(report["classes"])) or "none"
    if report.get("done"):
        st.info(f"{name}: {report['done']}. Classes now: {classes}")
    elif report["added"]:
        st.success(
            f"{name}: {report['added']} picture(s) added, {skipped} skipped. Classes: {classes}"
        )
    else:
        st.warning(f"{name}: nothing was added ({skipped} skipped). Classes: {classes}")
    for w in report["warnings"]:
        st.warning(md(w.replace(report["name"], workspaces.short_name(report["name"]))))
    if report["skipped"]:
        st.dataframe(report["skipped"], hide_index=True)


def uploaded_to_file(upload, folder: str) -> Path:
    path = Path(folder) / Path(upload.name).name
    path.write_bytes(upload.getvalue())
    return path


def zip_tab() -> None:
    """A zip of class folders. In this tab and the next three the upload is a local name: as a
    page global it stayed in memory after the run, since the page's cached function
    (`inspection`) keeps the page's namespace alive (issue 12)."""
    archive = st.file_uploader(
        "A zip of class folders (optionally inside train/ and val/)",
        type=["zip"],
        key=upload_key("data_zip"),
    )
    if archive is not None and st.button(f"Import into {short}", key="data_zip_go"):
        with tempfile.TemporaryDirectory() as tmp:
            zip_path = uploaded_to_file(archive, tmp)
            run_import("importing", sources.import_zip, zip_path, target, uploads=(archive,))


def class_tab() -> None:
    """Pictures of one class."""
    cls = st.text_input("Class", key="data_class")
    files = st.file_uploader(
        "Pictures of this class", accept_multiple_files=True, key=upload_key("data_class_files")
    )
    if files and cls and st.button(f"Add {len(files)} to {cls}", key="data_class_go"):
        run_import(
            "adding",
            sources.add_images,
            target,
            cls,
            [(f.name, f.getvalue()) for f in files],
            uploads=tuple(files),
        )


def camera_tab() -> None:
    """Webcam shots, one class at a time."""
    st.caption("The browser allows the webcam only over HTTPS or on localhost.")
    cam_cls = st.text_input("Class of the next shot", key="data_cam_class")
    shot = st.camera_input("Take a picture", key=upload_key("data_camera"))
    if shot is not None and cam_cls and st.button(f"Add this shot to {cam_cls}", key="data_cam_go"):
        run_import(
            "adding",
            sources.add_images,
            target,
            cam_cls,
            [(f"webcam-{time.strftime('%Y%m%d-%H%M%S')}.jpg", shot.getvalue())],
            source="camera",
            uploads=(shot,),
        )


def url_tab() -> None:
    """A list of picture URLs to download."""
    url_file = st.file_uploader(
        "A CSV of url,label rows, or a .txt of URLs for one class",
        type=["csv", "txt"],
        key=upload_key("data_urls"),
    )
    url_label = st.text_input("Class (for a .txt; default: the file name)", key="data_urls_label")
    if url_file is not None and st.button("Download", key="data_urls_go"):
        with tempfile.TemporaryDirectory() as tmp:
            run_import(
                "downloading",
                download.download_url_list,
                uploaded_to_file(url_file, tmp),
                target,
                label=url_label or None,
                uploads=(url_file,),
            )


st.subheader("Add pictures")
tabs = st.tabs(
    ["Built-in sets", "Zip file", "Per class", "Webcam", "URL list", "Search", "Server folder"]
)
with tabs[0]:
    c1, c2 = st.columns(2)
    which = c1.selectbox(
        "Built-in set",
        list(builtin.BUILTINS),
        format_func=lambda b: (
            f"{b}: {builtin.BUILTINS[b].description}"
            + ("" if builtin.BUILTINS[b].offline else " (downloads)")
        ),
        key="data_builtin",
    )
    per_class = c2.number_input(
        "Training images per class (0: the set's default)", 0, 100000, 0, key="data_builtin_n"
    )
    built = dataset_path(workspaces.dataset_name(ws, which))
    if built.is_dir():
        have = load_manifest(workspaces.dataset_name(ws, which))
        train = [r.label for r in have.images if r.split != "val"]
        size = max((train.count(c) for c in have.classes), default=0)
        st.caption(
            f"{which} is already in this workspace ({len(have.images)} pictures, up to {size} "
            "training pictures per class). Rebuild it to change its size: runs queued on it "
            "will train on the new one."
        )
    label = "Rebuild it" if built.is_dir() else "Build it"
    if st.button(label, key="data_build", type="primary"):
        run_import(
            f"building {which}",
            builtin.build_builtin,
            which,
            name=workspaces.dataset_name(ws, which),
            per_class=int(per_class) or None,
            force=built.is_dir(),
        )
with tabs[1]:
    zip_tab()
with tabs[2]:
    class_tab()
with tabs[3]:
    camera_tab()
with tabs[4]:
    url_tab()
with tabs[5]:
    st.caption("One class per term, with freely licensed images from Wikimedia Commons.")
    terms = st.text_input("Search terms, comma-separated", placeholder="ant, bee", key="data_terms")
    n = st.number_input("Images per term", 1, 500, 20, key="data_terms_n")
    if terms and st.button("Search and download", key="data_search_go"):
        run_import("searching", search.search_images, target, terms, int(n))
with tabs[6]:
    if workspaces.server_folders_allowed():
        root = workspaces.import_root()
        where = f"A folder under {root}" if root else "A folder on the server"
        folder = st.text_input(f"{where}, holding class folders", key="data_folder")
        if folder and st.button(f"Import into {short}", key="data_folder_go"):
            try:
                allowed = workspaces.check_server_folder(folder)
            except LabError as exc:
                st.error(md(exc))
            else:
                run_import("importing", sources.import_path, allowed, target)
    else:
        st.info(
            "Importing server folders is turned off on this deployment "
            "(the server's administrator can allow it with TL_LAB_SERVER_FOLDERS=1)."
        )

report = st.session_state.pop("data_report", None)
if report:
    with st.container(border=True, key="data_report_box"):
        show_report(report)

if choice == NEW or not dataset_path(target).is_dir():
    st.stop()


@st.cache_data(show_spinner="Checking the data set…")
def inspection(name: str, stamp: float) -> dict:
    return curate.inspect_dataset(name).to_dict()


manifest_file = dataset_path(target) / "manifest.json"
info = inspection(target, manifest_file.stat().st_mtime if manifest_file.exists() else 0.0)
st.subheader(f"{md(short)}: {info['images']} pictures, {len(info['classes'])} classes")
c1, c2 = st.columns([3, 2])
c1.plotly_chart(charts.class_balance(info["split_counts"]), key="balance")
with c2:
    for w in info["warnings"]:
        st.warning(md(w))
    if info["leakage"]:
        st.dataframe(info["leakage"][:50], hide_index=True)
    if info["duplicates"]:
        st.dataframe(
            [{"identical files": ", ".join(g)} for g in info["duplicates"][:50]], hide_index=True
        )
    if not info["warnings"]:
        st.success("No duplicates, leakage or placeholders found.")

st.subheader("Gallery")
manifest = load_manifest(target)
c1, c2 = st.columns(2)
gallery_class = c1.selectbox("Class", manifest.classes, key="gallery_class")
records = [r for r in manifest.images if r.label == gallery_class]
pages = max(1, -(-len(records) // PAGE_SIZE))
page = c2.number_input(f"Page (of {pages})", 1, pages, 1, key="gallery_page")
shown = records[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
cols = st.columns(8)
marked = []
for n, r in enumerate(shown):
    with cols[n % 8]:
        st.image(str(dataset_path(target) / r.path), caption=f"{r.split or ''} {Path(r.path).name}")
        if st.checkbox("remove", key=f"rm_{r.path}"):
            marked.append(r.path)
clicked = bool(marked) and st.button(
    f"Delete {len(marked)} marked picture(s)", key="gallery_delete"
)
question = f"Delete {len(marked)} picture(s) from {short}? This cannot be undone."
if marked and confirmed("gallery_delete_ask", clicked, ",".join(marked), question):
    run_import(
        "deleting",
        lambda name, paths, on_progress: curate.remove_images(name, paths),
        target,
        marked,
        done=f"{len(marked)} picture(s) deleted",
    )

with st.expander("Rename or delete"):
    c1, c2 = st.columns(2)
    new_cls = c1.text_input(f"Rename class {gallery_class} to", key="rename_to")
    if new_cls and c1.button("Rename class", key="rename_go"):
        run_import(
            "renaming",
            lambda *a, on_progress: curate.rename_class(*a),
            target,
            gallery_class,
            new_cls,
            done=f"class {gallery_class} renamed to {new_cls}",
        )
    clicked = c2.button(f"Delete class {gallery_class}", key="rm_class")
    question = (
        f"Delete class {gallery_class} and its {len(records)} picture(s) from {short}? "
        "This cannot be undone."
    )
    if confirmed("rm_class_ask", clicked, gallery_class, question):
        run_import(
            "deleting",
            lambda *a, on_progress: curate.remove_class(*a),
            target,
            gallery_class,
            done=f"class {gallery_class} deleted with its {len(records)} picture(s)",
        )
    confirm = st.checkbox(f"Yes, delete the whole data set {short}", key="rm_set_confirm")
    if confirm and st.button("Delete data set", key="rm_set"):
        delete_dataset(target)
        st.session_state["data_next"] = NEW
        st.rerun()
