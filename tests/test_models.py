"""Backbones x strategies: what trains, what stays frozen, where weights come from."""

from __future__ import annotations

import urllib.error
from functools import cache

import pytest
import torch
from torch import nn

from tl_core import models
from tl_core.errors import LabError
from tl_core.models import (
    BACKBONES,
    STRATEGIES,
    apply_strategy,
    build_model,
    count_params,
    get_backbone,
    replace_head,
    set_train_mode,
)
from tl_core.train import TrainConfig, make_optimizer

IMAGENET_BACKBONES = ("resnet18", "vgg16", "efficientnet_lite0")


@cache
def _architecture(name: str) -> nn.Module:
    """One random-weight model per backbone with a 3-class head (VGG16 takes a while to build)."""
    backbone = get_backbone(name)
    model = backbone.build()
    replace_head(model, backbone, 3)
    return model


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("backbone_name", list(BACKBONES))
def test_strategy_trains_exactly_the_expected_parameters(backbone_name: str, strategy: str) -> None:
    backbone = get_backbone(backbone_name)
    model = _architecture(backbone_name)
    apply_strategy(model, backbone, strategy, trainable_blocks=1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    everything = {n for n, _ in model.named_parameters()}
    head = {n for n in everything if _under(n, (backbone.head,))}
    last_group = {n for n in everything if _under(n, backbone.layer_groups[-1])}
    first_group = {n for n in everything if _under(n, backbone.layer_groups[0])}
    assert head and last_group and first_group
    scope = STRATEGIES[strategy].scope
    if scope == "all":
        assert trainable == everything
    elif scope == "head":
        assert trainable == head
    else:
        assert scope == "last_groups"
        assert trainable == head | last_group
        assert not trainable & first_group
    n_trainable, n_total = count_params(model)
    assert n_trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_total == sum(p.numel() for p in model.parameters())


def test_layer_groups_cover_every_parameter_outside_the_head() -> None:
    for name in BACKBONES:
        backbone = get_backbone(name)
        model = _architecture(name)
        prefixes = tuple(p for group in backbone.layer_groups for p in group) + (backbone.head,)
        uncovered = [n for n, _ in model.named_parameters() if not _under(n, prefixes)]
        assert uncovered == [], f"{name}: parameters in no layer group: {uncovered[:5]}"
        assert len(backbone.group_names) == len(backbone.layer_groups)


def test_vgg16_head_is_the_last_classifier_layer_not_the_whole_classifier() -> None:
    model = _architecture("vgg16")
    apply_strategy(model, get_backbone("vgg16"), "feature_extractor")
    trainable, total = count_params(model)
    assert trainable == 4096 * 3 + 3
    assert total > 130_000_000
    apply_strategy(model, get_backbone("vgg16"), "partial_finetune", trainable_blocks=2)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {
        "classifier.0.weight", "classifier.0.bias",
        "classifier.3.weight", "classifier.3.bias",
        "classifier.6.weight", "classifier.6.bias",
    }  # fmt: skip


def test_efficientnet_lite0_partial_k1_trains_the_last_stage() -> None:
    backbone = get_backbone("efficientnet_lite0")
    assert len(backbone.layer_groups) == 8  # stem, stages 1-6, stage 7 with the head conv
    model = _architecture("efficientnet_lite0")
    apply_strategy(model, backbone, "partial_finetune", trainable_blocks=1)
    trainable = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("_blocks") else "")
                 for n, p in model.named_parameters() if p.requires_grad}  # fmt: skip
    assert trainable == {"_blocks.15", "_conv_head", "_bn1", "_fc"}
    apply_strategy(model, backbone, "partial_finetune", trainable_blocks=2)
    assert model._blocks[11]._depthwise_conv.weight.requires_grad  # stage 6: blocks 11-14
    assert not model._blocks[10]._depthwise_conv.weight.requires_grad


def test_small_cnn_partial_k1_is_the_last_fc_layer_and_k2_both() -> None:
    backbone = get_backbone("small_cnn")
    model = _architecture("small_cnn")
    apply_strategy(model, backbone, "partial_finetune", trainable_blocks=1)
    groups = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert groups == {"fc2", "classifier"}
    apply_strategy(model, backbone, "partial_finetune", trainable_blocks=2)
    groups = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert groups == {"fc1", "fc2", "classifier"}


def test_efficientnet_normalisation_is_its_own_not_imagenets() -> None:
    backbone = get_backbone("efficientnet_lite0")
    assert backbone.mean == (0.5, 0.5, 0.5)
    assert backbone.std == (0.5, 0.5, 0.5)
    assert get_backbone("resnet18").mean == (0.485, 0.456, 0.406)
    assert backbone.works_offline


def test_unknown_names_list_the_valid_choices() -> None:
    with pytest.raises(LabError, match="resnet18, vgg16, efficientnet_lite0, small_cnn"):
        get_backbone("resnet50")
    with pytest.raises(
        LabError, match="scratch, feature_extractor, partial_finetune, full_finetune"
    ):
        build_model("small_cnn", 2, "finetune_everything")
    with pytest.raises(LabError, match="between 1 and 5"):
        models.trainable_prefixes(get_backbone("resnet18"), "partial_finetune", 9)


def test_resnet18_loads_weights_from_a_local_file(tmp_path) -> None:
    reference = get_backbone("resnet18").build()
    path = tmp_path / "my-resnet18.pth"
    torch.save(reference.state_dict(), path)
    built = build_model("resnet18", 2, "feature_extractor", weights_file=path)
    assert built.weights_source == str(path)
    ref = reference.state_dict()
    for name, tensor in built.model.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(tensor, ref[name]), name
    assert built.model.fc.out_features == 2


def test_resnet18_weights_come_from_torchvision_cache_before_any_download(monkeypatch) -> None:
    reference = get_backbone("resnet18").build()
    cached = models.torch_cache_checkpoint(get_backbone("resnet18"))
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)

    def no_network(*args, **kwargs):
        raise AssertionError("must not download when the cache has the file")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    built = build_model("resnet18", 2, "full_finetune")
    assert built.weights_source == str(cached)
    assert torch.equal(built.model.conv1.weight, reference.conv1.weight)


def test_offline_without_weights_is_a_clear_error_never_random_weights(monkeypatch) -> None:
    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(LabError) as info:
        build_model("vgg16", 2, "feature_extractor")
    message = str(info.value)
    assert "vgg16" in message and "vgg16-397923af.pth" in message
    assert str(models.torch_cache_checkpoint(get_backbone("vgg16"))) in message
    assert "efficientnet_lite0 works offline" in message


def test_scratch_needs_no_weights_and_small_cnn_transfer_needs_a_source() -> None:
    built = build_model("resnet18", 4, "scratch")
    assert built.weights_source == "random"
    with pytest.raises(LabError, match="--init-from"):
        build_model("small_cnn", 2, "feature_extractor")


def test_init_state_carries_weights_and_replaces_a_mismatched_head() -> None:
    source = build_model("small_cnn", 3, "scratch").model
    state = source.state_dict()
    same = build_model("small_cnn", 3, "partial_finetune", init_state=state).model
    assert torch.equal(same.classifier.weight, source.classifier.weight)
    other = build_model(
        "small_cnn", 5, "partial_finetune", init_state=state, trainable_blocks=2
    ).model
    assert other.classifier.out_features == 5
    assert torch.equal(other.block1[0].weight, source.block1[0].weight)
    assert torch.equal(other.fc1[1].weight, source.fc1[1].weight)
    assert not other.block1[0].weight.requires_grad and other.fc1[1].weight.requires_grad


# Small inputs keep every backbone's step fast; EfficientNet-Lite0's BatchNorm needs more pixels.
STEP_INPUT = {"efficientnet_lite0": 224, "resnet18": 64}


@pytest.mark.parametrize("backbone_name", list(BACKBONES))
def test_one_step_moves_trainable_weights_only_and_frozen_batchnorm_stays_put(backbone_name):
    torch.manual_seed(0)
    size = STEP_INPUT.get(backbone_name, 32)
    backbone = get_backbone(backbone_name)
    model = backbone.build()
    replace_head(model, backbone, 2)
    apply_strategy(model, backbone, "partial_finetune", trainable_blocks=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = make_optimizer(model, TrainConfig(lr=0.1))
    set_train_mode(model)
    frozen_bns = [
        m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and not m.weight.requires_grad
    ]
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # VGG16 has none
    assert frozen_bns or not has_bn
    assert all(not m.training for m in frozen_bns)
    x = torch.randn(4, 3, size, size) * 3 + 1  # far from the running stats, so they would move
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    params = dict(model.named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    for name, p in params.items():
        if p.requires_grad:
            assert name in changed, f"trainable {name} did not move"
        else:
            assert name not in changed, f"frozen {name} moved"
    frozen_buffers = [
        k for k in before
        if k.endswith(("running_mean", "running_var")) and not params[k.rsplit(".", 1)[0] + ".weight"].requires_grad
    ]  # fmt: skip
    assert frozen_buffers or not has_bn
    assert not changed & set(frozen_buffers)
    trainable_buffers = [
        k for k in before
        if k.endswith("running_mean") and params[k.rsplit(".", 1)[0] + ".weight"].requires_grad
    ]  # fmt: skip
    if trainable_buffers:  # BatchNorm layers that do train keep learning their statistics
        assert set(trainable_buffers) <= changed


def test_efficientnet_lite0_really_holds_imagenet_weights() -> None:
    """Real photos from scikit-image's wheel: an espresso and a cat, through the lab's preprocessing."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from tl_core.transforms import Preprocessing, eval_transform, to_uint8_tensor

    backbone = get_backbone("efficientnet_lite0")
    model = backbone.build()
    models.load_imagenet_weights(model, backbone)
    model.eval()
    pre = Preprocessing.for_backbone(backbone)
    photos = [Image.fromarray(skimage_data.coffee()), Image.fromarray(skimage_data.chelsea())]
    x = torch.stack([eval_transform(pre)(to_uint8_tensor(p, pre.resize_size)) for p in photos])
    with torch.inference_mode():
        top = model(x).argmax(1).tolist()
    espresso, cats = 967, range(281, 286)  # ImageNet: espresso; tabby ... Egyptian cat
    assert top[0] == espresso
    assert top[1] in cats


def test_scratch_batchnorm_statistics_can_catch_up_but_pretrained_ones_keep_their_momentum() -> (
    None
):
    def momenta(model: nn.Module) -> set[float]:
        return {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}

    assert momenta(build_model("efficientnet_lite0", 2, "scratch").model) == {0.1}
    (pretrained,) = momenta(build_model("efficientnet_lite0", 2, "full_finetune").model)
    assert pretrained == pytest.approx(0.01)
