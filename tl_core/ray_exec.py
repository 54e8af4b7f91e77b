"""Queued runs on a Ray cluster: the worker's `ray` executor (`TL_LAB_EXECUTOR=ray`).

The worker stays the only writer of the run store. It claims runs in the scheduler's order
and submits each one as a Ray task (`_train_remote`) that asks for its CPUs, and one GPU when
the run asks for `--device cuda`; it keeps up to `TL_LAB_MAX_WORKERS` runs in flight, and no
more than the cluster's free CPUs allow. `TL_LAB_RAY_ADDRESS` names the cluster (e.g.
`ray://head:10001` or `head:6379`); without it, `ray.init()` starts a local cluster for the
worker's lifetime.

No shared file system is assumed. The data set's files travel through Ray's object store,
once per data set (the worker keeps the reference while it runs). The task unpacks them on
its node into a temporary lab home and runs the run there with `tl_core.run.execute_run`,
unchanged; a relay thread sends the run's progress, finished epochs and each epoch's
checkpoint to a small actor (`Channel`) on the worker's node, and brings back cancel requests.
The worker polls the channels, writes what arrives into the lab home as a local run would,
and, when a task returns, writes its weights, predictions, timings and final record. A task
that dies with its node marks the run failed with the reason; the last checkpoint is already
in the lab home, so `resume` (or Resume on the Experiments page) continues it, on any node.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from tl_core.errors import LabError

EXECUTORS = ("local", "ray")
RESULT_FILES = ("weights.pt", "meta.json", "predictions.json", "timings.json")
CHECKPOINT = "checkpoint.pt"
PROGRESS_FIELDS = (
    "epoch", "batch", "batches", "running_loss", "running_acc", "phase", "data_hash",
    "classes", "num_classes", "num_train", "num_val", "trainable_params", "total_params",
    "device", "world_size",
)  # fmt: skip
FINAL_FIELDS = ("best_val_acc", "final_val_acc", "train_seconds", "error")
RELAY_EVERY = 0.3  # seconds between the task's progress messages (and cancel checks)


def executor() -> str:
    """The worker's executor, from `TL_LAB_EXECUTOR` ("local" by default)."""
    name = os.environ.get("TL_LAB_EXECUTOR", "local").strip().lower() or "local"
    if name not in EXECUTORS:
        raise LabError(f"TL_LAB_EXECUTOR must be one of: {', '.join(EXECUTORS)}; got {name!r}")
    return name


def _ray():
    try:
        import ray
    except ImportError:
        raise LabError(
            "TL_LAB_EXECUTOR=ray needs Ray: pip install 'transfer-learning-lab[cluster]' "
            "(or pip install ray), or unset TL_LAB_EXECUTOR to train here"
        ) from None
    return ray


def connect() -> None:
    """Join the cluster `TL_LAB_RAY_ADDRESS` names, or start a local one for this process."""
    address = os.environ.get("TL_LAB_RAY_ADDRESS") or None
    if address is None:
        # A cluster of this machine alone listens on the loopback interface only (read when
        # Ray is imported; Ray's name for "no multi-machine cluster").
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # The local cluster's worker processes import tl_core from this checkout.
        root = str(Path(__file__).resolve().parent.parent)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p
        )
    ray = _ray()
    if ray.is_initialized():
        return
    try:
        # "local": a new cluster, never one a stale /tmp/ray/ray_current_cluster points at.
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise LabError(
            f"cannot reach the Ray cluster at {address}: {exc}; check TL_LAB_RAY_ADDRESS "
            "(`ray status` on the head shows it)"
        ) from exc


# ---------------------------------------------------------------------------- the data set


def pack_dataset(root: Path) -> dict[str, bytes]:
    """Every file of the data set folder, by its path under `root`."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _signature(root: Path) -> tuple:
    files = [p for p in root.rglob("*") if p.is_file()]
    return (str(root), len(files), max((p.stat().st_mtime_ns for p in files), default=0))


class DataSets:
    """Object-store references of the data sets sent so far: each one travels once."""

    def __init__(self) -> None:
        self.refs: dict[tuple, object] = {}

    def ref(self, root: Path):
        key = _signature(root)
        if key not in self.refs:
            self.refs[key] = _ray().put(pack_dataset(root))
        return self.refs[key]


# ---------------------------------------------------------------------------- the channel


class Channel:
    """One Ray actor per worker between its tasks and it: progress one way, cancels the
    other, by the worker's run id. One actor (one process) for all runs: an actor per run
    would start a Python process per run on the worker's node."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[dict, list[dict], bytes | None]] = {}
        self.cancelled: set[str] = set()

    def push(self, run_id: str, fields: dict, epochs: list[dict], checkpoint: bytes | None) -> bool:
        old_fields, old_epochs, old_checkpoint = self.pending.get(run_id, ({}, [], None))
        self.pending[run_id] = (
            {**old_fields, **fields},
            old_epochs + epochs,
            checkpoint if checkpoint is not None else old_checkpoint,
        )
        return run_id in self.cancelled

    def take(self, run_ids: list[str]) -> dict[str, tuple[dict, list[dict], bytes | None]]:
        """What the tasks of `run_ids` sent since the last take, in one call for all of them."""
        return {r: self.pending.pop(r) for r in run_ids if r in self.pending}

    def request_cancel(self, run_id: str) -> None:
        self.cancelled.add(run_id)


def node_label() -> str:
    """This node, as the run rows show it: host name and the start of Ray's node id."""
    ray = _ray()
    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


# ---------------------------------------------------------------------------- the task


class _Relay:
    """In the task: sends the temporary store's progress to the channel, brings cancels back."""

    def __init__(self, store, run_id: str, channel, key: str, node: str) -> None:
        self.store, self.run_id, self.channel, self.node = store, run_id, channel, node
        self.key = key  # the run's id in the worker's store
        self.sent_epochs = 0
        self.checkpoint_mtime = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="tl-ray-relay")

    def _loop(self) -> None:
        while not self.stop.wait(RELAY_EVERY):
            self.send()

    def send(self) -> None:
        record = self.store.get(self.run_id)
        fields = {k: record.get(k) for k in PROGRESS_FIELDS if record.get(k) is not None}
        fields.update(executor="ray", node=self.node)
        epochs = self.store.epochs(self.run_id)[self.sent_epochs :]
        self.sent_epochs += len(epochs)
        path = self.store.run_dir(self.run_id) / CHECKPOINT
        checkpoint = None
        if path.is_file() and path.stat().st_mtime_ns != self.checkpoint_mtime:
            self.checkpoint_mtime = path.stat().st_mtime_ns
            checkpoint = path.read_bytes()
        cancel = _ray().get(self.channel.push.remote(self.key, fields, epochs, checkpoint))
        if cancel and record["status"] == "running":
            self.store.request_cancel(self.run_id)


def _start_from(store, config: dict, weights: bytes) -> dict:
    """A finished run in the temporary store holding the weights the run starts from."""
    from tl_core.runs import NewRun

    (source,) = store.create_group([NewRun("-", config["backbone"], "scratch", {})])
    (store.run_dir(source) / "weights.pt").write_bytes(weights)
    store.finish(source, "done")
    return {**config, "init_from": source}


def use_assigned_cpus() -> int:
    """In a Ray task: train on the CPUs Ray gave it, not every core of the node (two one-CPU
    tasks on a two-core node would otherwise each run two threads)."""
    cpus = max(1, int(_ray().get_runtime_context().get_assigned_resources().get("CPU", 1)))
    os.environ["OMP_NUM_THREADS"] = str(cpus)  # read by machine.usable_cpus
    return cpus


def _train_remote(config: dict, data: dict[str, bytes], files: dict, channel, key: str) -> dict:
    """A Ray task: train one run in a temporary lab home on this node; returns its results.
    `files` holds the run's last checkpoint and the weights it starts from, when it has them;
    `key` is the run's id in the worker's store (its name on the channel)."""
    from tl_core.run import execute_run
    from tl_core.runs import NewRun, RunStore

    node = node_label()
    use_assigned_cpus()
    tmp = Path(tempfile.mkdtemp(prefix="tl-ray-"))
    try:
        for rel, blob in data.items():
            path = tmp / "data" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
        config = {**config, "data": str(tmp / "data")}
        store = RunStore(tmp / "home")
        if files.get("init"):
            config = _start_from(store, config, files["init"])
        new = NewRun(str(tmp / "data"), config["backbone"], config["strategy"], config)
        (run_id,) = store.create_group([new])
        if files.get("checkpoint"):
            (store.run_dir(run_id) / CHECKPOINT).write_bytes(files["checkpoint"])
        relay = _Relay(store, run_id, channel, key, node)
        relay.thread.start()
        try:
            execute_run(store, run_id)
        except Exception:  # noqa: BLE001, S110 - execute_run recorded the failure on the run
            pass
        finally:
            relay.stop.set()
            relay.thread.join()
        relay.send()  # the last epochs and checkpoint
        folder = store.run_dir(run_id)
        files = {n: (folder / n).read_bytes() for n in RESULT_FILES if (folder / n).is_file()}
        return {"record": store.get(run_id), "files": files, "node": node, "root": str(tmp)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- the worker side


class _InFlight:
    """A run the worker handed to Ray: its task and its data set's folder."""

    def __init__(self, run: dict, ref, root: str) -> None:
        self.run_id, self.ref, self.root = run["id"], ref, root
        self.cancel_sent = False
        self.started = False  # the task has sent progress: it runs on a node
        self.beat = 0.0  # when the worker last kept the run's heartbeat alive


def _resources(config: dict) -> dict:
    """What a run asks of the cluster: CPUs (`TL_LAB_RAY_CPUS`, default 1), a GPU for cuda."""
    cpus = float(os.environ.get("TL_LAB_RAY_CPUS", "1"))
    return {"num_cpus": cpus, "num_gpus": 1 if config["train"]["device"] == "cuda" else 0}


def _room(config_cpus: float) -> bool:
    free = _ray().available_resources().get("CPU", 0.0)
    return free >= config_cpus


def open_channel():
    """The worker's channel actor, on the worker's own node (progress stays local)."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(num_cpus=0)(Channel).options(scheduling_strategy=here).remote()


def submit(store, run: dict, datasets: DataSets, channel) -> _InFlight:
    """Start a claimed run as a Ray task, with its data set and last checkpoint."""
    from tl_core.data.folder import resolve_dataset

    ray = _ray()
    config = run["config"]
    root = resolve_dataset(config["data"])
    files = {"checkpoint": store.run_dir(run["id"]) / CHECKPOINT}
    if config.get("init_from"):
        files["init"] = store.run_dir(config["init_from"], create=False) / "weights.pt"
    files = {k: p.read_bytes() for k, p in files.items() if p.is_file()}
    task = ray.remote(_train_remote).options(max_retries=0, **_resources(config))
    ref = task.remote(config, datasets.ref(root), files, channel, run["id"])
    store.update(run["id"], executor="ray", node=None, phase="waiting for a Ray node")
    return _InFlight(run, ref, str(root))


def relay_progress(store, jobs: list[_InFlight], channel) -> None:
    """Write what the channel holds for these runs into the store (one call to the channel
    for all of them); pass cancel requests on."""
    if not jobs:
        return
    ray = _ray()
    for job in jobs:
        if not job.cancel_sent and store.cancel_requested(job.run_id):
            channel.request_cancel.remote(job.run_id)
            job.cancel_sent = True
            if not job.started:  # still waiting for a node: nothing to keep
                ray.cancel(job.ref)
    try:
        sent = ray.get(channel.take.remote([j.run_id for j in jobs]), timeout=10)
    except Exception:  # noqa: BLE001 - a lost channel: the tasks' own results say why
        return
    for job in jobs:
        _write_progress(store, job, *sent.get(job.run_id, ({}, [], None)))


def _write_progress(store, job: _InFlight, fields: dict, epochs: list, checkpoint) -> None:
    from tl_core.atomic import atomic_write_bytes

    job.started = job.started or bool(fields)
    if fields or time.monotonic() - job.beat > 10:
        # A run waiting in Ray's queue is alive too: its heartbeat must not go stale.
        # Where it runs is written before its epochs: a reader never sees an epoch without
        # its node. The epoch count comes with the epochs' rows (add_epoch).
        job.beat = time.monotonic()
        store.heartbeat(job.run_id, **{k: v for k, v in fields.items() if k != "epoch"})
    for e in epochs:
        store.add_epoch(job.run_id, e)
    if "epoch" in fields and not epochs:
        store.update(job.run_id, epoch=fields["epoch"])
    if checkpoint is not None:
        atomic_write_bytes(store.run_dir(job.run_id) / CHECKPOINT, checkpoint)


def finish(store, job: _InFlight, channel) -> str:
    """Write a returned task's files and record, or fail the run with why the task was lost."""
    from tl_core.atomic import atomic_write_bytes

    ray = _ray()
    relay_progress(store, [job], channel)
    try:
        result = ray.get(job.ref)
    except Exception as exc:  # noqa: BLE001 - node died, worker crashed, task cancelled
        if job.cancel_sent and not job.started:
            store.finish(job.run_id, "cancelled", error="cancelled before a Ray node took it")
            return "cancelled"
        store.finish(job.run_id, "failed", error=_lost(store, job.run_id, exc))
        return "failed"
    folder = store.run_dir(job.run_id)
    for name, blob in result["files"].items():
        if name == "predictions.json":
            blob = _local_paths(blob, job.root)
        atomic_write_bytes(folder / name, blob)
    record = result["record"]
    if record["status"] == "done":
        (folder / CHECKPOINT).unlink(missing_ok=True)
    fields = {k: record.get(k) for k in (*PROGRESS_FIELDS, *FINAL_FIELDS)}
    fields.update(executor="ray", node=result["node"], epoch=record.get("epoch") or 0)
    store.finish(job.run_id, record["status"], **fields)
    return record["status"]


def _lost(store, run_id: str, exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    has_checkpoint = (store.run_dir(run_id, create=False) / CHECKPOINT).is_file()
    then = (
        f"continue it from its last finished epoch with `python -m tl_core resume {run_id}`"
        if has_checkpoint
        else "start it again"
    )
    return f"its Ray task was lost ({exc.__class__.__name__}: {first}); {then}"


def _local_paths(blob: bytes, root: str) -> bytes:
    """predictions.json with the data set's paths on the worker's machine, not the node's."""
    import json

    data = json.loads(blob)
    for item in data.get("items", []):
        item["path"] = f"{root}/{item['rel']}"
    return json.dumps(data, indent=1).encode()


def serve(store, heartbeat, *, once: bool, poll: float, idle_exit: float, limit: int) -> int:
    """The worker's loop with Ray: claim, submit, relay, finish; returns the runs taken."""
    connect()
    datasets, jobs, channel = DataSets(), {}, open_channel()
    try:
        return _loop(
            store, heartbeat, (datasets, channel), jobs,
            once=once, poll=poll, idle_exit=idle_exit, limit=limit,
        )  # fmt: skip
    except BaseException as exc:  # stopped (SIGTERM) or broken: nothing stays running unseen
        for job in jobs.values():
            _ray().cancel(job.ref, force=True)
            store.finish(
                job.run_id,
                "failed",
                error=f"the worker was stopped ({exc.__class__.__name__}: {exc}) while this run "
                "was in progress on Ray; resume it or start it again",
            )
        raise


def _loop(store, heartbeat, shared, jobs, *, once, poll, idle_exit, limit) -> int:
    from tl_core.worker import _log, fail_orphans

    datasets, channel = shared
    taken, idle_since = 0, time.monotonic()
    while True:
        for run_id in fail_orphans(store):
            _log(f"run {run_id}: marked failed (its worker stopped)")
        while len(jobs) < limit and (not jobs or _room(1.0)):
            run = store.claim_next(os.getpid())
            if run is None:
                break
            try:
                jobs[run["id"]] = submit(store, run, datasets, channel)
            except Exception as exc:  # noqa: BLE001 - the data set is gone, or Ray refused
                store.finish(run["id"], "failed", error=f"{exc.__class__.__name__}: {exc}")
                continue
            taken += 1
            _log(f"run {run['id']}: {run['backbone']} {run['strategy']} sent to Ray")
        heartbeat.run_id = next(iter(jobs), None)
        if not jobs:
            if once or time.monotonic() - idle_since > idle_exit:
                return taken
            time.sleep(poll)
            continue
        ready, _ = _ray().wait([j.ref for j in jobs.values()], num_returns=1, timeout=0.5)
        for job in [j for j in jobs.values() if j.ref in ready]:
            _log(f"run {job.run_id}: {finish(store, job, channel)} (ray)")
            del jobs[job.run_id]
        relay_progress(store, list(jobs.values()), channel)
        idle_since = time.monotonic()
