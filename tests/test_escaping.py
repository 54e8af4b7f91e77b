"""Names are data, never markup (issue 14.7): run, data set and class names shown on the
pages, in the charts and in the exports cannot become links, images or formulas."""

from __future__ import annotations

import csv
import io
import re
import shutil

import pytest
from app_fixtures import app_at

from tl_core import charts, escape, report
from tl_core.runs import RunStore

LINK = "[click me](https://evil.example/steal)"
IMAGE = "![](https://evil.example/pixel.png)"
HTML_LINK = '<a href="https://evil.example">click me</a>'
HOSTILE_NAME = f"{LINK} {IMAGE} {HTML_LINK}"
# Markdown that would render: a link or image whose brackets and parenthesis are not escaped.
LIVE_MARKDOWN = re.compile(r"(?<!\\)\]\(|(?<!\\)!\[|(?<!\\)<a href")


@pytest.fixture
def hostile_runs(trained_home, tmp_path, monkeypatch) -> list[str]:
    """A copy of the trained home: the first run named with a link, an image and an HTML
    link; the second failed with that name in its error."""
    home, ids = trained_home
    copy = tmp_path / "home-copy"
    shutil.copytree(home, copy)
    monkeypatch.setenv("TL_LAB_HOME", str(copy))
    monkeypatch.setattr("tl_core.worker.ensure_worker", lambda *a, **k: None)
    store = RunStore()
    store.update(ids[0], name=HOSTILE_NAME)
    store.update(ids[1], name="=HYPERLINK(\"https://evil.example\")", status="failed",
                 error=f"broken by {IMAGE}")  # fmt: skip
    return ids


def test_markdown_escaping_keeps_the_text_and_drops_the_markup() -> None:
    assert escape.markdown("a_b*c*") == r"a\_b\*c\*"
    assert not LIVE_MARKDOWN.search(escape.markdown(HOSTILE_NAME))
    assert "\n" not in escape.markdown("one\n# two")
    bare = escape.markdown("see https://evil.example and www.evil.example, or me@evil.example")
    assert "https://" not in bare and "www." not in bare and "me@" not in bare  # no autolinks
    assert (
        escape.markdown("- item").startswith("\\-")
        and escape.markdown("manifest.json") == "manifest.json"
    )
    assert escape.plotly(HTML_LINK).startswith("&lt;a href")


@pytest.mark.parametrize(
    ("cell", "safe"),
    [("=1+2", "'=1+2"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
     ("\tx", "'\tx"), ("\rx", "'\rx"), ("plain", "plain"), (-0.5, -0.5)],
)  # fmt: skip
def test_csv_cells_that_a_spreadsheet_would_run_get_a_quote(cell, safe) -> None:
    assert escape.csv_cell(cell) == safe


def test_the_pages_show_names_as_text(hostile_runs) -> None:
    at = app_at("pages/results.py")
    assert not at.exception
    at.multiselect(key="res_runs").set_value(hostile_runs).run()
    assert not at.exception
    shown = [
        *(e.value for e in [*at.markdown, *at.caption, *at.error, *at.warning, *at.success]),
        *(e.label for e in at.expander),
        *(b.label for b in at.button),
    ]
    named = [s for s in shown if "evil" in s]
    assert len(named) >= 3, shown  # the expander, the failure, its reason
    assert not [s for s in named if LIVE_MARKDOWN.search(s)], named
    assert any(escape.markdown(HOSTILE_NAME) in s for s in named)

    at = app_at("pages/experiments.py")
    assert not at.exception
    failed = [e.value for e in at.error if "evil" in e.value]
    assert failed and not [s for s in failed if LIVE_MARKDOWN.search(s)]


def test_the_report_and_its_charts_show_names_as_text(hostile_runs) -> None:
    store = RunStore()
    page = report.html_report(store, hostile_runs)
    # Figures carry their labels JSON-encoded (`<` as \u003c); none may be a tag.
    assert not re.search(r'(<|\\u003c)a href=\\?"https://evil', page)
    assert "&lt;a href=" in page and "evil.example" in page
    history = charts.history_frame(
        [store.get(i) for i in hostile_runs], {i: store.epochs(i) for i in hostile_runs}
    )
    names = [t.name for fig in charts.overlays(history) for t in fig.data]
    assert names and all("<a" not in n for n in names)

    rows = list(csv.reader(io.StringIO(report.metrics_csv(store, hostile_runs))))
    cells = [c for row in rows[1:] for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert any(c.startswith("'=HYPERLINK") for c in cells)
