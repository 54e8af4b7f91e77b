"""Experiments: choose what to train, see what it will cost, queue it, watch the queue."""

from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd
import streamlit as st

from tl_core import charts, consent, form_memory, groups, machine, recipes, workspaces
from tl_core.app_entry import run_under_app
from tl_core.data.folder import scan_dataset
from tl_core.data.store import dataset_path
from tl_core.errors import LabError
from tl_core.escape import markdown as md
from tl_core.fmt import format_duration
from tl_core.models import BACKBONES, STRATEGIES, build_model, count_params, get_backbone
from tl_core.runs import RunStore
from tl_core.schedule import estimate_seconds, queue_view, running_progress
from tl_core.spec import RunSpec, expand
from tl_core.store_repair import home_problem
from tl_core.strategies import CLASSIC, get_strategy
from tl_core.train import BN_MODES, OPTIMIZERS, SCHEDULES, TrainConfig
from tl_core.transforms import AUGMENTATIONS
from tl_core.worker import ensure_worker, worker_status

run_under_app()  # a page opened by its URL on a fresh server runs through app.py

if problem := home_problem():  # a lab home that cannot be written: one clear message
    st.error(md(problem), icon=":material/folder_off:")
    st.stop()

ws = st.session_state.get("workspace", "")
store = RunStore()


@st.cache_data(ttl=60, show_spinner=False)
def split_sizes(data: str, per_class: int | None) -> tuple[int, int, int]:
    split = scan_dataset(data, per_class=per_class, hash_content=False)  # never hash on a page
    return len(split.train), len(split.val), len(split.classes)


@st.cache_data(ttl=1, show_spinner=False)
def lab_queue(home: str) -> tuple[list[dict], dict]:
    """Every workspace's running and queued runs in worker order, and the worker's state:
    read once a second for all sessions together (plain data; pages filter it)."""
    return queue_view(RunStore(home)), worker_status(home)


@st.cache_data(ttl=2, show_spinner=False)
def latest_runs(home: str, workspace: str) -> list[dict]:
    """The runs of the workspace's latest comparison or recipe stage, shared by sessions."""
    group = RunStore(home).latest_group(workspace=workspace)
    return RunStore(home).list(group_id=group) if group else []


def queue_changed() -> None:
    """After this session queued or cancelled runs: read the store again on the next view."""
    lab_queue.clear()
    latest_runs.clear()


@st.cache_data(show_spinner=False)
def trainable(backbone: str, strategy: str, blocks: int, num_classes: int) -> tuple[int, int]:
    try:
        built = build_model(
            backbone, num_classes, strategy, trainable_blocks=blocks, load_weights=False
        )
    except LabError:
        return (-1, -1)
    return count_params(built.model)


@st.cache_data(ttl=600, show_spinner=False)
def online() -> bool:
    return machine.downloads_reachable()


EXAMPLE = "hymenoptera"  # the example photos a recipe can run on, built on the click (online)
NO_FASHION = (
    "needs Fashion-MNIST, which is not on this server: install Debian's package "
    "(`apt-get install dataset-fashion-mnist`), or run it when the server is online"
)


def recipes_panel() -> None:
    """Named experiments from `tl_core.recipes`, one click each, on this workspace's data."""
    offline = not online()
    with st.expander("One-click recipes: published experiments, reproduced here"):
        if offline:
            st.caption(
                "Offline: a backbone whose ImageNet weights would download is replaced by "
                "efficientnet_lite0 (its weights ship with the lab). Data sets are not "
                "downloaded: a recipe runs on a data set of this workspace, and the A-to-B "
                "recipes need Debian's dataset-fashion-mnist package."
            )
        for name, recipe in recipes.RECIPES.items():
            st.markdown(f"**{recipe.title}** — {recipe.description}")
            data, problem = recipe_data(name, offline) if recipe.takes_data else (None, None)
            if problem is None and dataset_ready(data):  # the example photos: planned once built
                problem = plan_problem(name, data, offline)
            if problem:
                st.caption(f":orange[Cannot run here: {problem}]")
            clicked = st.button(f"Queue {name}", key=f"recipe_{name}", disabled=bool(problem))
            if not problem and (clicked or consent.pending(f"recipe_{name}")):
                queue_recipe(name, data, offline, clicked)


def dataset_ready(data: str | None) -> bool:
    return data is None or dataset_path(data).is_dir()


def recipe_data(name: str, offline: bool) -> tuple[str | None, str | None]:
    """The data set of this workspace a recipe runs on (the example photos, online, are built
    on the click), or (None, why there is none)."""
    sets = [d.name for d in workspaces.list_datasets(ws)]
    example = workspaces.dataset_name(ws, EXAMPLE)
    choices = sets + ([example] if not offline and example not in sets else [])
    if not choices:
        return None, (
            "it needs a data set of this workspace; build or import one on the Data page "
            f"(the {EXAMPLE} example photos download when the server is online)"
        )

    def label(stored: str) -> str:
        short = workspaces.short_name(stored)
        return short if stored in sets else f"{short} (the example photos: downloaded first)"

    return st.selectbox("Its data set", choices, format_func=label, key=f"recipe_data_{name}"), None


def plan_problem(name: str, data: str | None, offline: bool) -> str | None:
    """Why the recipe cannot run here as chosen, said before the click."""
    from tl_core.data.builtin import fashion_mnist_folder

    try:
        plan = recipes.plan(name, data, offline=offline, workspace=ws)
    except LabError as exc:
        return str(exc)
    if offline and any(s.builtin == "fashion_mnist" for s in plan.prepare):
        return NO_FASHION if fashion_mnist_folder() is None else None
    return None


def queue_recipe(name: str, data: str | None, offline: bool, clicked: bool) -> None:
    """Prepare a recipe's data on the click; queue it then, or after consent (> 8 runs)."""
    from tl_core.data.builtin import build_builtin

    try:
        if clicked and not dataset_ready(data):  # the example photos, chosen to run on
            with st.spinner(f"Downloading the {EXAMPLE} photos…"):
                build_builtin(EXAMPLE, name=data)
        plan = recipes.plan(name, data, offline=offline, workspace=ws)
        if clicked:
            with st.spinner("Preparing its data…"):
                workspaces.check_room(store, ws, len(plan.specs))
                recipes.prepare_data(plan)
        total = lambda: consent.total_estimate(plan.specs, store)  # noqa: E731
        if not consent.confirmed(f"recipe_{name}", clicked, len(plan.specs), total):
            return
        click = workspaces.click_request_id(
            st.session_state, "recipe_last_click", [name, data, offline]
        )
        recipes.start_recipe(  # the limits again, after a wait, in the store's write
            store, plan, workspace=ws, launch_id=f"r{click[:12]}", check=workspaces.room_check(ws)
        )
    except LabError as exc:
        st.error(md(exc))
        return
    queue_changed()
    ensure_worker()
    where = f" on {workspaces.short_name(data)}" if data else ""
    st.success(f"Recipe {name} queued{where}; later stages wait for the one before.")


_D = TrainConfig()
_one_of, _number = form_memory.one_of, form_memory.number
# The form's remembered widgets (`tl_core.form_memory`): key -> (default, check of a value).
FORM = {
    "exp_backbone": ("efficientnet_lite0", _one_of(BACKBONES)),
    "exp_strategies": (
        list(CLASSIC),  # probe_finetune (fine-tuning from a probed head) joins by choice
        lambda v: isinstance(v, list) and all(s in STRATEGIES for s in v),
    ),
    "exp_epochs": (5, _number(1, 1000, 1)),
    "exp_batch": (16, _number(1, 4096, 1)),
    "exp_lr": (0.001, _number(1e-6, 10.0, 0.1)),
    "exp_momentum": (0.9, _number(0.0, 0.99, 0.1)),
    "exp_optimizer": (OPTIMIZERS[0], _one_of(OPTIMIZERS)),
    "exp_augment": (AUGMENTATIONS[0], _one_of(AUGMENTATIONS)),
    "exp_per_class": (0, _number(0, 100000, 1)),
    "exp_seeds": (1, _number(1, 10, 1)),
    "exp_schedule": (_D.schedule, _one_of(SCHEDULES)),
    "exp_backbone_lr_mult": (_D.backbone_lr_mult, _number(0.001, 1.0, 0.1)),
    "exp_bn": (BN_MODES[0], _one_of(BN_MODES)),
    "exp_warmup": (_D.warmup_epochs, _number(0, 100, 1)),
    "exp_probe_epochs": (_D.probe_epochs, _number(1, 1000, 1)),
    "exp_blocks": (1, _number(1, 100, 1)),
}


def fine_tuning_options() -> dict:
    """The fine-tuning settings (TrainConfig fields); their defaults are today's behaviour."""
    c = st.columns(4)
    return {
        "backbone_lr_mult": c[0].number_input(
            "Backbone lr × (pretrained layers)",
            0.001,
            1.0,
            format="%.3f",
            help="The pretrained layers learn at this fraction of the head's rate.",
            key="exp_backbone_lr_mult",
        ),
        "bn": c[1].selectbox(
            "BatchNorm statistics",
            BN_MODES,
            help="frozen: keep the pretrained running statistics (small batches).",
            key="exp_bn",
        ),
        "warmup_epochs": int(c[2].number_input("Warm-up epochs", 0, 100, key="exp_warmup")),
        "probe_epochs": int(
            c[3].number_input("Probe epochs (probe_finetune)", 1, 1000, key="exp_probe_epochs")
        ),
    }


def use_lr(value: float) -> None:
    st.session_state["exp_lr"] = value


def lr_finder_panel(specs: list[RunSpec]) -> None:
    """The learning-rate finder on one of the chosen strategies, its curve, and a button
    that puts its suggestion in the form."""
    from tl_core.lr_find import LRFindConfig, find_lr

    with st.expander("Find a learning rate"):
        st.caption(
            "Trains a fresh copy for up to 100 mini-batches while the rate rises from 1e-7 "
            "to 10, and plots the loss. Pick a rate where the loss still falls steeply."
        )
        by_strategy = {s.strategy: s for s in specs}
        strategy = st.selectbox("For strategy", list(by_strategy), key="lr_find_strategy")
        if st.button("Find a learning rate", key="lr_find_run", disabled=not by_strategy):
            try:
                with st.spinner("Sweeping the learning rate…"):
                    result = find_lr(by_strategy[strategy], LRFindConfig(num_iter=100))
            except LabError as exc:
                st.error(str(exc))
            else:
                st.session_state["lr_find_result"] = result
        result = st.session_state.get("lr_find_result")
        if result:
            st.plotly_chart(charts.lr_find_chart(result), key="lr_find_chart")
            suggested = result["suggested_lr"]
            st.caption(
                f"{result['strategy']} on {result['backbone']}: {len(result['lrs'])} batches, "
                f"stopped: {result['stopped']}."
            )
            if suggested:
                st.button(
                    f"Use {suggested:.2e} as the learning rate",
                    key="lr_find_apply",
                    on_click=use_lr,
                    args=(float(f"{suggested:.2e}"),),
                )


st.title("Experiments")
datasets = workspaces.list_datasets(ws)
if not datasets:
    st.info("No data set in this workspace yet: build one on the Data page first.")
    st.page_link("pages/data.py", label="Go to Data", icon=":material/photo_library:")
else:
    names = [d.name for d in datasets]
    fields = {**FORM, "exp_data": (None, _one_of(names))}
    form_memory.restore(st.session_state, ws, "experiments", fields)
    c1, c2 = st.columns(2)
    data = c1.selectbox("Data set", names, format_func=workspaces.short_name, key="exp_data")
    backbone = c2.selectbox(
        "Backbone",
        list(BACKBONES),
        format_func=lambda b: f"{b}: {BACKBONES[b].description}",
        key="exp_backbone",
    )
    strategies = st.multiselect(
        "Strategies (several make a comparison)",
        list(STRATEGIES),
        key="exp_strategies",
    )
    c = st.columns(4)
    epochs = c[0].number_input("Epochs", 1, 1000, key="exp_epochs")
    batch_size = c[1].number_input("Batch size", 1, 4096, key="exp_batch")
    lr = c[2].number_input("Learning rate", 1e-6, 10.0, format="%.4f", key="exp_lr")
    momentum = c[3].number_input("Momentum", 0.0, 0.99, key="exp_momentum")
    c = st.columns(4)
    optimizer = c[0].selectbox("Optimizer", OPTIMIZERS, key="exp_optimizer")
    augment = c[1].selectbox("Augmentation", AUGMENTATIONS, key="exp_augment")
    per_class = c[2].number_input("Images per class (0: all)", 0, 100000, key="exp_per_class")
    seeds = c[3].number_input("Seeds per strategy", 1, 10, key="exp_seeds")
    group_count = len(get_backbone(backbone).layer_groups)
    st.session_state["exp_blocks"] = min(st.session_state["exp_blocks"], group_count)
    with st.expander("More options"):
        c = st.columns(3)
        blocks = c[0].slider(
            "Layer groups that train (partial_finetune)", 1, group_count, key="exp_blocks"
        )
        schedule = c[1].selectbox("Learning-rate schedule", SCHEDULES, key="exp_schedule")
        finished = [r for r in store.list(status="done", workspace=ws) if r["backbone"] == backbone]
        init_from = c[2].selectbox(
            "Start from a previous run",
            [None, *[r["id"] for r in finished]],
            format_func=lambda i: (
                "ImageNet weights (or random for scratch)"
                if i is None
                else charts.run_label(next(r for r in finished if r["id"] == i))
            ),
            key="exp_init",
        )
        fine = fine_tuning_options()

    base = RunSpec(
        data=data,
        backbone=backbone,
        strategy=strategies[0] if strategies else "scratch",
        train=TrainConfig(
            epochs=int(epochs),
            batch_size=int(batch_size),
            lr=float(lr),
            momentum=float(momentum),
            optimizer=optimizer,
            schedule=schedule,
            **fine,
        ),
        augment=augment,
        per_class=int(per_class) or None,
        trainable_blocks=int(blocks),
        init_from=init_from,
    )
    specs, problems = [], []
    for spec in expand(base, strategies, int(seeds)) if strategies else []:
        if not get_strategy(spec.strategy).needs_pretrained:  # random weights, whatever chosen
            spec = replace(spec, init_from=None)
        try:
            specs.append(spec.validate())
        except LabError as exc:
            problems.append(f"{spec.strategy}: {exc}")
    for p in dict.fromkeys(problems):
        st.warning(p)
    lr_finder_panel(specs)
    form_memory.remember(st.session_state, ws, "experiments", fields)

    try:
        n_train, n_val, n_classes = split_sizes(data, int(per_class) or None)
    except LabError as exc:  # the library names the folder; the page names the data set
        st.error(md(str(exc).replace(str(dataset_path(data)), workspaces.short_name(data))))
        n_train = n_val = n_classes = 0
    if strategies and n_classes >= 2:
        st.subheader("Before you start")
        st.caption(f"{n_train} training and {n_val} validation images, {n_classes} classes.")
        rows = []
        for strategy in strategies:
            spec = next((s for s in specs if s.strategy == strategy), None)
            t, total = trainable(backbone, strategy, int(blocks), n_classes)
            est = estimate_seconds(spec, n_train, n_val, store) if spec else None
            rows.append(
                {
                    "strategy": strategy,
                    "trainable parameters": "needs a starting run" if t < 0 else f"{t:,}",
                    "of": "" if total < 0 else f"{total:,}",
                    "estimated time per run": "-" if est is None else format_duration(est.seconds),
                    "estimate from": "-" if est is None else est.basis,
                }
            )
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        cols = st.columns(len(strategies))
        for col, strategy in zip(cols, strategies, strict=True):
            col.plotly_chart(
                charts.strategy_diagram(backbone, strategy, int(blocks)),
                key=f"diagram_{strategy}",
            )
    clicked = st.button(
        f"Start {len(specs)} run(s)", type="primary", key="exp_start", disabled=not specs
    )
    sizes = lambda spec: (n_train, n_val)  # noqa: E731
    total = lambda: consent.total_estimate(specs, store, sizes)  # noqa: E731
    if consent.confirmed("exp_start", clicked, len(specs), total):
        try:
            request_id = workspaces.click_request_id(
                st.session_state, "exp_last_click", [s.to_dict() for s in specs]
            )
            ids = workspaces.queue_runs(store, specs, workspace=ws, request_id=request_id)
        except LabError as exc:
            st.error(md(exc))
        else:
            queue_changed()
            ensure_worker()
            st.success(f"Queued {len(ids)} run(s). They train in the background; watch them below.")

recipes_panel()


def cancel(run_id: str) -> None:
    store.request_cancel(run_id)
    queue_changed()


def cancel_all(group: str) -> None:
    try:
        groups.cancel_group(store, group)
    except LabError as exc:
        st.session_state["cancel_error"] = str(exc)
    queue_changed()


def workspace_queue() -> tuple[list[dict], dict]:
    view, worker = lab_queue(str(store.home))
    return [r for r in view if (r.get("workspace") or "") == ws], worker


def group_buttons(view: list[dict]) -> None:
    """One "Cancel all" button per comparison or recipe with several runs waiting."""
    if "cancel_error" in st.session_state:
        st.error(st.session_state.pop("cancel_error"))
    for key, members in groups.active_groups(view).items():
        if len(members) > 1:
            what = "recipe" if groups.recipe_launch(members[0]) else "comparison"
            st.button(
                f"Cancel all {len(members)} queued/running runs of this {what}",
                key=f"cancel_group_{key}",
                on_click=cancel_all,
                args=(key,),
            )


def queue_panel(refreshing: bool) -> None:
    """The workspace's queue; `refreshing`: this fragment reruns itself every 2 s (only
    while something is queued or running here)."""
    view, worker = workspace_queue()
    if refreshing and not view:  # all finished: the whole page once, then no timer
        st.rerun()
    st.subheader("Queue")
    if view and not worker["running"]:
        ensure_worker()
        st.caption("Starting the background worker…")
    elif worker["running"]:
        st.caption(f"Background worker running (pid {worker.get('pid', '?')}).")
    if not view:
        st.write("Nothing queued or running in this workspace.")
    group_buttons(view)
    now = time.time()
    for run in view:
        with st.container(border=True, key=f"queued_{run['id']}"):
            left, right = st.columns([5, 1])
            label = md(charts.run_label(run))
            if run["status"] == "running":
                frac, text = running_progress(run)
                left.markdown(f"**{label}** — running")
                left.progress(frac, text=text)
                if run.get("cancel_requested"):
                    left.caption("Cancel requested; it stops after the current batch.")
            else:
                wait = max(0.0, run["expected_start"] - now)
                left.markdown(
                    f"**{label}** — queued, position {run['position']}, expected to start "
                    f"in {format_duration(wait)} (takes about {format_duration(run['estimate'])})"
                )
            right.button("Cancel", key=f"cancel_{run['id']}", on_click=cancel, args=(run["id"],))
    runs = latest_runs(str(store.home), ws)
    if runs:
        finished = [r for r in runs if r["status"] in ("done", "failed", "cancelled")]
        if finished:
            st.subheader("Latest comparison")
            table = charts.summary_table(sorted(runs, key=lambda r: r["created"]))
            st.dataframe(
                table, hide_index=True, width="stretch", column_order=charts.PAGE_COLUMNS
            )  # display-ready text
            for r in finished:
                if r["status"] == "failed":
                    reason = ((r.get("error") or "").splitlines() or [""])[0]
                    st.error(f"{md(charts.run_label(r))} failed: {md(reason)}")
            if len(finished) == len(runs):
                st.page_link(
                    "pages/results.py", label="See the results", icon=":material/monitoring:"
                )


active = bool(workspace_queue()[0])
st.fragment(queue_panel, run_every=2 if active else None)(active)
