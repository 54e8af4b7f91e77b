"""Learn and Home (issue 13, item 10): the diagrams draw the network the lessons train, and
every one-click button says how long its runs should take (the schedule's estimate)."""

from __future__ import annotations

import re

import pytest
from app_fixtures import app_at

from tl_core.data.store import list_datasets
from tl_core.fmt import format_duration
from tl_core.models import get_backbone
from tl_core.recipes import CLASSROOM, plan
from tl_core.recipes.classroom import BACKBONE, lesson_seconds


@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")


def test_learn_diagrams_show_the_backbone_the_buttons_train() -> None:
    at = app_at("pages/learn.py")
    assert not at.exception
    assert {s.backbone for name in CLASSROOM for s in plan(name).specs} == {BACKBONE}
    groups = get_backbone(BACKBONE).group_names
    charts = at.get("plotly_chart")
    assert charts
    for chart in charts:
        spec = chart.proto.spec
        assert all(g in spec for g in groups[1:]), "a diagram lacks the lesson backbone's layers"
        assert "layer4" not in spec  # resnet18's last group


def test_every_lesson_button_says_how_long_it_takes() -> None:
    at = app_at("pages/learn.py")
    buttons = [b for b in at.button if b.key.startswith("learn_run_")]
    assert len(buttons) == 5
    for b in buttons:
        name = b.key.removeprefix("learn_run_")
        expected = format_duration(lesson_seconds(plan(name)))
        assert b.label.endswith(f"(about {expected} of training)"), b.label
    assert list_datasets() == []  # estimated without building the shapes set


def test_home_classroom_button_says_how_long_it_takes() -> None:
    at = app_at()
    label = at.button(key="classroom_quick").label
    assert re.fullmatch(r"Run the classroom quick comparison \(about .+ of training\)", label)
    assert format_duration(lesson_seconds(plan("classroom_quick"))) in label
