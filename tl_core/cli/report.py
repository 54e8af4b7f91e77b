"""`python -m tl_core report RUN_ID [RUN_ID ...] --out FILE.html`: the Results page's run
report (`tl_core.report.html_report`), written to a file."""

from __future__ import annotations

import argparse
from pathlib import Path

from tl_core.cli.common import add_json_flag, emit, open_store
from tl_core.errors import LabError


def cmd_report(args: argparse.Namespace) -> int:
    from tl_core.report import html_report

    out = Path(args.out)
    if out.is_dir():
        raise LabError(f"--out {out} is a folder; give a file name such as {out / 'report.html'}")
    if not out.parent.is_dir():
        raise LabError(f"--out: the folder {out.parent} does not exist; create it first")
    store = open_store()
    run_ids = list(dict.fromkeys(args.run_ids))
    for run_id in run_ids:
        store.get(run_id)  # an unknown id fails here, before anything is written
    page = html_report(store, run_ids)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(out)  # a reader never sees half a report; an old one stays until then
    result = {"out": str(out), "run_ids": run_ids, "bytes": len(page.encode("utf-8"))}
    emit(result, args.json, f"report on {len(run_ids)} run(s) written to {out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write the HTML run report (as the Results page's download) to a file"
    )
    p.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="runs to report on")
    p.add_argument("--out", required=True, metavar="FILE.html", help="the HTML file to write")
    add_json_flag(p)
    p.set_defaults(func=cmd_report)
