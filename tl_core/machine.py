"""What the lab runs on: the device and threads runs will use, where things are stored, and
whether pretrained weights can be downloaded from here."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from tl_core import paths


def device_summary() -> dict:
    """{'device': 'cpu' | 'cuda' | 'mps', 'name': human description, 'threads': int}."""
    import torch

    from tl_core.train import resolve_device, usable_cpus

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


def offline_backbones() -> list[str]:
    """Backbones whose pretrained weights are on this machine already."""
    from tl_core.models import BACKBONES, weights_are_offline_ready

    return [
        n for n, b in BACKBONES.items() if b.has_imagenet_weights and weights_are_offline_ready(b)
    ]
