"""Bulk actions on the pages: more than 8 runs from one click ask first (with the count and
the estimated total time), and a comparison's queued runs cancel with one button."""

from __future__ import annotations

from dataclasses import replace

import test_app_experiments
from app_fixtures import app_at, small_specs

from tl_core.jobs import queue_runs
from tl_core.recipes import CLASSROOM
from tl_core.recipes.classroom import HEAD, lesson_stages
from tl_core.runs import RunStore

# The Experiments page's fixtures: no background worker (autouse), the stripes set imported.
no_worker = test_app_experiments.no_worker
stripes_set = test_app_experiments.stripes_set


def comparison_page(seeds: int):
    at = app_at("pages/experiments.py")
    at.selectbox(key="exp_backbone").set_value("small_cnn").run()
    at.multiselect(key="exp_strategies").set_value(["scratch"]).run()
    at.number_input(key="exp_epochs").set_value(1).run()
    at.number_input(key="exp_seeds").set_value(seeds).run()
    return at


def consent_text(at) -> str:
    return " ".join(w.value for w in at.warning if "This queues" in w.value)


def test_more_than_8_runs_ask_for_consent_with_count_and_time(stripes_set):
    at = comparison_page(seeds=9)
    at.button(key="exp_start").click().run()
    assert not at.exception
    assert RunStore().list() == []  # nothing queued on the first click
    text = consent_text(at)
    assert "This queues 9 runs, about " in text and "of training in all" in text
    assert at.button(key="exp_start_yes").label == "Yes, queue 9 runs"
    at.button(key="exp_start_no").click().run()  # changed their mind
    assert not at.exception
    assert RunStore().list() == [] and not consent_text(at)
    at.button(key="exp_start").click().run()
    at.button(key="exp_start_yes").click().run()
    assert not at.exception
    assert "Queued 9 run(s)" in at.success[0].value
    assert len(RunStore().queue()) == 9
    assert not consent_text(at)


def test_8_runs_queue_at_once(stripes_set):
    at = comparison_page(seeds=8)
    at.button(key="exp_start").click().run()
    assert not at.exception
    assert not consent_text(at)
    assert len(RunStore().queue()) == 8


def test_a_learn_experiment_of_more_than_8_runs_asks_first(monkeypatch):
    def nine_momenta(ctx):
        train = [replace(HEAD, epochs=1, momentum=k / 10) for k in range(9)]
        return lesson_stages(
            ctx, *((f"m{k}", "feature_extractor", {"train": t}) for k, t in enumerate(train))
        )

    big = replace(CLASSROOM["momentum"], title="Nine momenta", planner=nine_momenta)
    monkeypatch.setitem(CLASSROOM, "momentum", big)
    at = app_at("pages/learn.py")
    at.button(key="learn_run_momentum").click().run()
    assert not at.exception
    assert "This queues 9 runs, about " in consent_text(at)
    assert RunStore().list() == []
    at.button(key="learn_run_momentum_yes").click().run()
    assert not at.exception
    assert len(RunStore().queue()) == 9


def test_cancel_all_runs_of_a_comparison_from_the_queue(stripes_set):
    store = RunStore()
    mine = queue_runs(store, small_specs("stripes", seeds=3))
    other = queue_runs(store, small_specs("stripes", seeds=2))
    single = queue_runs(store, small_specs("stripes", seeds=1))
    at = app_at("pages/experiments.py")
    assert not at.exception
    group = store.get(mine[0])["group_id"]
    button = at.button(key=f"cancel_group_{group}")
    assert button.label == "Cancel all 3 queued/running runs of this comparison"
    assert not [b for b in at.button if b.key == f"cancel_group_{store.get(single[0])['group_id']}"]
    button.click().run()
    assert not at.exception
    assert [store.get(i)["status"] for i in mine] == ["cancelled"] * 3
    assert [store.get(i)["status"] for i in other + single] == ["queued"] * 3
    assert not [b for b in at.button if b.key == f"cancel_group_{group}"]
