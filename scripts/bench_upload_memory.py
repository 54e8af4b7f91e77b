"""Does the web server give memory back after large uploads? (issue 12: "the Streamlit
server's RSS returns within 200 MB of its baseline after uploads end")

    python scripts/bench_upload_memory.py [--uploads 3] [--mb 300] [--wait 150] [--no-import] [--json]

Starts the app on 127.0.0.1 with a fresh lab home (no worker), opens every page once in
Chromium, reads the server's RSS (baseline), uploads a large zip on the Data page's zip
tab and imports it, `--uploads` times, closes the browser, then samples the server's RSS
every 10 s for `--wait` seconds (a closed session is kept for reconnection for
`server.disconnectedSessionTTL`, 120 s by default). With `--no-import` the uploads are left
where they arrived, never imported: only the closing of their sessions can free them. Each
upload opens the Data page anew,
so each is a session of its own, as for users who come back later. The zip holds a few small pictures in class
folders plus incompressible junk that the import skips: the point is the upload's size.
Everything it starts is stopped by its process group; the whole run is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import signal
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from loadtest import PAGES, start_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 300_000  # one upload and its import; the whole run is bounded by these
JUNK_MB = 50


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """VmRSS (or VmHWM, its peak) of one process (the server alone, not its children), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise SystemExit(f"process {pid} has no {field}: did the server exit?")


def make_zip(path: Path, megabytes: int) -> Path:
    """Small valid PNGs in two class folders, then stored random junk up to `megabytes`."""
    from PIL import Image

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for cls, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            for i in range(4):
                buf = io.BytesIO()
                Image.new("RGB", (32, 32), colour).save(buf, "PNG")
                zf.writestr(f"{cls}/{i}.png", buf.getvalue())
        for i in range(max(1, megabytes // JUNK_MB)):
            zf.writestr(f"red/junk-{i}.bin", os.urandom(JUNK_MB * 1024**2))
    return path


def upload_once(page, url: str, archive: Path, do_import: bool = True) -> None:
    """The Data page's zip tab: choose the file, wait for the upload, import, wait for it."""
    from playwright.sync_api import expect

    page.goto(f"{url}/data")
    expect(page.get_by_text("Add pictures").first).to_be_visible(timeout=TIMEOUT_MS)
    page.get_by_role("tab", name="Zip file").click()
    page.locator(".st-key-data_zip input[type='file']").set_input_files(str(archive))
    go = page.locator(".st-key-data_zip_go button")
    expect(go).to_be_visible(timeout=TIMEOUT_MS)  # shown once the upload has arrived
    if not do_import:
        return
    go.click()
    done = page.get_by_text(re.compile(r"picture\(s\) added|nothing was added"))
    expect(done.first).to_be_visible(timeout=TIMEOUT_MS)


def browse_and_upload(url: str, pid: int, archive: Path, uploads: int, do_import: bool) -> dict:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            for name in PAGES:  # warm-up: every page's modules and caches loaded once
                page.goto(f"{url}/{name}")
                expect(page.locator("[data-testid='stApp']")).to_be_visible()
                page.wait_for_selector("[data-testid='stStatusWidget']", state="detached")
            time.sleep(10)  # the collection after the last view, and a settled heap
            baseline = rss_mb(pid)
            after = []
            for _ in range(uploads):
                upload_once(page, url, archive, do_import)
                after.append(rss_mb(pid))
        finally:
            browser.close()
    return {"baseline_mb": baseline, "after_each_upload_mb": after}


def measure(args: argparse.Namespace, tmp: Path) -> dict:
    archive = make_zip(tmp / "big.zip", args.mb)
    os.environ.update(TL_LAB_NO_WORKER="1")
    proc, url = start_server(tmp / "lab-home")
    try:
        result = browse_and_upload(url, proc.pid, archive, args.uploads, not args.no_import)
        samples = []
        for _ in range(max(1, int(args.wait // 10))):
            time.sleep(10)
            samples.append(rss_mb(proc.pid))
        peak = rss_mb(proc.pid, "VmHWM")
    finally:
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(Exception):
                proc.wait(timeout=grace)
                break
    final = samples[-1]
    base = result["baseline_mb"]
    return {
        "upload_mb": round(archive.stat().st_size / 1024**2),
        "imported": not args.no_import,
        **result,
        "peak_mb": peak,
        "after_close_mb": samples,
        "final_mb": final,
        "final_minus_baseline_mb": round(final - base, 1),
        "within_200mb": final - base <= 200,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=3)
    parser.add_argument("--mb", type=int, default=300, help="size of the uploaded zip")
    parser.add_argument("--wait", type=float, default=150, help="seconds sampled after close")
    parser.add_argument(
        "--no-import", action="store_true", help="upload only; the closed sessions hold them"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.uploads <= 10 or not 50 <= args.mb <= 1000 or not 10 <= args.wait <= 600:
        parser.error("uploads must be 1-10, mb 50-1000, wait 10-600 (the run is bounded)")
    with tempfile.TemporaryDirectory(prefix="tl-upload-mem-") as tmp:
        out = measure(args, Path(tmp))
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key}: {value}")
    return 0 if out["within_200mb"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
