"""Results page: two stored runs in the table, the four overlay charts, one run in detail,
the downloads."""

from __future__ import annotations

import pytest
from app_fixtures import app_at

from tl_core import report
from tl_core.runs import RunStore


@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")


def test_without_runs_it_points_to_experiments():
    at = app_at("pages/results.py")
    assert not at.exception
    assert "No finished runs" in at.info[0].value


def test_two_runs_table_overlays_and_detail(home_with_runs):
    at = app_at("pages/results.py")
    assert not at.exception
    assert sorted(at.multiselect(key="res_runs").value) == sorted(home_with_runs)
    table = at.dataframe[0].value
    assert sorted(table["run"]) == sorted(home_with_runs)
    assert set(table["strategy"]) == {"scratch"} and set(table["seed"]) == {"0", "1"}
    assert "None" not in table.astype(str).to_numpy().ravel().tolist()
    assert all(table["name"].str.strip())
    charts = at.get("plotly_chart")
    # Four overlays, strategy bars, accuracy vs time, two runs' curves and acc-vs-loss,
    # confusion matrix and per-class accuracy.
    assert len(charts) == 4 + 2 + 2 * 2 + 2
    assert any("Misclassified validation images" in m.value for m in at.markdown)
    assert [b.label for b in at.get("download_button")] == ["Run report (HTML)", "Metrics (CSV)"]


def test_one_run_selected(home_with_runs):
    at = app_at("pages/results.py")
    at.multiselect(key="res_runs").set_value(home_with_runs[:1]).run()
    assert not at.exception
    assert list(at.dataframe[0].value["run"]) == home_with_runs[:1]


def test_report_and_csv(home_with_runs):
    store = RunStore()
    html = report.html_report(store, home_with_runs)
    assert "plotly" in html and home_with_runs[0] in html and "torch" in html
    csv = report.metrics_csv(store, home_with_runs).splitlines()
    assert csv[0].startswith("run,label,strategy,epoch,train_loss,train_acc,val_loss,val_acc")
    assert len(csv) == 1 + 2 * 2  # two runs, two epochs each


def test_a_failed_run_with_a_checkpoint_can_be_resumed_from_the_page(stripes):
    from tl_core.jobs import CHECKPOINT_FILE, RunSpec, execute_run, queue_runs
    from tl_core.train import TrainConfig

    store = RunStore()
    spec = RunSpec(
        data=str(stripes), backbone="small_cnn", strategy="scratch", train=TrainConfig(epochs=3)
    )
    (run_id,) = queue_runs(store, [spec])

    def stop_after_first_epoch(p) -> None:
        if p.epoch_stats is not None and p.epoch == 1:
            raise RuntimeError("the machine went away")

    with pytest.raises(RuntimeError):
        execute_run(store, run_id, on_progress=stop_after_first_epoch)
    assert store.get(run_id)["status"] == "failed"
    assert (store.run_dir(run_id) / CHECKPOINT_FILE).is_file()
    at = app_at("pages/results.py")
    button = at.button(key=f"resume_{run_id}")
    assert button.label.endswith("from epoch 2")
    button.click().run()
    assert not at.exception
    assert store.get(run_id)["status"] == "queued"
    record = execute_run(store, run_id)  # what the worker does next
    assert record["status"] == "done" and record["epoch"] == 3
