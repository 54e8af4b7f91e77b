"""Plotly figures and tables of runs, used by the web app's pages and the HTML run report.

Each builder takes plain data (run records from the store, epoch rows, validation
predictions) and returns a figure or a DataFrame; nothing here reads Streamlit state.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tl_core import escape
from tl_core.strategies import STRATEGIES

OVERLAYS = (
    ("train_acc", "Train accuracy"),
    ("train_loss", "Train loss"),
    ("val_acc", "Validation accuracy"),
    ("val_loss", "Validation loss"),
)
STRATEGY_COLOURS = {name: s.colour for name, s in STRATEGIES.items()}  # from the table
FROZEN, TRAINS = "#c6dbef", "#fd8d3c"


def run_label(run: dict) -> str:
    """A short, unique label: the run's name or backbone/strategy, seed, and id tail."""
    base = run.get("name") or f"{run['backbone']} {run['strategy']}"
    seed = f" s{run['seed']}" if run.get("seed") else ""
    return f"{base}{seed} ({run['id'][-6:]})"


def history_frame(runs: Sequence[dict], epochs: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per (run, epoch): run, label, strategy, epoch and the four metrics."""
    rows = []
    for run in runs:
        for e in epochs.get(run["id"], []):
            rows.append(
                {
                    "run": run["id"],
                    "label": run_label(run),
                    "strategy": run["strategy"],
                    **{k: e.get(k) for k in ("epoch", "train_loss", "train_acc")},
                    **{k: e.get(k) for k in ("val_loss", "val_acc", "seconds")},
                }
            )
    columns = ["run", "label", "strategy", "epoch", "train_loss", "train_acc"]
    return pd.DataFrame(rows, columns=[*columns, "val_loss", "val_acc", "seconds"])


def _escape_texts(fig: go.Figure) -> None:
    """Show run, data set and class names as typed: Plotly renders a subset of HTML in names,
    labels and hover text (an `<a href>` run name would be a live link)."""
    for trace in fig.data:
        if isinstance(trace.name, str):
            trace.name = escape.plotly(trace.name)
        for key in ("x", "y", "text"):
            values = getattr(trace, key, None)
            if isinstance(values, str):
                setattr(trace, key, escape.plotly(values))
            elif isinstance(values, tuple | list) and all(isinstance(v, str) for v in values):
                setattr(trace, key, [escape.plotly(v) for v in values])


def _layout(fig: go.Figure, title: str, height: int = 340) -> go.Figure:
    _escape_texts(fig)
    fig.update_layout(
        title=escape.plotly(title),
        height=height,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def run_curves(history: pd.DataFrame, title: str) -> go.Figure:
    """One run: accuracy and loss per epoch (train and validation) side by side."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Accuracy", "Loss"))
    for col, metric in ((1, "acc"), (2, "loss")):
        for split, dash in (("train", "solid"), ("val", "dash")):
            fig.add_trace(
                go.Scatter(
                    x=history["epoch"],
                    y=history[f"{split}_{metric}"],
                    name=f"{'validation' if split == 'val' else 'train'} {metric}",
                    mode="lines+markers",
                    line={"dash": dash},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, title)


def acc_vs_loss(history: pd.DataFrame, title: str) -> go.Figure:
    """Validation accuracy against validation loss, one point per epoch of one run."""
    fig = go.Figure(
        go.Scatter(
            x=history["val_loss"],
            y=history["val_acc"],
            mode="lines+markers+text",
            text=[f"e{e}" for e in history["epoch"]],
            textposition="top center",
        )
    )
    fig.update_xaxes(title_text="validation loss")
    fig.update_yaxes(title_text="validation accuracy")
    return _layout(fig, title)


def overlay(history: pd.DataFrame, metric: str, title: str) -> go.Figure:
    """All selected runs on one chart for one metric."""
    fig = go.Figure()
    for label, rows in history.groupby("label", sort=False):
        fig.add_trace(go.Scatter(x=rows["epoch"], y=rows[metric], name=label, mode="lines+markers"))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text=title.lower())
    return _layout(fig, title)


def overlays(history: pd.DataFrame) -> list[go.Figure]:
    """The four overlay charts: train/validation accuracy and loss of every selected run."""
    return [overlay(history, metric, title) for metric, title in OVERLAYS]


def summary_table(runs: Sequence[dict]) -> pd.DataFrame:
    """One row per run: what was trained and how it went."""
    return pd.DataFrame(
        [
            {
                "run": r["id"],
                "name": r.get("name") or "",
                "backbone": r["backbone"],
                "strategy": r["strategy"],
                "seed": r.get("seed"),
                "status": r["status"],
                "best val acc": r.get("best_val_acc"),
                "final val acc": r.get("final_val_acc"),
                "seconds": None if r.get("train_seconds") is None else round(r["train_seconds"], 1),
                "trainable params": r.get("trainable_params"),
                "epochs": r.get("epoch"),
            }
            for r in runs
        ]
    )


def strategy_bars(runs: Sequence[dict]) -> go.Figure:
    """Final validation accuracy per strategy: the mean, with the standard deviation as error
    bar when a strategy was repeated over seeds."""
    by_strategy: dict[str, list[float]] = {}
    for r in runs:
        if r.get("final_val_acc") is not None:
            by_strategy.setdefault(r["strategy"], []).append(r["final_val_acc"])
    names = list(by_strategy)
    means = [statistics.fmean(v) for v in by_strategy.values()]
    errors = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in by_strategy.values()]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=means,
            error_y={"type": "data", "array": errors, "visible": True},
            marker_color=[STRATEGY_COLOURS.get(n, "#636efa") for n in names],
            text=[
                f"{m:.1%} (n={len(v)})" for m, v in zip(means, by_strategy.values(), strict=True)
            ],
        )
    )
    fig.update_yaxes(title_text="final validation accuracy", range=[0, 1.05])
    return _layout(fig, "Final accuracy per strategy (mean ± std over seeds)")


def acc_vs_time(runs: Sequence[dict]) -> go.Figure:
    """Accuracy against training time; marker size grows with trainable parameters."""
    done = [r for r in runs if r.get("train_seconds") and r.get("final_val_acc") is not None]
    biggest = max((r.get("trainable_params") or 1 for r in done), default=1)
    fig = go.Figure()
    for strategy in dict.fromkeys(r["strategy"] for r in done):
        rs = [r for r in done if r["strategy"] == strategy]
        fig.add_trace(
            go.Scatter(
                x=[r["train_seconds"] for r in rs],
                y=[r["final_val_acc"] for r in rs],
                mode="markers",
                name=strategy,
                text=[f"{run_label(r)}: {r.get('trainable_params') or 0:,} trainable" for r in rs],
                marker={
                    "size": [
                        12 + 38 * ((r.get("trainable_params") or 1) / biggest) ** 0.5 for r in rs
                    ],
                    "color": STRATEGY_COLOURS.get(strategy),
                    "opacity": 0.8,
                },
            )
        )
    fig.update_xaxes(title_text="training time (s)")
    fig.update_yaxes(title_text="final validation accuracy")
    return _layout(fig, "Accuracy against training time (size: trainable parameters)")


def confusion(counts: list[list[int]], classes: list[str]) -> go.Figure:
    fig = go.Figure(
        go.Heatmap(
            z=counts,
            x=classes,
            y=classes,
            colorscale="Blues",
            text=counts,
            texttemplate="%{text}",
            hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="predicted")
    fig.update_yaxes(title_text="true", autorange="reversed")
    return _layout(fig, "Confusion matrix (validation)", height=380)


def per_class_bars(accuracy: dict[str, float | None]) -> go.Figure:
    names = list(accuracy)
    fig = go.Figure(go.Bar(x=names, y=[accuracy[n] or 0 for n in names]))
    fig.update_yaxes(title_text="accuracy", range=[0, 1.05])
    return _layout(fig, "Accuracy per class (validation)")


def class_balance(split_counts: dict[str, dict[str, int]]) -> go.Figure:
    """Images per class, stacked by split."""
    fig = go.Figure()
    for split, counts in split_counts.items():
        fig.add_trace(go.Bar(x=list(counts), y=list(counts.values()), name=split))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title_text="images")
    return _layout(fig, "Class balance")


def _layer_bars(names: Sequence[str], flags: Sequence[bool], texts: Sequence[str]) -> go.Bar:
    """One horizontal bar per layer group, coloured frozen or trained."""
    return go.Bar(
        x=[1] * len(names),
        y=list(names),
        orientation="h",
        marker_color=[TRAINS if t else FROZEN for t in flags],
        text=list(texts),
        textposition="inside",
        hoverinfo="skip",
    )


def _diagram_layout(fig: go.Figure, title: str, height: int, top: int = 40) -> go.Figure:
    fig.update_xaxes(visible=False)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title=title,
        height=height,
        margin={"l": 10, "r": 10, "t": top, "b": 10},
        showlegend=False,
    )
    return fig


def layer_diagram(group_names: Sequence[str], trainable: Sequence[bool], title: str) -> go.Figure:
    """The backbone's layer groups, input to output, coloured frozen or trained."""
    names = [*group_names, "new head"]
    flags = [*trainable, True]
    texts = ["trains" if t else "frozen" for t in flags]
    fig = go.Figure(_layer_bars(names, flags, texts))
    return _diagram_layout(fig, title, 60 + 24 * len(names))


def strategy_diagram(backbone_name: str, strategy: str, trainable_blocks: int = 1) -> go.Figure:
    """`layer_diagram` for a backbone under a strategy (which groups train, which are frozen).

    probe_finetune gets its two phases side by side: the head alone on the frozen backbone,
    then every layer.
    """
    from tl_core.models import get_backbone, trainable_prefixes
    from tl_core.strategies import get_strategy

    backbone = get_backbone(backbone_name)
    if get_strategy(strategy).fast_path == "probe":
        return probe_diagram(backbone.group_names, strategy)
    prefixes = trainable_prefixes(backbone, strategy, trainable_blocks)
    flags = [prefixes == ("",) or all(m in prefixes for m in g) for g in backbone.layer_groups]
    return layer_diagram(backbone.group_names, flags, strategy)


def probe_diagram(group_names: Sequence[str], title: str) -> go.Figure:
    """Probe, then fine-tune: the frozen backbone with a training head, then every layer."""
    names = [*group_names, "new head"]
    probe = [False] * len(group_names) + [True]
    phases = (
        ("1. probe (cached features)", probe, ["frozen"] * len(group_names) + ["trains"]),
        (
            "2. fine-tune",
            [True] * len(names),
            ["trains (lr x mult)"] * len(group_names) + ["trains"],
        ),
    )
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=[p[0] for p in phases])
    for col, (_, flags, texts) in enumerate(phases, start=1):
        fig.add_trace(_layer_bars(names, flags, texts), row=1, col=col)
    return _diagram_layout(fig, title, 80 + 24 * len(names), top=60)


def lr_find_chart(result: dict) -> go.Figure:
    """The learning-rate finder's smoothed loss against the rate (log axis), with the
    suggested rate marked."""
    fig = go.Figure(
        go.Scatter(x=result["lrs"], y=result["losses"], mode="lines", name="smoothed loss")
    )
    finite = [v for v in result["losses"] if v == v and abs(v) != float("inf")]
    if finite:  # the diverged tail would flatten the useful part of the curve
        low = min(finite)
        fig.update_yaxes(range=[low - 0.05 * abs(low), min(max(finite), 2.5 * low + 0.1)])
    suggested = result.get("suggested_lr")
    if suggested:
        fig.add_vline(
            x=suggested,
            line_dash="dash",
            annotation_text=f"suggested {suggested:.1e}",
        )
    fig.update_xaxes(type="log", title_text="learning rate (the head's)")
    fig.update_yaxes(title_text="training loss (smoothed)")
    return _layout(fig, "Loss against learning rate")
