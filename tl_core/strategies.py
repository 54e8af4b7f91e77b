"""The training strategies as data: one `Strategy` entry each, read by every consumer.

What trains, whether ImageNet (or another run's) weights are needed, which fast path the run
uses and how a run's cost compares with training the whole network. The CLI's choices, the
pages, the estimates, the recipes and the tests read `STRATEGIES`; adding a strategy is one
entry here plus its fast path (if any) in the run.
"""

from __future__ import annotations

from dataclasses import dataclass

from tl_core.errors import LabError


@dataclass(frozen=True)
class Strategy:
    """One way of training a backbone on a new data set."""

    name: str
    title: str  # a short label for charts and buttons
    trains: str  # what learns, in words
    needs_pretrained: bool  # starts from ImageNet weights or a run trained here
    # "features": cached backbone features; "prefix": cached frozen prefix; "probe": the
    # head on cached features first, then every layer on images (tl_core/probe.py)
    fast_path: str | None
    # An epoch's cost against training every layer (1.0) on the strategy's fast path, for
    # the time estimates: partial_finetune's 0.37 s against full_finetune's 8.2 s per epoch
    # on hymenoptera with one layer group training (README, Speed). feature_extractor's
    # cached epochs cost next to nothing; its factor is for the path without caches.
    cost_factor: float
    # Which parameters train: "all" (every layer), "head" (only the new head) or
    # "last_groups" (the backbone's last `trainable_blocks` layer groups and the head).
    scope: str = "all"
    colour: str = "#8c8c8c"  # its colour in every chart
    classic: bool = True  # one of the classic four, chosen by default on the page and bench-scale

    @property
    def uses_blocks(self) -> bool:
        """Whether `trainable_blocks` (K) means anything for this strategy."""
        return self.scope == "last_groups"


STRATEGIES: dict[str, Strategy] = {
    "scratch": Strategy(
        name="scratch",
        title="From scratch",
        trains="every layer, from random weights",
        needs_pretrained=False,
        fast_path=None,
        cost_factor=1.0,
        scope="all",
        colour="#8c8c8c",
    ),
    "feature_extractor": Strategy(
        name="feature_extractor",
        title="Feature extractor",
        trains="only the new head; the pretrained backbone is frozen",
        needs_pretrained=True,
        fast_path="features",
        cost_factor=0.2,
        scope="head",
        colour="#2b8cbe",
    ),
    "partial_finetune": Strategy(
        name="partial_finetune",
        title="Partial fine-tuning",
        trains="the last K layer groups and the new head",
        needs_pretrained=True,
        fast_path="prefix",
        cost_factor=0.05,
        scope="last_groups",
        colour="#41ab5d",
    ),
    "full_finetune": Strategy(
        name="full_finetune",
        title="Full fine-tuning",
        trains="every layer, starting from the pretrained weights",
        needs_pretrained=True,
        fast_path=None,
        cost_factor=1.0,
        scope="all",
        colour="#e6550d",
    ),
    "probe_finetune": Strategy(
        name="probe_finetune",
        title="Probe, then fine-tune",
        trains="the new head alone on cached features first, then every layer from that head",
        needs_pretrained=True,
        fast_path="probe",  # the feature_extractor path for the head, then the full model
        cost_factor=1.0,  # its epochs train every layer; the probe adds seconds
        scope="all",  # what its epochs train; the probe before them trains the head alone
        colour="#756bb1",
        classic=False,  # joins by choice
    ),
}
CLASSIC = tuple(name for name, s in STRATEGIES.items() if s.classic)


def get_strategy(name: str) -> Strategy:
    """The table entry for `name`; an unknown name fails with the valid choices."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise LabError(
            f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}"
        ) from None
