"""Each fast path gives the results of the slow path it replaces.

Cached frozen-prefix outputs against the full model (logits and gradients), batched
augmentation against the per-image presets, batch-indexing loaders against the DataLoader.
The GPU path is the same code as here, with the images on the device; these run on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from tl_core import features as feats
from tl_core.batches import (
    ImageBatches,
    centre_crop,
    crop_resize_flip,
    normalise,
    resized_crop_boxes,
)
from tl_core.data.folder import DecodedImages, TensorImageDataset
from tl_core.errors import LabError
from tl_core.jobs import TIMINGS_FILE, RunSpec, execute_run, queue_runs
from tl_core.models import (
    BACKBONES,
    STRATEGIES,
    apply_strategy,
    build_model,
    get_backbone,
    set_train_mode,
)
from tl_core.runs import RunStore
from tl_core.train import TensorBatches, TrainConfig, make_loader
from tl_core.transforms import Preprocessing, eval_transform


def _random_images(n: int, seed: int = 0, short: int = 72) -> DecodedImages:
    gen = torch.Generator().manual_seed(seed)
    images = []
    for k in range(n):
        long = short + int(torch.randint(0, 40, (1,), generator=gen))
        shape = (3, short, long) if k % 2 else (3, long, short)
        images.append(torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen))
    return DecodedImages(images, [k % 2 for k in range(n)], [f"img{k}" for k in range(n)], [])


PRE = Preprocessing(input_size=64, resize_size=72, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


# ---------------------------------------------------------------------------- frozen prefix


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_layer_sequence_composes_to_the_model(backbone: str) -> None:
    model = build_model(backbone, 3, "scratch").model.eval()
    pieces = feats.layer_sequence(model, get_backbone(backbone))
    x = torch.randn(2, 3, 32, 32)  # small inputs: every backbone takes them, VGG16 too
    with torch.no_grad():
        torch.testing.assert_close(nn.Sequential(*(m for _, m in pieces))(x), model(x))


# VGG16 at K=2 trains fc1 (103M parameters): comparing that gradient alone takes half a
# minute on a CPU, so VGG16 is checked at K=1 (its cut between fc1 and fc2).
PREFIX_CASES = [(b, k) for b in BACKBONES for k in (1, 2) if (b, k) != ("vgg16", 2)]


@pytest.mark.parametrize(("backbone", "blocks"), PREFIX_CASES)
def test_cached_prefix_gives_the_full_models_logits_and_gradients(
    backbone: str, blocks: int
) -> None:
    torch.manual_seed(0)
    info = get_backbone(backbone)
    # Random weights do (and need no weights file for small_cnn): freeze as partial_finetune.
    model = build_model(backbone, 3, "scratch").model
    apply_strategy(model, info, "partial_finetune", trainable_blocks=blocks)
    prefix, rest = feats.split_frozen_prefix(model, info, "partial_finetune", blocks)
    assert not any(p.requires_grad for p in prefix.parameters())
    assert {id(p) for p in rest.parameters() if p.requires_grad} == {
        id(p) for p in model.parameters() if p.requires_grad
    }
    # ResNet has no randomness in training mode: compare there (trainable BatchNorm uses batch
    # statistics). EfficientNet's drop-connect and the dropout of VGG16 and the small CNN are
    # random in training mode: compare in eval.
    train_mode = backbone == "resnet18"
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 1])

    def run(fn) -> tuple[torch.Tensor, list[torch.Tensor]]:
        set_train_mode(model) if train_mode else model.eval()
        model.zero_grad()
        logits = fn()
        F.cross_entropy(logits, y).backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    full_logits, full_grads = run(lambda: model(x))
    cached = feats.run_frozen(
        prefix, _Tensors(x), device=torch.device("cpu"), precision="fp32", batch_size=3
    )
    cached_logits, cached_grads = run(lambda: rest(cached.clone()))
    torch.testing.assert_close(cached_logits, full_logits, rtol=1e-4, atol=1e-5)
    for a, b in zip(cached_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # The compact cache (bf16) is close, not equal.
    compact = feats.run_frozen(
        prefix, _Tensors(x), device=torch.device("cpu"), precision="fp32", out_dtype=torch.bfloat16
    )
    assert compact.dtype == torch.bfloat16
    torch.testing.assert_close(compact.float(), cached, rtol=2e-2, atol=2e-2)


class _Tensors:
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return self.x.shape[0]

    def get_batch(self, idx: torch.Tensor):
        return self.x[idx], torch.zeros(len(idx), dtype=torch.long)


def test_an_unknown_backbone_fails_loudly_in_the_prefix_cut() -> None:
    model = build_model("small_cnn", 2, "scratch").model
    with pytest.raises(LabError, match="unknown backbone 'nope'; choose one of: resnet18"):
        feats.split_frozen_prefix(model, "nope", "partial_finetune")
    # A model that is not the named backbone's architecture is an error too, not a slow path.
    with pytest.raises(LabError, match="is not a resnet18"):
        feats.split_frozen_prefix(model, "resnet18", "partial_finetune")


def test_a_layer_sequence_that_misses_parameters_fails_loudly() -> None:
    info = get_backbone("small_cnn")
    short = replace(info, layers=lambda m: info.layers(m)[1:])  # block1 left out
    model = build_model("small_cnn", 2, "scratch").model
    apply_strategy(model, info, "partial_finetune")
    with pytest.raises(LabError, match="does not cover every parameter"):
        feats.split_frozen_prefix(model, short, "partial_finetune")


def test_no_cut_for_strategies_without_a_frozen_prefix() -> None:
    info = get_backbone("resnet18")
    model = build_model("resnet18", 2, "full_finetune", load_weights=False).model
    assert feats.split_frozen_prefix(model, info, "full_finetune") is None


def test_prefix_cache_keeps_as_many_views_as_fit_in_the_budget() -> None:
    torch.manual_seed(0)
    info = get_backbone("small_cnn")
    model = build_model("small_cnn", 2, "scratch").model
    for p in model.parameters():
        p.requires_grad = False
    model.classifier.weight.requires_grad = model.classifier.bias.requires_grad = True
    prefix, _ = feats.split_frozen_prefix(model, info, "feature_extractor")
    pre = Preprocessing(32, 32, (0.5,) * 3, (0.5,) * 3)
    gen = torch.Generator().manual_seed(1)
    imgs = DecodedImages(
        [torch.randint(0, 256, (3, 32, 40), dtype=torch.uint8, generator=gen) for _ in range(6)],
        [0, 1] * 3,
        [str(k) for k in range(6)],
        [],
    )
    train = ImageBatches(imgs, pre, train=True)
    val = ImageBatches(imgs, pre, train=False)
    common = dict(device=torch.device("cpu"), precision="fp32")
    full = feats.compute_prefix_cache(prefix, train, val, views=3, **common)
    assert full.views == 3 and full.train.shape[:2] == (3, 6) and full.val.shape[0] == 6
    assert not torch.equal(full.train[0], full.train[1])  # different augmented views
    one_view = full.train[0, 0].numel() * 4  # float32 bytes per image
    two = feats.compute_prefix_cache(prefix, train, val, views=3, budget=one_view * 6 * 3, **common)
    assert two.views == 2
    assert (
        feats.compute_prefix_cache(prefix, train, val, views=3, budget=one_view, **common) is None
    )
    # The frozen-prefix fallback runs without autograd and stays in eval mode.
    frozen = feats.FrozenPrefix(prefix).train()
    assert not any(m.training for m in prefix.modules())
    x, _ = val.get_batch(torch.arange(2))
    assert not frozen(x).requires_grad


@pytest.mark.slow
def test_partial_finetune_run_trains_through_the_cached_prefix(stripes) -> None:
    store = RunStore()
    spec = RunSpec(
        data=str(stripes),
        backbone="efficientnet_lite0",
        strategy="partial_finetune",
        train=TrainConfig(epochs=2, batch_size=8, precision="fp32"),
        feature_views=2,
    )
    (run_id,) = queue_runs(store, [spec])
    record = execute_run(store, run_id)
    assert record["status"] == "done"
    timings = store.read_json(run_id, TIMINGS_FILE)
    assert timings["path"] == "cached prefix" and timings["cache_seconds"] > 0
    assert len(timings["epoch_seconds"]) == 2
    state = torch.load(store.run_dir(run_id) / "weights.pt", weights_only=True)
    start = build_model("efficientnet_lite0", 2, "partial_finetune").model.state_dict()
    assert torch.equal(
        state["_blocks.3._depthwise_conv.weight"], start["_blocks.3._depthwise_conv.weight"]
    )
    assert not torch.equal(
        state["_blocks.15._project_conv.weight"], start["_blocks.15._project_conv.weight"]
    )
    # The saved model (whole network, eval transform) reproduces the run's best accuracy.
    preds = store.read_json(run_id, "predictions.json")["items"]
    acc = sum(it["pred"] == it["true"] for it in preds) / len(preds)
    assert acc == pytest.approx(record["best_val_acc"], abs=1e-6)


FAST_PATH_TIMINGS = {
    "features": "cached features",
    "prefix": "cached prefix",
    "probe": "probe on cached features, then images",
    None: "images",
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_runs_on_the_fast_path_its_table_entry_names(
    strategy: str, stripes, tmp_path
) -> None:
    # Pretrained weights for small_cnn: a file of its architecture, made here (no download).
    torch.manual_seed(0)
    weights = tmp_path / "small_cnn.pt"
    torch.save(get_backbone("small_cnn").build().state_dict(), weights)
    pretrained = STRATEGIES[strategy].needs_pretrained
    store = RunStore()
    spec = RunSpec(
        data=str(stripes),
        backbone="small_cnn",
        strategy=strategy,
        train=TrainConfig(epochs=1, batch_size=8, precision="fp32"),
        weights=str(weights) if pretrained else None,
        feature_views=2,
    )
    (run_id,) = queue_runs(store, [spec])
    record = execute_run(store, run_id)
    assert record["status"] == "done" and record["epoch"] == 1
    timings = store.read_json(run_id, TIMINGS_FILE)
    assert timings["path"] == FAST_PATH_TIMINGS[STRATEGIES[strategy].fast_path]
    meta = store.read_json(run_id, "meta.json")
    assert meta["weights_source"] == (str(weights) if pretrained else "random")


# ---------------------------------------------------------------------------- batched images


def test_batched_eval_equals_the_eval_preset_exactly() -> None:
    imgs = _random_images(5)
    batches = ImageBatches(imgs, PRE, train=False)
    x, y = batches.get_batch(torch.arange(5))
    expected = torch.stack([eval_transform(PRE)(im) for im in imgs.images])
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-6)
    assert y.tolist() == imgs.labels
    assert centre_crop(imgs.images, 64).dtype == torch.uint8


def test_batched_crop_and_flip_match_interpolate_and_mirror() -> None:
    imgs = _random_images(3)
    boxes = torch.tensor([[0, 0, *imgs.images[0].shape[1:]], [5, 7, 40, 50], [10, 3, 60, 30]])
    plain = crop_resize_flip(imgs.images, boxes, torch.tensor([False] * 3), 64)
    for k, (t, x, h, w) in enumerate(boxes.tolist()):
        crop = imgs.images[k][:, t : t + h, x : x + w][None].float()
        ref = F.interpolate(crop, size=(64, 64), mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(plain[k], ref, rtol=0, atol=1e-3)
    flipped = crop_resize_flip(imgs.images, boxes, torch.tensor([True] * 3), 64)
    torch.testing.assert_close(flipped, plain.flip(-1), rtol=0, atol=1e-3)


def test_crop_boxes_follow_random_resized_crops_distribution() -> None:
    n, h, w = 4000, 120, 180
    torch.manual_seed(0)
    ours = resized_crop_boxes(torch.full((n,), h), torch.full((n,), w))
    theirs = torch.tensor(
        [
            v2.RandomResizedCrop.get_params(torch.empty(1, h, w), [0.08, 1.0], [3 / 4, 4 / 3])
            for _ in range(n)
        ]
    )
    for boxes in (ours, theirs):
        top, left, bh, bw = boxes.unbind(1)
        assert (top >= 0).all() and (left >= 0).all()
        assert (top + bh <= h).all() and (left + bw <= w).all()
    for stat in (
        lambda b: (b[:, 2] * b[:, 3]).double() / (h * w),  # area fraction
        lambda b: torch.log(b[:, 3].double() / b[:, 2]),  # log aspect ratio
        lambda b: (b[:, 0] + b[:, 2] / 2).double() / h,  # vertical centre
    ):
        a, b = stat(ours), stat(theirs)
        assert abs(a.mean() - b.mean()) < 4 * math.sqrt((a.var() + b.var()) / n)
        assert abs(a.std() - b.std()) < 0.1 * b.std()


def test_batched_training_batches_look_like_the_per_image_preset() -> None:
    imgs = _random_images(8)
    torch.manual_seed(0)
    x, y = ImageBatches(imgs, PRE, train=True).get_batch(torch.arange(8))
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32 and y.shape == (8,)
    lo = normalise(torch.zeros(1, 3, 1, 1), PRE).flatten()
    hi = normalise(torch.full((1, 3, 1, 1), 255.0), PRE).flatten()
    for c in range(3):
        assert lo[c] - 1e-4 <= x[:, c].min() and x[:, c].max() <= hi[c] + 1e-4
    # Small inputs and colour jitter use the per-image preset itself.
    small = Preprocessing(32, 32, (0.5,) * 3, (0.5,) * 3)
    jitter = ImageBatches(imgs, PRE, train=True, augment="crop_flip_jitter")
    assert not ImageBatches(imgs, small, train=True).batched and not jitter.batched
    assert jitter.get_batch(torch.arange(2))[0].shape == (2, 3, 64, 64)


# ---------------------------------------------------------------------------- loaders


def test_tensor_batches_visit_items_in_the_dataloaders_order() -> None:
    data = TensorImageDataset(_random_images(10), eval_transform(PRE))
    batched = ImageBatches(_random_images(10), PRE, train=False)
    slow = make_loader(
        data,
        4,
        shuffle=True,
        generator=torch.Generator().manual_seed(3),
        device=torch.device("cpu"),
    )
    fast = make_loader(
        batched,
        4,
        shuffle=True,
        generator=torch.Generator().manual_seed(3),
        device=torch.device("cpu"),
    )
    assert isinstance(fast, TensorBatches) and len(fast) == len(slow) == 3
    for (xa, ya), (xb, yb) in zip(slow, fast, strict=True):
        torch.testing.assert_close(xa, xb, rtol=0, atol=1e-6)
        assert torch.equal(ya, yb)


def test_feature_views_batches_draw_one_stored_view_per_item() -> None:
    stored = torch.arange(3 * 5 * 2, dtype=torch.bfloat16).reshape(3, 5, 2)
    views = feats.FeatureViews(stored, torch.arange(5))
    x, y = views.get_batch(torch.tensor([4, 0, 2]))
    assert x.dtype == torch.float32 and y.tolist() == [4, 0, 2]
    for row, i in zip(x, [4, 0, 2], strict=True):
        assert any(torch.equal(row, stored[v, i].float()) for v in range(3))
