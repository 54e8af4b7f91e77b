"""The HTML run report and `python -m tl_core report`: each run's curves in its own colour
(its strategy's hue), accuracies as percentages, a confusion matrix per run."""

from __future__ import annotations

import json

import pytest
from report_fixtures import line_colours, plotly_figures, two_strategy_runs

from tl_core.cli import main
from tl_core.runs import RunStore
from tl_core.strategies import STRATEGIES


@pytest.fixture
def two_runs(stripes) -> list[str]:
    return two_strategy_runs(stripes)


def test_report_command_writes_curves_in_distinct_colours(two_runs, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", *two_runs, "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["out"] == str(out) and result["run_ids"] == two_runs
    page = out.read_text()
    figures = plotly_figures(page)
    colours = line_colours(figures)
    assert None not in colours and len(set(colours)) >= 2
    # The strategies' own colours, from the one table.
    assert {STRATEGIES["scratch"].colour, STRATEGIES["feature_extractor"].colour} <= set(colours)
    titles = [(f["layout"].get("title") or {}).get("text", "") for f in figures]
    assert sum(t.startswith("Confusion matrix") for t in titles) == 2
    assert ">None<" not in page and "%</td>" in page  # percentages, no literal None


def test_report_is_the_pages_download(two_runs, tmp_path):
    from tl_core.report import html_report

    out = tmp_path / "r.html"
    assert main(["report", *two_runs, "--out", str(out)]) == 0
    figures = plotly_figures(out.read_text())
    same = plotly_figures(html_report(RunStore(), two_runs))
    assert [f["data"] for f in figures] == [f["data"] for f in same]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no run with id 'nope'"),
        (["RUN", "--out-dir"], "unrecognized arguments"),
    ],
)
def test_report_bad_input_exits_2_with_one_line(args, message, tmp_path, capsys):
    assert main(["report", *args, "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.html").exists()


def test_report_out_in_a_missing_folder_says_so(tmp_path, capsys):
    assert main(["report", "any", "--out", str(tmp_path / "nowhere" / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
