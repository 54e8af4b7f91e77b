"""The one progress event of the library, and the type of the callback that receives it.

Every long step reports through `on_progress(Progress)`: decoding images, caching features or
frozen-prefix outputs, training batches and finished epochs; building a recipe's data set
("data") and the learning-rate finder's sweep ("sweep") too. `stage` says which step; `done`
and `total` count its work (images, or batches of an epoch); training events also carry the
epoch, the running loss and accuracy, and `epoch_stats` once an epoch (with validation) ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

STAGES = ("data", "decode", "features", "prefix", "probe", "resume", "sweep", "train")


@dataclass
class EpochStats:
    """One finished epoch, as the store keeps it (one row of a run's epochs)."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    seconds: float
    lr: float


@dataclass(frozen=True)
class Progress:
    """One step forward in a run: `done` of `total` units of `stage`."""

    stage: str  # one of STAGES
    done: int
    total: int
    message: str = ""  # what a person reads: "decoding images", "training", ...
    epoch: int = 0  # training only: the epoch (1-based) and how many there are
    epochs: int = 0
    loss: float | None = None  # training only: running mean over the epoch so far
    acc: float | None = None
    epoch_stats: EpochStats | None = None  # set once the epoch (with validation) is done

    @property
    def batch(self) -> int:
        """Training events count batches: `done` under the name a training loop uses."""
        return self.done

    @property
    def batches(self) -> int:
        return self.total


ProgressFn = Callable[[Progress], None]


def counter(
    stage: str, message: str, total: int, on_progress: ProgressFn | None
) -> Callable[[int], None]:
    """A per-batch callback that adds up the items done and reports them as `stage`."""
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if on_progress is not None:
            on_progress(Progress(stage, done, total, message))

    return tick
