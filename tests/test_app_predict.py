"""Predict page: top-k with Grad-CAM for an upload and a webcam shot, runs side by side,
export; Grad-CAM leaves the shared model as it was."""

from __future__ import annotations

import pytest
import torch
from app_fixtures import app_at, image_bytes
from PIL import Image

from tl_core import gradcam
from tl_core.evaluate import load_trained
from tl_core.runs import RunStore


@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")


@pytest.fixture
def runs(home_with_runs):
    return home_with_runs


def test_without_runs_it_says_so():
    at = app_at("pages/predict.py")
    assert not at.exception
    assert "No finished run" in at.info[0].value
    links = [e for e in at.get("page_link")]
    assert [link.proto.page for link in links] == ["experiments"]


def test_upload_and_webcam_get_top_k_and_grad_cam(runs):
    at = app_at("pages/predict.py")
    assert not at.exception
    at.file_uploader(key="pred_files").set_value([("stripe.png", image_bytes(), "image/png")])
    at.camera_input(key="pred_camera").set_value(("shot.jpg", image_bytes("JPEG"), "image/jpeg"))
    at.run()
    assert not at.exception
    assert [m.value for m in at.markdown if m.value.startswith("####")] == [
        "#### stripe.png",
        "#### webcam shot",
    ]
    tables = [d.value for d in at.dataframe]
    assert len(tables) == 2
    assert set(tables[0]["class"]) == {"horizontal", "vertical"}
    assert abs(tables[0]["probability"].sum() - 1) < 1e-3
    assert len(at.image) == 2  # a Grad-CAM overlay per picture
    legends = [h.proto.body for h in at.get("html")]
    assert len(legends) == 2 and all(
        "low attention" in b and "high attention" in b for b in legends
    )


def test_same_picture_through_two_runs_side_by_side(runs):
    at = app_at("pages/predict.py")
    at.multiselect(key="pred_runs").set_value(runs).run()
    at.file_uploader(key="pred_files").set_value([("stripe.png", image_bytes(), "image/png")])
    at.run()
    assert not at.exception
    assert len(at.dataframe) == 2 and len(at.image) == 2
    assert at.get("download_button")[0].label == "Download as state_dict"


def test_grad_cam_leaves_the_model_unchanged(runs):
    trained = load_trained(RunStore(), runs[0])
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    image = Image.new("RGB", (40, 40), (10, 200, 10))
    heat, index = gradcam.gradcam(trained, image)
    assert heat.shape == (32, 32) and heat.min() >= 0 and heat.max() <= 1
    assert index in (0, 1)
    assert not trained.model.training
    for module in trained.model.modules():
        assert not module._forward_hooks
    after = trained.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in trained.model.parameters())
    assert gradcam.overlay(trained, image, heat).size == (32, 32)
