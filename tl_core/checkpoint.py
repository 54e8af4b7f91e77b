"""What `fit` needs to continue after an epoch exactly as if nothing had stopped: weights,
optimizer and scheduler state, every random generator and the history so far."""

from __future__ import annotations

import random
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
import torch

from tl_core.progress import EpochStats

if TYPE_CHECKING:
    from tl_core.train import History, _Loop


def snapshot(epoch: int, since_best: int, loop: _Loop, history: History) -> dict:
    """Everything `fit` needs to continue after `epoch`, on the CPU."""
    optimizer, scheduler = loop.optimizer, loop.scheduler
    return {
        "version": 1,
        "epoch": epoch,
        "since_best": since_best,
        "model": {k: v.detach().to("cpu", copy=True) for k, v in loop.model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "generator": loop.generator.get_state(),
        "torch_rng": torch.random.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python_rng": random.getstate(),
        "numpy_rng": _numpy_state_as_lists(),
        "epochs": [asdict(e) for e in history.epochs],
        "best_val_acc": history.best_val_acc,
        "best_epoch": history.best_epoch,
        "best_state": history.best_state,
    }


def restore(state: dict, loop: _Loop, history: History) -> tuple[int, int]:
    """Load a `snapshot` into the objects `fit` made; returns (next epoch, since_best)."""
    optimizer, scheduler, generator = loop.optimizer, loop.scheduler, loop.generator
    loop.model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    torch.random.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    random.setstate(state["python_rng"])
    np.random.set_state(state["numpy_rng"])
    history.epochs = [EpochStats(**e) for e in state["epochs"]]
    history.best_val_acc = state["best_val_acc"]
    history.best_epoch = state["best_epoch"]
    history.best_state = state["best_state"]
    return state["epoch"] + 1, state["since_best"]


def _numpy_state_as_lists() -> tuple:
    # Plain Python values, so the checkpoint loads with torch.load(weights_only=True).
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return (name, keys.tolist(), int(pos), int(has_gauss), float(cached))
