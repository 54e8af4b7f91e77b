"""When will a run start, and how long will it take: estimates and the queue view.

`estimate_seconds` predicts a run's seconds from a cost model, backbone x strategy x images x
epochs with one-off costs apart (`table_cost`; the registries' `Backbone.cpu_cost` and
`Strategy.cost_factor` were set from the README's measured figures), fitted to what finished
runs of the same backbone and strategy took in this lab home when there are some: the
estimate says which ("measured here" or "table"). `fair_order` is the queue's policy, for
the worker's claim and the queue view alike; `queue_view` gives each queued or running run
its position and expected start. Nothing here reads or hashes image files: image counts
come from the run record, the data set's manifest, or the file names.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tl_core.errors import LabError

_GPU_SPEEDUP = 25.0  # compute on a GPU against this machine's CPU (not measured here)
# One-off and fixed costs, in seconds on the 2-core machine of the README's Speed section:
# decoding hymenoptera's 398 photos took 1.0 s (2.5 ms each); a whole-network epoch of
# bench-scale's 100-image set took 0.3 s more than its images (saving the checkpoint). What
# a run spends outside decoding, caches and epochs (building the model, evaluating, saving)
# was 0.2-0.7 s per run in one process on a loaded machine (timings.json against wall time);
# on the idle machine the classroom preset's feature-extractor run took 0.6 s in all
# (scripts/check_estimates.py at 2f3a546), so 0.5 s of fixed cost overstated it 1.8x.
_DECODE_SECONDS = 0.0025  # per image and run: decoding and resizing once (one core)
_FIXED_SECONDS = 0.25  # per run
_EPOCH_SECONDS = 0.25  # per epoch through the whole network (its checkpoint)
_HEAD_EPOCH_SECONDS = 0.00003  # per image and epoch, a head on cached features (0.01 s/300)
_MEASURED_RUNS = 5  # recent finished runs of a backbone x strategy that calibrate it
_FIT_TTL = 2.0  # seconds a store's calibration is reused (the pages refresh every 2 s)


@dataclass(frozen=True)
class Estimate:
    seconds: float
    basis: str  # "measured here" (fitted to finished runs in this lab home) or "table"


@dataclass(frozen=True)
class Cost:
    """A run's predicted seconds, by kind: what every run pays, the one-off work (decoding,
    caches, the final evaluation) and one epoch."""

    fixed: float
    one_off: float
    epoch: float

    def total(self, epochs: int) -> float:
        return self.fixed + self.one_off + epochs * self.epoch


def _device_type(device: str | None) -> str:
    return "cuda" if device and "cuda" in device else "cpu"


def _spec_device(spec) -> str:
    from tl_core.train import resolve_device

    try:
        return resolve_device(spec.train.device).type
    except LabError:
        return "cpu"


def table_cost(spec, num_train: int, num_val: int) -> Cost:
    """The registries' cost model: backbone (`Backbone.cpu_cost`, per image and core) x
    strategy (its fast path and `Strategy.cost_factor`) x images x epochs, one-off costs
    counted apart. Unknown names raise LabError with the valid choices."""
    from tl_core.models import get_backbone
    from tl_core.strategies import get_strategy
    from tl_core.train import usable_cpus

    backbone, strategy = get_backbone(spec.backbone), get_strategy(spec.strategy)
    step, fwd = backbone.cpu_cost
    scale = 1 / _GPU_SPEEDUP if _spec_device(spec) == "cuda" else 1 / max(1, usable_cpus())
    path = strategy.fast_path if spec.fast else None
    views = 1 if spec.augment == "none" else spec.feature_views
    one_off = (num_train + num_val) * _DECODE_SECONDS
    factor = strategy.cost_factor if path else max(strategy.cost_factor, fwd / step)
    through_network = (num_train * step + num_val * fwd) * scale * factor
    if path in ("features", "probe", "prefix"):  # one frozen forward pass per view, once
        one_off += (num_train * views + num_val) * fwd * scale
    if path == "features":
        epoch = (num_train + num_val) * _HEAD_EPOCH_SECONDS
    elif path == "prefix":  # the last K layer groups train; cost_factor is for K = 1
        epoch = through_network * spec.trainable_blocks
    else:
        epoch = through_network + _EPOCH_SECONDS
        one_off += num_val * fwd * scale  # the final evaluation through the whole network
    if path == "probe":  # the head's epochs on cached features first
        one_off += spec.train.probe_epochs * (num_train + num_val) * _HEAD_EPOCH_SECONDS
    return Cost(_FIXED_SECONDS, one_off, epoch)


@dataclass(frozen=True)
class Calibration:
    """Measured against predicted seconds of finished runs of one backbone x strategy."""

    fixed: float | None  # median seconds outside decoding, caches and training
    one_off: float | None  # measured / table, over the runs where the table predicts some
    epoch: float | None
    runs: int


_fits: dict[str, tuple[float, dict]] = {}
_timings: dict[tuple[str, str], dict | None] = {}


def _run_timings(store, run_id: str) -> dict | None:
    """A finished run's timings.json (None if absent); read once per run and process."""
    key = (str(store.db_path), run_id)
    if key not in _timings:
        from tl_core.run import TIMINGS_FILE

        try:
            _timings[key] = store.read_json(run_id, TIMINGS_FILE)
        except (LabError, OSError, ValueError):
            _timings[key] = None
    return _timings[key]


def _measured(run: dict, timings: dict) -> tuple[Cost, Cost] | None:
    """(measured, table) costs of a finished run; None when it cannot be compared."""
    from tl_core.spec import RunSpec

    epochs = timings.get("epoch_seconds") or []
    if not (run.get("started") and run.get("finished") and epochs and run.get("num_train")):
        return None
    try:
        spec = RunSpec.from_dict(run["config"], trusted=True)  # validated when queued
        table = table_cost(spec, run["num_train"], run.get("num_val") or 0)
    except (LabError, KeyError, TypeError, ValueError):
        return None
    one_off = (timings.get("decode_seconds") or 0.0) + (timings.get("cache_seconds") or 0.0)
    wall = run["finished"] - run["started"]
    fixed = wall - one_off - (timings.get("train_seconds") or sum(epochs))
    return Cost(max(0.0, fixed), one_off, sum(epochs) / len(epochs)), table


def _ratio(pairs: list[tuple[float, float]], least: float) -> float | None:
    """sum(measured) / sum(table) over the pairs whose table value is at least `least`."""
    kept = [(m, t) for m, t in pairs if t >= least]
    return sum(m for m, _ in kept) / sum(t for _, t in kept) if kept else None


def calibrations(store) -> dict[tuple[str, str, str], Calibration]:
    """(backbone, strategy, device type) -> Calibration, from up to 5 recent finished runs
    each (their records and timings.json); reused for `_FIT_TTL` seconds."""
    key = str(store.db_path)
    cached = _fits.get(key)
    if cached and time.monotonic() - cached[0] < _FIT_TTL:
        return cached[1]
    pairs: dict[tuple[str, str, str], list[tuple[Cost, Cost]]] = {}
    for run in store.list(status="done", limit=300):
        group = (run["backbone"], run["strategy"], _device_type(run.get("device")))
        if len(pairs.get(group, ())) >= _MEASURED_RUNS:
            continue
        timings = _run_timings(store, run["id"])
        measured = timings and _measured(run, timings)
        if measured:
            pairs.setdefault(group, []).append(measured)
    fits = {}
    for group, runs in pairs.items():
        fixed = sorted(m.fixed for m, _ in runs)[len(runs) // 2]
        one_off = _ratio([(m.one_off, t.one_off) for m, t in runs], least=0.2)
        epoch = _ratio([(m.epoch, t.epoch) for m, t in runs], least=0.02)
        fits[group] = Calibration(fixed, one_off, epoch, len(runs))
    _fits[key] = (time.monotonic(), fits)
    return fits


def estimate_seconds(spec, num_train: int, num_val: int, store=None) -> Estimate:
    """How long a run of `spec` on this many images should take on this machine: the
    table's cost model (`table_cost`), each part scaled by what finished runs of the same
    backbone and strategy took here ("measured here") when the store has some.

    An unknown backbone or strategy raises LabError (with the valid choices).
    """
    table = table_cost(spec, num_train, num_val)
    fit = None
    if store is not None:
        fit = calibrations(store).get((spec.backbone, spec.strategy, _spec_device(spec)))
    if fit is None:
        return Estimate(table.total(spec.train.epochs), "table")
    cost = Cost(
        table.fixed if fit.fixed is None else fit.fixed,
        table.one_off * (1.0 if fit.one_off is None else fit.one_off),
        table.epoch * (1.0 if fit.epoch is None else fit.epoch),
    )
    return Estimate(cost.total(spec.train.epochs), "measured here")


def image_counts(spec) -> tuple[int, int]:
    """(train, val) images of `spec`'s data set, from its manifest or its folder layout
    (`layout.read_layout`; nothing is decoded or hashed).

    Approximate (the split is not made): for a queued run's estimate only.
    """
    from tl_core.data.folder import resolve_dataset
    from tl_core.data.layout import read_layout
    from tl_core.data.store import MANIFEST

    root = resolve_dataset(spec.data)
    manifest = root / MANIFEST
    if manifest.is_file():
        records = json.loads(manifest.read_text(encoding="utf-8")).get("images", [])
        entries = [(r.get("split"), r.get("label")) for r in records]
    else:
        entries = [(e.split, e.label) for e in read_layout(root).images]
    val = sum(1 for split, _ in entries if split in ("val", "test"))
    train = len(entries) - val
    if not val:  # a flat set: the run splits off val_fraction
        val = round(train * spec.val_fraction)
        train -= val
    if spec.per_class is not None:
        classes = len({label for _, label in entries}) or 1
        train = min(train, spec.per_class * classes)
    return train, val


def _run_estimate(run: dict, store) -> float | None:
    from tl_core.spec import RunSpec

    try:
        spec = RunSpec.from_dict(run["config"], trusted=True)  # validated when queued
        if run.get("num_train"):
            counts = run["num_train"], run.get("num_val") or 0
        else:
            counts = image_counts(spec)
        return estimate_seconds(spec, *counts, store).seconds
    except (LabError, OSError, ValueError, KeyError, TypeError):
        return None  # a data set gone or a name no longer known: no estimate


def progress_fraction(run: dict) -> float:
    """How much of a running run is done, 0..1, from its epoch and batch counters."""
    total = run.get("epochs_total") or 0
    if not total:
        return 0.0
    done = run.get("epoch") or 0
    if run.get("phase") == "training" and run.get("batches"):
        done += (run.get("batch") or 0) / run["batches"]
    return max(0.0, min(1.0, done / total))


def time_left(
    run: dict, estimate: float | None, now: float | None = None, epoch_seconds: float | None = None
) -> float | None:
    """Seconds a running run still needs, or None when unknown.

    Once an epoch has finished (in this process, or in one before a resume), from the mean
    `epoch_seconds` times the epochs left; during the first epoch, from this process's pace;
    before training (decoding, caching), the estimate less the time spent, and None once the
    run has taken longer than estimated (never "0 s left" for a run that is still working).
    """
    now = now or time.time()
    elapsed = max(0.0, now - (run.get("started") or now))
    total = run.get("epochs_total") or 0
    fraction = progress_fraction(run)
    if epoch_seconds and total and run.get("epoch"):
        return (1.0 - fraction) * total * epoch_seconds
    if run.get("phase") == "training" and fraction > 0.02 and elapsed > 2:
        return max(0.0, elapsed / fraction - elapsed)
    if estimate is None or estimate <= elapsed:
        return None
    return estimate - elapsed


def running_progress(run: dict) -> tuple[float, str]:
    """The bar (0..1) and the line a person reads for a running run of `queue_view`.

    Training: the epoch in progress (the stored `epoch` counts finished ones), its batch, the
    running loss and accuracy; a step before training (decoding, caching, resuming) fills the
    bar with its own count and says so. The time left is `time_left`'s, or "longer than
    estimated" when the estimate has run out.
    """
    from tl_core.fmt import format_duration

    total = run.get("epochs_total") or 0
    finished = run.get("epoch") or 0
    phase = run.get("phase") or "starting"
    batch, batches = run.get("batch") or 0, run.get("batches") or 0
    if phase == "training" and total and finished >= total:
        fraction, text = 1.0, f"all {total} epochs trained: evaluating and saving"
    elif phase == "training" and batches:
        fraction = progress_fraction(run)
        text = f"epoch {finished + 1}/{total}, "
        if batch >= batches:
            text += "validating"
        else:
            text += f"batch {batch}/{batches}"
            if run.get("running_loss") is not None and batch:  # none yet at batch 0
                text += f", loss {run['running_loss']:.3f}, accuracy {run['running_acc']:.1%}"
    elif batches > 1:  # a one-off step: decoding, caching features or layer outputs
        fraction = min(1.0, batch / batches)
        before = f"resuming after epoch {finished}/{total}: " if finished else "before training: "
        text = f"{before}{phase} {batch}/{batches}"
    else:
        fraction = progress_fraction(run)
        text = f"resuming after epoch {finished}/{total}" if finished else phase
    left = run.get("time_left")
    if left is not None:
        text += f" · about {format_duration(max(left, 1.0))} left"
    elif run.get("estimate") is not None:
        text += " · taking longer than estimated"
    return fraction, text


def fair_order(queued: Sequence[dict], last_start: Mapping[str, float]) -> list[dict]:
    """Queued runs in the order the worker takes them: round-robin across workspaces, then
    first in, first out within one.

    The next run comes from the workspace served longest ago (`last_start`: when each
    workspace's latest run started; never served comes first, ties go to the workspace whose
    oldest run waits longest). So a workspace's run waits at most one run per other active
    workspace, however many runs the others queued. A run that waits for a group
    (`depends_on`, a recipe's later stage) is passed over while a run of that group is still
    ahead of it. Rows need `workspace`, `created` and `slot`; `group_id` and `depends_on`
    where dependencies matter. Pure: the worker's claim and the queue view both call it.
    """
    lanes: dict[str, list[dict]] = {}
    for run in sorted(queued, key=lambda r: (r["created"], r.get("slot") or 0)):
        lanes.setdefault(run.get("workspace") or "", []).append(run)
    ahead = Counter(r.get("group_id") for r in queued)  # unplaced runs per group
    served = {ws: last_start.get(ws, float("-inf")) for ws in lanes}
    tick = max([0.0, *last_start.values()])
    order: list[dict] = []
    while lanes:
        ready = {}
        for ws, runs in lanes.items():
            run = next((r for r in runs if not _waits(r, ahead)), None)
            if run is not None:
                ready[ws] = run
        if not ready:  # only runs waiting for groups that never finish: they keep FIFO order
            order.extend(sorted((r for rs in lanes.values() for r in rs), key=_fifo))
            break
        ws = min(ready, key=lambda w: (served[w], _fifo(ready[w])))
        run = ready[ws]
        order.append(run)
        lanes[ws].remove(run)
        if not lanes[ws]:
            del lanes[ws]
        ahead[run.get("group_id")] -= 1
        tick += 1.0
        served[ws] = tick
    return order


def _waits(run: dict, ahead: Counter) -> bool:
    return run.get("depends_on") is not None and ahead[run["depends_on"]] > 0


def _fifo(run: dict) -> tuple[float, int]:
    return run["created"], run.get("slot") or 0


def queue_view(store, workspace: str | None = None) -> list[dict]:
    """Running and queued runs in worker order (`fair_order`), each with `position`
    (0 = running now, 1 = next), `estimate` (seconds, None if unknown), `time_left` and
    `expected_start` (epoch seconds).

    The queue is shared by every workspace (one worker), so the expected start of a run
    counts the runs of other workspaces ahead of it; only `workspace`'s runs are returned.
    """
    now = clock = time.time()
    rows = store.queue()
    running = [r for r in rows if r["status"] == "running"]
    queued = fair_order([r for r in rows if r["status"] == "queued"], store.last_starts())
    out = []
    cache: dict[str, float | None] = {}
    for position, run in enumerate([*running, *queued]):
        key = json.dumps(run["config"], sort_keys=True)
        if key not in cache:
            cache[key] = _run_estimate(run, store)
        estimate = cache[key]
        if run["status"] == "running":
            left = time_left(run, estimate, now, _epoch_seconds(store, run))
            entry = {**run, "position": 0, "estimate": estimate, "time_left": left}
            entry["expected_start"] = run.get("started") or now
            clock = max(clock, now + (left or 0.0))
        else:
            entry = {**run, "estimate": estimate, "time_left": estimate}
            entry["position"] = position - len(running) + 1
            entry["expected_start"] = clock
            clock += estimate or 0.0
        if workspace is None or run.get("workspace", "") == workspace:
            out.append(entry)
    return out


def _epoch_seconds(store, run: dict) -> float | None:
    """Mean seconds of the run's finished epochs (any process's, a resume's included)."""
    if not run.get("epoch"):
        return None
    seconds = [e["seconds"] for e in store.epochs(run["id"]) if e.get("seconds")]
    return sum(seconds) / len(seconds) if seconds else None
