"""Learn page: the ideas, the diagrams, and a one-click experiment per idea."""

from __future__ import annotations

import pytest
from app_fixtures import app_at

from tl_core.runs import RunStore


@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")


def test_ideas_with_diagrams_and_buttons():
    at = app_at("pages/learn.py")
    assert not at.exception
    assert [h.value for h in at.header] == [
        "Fixed feature extractor, fine-tuning, and the in-between",
        "Fine-tuning well: probe first, then fine-tune",
        "Why small data sets need transfer",
        "Augmentation",
        "SGD, mini-batches and momentum",
    ]
    assert len(at.get("plotly_chart")) == 7
    assert {b.key for b in at.button} >= {f"learn_run_{k}" for k in ("strategies", "momentum")}


def test_one_click_experiment_queues_its_runs():
    at = app_at("pages/learn.py")
    at.button(key="learn_run_momentum").click().run()
    assert not at.exception
    queued = RunStore().queue()
    assert [r["name"] for r in queued] == [
        f"SGD, mini-batches and momentum: {v}"
        for v in ("momentum 0", "momentum 0.9", "momentum 0.9, batch 4")
    ]
    assert [r["config"]["train"]["momentum"] for r in queued] == [0.0, 0.9, 0.9]
    assert [r["config"]["train"]["batch_size"] for r in queued] == [16, 16, 4]
    assert {r["data_path"] for r in queued} == {"shapes"} and {r["recipe"] for r in queued} == {
        None
    }
