"""Files written whole or not at all: to a temporary name beside the target, then renamed.

An interrupted write (a killed process, a full disk) never leaves a broken file behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tl_core.errors import LabError


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write to a temporary file beside `path`, flush it to disk, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: Any, path: Path) -> Path:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_weights(path: Path) -> dict[str, Any]:
    """The state_dict in a weights file the lab wrote, or a one-line `LabError` saying the
    file is not one (damaged, truncated, replaced by another file)."""
    import torch

    advice = "it is damaged or not a weights file; train the run again"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever the bytes are, the answer is the same
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:160]
        raise LabError(f"cannot read the weights {path} ({first}): {advice}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LabError(f"{path} holds no model weights: {advice}")
    return state
