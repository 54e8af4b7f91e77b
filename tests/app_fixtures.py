"""Helpers for the web app's tests: finished runs in the store, small images as bytes."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

from PIL import Image
from streamlit.testing.v1 import AppTest

from tl_core.jobs import RunSpec, execute_run, queue_runs
from tl_core.runs import RunStore
from tl_core.train import TrainConfig

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def app_at(page: str | None = None, workspace: str | None = None) -> AppTest:
    """The app, run once, then switched to `page` (e.g. "pages/data.py") and run again."""
    at = AppTest.from_file(APP, default_timeout=60)
    if workspace:
        at.query_params["ws"] = workspace
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def small_specs(data: str | Path, seeds: int = 2, epochs: int = 2) -> list[RunSpec]:
    return [
        RunSpec(
            data=str(data),
            backbone="small_cnn",
            strategy="scratch",
            train=TrainConfig(epochs=epochs, batch_size=8, seed=k),
            augment="none",
        )
        for k in range(seeds)
    ]


def finished_runs(data: str | Path, seeds: int = 2, workspace: str = "") -> list[str]:
    """Train small_cnn runs on `data` in this process (a few seconds); returns their ids."""
    store = RunStore()
    ids = queue_runs(store, small_specs(data, seeds), workspace=workspace)
    for run_id in ids:
        execute_run(store, run_id)
    return ids


def image_bytes(fmt: str = "PNG", colour=(200, 30, 30), size: int = 40) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", (size, size), colour)
    for x in range(0, size, 8):
        for y in range(size):
            img.putpixel((x, y), (255 - colour[0], 255 - colour[1], 255 - colour[2]))
    img.save(buf, format=fmt)
    return buf.getvalue()


def zip_of_folder(root: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(root.parent).as_posix())
    return buf.getvalue()


def wait_for(predicate, timeout: float = 60.0, what: str = "the condition", every: float = 0.2):
    """Poll `predicate` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
