"""Helpers for the report tests: two runs of different strategies, and the Plotly figures
read back out of an HTML report."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tl_core.jobs import RunSpec, execute_run, queue_runs
from tl_core.runs import RunStore
from tl_core.train import TrainConfig


def two_strategy_runs(data: Path) -> list[str]:
    """A scratch run, then a feature_extractor run starting from its weights (small_cnn has
    no ImageNet weights): two finished runs of different strategies."""
    store = RunStore()
    train = TrainConfig(epochs=2, batch_size=8, precision="fp32")
    (first,) = queue_runs(
        store, [RunSpec(data=str(data), backbone="small_cnn", strategy="scratch", train=train)]
    )
    execute_run(store, first)
    spec = RunSpec(
        data=str(data),
        backbone="small_cnn",
        strategy="feature_extractor",
        init_from=first,
        train=train,
    )
    (second,) = queue_runs(store, [spec])
    execute_run(store, second)
    return [first, second]


def plotly_figures(page: str) -> list[dict]:
    """Every `Plotly.newPlot(id, data, layout, ...)` of an HTML page, as {data, layout}."""
    decoder = json.JSONDecoder()
    figures = []
    for match in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', page):
        data, end = decoder.raw_decode(page, match.end())
        rest = page[end:].lstrip()[1:].lstrip()  # the comma, then the layout
        layout, _ = decoder.raw_decode(rest)
        figures.append({"data": data, "layout": layout})
    return figures


def line_colours(figures: list[dict]) -> list[str | None]:
    """The colour of every line trace (scatter traces drawn with lines)."""
    return [
        (t.get("line") or {}).get("color")
        for f in figures
        for t in f["data"]
        if t.get("type") == "scatter" and "lines" in (t.get("mode") or "")
    ]
