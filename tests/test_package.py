"""The project as a package: the wheel's contents, and the CLI and `tl-lab` outside the clone."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from package_fixtures import ROOT, Installed, copy_sources, installed  # noqa: F401 - the fixture

from tl_core import launcher

pytestmark = pytest.mark.slow  # builds a wheel: about 10 s here


def _run(args: list[str], inst: Installed, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=inst.env(), capture_output=True, text=True, timeout=120
    )


def test_the_wheel_holds_every_module_of_tl_core_and_the_web_app(installed: Installed) -> None:  # noqa: F811
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tl_core").rglob("*.py")}
    assert modules and modules <= names, sorted(modules - names)
    app = {"tl_core/_app/app.py", "tl_core/_app/.streamlit/config.toml"}
    app |= {f"tl_core/_app/pages/{p.name}" for p in (ROOT / "pages").glob("*.py")}
    assert app <= names, sorted(app - names)
    assert not any(n.startswith(("tests/", "pages/", "tl_core/_app/setup")) for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(installed.wheel).read(entry_points).decode()
    assert "tl-lab = tl_core.cli:main" in text


def test_the_cli_and_tl_lab_run_from_outside_the_clone(installed: Installed, tmp_path) -> None:  # noqa: F811
    where = _run(
        [sys.executable, "-c", "import tl_core; print(tl_core.__file__)"], installed, tmp_path
    )
    assert where.stdout.strip().startswith(str(installed.target)), where

    module = _run([sys.executable, "-m", "tl_core", "--help"], installed, tmp_path)
    assert module.returncode == 0, module.stderr
    for command in ("train", "compare", "data", "worker", "app"):
        assert command in module.stdout

    script = installed.target / "bin" / "tl-lab"
    console = _run([str(script), "--help"], installed, tmp_path)
    assert console.returncode == 0, console.stderr
    assert console.stdout == module.stdout

    # The entry point as the metadata declares it, loaded from the installed copy.
    check = (
        "from importlib.metadata import entry_points; "
        "(ep,) = [e for e in entry_points(group='console_scripts') if e.name == 'tl-lab']; "
        "main = ep.load(); import tl_core.launcher as l; "
        "print(ep.value, main.__module__, l.app_script())"
    )
    loaded = _run([sys.executable, "-c", check], installed, tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    value, module_name, app = loaded.stdout.split()
    assert value == "tl_core.cli:main" and module_name.startswith("tl_core.cli")
    assert Path(app) == installed.target / "tl_core" / "_app" / "app.py"


def test_tl_lab_app_passes_streamlit_options_through(monkeypatch) -> None:
    assert launcher.app_script() == ROOT / "app.py"  # a clone serves its own app.py
    seen = []
    monkeypatch.setattr(launcher, "run_app", lambda args: seen.append(list(args)) or 0)
    from tl_core.cli import main

    assert main(["app", "--server.port", "8502", "--server.headless", "true"]) == 0
    assert seen == [["--server.port", "8502", "--server.headless", "true"]]
    argv = launcher.streamlit_argv(["--server.port", "8502"])
    assert argv == ["run", str(ROOT / "app.py"), "--server.port", "8502"]


def test_an_editable_install_runs_the_source_folder(tmp_path) -> None:
    """`pip install -e .` (README, Set up): the library and the app are the folder's own
    files, and an edit there is seen without reinstalling."""
    src = copy_sources(tmp_path / "src")
    prefix = tmp_path / "prefix"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install"]
    flags = ["--no-deps", "--no-build-isolation", "--no-index", "--prefix", str(prefix)]
    subprocess.run([*pip, *flags, "-e", str(src)], check=True, timeout=300)
    (site_dir,) = prefix.glob("lib/python*/site-packages")
    assert (prefix / "bin" / "tl-lab").is_file()
    (src / "tl_core" / "edited.py").write_text("WHERE = __file__\n")
    check = (
        f"import site; site.addsitedir({str(site_dir)!r}); "
        "import tl_core.edited as e, tl_core.launcher as l; print(e.WHERE, l.app_script())"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    edited, app = out.stdout.split()
    assert Path(edited) == src / "tl_core" / "edited.py" and Path(app) == src / "app.py"
