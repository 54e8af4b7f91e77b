"""Isolation between workspaces: names that map one-to-one onto stored data set names, data
set names that never resolve against the working directory, the Server folder import off by
default and fenced by TL_LAB_IMPORT_ROOT, and the lab-wide queue limit."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from app_fixtures import app_at, small_specs

from tl_core import workspaces
from tl_core.data.folder import resolve_dataset, scan_dataset
from tl_core.data.sources import import_folder
from tl_core.data.store import list_datasets
from tl_core.errors import LabError
from tl_core.paths import datasets_dir
from tl_core.runs import RunStore

REPO = Path(__file__).resolve().parent.parent


def _words(alphabet: str, max_len: int, min_len: int = 0):
    for n in range(min_len, max_len + 1):
        for chars in itertools.product(alphabet, repeat=n):
            yield "".join(chars)


def _valid(check, name: str) -> bool:
    try:
        check(name)
    except LabError:
        return False
    return True


@pytest.mark.parametrize("bad", ["team-", "-team", "a--b", "a__b", "a-_b", "_a", "a_", "a" * 33])
def test_workspace_names_with_edge_or_doubled_separators_are_refused(bad):
    with pytest.raises(LabError, match="invalid workspace name"):
        workspaces.check_workspace(bad)


@pytest.mark.parametrize("good", ["", "team", "team-a", "lab_2", "a-b_c", "TEAM-A "])
def test_workspace_names_that_are_words_joined_by_one_separator_pass(good):
    assert workspaces.check_workspace(good) == good.strip().lower()


def test_the_mapping_to_stored_names_is_one_to_one():
    """Exhaustive over a small alphabet: every accepted (workspace, name) pair has its own
    stored name, and the stored name gives the pair back."""
    spaces = [w for w in _words("a-_", 4) if _valid(workspaces.check_workspace, w)]
    spaces = [w for w in spaces if workspaces.check_workspace(w) == w]
    shorts = [s for s in _words("aA-._", 4, 1) if _valid(workspaces.check_short_name, s)]
    assert {"", "a", "a-a", "a_a"} <= set(spaces) and "a-" not in spaces
    assert {"a", "a-", "a.a", "A_a"} <= set(shorts) and "a--a" not in shorts
    seen: dict[str, tuple[str, str]] = {}
    for workspace, short in itertools.product(spaces, shorts):
        stored = workspaces.dataset_name(workspace, short)
        assert stored not in seen, f"{(workspace, short)} and {seen[stored]} share {stored!r}"
        seen[stored] = (workspace, short)
        assert workspaces.split_stored(stored) == (workspace, short)
        assert workspaces.in_workspace(stored, workspace)
        assert workspaces.short_name(stored) == short
    # And from the other side: any stored string gives back at most the one pair that made it.
    for stored in _words("a-", 7, 1):
        pair = workspaces.split_stored(stored)
        if pair is not None:
            assert workspaces.dataset_name(*pair) == stored


def test_team_dash_cannot_take_the_data_of_team(stripes):
    """The collision of the issue: `team-` stored `secret` as `team---secret`, which `team`
    then listed (and trained on) as `-secret`."""
    with pytest.raises(LabError, match="invalid workspace name 'team-'"):
        workspaces.dataset_name("team-", "secret")
    # A folder with that name left by an older version belongs to no workspace.
    import_folder(stripes, "team---secret")
    import_folder(stripes, workspaces.dataset_name("team", "mine"))
    assert [d.name for d in workspaces.list_datasets("team")] == ["team--mine"]
    assert workspaces.list_datasets("") == []
    assert not any(workspaces.in_workspace("team---secret", w) for w in ("", "team", "team-"))
    assert {d.name for d in list_datasets()} == {"team---secret", "team--mine"}  # kept on disk


def test_a_long_name_in_a_workspace_is_refused_with_its_room():
    with pytest.raises(LabError, match="at most 56 characters"):
        workspaces.dataset_name("team-a", "x" * 60)


# ---------------------------------------------------------------- names are not paths


def test_a_name_never_resolves_to_a_folder_of_the_working_directory(monkeypatch):
    monkeypatch.chdir(REPO)
    assert (REPO / "tests").is_dir()
    with pytest.raises(LabError, match=r"no data set named 'tests'.*\./tests"):
        resolve_dataset("tests")
    with pytest.raises(LabError, match="no data set named 'tests'"):
        scan_dataset("tests")
    assert resolve_dataset("./tests") == REPO / "tests"  # a path, given as a path


def test_a_name_is_a_data_set_of_the_lab_home_even_beside_a_same_named_folder(
    stripes, tmp_path, monkeypatch
):
    import_folder(stripes, "photos")
    (tmp_path / "cwd" / "photos" / "other").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    assert resolve_dataset("photos") == datasets_dir() / "photos"
    assert resolve_dataset("./photos") == tmp_path / "cwd" / "photos"
    assert resolve_dataset(stripes) == stripes.resolve()  # a Path is a path


# ---------------------------------------------------------------- server folders


@pytest.fixture
def no_folder_settings(monkeypatch):
    for name in ("TL_LAB_SERVER_FOLDERS", "TL_LAB_IMPORT_ROOT", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TL_LAB_NO_WORKER", "1")


def test_server_folders_are_off_unless_turned_on(no_folder_settings, monkeypatch, stripes):
    assert not workspaces.server_folders_allowed()
    with pytest.raises(LabError, match="TL_LAB_SERVER_FOLDERS=1"):
        workspaces.check_server_folder(stripes)
    monkeypatch.setenv("TL_LAB_SERVER_FOLDERS", "0")
    assert not workspaces.server_folders_allowed()
    monkeypatch.setenv("TL_LAB_SERVER_FOLDERS", "1")
    assert workspaces.check_server_folder(stripes) == stripes.resolve()
    import_folder(stripes, workspaces.dataset_name("other-team", "secret"))
    for theirs in (datasets_dir() / "other-team--secret", datasets_dir(), datasets_dir().parent):
        with pytest.raises(LabError, match="the lab's own data"):
            workspaces.check_server_folder(theirs)


def test_the_import_root_fences_server_folders(no_folder_settings, monkeypatch, tmp_path):
    root = tmp_path / "class-data"
    (root / "set-a").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv("TL_LAB_SERVER_FOLDERS", "1")
    monkeypatch.setenv("TL_LAB_IMPORT_ROOT", str(root))
    assert workspaces.check_server_folder(root / "set-a") == (root / "set-a").resolve()
    for escape in (outside, root / "set-a" / ".." / ".." / "secret", root / "escape"):
        with pytest.raises(LabError, match="outside the folder this server imports from"):
            workspaces.check_server_folder(escape)


def test_the_data_page_server_folder_tab(no_folder_settings, monkeypatch, tmp_path, stripes):
    at = app_at("pages/data.py")
    assert not at.exception
    assert any("turned off" in i.value for i in at.info)
    assert not [t for t in at.text_input if t.key == "data_folder"]

    monkeypatch.setenv("TL_LAB_SERVER_FOLDERS", "1")
    monkeypatch.setenv("TL_LAB_IMPORT_ROOT", str(tmp_path / "class-data"))
    (tmp_path / "class-data").mkdir()
    at = app_at("pages/data.py")
    at.text_input(key="data_new_name").input("fenced")
    at.text_input(key="data_folder").input(str(stripes)).run()
    at.button(key="data_folder_go").click().run()
    assert not at.exception
    assert "outside the folder this server imports from" in at.error[0].value
    assert list_datasets() == []

    inside = tmp_path / "class-data" / "stripes"
    stripes.rename(inside)
    at.text_input(key="data_folder").input(str(inside)).run()
    at.button(key="data_folder_go").click().run()
    assert not at.exception
    assert "32 picture(s) added" in at.success[0].value
    assert [d.name for d in list_datasets()] == ["fenced"]


# ---------------------------------------------------------------- the lab-wide queue limit


def test_made_up_workspaces_cannot_pass_the_lab_wide_limit(stripes, monkeypatch):
    monkeypatch.setenv("TL_LAB_MAX_QUEUED", "2")
    monkeypatch.setenv("TL_LAB_MAX_QUEUED_TOTAL", "3")
    store = RunStore()
    workspaces.queue_runs(store, small_specs(stripes, seeds=2), workspace="a")
    with pytest.raises(LabError, match="limit of 2"):  # the workspace's own limit
        workspaces.queue_runs(store, small_specs(stripes, seeds=1), workspace="a")
    workspaces.queue_runs(store, small_specs(stripes, seeds=1), workspace="b")
    with pytest.raises(
        LabError, match=r"3 run\(s\) queued or running in all workspaces.*limit of 3"
    ):
        workspaces.queue_runs(store, small_specs(stripes, seeds=1), workspace="made-up")
    assert len(store.queue()) == 3
    store.request_cancel(store.queue()[0]["id"])  # room again once one leaves the queue
    workspaces.queue_runs(store, small_specs(stripes, seeds=1), workspace="made-up")


def test_the_lab_wide_limit_defaults_to_200(monkeypatch):
    monkeypatch.delenv("TL_LAB_MAX_QUEUED_TOTAL", raising=False)
    assert workspaces.max_queued_total() == 200
    monkeypatch.setenv("TL_LAB_MAX_QUEUED_TOTAL", "not a number")
    assert workspaces.max_queued_total() == 200


def test_a_repeated_click_at_the_limit_gets_its_runs_back_and_a_new_one_is_refused(
    stripes, monkeypatch
):
    """Request ids are de-duplicated once, by the run store; the queue limit does not count
    the runs of the request being repeated."""
    monkeypatch.setenv("TL_LAB_MAX_QUEUED", "2")
    store = RunStore()
    specs = small_specs(stripes, seeds=2)
    first = workspaces.queue_runs(store, specs, workspace="team", request_id="click-1")
    again = workspaces.queue_runs(store, specs, workspace="team", request_id="click-1")
    assert again == first and len(store.queue()) == 2
    with pytest.raises(LabError, match="limit of 2"):
        workspaces.queue_runs(store, specs, workspace="team", request_id="click-2")


# ---------------------------------------------------------------- simultaneous clicks


def _queue_at_once(stripes, monkeypatch, targets: list[str]) -> tuple[list, list]:
    """Each of len(targets) threads queues 2 runs in its workspace at the same moment: the
    data scan (before the store is written, after today's pre-check) waits until every
    thread has reached it, so no click has written its runs when the others check."""
    import threading

    from tl_core import jobs

    barrier = threading.Barrier(len(targets), timeout=30)
    scan = jobs.scan_dataset

    def scan_together(*args, **kwargs):
        out = scan(*args, **kwargs)
        barrier.wait()
        return out

    monkeypatch.setattr(jobs, "scan_dataset", scan_together)
    RunStore()  # the lab's store exists before anyone clicks (first opens may be 'busy')
    queued, refused = [], []

    def click(ws: str) -> None:
        try:
            queued.append(workspaces.queue_runs(RunStore(), small_specs(stripes, 2), workspace=ws))
        except LabError as exc:
            refused.append(str(exc))
        finally:
            barrier.abort()  # no click waits after this one: one refused early fails at once

    threads = [threading.Thread(target=click, args=(ws,)) for ws in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return queued, refused


def test_simultaneous_clicks_cannot_pass_the_workspace_limit(stripes, monkeypatch):
    """The limit is checked in the same write transaction that records the runs: three
    clicks of 2 runs against a limit of 3 queue one set and refuse two."""
    monkeypatch.setenv("TL_LAB_MAX_QUEUED", "3")
    queued, refused = _queue_at_once(stripes, monkeypatch, ["team"] * 3)
    assert len(RunStore().queue("team")) == 2 and len(queued) == 1
    assert len(refused) == 2
    assert all("more would pass its limit of 3; wait for some" in m for m in refused)


def test_simultaneous_clicks_cannot_pass_the_lab_wide_limit(stripes, monkeypatch):
    monkeypatch.setenv("TL_LAB_MAX_QUEUED_TOTAL", "3")
    queued, refused = _queue_at_once(stripes, monkeypatch, ["a", "b", "c"])
    assert len(RunStore().queue()) == 2 and len(queued) == 1
    assert len(refused) == 2
    assert all("in all workspaces, and 2 more would pass its limit of 3" in m for m in refused)
