"""Predict: classify new pictures with finished runs, see where they looked, export a model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from tl_core import charts, gradcam
from tl_core.app_entry import run_under_app
from tl_core.data.images import ImageDecodeError, decode_bytes
from tl_core.errors import LabError
from tl_core.escape import markdown as md
from tl_core.evaluate import TrainedModel, load_trained, predict
from tl_core.export import FORMATS, export_model
from tl_core.runs import RunStore
from tl_core.store_repair import home_problem

run_under_app()  # a page opened by its URL on a fresh server runs through app.py

if problem := home_problem():  # a lab home that cannot be written: one clear message
    st.error(md(problem), icon=":material/folder_off:")
    st.stop()

ws = st.session_state.get("workspace", "")
store = RunStore()


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def cached_model(home: str, run_id: str) -> TrainedModel:
    """One model per run, in eval mode, shared by every session and never changed."""
    return load_trained(RunStore(home), run_id)


IMAGE_PX = 320  # big enough to read on a projector, whatever the model's input size


def attention_legend() -> str:
    """The Grad-CAM colour legend: the overlay's colour map from low to high attention."""
    stops = ", ".join(gradcam.legend_colours())
    return (
        f"<div style='width:{IMAGE_PX}px;font-size:0.9rem'>"
        f"<div style='height:14px;border-radius:3px;background:linear-gradient(to right, {stops})'>"
        "</div><div style='display:flex;justify-content:space-between'>"
        "<span>low attention</span><span>→</span><span>high attention</span></div></div>"
    )


st.title("Predict")
runs = store.list(status="done", workspace=ws, limit=200)
if not runs:
    st.info("No finished run in this workspace yet: train one on the Experiments page.")
    st.page_link("pages/experiments.py", label="Go to Experiments", icon=":material/science:")
    st.stop()
by_id = {r["id"]: r for r in runs}
chosen = st.multiselect(
    "Runs (several show the same picture side by side)",
    list(by_id),
    default=[runs[0]["id"]],
    format_func=lambda i: charts.run_label(by_id[i]),
    key="pred_runs",
)
top_k = st.slider("Top classes shown", 1, 10, 3, key="pred_topk")
show_cam = st.toggle("Grad-CAM: where the model looked", value=True, key="pred_cam")


def predictions() -> None:
    """The pictures given (uploads, a webcam shot), each classified by every chosen run. A
    function, so that the pictures' bytes are local names: as page globals they stayed in
    memory after the run, since `cached_model` keeps the page's namespace alive (issue 12)."""
    tab_upload, tab_camera = st.tabs(["Upload pictures", "Webcam"])
    files = tab_upload.file_uploader(
        "Pictures",
        type=["jpg", "jpeg", "png", "webp", "bmp"],
        accept_multiple_files=True,
        key="pred_files",
    )
    shot = tab_camera.camera_input("Take a picture", key="pred_camera")
    sources = [(f.name, f.getvalue()) for f in files or []]
    if shot is not None:
        sources.append(("webcam shot", shot.getvalue()))

    for name, data in sources:
        try:
            image = decode_bytes(data).rgb
        except ImageDecodeError as exc:
            st.error(f"{md(name)}: {md(exc)}")
            continue
        st.markdown(f"#### {md(name)}")
        cols = st.columns(max(1, len(chosen)))
        for col, run_id in zip(cols, chosen, strict=False):
            with col:
                try:
                    trained = cached_model(str(store.home), run_id)
                except LabError as exc:
                    st.error(md(exc))
                    continue
                st.caption(md(charts.run_label(by_id[run_id])))
                (top,) = predict(trained, [image], top_k=top_k)
                if show_cam:
                    heat, index = gradcam.gradcam(trained, image, top[0]["index"])
                    st.image(
                        gradcam.overlay(trained, image, heat),
                        caption=f"Grad-CAM: where it looked for {top[0]['class']}"
                        if heat.max() > 0
                        else f"Grad-CAM: no region stood out for {top[0]['class']}",
                        width=IMAGE_PX,
                    )
                    st.html(attention_legend())
                else:
                    st.image(
                        gradcam.model_view(trained, image),
                        caption="what the model sees",
                        width=IMAGE_PX,
                    )
                st.dataframe(
                    [{"class": t["class"], "probability": t["prob"]} for t in top],
                    hide_index=True,
                    column_config={
                        "probability": st.column_config.ProgressColumn(
                            format="percent", min_value=0, max_value=1
                        )
                    },
                )


predictions()

st.divider()
st.subheader("Export a trained model")
c1, c2 = st.columns(2)
export_run = c1.selectbox(
    "Run", list(by_id), format_func=lambda i: charts.run_label(by_id[i]), key="export_run"
)
fmt = c2.selectbox("Format", FORMATS, key="export_format")
st.caption(
    "state_dict: the weights with class names and preprocessing, for PyTorch; TorchScript: "
    "runs without this code; ONNX: for onnxruntime and other frameworks."
)
suffix = {"state_dict": ".pt", "torchscript": ".torchscript.pt", "onnx": ".onnx"}[fmt]


def export_bytes() -> bytes:
    """Run on click only (a deferred download): export to a temporary file, return it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"model{suffix}"
        export_model(cached_model(str(store.home), export_run), fmt, out)
        return out.read_bytes()


st.download_button(
    f"Download as {fmt}",
    export_bytes,
    file_name=f"{export_run}{suffix}",
    mime="application/octet-stream",
    key="export_download",
)
