"""What the lab runs on: the device, precision and threads a run uses (resolved once, in
`resolve_runtime`), where things are stored, and whether pretrained weights can be
downloaded from here."""

from __future__ import annotations

import math
import os
import random
import socket
from contextlib import nullcontext
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import torch

from tl_core import paths
from tl_core.errors import LabError

PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class Runtime:
    """Where and how a run computes: resolved once per run and passed to every step."""

    device: torch.device
    precision: str  # "fp32" or "bf16"
    threads: int


def usable_cpus() -> int:
    """CPUs this process may use: affinity mask, cgroup quota and `OMP_NUM_THREADS`, not the
    host's core count."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    # A scheduler that hands this process fewer CPUs says so here (Ray does, per task).
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        n = min(n, int(omp))
    return max(1, n)


def configure_threads() -> int:
    n = usable_cpus()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LabError(
            "device 'cuda' was asked for but no CUDA GPU is available; use --device auto or cpu"
        )
    if name == "mps" and not _mps_available():
        raise LabError("device 'mps' was asked for but is not available; use --device auto or cpu")
    if name not in DEVICES:
        raise LabError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    checks = [
        getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    return any(check is not None and check() for check in checks)


def resolve_precision(name: str, device: torch.device) -> str:
    if name in ("fp32", "bf16"):
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def resolve_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """Threads set, device and precision chosen: once per run."""
    threads = configure_threads()
    dev = resolve_device(device)
    return Runtime(dev, resolve_precision(precision, dev), threads)


def autocast(device: torch.device, precision: str):
    if precision != "bf16":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def device_label(device: torch.device) -> str:
    """The device as a run record shows it: "cuda (NVIDIA H100 ...)", "cpu"."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device}"


def device_summary() -> dict:
    """{'device': 'cpu' | 'cuda' | 'mps', 'name': human description, 'threads': int}."""
    device = resolve_device("auto")
    threads = usable_cpus()
    if device.type == "cuda":
        name = f"GPU: {torch.cuda.get_device_name(device)}"
    elif device.type == "mps":
        name = "Apple GPU (MPS)"
    else:
        name = f"CPU, {threads} thread{'s' if threads != 1 else ''} (no GPU found)"
    return {"device": device.type, "name": name, "threads": threads}


def storage_summary() -> dict[str, str]:
    home = paths.lab_home()
    return {
        "lab home": str(home),
        "data sets": str(home / "datasets"),
        "runs": str(home / "runs"),
        "caches": str(home / "cache"),
    }


def downloads_reachable(timeout: float = 2.0) -> bool:
    """Whether the server that hosts torchvision's ImageNet weights answers on port 443."""
    from tl_core.models import BACKBONES

    url = next(b.weights_url for b in BACKBONES.values() if b.weights_url)
    host = urlsplit(url).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
