"""The recipe panel (issue 13, item 2): a recipe that needs data runs on a data set of the
workspace, chosen on the page (or the example photos, built on the click when online); one
that cannot run here says why before the click, and never falls back to another workspace's set."""

from __future__ import annotations

import pytest
import streamlit as st
from app_fixtures import app_at

from tl_core import machine
from tl_core.data import builtin
from tl_core.data.sources import import_folder
from tl_core.runs import RunStore
from tl_core.workspaces import dataset_name


@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")


def _online(monkeypatch: pytest.MonkeyPatch, reachable: bool) -> None:
    monkeypatch.setattr(machine, "downloads_reachable", lambda timeout=2.0: reachable)
    st.cache_data.clear()


def _why(at, name: str) -> str:
    button = at.button(key=f"recipe_{name}")
    assert button.disabled
    return " ".join(c.value for c in at.caption if "Cannot run here" in c.value)


def test_offline_without_a_data_set_the_data_recipes_say_so(monkeypatch) -> None:
    _online(monkeypatch, False)
    builtin.build_builtin("shapes", per_class=2)  # the default workspace's set: not team-a's
    at = app_at("pages/experiments.py", workspace="team-a")
    assert not at.exception
    for name in ("ants-bees", "data-efficiency"):
        assert "needs a data set of this workspace" in _why(at, name)
    offline = " ".join(c.value for c in at.caption if c.value.startswith("Offline"))
    assert "Data sets are not downloaded" in offline
    assert RunStore().queue() == []


def test_fashion_ab_offline_names_the_debian_package_when_absent(monkeypatch, tmp_path) -> None:
    _online(monkeypatch, False)
    monkeypatch.setattr(builtin, "fashion_mnist_dirs", lambda: [tmp_path])
    at = app_at("pages/experiments.py")
    assert "apt-get install dataset-fashion-mnist" in _why(at, "fashion-ab")
    for pair in builtin.FASHION_MNIST_FILES.values():  # the package's four files, present
        for file in pair:
            (tmp_path / file).write_bytes(b"")
    again = app_at("pages/experiments.py")
    assert not again.button(key="recipe_fashion-ab").disabled


def test_a_data_recipe_runs_on_the_chosen_set_of_the_workspace(monkeypatch, stripes) -> None:
    _online(monkeypatch, False)
    import_folder(stripes, dataset_name("team-a", "stripes"))
    builtin.build_builtin("shapes", per_class=2)  # another workspace's set, never used
    at = app_at("pages/experiments.py", workspace="team-a")
    assert at.selectbox(key="recipe_data_ants-bees").options == ["stripes"]
    at.button(key="recipe_ants-bees").click().run()
    assert not at.exception, at.exception
    assert "Recipe ants-bees queued on stripes" in at.success[0].value
    assert {r["data_path"] for r in RunStore().queue()} == {"team-a--stripes"}


def test_online_the_example_photos_are_built_in_the_workspace_on_the_click(
    monkeypatch, stripes
) -> None:
    _online(monkeypatch, True)
    built = []

    def fake_download(which: str, *, name: str, **_) -> None:  # the network stays out
        built.append((which, name))
        import_folder(stripes, name)

    monkeypatch.setattr(builtin, "build_builtin", fake_download)
    at = app_at("pages/experiments.py", workspace="team-a")
    box = at.selectbox(key="recipe_data_ants-bees")
    assert box.options == ["hymenoptera (the example photos: downloaded first)"]
    at.button(key="recipe_ants-bees").click().run()
    assert not at.exception
    assert built == [("hymenoptera", "team-a--hymenoptera")]
    assert {r["data_path"] for r in RunStore().queue()} == {"team-a--hymenoptera"}
