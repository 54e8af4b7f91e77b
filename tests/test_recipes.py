"""Recipes: their plans (backbones, strategies, configurations, offline substitution, stage
wiring), the `recipe` command, and tiny end-to-end runs on generated data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from tl_core import recipes
from tl_core.cli import main
from tl_core.data.class_splits import CLASS_SPLITS
from tl_core.errors import LabError
from tl_core.recipes import (
    RECIPES,
    Plan,
    Stage,
    bind_stage,
    get_recipe,
    launch_status,
    plan,
    recipe_results,
)
from tl_core.recipes.charts import efficiency_figure, recipe_figures
from tl_core.runs import RunStore


def last_json(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- the registry


def test_every_recipe_has_a_description_and_reference_figures() -> None:
    assert list(RECIPES) == [
        "ants-bees",
        "cats-dogs-pandas",
        "vgg16-features",
        "cifar10-ab",
        "fashion-ab",
        "data-efficiency",
    ]
    for r in RECIPES.values():
        assert r.title and r.description and r.data_hint
        assert r.reference.text and r.reference.source
        assert all(0 < v <= 1 for v in r.reference.figures.values())
    assert RECIPES["ants-bees"].reference.figures == {
        "feature_extractor": 0.95,
        "full_finetune": 0.94,
    }
    assert RECIPES["vgg16-features"].reference.figures["feature_extractor"] == 0.80
    assert RECIPES["fashion-ab"].reference.figures["B: scratch"] == 0.80
    with pytest.raises(LabError, match="ants-bees, cats-dogs-pandas"):
        get_recipe("ants_bees")


# ---------------------------------------------------------------------------- plans


@pytest.mark.parametrize("offline", [False, True])
def test_ants_bees_follows_the_tutorial(stripes: Path, offline: bool) -> None:
    p = plan("ants-bees", str(stripes), offline)
    (stage,) = p.stages
    assert [s.strategy for s in stage.specs] == ["feature_extractor", "full_finetune"]
    for spec in stage.specs:
        assert spec.backbone == ("efficientnet_lite0" if offline else "resnet18")
        assert spec.recipe == "ants-bees" and spec.data == str(stripes.resolve())
        assert spec.augment == "crop_flip" and spec.per_class is None
        t = spec.train
        assert (t.epochs, t.batch_size, t.lr, t.momentum, t.optimizer) == (25, 4, 0.001, 0.9, "sgd")
        assert (t.schedule, t.step_size, t.gamma) == ("step", 7, 0.1)
    assert any("resnet18 replaced by efficientnet_lite0" in n for n in p.notes) == offline
    assert Plan.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_ants_bees_without_data_offline_says_where_to_get_it() -> None:
    with pytest.raises(LabError, match="--data FOLDER"):
        plan("ants-bees", offline=True)
    online = plan("ants-bees")  # downloads the tutorial's photos first
    assert [d.builtin for d in online.prepare] == ["hymenoptera"]
    assert online.stages[0].specs[0].data == "hymenoptera"


@pytest.mark.parametrize("name", ["cifar10-ab", "fashion-ab"])
def test_ab_recipes_train_source_a_then_transfer_to_b(name: str) -> None:
    p = plan(name)
    builtin = "cifar10" if name == "cifar10-ab" else "fashion_mnist"
    split = p.prepare[-1]
    assert split.builtin == builtin and split.target_classes == CLASS_SPLITS[builtin]
    assert CLASS_SPLITS[builtin] == (
        ("airplane", "horse") if builtin == "cifar10" else ("T-shirt_top", "Shirt")
    )
    source_stage, target_stage = p.stages
    (a,) = source_stage.specs
    assert (a.data, a.backbone, a.strategy, a.init_from) == (
        f"{builtin}-A",
        "small_cnn",
        "scratch",
        None,
    )
    assert [(s.strategy, s.trainable_blocks, s.init_from) for s in target_stage.specs] == [
        ("scratch", 1, None),
        ("partial_finetune", 1, "@stage0"),
        ("partial_finetune", 2, "@stage0"),
    ]
    for spec in target_stage.specs:
        assert spec.data == f"{builtin}-B" and spec.per_class == 100 and spec.recipe == name
    bound = bind_stage(target_stage, ["GROUP_A"])  # the run is found when B is claimed
    assert [s.init_from for s in bound] == [None, "@GROUP_A", "@GROUP_A"]
    with pytest.raises(LabError, match="stage 0 is not queued"):
        bind_stage(target_stage, [])


def test_cifar10_ab_offline_becomes_fashion_mnist_and_says_so() -> None:
    p = plan("cifar10-ab", offline=True)
    assert {s.data for s in p.specs} == {"fashion_mnist-A", "fashion_mnist-B"}
    assert any("CIFAR-10 replaced by Fashion-MNIST" in n for n in p.notes)
    with pytest.raises(LabError, match="drop --data"):
        plan("fashion-ab", data="somewhere")


def test_data_efficiency_plan(stripes: Path) -> None:
    p = plan("data-efficiency", str(stripes), offline=True)
    specs = p.specs
    sizes = recipes.EFFICIENCY_SIZES
    assert len(specs) == len(sizes) * 4 * 3  # sizes x strategies x seeds
    assert {s.strategy for s in specs} == {
        "scratch",
        "feature_extractor",
        "full_finetune",
        "probe_finetune",
    }
    assert {s.per_class for s in specs} == set(sizes)
    assert {s.train.seed for s in specs} == {0, 1, 2}
    assert {s.split_seed for s in specs} == {0}  # nested subsets, the same for every seed
    assert {(s.train.epochs, s.train.validate_every) for s in specs} == {(10, 1)}
    assert {s.backbone for s in specs} == {"efficientnet_lite0"}
    assert {s.backbone for s in plan("data-efficiency", str(stripes)).specs} == {"resnet18"}

    small = plan("data-efficiency", str(stripes), True, epochs=1, seeds=1, sizes=(2, None))
    assert len(small.specs) == 8 and {s.train.epochs for s in small.specs} == {1}
    assert any("1 epoch" in n for n in small.notes)
    shapes = plan("data-efficiency", offline=True)  # no hymenoptera here, no network
    assert shapes.specs[0].data == "shapes" and [d.builtin for d in shapes.prepare] == ["shapes"]
    assert any("shapes" in n for n in shapes.notes)


def test_cats_dogs_pandas_needs_your_folder_and_explains_how(stripes3: Path) -> None:
    with pytest.raises(LabError, match="keyword search"):
        plan("cats-dogs-pandas")
    p = plan("cats-dogs-pandas", str(stripes3), offline=True)
    assert [(s.strategy, s.per_class) for s in p.specs] == [
        ("feature_extractor", 100),
        ("full_finetune", 100),
        ("feature_extractor", 300),
        ("full_finetune", 300),
    ]
    assert {s.backbone for s in p.specs} == {"efficientnet_lite0"}


def test_vgg16_features_against_a_small_network_from_scratch(stripes: Path) -> None:
    p = plan("vgg16-features", str(stripes))
    assert [(s.backbone, s.strategy) for s in p.specs] == [
        ("vgg16", "feature_extractor"),
        ("small_cnn", "scratch"),
    ]
    offline = plan("vgg16-features", str(stripes), offline=True)
    assert offline.specs[0].backbone == "efficientnet_lite0"
    with pytest.raises(LabError, match="Caltech-101"):
        plan("vgg16-features", offline=True)


# ---------------------------------------------------------------------------- the command


def test_recipe_list_and_bad_names(capsys: pytest.CaptureFixture) -> None:
    assert main(["recipe", "--list", "--json"]) == 0
    rows = last_json(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(RECIPES)
    assert all(r["reference"]["text"] for r in rows)
    assert main(["recipe", "--list"]) == 0
    assert "needs network" in capsys.readouterr().out

    assert main(["recipe", "no-such-recipe"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fashion-ab" in err and "data-efficiency" in err
    assert main(["recipe"]) == 2
    assert "--list" in capsys.readouterr().err


def test_dry_run_shows_the_plan_and_trains_nothing(capsys: pytest.CaptureFixture) -> None:
    assert main(["recipe", "cifar10-ab", "--offline", "--dry-run", "--json"]) == 0
    out = last_json(capsys.readouterr().out)
    assert out["offline"] and out["notes"] and len(out["stages"]) == 2
    assert RunStore().list() == []


def write_fake_fashion_mnist(folder: Path, train: int = 12, val: int = 6) -> Path:
    """The four idx .gz files of a tiny Fashion-MNIST: 10 classes, a bar per class."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("t10k", val)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), n)
        images = rng.integers(0, 60, (len(labels), 28, 28), dtype=np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k : 2 * k + 6, 4:24] = 230
        with gzip.open(folder / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape))
            f.write(images.tobytes())
        with gzip.open(folder / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big") + labels.tobytes())
    return folder


@pytest.mark.slow
def test_fashion_ab_end_to_end_on_a_tiny_fake_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    fake = write_fake_fashion_mnist(tmp_path / "fashion")
    monkeypatch.setattr("tl_core.data.builtin.FASHION_MNIST_DIRS", (fake,))
    assert main(["recipe", "fashion-ab", "--epochs", "2", "--json"]) == 0
    captured = capsys.readouterr()
    res = last_json(captured.out)
    assert res["recipe"] == "fashion-ab" and res["status"] == "done"
    assert [r["label"] for r in res["runs"]] == [
        "A: scratch",
        "B: scratch",
        "B: from A, last FC layer (K=1)",
        "B: from A, both FC layers (K=2)",
    ]
    a = res["runs"][0]
    assert a["num_classes"] == 8 and all(r["num_classes"] == 2 for r in res["runs"][1:])
    assert [r["init_from"] for r in res["runs"][1:]] == [None, a["run_id"], a["run_id"]]
    assert {r["recipe"] for r in res["runs"]} == {"fashion-ab"}
    assert res["summary"][1]["reference"] == 0.80
    assert any("2 epoch(s)" in n for n in res["notes"])
    assert "[4/4 B: from A, both FC layers (K=2)]" in captured.err

    store = RunStore()
    status = launch_status(store, res["launch_id"])
    assert (status.status, status.stage, status.stages) == ("done", 1, 2)
    launch = res["launch_id"]
    assert len(store.list()) == 4 and {r["group_id"] for r in store.list()} == {
        f"{launch}-s0",
        f"{launch}-s1",
    }
    again = recipe_results(store, run_ids=[r["run_id"] for r in res["runs"]])
    assert [s["label"] for s in again["summary"]] == [s["label"] for s in res["summary"]]

    figures = recipe_figures(store, res)
    assert list(figures)[:3] == [
        "Measured beside the reference",
        "All models: train accuracy",
        "All models: train loss",
    ]
    assert len(figures) == 1 + 4 + 2 * 4  # reference, overlays, then two per model
    overlay = figures["All models: validation accuracy"]
    assert [t.name.rsplit(" (", 1)[0] for t in overlay.data] == [r["label"] for r in res["runs"]]


@pytest.mark.slow
def test_stages_wait_for_their_source_run(tmp_path: Path, monkeypatch) -> None:
    """The app's path: start queues every stage; B is claimed only once A is done, and
    starts from A's run."""
    from tl_core.jobs import execute_run

    fake = write_fake_fashion_mnist(tmp_path / "fashion", train=6, val=3)
    monkeypatch.setattr("tl_core.data.builtin.FASHION_MNIST_DIRS", (fake,))
    p = plan("fashion-ab", epochs=1)
    recipes.prepare_data(p)
    store = RunStore()
    launch = recipes.start_recipe(store, p, launch_id="rtest")
    assert recipes.start_recipe(store, p, launch_id="rtest") == launch  # idempotent
    status = launch_status(store, launch)
    assert (status.status, status.stage, len(store.list())) == ("running", 0, 4)
    a = store.claim_next()
    assert a["id"] == status.run_ids[0][0]
    assert store.claim_next() is None  # B waits while A runs
    execute_run(store, a["id"])
    claimed = [store.claim_next() for _ in range(3)]
    assert [r["id"] for r in claimed] == status.run_ids[1]
    assert [r["config"]["init_from"] for r in claimed] == [None, a["id"], a["id"]]
    assert launch_status(store, launch).stage == 1
    partial = recipe_results(store, launch)
    assert partial["status"] == "running" and partial["runs"][0]["status"] == "done"


def test_efficiency_curve_and_figure() -> None:
    rows = [
        {
            "strategy": s,
            "per_class": n,
            "train_per_class": n or 40,
            "status": "done",
            "best_val_acc": acc + 0.01 * seed,
        }
        for s, base in (("scratch", 0.5), ("feature_extractor", 0.8))
        for n in (5, None)
        for seed in range(3)
        for acc in [base + (0.1 if n is None else 0)]
    ]
    curve = recipes.efficiency_curve(rows)
    fe_all = next(
        c for c in curve if c["strategy"] == "feature_extractor" and c["per_class"] is None
    )
    assert fe_all["images_per_class"] == 40 and fe_all["seeds"] == 3
    assert fe_all["mean"] == pytest.approx(0.91) and fe_all["std"] == pytest.approx(0.01)
    fig = efficiency_figure({"curve": curve})
    assert [t.name for t in fig.data] == ["feature_extractor", "scratch"]
    assert fig.layout.xaxis.type == "log"


@pytest.mark.slow
def test_data_efficiency_end_to_end_tiny(stripes: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["recipe", "data-efficiency", "--data", str(stripes), "--offline"]
    assert main([*args, "--sizes", "2", "--seeds", "1", "--epochs", "1", "--json"]) == 0
    res = last_json(capsys.readouterr().out)
    assert res["status"] == "done" and res["chart"] == "efficiency"
    assert sorted(c["strategy"] for c in res["curve"]) == [
        "feature_extractor",
        "full_finetune",
        "probe_finetune",
        "scratch",
    ]
    assert {r["num_train"] for r in res["runs"]} == {4}  # 2 per class, 2 classes
    assert any("efficientnet_lite0" in n for n in res["notes"])
    assert list(recipe_figures(RunStore(), res)) == ["Accuracy against training images per class"]


def test_plan_stages_are_plain_runspecs() -> None:
    p = plan("fashion-ab")
    assert all(isinstance(s, Stage) for s in p.stages)
    assert all(type(spec).__name__ == "RunSpec" for spec in p.specs)


# ---------------------------------------------------------------------------- the package


def test_classroom_lessons_are_recipes_on_the_workspace_shapes_set(
    capsys: pytest.CaptureFixture,
) -> None:
    assert list(recipes.CLASSROOM) == [
        "classroom_quick",
        "strategies",
        "probe_finetune",
        "small_data",
        "augmentation",
        "momentum",
    ]
    assert not set(recipes.CLASSROOM) & set(RECIPES)
    p = plan("momentum", workspace="team-a")
    assert [d.name for d in p.prepare] == ["team-a--shapes"] and p.prepare[0].per_class == 10
    assert [s.name for s in p.specs] == [
        "SGD, mini-batches and momentum: momentum 0",
        "SGD, mini-batches and momentum: momentum 0.9",
        "SGD, mini-batches and momentum: momentum 0.9, batch 4",
    ]
    assert [(s.train.momentum, s.train.batch_size) for s in p.specs] == [
        (0.0, 16),
        (0.9, 16),
        (0.9, 4),
    ]
    assert {(s.data, s.backbone, s.augment, s.recipe) for s in p.specs} == {
        ("team-a--shapes", "efficientnet_lite0", "none", None)
    }
    # Every lesson keeps the constant rate it was tuned at, whatever the lab's default.
    for name in recipes.CLASSROOM:
        assert {s.train.schedule for s in plan(name).specs} == {"none"}, name
    probe = plan("probe_finetune").specs
    assert [(s.strategy, s.train.backbone_lr_mult) for s in probe] == [
        ("full_finetune", 1.0),
        ("probe_finetune", 0.1),
    ]
    small = plan("small_data").specs
    assert [(s.strategy, s.per_class, s.train.epochs) for s in small] == [
        ("scratch", 5, 3),
        ("feature_extractor", 5, 8),
    ]
    with pytest.raises(LabError, match="drop --data"):
        plan("augmentation", data="somewhere")
    assert main(["recipe", "strategies", "--dry-run", "--json"]) == 0
    out = last_json(capsys.readouterr().out)
    assert [s["strategy"] for s in out["stages"][0]["specs"]] == [
        "feature_extractor",
        "partial_finetune",
        "full_finetune",
    ]


def test_offline_substitution_reads_the_backbone_registry(monkeypatch, stripes: Path) -> None:
    from dataclasses import replace

    from tl_core.models import BACKBONES

    ctx = recipes.Context(get_recipe("ants-bees"), None, offline=True)
    assert [ctx.backbone(n) for n in ("resnet18", "vgg16", "efficientnet_lite0", "small_cnn")] == [
        "efficientnet_lite0",
        "efficientnet_lite0",
        "efficientnet_lite0",
        "small_cnn",
    ]
    assert len(ctx.notes) == 2
    # A backbone whose weights ship with the lab stays, offline too.
    packaged = replace(BACKBONES["vgg16"], packaged_weights=lambda: "vgg16.pth")
    monkeypatch.setitem(BACKBONES, "vgg16", packaged)
    p = plan("vgg16-features", str(stripes), offline=True)
    assert p.specs[0].backbone == "vgg16" and not p.notes


def test_seeds_follow_the_one_seed_rule(stripes: Path) -> None:
    p = plan("ants-bees", str(stripes), seeds=2)
    assert [(s.strategy, s.train.seed, s.split_seed) for s in p.specs] == [
        ("feature_extractor", 0, 0),
        ("feature_extractor", 1, 0),
        ("full_finetune", 0, 0),
        ("full_finetune", 1, 0),
    ]
    assert "2 seeds per run" in p.notes
    with pytest.raises(LabError, match="seeds must be at least 1"):
        plan("ants-bees", str(stripes), seeds=0)
    ab = plan("fashion-ab", seeds=2)  # the last stage is seeded; A stays one run
    assert [len(st.specs) for st in ab.stages] == [1, 6]


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        recipes.recipe(name="momentum", title="again", description="again")(lambda ctx: [])


def test_queue_recipe_is_one_click_within_the_workspace_limit(monkeypatch) -> None:
    store = RunStore()
    ids = recipes.queue_recipe(store, "classroom_quick", workspace="team-a", request_id="click1")
    assert len(ids) == 2 and {store.get(i)["workspace"] for i in ids} == {"team-a"}
    again = recipes.queue_recipe(store, "classroom_quick", workspace="team-a", request_id="click1")
    assert again == ids and len(store.list()) == 2  # the same click: nothing new
    monkeypatch.setenv("TL_LAB_MAX_QUEUED", "4")
    with pytest.raises(LabError, match="limit of 4"):
        recipes.queue_recipe(store, "strategies", workspace="team-a", request_id="click2")
    assert len(store.list()) == 2


def test_run_recipe_reports_building_its_data_and_its_runs_as_progress_events() -> None:
    from tl_core.progress import Progress
    from tl_core.recipes import DataStep, run_recipe
    from tl_core.spec import RunSpec
    from tl_core.train import TrainConfig

    name = next(iter(RECIPES))
    config = TrainConfig(epochs=1, batch_size=8, precision="fp32")
    spec = RunSpec(
        data="tiny-shapes", backbone="small_cnn", strategy="scratch", recipe=name, train=config
    )
    p = Plan(
        name,
        "one tiny run",
        True,
        None,
        (Stage("one", (spec,)),),
        prepare=(DataStep("shapes", "tiny-shapes", per_class=3),),
    )
    events: list[Progress] = []
    res = run_recipe(p, on_progress=events.append)
    assert res["status"] == "done"
    assert all(isinstance(e, Progress) for e in events)
    data = [e for e in events if e.stage == "data"]
    assert data[-1].done == data[-1].total == 4 * (3 + 10)  # shapes: 10 validation per class
    assert all(e.message.startswith("data: ") for e in data)
    assert events.index(data[-1]) < min(i for i, e in enumerate(events) if e.stage == "train")


def test_a_lessons_results_come_from_its_plan() -> None:
    """`recipe classroom_quick` trained both runs, then failed with "these runs do not belong
    to one recipe": a lesson's runs record no recipe (it is no reproduction), so the results
    take the recipe from the plan that launched them."""
    store = RunStore()
    ids = recipes.queue_recipe(store, "classroom_quick", request_id="lesson1")
    assert {store.get(i)["recipe"] for i in ids} == {None}
    results = recipes.recipe_results(store, "lesson1", plan=plan("classroom_quick"))
    assert results["recipe"] == "classroom_quick" and len(results["runs"]) == 2
    assert results["status"] == "running"  # queued, not trained here
    with pytest.raises(LabError, match="do not belong to one recipe"):
        recipes.recipe_results(store, "lesson1")  # without the plan there is no telling
