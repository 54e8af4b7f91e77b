"""Shared fixtures: a private lab home per test and small generated image data sets."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see tl_core/__init__.py

import random  # noqa: E402
from pathlib import Path

import pytest
from PIL import Image, ImageDraw


@pytest.fixture(autouse=True)
def lab_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own lab home and torch cache; nothing leaks between tests."""
    home = tmp_path / "lab-home"
    monkeypatch.setenv("TL_LAB_HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return home


def draw_stripes(path: Path, horizontal: bool, seed: int, size: int = 40) -> None:
    """A noisy image with horizontal or vertical stripes: easy to learn, not trivial."""
    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), tuple(rng.randrange(60, 200) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    colour = tuple(rng.randrange(0, 256) for _ in range(3))
    step = rng.choice((6, 8, 10))
    offset = rng.randrange(step)
    for k in range(offset, size, step):
        box = (0, k, size, k + step // 2) if horizontal else (k, 0, k + step // 2, size)
        draw.rectangle(box, fill=colour)
    img.save(path)


def make_stripes_dataset(
    root: Path,
    per_class: int = 16,
    classes: tuple[str, ...] = ("horizontal", "vertical"),
    seed: int = 0,
) -> Path:
    """A flat class-folder data set; a third class, if asked for, is diagonal-free noise."""
    for c_index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = folder / f"{name}_{i:03d}.png"
            s = seed * 10_000 + c_index * 1000 + i
            if name == "vertical":
                draw_stripes(path, horizontal=False, seed=s)
            elif name == "horizontal":
                draw_stripes(path, horizontal=True, seed=s)
            else:
                rng = random.Random(s)
                Image.effect_noise((40, 40), 60 + rng.random() * 40).convert("RGB").save(path)
    return root


@pytest.fixture
def stripes(tmp_path: Path) -> Path:
    return make_stripes_dataset(tmp_path / "stripes")


@pytest.fixture
def stripes3(tmp_path: Path) -> Path:
    return make_stripes_dataset(tmp_path / "stripes3", classes=("horizontal", "noise", "vertical"))


# ---------------------------------------------------------------- web app (tests/test_app_*.py)


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A lab home with two finished small_cnn runs (seeds 0 and 1), shared by the tests
    that only read it; use it through `home_with_runs`."""
    from app_fixtures import finished_runs

    root = tmp_path_factory.mktemp("trained")
    mp = pytest.MonkeyPatch()
    mp.setenv("TL_LAB_HOME", str(root / "home"))
    try:
        ids = finished_runs(make_stripes_dataset(root / "stripes"), seeds=2)
    finally:
        mp.undo()
    return root / "home", ids


@pytest.fixture
def home_with_runs(trained_home, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """This test's lab home is the shared one with two finished runs; returns their ids."""
    home, ids = trained_home
    monkeypatch.setenv("TL_LAB_HOME", str(home))
    return ids
