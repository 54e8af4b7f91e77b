"""Charts and tables as a class reads them: one colour per strategy in every chart (from
the `STRATEGIES` table), unfinished runs not shown as results, no zero-width error bars,
tables without `None`, whole-number epoch ticks, a readable log axis, diagram titles clear
of Plotly's toolbar, and a Grad-CAM colour map that reads on a projector."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tl_core import charts, gradcam
from tl_core.recipes.charts import efficiency_figure, log_ticks, reference_figure
from tl_core.strategies import STRATEGIES


def run(rid: str, strategy: str, acc: float | None, status: str = "done", **extra) -> dict:
    return {
        "id": rid,
        "name": None,
        "backbone": "resnet18",
        "strategy": strategy,
        "seed": 0,
        "status": status,
        "best_val_acc": acc,
        "final_val_acc": acc,
        "train_seconds": 12.5,
        "trainable_params": 11_177_538,
        "epoch": 3,
        "epochs_total": 3,
        **extra,
    }


def history(runs: list[dict], epochs: int = 3):
    per_run = {
        r["id"]: [
            {"epoch": e, "train_loss": 1 / e, "train_acc": 0.5, "val_loss": 1 / e, "val_acc": 0.6}
            for e in range(1, epochs + 1)
        ]
        for r in runs
    }
    return charts.history_frame(runs, per_run)


def test_every_strategy_has_its_own_colour_in_the_table():
    colours = [s.colour for s in STRATEGIES.values()]
    assert "probe_finetune" in STRATEGIES
    assert len(set(colours)) == len(colours)


def test_a_strategy_has_the_same_colour_in_line_bar_and_scatter_charts():
    runs = [run("a1", "full_finetune", 0.9), run("b1", "feature_extractor", 0.8)]
    lines = {
        t.name.rsplit(" (", 1)[0]: t.line.color
        for t in charts.overlay(history(runs), "val_acc", "x").data
    }
    bars = charts.strategy_bars(runs).data[0]
    bar_colours = dict(zip(bars.x, bars.marker.color, strict=True))
    scatter = {t.name: t.marker.color for t in charts.acc_vs_time(runs).data}
    for strategy in ("full_finetune", "feature_extractor"):
        expected = STRATEGIES[strategy].colour
        assert lines[f"resnet18 {strategy}"] == expected
        assert bar_colours[strategy] == scatter[strategy] == expected
    curve = [
        {
            "strategy": "full_finetune",
            "images_per_class": 5,
            "per_class": 5,
            "mean": 0.5,
            "std": 0.0,
            "seeds": 1,
        }
    ]
    assert efficiency_figure({"curve": curve}).data[0].line.color == expected_colour(
        "full_finetune"
    )
    summary = [
        {
            "label": "x",
            "strategy": "feature_extractor",
            "best_val_acc": 0.8,
            "best_val_acc_std": 0.0,
            "reference": None,
        }
    ]
    measured = reference_figure({"summary": summary, "title": "t"}).data[0]
    assert list(measured.marker.color) == [expected_colour("feature_extractor")]


def expected_colour(strategy: str) -> str:
    return STRATEGIES[strategy].colour


def test_each_run_has_its_own_colour_and_its_curves_share_it():
    runs = [run(f"r{k}", "scratch", 0.7) for k in range(3)]
    colours = [t.line.color for t in charts.overlay(history(runs), "val_acc", "x").data]
    assert len(set(colours)) == 3 and colours[0] == expected_colour("scratch")
    rows = history(runs[1:2])
    traces = charts.run_curves(rows, "one", colours[1]).data
    assert {t.line.color for t in traces} == {colours[1]}
    assert [t.line.dash for t in traces] == ["solid", "dash", "solid", "dash"]  # train, val


def test_unfinished_runs_are_not_plotted_as_results():
    runs = [
        run("a", "scratch", 0.9),
        run("b", "scratch", 0.458, status="cancelled", epoch=1),
        run("c", "full_finetune", None, status="failed"),
    ]
    fig = charts.strategy_bars(runs)
    assert list(fig.data[0].x) == ["scratch"] and list(fig.data[0].y) == [0.9]
    note = fig.layout.title.subtitle.text
    assert "1 cancelled" in note and "1 failed" in note
    scatter = charts.acc_vs_time(runs)
    assert [list(t.y) for t in scatter.data] == [[0.9]]


def test_one_seed_draws_no_zero_width_error_bar():
    fig = charts.strategy_bars([run("a", "scratch", 0.9), run("b", "full_finetune", 0.95)])
    assert len(fig.data) == 1 and not fig.data[0].error_y.visible
    assert list(fig.data[0].text) == ["90.0% (n=1)", "95.0% (n=1)"]
    assert "mean ± std" not in fig.layout.title.subtitle.text
    mixed = charts.strategy_bars(
        [run("a", "scratch", 0.9), run("b", "scratch", 0.8), run("c", "full_finetune", 0.95)]
    )
    bars = mixed.data[1]  # error bars for the strategies with a spread, and only those
    assert list(bars.x) == ["scratch"] and list(bars.error_y.array) == [pytest.approx(0.0707, 1e-2)]
    assert "mean ± std" in mixed.layout.title.subtitle.text
    summary = [
        {
            "label": "x",
            "strategy": "scratch",
            "best_val_acc": 0.8,
            "best_val_acc_std": 0.0,
            "reference": None,
        }
    ]
    assert not reference_figure({"summary": summary, "title": "t"}).data[0].error_y.visible


def test_summary_table_reads_without_none():
    runs = [
        run(
            "r1",
            "scratch",
            None,
            status="failed",
            train_seconds=None,
            trainable_params=None,
            epoch=None,
            seed=None,
        ),
        run("r2", "full_finetune", 0.91667, name=""),
    ]
    table = charts.summary_table(runs)
    cells = table.astype(str).to_numpy().ravel().tolist()
    assert "None" not in cells and "nan" not in cells
    assert all(table["name"].str.strip())  # never an empty name
    assert list(table["trainable"]) == ["-", "11,177,538"]
    assert list(table["final acc"]) == ["-", "91.7%"]
    assert list(table["run"]) == ["r1", "r2"]


def test_epoch_axes_have_whole_number_ticks():
    runs = [run("a", "scratch", 0.9)]
    for fig in (
        charts.overlay(history(runs, 3), "val_acc", "x"),
        charts.run_curves(history(runs, 3), "t"),
    ):
        assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tick0 == 1
    assert charts.overlay(history(runs, 40), "val_acc", "x").layout.xaxis.dtick == 4


def test_accuracy_axes_are_percentages():
    runs = [run("a", "scratch", 0.9)]
    assert charts.overlay(history(runs), "val_acc", "x").layout.yaxis.tickformat == ".0%"
    assert charts.strategy_bars(runs).layout.yaxis.tickformat == ".0%"


def test_efficiency_log_axis_has_plain_ticks():
    curve = [
        {
            "strategy": "scratch",
            "images_per_class": n,
            "per_class": n,
            "mean": 0.5,
            "std": 0.1,
            "seeds": 2,
        }
        for n in (5, 10, 20, 40)
    ]
    axis = efficiency_figure({"curve": curve}).layout.xaxis
    assert axis.type == "log"
    assert list(axis.tickvals) == [5, 10, 20, 40]  # the sizes the study used, labelled
    assert list(axis.ticktext) == ["5", "10", "20", "40"]
    many = [dict(curve[0], images_per_class=n) for n in range(1, 200, 9)]
    assert list(efficiency_figure({"curve": many}).layout.xaxis.tickvals) == log_ticks(1, 190)
    assert log_ticks(5, 40) == [2, 5, 10, 20, 50] and log_ticks(3, 1000)[-2:] == [1000, 2000]


def test_layer_diagram_titles_sit_below_the_toolbar():
    for fig in (
        charts.strategy_diagram("small_cnn", "partial_finetune", 2),
        charts.strategy_diagram("small_cnn", "probe_finetune"),
    ):
        title = fig.layout.title
        assert (title.yref, title.y, title.yanchor) == ("paper", 1, "bottom")
        assert fig.layout.margin.t >= charts.MODEBAR_PX + title.pad.b + 20


def test_grad_cam_colour_map_runs_from_blue_to_red():
    (r0, _, b0), (r1, _, b1) = gradcam.attention_colours(np.array([0.0, 1.0]))
    assert b0 > 0.6 > r0 and r1 > 0.5 > b1  # blue for low attention, red for high
    legend = gradcam.legend_colours()
    assert len(legend) >= 5 and legend[0] != legend[-1]


def test_grad_cam_overlay_colours_low_and_high_attention(home_with_runs):
    from tl_core.evaluate import load_trained
    from tl_core.runs import RunStore

    trained = load_trained(RunStore(), home_with_runs[0])
    image = Image.new("RGB", (32, 32), (128, 128, 128))
    heat = np.zeros((32, 32))
    heat[:, 16:] = 1.0
    pixels = np.asarray(gradcam.overlay(trained, image, heat), dtype=int)
    left, right = pixels[:, :16].mean(axis=(0, 1)), pixels[:, 16:].mean(axis=(0, 1))
    assert left[2] - left[0] > 60  # low attention: clearly blue, not the bare photo
    assert right[0] - right[2] > 60  # high attention: clearly red


def test_a_run_name_is_text_in_titles_legends_and_hover():
    runs = [run("a", "scratch", 0.9, name="<a href='x'>me</a>", status="cancelled")]
    fig = charts.overlay(history(runs), "val_acc", "x")
    assert "<a" not in fig.data[0].name and "<a" not in fig.data[0].hovertemplate
    bars = charts.strategy_bars(runs)
    assert "<" not in bars.layout.title.text + bars.layout.title.subtitle.text


def test_the_confusion_matrix_leaves_room_for_the_longest_class_name():
    short = charts.confusion([[1, 0], [0, 1]], ["a", "b"])
    long = charts.confusion([[1, 0], [0, 1]], ["a", "triangle-with-a-long-name"])
    assert long.layout.margin.l > short.layout.margin.l >= 60
    assert long.layout.margin.l >= 8 * len("triangle-with-a-long-name")
