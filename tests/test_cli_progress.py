"""The command line's progress on stderr (issue 13, item 5): something from the first moment
of a run, every one-off step (decoding, caching), and batches; bars in a terminal, plain
lines in a log or a pipe."""

from __future__ import annotations

import io

from tl_core.cli import main
from tl_core.cli.common import Bars
from tl_core.progress import EpochStats, Progress


def test_without_a_terminal_a_step_prints_its_start_and_its_end(capsys) -> None:
    bars = Bars("[1/2] ", tty=False, every=3600)
    for done in range(1, 11):
        bars.progress(Progress("decode", done, 10, "decoding images"))
    for done in range(1, 5):
        bars.progress(Progress("features", done, 4, "computing features"))
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "[1/2] decoding images 1/10",
        "[1/2] decoding images 10/10",
        "[1/2] computing features 1/4",
        "[1/2] computing features 4/4",
    ]


def test_without_a_terminal_batches_print_as_lines_then_the_epoch(capsys) -> None:
    bars = Bars(tty=False, every=0.0)  # every event is due
    for done in (1, 2):
        bars.progress(Progress("train", done, 2, "training", 1, 3, 0.5, 0.75))
    stats = EpochStats(1, 0.5, 0.75, 0.4, 0.8, 1.0, 0.01)
    bars.progress(Progress("train", 2, 2, "training", 1, 3, 0.5, 0.75, stats))
    assert capsys.readouterr().err.splitlines() == [
        "epoch 1/3: batch 1/2, loss 0.500 acc 0.750",
        "epoch 1/3: batch 2/2, loss 0.500 acc 0.750",
        "epoch 1/3: train_loss 0.5000 train_acc 0.7500 val_loss 0.4000 val_acc 0.8000 (1.0s)",
    ]


def test_in_a_terminal_a_step_and_an_epoch_draw_tqdm_bars(monkeypatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    bars = Bars(tty=True)
    bars.progress(Progress("decode", 5, 10, "decoding images"))
    assert bars.bar is not None and bars.bar.n == 5 and not bars.bar.disable
    bars.progress(Progress("train", 3, 8, "training", 1, 2, 0.5, 0.75))
    assert bars.key == ("epoch", 1) and bars.bar.n == 3
    bars.close()
    assert "decoding images" in err.getvalue() and "epoch 1/2" in err.getvalue()


def test_train_reports_its_run_and_its_decoding_before_the_first_epoch(stripes, capsys) -> None:
    args = ["train", "--data", str(stripes), "--backbone", "small_cnn", "--strategy", "scratch"]
    assert main([*args, "--epochs", "1", "--batch-size", "8"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("run ") and "scratch on small_cnn" in err[0]
    decoding = next(i for i, line in enumerate(err) if line.startswith("decoding images"))
    first_batch = next(i for i, line in enumerate(err) if line.startswith("epoch 1/1: batch"))
    epoch = next(i for i, line in enumerate(err) if line.startswith("epoch 1/1: train_loss"))
    assert 0 < decoding < first_batch < epoch


def test_compare_reports_each_run_before_its_first_epoch(stripes, capsys):
    """Each run says it started first; the first decodes (the second reuses those pictures)."""
    args = ["compare", "--data", str(stripes), "--backbone", "small_cnn"]
    assert main([*args, "--strategies", "scratch", "--seeds", "2", "--epochs", "1"]) == 0
    err = capsys.readouterr().err.splitlines()
    for n in (1, 2):
        mine = [line for line in err if line.startswith(f"[{n}/2 scratch] ")]
        assert mine[0].startswith(f"[{n}/2 scratch] run "), mine
        assert "epoch 1/1: train_loss" in mine[-1]
    first = [line for line in err if line.startswith("[1/2 scratch] ")]
    assert "decoding images" in first[1]
