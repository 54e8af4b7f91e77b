"""The PyTorch transfer-learning tutorial's training loop, the reference `bench` times.

Written here as the tutorial has it: an ImageFolder-style data set that opens and decodes
each JPEG on every access, a DataLoader with batch 4 and 2 workers, RandomResizedCrop and
flip for training, Resize and CenterCrop for validation, the whole model in `train()` mode
and every image through the whole network every epoch, SGD 0.001 / 0.9, fp32, best
validation accuracy kept. `tl_core.bench` imports it when a benchmark runs the reference.
"""

from __future__ import annotations

import copy
import random
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class JpegFolder(Dataset):
    """ImageFolder's behaviour over a list of items: open and decode the file on every access."""

    def __init__(self, items, transform) -> None:
        self.items, self.transform = list(items), transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from PIL import Image

        item = self.items[index]
        with open(item.path, "rb") as fh:
            img = Image.open(fh).convert("RGB")  # torchvision's pil_loader
        return self.transform(img), item.label


def tutorial_transforms(backbone) -> dict:
    """The tutorial's `data_transforms`, with the backbone's sizes and normalisation."""
    from torchvision import transforms as T

    norm = T.Normalize(list(backbone.mean), list(backbone.std))
    return {
        "train": T.Compose(
            [
                T.RandomResizedCrop(backbone.input_size),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                norm,
            ]
        ),
        "val": T.Compose(
            [
                T.Resize(backbone.resize_size),
                T.CenterCrop(backbone.input_size),
                T.ToTensor(),
                norm,
            ]
        ),
    }


def reference_run(
    split,
    backbone_name: str,
    strategy: str,
    *,
    epochs: int,
    seed: int,
    device: torch.device,
    trainable_blocks: int = 1,
    weights: str | None = None,
    lr: float = 0.001,
    momentum: float = 0.9,
    batch_size: int = 4,
    workers: int = 2,
    log=None,
) -> dict:
    """Train with the tutorial's loop; returns accuracies and wall time (model build included)."""
    from tl_core.models import build_model, get_backbone

    t_start = time.perf_counter()
    backbone = get_backbone(backbone_name)
    torch.manual_seed(seed)
    random.seed(seed)
    model = build_model(
        backbone_name,
        len(split.classes),
        strategy,
        trainable_blocks=trainable_blocks,
        weights_file=weights,
    ).model.to(device)
    tfs = tutorial_transforms(backbone)
    loaders = {
        "train": DataLoader(
            JpegFolder(split.train, tfs["train"]),
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
        ),
        "val": DataLoader(
            JpegFolder(split.val, tfs["val"]),
            batch_size=batch_size,
            shuffle=False,
            num_workers=workers,
        ),
    }
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum
    )
    best_acc, best_state, history = 0.0, None, []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        row = {"epoch": epoch}
        for phase in ("train", "val"):
            model.train() if phase == "train" else model.eval()
            loss_sum, correct, seen = 0.0, 0, 0
            for inputs, labels in loaders[phase]:
                inputs, labels = inputs.to(device), labels.to(device)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                loss_sum += loss.item() * inputs.size(0)
                correct += (outputs.argmax(1) == labels).sum().item()
                seen += inputs.size(0)
            row[f"{phase}_loss"], row[f"{phase}_acc"] = loss_sum / seen, correct / seen
        if row["val_acc"] > best_acc or best_state is None:
            best_acc = row["val_acc"]
            best_state = copy.deepcopy(model.state_dict())
        row["seconds"] = time.perf_counter() - t0
        row["elapsed"] = time.perf_counter() - t_start  # for time to accuracy
        history.append(row)
        if log is not None:
            log(
                f"reference epoch {epoch}/{epochs}: val_acc {row['val_acc']:.4f} "
                f"({row['seconds']:.1f}s)"
            )
    return {
        "seconds": time.perf_counter() - t_start,
        "best_val_acc": best_acc,
        "final_val_acc": history[-1]["val_acc"],
        "epoch_seconds": [r["seconds"] for r in history],
        "epoch_ends": [(r["elapsed"], r["val_acc"]) for r in history],
    }
