"""The project built as a wheel and installed into an empty folder, once per test session.

Used by test_package.py and test_container.py. The source is copied first, so the build
leaves nothing in the clone. `--no-build-isolation` builds with this environment's setuptools
(requirements-dev.txt), so no network is needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "app.py", "pages", ".streamlit", "tl_core")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    target: Path  # `pip install --target`: packages here, console scripts in bin/

    def env(self, **extra: str) -> dict[str, str]:
        """The installed copy first on the path, then this environment's packages (torch...)."""
        path = os.pathsep.join([str(self.target), sysconfig.get_paths()["purelib"]])
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return {**env, "PYTHONPATH": path, **extra}


def copy_sources(src: Path) -> Path:
    """What a build reads, copied to `src` (so building leaves nothing in the clone)."""
    src.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(item, src / name, ignore=ignore)
        else:
            shutil.copy2(item, src / name)
    return src


def build_and_install(workdir: Path) -> Installed:
    src = copy_sources(workdir / "src")
    dist = workdir / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("*.whl")
    target = workdir / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    return Installed(wheel=wheel, target=target)


@pytest.fixture(scope="session")
def installed() -> Iterator[Installed]:
    # Its own folder under the system temp, readable by other users: the container test
    # serves the installed copy as UID 1000, who cannot enter pytest's private base folder.
    workdir = Path(tempfile.mkdtemp(prefix="tl-lab-wheel-"))
    workdir.chmod(0o755)
    try:
        yield build_and_install(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
