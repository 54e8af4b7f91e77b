"""`tl-lab app [streamlit options]`: start the web app, from a clone or an installed package.

In a clone the app is `app.py` and `pages/` at the repository root (`streamlit run app.py`
works as it always did). An installed wheel holds the same files as `tl_core/_app/` (see
setup.py), with `.streamlit/config.toml` beside `app.py`, where Streamlit reads a script's own
settings. Options after `app` go to `streamlit run` unchanged (`tl-lab app --help` lists them);
the command itself is in `tl_core.cli.app`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tl_core import paths
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


def streamlit_argv(streamlit_args: Sequence[str] = ()) -> list[str]:
    """The arguments of `streamlit` that serve the app: `run APP [options]`."""
    return ["run", str(app_script()), *streamlit_args]


def run_app(streamlit_args: Sequence[str] = ()) -> int:
    """Serve the app in this process, as `python -m streamlit run APP [options]` would.

    In-process rather than a second interpreter: the pid and signals are the server's. The lab
    home is made first: an unwritable one stops here with one line, and an empty one comes
    back from `TL_LAB_PERSIST` before the first page view rather than during it.
    """
    argv = streamlit_argv(streamlit_args)
    paths.lab_home()
    from streamlit.web import cli as streamlit_cli

    return streamlit_cli.main(argv, prog_name="streamlit")  # exits with Streamlit's status
