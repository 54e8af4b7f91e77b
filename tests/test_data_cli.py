"""`python -m tl_core data ...`: JSON reports, exit codes, one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from data_fixtures import (
    http_server_fixture,  # noqa: F401 (the http_server fixture)
    image_route,
    jpeg_bytes,
    placeholder_gif,
    png_bytes,
)

from tl_core.cli import data as data_cli
from tl_core.errors import LabError

REPORT_FIELDS = {"name", "classes", "added", "skipped", "counts"}


def run_cli(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tl_core", "data", *args],
        env={**os.environ, "TL_LAB_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def last_json(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tl")
    data_cli.add_parser(p.add_subparsers(dest="command", required=True))
    return p


def test_handlers_in_process(tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    for cls, seed in (("a", 1), ("b", 2)):
        (src / cls).mkdir(parents=True)
        (src / cls / "1.jpg").write_bytes(jpeg_bytes(seed))
    args = parser().parse_args(["data", "import", str(src), "--name", "ab", "--json"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert set(report) >= REPORT_FIELDS and report["counts"] == {"a": 1, "b": 1}

    args = parser().parse_args(["data", "show", "missing"])
    with pytest.raises(LabError, match="no data set 'missing'"):
        args.func(args)


def test_zip_import_then_show_list_rm(tmp_path: Path, lab_home: Path, capsys) -> None:
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for split in ("train", "val"):
            for cls, base in (("ants", 0), ("bees", 50)):
                for i in range(2):
                    zf.writestr(f"root/{split}/{cls}/{i}.jpg", jpeg_bytes(base + len(split) + i))
        zf.writestr("root/train/ants/imageNotFound.gif", placeholder_gif())
        zf.writestr("root/../evil.jpg", jpeg_bytes(9))

    proc = run_cli("import", str(archive), "--name", "hym", "--json", home=lab_home)
    assert proc.returncode == 0, proc.stderr
    report = last_json(proc)
    assert report["classes"] == ["ants", "bees"] and report["added"] == 8
    assert report["counts"] == {"ants": 4, "bees": 4}
    reasons = {s["item"]: s["reason"] for s in report["skipped"]}
    assert "placeholder" in reasons["root/train/ants/imageNotFound.gif"]
    assert "'..'" in reasons["root/../evil.jpg"]
    assert not (tmp_path / "evil.jpg").exists() and not (lab_home / "evil.jpg").exists()

    def in_process(*args: str) -> dict:
        from tl_core.cli import main

        assert main(["data", *args, "--json"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    show = in_process("show", "hym")
    assert show["split_counts"] == {"train": {"ants": 2, "bees": 2}, "val": {"ants": 2, "bees": 2}}
    assert set(show) >= REPORT_FIELDS
    assert [d["name"] for d in in_process("list")["datasets"]] == ["hym"]
    in_process("rm", "hym")
    assert not (lab_home / "datasets" / "hym").exists()


def test_builtin_shapes_via_the_cli(lab_home: Path) -> None:
    proc = run_cli("builtin", "shapes", "--per-class", "4", "--json", home=lab_home)
    assert proc.returncode == 0, proc.stderr
    report = last_json(proc)
    assert report["counts"] == {"circle": 14, "square": 14, "star": 14, "triangle": 14}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "nope"], "no data set 'nope'"),
        (["import", "/no/such/path", "--name", "x"], "no such file or folder"),
        (["import", ".", "--name", "../x"], "invalid data set name"),
        (["rm", "nope"], "no data set 'nope'"),
        (["urls", "/no/such.csv", "--name", "x"], "no such file or folder"),
        (["search", "--terms", " , ", "--name", "x"], "no search terms"),
        (["split-classes", "nope", "--keep", "a", "--name", "x"], "no data set 'nope'"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, args: list[str], message: str) -> None:
    from tl_core.cli import main

    assert main(["data", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_bad_input_in_a_real_process_has_no_traceback(lab_home: Path) -> None:
    proc = run_cli("show", "nope", home=lab_home)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: no data set 'nope'; `data list` shows the sets there are"
    ]


def test_url_list_via_the_cli(http_server, tmp_path: Path, lab_home: Path) -> None:
    http_server.routes["/a.jpg"] = image_route(jpeg_bytes(1))
    http_server.routes["/b.png"] = image_route(png_bytes(2), "image/png")
    listing = tmp_path / "urls.csv"
    listing.write_text(
        "url,label\n"
        f"{http_server.url('/a.jpg')},ant\n"
        f"{http_server.url('/b.png')},bee\n"
        f"{http_server.url('/gone.jpg')},bee\n"
    )
    refused = run_cli("urls", str(listing), "--name", "web", "--json", home=lab_home)
    assert refused.returncode == 1  # nothing added: loopback refused by default
    assert all("loopback" in s["reason"] for s in last_json(refused)["skipped"])

    proc = run_cli(
        "urls", str(listing), "--name", "web", "--json", home=lab_home,
        TL_LAB_ALLOW_PRIVATE_URLS="1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = last_json(proc)
    assert report["counts"] == {"ant": 1, "bee": 1}
    assert report["skipped"] == [
        {"item": http_server.url("/gone.jpg"), "reason": "HTTP 404 Not Found"}
    ]
