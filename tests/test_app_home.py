"""Home page (app.py): quick start, machine, offline banner, workspaces in the URL, the
classroom quick preset."""

from __future__ import annotations

import pytest
import streamlit as st
from app_fixtures import app_at

from tl_core import machine
from tl_core.runs import RunStore


@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")
    st.cache_data.clear()


def test_home_shows_quick_start_device_and_storage(lab_home, monkeypatch):
    monkeypatch.setattr(machine, "downloads_reachable", lambda timeout=2.0: True)
    at = app_at()
    assert not at.exception
    assert "Transfer Learning Lab" in at.title[0].value
    assert [s.value for s in at.subheader][:3] == [
        "1. Pick data",
        "2. Run a comparison",
        "3. Read the results",
    ]
    assert any("Device:" in m.value and "CPU" in m.value for m in at.markdown)
    assert str(lab_home) in at.dataframe[0].value.to_string()
    assert not at.warning  # downloads reachable: no banner


def test_offline_banner_points_to_efficientnet_lite0(monkeypatch):
    monkeypatch.setattr(machine, "downloads_reachable", lambda timeout=2.0: False)
    at = app_at()
    assert not at.exception
    assert "efficientnet_lite0" in at.warning[0].value
    # Read from the backbone registry: every backbone with a download is named.
    assert "`resnet18` and `vgg16` work only if" in at.warning[0].value


def test_classroom_quick_queues_runs_in_the_url_workspace(monkeypatch):
    monkeypatch.setattr(machine, "downloads_reachable", lambda timeout=2.0: True)
    at = app_at(workspace="team-a")
    assert at.session_state["workspace"] == "team-a"
    assert at.query_params["ws"] == "team-a"
    at.button(key="classroom_quick").click().run()
    assert not at.exception
    queued = RunStore().queue(workspace="team-a")
    assert [r["strategy"] for r in queued] == ["feature_extractor", "full_finetune"]
    assert all(r["data_path"] == "team-a--shapes" for r in queued)
    assert RunStore().queue(workspace="") == []


def test_bad_workspace_name_is_refused(monkeypatch):
    monkeypatch.setattr(machine, "downloads_reachable", lambda timeout=2.0: True)
    at = app_at(workspace="../etc")
    assert not at.exception
    assert "invalid workspace name" in at.sidebar.error[0].value
    assert at.session_state["workspace"] == ""
