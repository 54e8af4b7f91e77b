"""Experiments page: the preview before starting, Start queues runs, the queue shows
position and expected start, Cancel, the per-workspace limit."""

from __future__ import annotations

import pytest
from app_fixtures import app_at

from tl_core.data.sources import import_folder
from tl_core.runs import RunStore


@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")


@pytest.fixture
def stripes_set(stripes) -> str:
    import_folder(stripes, "stripes")
    return "stripes"


def test_without_data_it_points_to_the_data_page():
    at = app_at("pages/experiments.py")
    assert not at.exception
    assert "No data set" in at.info[0].value
    assert "Nothing queued" in at.markdown[-1].value


def test_preview_shows_trainable_parameters_diagrams_and_estimate(stripes_set):
    at = app_at("pages/experiments.py")
    assert not at.exception
    assert at.selectbox(key="exp_data").value == "stripes"
    assert at.selectbox(key="exp_backbone").value == "efficientnet_lite0"
    preview = at.dataframe[0].value
    assert list(preview["strategy"]) == [
        "scratch",
        "feature_extractor",
        "partial_finetune",
        "full_finetune",
    ]
    scratch, frozen = (int(v.replace(",", "")) for v in preview["trainable parameters"][:2])
    assert frozen == 1280 * 2 + 2 < scratch  # only the new head trains
    assert all(preview["estimated time per run"] != "-")
    assert len(at.get("plotly_chart")) == 4  # one frozen/trains diagram per strategy


def test_start_queues_runs_and_the_queue_shows_them(stripes_set):
    at = app_at("pages/experiments.py")
    at.selectbox(key="exp_backbone").set_value("small_cnn").run()
    at.multiselect(key="exp_strategies").set_value(["scratch"]).run()
    at.number_input(key="exp_seeds").set_value(2).run()
    at.number_input(key="exp_epochs").set_value(1).run()
    assert at.button(key="exp_start").label == "Start 2 run(s)"
    at.button(key="exp_start").click().run()
    assert not at.exception
    assert "Queued 2 run(s)" in at.success[0].value
    queue = RunStore().queue()
    assert [(r["strategy"], r["seed"], r["status"]) for r in queue] == [
        ("scratch", 0, "queued"),
        ("scratch", 1, "queued"),
    ]
    texts = " ".join(m.value for m in at.markdown)
    assert "queued, position 1, expected to start in" in texts
    assert "queued, position 2" in texts
    # Cancel the second run from its button.
    at.button(key=f"cancel_{queue[1]['id']}").click().run()
    assert RunStore().get(queue[1]["id"])["status"] == "cancelled"
    assert len(RunStore().queue()) == 1


def test_small_cnn_without_a_starting_run_is_explained(stripes_set):
    at = app_at("pages/experiments.py")
    at.selectbox(key="exp_backbone").set_value("small_cnn").run()
    assert not at.exception
    why = [w.value for w in at.warning if "needs a starting point" in w.value]
    assert why and all("Start from a previous run" in w for w in why)  # the page's control
    assert at.button(key="exp_start").label == "Start 1 run(s)"  # scratch only


def test_queue_limit_per_workspace(stripes_set, monkeypatch):
    monkeypatch.setenv("TL_LAB_MAX_QUEUED", "1")
    at = app_at("pages/experiments.py")
    at.selectbox(key="exp_backbone").set_value("small_cnn").run()
    at.number_input(key="exp_seeds").set_value(2).run()
    at.button(key="exp_start").click().run()
    assert not at.exception
    assert "limit of 1" in at.error[0].value
    assert RunStore().queue() == []


def test_recipes_are_one_click(monkeypatch, stripes_set):
    from tl_core import machine

    monkeypatch.setattr(machine, "downloads_reachable", lambda timeout=2.0: False)
    import streamlit as st

    st.cache_data.clear()
    at = app_at("pages/experiments.py")
    assert not at.exception
    assert at.button(key="recipe_data-efficiency")
    at.button(key="recipe_data-efficiency").click().run()
    assert not at.exception
    assert RunStore().queue() == [] and "This queues 60 runs" in at.warning[-1].value
    at.button(key="recipe_data-efficiency_yes").click().run()  # 60 runs: asks first
    assert "Recipe data-efficiency queued" in at.success[0].value
    queued = RunStore().queue()
    assert queued and {r["recipe"] for r in queued} == {"data-efficiency"}
    assert {r["backbone"] for r in queued} == {"efficientnet_lite0"}  # offline variant
    assert {r["data_path"] for r in queued} == {"stripes"}  # the workspace's set, chosen


def test_a_double_click_on_start_makes_one_set_of_runs(stripes_set):
    at = app_at("pages/experiments.py")
    at.selectbox(key="exp_backbone").set_value("small_cnn").run()
    at.number_input(key="exp_seeds").set_value(2).run()
    at.button(key="exp_start").click().run()
    at.button(key="exp_start").click().run()  # the second click of a double click
    assert not at.exception
    assert len(RunStore().list()) == 2
    # A deliberate new request (other settings) is a new set.
    at.number_input(key="exp_seeds").set_value(1).run()
    at.button(key="exp_start").click().run()
    assert len(RunStore().list()) == 3


def test_click_request_ids_repeat_only_for_the_same_settings_soon_after():
    from tl_core.workspaces import click_request_id

    state: dict = {}
    first = click_request_id(state, "k", {"epochs": 3})
    assert click_request_id(state, "k", {"epochs": 3}) == first
    other = click_request_id(state, "k", {"epochs": 4})
    assert other != first
    assert click_request_id(state, "k", {"epochs": 4}, window=0.0) != other  # too late: new


def test_a_set_too_small_to_validate_is_named_not_its_folder():
    """The message named the lab home's folder (/home/.../datasets/tiny), not the set."""
    from app_fixtures import image_bytes

    from tl_core.data.sources import add_images
    from tl_core.paths import lab_home

    for cls in ("red", "blue"):
        add_images("tiny", cls, [(f"{cls}.png", image_bytes())])
    at = app_at("pages/experiments.py")
    assert not at.exception
    (error,) = [e.value for e in at.error]
    assert error.startswith("tiny has too few images") and str(lab_home()) not in error
