"""Bulk actions with consent: before one click queues more than `CONFIRM_ABOVE` runs (a
recipe, a comparison with many seeds), the page says how many runs and about how long they
train in all, and queues them only after a second click.

`total_estimate` and `describe` are plain functions; `confirmed` is the page-side step that
the Experiments and Learn pages share (it is the one place here that imports Streamlit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tl_core.errors import LabError

CONFIRM_ABOVE = 8  # runs one click may queue without asking again


def total_estimate(
    specs: Sequence, store=None, sizes: Callable[[object], tuple[int, int]] | None = None
) -> float | None:
    """The estimated training time of all `specs`, in seconds (`schedule.estimate_seconds` per
    run); None when a run's data cannot be read yet. `sizes(spec)` gives (training,
    validation) images; by default each data set is scanned once."""
    from tl_core.data.folder import scan_dataset
    from tl_core.schedule import estimate_seconds

    seen: dict[tuple, tuple[int, int]] = {}

    def scanned(spec) -> tuple[int, int]:
        key = (str(spec.data), spec.val_fraction, spec.split_seed, spec.per_class)
        if key not in seen:
            split = scan_dataset(
                spec.data,
                val_fraction=spec.val_fraction,
                seed=spec.split_seed,
                per_class=spec.per_class,
                hash_content=False,  # counts only: never hash pictures on a page
            )
            seen[key] = (len(split.train), len(split.val))
        return seen[key]

    total = 0.0
    try:
        for spec in specs:
            n_train, n_val = (sizes or scanned)(spec)
            total += estimate_seconds(spec, n_train, n_val, store).seconds
    except LabError:
        return None
    return total


def describe(runs: int, seconds: float | None) -> str:
    from tl_core.fmt import format_duration

    time = (
        "the total time is not known yet"
        if seconds is None
        else f"about {format_duration(seconds)} of training in all"
    )
    return (
        f"This queues {runs} runs, {time}. The worker trains one run at a time, so other "
        "workspaces' runs wait between them. Queue them all?"
    )


def confirmed(key: str, clicked: bool, runs: int, estimate: Callable[[], float | None]) -> bool:
    """Whether the page may queue `runs` runs now.

    True at once for a click that queues at most `CONFIRM_ABOVE` runs. A click that queues
    more shows the count and `estimate()` (computed once per click) with a "Yes" button
    (`{key}_yes`) and a "No" button (`{key}_no`), and returns True on the run where "Yes" is
    clicked. Call it on every run of the page while it asks (see `pending`).
    """
    import streamlit as st

    state = st.session_state
    asking = f"{key}_asking"
    if runs <= CONFIRM_ABOVE:
        state.pop(asking, None)
        return clicked
    if clicked or (asking in state and state[asking]["runs"] != runs):
        try:
            seconds = estimate()
        except LabError:
            seconds = None
        state[asking] = {"runs": runs, "seconds": seconds}
    if asking not in state:
        return False
    slot = st.empty()
    with slot.container(border=True):
        st.warning(describe(runs, state[asking]["seconds"]), icon=":material/pending_actions:")
        yes_col, no_col = st.columns(2)
        yes = yes_col.button(f"Yes, queue {runs} runs", key=f"{key}_yes", type="primary")
        no = no_col.button("No", key=f"{key}_no")
    if yes or no:  # answered: the question goes away
        del state[asking]
        slot.empty()
    return yes


def pending(key: str) -> bool:
    """Whether `confirmed(key, ...)` is waiting for its second click."""
    import streamlit as st

    return f"{key}_asking" in st.session_state
