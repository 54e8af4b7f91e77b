"""Results: how the selected runs learned, what they cost, and where one of them goes wrong."""

from __future__ import annotations

import streamlit as st

from tl_core import charts, recipes, report
from tl_core.app_entry import run_under_app
from tl_core.errors import LabError
from tl_core.escape import markdown as md
from tl_core.evaluate import confusion_matrix, mistakes, per_class_accuracy, validation_predictions
from tl_core.fmt import mistakes_heading
from tl_core.jobs import queue_resume, resumable
from tl_core.recipes.charts import recipe_figures
from tl_core.runs import RunStore
from tl_core.store_repair import home_problem
from tl_core.worker import ensure_worker

run_under_app()  # a page opened by its URL on a fresh server runs through app.py

if problem := home_problem():  # a lab home that cannot be written: one clear message
    st.error(md(problem), icon=":material/folder_off:")
    st.stop()

MISTAKES_SHOWN = 24
ws = st.session_state.get("workspace", "")
store = RunStore()
st.title("Results")

runs = store.list(status=("done", "cancelled", "failed"), workspace=ws, limit=300)
if not runs:
    st.info("No finished runs in this workspace yet: start some on the Experiments page.")
    st.page_link("pages/experiments.py", label="Go to Experiments", icon=":material/science:")
    st.stop()

by_id = {r["id"]: r for r in runs}
latest = store.latest_group(workspace=ws)
default = [r["id"] for r in runs if r["group_id"] == latest] or [runs[0]["id"]]
chosen = st.multiselect(
    "Runs (default: the latest comparison)",
    list(by_id),
    default=[i for i in default if i in by_id],
    format_func=lambda i: f"{charts.run_label(by_id[i])} · {by_id[i]['status']}",
    key="res_runs",
)
selected = [by_id[i] for i in chosen]
if not selected:
    st.stop()

epochs = {r["id"]: store.epochs(r["id"]) for r in selected}
history = charts.history_frame(selected, epochs)

st.subheader("Summary")
st.dataframe(
    charts.summary_table(selected),
    hide_index=True,
    width="stretch",
    column_order=charts.PAGE_COLUMNS,
)
st.caption("Accuracies on the validation images; trainable: the parameters training changed.")
for r in selected:
    if r["status"] == "failed":
        reason = ((r.get("error") or "").splitlines() or [""])[0]
        st.error(f"{md(charts.run_label(r))} failed: {md(reason)}")
    if r["status"] in ("failed", "cancelled") and resumable(store, r["id"]):
        label = f"Resume {md(charts.run_label(r))} from epoch {(r.get('epoch') or 0) + 1}"
        if st.button(label, key=f"resume_{r['id']}"):
            try:
                queue_resume(store, r["id"])
            except LabError as exc:
                st.error(md(exc))
            else:
                ensure_worker()
                st.success("Queued again: it continues from its last finished epoch.")

st.subheader("All selected runs")
figs = charts.overlays(history)
for row in (figs[:2], figs[2:]):
    for col, fig in zip(st.columns(2), row, strict=True):
        col.plotly_chart(fig, key=f"overlay_{fig.layout.title.text}")
c1, c2 = st.columns(2)
c1.plotly_chart(charts.strategy_bars(selected), key="strategy_bars")
c2.plotly_chart(charts.acc_vs_time(selected), key="acc_vs_time")


def reference_figures(run_list: list[dict]) -> None:
    """A recipe's reference figures beside what its runs measured here."""
    for name in dict.fromkeys(r["recipe"] for r in run_list if r.get("recipe")):
        ids = [r["id"] for r in run_list if r.get("recipe") == name]
        try:
            results = recipes.recipe_results(store, run_ids=ids)
        except LabError as exc:
            st.warning(md(exc))
            continue
        st.subheader(f"Recipe: {results['title']}")
        st.markdown(results["reference"]["text"])
        if results["reference"]["source"]:
            st.caption(f"Source: {results['reference']['source']}")
        for note in results["notes"]:
            st.caption(note)
        for title, fig in recipe_figures(store, results).items():
            st.plotly_chart(fig, key=f"recipe_{name}_{title}")


reference_figures(selected)

st.subheader("Each run")
colours = charts.run_colours(selected)  # as in the overlays above
for r in selected:
    rows = history[history["run"] == r["id"]]
    with st.expander(md(charts.run_label(r)), expanded=len(selected) == 1):
        if rows.empty:
            st.write("No finished epoch.")
            continue
        c1, c2 = st.columns([2, 1])
        c1.plotly_chart(
            charts.run_curves(rows, "Per epoch", colours[r["id"]]), key=f"curves_{r['id']}"
        )
        c2.plotly_chart(
            charts.acc_vs_loss(rows, "Validation accuracy vs loss"), key=f"avl_{r['id']}"
        )

st.subheader("One run in detail")
done = [r for r in selected if r["status"] in ("done", "cancelled")]
if done:
    one = st.selectbox(
        "Run",
        [r["id"] for r in done],
        format_func=lambda i: charts.run_label(by_id[i]),
        key="res_one",
    )
    try:
        preds = validation_predictions(store, one)
    except LabError as exc:
        st.warning(md(exc))
    else:
        c1, c2 = st.columns(2)
        c1.plotly_chart(
            charts.confusion(confusion_matrix(preds), preds["classes"]), key="confusion"
        )
        c2.plotly_chart(charts.per_class_bars(per_class_accuracy(preds)), key="per_class")
        wrong = mistakes(preds)
        shown = wrong[:MISTAKES_SHOWN]
        st.markdown(mistakes_heading(len(wrong), len(preds["items"]), len(shown)))
        cols = st.columns(6)
        for n, item in enumerate(shown):
            classes = preds["classes"]
            cols[n % 6].image(
                item["path"],
                caption=f"true {classes[item['true']]}, predicted {classes[item['pred']]} "
                f"({item['confidence']:.0%})",
            )

st.subheader("Downloads")
c1, c2 = st.columns(2)
c1.download_button(
    "Run report (HTML)",
    lambda: report.html_report(store, chosen),
    file_name="run-report.html",
    mime="text/html",
    key="dl_report",
)
c2.download_button(
    "Metrics (CSV)",
    lambda: report.metrics_csv(store, chosen),
    file_name="metrics.csv",
    mime="text/csv",
    key="dl_csv",
)
if done:
    st.caption("To export a trained model (state_dict, TorchScript, ONNX), open it on Predict.")
    st.page_link("pages/predict.py", label="Predict and export", icon=":material/image_search:")
