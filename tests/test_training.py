"""The training loop, the cached-feature fast path and runs started from other runs."""

from __future__ import annotations

import torch
from conftest import make_stripes_dataset

from tl_core import features as feats
from tl_core.data.folder import TensorImageDataset, decode_items, scan_dataset
from tl_core.evaluate import load_trained, predict_files, validation_predictions
from tl_core.jobs import RunSpec, execute_run, queue_runs
from tl_core.models import build_model, get_backbone, get_module
from tl_core.runs import RunStore
from tl_core.train import TrainConfig, fit, resolve_device
from tl_core.transforms import Preprocessing, eval_transform, train_transform


def _run(spec: RunSpec) -> dict:
    store = RunStore()
    (run_id,) = queue_runs(store, [spec])
    return execute_run(store, run_id)


def test_fit_learns_a_tiny_generated_data_set(tmp_path) -> None:
    data = make_stripes_dataset(tmp_path / "stripes24", per_class=24)
    record = _run(
        RunSpec(
            data=str(data),
            backbone="small_cnn",
            strategy="scratch",
            train=TrainConfig(epochs=8, batch_size=8, lr=0.02, precision="fp32"),
        )
    )
    assert record["status"] == "done"
    assert record["best_val_acc"] >= 0.8  # chance is 0.5
    epochs = RunStore().epochs(record["id"])
    assert len(epochs) == 8
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert record["trainable_params"] == record["total_params"] > 0


def test_training_is_reproducible_with_a_seed(stripes) -> None:
    spec = RunSpec(
        data=str(stripes),
        backbone="small_cnn",
        strategy="scratch",
        train=TrainConfig(epochs=2, batch_size=8, lr=0.05, precision="fp32", seed=3),
    )
    first = _run(spec)
    second = _run(spec)
    losses = [[e["train_loss"] for e in RunStore().epochs(r["id"])] for r in (first, second)]
    assert losses[0] == losses[1]


def test_cached_features_head_predicts_the_same_as_the_full_model(stripes) -> None:
    backbone = get_backbone("efficientnet_lite0")
    pre = Preprocessing.for_backbone(backbone)
    split = scan_dataset(stripes)
    model = build_model("efficientnet_lite0", 2, "feature_extractor").model
    train = decode_items(split.train, pre.resize_size)
    val = decode_items(split.val, pre.resize_size)
    device = resolve_device("cpu")
    fset = feats.compute_features(
        model,
        backbone,
        train,
        val,
        train_transform=train_transform(pre, augment="crop_flip"),
        eval_transform=eval_transform(pre),
        views=2,
        device=device,
        precision="fp32",
        seed=0,
    )
    assert fset.train.shape[:2] == (2, len(train.images))
    assert not torch.equal(fset.train[0], fset.train[1])  # two different augmented views
    head = get_module(model, backbone.head)
    fit(
        head,
        feats.FeatureViews(fset.train, fset.train_labels),
        feats.Features(fset.val, fset.val_labels),
        TrainConfig(epochs=3, lr=0.01, precision="fp32", channels_last=False),
    )
    model.eval()
    x = torch.stack([eval_transform(pre)(img) for img in val.images])
    with torch.inference_mode():
        full = model(x.contiguous(memory_format=torch.channels_last))
        cached = head(fset.val)
    torch.testing.assert_close(full, cached, atol=1e-4, rtol=1e-4)
    assert torch.equal(full.argmax(1), cached.argmax(1))


def test_feature_extractor_run_saves_a_model_that_reproduces_its_predictions(stripes) -> None:
    record = _run(
        RunSpec(
            data=str(stripes),
            backbone="efficientnet_lite0",
            strategy="feature_extractor",
            train=TrainConfig(epochs=3, precision="fp32"),
            feature_views=2,
        )
    )
    assert record["status"] == "done"
    assert record["trainable_params"] == 1280 * 2 + 2
    store = RunStore()
    preds = validation_predictions(store, record["id"])
    trained = load_trained(store, record["id"])
    again = predict_files(trained, [it["path"] for it in preds["items"]], top_k=1)
    assert [r["top"][0]["index"] for r in again] == [it["pred"] for it in preds["items"]]
    for r, it in zip(again, preds["items"], strict=True):
        assert abs(r["top"][0]["prob"] - it["confidence"]) < 1e-3
    # The feature cache is reused by an identical second run.
    cached = list((store.home / "cache" / "features").glob("*.pt"))
    assert len(cached) == 1


def test_init_from_starts_from_the_source_runs_weights(stripes, stripes3) -> None:
    source = _run(
        RunSpec(
            data=str(stripes),
            backbone="small_cnn",
            strategy="scratch",
            train=TrainConfig(epochs=2, batch_size=8, lr=0.05, precision="fp32"),
        )
    )
    store = RunStore()
    source_state = torch.load(store.run_dir(source["id"]) / "weights.pt", weights_only=True)
    target = _run(
        RunSpec(
            data=str(stripes3),
            backbone="small_cnn",
            strategy="partial_finetune",
            trainable_blocks=1,
            init_from=source["id"],
            train=TrainConfig(epochs=2, batch_size=8, lr=0.05, precision="fp32"),
        )
    )
    assert target["status"] == "done" and target["num_classes"] == 3
    target_state = torch.load(store.run_dir(target["id"]) / "weights.pt", weights_only=True)
    # Frozen layers are exactly the source's; the trained layer moved; the head is new.
    assert torch.equal(target_state["block1.0.weight"], source_state["block1.0.weight"])
    assert torch.equal(target_state["fc1.1.weight"], source_state["fc1.1.weight"])
    assert not torch.equal(target_state["fc2.1.weight"], source_state["fc2.1.weight"])
    assert target_state["classifier.weight"].shape[0] == 3


def test_per_class_caps_training_images_with_nested_subsets(stripes) -> None:
    small = scan_dataset(stripes, per_class=3)
    larger = scan_dataset(stripes, per_class=6)
    assert small.counts() == {"horizontal": 3, "vertical": 3}
    assert {i.path for i in small.train} <= {i.path for i in larger.train}
    assert small.val == larger.val  # the validation set does not shrink


def test_unreadable_files_are_skipped_and_counted(stripes) -> None:
    (stripes / "vertical" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (stripes / "horizontal" / "empty.png").write_bytes(b"")
    split = scan_dataset(stripes, val_fraction=0.25)
    decoded_train = decode_items(split.train, 32, use_cache=False)
    decoded_val = decode_items(split.val, 32, use_cache=False)
    skipped = decoded_train.skipped + decoded_val.skipped
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in skipped) == ["broken.jpg", "empty.png"]
    assert len(decoded_train.images) + len(decoded_val.images) == 32
    ds = TensorImageDataset(
        decoded_train, eval_transform(Preprocessing(32, 32, (0.5,) * 3, (0.5,) * 3))
    )
    assert ds[0][0].shape == (3, 32, 32)


def test_predict_in_batches_gives_each_images_own_prediction(monkeypatch) -> None:
    """Many images are predicted a batch at a time, with the same result as one by one."""
    import random

    from PIL import Image

    from tl_core import evaluate as ev
    from tl_core.models import build_for_inference

    torch.manual_seed(0)
    model = build_for_inference("small_cnn", 3).eval()
    trained = ev.TrainedModel(
        "r",
        model,
        ["a", "b", "c"],
        Preprocessing.for_backbone(get_backbone("small_cnn")),
        "small_cnn",
        "scratch",
    )
    rng = random.Random(0)
    images = [
        Image.new("RGB", (40, 40), tuple(rng.randrange(256) for _ in range(3))) for _ in range(7)
    ]
    monkeypatch.setattr(ev, "PREDICT_BATCH", 3)
    batched = ev.predict(trained, images, top_k=3)
    single = [ev.predict(trained, [img], top_k=3)[0] for img in images]
    assert len(batched) == 7
    for b, s in zip(batched, single, strict=True):
        assert [t["index"] for t in b] == [t["index"] for t in s]
        for tb, ts in zip(b, s, strict=True):
            assert abs(tb["prob"] - ts["prob"]) < 1e-5


def test_feature_cache_reports_progress_up_to_every_image(stripes) -> None:
    backbone = get_backbone("small_cnn")
    pre = Preprocessing.for_backbone(backbone)
    split = scan_dataset(stripes)
    train = decode_items(split.train, pre.resize_size)
    val = decode_items(split.val, pre.resize_size)
    calls = []
    feats.compute_features(
        build_model("small_cnn", 2, "scratch").model,  # random weights do for counting
        backbone,
        train,
        val,
        train_transform=train_transform(pre, augment="crop_flip"),
        eval_transform=eval_transform(pre),
        views=3,
        device=resolve_device("cpu"),
        precision="fp32",
        seed=0,
        on_progress=calls.append,
    )
    total = 3 * len(train.images) + len(val.images)
    assert {p.stage for p in calls} == {"features"}
    assert (calls[-1].done, calls[-1].total, calls[-1].message) == (
        total,
        total,
        "computing features",
    )
    dones = [p.done for p in calls]
    assert dones == sorted(dones) and len(set(dones)) == len(dones)


def test_content_hash_comes_from_the_manifest_and_still_sees_changes(stripes, monkeypatch) -> None:
    from tl_core.data import folder
    from tl_core.data.sources import import_folder

    import_folder(stripes, "stripes")
    hashed: list[str] = []
    real_sha256 = folder._sha256
    monkeypatch.setattr(folder, "_sha256", lambda p: hashed.append(p.name) or real_sha256(p))
    first = scan_dataset("stripes").content_hash
    assert first and hashed == []  # every file's SHA-256 came from the manifest
    # A file the manifest does not describe (copied in by hand) is read, and changes the hash.
    root = folder.resolve_dataset("stripes")
    extra = root / "vertical" / "extra.png"
    extra.write_bytes(next((root / "vertical").glob("*.png")).read_bytes())
    second = scan_dataset("stripes").content_hash
    assert hashed == ["extra.png"] and second != first
    assert scan_dataset("stripes", hash_content=False).content_hash == ""


def test_a_spec_is_validated_once_and_a_stored_one_is_trusted(stripes, monkeypatch) -> None:
    from tl_core.train import TrainConfig as Config

    calls = []
    real = Config.validate
    monkeypatch.setattr(Config, "validate", lambda self: calls.append(1) or real(self))
    spec = RunSpec(data=str(stripes), backbone="small_cnn", strategy="scratch").validate()
    spec.validate()
    assert len(calls) == 1
    stored = RunSpec.from_dict(spec.to_dict(), trusted=True)
    assert stored.validate() is stored and len(calls) == 1


def test_a_run_reports_every_stage_through_one_progress_callback(stripes) -> None:
    events = []
    spec = RunSpec(
        data=str(stripes),
        backbone="small_cnn",
        strategy="scratch",
        train=TrainConfig(epochs=2, batch_size=8),
    )
    store = RunStore()
    (run_id,) = queue_runs(store, [spec])
    execute_run(store, run_id, on_progress=events.append)
    stages = [p.stage for p in events]
    assert stages[0] == "decode" and stages[-1] == "train"
    decoded = [p for p in events if p.stage == "decode"]
    assert {p.message for p in decoded} == {"decoding images", "decoding validation images"}
    epochs = [p.epoch_stats.epoch for p in events if p.epoch_stats is not None]
    assert epochs == [1, 2]
    batches = [p for p in events if p.stage == "train" and p.epoch_stats is None]
    assert batches and all(p.loss is not None and 1 <= p.done <= p.total for p in batches)
