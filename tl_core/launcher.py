"""`tl-lab app [streamlit options]`: start the web app, from a clone or an installed package.

In a clone the app is `app.py` and `pages/` at the repository root (`streamlit run app.py`
works as it always did). An installed wheel holds the same files as `tl_core/_app/` (see
setup.py), with `.streamlit/config.toml` beside `app.py`, where Streamlit reads a script's own
settings. Options after `app` go to `streamlit run` unchanged (`tl-lab app --help` lists them).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tl_core.errors import LabError

PACKAGE_DIR = Path(__file__).resolve().parent


def app_script() -> Path:
    """The web app's main script: the installed copy, else the clone's `app.py`."""
    for candidate in (PACKAGE_DIR / "_app" / "app.py", PACKAGE_DIR.parent / "app.py"):
        if candidate.is_file() and (candidate.parent / "pages").is_dir():
            return candidate
    raise LabError(
        f"the web app is missing: neither {PACKAGE_DIR / '_app' / 'app.py'} nor "
        f"{PACKAGE_DIR.parent / 'app.py'} exists; reinstall the package (`pip install .` in a "
        "clone of the repository)"
    )


def streamlit_command(streamlit_args: Sequence[str] = ()) -> list[str]:
    """The command that serves the app: `python -m streamlit run APP [options]`."""
    return [sys.executable, "-m", "streamlit", "run", str(app_script()), *streamlit_args]


def run_app(streamlit_args: Sequence[str] = ()) -> int:
    """Serve the app in this process's place (POSIX), so signals and the pid are Streamlit's."""
    command = streamlit_command(streamlit_args)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(command[0], command)  # does not return
    return subprocess.call(command)


def cmd_app(args: argparse.Namespace) -> int:
    return run_app(args.streamlit_args)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    # '+' as the only option prefix: every `--server.*` option reaches streamlit untouched.
    p = subparsers.add_parser(
        "app",
        help="start the web app (options after `app` go to `streamlit run`)",
        prefix_chars="+",
        add_help=False,
    )
    p.add_argument("streamlit_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_app)
