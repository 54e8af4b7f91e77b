"""A run report to download: one HTML page with the charts (each run in its own colour, its
strategy's hue), a confusion matrix per run, the configuration and the library versions, and
the per-epoch metrics as CSV. The page embeds plotly.js, so it opens offline. The Results
page's download and `python -m tl_core report` both write `html_report`."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence

from tl_core import charts, escape
from tl_core.errors import LabError
from tl_core.evaluate import confusion_matrix, validation_predictions
from tl_core.runs import RunStore


def _runs(store: RunStore, run_ids: Sequence[str]) -> tuple[list[dict], dict[str, list[dict]]]:
    runs = [store.get(i) for i in run_ids]
    return runs, {r["id"]: store.epochs(r["id"]) for r in runs}


def metrics_csv(store: RunStore, run_ids: Sequence[str]) -> str:
    """Per-epoch metrics of the runs, one row per (run, epoch); no text cell is a formula."""
    runs, epochs = _runs(store, run_ids)
    frame = charts.history_frame(runs, epochs)
    return frame.map(escape.csv_cell).to_csv(index=False)


def _confusion(store: RunStore, run: dict):
    """The run's validation confusion matrix, or None when it kept no predictions (a run
    that failed or was cancelled before its evaluation)."""
    try:
        preds = validation_predictions(store, run["id"])
    except (LabError, OSError, ValueError):
        return None
    return charts.confusion(
        confusion_matrix(preds), preds["classes"], f"Confusion matrix: {charts.run_label(run)}"
    )


def report_figures(store: RunStore, runs: list[dict], history) -> list:
    """The report's charts: the overlays, strategy bars and accuracy against time, then per
    run its curves (in the run's colour, as in the overlays) and its confusion matrix."""
    colours = charts.run_colours(runs)
    figures = [*charts.overlays(history), charts.strategy_bars(runs), charts.acc_vs_time(runs)]
    for run in runs:
        rows = history[history["run"] == run["id"]]
        if not rows.empty:
            figures.append(charts.run_curves(rows, charts.run_label(run), colours[run["id"]]))
        matrix = _confusion(store, run)
        if matrix is not None:
            figures.append(matrix)
    return figures


def html_report(store: RunStore, run_ids: Sequence[str]) -> str:
    """A self-contained HTML report of the runs."""
    runs, epochs = _runs(store, run_ids)
    history = charts.history_frame(runs, epochs)
    parts = []
    for n, fig in enumerate(report_figures(store, runs, history)):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(n == 0)))
    table = charts.summary_table(runs).to_html(index=False, justify="left")
    configs = "".join(
        f"<h3>{html.escape(charts.run_label(r))}</h3><pre>"
        + html.escape(
            json.dumps(
                {
                    "config": r["config"],
                    "versions": r.get("versions"),
                    "device": r.get("device"),
                    "error": r.get("error"),
                },
                indent=1,
            )
        )
        + "</pre>"
        for r in runs
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Transfer Learning Lab report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px}</style>"
        "</head><body><h1>Transfer Learning Lab: run report</h1>"
        f"<p>{len(runs)} run(s), written {time.strftime('%Y-%m-%d %H:%M')}.</p>"
        f"<h2>Summary</h2>{table}<p>Accuracies on the validation images; trainable: the "
        f"parameters training changed.</p><h2>Charts</h2>{''.join(parts)}"
        f"<h2>Configuration and versions</h2>{configs}</body></html>"
    )
