"""The fair queue (round-robin across workspaces, FIFO within one), the claim and the queue
view agreeing on it, the queue's command line, and the estimates' sources."""

from __future__ import annotations

import json

import pytest

from tl_core import schedule
from tl_core.runs import NewRun, RunStore
from tl_core.schedule import fair_order


def _row(run_id: str, workspace: str, created: float, **kw) -> dict:
    return {"id": run_id, "workspace": workspace, "created": created, "slot": 0, **kw}


def _ids(rows: list[dict]) -> list[str]:
    return [r["id"] for r in rows]


# ---------------------------------------------------------------------------- the pure order


def test_one_workspace_is_first_in_first_out() -> None:
    rows = [_row("c", "a", 3.0), _row("a", "a", 1.0), _row("b", "a", 2.0)]
    assert _ids(fair_order(rows, {})) == ["a", "b", "c"]


def test_slots_order_runs_queued_at_the_same_moment() -> None:
    rows = [_row("second", "a", 1.0, slot=1), _row("first", "a", 1.0, slot=0)]
    assert _ids(fair_order(rows, {})) == ["first", "second"]


def test_workspaces_take_turns_whatever_one_of_them_queued() -> None:
    rows = [_row(f"a{i}", "a", float(i)) for i in range(10)] + [_row("b0", "b", 100.0)]
    order = _ids(fair_order(rows, {}))
    assert order.index("b0") == 1  # after a's oldest run, which waited longest
    assert order == ["a0", "b0", *(f"a{i}" for i in range(1, 10))]


def test_a_workspace_never_served_goes_before_one_served_recently() -> None:
    rows = [_row("a0", "a", 1.0), _row("a1", "a", 2.0), _row("b0", "b", 50.0)]
    assert _ids(fair_order(rows, {"a": 40.0})) == ["b0", "a0", "a1"]


def test_the_workspace_served_longest_ago_goes_first() -> None:
    rows = [_row("a0", "a", 1.0), _row("b0", "b", 2.0), _row("c0", "c", 3.0)]
    assert _ids(fair_order(rows, {"a": 30.0, "b": 10.0, "c": 20.0})) == ["b0", "c0", "a0"]


@pytest.mark.parametrize("others", [1, 2, 5])
def test_one_run_waits_at_most_one_run_per_other_active_workspace(others: int) -> None:
    rows = [_row(f"w{k}-{i}", f"w{k}", float(i * 10 + k)) for k in range(others) for i in range(20)]
    rows.append(_row("late", "late", 1000.0))
    served = {f"w{k}": 500.0 + k for k in range(others)}
    for last in (served, {**served, "late": 999.0}):  # never served, or served last of all
        order = _ids(fair_order(rows, last))
        assert order.index("late") <= others


def test_three_workspaces_round_robin_to_the_end() -> None:
    rows = [_row(f"{w}{i}", w, i + k / 10) for k, w in enumerate("abc") for i in range(3)]
    rows = [r for r in rows if r["id"] not in ("c1", "c2")]  # c has one run
    assert _ids(fair_order(rows, {})) == ["a0", "b0", "c0", "a1", "b1", "a2", "b2"]


def test_a_run_waiting_for_a_group_goes_after_that_group() -> None:
    rows = [
        _row("stage1", "a", 1.0, group_id="g1", depends_on="g0"),
        _row("stage0-x", "a", 2.0, group_id="g0"),
        _row("stage0-y", "a", 3.0, group_id="g0"),
        _row("b0", "b", 4.0, group_id="gb"),
    ]
    order = _ids(fair_order(rows, {}))
    assert order.index("stage1") > order.index("stage0-y")
    assert order[:2] == ["stage0-x", "b0"]


def test_runs_waiting_for_each_other_are_still_listed() -> None:
    rows = [
        _row("x", "a", 1.0, group_id="gx", depends_on="gy"),
        _row("y", "a", 2.0, group_id="gy", depends_on="gx"),
    ]
    assert _ids(fair_order(rows, {})) == ["x", "y"]


def test_the_default_workspace_is_one_workspace_like_the_others() -> None:
    rows = [_row("d0", "", 1.0), _row("d1", "", 2.0), _row("a0", "a", 3.0)]
    assert _ids(fair_order(rows, {})) == ["d0", "a0", "d1"]


# ---------------------------------------------------------------------------- the store


def _queue(store: RunStore, workspace: str, n: int) -> list[str]:
    run = NewRun(
        data_path="/nowhere",
        backbone="small_cnn",
        strategy="scratch",
        config={"train": {"epochs": 1}},
        workspace=workspace,
    )
    return store.create_group([run] * n)


def test_claim_next_follows_the_fair_order() -> None:
    store = RunStore()
    a = _queue(store, "a", 4)
    b = _queue(store, "b", 2)
    claimed = []
    while (run := store.claim_next()) is not None:
        claimed.append(run["id"])
        store.finish(run["id"], "done")
    assert claimed == [a[0], b[0], a[1], b[1], a[2], a[3]]


def test_a_workspace_arriving_late_is_next_while_another_trains() -> None:
    store = RunStore()
    a = _queue(store, "a", 10)
    assert store.claim_next()["id"] == a[0]  # a trains its first run
    (b,) = _queue(store, "b", 1)
    view = schedule.queue_view(store)
    positions = {r["id"]: r["position"] for r in view}
    assert positions[a[0]] == 0 and positions[b] == 1 and positions[a[1]] == 2
    store.finish(a[0], "done")
    assert store.claim_next()["id"] == b  # the claim agrees with the view


def test_the_queue_view_and_the_claim_agree_on_every_position() -> None:
    store = RunStore()
    _queue(store, "a", 3)
    _queue(store, "", 2)
    _queue(store, "b", 1)
    _queue(store, "a", 2)
    expected = [r["id"] for r in sorted(schedule.queue_view(store), key=lambda r: r["position"])]
    claimed = []
    while (run := store.claim_next()) is not None:
        claimed.append(run["id"])
        store.finish(run["id"], "done")
    assert claimed == expected


def test_the_queue_view_of_one_workspace_counts_the_others_ahead() -> None:
    store = RunStore()
    _queue(store, "a", 5)
    (b,) = _queue(store, "b", 1)
    view = schedule.queue_view(store, "b")
    assert [(r["id"], r["position"]) for r in view] == [(b, 2)]


def test_claim_next_for_one_workspace_is_first_in_first_out() -> None:
    store = RunStore()
    _queue(store, "a", 1)
    b = _queue(store, "b", 2)
    assert store.claim_next(workspace="b")["id"] == b[0]
    assert store.claim_next(workspace="b")["id"] == b[1]
    assert store.claim_next(workspace="b") is None


def test_cancelled_runs_are_not_claimed_nor_listed() -> None:
    store = RunStore()
    a = _queue(store, "a", 2)
    store.request_cancel(a[0])
    assert [r["id"] for r in schedule.queue_view(store)] == [a[1]]
    assert store.claim_next()["id"] == a[1]


def test_last_starts_per_workspace() -> None:
    store = RunStore()
    _queue(store, "a", 1)
    _queue(store, "b", 1)
    assert store.last_starts() == {}
    first = store.claim_next()
    assert store.last_starts() == {first["workspace"]: first["started"]}
    assert json.dumps(store.last_starts())  # plain data


# ---------------------------------------------------------------------------- the command line


def _cli(capsys, *args: str):
    from tl_core.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1]) if "--json" in args else out


def test_done_when_one_run_of_b_waits_behind_at_most_one_of_a(stripes, capsys) -> None:
    """The issue's check, on a tiny generated set: 10 runs queued in `a`, then one in `b`,
    no worker running: `runs --status queued --json` puts b's run at position 1 or 2."""
    queued_a = _cli(
        capsys,
        *("compare", "--data", str(stripes), "--backbone", "efficientnet_lite0"),
        *("--strategies", "scratch,feature_extractor", "--seeds", "5"),
        *("--queue", "--workspace", "a", "--json"),
    )
    assert len(queued_a) == 10 and {r["workspace"] for r in queued_a} == {"a"}
    assert sorted(r["position"] for r in queued_a) == list(range(1, 11))
    assert all(r["status"] == "queued" for r in queued_a)
    queued_b = _cli(
        capsys,
        *("train", "--data", str(stripes), "--backbone", "small_cnn", "--strategy", "scratch"),
        *("--queue", "--workspace", "b", "--json"),
    )
    assert queued_b["workspace"] == "b" and queued_b["position"] <= 2
    rows = _cli(capsys, "runs", "--status", "queued", "--json")
    assert len(rows) == 11 and all(r["status"] == "queued" for r in rows)
    (b,) = [r for r in rows if r["workspace"] == "b"]
    assert b["run_id"] == queued_b["run_id"] and b["position"] <= 2
    assert sorted(r["position"] for r in rows) == list(range(1, 12))
    by_position = sorted(rows, key=lambda r: r["position"])
    starts = [r["expected_start_s"] for r in by_position]
    assert starts[0] == 0 and starts == sorted(starts) and starts[-1] > 0
    assert RunStore().claim_next()["id"] == by_position[0]["run_id"]  # the worker agrees


def test_queue_records_without_training_and_keeps_the_folder_absolute(
    stripes, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(stripes.parent)
    out = _cli(
        capsys,
        *("train", "--data", f"./{stripes.name}", "--backbone", "small_cnn"),
        *("--strategy", "scratch", "--queue", "--workspace", "Team-A"),
    )
    assert "queued 1 run(s) in workspace team-a" in out and "position" in out
    (run,) = RunStore().list()
    assert run["status"] == "queued" and run["workspace"] == "team-a"
    assert run["data_path"] == str(stripes.resolve()) and run["started"] is None


def test_runs_filters_by_workspace_and_status(stripes, capsys) -> None:
    train = ("train", "--data", str(stripes), "--backbone", "small_cnn", "--strategy", "scratch")
    _cli(capsys, *train, "--queue", "--workspace", "a")
    _cli(capsys, *train, "--queue", "--workspace", "b")
    _cli(capsys, *train, "--queue")
    store = RunStore()
    first = store.claim_next()
    store.finish(first["id"], "done")
    rows = _cli(capsys, "runs", "--workspace", "b", "--json")
    assert [r["workspace"] for r in rows] == ["b"]
    assert [r["workspace"] for r in _cli(capsys, "runs", "--workspace", "", "--json")] == [""]
    done = _cli(capsys, "runs", "--status", "done", "--json")
    assert [r["run_id"] for r in done] == [first["id"]]
    assert done[0]["position"] is None and done[0]["expected_start_s"] is None
    queued = _cli(capsys, "runs", "--status", "queued", "--json")
    assert sorted(r["position"] for r in queued) == [1, 2]
    text = _cli(capsys, "runs", "--status", "queued")
    assert "expected start" in text and "(default)" in text


def test_queue_flags_refuse_bad_input_with_one_line(stripes, capsys, monkeypatch) -> None:
    from tl_core.cli import main

    train = ["train", "--data", str(stripes), "--backbone", "small_cnn", "--strategy", "scratch"]
    assert main([*train, "--queue", "--workspace", "team-"]) == 2
    assert "invalid workspace name" in capsys.readouterr().err
    assert main(["runs", "--status", "waiting"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    monkeypatch.setenv("TL_LAB_MAX_QUEUED", "1")
    assert main([*train, "--queue", "--workspace", "a"]) == 0
    capsys.readouterr()
    assert main([*train, "--queue", "--workspace", "a"]) == 2
    assert "limit of 1" in capsys.readouterr().err
    assert len(RunStore().list()) == 1


def test_a_name_in_a_workspace_is_that_workspace_s_data_set(stripes, capsys) -> None:
    from tl_core.data.sources import import_folder

    import_folder(stripes, "team-a--stripes")
    _cli(
        capsys,
        *("train", "--data", "stripes", "--backbone", "small_cnn", "--strategy", "scratch"),
        *("--queue", "--workspace", "team-a"),
    )
    assert RunStore().list()[0]["data_path"] == "team-a--stripes"


# ---------------------------------------------------------------------------- estimates


def _spec(strategy: str = "full_finetune", epochs: int = 25, **kw):
    from tl_core.spec import RunSpec
    from tl_core.train import TrainConfig

    return RunSpec(
        data="/nowhere",
        backbone=kw.pop("backbone", "efficientnet_lite0"),
        strategy=strategy,
        train=TrainConfig(epochs=epochs, device="cpu"),
        **kw,
    )


@pytest.fixture
def two_cores(monkeypatch):
    """The README's figures come from a 2-core machine."""
    import tl_core.train

    monkeypatch.setattr(tl_core.train, "usable_cpus", lambda: 2)


@pytest.mark.parametrize(
    ("strategy", "measured"),
    [("feature_extractor", 8.2), ("partial_finetune", 17.9), ("full_finetune", 209.8)],
)
def test_the_table_is_within_1_5x_of_the_readme_figures(two_cores, strategy, measured) -> None:
    """README, Speed: efficientnet_lite0, 25 epochs on hymenoptera (245 + 153 photos),
    lab seconds of `bench` (one-off costs included, not the run's fixed start)."""
    cost = schedule.table_cost(_spec(strategy), 245, 153)
    predicted = cost.one_off + 25 * cost.epoch
    assert measured / 1.5 <= predicted <= measured * 1.5


def test_the_table_counts_one_off_costs_apart_from_epochs(two_cores) -> None:
    short, long = (schedule.estimate_seconds(_spec(epochs=e), 245, 153) for e in (5, 10))
    cost = schedule.table_cost(_spec(), 245, 153)
    assert short.basis == long.basis == "table"
    assert long.seconds - short.seconds == pytest.approx(5 * cost.epoch)
    assert short.seconds == pytest.approx(cost.fixed + cost.one_off + 5 * cost.epoch)
    few, many = (schedule.table_cost(_spec("feature_extractor"), n, 100) for n in (100, 200))
    assert many.one_off > few.one_off and many.epoch < 0.1  # the features' pass, once
    one_view = schedule.table_cost(_spec("feature_extractor", augment="none"), 100, 100)
    assert one_view.one_off < few.one_off  # no augmentation: one view per image


def test_the_table_reads_the_registries(two_cores, monkeypatch) -> None:
    from dataclasses import replace

    import tl_core.backbones as backbones

    lite0 = backbones.BACKBONES["efficientnet_lite0"]
    before = schedule.table_cost(_spec(), 100, 20).epoch - schedule._EPOCH_SECONDS
    monkeypatch.setitem(
        backbones.BACKBONES, "efficientnet_lite0", replace(lite0, cpu_cost=(0.12, 0.02))
    )
    after = schedule.table_cost(_spec(), 100, 20).epoch - schedule._EPOCH_SECONDS
    assert after == pytest.approx(2 * before)


def _finished(store: RunStore, spec, *, wall: float, timings: dict | None, device="cpu") -> str:
    (run_id,) = store.create_group(
        [NewRun(data_path="/nowhere", backbone=spec.backbone, strategy=spec.strategy,
                config=spec.to_dict())]
    )  # fmt: skip
    store.update(run_id, started=1000.0)
    store.finish(run_id, "done", num_train=245, num_val=153, epoch=spec.train.epochs,
                 device=device)  # fmt: skip
    store.update(run_id, finished=1000.0 + wall)
    if timings is not None:
        store.write_json(run_id, "timings.json", timings)
    return run_id


def _timings(one_off: float, epoch: float, epochs: int) -> dict:
    return {"decode_seconds": 1.0, "cache_seconds": one_off - 1.0,
            "train_seconds": epoch * epochs, "epoch_seconds": [epoch] * epochs}  # fmt: skip


def test_finished_runs_calibrate_the_estimate_measured_here(two_cores) -> None:
    store = RunStore()
    spec = _spec("full_finetune", epochs=10)
    assert schedule.estimate_seconds(spec, 245, 153, store).basis == "table"
    # Here decoding is 3x and an epoch 2x slower than the table says; 4 s outside both.
    table = schedule.table_cost(spec, 245, 153)
    one_off, epoch = 3 * table.one_off, 2 * table.epoch
    wall = one_off + 10 * epoch + 4.0
    _finished(store, spec, wall=wall, timings=_timings(one_off, epoch, 10))
    schedule._fits.clear()
    again = schedule.estimate_seconds(spec, 245, 153, store)
    assert again.basis == "measured here"
    assert again.seconds == pytest.approx(wall)
    big_spec = _spec("full_finetune", epochs=20)
    big = schedule.table_cost(big_spec, 490, 306)  # the table's shape, this machine's pace
    bigger = schedule.estimate_seconds(big_spec, 490, 306, store)
    assert bigger.seconds == pytest.approx(3 * big.one_off + 20 * 2 * big.epoch + 4.0)
    other = schedule.estimate_seconds(_spec("scratch"), 245, 153, store)
    assert other.basis == "table"  # another strategy: not calibrated by it


def test_tiny_epochs_do_not_calibrate_bigger_ones(two_cores) -> None:
    """A head on cached features takes milliseconds an epoch: noise, not a rate to scale."""
    store = RunStore()
    spec = _spec("feature_extractor", epochs=10)
    table = schedule.table_cost(spec, 245, 153)
    _finished(store, spec, wall=30.0, timings=_timings(2 * table.one_off, 0.05, 10))
    schedule._fits.clear()
    fit = schedule.calibrations(store)[("efficientnet_lite0", "feature_extractor", "cpu")]
    assert fit.one_off == pytest.approx(2.0) and fit.epoch is None and fit.runs == 1


def test_runs_on_another_device_or_without_timings_do_not_calibrate(two_cores) -> None:
    store = RunStore()
    spec = _spec("full_finetune", epochs=2)
    _finished(store, spec, wall=5.0, timings=_timings(2.0, 1.0, 2), device="cuda (H100)")
    _finished(store, spec, wall=500.0, timings=None)
    schedule._fits.clear()
    estimate = schedule.estimate_seconds(spec, 245, 153, store)
    assert estimate.basis == "table"
    assert estimate.seconds == pytest.approx(schedule.table_cost(spec, 245, 153).total(2))


def test_check_estimates_refuses_a_missing_folder_with_one_line(tmp_path, capsys) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "check_estimates.py"
    module_spec = importlib.util.spec_from_file_location("check_estimates", path)
    script = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(script)
    assert script.main(["--data", str(tmp_path / "absent")]) == 2
    assert "no data set folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the queue panel


@pytest.fixture
def app_env(monkeypatch, stripes):
    """No worker started by the pages; the stripes set imported; fragments recorded."""
    import streamlit

    from tl_core.data.sources import import_folder

    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")
    import_folder(stripes, "stripes")
    calls: list = []
    real = streamlit.fragment

    def recording(func=None, *, run_every=None):
        calls.append((getattr(func, "__name__", None), run_every))
        return real(func, run_every=run_every)

    monkeypatch.setattr(streamlit, "fragment", recording)
    return calls


def _panel_timer(calls: list) -> object:
    (timer,) = [every for name, every in calls if name == "queue_panel"]
    return timer


def test_the_queue_panel_does_not_refresh_itself_with_nothing_queued(app_env) -> None:
    from app_fixtures import app_at

    at = app_at("pages/experiments.py")
    assert not at.exception
    assert "Nothing queued" in at.markdown[-1].value
    assert _panel_timer(app_env) is None


def test_the_queue_panel_refreshes_while_a_run_of_the_workspace_waits(app_env) -> None:
    import streamlit
    from app_fixtures import app_at

    _queue(RunStore(), "elsewhere", 2)  # another workspace's runs: no timer here
    at = app_at("pages/experiments.py", workspace="team-a")
    assert _panel_timer(app_env) is None
    app_env.clear()
    _queue(RunStore(), "team-a", 1)
    streamlit.cache_data.clear()  # as if the shared cache's second had passed
    at = app_at("pages/experiments.py", workspace="team-a")
    assert not at.exception
    assert _panel_timer(app_env) == 2
    waiting = [m.value for m in at.markdown if "queued, position" in m.value]
    assert len(waiting) == 1 and "position 2" in waiting[0]  # one of elsewhere's goes first


def test_the_experiments_page_never_hashes_a_data_set(app_env, monkeypatch) -> None:
    from app_fixtures import app_at

    import tl_core.data.folder as folder

    def refuse(*args, **kwargs):
        raise AssertionError("the page hashed a data set")

    monkeypatch.setattr(folder, "content_hash", refuse)
    at = app_at("pages/experiments.py")
    assert not at.exception
    assert len(at.dataframe) >= 1  # the preview, from the split's sizes


def test_recipe_queue_records_every_stage_in_the_workspace(capsys) -> None:
    out = _cli(capsys, "recipe", "classroom_quick", "--queue", "--workspace", "a", "--json")
    runs = out["runs"]
    assert out["launch_id"] and len(runs) == 2
    assert {r["workspace"] for r in runs} == {"a"} and {r["status"] for r in runs} == {"queued"}
    assert sorted(r["position"] for r in runs) == [1, 2]
    assert all(r["data"] == "a--shapes" for r in runs)  # the workspace's own shapes set
    assert {r["id"] for r in RunStore().list(workspace="a")} == {r["run_id"] for r in runs}


def test_a_later_recipe_stage_waits_for_its_group_in_view_and_claim() -> None:
    store = RunStore()
    run = NewRun(data_path="/nowhere", backbone="small_cnn", strategy="scratch",
                 config={"train": {"epochs": 1}}, workspace="a")  # fmt: skip
    first = store.create_group([run, run], group_id="L-s0")
    later = store.create_group([run], group_id="L-s1", depends_on="L-s0")
    (other,) = _queue(store, "b", 1)
    view = sorted(schedule.queue_view(store), key=lambda r: r["position"])
    assert [r["id"] for r in view] == [first[0], other, first[1], *later]
    claimed = []
    while (got := store.claim_next()) is not None:
        claimed.append(got["id"])
        store.finish(got["id"], "done")
    assert claimed == [r["id"] for r in view]
