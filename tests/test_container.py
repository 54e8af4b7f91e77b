"""The Docker image's start command, as the image runs it, without Docker.

There is no Docker daemon on the machines these tests run on, so the image is not built here.
This test reads the Dockerfile's `ENV` and `CMD`, installs the project from a wheel (as the
image's `pip install .` does), and runs the start command as a non-root user (UID 1000 when
the tests run as root, as on a Space; otherwise the current user) with the image's HOME, lab
home and environment under a temporary root. It checks the health endpoint, that the server
runs as that user, and that the lab home it made belongs to that user and is writable by it
alone. Only the bind address and port change: 127.0.0.1 and a free port instead of
0.0.0.0:8501.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from package_fixtures import ROOT, Installed, installed  # noqa: F401 - the fixture

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.name != "posix", reason="the image is Linux; needs POSIX users"),
]

UID = 1000


def dockerfile() -> tuple[dict[str, str], list[str]]:
    """The image's environment (ENV lines, `$VAR` expanded) and its start command (CMD)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    env: dict[str, str] = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    cmd: list[str] = []
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), value)
        elif word == "CMD":
            cmd = json.loads(rest)
    return env, cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
        return r.read().decode()


def test_dockerfile_declares_what_a_space_needs() -> None:
    env, cmd = dockerfile()
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", text, re.M)
    assert "useradd --create-home --uid 1000 user" in text and "\nUSER user\n" in text
    assert "--index-url https://download.pytorch.org/whl/cpu torch==" in text
    assert "EXPOSE 8501" in text and "/_stcore/health" in text
    assert cmd[:2] == ["tl-lab", "app"]
    assert cmd[cmd.index("--server.address") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--server.port") + 1] == "8501"
    assert env["HOME"] == "/home/user" and env["TL_LAB_HOME"].startswith("/home/user/")
    front = (ROOT / "README.md").read_text().split("---")[1]
    assert "sdk: docker" in front and "app_port: 8501" in front


def test_the_start_command_serves_as_a_non_root_user(installed: Installed) -> None:  # noqa: F811
    image_env, cmd = dockerfile()
    as_root = os.geteuid() == 0
    uid = UID if as_root else os.geteuid()
    root = Path(tempfile.mkdtemp(prefix="tl-lab-image-"))
    root.chmod(0o755)
    proc = None
    try:
        home = root / image_env["HOME"].lstrip("/")
        home.mkdir(parents=True)  # useradd --create-home: the user's own home
        if as_root:
            os.chown(home, UID, UID)
        env = {k: v.replace(image_env["HOME"], str(home)) for k, v in image_env.items()}
        env["PATH"] = f"{installed.target / 'bin'}{os.pathsep}{os.environ['PATH']}"
        env["TL_LAB_PERSIST"] = str(root / "data")  # no bucket mounted: warns, serves anyway
        port = _free_port()
        args = [shutil.which(cmd[0], path=env["PATH"]), *cmd[1:]]
        args[args.index("--server.address") + 1] = "127.0.0.1"
        args[args.index("--server.port") + 1] = str(port)
        if as_root:
            args = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", *args]
        proc = subprocess.Popen(
            args, cwd=home, env=installed.env(**env), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        answer = ""
        while time.monotonic() < deadline and proc.poll() is None and answer != "ok":
            try:
                answer = _health(port)
            except OSError:
                time.sleep(0.5)
        assert answer == "ok", proc.stdout.read() if proc.poll() is not None else "no answer"

        status = Path(f"/proc/{proc.pid}/status")
        if status.exists():  # the pid is Streamlit's own: tl-lab and setpriv exec it
            uids = next(x for x in status.read_text().splitlines() if x.startswith("Uid:"))
            assert uids.split()[1:] == [str(uid)] * 4
        lab_home = Path(env["TL_LAB_HOME"])
        info = lab_home.stat()
        assert lab_home.is_dir() and info.st_uid == uid
        assert info.st_mode & 0o700 == 0o700 and not info.st_mode & 0o002
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)
            proc.stdout.close()
        shutil.rmtree(root, ignore_errors=True)
