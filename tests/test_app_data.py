"""Data page: every tab of "Add pictures" (built-in set, zip, per class, webcam, URL list,
search, server folder), then the report, gallery and rename."""

from __future__ import annotations

import pytest
from app_fixtures import app_at, image_bytes, zip_of_folder
from conftest import make_stripes_dataset
from data_fixtures import (
    fake_commons,
    http_server_fixture,  # noqa: F401 (the http_server fixture)
    image_route,
    jpeg_bytes,
)

from tl_core.data.store import list_datasets, load_manifest


@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")


def test_build_shapes_shows_report_balance_and_gallery():
    at = app_at("pages/data.py")
    assert not at.exception
    at.selectbox(key="data_builtin").set_value("shapes")
    at.number_input(key="data_builtin_n").set_value(3)
    at.button(key="data_build").click().run()
    assert not at.exception
    assert "circle, square, star, triangle" in at.success[0].value
    assert at.selectbox(key="data_set").value == "shapes"
    assert at.get("plotly_chart")  # the class balance
    assert "shapes: 52 pictures, 4 classes" in at.subheader[-2].value
    assert len(at.image) == 13  # the gallery: 3 training and 10 validation circles
    assert len([c for c in at.checkbox if c.key.startswith("rm_train/circle/")]) == 3


def test_zip_upload_lists_its_classes(tmp_path):
    root = make_stripes_dataset(tmp_path / "zipped", per_class=4)
    at = app_at("pages/data.py")
    at.text_input(key="data_new_name").input("zipped")
    at.file_uploader(key="data_zip").set_value(
        ("zipped.zip", zip_of_folder(root), "application/zip")
    )
    at.run()
    at.button(key="data_zip_go").click().run()
    assert not at.exception
    assert "8 picture(s) added" in at.success[0].value
    assert "horizontal, vertical" in at.success[0].value
    assert [d.name for d in list_datasets()] == ["zipped"]


def test_per_class_upload_and_webcam_shot_add_pictures():
    at = app_at("pages/data.py")
    at.text_input(key="data_new_name").input("mine")
    at.text_input(key="data_class").input("red")
    at.file_uploader(key="data_class_files").set_value(
        [("a.png", image_bytes(), "image/png"), ("b.png", image_bytes(size=48), "image/png")]
    )
    at.run()
    at.button(key="data_class_go").click().run()
    assert not at.exception
    assert "2 picture(s) added" in at.success[0].value
    # The import let go of the uploads: the uploaders are new and empty (issue 12).
    assert not at.file_uploader(key="data_class_files_1").value
    assert [w.key for w in at.file_uploader if w.key.startswith("data_class")] == [
        "data_class_files_1"
    ]
    at.text_input(key="data_cam_class").input("blue")
    at.camera_input(key="data_camera_1").set_value(
        ("shot.jpg", image_bytes("JPEG", (20, 40, 220)), "image/jpeg")
    )
    at.run()
    at.button(key="data_cam_go").click().run()
    assert not at.exception
    manifest = load_manifest("mine")
    assert manifest.counts() == {"blue": 1, "red": 2}
    assert {r.origin["kind"] for r in manifest.images} == {"upload", "camera"}
    # A set with one class per kind of picture, and a warning-free balance.
    assert at.selectbox(key="data_set").value == "mine"


def test_rename_class_and_workspace_separation(tmp_path):
    at = app_at("pages/data.py", workspace="team-b")
    at.selectbox(key="data_builtin").set_value("shapes")
    at.number_input(key="data_builtin_n").set_value(2)
    at.button(key="data_build").click().run()
    assert [d.name for d in list_datasets()] == ["team-b--shapes"]
    at.selectbox(key="gallery_class").set_value("star")
    at.run()
    at.text_input(key="rename_to").input("asterisk")
    at.run()
    at.button(key="rename_go").click().run()
    assert not at.exception
    assert "asterisk" in load_manifest("team-b--shapes").classes
    other = app_at("pages/data.py")  # the default workspace sees none of it
    assert other.selectbox(key="data_set").options == ["(new data set)"]


def test_url_list_tab_downloads_each_url_and_explains_the_bad_ones(http_server, monkeypatch):
    monkeypatch.setenv("TL_LAB_ALLOW_PRIVATE_URLS", "1")
    http_server.routes["/1.jpg"] = image_route(jpeg_bytes(1))
    http_server.routes["/2.jpg"] = image_route(jpeg_bytes(2))
    lines = [http_server.url("/1.jpg"), "http://[::1", http_server.url("/2.jpg")]
    at = app_at("pages/data.py")
    at.text_input(key="data_new_name").input("fetched")
    at.file_uploader(key="data_urls").set_value(
        ("ants.txt", "\n".join(lines).encode(), "text/plain")
    )
    at.text_input(key="data_urls_label").input("ant")
    at.run()
    at.button(key="data_urls_go").click().run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert "2 picture(s) added, 1 skipped. Classes: ant" in at.success[0].value
    assert load_manifest("fetched").counts() == {"ant": 2}


def test_search_tab_makes_one_class_per_term(http_server, monkeypatch):
    monkeypatch.setenv("TL_LAB_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("TL_LAB_COMMONS_API", fake_commons(http_server))
    at = app_at("pages/data.py")
    at.text_input(key="data_new_name").input("insects")
    at.text_input(key="data_terms").input("ant, bee")
    at.number_input(key="data_terms_n").set_value(2)
    at.run()
    at.button(key="data_search_go").click().run()
    assert not at.exception
    assert "4 picture(s) added" in at.success[0].value
    assert load_manifest("insects").counts() == {"ant": 2, "bee": 2}


def test_server_folder_tab_imports_when_allowed_and_says_so_when_not(tmp_path, monkeypatch):
    root = make_stripes_dataset(tmp_path / "on-server", per_class=3)
    monkeypatch.setenv("TL_LAB_SERVER_FOLDERS", "1")
    monkeypatch.delenv("TL_LAB_IMPORT_ROOT", raising=False)
    at = app_at("pages/data.py")
    at.text_input(key="data_new_name").input("served")
    at.text_input(key="data_folder").input(str(root))
    at.run()
    at.button(key="data_folder_go").click().run()
    assert not at.exception
    assert "6 picture(s) added" in at.success[0].value
    monkeypatch.setenv("TL_LAB_SERVER_FOLDERS", "0")
    off = app_at("pages/data.py")
    assert any("turned off" in i.value for i in off.info)
    assert not [t for t in off.text_input if t.key == "data_folder"]


def test_an_import_error_is_one_message_not_an_exception():
    at = app_at("pages/data.py")
    at.text_input(key="data_new_name").input("bad")
    at.text_input(key="data_class").input("manifest.json")
    at.file_uploader(key="data_class_files").set_value([("a.png", image_bytes(), "image/png")])
    at.run()
    at.button(key="data_class_go").click().run()
    assert not at.exception
    assert at.error and "manifest.json" in at.error[0].value
