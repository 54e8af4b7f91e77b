"""Experiments form (issue 13, item 11): the last settings of a workspace survive a reload;
another workspace keeps its own; a saved value the form cannot take falls back to the default."""

from __future__ import annotations

import json

import pytest
from app_fixtures import app_at

from tl_core import form_memory
from tl_core.data.sources import import_folder
from tl_core.workspaces import dataset_name


@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")


@pytest.fixture
def two_workspaces(stripes) -> None:
    for ws in ("team-a", "team-b"):
        import_folder(stripes, dataset_name(ws, "stripes"))


def test_a_reload_keeps_the_workspace_s_last_settings(two_workspaces) -> None:
    at = app_at("pages/experiments.py", workspace="team-a")
    at.selectbox(key="exp_backbone").set_value("small_cnn").run()
    at.multiselect(key="exp_strategies").set_value(["scratch"]).run()
    at.number_input(key="exp_epochs").set_value(12).run()
    at.number_input(key="exp_batch").set_value(32).run()
    at.number_input(key="exp_lr").set_value(0.05).run()
    assert not at.exception
    again = app_at("pages/experiments.py", workspace="team-a")  # a new session: a reload
    assert not again.exception and not again.warning
    assert again.number_input(key="exp_epochs").value == 12
    assert again.number_input(key="exp_batch").value == 32
    assert again.number_input(key="exp_lr").value == 0.05
    assert again.selectbox(key="exp_backbone").value == "small_cnn"
    assert again.multiselect(key="exp_strategies").value == ["scratch"]
    other = app_at("pages/experiments.py", workspace="team-b")
    assert other.number_input(key="exp_epochs").value == 5  # its own settings: the defaults
    assert other.selectbox(key="exp_backbone").value == "efficientnet_lite0"


def test_a_saved_value_the_form_cannot_take_gives_the_default(two_workspaces) -> None:
    path = form_memory.form_path("team-a", "experiments")
    path.parent.mkdir(parents=True)
    saved = {"exp_epochs": 0, "exp_batch": "big", "exp_optimizer": "adam", "exp_blocks": 99}
    path.write_text(json.dumps(saved))
    at = app_at("pages/experiments.py", workspace="team-a")
    assert not at.exception
    assert at.number_input(key="exp_epochs").value == 5
    assert at.number_input(key="exp_batch").value == 16
    assert at.selectbox(key="exp_optimizer").value == "adam"  # a valid value is kept
    assert 1 <= at.slider(key="exp_blocks").value <= at.slider(key="exp_blocks").max


def test_an_unreadable_saved_form_is_no_form() -> None:
    path = form_memory.form_path("", "experiments")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert form_memory.load("", "experiments") == {}
    assert form_memory.save("", "experiments", {"exp_epochs": 7})
    assert form_memory.load("", "experiments") == {"exp_epochs": 7}
