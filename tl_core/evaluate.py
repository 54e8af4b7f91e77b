"""Using a finished run: load its model, predict new images, read its validation results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from tl_core.atomic import load_weights
from tl_core.data.images import ImageDecodeError, load_rgb
from tl_core.errors import LabError
from tl_core.jobs import META_FILE, PREDICTIONS_FILE, WEIGHTS_FILE
from tl_core.models import build_for_inference
from tl_core.runs import RunStore
from tl_core.transforms import Preprocessing, eval_transform, to_uint8_tensor


@dataclass
class TrainedModel:
    run_id: str
    model: nn.Module  # in eval mode, on the CPU
    classes: list[str]
    preprocessing: Preprocessing
    backbone: str
    strategy: str

    def tensor(self, image: Image.Image) -> torch.Tensor:
        """The normalised [3, H, W] input for one RGB image."""
        pre = self.preprocessing
        return eval_transform(pre)(to_uint8_tensor(image, pre.resize_size))


def load_trained(store: RunStore, run_id: str) -> TrainedModel:
    record = store.get(run_id)
    if record["status"] not in ("done", "cancelled"):
        raise LabError(f"run {run_id} is {record['status']}; only finished runs have a model")
    run_dir = store.run_dir(run_id, create=False)
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise LabError(f"run {run_id} has no saved weights ({weights} is missing)")
    meta = store.read_json(run_id, META_FILE)
    model = build_for_inference(meta["backbone"], len(meta["classes"]))
    try:
        model.load_state_dict(load_weights(weights))
    except RuntimeError as exc:  # tensors of another model
        raise LabError(f"run {run_id}'s weights do not fit its model; train it again") from exc
    model.eval()
    return TrainedModel(
        run_id=run_id,
        model=model,
        classes=list(meta["classes"]),
        preprocessing=Preprocessing.from_dict(meta["preprocessing"]),
        backbone=meta["backbone"],
        strategy=meta["strategy"],
    )


PREDICT_BATCH = 16


@torch.inference_mode()
def predict(
    trained: TrainedModel, images: Sequence[Image.Image], top_k: int = 3
) -> list[list[dict]]:
    """Top-k classes with probabilities for each image."""
    if top_k < 1:
        raise LabError(f"top-k must be at least 1, got {top_k}")
    if not images:
        return []
    # In batches: one batch of every image would hold the activations of all of them at once.
    probs = []
    for i in range(0, len(images), PREDICT_BATCH):
        x = torch.stack([trained.tensor(img) for img in images[i : i + PREDICT_BATCH]])
        probs.append(torch.softmax(trained.model(x).float(), dim=1))
    probs = torch.cat(probs)
    k = min(top_k, len(trained.classes))
    values, indices = probs.topk(k, dim=1)
    return [
        [
            {"class": trained.classes[i], "index": i, "prob": round(v, 6)}
            for v, i in zip(vs, ix, strict=True)
        ]
        for vs, ix in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def predict_files(trained: TrainedModel, files: Sequence[str | Path], top_k: int = 3) -> list[dict]:
    """Like `predict`, for image files; an unreadable file gets an error entry, not a crash."""
    results, images, slots = [], [], []
    for f in files:
        try:
            images.append(load_rgb(f))
            slots.append(len(results))
            results.append({"image": str(f)})
        except ImageDecodeError as exc:
            results.append({"image": str(f), "error": str(exc)})
    for slot, top in zip(slots, predict(trained, images, top_k), strict=True):
        results[slot]["top"] = top
    return results


def validation_predictions(store: RunStore, run_id: str) -> dict:
    """{'classes': [...], 'items': [{'path', 'true', 'pred', 'confidence', 'probs'}]}."""
    return store.read_json(run_id, PREDICTIONS_FILE)


def confusion_matrix(preds: dict) -> list[list[int]]:
    """counts[true][pred] over the run's validation images."""
    n = len(preds["classes"])
    counts = [[0] * n for _ in range(n)]
    for item in preds["items"]:
        counts[item["true"]][item["pred"]] += 1
    return counts


def per_class_accuracy(preds: dict) -> dict[str, float | None]:
    counts = confusion_matrix(preds)
    return {
        c: (counts[i][i] / sum(counts[i]) if sum(counts[i]) else None)
        for i, c in enumerate(preds["classes"])
    }


def mistakes(preds: dict) -> list[dict]:
    """Misclassified validation images, most confident mistakes first."""
    wrong = [it for it in preds["items"] if it["true"] != it["pred"]]
    return sorted(wrong, key=lambda it: -it["confidence"])
