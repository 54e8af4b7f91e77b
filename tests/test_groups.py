"""Cancelling a group as a whole: a comparison, a recipe launch (its waiting stages
included), several run ids at once; through the library and `python -m tl_core cancel`."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from app_fixtures import small_specs

from tl_core import groups, recipes
from tl_core.cli import main
from tl_core.errors import LabError
from tl_core.jobs import queue_runs
from tl_core.recipes import Plan, Stage
from tl_core.runs import RunStore


def statuses(store: RunStore, ids) -> list[str]:
    return [store.get(i)["status"] for i in ids]


def two_stage_plan(data) -> Plan:
    specs = [replace(s, recipe="data-efficiency") for s in small_specs(data, seeds=2)]
    return Plan(
        recipe="data-efficiency",
        title="two stages",
        offline=True,
        data=str(data),
        stages=(Stage("first", tuple(specs)), Stage("second", tuple(specs))),
    )


def last_json(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


def test_cancel_group_stops_one_comparison_and_no_other(stripes):
    store = RunStore()
    mine = queue_runs(store, small_specs(stripes, seeds=3))
    other = queue_runs(store, small_specs(stripes, seeds=2))
    running = store.claim_next()  # the first of `mine` is training
    assert running["id"] == mine[0]
    rows = groups.cancel_group(store, store.get(mine[0])["group_id"])
    assert rows == [
        {"run_id": mine[0], "status": "running"},  # asked to stop after its current batch
        {"run_id": mine[1], "status": "cancelled"},
        {"run_id": mine[2], "status": "cancelled"},
    ]
    assert store.cancel_requested(mine[0])
    assert statuses(store, other) == ["queued", "queued"]
    with pytest.raises(LabError, match="no group or recipe launch 'gnope'"):
        groups.cancel_group(store, "gnope")


def test_cancel_group_stops_a_recipe_launch_and_its_later_stages(stripes):
    store = RunStore()
    launch = recipes.start_recipe(store, two_stage_plan(stripes), launch_id="rtwo")
    first, second = recipes.launch_status(store, launch).run_ids
    assert groups.group_key(store.get(first[0])) == launch
    # The stage's own group id stands for the whole launch, the waiting stage included.
    rows = groups.cancel_group(store, store.get(first[0])["group_id"])
    assert [r["run_id"] for r in rows] == first + second
    assert statuses(store, first + second) == ["cancelled"] * 4
    assert recipes.launch_status(store, launch).status == "cancelled"
    assert store.claim_next() is None


def test_cancel_runs_checks_every_id_first(stripes):
    store = RunStore()
    ids = queue_runs(store, small_specs(stripes, seeds=2))
    with pytest.raises(LabError, match="no run with id 'nope'"):
        groups.cancel_runs(store, [ids[0], "nope"])
    assert statuses(store, ids) == ["queued", "queued"]  # nothing half done


def test_cancel_command_takes_several_ids_or_a_group(stripes, capsys):
    store = RunStore()
    a = queue_runs(store, small_specs(stripes, seeds=3))
    b = queue_runs(store, small_specs(stripes, seeds=2))
    assert main(["cancel", a[0], "--json"]) == 0  # one id: the object it always printed
    assert last_json(capsys.readouterr().out) == {"run_id": a[0], "status": "cancelled"}
    assert main(["cancel", a[1], b[0], "--json"]) == 0
    assert last_json(capsys.readouterr().out) == [
        {"run_id": a[1], "status": "cancelled"},
        {"run_id": b[0], "status": "cancelled"},
    ]
    assert main(["cancel", "--group", store.get(a[2])["group_id"]]) == 0
    assert f"run {a[2]}: cancelled" in capsys.readouterr().out
    assert statuses(store, [*a, *b]) == ["cancelled"] * 4 + ["queued"]
    launch = recipes.start_recipe(store, two_stage_plan(stripes), launch_id="rcli")
    assert main(["cancel", "--group", launch, "--json"]) == 0
    assert {r["status"] for r in last_json(capsys.readouterr().out)} == {"cancelled"}
    assert recipes.launch_status(store, launch).status == "cancelled"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["cancel"], "give run ids or --group"),
        (["cancel", "x", "--group", "g"], "give run ids or --group"),
        (["cancel", "--group", "gnope"], "no group or recipe launch 'gnope'"),
        (["cancel", "nope", "nope2"], "no run with id 'nope'"),
    ],
)
def test_cancel_command_bad_input_is_one_line(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err


def test_simultaneous_recipe_launches_queue_all_their_stages_or_nothing(stripes, monkeypatch):
    """Two launches of a two-stage plan (4 runs each) against a limit of 6: the limit is
    checked in the one write that records every stage, so one launch is queued whole and
    the other is refused whole (no stage of it left behind), whatever the interleaving."""
    import threading

    from tl_core import jobs
    from tl_core.workspaces import room_check

    monkeypatch.setenv("TL_LAB_MAX_QUEUED", "6")
    barrier = threading.Barrier(2, timeout=30)
    scan = jobs.scan_dataset
    monkeypatch.setattr(jobs, "scan_dataset", lambda *a, **k: (scan(*a, **k), barrier.wait())[0])
    RunStore()  # the lab's store exists before anyone clicks
    launched, refused = [], []

    def click(launch_id: str) -> None:
        try:
            plan = two_stage_plan(stripes)
            launched.append(
                recipes.start_recipe(
                    RunStore(),
                    plan,
                    launch_id=launch_id,
                    workspace="team",
                    check=room_check("team"),
                )
            )
        except LabError as exc:
            refused.append(str(exc))
        finally:
            barrier.abort()  # no click waits after this one: one refused early fails at once

    threads = [threading.Thread(target=click, args=(f"r{k}",)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert len(launched) == 1 and len(refused) == 1
    assert "and 4 more would pass its limit of 6" in refused[0]
    queued = RunStore().queue("team")
    assert len(queued) == 4 and {r["group_id"] for r in queued} == {
        f"{launched[0]}-s0",
        f"{launched[0]}-s1",
    }
