"""Hostile input through the pages: refused with reasons on screen, no exception, nothing lost."""

from __future__ import annotations

import io
import zipfile

import pytest
from app_fixtures import app_at, image_bytes

from tl_core.data.store import list_datasets
from tl_core.paths import datasets_dir


@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")


def _hostile_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("cats/good.png", image_bytes())
        zf.writestr("dogs/good.png", image_bytes("JPEG"))
        zf.writestr("../../escaped.png", image_bytes())
        zf.writestr("/tmp/absolute.png", image_bytes())
        zf.writestr("dogs/fake.jpg", b"<html>404 not found</html>")
        zf.writestr("cats/empty.png", b"")
        zf.writestr("__MACOSX/cats/._good.png", b"resource fork")
    return buffer.getvalue()


def test_hostile_zip_upload_reports_each_refusal_and_writes_nothing_outside(tmp_path):
    before = {p.name for p in tmp_path.parent.iterdir()}
    at = app_at("pages/data.py")
    at.text_input(key="data_new_name").input("pets")
    at.file_uploader(key="data_zip").set_value(("pets.zip", _hostile_zip(), "application/zip"))
    at.run()
    at.button(key="data_zip_go").click().run()
    assert not at.exception
    shown = " ".join(str(e.value) for e in [*at.success, *at.warning, *at.error, *at.markdown])
    shown += " ".join(str(d.value) for d in at.dataframe)
    assert "2 picture(s) added" in shown
    for reason in ("escaped.png", "absolute.png", "fake.jpg", "empty.png"):
        assert reason in shown, reason
    assert [d.name for d in list_datasets()] == ["pets"]
    assert not list(datasets_dir().parent.rglob("escaped.png"))
    assert {p.name for p in tmp_path.parent.iterdir()} == before


def test_a_corrupt_zip_is_refused_and_an_existing_set_is_kept(tmp_path):
    at = app_at("pages/data.py")
    at.text_input(key="data_new_name").input("pets")
    at.file_uploader(key="data_zip").set_value(("pets.zip", _hostile_zip(), "application/zip"))
    at.run()
    at.button(key="data_zip_go").click().run()
    assert [d.name for d in list_datasets()] == ["pets"]
    kept = sorted(p.name for p in (datasets_dir() / "pets").rglob("*") if p.is_file())

    at.file_uploader(key="data_zip_1").set_value(  # a new uploader after the import
        ("pets.zip", b"PK\x03\x04 truncated", "application/zip")
    )
    at.run()
    at.button(key="data_zip_go").click().run()
    assert not at.exception
    assert at.error, "a corrupt zip must be refused with a message"
    assert sorted(p.name for p in (datasets_dir() / "pets").rglob("*") if p.is_file()) == kept


def test_predict_with_a_broken_picture_says_so(home_with_runs):
    at = app_at("pages/predict.py")
    at.file_uploader(key="pred_files").set_value(
        [
            ("broken.jpg", b"\xff\xd8\xff\xe0 this is not a jpeg", "image/jpeg"),
            ("ok.png", image_bytes(), "image/png"),
        ]
    )
    at.run()
    assert not at.exception
    messages = " ".join(str(e.value) for e in [*at.error, *at.warning])
    assert "broken.jpg" in messages
    assert len([d for d in at.dataframe]) >= 1  # the good picture still gets its prediction


PAGES = [None, "pages/data.py", "pages/experiments.py", "pages/results.py",
         "pages/predict.py", "pages/learn.py"]  # fmt: skip


def _one_clear_message(page, expected: str) -> None:
    at = app_at(page)
    assert not at.exception, at.exception
    assert [e.value for e in at.error if expected in e.value], [e.value for e in at.error]
    assert len(at.error) == 1


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p or "home")
def test_a_lab_home_that_cannot_be_created_is_one_clear_message_on_every_page(
    page, tmp_path, monkeypatch
) -> None:
    # Tests run as root, which writes through chmod 0555: a home whose parent is a file
    # cannot be created by anyone, root included.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TL_LAB_HOME", str(blocker / "home"))
    _one_clear_message(page, "TL\\_LAB\\_HOME")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p or "home")
def test_a_read_only_run_store_is_one_clear_message_on_every_page(page, monkeypatch) -> None:
    # A read-only mount, as SQLite reports it (root ignores file modes, so it is injected).
    import sqlite3

    def read_only(*args, **kwargs):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(sqlite3, "connect", read_only)
    _one_clear_message(page, "cannot write the run store")
