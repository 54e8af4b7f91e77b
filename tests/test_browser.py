"""The whole app in a real browser: `streamlit run app.py` driven by Debian's Chromium.

A newcomer's path: build the `shapes` set, compare scratch, feature_extractor and
full_finetune with efficientnet_lite0 for one epoch, reload the page mid-run, wait for the
three runs, read the results. Every page is photographed (to `$TL_LAB_ARTIFACTS`, default a
temporary `artifacts/` folder) and any Streamlit exception box fails the test. The server
runs in its own process group, which is ended (worker included) however the test ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from app_fixtures import wait_for

from tl_core.runs import RunStore
from tl_core.strategies import STRATEGIES as STRATEGY_TABLE

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ("scratch", "feature_extractor", "full_finetune")
EXCEPTION = '[data-testid="stException"]'


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    reason = "Chromium is not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the browser test")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture
def server(tmp_path: Path):
    """The app on a free port of 127.0.0.1 with a fresh lab home; yields (url, home)."""
    home = tmp_path / "lab-home"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TL_LAB_")}
    env.update(TL_LAB_HOME=str(home), TL_LAB_WORKER_IDLE_EXIT="60", PYTHONPATH=str(ROOT))
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed in the finally
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.headless=true",
            "--server.address=127.0.0.1",
            f"--server.port={port}",
            "--browser.gatherUsageStats=false",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the worker it starts joins it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: healthy(url) or proc.poll() is not None, 90, "the server")
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        yield url, home
    finally:
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        log.close()
        print((tmp_path / "server.log").read_text()[-3000:])


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("TL_LAB_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# The colour of every line trace of every Plotly chart on a page.
LINE_COLOURS = """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(gd =>
    gd.data.filter(t => t.type === 'scatter' && (t.mode || '').includes('lines'))
            .map(t => (t.line && t.line.color) || null))"""


def check_downloaded_report(browser, page, artifacts: Path) -> None:
    """Download the Results page's HTML report, open it in Chromium (offline: plotly.js is
    inside), and check that the runs' curves carry their strategies' distinct colours."""
    with page.expect_download() as download:
        page.locator(".st-key-dl_report button").click()
    report = artifacts / "5b-report.html"
    download.value.save_as(str(report))
    viewer = browser.new_page(viewport={"width": 1300, "height": 1000})
    try:
        viewer.goto(report.as_uri())
        viewer.wait_for_function(
            "document.querySelectorAll('.js-plotly-plot .main-svg').length >= 8", timeout=60_000
        )
        colours = viewer.evaluate(LINE_COLOURS)
        assert colours and None not in colours, colours
        expected = {STRATEGY_TABLE[s].colour for s in STRATEGIES}
        assert expected <= set(colours), (expected, set(colours))
        titles = viewer.evaluate(
            "() => [...document.querySelectorAll('.js-plotly-plot')]"
            ".map(gd => (gd.layout.title && gd.layout.title.text) || '')"
        )
        matrices = [t for t in titles if t.startswith("Confusion matrix")]
        assert len(matrices) == len(STRATEGIES), titles
        viewer.screenshot(path=str(artifacts / "5b-report.png"), full_page=True)
    finally:
        viewer.close()


def test_newcomer_compares_three_strategies_in_the_browser(server, artifacts, tmp_path):
    executable = chromium_path()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    url, home = server
    store = RunStore(home)
    expect.set_options(timeout=30_000)  # a loaded machine renders a chart in more than 5 s

    def no_exception(page) -> None:
        boxes = page.locator(EXCEPTION)
        assert boxes.count() == 0, boxes.first.inner_text()

    def shoot(page, name: str) -> None:
        # Streamlit scrolls inside its own container, so a tall window shows the whole page.
        page.set_viewport_size({"width": 1400, "height": 2800})
        page.wait_for_timeout(800)
        with contextlib.suppress(PlaywrightTimeout):  # a screenshot is worth taking anyway
            page.wait_for_function(
                "!document.querySelector('[data-testid=\"stSkeleton\"]')", timeout=15_000
            )
        page.screenshot(path=str(artifacts / f"{name}.png"))
        page.set_viewport_size({"width": 1400, "height": 1000})
        no_exception(page)

    def open_page(page, path: str, ready: str) -> None:
        page.goto(f"{url}/{path}")
        expect(page.get_by_text(ready).first).to_be_visible(timeout=60_000)

    def choose(page, key: str, option: str) -> None:
        page.locator(f".st-key-{key} [role='combobox']").click()
        page.get_by_role("option", name=option, exact=True).click()

    def number(page, key: str, value: int) -> None:
        box = page.locator(f".st-key-{key} input")
        box.fill(str(value))
        box.press("Enter")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)

            # The first view of a fresh server, a page opened by its URL: it runs through
            # app.py (its navigation, not Streamlit's list of files "app", "data", ...).
            open_page(page, "data", "Add pictures")
            expect(page.get_by_text("Home", exact=True).first).to_be_visible()
            expect(page.get_by_text("app", exact=True)).to_have_count(0)

            open_page(page, "", "Quick start")
            shoot(page, "1-home")

            # Data: build a small shapes set (8 training pictures per shape).
            open_page(page, "data", "Add pictures")
            number(page, "data_builtin_n", 8)
            page.locator(".st-key-data_build button").click()
            expect(page.get_by_text("picture(s) added").first).to_be_visible()
            expect(page.get_by_text("shapes: 72 pictures, 4 classes")).to_be_visible()
            expect(page.locator(".js-plotly-plot").first).to_be_visible()  # class balance
            expect(page.locator("[data-testid='stImage']").first).to_be_visible()  # gallery
            shoot(page, "2-data")

            # Experiments: three strategies, one epoch, no augmentation.
            open_page(page, "experiments", "Before you start")
            remove = page.locator(
                ".st-key-exp_strategies button[aria-label='Remove partial_finetune']"
            )
            remove.click()
            expect(remove).to_have_count(0)
            number(page, "exp_epochs", 1)
            choose(page, "exp_augment", "none")
            start = page.locator(".st-key-exp_start button")
            expect(start).to_have_text("Start 3 run(s)")
            start.click()
            expect(page.get_by_text("Queued 3 run(s)")).to_be_visible()
            assert sorted(r["strategy"] for r in store.list()) == sorted(STRATEGIES)

            # Refresh in the middle of a run: nothing is lost, the progress comes back.
            # The worker is paused (SIGSTOP) while the page reloads: on a fast machine the
            # three one-epoch runs would otherwise finish before the page has drawn.
            wait_for(lambda: store.list(status="running"), 120, "a running run")
            worker_pid = store.list(status="running")[0]["worker_pid"]
            os.kill(worker_pid, signal.SIGSTOP)
            try:
                page.reload()
                expect(page.get_by_text("— running").first).to_be_visible(timeout=60_000)
                shoot(page, "3-experiments-running")
            finally:
                os.kill(worker_pid, signal.SIGCONT)

            def all_done() -> bool:
                statuses = [r["status"] for r in store.list()]
                assert "failed" not in statuses, [r["error"] for r in store.list()]
                return statuses == ["done"] * 3

            wait_for(all_done, 400, "the three runs")  # ~1 min on an idle 2-core CPU
            expect(page.get_by_text("See the results")).to_be_visible(timeout=30_000)
            shoot(page, "4-experiments-done")

            open_page(page, "results", "All selected runs")
            table = page.locator("[data-testid='stDataFrame']").first
            expect(table).to_be_visible()
            charts = page.locator(".js-plotly-plot")
            wait_for(lambda: charts.count() >= 4 + 2 + 6 + 2, 60, "the charts")
            page.wait_for_timeout(1500)
            shoot(page, "5-results")
            check_downloaded_report(browser, page, artifacts)

            open_page(page, "predict", "Export a trained model")
            shapes = home / "datasets" / "shapes" / "val" / "star"
            page.locator(".st-key-pred_files input[type='file']").set_input_files(
                str(next(shapes.iterdir()))
            )
            expect(page.locator("[data-testid='stImage']").first).to_be_visible(timeout=60_000)
            expect(page.locator("[data-testid='stDataFrame']").first).to_be_visible()
            shoot(page, "6-predict")

            open_page(page, "learn", "Why small data sets need transfer")
            shoot(page, "7-learn")
        finally:
            browser.close()
    print(f"screenshots in {artifacts}")
