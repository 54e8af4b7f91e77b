"""Load test: many simulated browser sessions on the app while a run trains.

    python scripts/loadtest.py                      # starts its own server, 10 sessions, 60 s
    python scripts/loadtest.py --sessions 10 --seconds 60 --train --json

Each simulated session speaks Streamlit's own protocol over the websocket a browser uses
(`/_stcore/stream`): it asks for a page, waits for the script run to finish, records the
latency, and asks again after a short think time. It reports latency percentiles per page,
script exceptions shown to users, and whether a training run made progress meanwhile.

Traffic goes to 127.0.0.1 only: a URL on any other address is refused. The test has a fixed
bound (sessions x seconds) and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: tl_core lives beside scripts/
PAGES = ["", "data", "experiments", "results", "predict", "learn"]  # st.navigation url paths


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    exceptions: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, page: str, seconds: float) -> None:
        self.latencies.setdefault(page or "Home", []).append(seconds)


def _loopback_only(url: str) -> None:
    host = urlparse(url).hostname or ""
    for info in socket.getaddrinfo(host, None):
        if not ipaddress.ip_address(info[4][0]).is_loopback:
            raise SystemExit(f"refused: {url} is not on this machine (loopback addresses only)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the app at {url} did not become healthy within {timeout:.0f} s")


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "TL_LAB_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
         "--server.headless", "true", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, 120)
    return proc, url


def queue_training_run(home: Path) -> str:
    """A generated data set and a scratch run long enough to train through the whole test."""
    env = {**os.environ, "TL_LAB_HOME": str(home)}
    code = (
        "from tl_core.data.builtin import build_builtin; build_builtin('shapes');"
        "from tl_core.jobs import RunSpec, queue_runs; from tl_core.runs import RunStore;"
        "from tl_core.train import TrainConfig;"
        "print(queue_runs(RunStore(), [RunSpec(data='shapes', backbone='efficientnet_lite0',"
        " strategy='full_finetune', train=TrainConfig(epochs=50))])[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"could not queue a training run: {out.stderr.strip().splitlines()[-1:]}")
    return out.stdout.strip().splitlines()[-1]


async def session(url: str, pages: list[str], deadline: float, stats: Stats, think: float) -> None:
    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    ws_url = url.replace("http://", "ws://") + "/_stcore/stream"
    try:
        async with websockets.connect(ws_url, subprotocols=["streamlit"], max_size=2**26) as ws:
            n = 0
            while time.monotonic() < deadline:
                page = pages[n % len(pages)]
                n += 1
                msg = BackMsg()
                msg.rerun_script.query_string = ""
                msg.rerun_script.page_name = page
                started = time.monotonic()
                await ws.send(msg.SerializeToString())
                while True:
                    raw = await asyncio.wait_for(ws.recv(), timeout=120)
                    fwd = ForwardMsg()
                    fwd.ParseFromString(raw)
                    kind = fwd.WhichOneof("type")
                    if kind == "delta" and fwd.delta.new_element.WhichOneof("type") == "exception":
                        key = page or "Home"
                        stats.exceptions[key] = stats.exceptions.get(key, 0) + 1
                    if kind == "script_finished":
                        break
                stats.add(page, time.monotonic() - started)
                await asyncio.sleep(think)
    except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
        stats.failures.append(f"{exc.__class__.__name__}: {exc}")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(stats: Stats, seconds: float, sessions: int, progress: dict | None) -> dict:
    pages = {}
    for page, values in sorted(stats.latencies.items()):
        pages[page] = {
            "requests": len(values),
            "p50_s": round(statistics.median(values), 3),
            "p95_s": round(_percentile(values, 0.95), 3),
            "max_s": round(max(values), 3),
        }
    everything = [v for values in stats.latencies.values() for v in values]
    return {
        "sessions": sessions,
        "seconds": seconds,
        "requests": len(everything),
        "p50_s": round(statistics.median(everything), 3) if everything else None,
        "p95_s": round(_percentile(everything, 0.95), 3) if everything else None,
        "pages": pages,
        "exceptions": stats.exceptions,
        "failures": stats.failures,
        "training": progress,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running app on 127.0.0.1 (default: start one)")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--think", type=float, default=0.5, help="pause between page loads (s)")
    parser.add_argument("--train", action="store_true", help="queue a training run first")
    parser.add_argument("--pages", default=",".join(PAGES), help="comma-separated page names")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.sessions <= 50 or not 1 <= args.seconds <= 600:
        parser.error("sessions must be 1-50 and seconds 1-600 (the test is bounded)")

    home = Path(os.environ.get("TL_LAB_HOME") or tempfile.mkdtemp(prefix="tl-loadtest-"))
    proc = None
    try:
        if args.url:
            url = args.url.rstrip("/")
            _loopback_only(url)
        else:
            proc, url = start_server(home)
        run_id = queue_training_run(home) if args.train else None
        if run_id:
            time.sleep(5)  # let the worker pick it up
        stats = Stats()
        deadline = time.monotonic() + args.seconds
        pages = [p.strip() for p in args.pages.split(",")]

        async def everyone() -> None:
            await asyncio.gather(
                *(
                    session(url, pages[i:] + pages[:i], deadline, stats, args.think)
                    for i in range(args.sessions)
                )
            )

        asyncio.run(everyone())
        progress = None
        if run_id:
            from tl_core.runs import RunStore

            record = RunStore(home).get(run_id)
            progress = {
                k: record[k] for k in ("id", "status", "epoch", "batch", "batches", "phase")
            }
        result = report(stats, args.seconds, args.sessions, progress)
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['requests']} page loads by {args.sessions} sessions in {args.seconds:.0f} s: "
              f"p50 {result['p50_s']} s, p95 {result['p95_s']} s")  # fmt: skip
        for page, row in result["pages"].items():
            print(
                f"  {page:12} n={row['requests']:4} p50={row['p50_s']:.3f}s p95={row['p95_s']:.3f}s max={row['max_s']:.3f}s"
            )
        print(
            f"exceptions shown to users: {result['exceptions'] or 'none'}; failed sessions: {len(result['failures'])}"
        )
        if progress:
            print(f"training run during the test: {progress}")
    return 0 if not result["failures"] and not result["exceptions"] else 1


if __name__ == "__main__":
    sys.exit(main())
