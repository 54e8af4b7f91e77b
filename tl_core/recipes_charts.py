"""Plotly figures for recipe results (`tl_core.recipes.recipe_results`).

- `reference_figure`: our best validation accuracy per run label beside the reference.
- `efficiency_figure`: data-efficiency, accuracy against training images per class, one line
  per strategy with the spread over seeds.
- `model_figure` / `overlay_figure`: the A-to-B recipes (cifar10-ab, fashion-ab): per model,
  train and test accuracy and loss per epoch and test accuracy against test loss; and every
  model overlaid (train accuracy, train loss, test accuracy, test loss).

`recipe_figures(store, results)` returns the right ones for a recipe, titled, in order.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tl_core.runs import RunStore

STRATEGY_COLOURS = {
    "scratch": "#d62728",
    "feature_extractor": "#1f77b4",
    "partial_finetune": "#2ca02c",
    "full_finetune": "#9467bd",
}
PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


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
        error_y={"type": "data", "array": [s["best_val_acc_std"] or 0 for s in summary]},
        marker_color="#1f77b4",
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
            error_y={"type": "data", "array": [c["std"] or 0 for c in points]},
            mode="lines+markers",
            line={"color": STRATEGY_COLOURS.get(strategy)},
            customdata=[
                ["all" if c["per_class"] is None else c["per_class"], c["seeds"]] for c in points
            ],
            hovertemplate="%{customdata[0]}/class (%{x:.0f}): %{y:.1%} over %{customdata[1]} "
            "seed(s)<extra>" + strategy + "</extra>",
        )
    fig.update_layout(
        title="Data efficiency: best validation accuracy against training images per class",
        xaxis={"title": "training images per class", "type": "log"},
        yaxis={"title": "validation accuracy (mean ± std over seeds)", "tickformat": ".0%"},
    )
    return fig


def _histories(store: RunStore, results: dict) -> list[tuple[str, list[dict]]]:
    return [
        (row["label"], store.epochs(row["run_id"]))
        for row in results["runs"]
        if row["status"] in ("done", "running", "cancelled")
    ]


def model_figure(label: str, epochs: list[dict]) -> go.Figure:
    """One model: accuracy (train, test) and loss (train, test) per epoch, and test accuracy
    against test loss (one point per validated epoch)."""
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("accuracy", "loss", "test accuracy against test loss"),
    )
    x = [e["epoch"] for e in epochs]
    val = [e for e in epochs if e["val_acc"] is not None]
    for col, key, name in ((1, "acc", "accuracy"), (2, "loss", "loss")):
        fig.add_scatter(
            x=x, y=[e[f"train_{key}"] for e in epochs], name=f"train {name}", row=1, col=col
        )
        fig.add_scatter(
            x=[e["epoch"] for e in val],
            y=[e[f"val_{key}"] for e in val],
            name=f"test {name}",
            row=1,
            col=col,
        )
    fig.add_scatter(
        x=[e["val_loss"] for e in val],
        y=[e["val_acc"] for e in val],
        text=[f"epoch {e['epoch']}" for e in val],
        mode="markers+lines",
        name="test accuracy vs loss",
        row=1,
        col=3,
    )
    fig.update_xaxes(title_text="epoch", row=1, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    fig.update_xaxes(title_text="test loss", row=1, col=3)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(tickformat=".0%", row=1, col=3)
    fig.update_layout(title=label)
    return fig


def overlay_figure(histories: list[tuple[str, list[dict]]]) -> go.Figure:
    """Every model overlaid: train accuracy, train loss, test accuracy, test loss per epoch."""
    panels = (("train_acc", 1, 1), ("train_loss", 1, 2), ("val_acc", 2, 1), ("val_loss", 2, 2))
    fig = make_subplots(
        rows=2,
        cols=2,
        subplot_titles=("train accuracy", "train loss", "test accuracy", "test loss"),
    )
    for k, (label, epochs) in enumerate(histories):
        colour = PALETTE[k % len(PALETTE)]
        for key, row, col in panels:
            points = [e for e in epochs if e[key] is not None]
            fig.add_scatter(
                x=[e["epoch"] for e in points],
                y=[e[key] for e in points],
                name=label,
                legendgroup=label,
                showlegend=(row, col) == (1, 1),
                line={"color": colour},
                row=row,
                col=col,
            )
    for row, col in ((1, 1), (2, 1)):
        fig.update_yaxes(tickformat=".0%", row=row, col=col)
    fig.update_xaxes(title_text="epoch", row=2)
    fig.update_layout(title="All models overlaid")
    return fig


def recipe_figures(store: RunStore, results: dict) -> dict[str, go.Figure]:
    """The figures for one recipe's results, by title, in the order to show them."""
    figures: dict[str, go.Figure] = {}
    if results["chart"] == "efficiency":
        figures["Accuracy against training images per class"] = efficiency_figure(results)
        return figures
    figures["Measured beside the reference"] = reference_figure(results)
    if results["chart"] == "overlay":
        histories = _histories(store, results)
        figures["All models overlaid"] = overlay_figure(histories)
        for label, epochs in histories:
            figures[label] = model_figure(label, epochs)
    return figures
