"""Groups that wait for another group in the run store (a recipe's later stages)."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from tl_core.run_schema import MIGRATIONS
from tl_core.runs import NewRun, RunStore


def _new(name: str, init_from: str | None = None) -> NewRun:
    config = {"train": {"epochs": 1}, "init_from": init_from}
    return NewRun(
        data_path="/data/set", backbone="small_cnn", strategy="scratch", config=config, name=name
    )


def _two_stages(store: RunStore) -> tuple[list[str], list[str]]:
    a = store.create_group([_new("A")], group_id="L-s0")
    b = store.create_group(
        [_new("B scratch"), _new("B from A", init_from="@L-s0")], group_id="L-s1", depends_on="L-s0"
    )
    return a, b


def test_a_group_waits_for_its_dependency_and_starts_from_its_first_run(lab_home) -> None:
    store = RunStore()
    (a,), b = _two_stages(store)
    assert store.get(b[0])["depends_on"] == "L-s0"
    assert store.claim_next()["id"] == a
    assert store.claim_next() is None  # A is running, not done: B waits
    store.finish(a, "done")
    first, second = store.claim_next(), store.claim_next()
    assert [first["id"], second["id"]] == b
    assert (first["config"]["init_from"], second["config"]["init_from"]) == (None, a)
    assert store.get(b[1])["config"]["init_from"] == a  # resolved in the store, not a copy
    assert store.claim_next() is None


def test_claim_next_can_keep_to_some_groups(lab_home) -> None:
    store = RunStore()
    other = store.create_group([_new("other")], group_id="other")
    (a,), _ = _two_stages(store)
    assert store.claim_next(groups=["L-s0", "L-s1"])["id"] == a
    assert store.claim_next(groups=["L-s0", "L-s1"]) is None
    assert store.claim_next()["id"] == other[0]


@pytest.mark.parametrize("outcome", ["failed", "cancelled"])
def test_waiting_runs_fail_with_the_reason_when_their_dependency_did_not_finish(
    lab_home, outcome: str
) -> None:
    store = RunStore()
    (a,), b = _two_stages(store)
    if outcome == "cancelled":
        assert store.request_cancel(a) == "cancelled"
    else:
        store.claim_next()
        store.finish(a, "failed", error="out of disk")
    assert store.claim_next() is None
    for run_id in b:
        run = store.get(run_id)
        assert run["status"] == "failed" and run["finished"]
        assert f"run {a} {outcome}" in run["error"] and "L-s0" in run["error"]


def test_an_older_store_gains_the_dependency_column(lab_home) -> None:
    lab_home.mkdir(parents=True)
    with closing(sqlite3.connect(lab_home / "runs.sqlite")) as conn:
        conn.executescript(MIGRATIONS[0])
        conn.execute("PRAGMA user_version = 1")
    store = RunStore()
    (a,), b = _two_stages(store)
    assert store.get(a)["depends_on"] is None and store.get(b[0])["depends_on"] == "L-s0"
