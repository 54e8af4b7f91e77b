"""Learn: the ideas behind the strategies, each with a one-click experiment that shows it."""

from __future__ import annotations

import uuid

import streamlit as st

from tl_core import charts, consent
from tl_core.app_entry import run_under_app
from tl_core.errors import LabError
from tl_core.escape import markdown as md
from tl_core.fmt import format_duration
from tl_core.recipes import CLASSROOM, plan, prepare_data, queue_recipe
from tl_core.recipes.classroom import lesson_seconds
from tl_core.runs import RunStore
from tl_core.store_repair import home_problem
from tl_core.worker import ensure_worker

run_under_app()  # a page opened by its URL on a fresh server runs through app.py

if problem := home_problem():  # a lab home that cannot be written: one clear message
    st.error(md(problem), icon=":material/folder_off:")
    st.stop()

ws = st.session_state.get("workspace", "")
st.session_state.setdefault("learn_request", str(uuid.uuid4()))

IDEAS = [
    (
        "Fixed feature extractor, fine-tuning, and the in-between",
        """A network trained on ImageNet has learned, layer by layer, to see edges, then
textures, then parts of objects. Its last layer only turns those features into ImageNet's
1000 classes. **Transfer learning** keeps what it learned and replaces that last layer with
a new *head* for your classes.

- **Fixed feature extractor**: freeze everything, train only the new head. Fast (the
  features can be computed once) and hard to overfit, but the features stay ImageNet's.
- **Fine-tuning**: start from the ImageNet weights and let every layer keep learning, with a
  small learning rate. Slower, needs more pictures, adapts further.
- **Partial fine-tuning** is the in-between: the last few layer groups (the most
  ImageNet-specific ones) train, the early ones stay frozen.""",
        "strategies",
        ("feature_extractor", "partial_finetune", "full_finetune"),
    ),
    (
        "Fine-tuning well: probe first, then fine-tune",
        """Fine-tuning starts with a new head of random weights. In the first steps its
large, random errors flow back into the pretrained layers and scramble features that were
good, before the head has learned anything. **Probe, then fine-tune** (`probe_finetune`,
"LP-FT") avoids that: first train only the head on the frozen features (a *linear probe*,
seconds here, since the features are computed once), then let every layer learn, starting
from that head, with the pretrained layers at a smaller learning rate than the head
(*Backbone lr ×*, e.g. 0.1, on the Experiments page). Other settings there help fine-tuning
on small data too: keep *BatchNorm statistics* frozen when batches are small, warm the
learning rate up (*Warm-up epochs*), let it decay (*Learning-rate schedule*: cosine or
onecycle), and pick it with *Find a learning rate*.""",
        "probe_finetune",
        ("full_finetune", "probe_finetune"),
    ),
    (
        "Why small data sets need transfer",
        """A network with millions of weights, trained from random numbers (**scratch**) on a
few dozen pictures, can memorise them but learns little that carries over to new ones.
Pretrained features already separate most everyday things, so a small head on top of them
needs only a few examples per class.""",
        "small_data",
        ("scratch", "feature_extractor"),
    ),
    (
        "Augmentation",
        """Each epoch, random crops and flips show the network a slightly different version
of every picture. It cannot memorise exact pixels, so it learns what stays the same: the
shape, not where it sits. Validation pictures are never augmented.""",
        "augmentation",
        (),
    ),
    (
        "SGD, mini-batches and momentum",
        """Training nudges every weight against the gradient of the loss, measured on a
**mini-batch** of pictures at a time (stochastic gradient descent): small batches give
noisy, cheap steps; large ones smoother, costlier steps. **Momentum** keeps a running
average of past steps, so the descent rolls through small bumps and speeds up along
consistent directions (0.9 is the classic value).""",
        "momentum",
        (),
    ),
]

st.title("Learn")
for n, (title, text, lesson_name, strategies) in enumerate(IDEAS):
    st.header(title)
    st.markdown(text)
    lesson = CLASSROOM[lesson_name]
    lesson_plan = plan(lesson_name, workspace=ws)
    if strategies:  # the layers of the network the lesson trains, as its runs set them
        cols = st.columns(len(strategies))
        for col, strategy in zip(cols, strategies, strict=True):
            spec = next(s for s in lesson_plan.specs if s.strategy == strategy)
            col.plotly_chart(
                charts.strategy_diagram(spec.backbone, strategy, spec.trainable_blocks),
                key=f"learn_{n}_{strategy}",
            )
    st.caption(f"Experiment: {lesson.description}")
    seconds = lesson_seconds(lesson_plan, RunStore())
    took = "" if seconds is None else f" (about {format_duration(seconds)} of training)"
    clicked = st.button(f"Run it: {lesson.title}{took}", key=f"learn_run_{lesson_name}")

    def total(p=lesson_plan) -> float | None:
        prepare_data(p)  # the workspace's shapes set (built once), to count its images
        return consent.total_estimate(p.specs, RunStore())

    if consent.confirmed(f"learn_run_{lesson_name}", clicked, len(lesson_plan.specs), total):
        try:
            queue_recipe(
                RunStore(), lesson_name, workspace=ws, request_id=st.session_state["learn_request"]
            )
        except LabError as exc:
            st.error(md(exc))
        else:
            st.session_state["learn_request"] = str(uuid.uuid4())
            ensure_worker()
            st.switch_page("pages/experiments.py")
    st.divider()
