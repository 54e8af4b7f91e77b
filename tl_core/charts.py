"""Plotly figures and tables of runs, used by the web app's pages and the HTML run report.

Each builder takes plain data (run records from the store, epoch rows, validation
predictions) and returns a figure or a DataFrame; nothing here reads Streamlit state.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tl_core import escape
from tl_core.fmt import format_duration, percent
from tl_core.strategies import STRATEGIES

OVERLAYS = (
    ("train_acc", "Train accuracy"),
    ("train_loss", "Train loss"),
    ("val_acc", "Validation accuracy"),
    ("val_loss", "Validation loss"),
)
UNKNOWN_COLOUR = "#636363"  # a strategy no longer in the table (an old run)
FROZEN, TRAINS = "#c6dbef", "#fd8d3c"
ACCURACY_AXIS = {"tickformat": ".0%", "range": [0, 1.05]}
MARKERS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star")


def strategy_colour(strategy: str) -> str:
    """The strategy's colour from its `STRATEGIES` entry: the same in every chart."""
    return STRATEGIES[strategy].colour if strategy in STRATEGIES else UNKNOWN_COLOUR


def shade(colour: str, k: int) -> str:
    """The k-th shade of `colour`: k=0 itself, then alternately lighter and darker, so runs
    of one strategy keep its hue and still differ."""
    if k == 0:
        return colour
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    step = min(0.25 * ((k + 1) // 2), 0.75)
    target = 255 if k % 2 else 0
    mixed = [round(c + (target - c) * step) for c in rgb]
    return "#" + "".join(f"{c:02x}" for c in mixed)


def run_colours(runs: Sequence[dict]) -> dict[str, str]:
    """Run id -> its colour: its strategy's colour, shaded for the 2nd, 3rd, ... run of the
    same strategy, so each run's curve has its own colour."""
    seen: dict[str, int] = {}
    colours = {}
    for run in runs:
        k = seen.get(run["strategy"], 0)
        seen[run["strategy"]] = k + 1
        colours[run["id"]] = shade(strategy_colour(run["strategy"]), k)
    return colours


def _epoch_axis(fig: go.Figure, epochs: Sequence, **kwargs) -> None:
    """Whole-number epoch ticks (never 1.5), about ten at most."""
    last = max((int(e) for e in epochs if e == e), default=1)
    fig.update_xaxes(title_text="epoch", tick0=1, dtick=max(1, -(-last // 10)), **kwargs)


def run_label(run: dict) -> str:
    """A short, unique label: the run's name or backbone/strategy, seed, and id tail."""
    return f"{short_name(run)} ({run['id'][-6:]})"


def short_name(run: dict) -> str:
    """The run's name, or 'backbone strategy' with its seed when it has none."""
    base = run.get("name") or f"{run['backbone']} {run['strategy']}"
    return f"{base} s{run['seed']}" if run.get("seed") else base


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
        # below the axis title ("epoch"), never over it
        legend={"orientation": "h", "y": -0.3, "yanchor": "top"},
    )
    return fig


def run_curves(history: pd.DataFrame, title: str, colour: str | None = None) -> go.Figure:
    """One run: accuracy and loss per epoch side by side, in the run's colour (its strategy's
    unless given): train solid, validation dashed."""
    if colour is None:
        colour = strategy_colour(history["strategy"].iloc[0]) if len(history) else None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Accuracy", "Loss"))
    for col, metric in ((1, "acc"), (2, "loss")):
        value = "%{y:.1%}" if metric == "acc" else "%{y:.3f}"
        for split, dash in (("train", "solid"), ("val", "dash")):
            name = f"{'validation' if split == 'val' else 'train'} {metric}"
            fig.add_trace(
                go.Scatter(
                    x=history["epoch"],
                    y=history[f"{split}_{metric}"],
                    name=name,
                    mode="lines+markers",
                    line={"dash": dash, "color": colour},
                    marker={"symbol": "circle" if split == "train" else "circle-open"},
                    hovertemplate=f"epoch %{{x}}: {value}<extra>{name}</extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_yaxes(**ACCURACY_AXIS, row=1, col=1)
    _epoch_axis(fig, history["epoch"])
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
            line={"color": strategy_colour(history["strategy"].iloc[0]) if len(history) else None},
            hovertemplate="epoch %{text}: loss %{x:.3f}, accuracy %{y:.1%}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="validation loss")
    fig.update_yaxes(title_text="validation accuracy", **ACCURACY_AXIS)
    return _layout(fig, title)


def overlay(history: pd.DataFrame, metric: str, title: str) -> go.Figure:
    """All selected runs on one chart for one metric, each run in its own colour (its
    strategy's hue, `run_colours`) and marker."""
    runs = history.drop_duplicates("run")[["run", "strategy"]].to_dict("records")
    colours = run_colours([{"id": r["run"], "strategy": r["strategy"]} for r in runs])
    value = "%{y:.1%}" if metric.endswith("acc") else "%{y:.3f}"
    fig = go.Figure()
    for n, (run_id, rows) in enumerate(history.groupby("run", sort=False)):
        label = rows["label"].iloc[0]
        fig.add_trace(
            go.Scatter(
                x=rows["epoch"],
                y=rows[metric],
                name=label,
                mode="lines+markers",
                line={"color": colours[run_id]},
                marker={"symbol": MARKERS[n % len(MARKERS)]},
                hovertemplate=f"epoch %{{x}}: {value}",  # the box beside names the run
            )
        )
    _epoch_axis(fig, history["epoch"])
    fig.update_yaxes(title_text=title.lower())
    if metric.endswith("acc"):
        fig.update_yaxes(**ACCURACY_AXIS)
    return _layout(fig, title, height=320 + 20 * len(runs))  # room for a legend line per run


def overlays(history: pd.DataFrame) -> list[go.Figure]:
    """The four overlay charts: train/validation accuracy and loss of every selected run."""
    return [overlay(history, metric, title) for metric, title in OVERLAYS]


def summary_table(runs: Sequence[dict]) -> pd.DataFrame:
    """One row per run, as people read it: a name for every run (`short_name`), accuracies
    as percentages, parameter counts with thousands separators, a dash for what is unknown
    (never `None`). The same table on the pages and in the HTML report."""
    return pd.DataFrame(
        [
            {
                "name": short_name(r),
                "strategy": r["strategy"],
                "backbone": r["backbone"],
                "status": r["status"],
                "best acc": percent(r.get("best_val_acc")),
                "final acc": percent(r.get("final_val_acc")),
                "epochs": _epochs_text(r),
                "time": format_duration(r.get("train_seconds")),
                "trainable": _count(r.get("trainable_params")),
                "seed": _count(r.get("seed")),
                "run": r["id"],
            }
            for r in runs
        ],
        columns=[*SUMMARY_COLUMNS],
    )


SUMMARY_COLUMNS = ("name", "strategy", "backbone", "status", "best acc", "final acc", "epochs")
SUMMARY_COLUMNS += ("time", "trainable", "seed", "run")
# What the pages show: all but the 22-character run id, so the table fits a projector's width
# (the labels of the run pickers carry the id's tail; the report keeps the whole id).
PAGE_COLUMNS = SUMMARY_COLUMNS[:-1]


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _epochs_text(run: dict) -> str:
    done, total = run.get("epoch"), run.get("epochs_total")
    if done is None:
        return "-"
    return f"{done} of {total}" if total and total != done else str(done)


def _bar_groups(runs: Sequence[dict]) -> dict[str, list[float]]:
    """Final validation accuracies of the finished (status done) runs, by strategy."""
    groups: dict[str, list[float]] = {}
    for r in runs:
        if r["status"] == "done" and r.get("final_val_acc") is not None:
            groups.setdefault(r["strategy"], []).append(r["final_val_acc"])
    return groups


def _left_out(runs: Sequence[dict]) -> str:
    """'left out, unfinished: 1 cancelled, 2 failed' for runs that did not finish; ''."""
    counts: dict[str, int] = {}
    for r in runs:
        if r["status"] != "done":
            counts[r["status"]] = counts.get(r["status"], 0) + 1
    parts = [f"{n} {status}" for status, n in counts.items()]
    return f"left out, unfinished: {', '.join(parts)}" if parts else ""


def _titled(fig: go.Figure, title: str, notes: Sequence[str]) -> go.Figure:
    """`_layout` with the notes (what the chart shows, what it leaves out) as a subtitle
    under a short title, so neither is cut off in a narrow column."""
    _layout(fig, title)
    subtitle = "; ".join(n for n in notes if n)
    fig.update_layout(
        title={"text": escape.plotly(title), "subtitle": {"text": escape.plotly(subtitle)}},
        margin={"t": 70 if subtitle else 50},
    )
    return fig


def strategy_bars(runs: Sequence[dict]) -> go.Figure:
    """Final validation accuracy per strategy over its finished runs: the mean, with the
    standard deviation as an error bar where a strategy ran with more than one seed; one
    seed shows its single value (n=1) without a zero-width bar. Cancelled and failed runs
    are left out (the subtitle says how many)."""
    groups = _bar_groups(runs)
    names = list(groups)
    means = [statistics.fmean(v) for v in groups.values()]
    stds = [statistics.stdev(v) if len(v) > 1 else None for v in groups.values()]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=means,
            marker_color=[strategy_colour(n) for n in names],
            text=[f"{m:.1%} (n={len(v)})" for m, v in zip(means, groups.values(), strict=True)],
            customdata=["" if e is None else f" ± {e:.1%}" for e in stds],
            hovertemplate="%{x}: %{y:.1%}%{customdata}, %{text}<extra></extra>",
            showlegend=False,
        )
    )
    spread = [(n, m, e) for n, m, e in zip(names, means, stds, strict=True) if e is not None]
    if spread:  # error bars only where there is a spread to show
        fig.add_trace(
            go.Scatter(
                x=[n for n, _, _ in spread],
                y=[m for _, m, _ in spread],
                mode="markers",
                marker={"size": 1, "color": "rgba(0,0,0,0)"},
                error_y={"type": "data", "array": [e for _, _, e in spread], "color": "#333"},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    fig.update_yaxes(title_text="final validation accuracy", **ACCURACY_AXIS)
    note = "mean ± std over seeds" if spread else "one seed each"
    return _titled(fig, "Final accuracy per strategy", [note, _left_out(runs)])


def acc_vs_time(runs: Sequence[dict]) -> go.Figure:
    """Accuracy against training time of the finished runs; marker size grows with
    trainable parameters."""
    done = [
        r
        for r in runs
        if r["status"] == "done" and r.get("train_seconds") and r.get("final_val_acc") is not None
    ]
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
                hovertemplate="%{text}<br>%{x:.1f} s, %{y:.1%}<extra></extra>",
                marker={
                    "size": [
                        12 + 38 * ((r.get("trainable_params") or 1) / biggest) ** 0.5 for r in rs
                    ],
                    "color": strategy_colour(strategy),
                    "opacity": 0.8,
                },
            )
        )
    fig.update_xaxes(title_text="training time (s)")
    fig.update_yaxes(title_text="final validation accuracy", **ACCURACY_AXIS)
    notes = ["size: trainable parameters", _left_out(runs)]
    return _titled(fig, "Accuracy against training time", notes)


def confusion(
    counts: list[list[int]], classes: list[str], title: str = "Confusion matrix (validation)"
) -> go.Figure:
    """Counts of true class (rows) against predicted class (columns)."""
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
    fig.update_xaxes(title_text="predicted", automargin=True)
    fig.update_yaxes(title_text="true", autorange="reversed", automargin=True)  # long names
    # Room for the longest class name left of the rows: automargin alone cut the first
    # letters off in the HTML report ("riangle").
    longest = max((len(c) for c in classes), default=0)
    return _layout(fig, title, height=380).update_layout(margin={"l": min(60 + 8 * longest, 260)})


def per_class_bars(accuracy: dict[str, float | None]) -> go.Figure:
    names = list(accuracy)
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[accuracy[n] or 0 for n in names],
            text=[percent(accuracy[n]) for n in names],
            hovertemplate="%{x}: %{text}<extra></extra>",
        )
    )
    fig.update_yaxes(title_text="accuracy", **ACCURACY_AXIS)
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


MODEBAR_PX = 36  # Plotly's toolbar (modebar) takes the top-right corner of a chart


def _diagram_layout(fig: go.Figure, title: str, height: int, top: int = 40) -> go.Figure:
    """The layer diagrams' layout: the title sits just above the bars (below the toolbar's
    band), so the toolbar never covers it; `top` is the room the title (and any subplot
    titles) need above the bars."""
    fig.update_xaxes(visible=False)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title={
            "text": title,
            "x": 0,
            "xref": "paper",
            "y": 1,
            "yref": "paper",
            "yanchor": "bottom",
            "pad": {"b": top - 30},
        },
        height=height + MODEBAR_PX,
        margin={"l": 10, "r": 10, "t": top + MODEBAR_PX, "b": 10},
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


@functools.lru_cache(maxsize=64)
def strategy_diagram(backbone_name: str, strategy: str, trainable_blocks: int = 1) -> go.Figure:
    """`layer_diagram` for a backbone under a strategy (which groups train, which are frozen).

    probe_finetune gets its two phases side by side: the head alone on the frozen backbone,
    then every layer. Built once per process (about 50 ms each, several per page view) and
    shared: draw it, do not change it.
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
