"""Data page (issue 13, items 6 and 7): deleting asks first; a result has the colour it
deserves and the data set's short name; a built set can be rebuilt from the page."""

from __future__ import annotations

import pytest
from app_fixtures import app_at
from data_fixtures import (
    fake_commons,
    http_server_fixture,  # noqa: F401 (the http_server fixture)
)

from tl_core.data.store import list_datasets, load_manifest


@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")


def _shapes(workspace: str | None = None, per_class: int = 2):
    at = app_at("pages/data.py", workspace=workspace)
    at.selectbox(key="data_builtin").set_value("shapes")
    at.number_input(key="data_builtin_n").set_value(per_class)
    at.button(key="data_build").click().run()
    assert not at.exception
    return at


def _green(at) -> list[str]:
    """Green boxes about a change (the data set check's "No duplicates" may stay green)."""
    return [s.value for s in at.success if "added" in s.value or "deleted" in s.value]


def _texts(at) -> str:
    return " ".join(str(e.value) for e in [*at.success, *at.info, *at.warning, *at.error])


def test_delete_class_asks_first_and_says_what_it_did_in_blue() -> None:
    at = _shapes("zz")
    at.button(key="rm_class").click().run()
    assert "circle" in load_manifest("zz--shapes").classes  # not yet
    assert "Delete class circle and its 12 picture(s) from shapes?" in _texts(at)
    at.button(key="rm_class_ask_yes").click().run()
    assert not at.exception
    assert "circle" not in load_manifest("zz--shapes").classes
    assert not _green(at)
    assert any("shapes: class circle deleted with its 12 picture(s)" in i.value for i in at.info)


def test_keep_forgets_the_question_and_deletes_nothing() -> None:
    at = _shapes()
    at.button(key="rm_class").click().run()
    at.button(key="rm_class_ask_keep").click().run()
    assert "circle" in load_manifest("shapes").classes
    assert "Delete class" not in _texts(at)


def test_deleting_marked_pictures_asks_first() -> None:
    at = _shapes()
    at.checkbox(key=next(c.key for c in at.checkbox if c.key.startswith("rm_"))).check().run()
    at.button(key="gallery_delete").click().run()
    assert load_manifest("shapes").counts()["circle"] == 12
    assert "Delete 1 picture(s) from shapes?" in _texts(at)
    at.button(key="gallery_delete_ask_yes").click().run()
    assert not at.exception
    assert load_manifest("shapes").counts()["circle"] == 11
    assert not _green(at) and any("1 picture(s) deleted" in i.value for i in at.info)


def test_a_search_that_found_nothing_is_a_warning_with_the_short_name(
    http_server, monkeypatch
) -> None:
    monkeypatch.setenv("TL_LAB_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("TL_LAB_COMMONS_API", fake_commons(http_server))
    at = app_at("pages/data.py", workspace="zz")
    at.text_input(key="data_terms").input("nothing")
    at.run()
    at.button(key="data_search_go").click().run()
    assert not at.exception
    assert not _green(at)
    assert "my-images: nothing was added" in at.warning[0].value
    assert "zz--" not in _texts(at)


def test_a_built_set_is_rebuilt_from_the_page_at_another_size() -> None:
    at = _shapes(per_class=2)  # e.g. the classroom lessons' small set
    assert at.button(key="data_build").label == "Rebuild it"
    assert "up to 2 training pictures per class" in " ".join(c.value for c in at.caption)
    at.number_input(key="data_builtin_n").set_value(5)
    at.button(key="data_build").click().run()
    assert not at.exception
    assert load_manifest("shapes").counts()["circle"] == 15  # 5 training + 10 validation
    assert "--force" not in _texts(at)
    assert [d.name for d in list_datasets()] == ["shapes"]
