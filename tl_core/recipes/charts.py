"""Plotly figures for recipe results (`tl_core.recipes.recipe_results`).

- `reference_figure`: our best validation accuracy per run label beside the reference.
- `efficiency_figure`: data-efficiency, accuracy against training images per class, one line
  per strategy with the spread over seeds.
- the A-to-B recipes (cifar10-ab, fashion-ab): the lab's own run charts (`tl_core.charts`),
  every model overlaid (train accuracy, train loss, test accuracy, test loss), then per model
  train and test accuracy and loss per epoch and test accuracy against test loss.

`recipe_figures(store, results)` returns the right ones for a recipe, titled, in order.
"""

from __future__ import annotations

import plotly.graph_objects as go

from tl_core import charts
from tl_core.runs import RunStore


def _spread(stds: list[float | None]) -> dict:
    """Error bars of a standard deviation; none drawn when every point had one seed (std 0 or
    None), rather than zero-width bars that read as "no spread"."""
    if not any(stds):
        return {"visible": False}
    return {"type": "data", "array": [v or 0 for v in stds], "visible": True}


def reference_figure(results: dict) -> go.Figure:
    """Bars: our best validation accuracy (mean over seeds, spread as error bars) per run
    label, and the reference figure beside it where the recipe has one."""
    summary = results["summary"]
    labels = [s["label"] for s in summary]
    fig = go.Figure()
    fig.add_bar(
        name="measured here",
        x=labels,
        y=[s["best_val_acc"] for s in summary],
        error_y=_spread([s["best_val_acc_std"] for s in summary]),
        marker_color=[charts.strategy_colour(s["strategy"]) for s in summary],
    )
    if any(s["reference"] is not None for s in summary):
        fig.add_bar(
            name="reference",
            x=labels,
            y=[s["reference"] for s in summary],
            marker_color="#bbbbbb",
        )
    fig.update_layout(
        title=f"{results['title']}: best validation accuracy",
        yaxis={"title": "best validation accuracy", "range": [0, 1], "tickformat": ".0%"},
        barmode="group",
    )
    return fig


def log_ticks(low: float, high: float) -> list[int]:
    """Ticks 1, 2, 5, 10, 20, 50, ... covering [low, high], so a log axis reads as plain
    numbers (Plotly's own minor labels read "5 6 7 8 9 1 2 3")."""
    ticks, decade = [], 1
    while decade <= high * 10:
        ticks += [m * decade for m in (1, 2, 5)]
        decade *= 10
    inside = [t for t in ticks if low <= t <= high]
    below = [t for t in ticks if t < low][-1:]  # one tick either side frames the data
    above = [t for t in ticks if t > high][:1]
    return below + inside + above


def efficiency_figure(results: dict) -> go.Figure:
    """Accuracy against training images per class (log axis), one line per strategy, the
    band and error bars showing the spread (standard deviation) over seeds."""
    curve = results.get("curve") or []
    fig = go.Figure()
    for strategy in dict.fromkeys(c["strategy"] for c in curve):
        points = sorted(
            (c for c in curve if c["strategy"] == strategy and c["mean"] is not None),
            key=lambda c: c["images_per_class"] or 0,
        )
        fig.add_scatter(
            name=strategy,
            x=[c["images_per_class"] for c in points],
            y=[c["mean"] for c in points],
            error_y=_spread([c["std"] for c in points]),
            mode="lines+markers",
            line={"color": charts.strategy_colour(strategy)},
            customdata=[
                ["all" if c["per_class"] is None else c["per_class"], c["seeds"]] for c in points
            ],
            hovertemplate="%{customdata[0]}/class (%{x:.0f}): %{y:.1%} over %{customdata[1]} "
            "seed(s)<extra>" + strategy + "</extra>",
        )
    sizes = sorted({c["images_per_class"] for c in curve if c["images_per_class"]})
    # Label the sizes the study used; with many, plain 1-2-5 ticks instead.
    ticks = (
        sizes
        if 0 < len(sizes) <= 10
        else log_ticks(sizes[0] if sizes else 1, sizes[-1] if sizes else 100)
    )
    fig.update_layout(
        title="Data efficiency: best validation accuracy against training images per class",
        xaxis={
            "title": "training images per class",
            "type": "log",
            "tickvals": ticks,
            "ticktext": [f"{t:g}" for t in ticks],
        },
        yaxis={"title": "validation accuracy (mean ± std over seeds)", "tickformat": ".0%"},
    )
    return fig


def recipe_figures(store: RunStore, results: dict) -> dict[str, go.Figure]:
    """The figures for one recipe's results, by title, in the order to show them.

    The A-to-B recipes reuse the lab's run charts (`tl_core.charts`): the four overlays of
    every model, then per model its accuracy and loss curves and test accuracy against loss
    ("validation" there: B's held-out test images)."""
    figures: dict[str, go.Figure] = {}
    if results["chart"] == "efficiency":
        figures["Accuracy against training images per class"] = efficiency_figure(results)
        return figures
    figures["Measured beside the reference"] = reference_figure(results)
    if results["chart"] == "overlay":
        runs = [store.get(r["run_id"]) for r in results["runs"]]
        history = charts.history_frame(runs, {r["id"]: store.epochs(r["id"]) for r in runs})
        for (_, title), fig in zip(charts.OVERLAYS, charts.overlays(history), strict=True):
            figures[f"All models: {title.lower()}"] = fig
        colours = charts.run_colours(runs)  # as in the overlays
        for run in runs:
            label = charts.run_label(run)
            rows = history[history["run"] == run["id"]]
            curves = charts.run_curves(rows, label, colours[run["id"]])
            figures[f"{label}: accuracy and loss"] = curves
            figures[f"{label}: accuracy against loss"] = charts.acc_vs_loss(rows, label)
    return figures
