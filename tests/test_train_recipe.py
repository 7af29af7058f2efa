"""The training recipe: nothing of the held-out fold reaches its models; schedule and early stopping."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
import zarr
from helpers import mmz_ok, tiny_cubes

from mmzcli import store, train
from mmzcli.cubes import fold_of, inner_validation, training_subset
from mmzcli.cutout import compress
from mmzcli.runs import RunDir, load_checkpoint
from mmzcli.train import TrainConfig, learning_rate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--width", "0.125", "--batch-size", "16", "--no-amp", "--norm", "batch", "--fold", "0", "--name", "run"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, one_torch_thread):
    return tiny_cubes(tmp_path_factory.mktemp("recipe"), n=200)


def _held_out_rows(path):
    group = zarr.open_group(str(path / store.CUBES_NAME), mode="r")
    return np.flatnonzero(group["fold"][:] == 0)


def test_the_held_out_fold_never_touches_the_weights_of_its_models(project, tmp_path):
    """Every label and every pixel of fold 0 changed: the models of fold 0 are bit-identical.

    Before, fold 0 chose the best epoch and its pixels entered the normalisation.
    """
    other = tmp_path / "proj"
    shutil.copytree(project, other)
    rows = _held_out_rows(other)
    group = zarr.open_group(str(other / store.CUBES_NAME), mode="r+")
    z = group["z_spec"][:]
    z[rows] = np.where(np.isfinite(z[rows]), (z[rows] + 0.37) % 0.9, z[rows])  # other labels, still on the grid
    store.write_array(group, "z_spec", z)
    cubes = group["cubes"][:]
    cubes[rows] = cubes[rows] * 3.0 + 5.0  # other pixels
    store.write_array(group, "cubes", cubes)

    for where in (project, other):
        mmz_ok("-q", "train", "--project", where, "--epochs", "3", *TINY)
    a, b = (load_checkpoint(RunDir(p / "runs" / "run").model_path(0, 0)) for p in (project, other))
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert np.array_equal(a["model"][key].numpy(), b["model"][key].numpy()), key
    assert [h["val_loss"] for h in a["metrics"]["history"]] == [h["val_loss"] for h in b["metrics"]["history"]]
    assert a["metrics"]["validation"] == "inner"
    # the out-of-fold predictions do see fold 0: they differ, as the cubes do
    oof_a, oof_b = (np.load(RunDir(p / "runs" / "run").oof_path) for p in (project, other))
    assert not np.array_equal(oof_a["pdf"], oof_b["pdf"])


def test_the_normalisation_of_a_fold_comes_from_the_other_folds(project):
    """The network's buffers equal mean and std of the compressed pixels of the labelled objects of folds 1-4."""
    mmz_ok("-q", "train", "--project", project, "--epochs", "3", *TINY)  # (finished by the test above, if it ran)
    group = zarr.open_group(str(project / store.CUBES_NAME), mode="r")
    labelled = train.labelled_rows(store.open_store(project / store.CUBES_NAME))
    rows = labelled[group["fold"][:][labelled] != 0]
    cubes, band_ok = group["cubes"][:][rows], group["band_ok"][:][rows]
    model = load_checkpoint(RunDir(project / "runs" / "run").model_path(0, 0))["model"]
    for b in range(cubes.shape[1]):
        pixels = compress(cubes[band_ok[:, b], b].astype(np.float64))
        assert model["norm_mean"][b].item() == pytest.approx(pixels.mean(), rel=1e-5, abs=1e-6)
        assert model["norm_std"][b].item() == pytest.approx(pixels.std(), rel=1e-5)
    everything = group["norm/mean"][:]  # all folds: not what fold 0 trained with
    assert not np.allclose(everything, model["norm_mean"].numpy(), rtol=1e-6, atol=0)


def test_the_inner_validation_set_is_one_in_eight_and_independent_of_the_fold():
    ids = np.arange(1, 200_001, dtype=np.int64)
    inner = inner_validation(ids)
    assert inner.mean() == pytest.approx(1 / 8, abs=0.003)
    folds = fold_of(ids)
    for k in range(5):
        assert inner[folds == k].mean() == pytest.approx(1 / 8, abs=0.006)  # not tied to a fold


def test_the_learning_rate_warms_up_then_decays_to_its_floor():
    config = TrainConfig(lr=1e-3, warmup=0.1, min_lr=0.01)
    rates = [learning_rate(config, step, 1000) for step in range(1000)]
    assert rates[0] == pytest.approx(1e-5) and rates[99] == pytest.approx(1e-3)  # linear warm-up over 100 steps
    assert all(b > a for a, b in zip(rates[:99], rates[1:100]))
    assert all(b <= a for a, b in zip(rates[100:], rates[101:]))  # then only down
    assert rates[-1] == pytest.approx(1e-5, rel=0.01)  # to min_lr x peak
    assert rates[550] == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5), rel=0.01)  # half way: half the range
    assert learning_rate(TrainConfig(lr=1e-3, schedule="constant"), 7, 1000) == 1e-3
    assert learning_rate(TrainConfig(lr=1e-3, batch_size=128, scale_lr=True, schedule="constant"), 0, 10) == 4e-3


def _worsening_validation_loss(monkeypatch):
    """Every epoch's inner validation loss worse than the last: the best epoch is the first."""
    losses = iter(1.0 + 0.1 * np.arange(100))
    original = train.evaluate_rows

    def worsening(*args, **kwargs):
        pdfs, regs, _ = original(*args, **kwargs)
        return pdfs, regs, float(next(losses))

    monkeypatch.setattr(train, "evaluate_rows", worsening)


def test_training_stops_when_the_inner_validation_loss_stops_improving(project, monkeypatch, tmp_path):
    """Constant rate, patience 2, a validation loss that only worsens after epoch 1: 3 epochs of the 10 planned."""
    _worsening_validation_loss(monkeypatch)
    where = tmp_path / "p"
    shutil.copytree(project, where, ignore=shutil.ignore_patterns("runs"))
    mmz_ok("-q", "train", "--project", where, "--epochs", "10", "--patience", "2", "--schedule", "constant", *TINY)
    metrics = load_checkpoint(RunDir(where / "runs" / "run").model_path(0, 0))["metrics"]
    assert metrics["epochs_trained"] == 3 and metrics["best_epoch"] == 0
    assert "stopped after epoch 3" in (where / "runs" / "run" / "train.log").read_text()


def test_a_cosine_schedule_is_not_stopped_before_its_rate_has_decayed(project, monkeypatch, tmp_path):
    """The same worsening loss under the cosine: patience counts only in the last 20% of the epochs, so all 5 run.

    Before, patience stopped an hsc9 run at 16% of the peak rate and kept a worse model (docs/accuracy.md).
    """
    _worsening_validation_loss(monkeypatch)
    where = tmp_path / "p"
    shutil.copytree(project, where, ignore=shutil.ignore_patterns("runs"))
    mmz_ok("-q", "train", "--project", where, "--epochs", "5", "--patience", "1", *TINY)
    metrics = load_checkpoint(RunDir(where / "runs" / "run").model_path(0, 0))["metrics"]
    assert metrics["epochs_trained"] == 5 and metrics["best_epoch"] == 0
    rates = [h["lr"] for h in metrics["history"]]  # recorded per epoch: past the warm-up, the cosine decays
    assert 1e-3 > rates[0] > rates[1] > rates[2] > rates[3] > rates[4] > 1e-5
    assert "stopped after" not in (where / "runs" / "run" / "train.log").read_text()


@pytest.mark.parametrize(
    ("schedule", "best_epoch", "epoch", "stops"),
    [
        ("cosine", 28, 34, False),  # the hsc9 run that patience cut at 16% of the peak rate
        ("cosine", 28, 40, False),  # epochs 36-39 of the tail: 4 counted
        ("cosine", 28, 41, True),  # epochs 36-40: 5 counted
        ("cosine", 38, 43, False),
        ("cosine", 38, 44, True),
        ("constant", 28, 33, False),
        ("constant", 28, 34, True),
    ],
)
def test_patience_counts_the_epochs_of_the_annealed_tail(schedule, best_epoch, epoch, stops):
    config = TrainConfig(epochs=45, patience=5, schedule=schedule)
    assert train.stopped_early(config, best_epoch, epoch) is stops
    assert train.stopped_early(replace(config, patience=0), best_epoch, epoch) is False


def test_training_subsets_are_nested_and_leave_validation_and_held_out_objects_whole():
    ids = np.arange(1, 100_001, dtype=np.int64)
    rows, folds, inner = np.arange(len(ids)), fold_of(ids), inner_validation(ids)
    whole_train, whole_val = train.training_split(rows, folds, inner, 2)
    splits = {f: train.training_split(rows, folds, inner, 2, training_subset(ids, f)) for f in (0.25, 0.5, 1.0)}
    np.testing.assert_array_equal(splits[1.0][0], whole_train)
    for f, (train_rows, val_rows) in splits.items():
        np.testing.assert_array_equal(val_rows, whole_val)  # epochs are chosen on the same objects
        assert len(train_rows) == pytest.approx(f * len(whole_train), rel=0.03)
        assert not np.any(folds[train_rows] == 2) and not np.any(inner[train_rows])
    assert np.isin(splits[0.25][0], splits[0.5][0]).all()  # nested: a learning curve adds objects


def test_a_train_fraction_run_trains_on_its_share_and_old_runs_still_continue(project, tmp_path):
    where = tmp_path / "p"
    shutil.copytree(project, where, ignore=shutil.ignore_patterns("runs"))
    mmz_ok("-q", "train", "--project", where, "--epochs", "1", "--train-fraction", "0.5", *TINY[:-2])
    run = RunDir(where / "runs" / "early-concat-s2o1-bn-w0.125-f0.5")
    group = zarr.open_group(str(where / store.CUBES_NAME), mode="r")
    rows, ids = train.labelled_rows(group), group["id"][:]
    expected, _ = train.training_split(rows, group["fold"][:], inner_validation(ids), 0, training_subset(ids, 0.5))
    whole, _ = train.training_split(rows, group["fold"][:], inner_validation(ids), 0)
    assert 0.3 * len(whole) < len(expected) < 0.7 * len(whole)
    log = (run.path / "train.log").read_text()
    assert f"fold 0: training on {len(expected)} objects (50% of its training objects, --train-fraction)" in log
    assert load_checkpoint(run.model_path(0, 0))["metrics"]["train_objects"] == len(expected)
    settings = run.settings()
    assert settings["train"]["train_fraction"] == 0.5
    del settings["train"]["train_fraction"], settings["train"]["cube_dtype"]  # as a run of an older mmz wrote it
    assert train.settings_difference(settings, {**settings, "train": {**settings["train"], "train_fraction": 1.0,
                                                                      "cube_dtype": "float32"}}) is None  # fmt: skip
    assert train.settings_difference(settings, {**settings, "train": {**settings["train"], "train_fraction": 0.5}})


class _Batches:
    """What precise_batch_norm reads of a CubeSet: its device and training batches (here in order, as they are)."""

    def __init__(self, x):
        self.x, self.device = x, x.device

    def batches(self, rows, batch_size, rng):
        for start in range(0, len(rows), batch_size):
            x = self.x[rows[start : start + batch_size]]
            yield x, torch.ones(len(x), 1, dtype=torch.bool), torch.zeros(len(x)), torch.zeros(len(x))


class _Normalised(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(3)

    def forward(self, x, ebv, ok):
        return self.bn(x)


def test_precise_batch_norm_replaces_the_running_averages_by_the_plain_average_of_its_batches():
    gen = torch.Generator().manual_seed(0)
    scale, shift = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1), torch.tensor([5.0, -1.0, 0.0]).view(1, 3, 1, 1)
    x = torch.randn(200, 3, 4, 4, generator=gen) * scale + shift
    net = _Normalised()
    net.bn.running_mean.fill_(99.0)  # what training's running averages left
    config = TrainConfig(batch_size=16, precise_bn=64, amp=False)
    train.precise_batch_norm(net, _Batches(x), np.arange(200), config, seed=1)
    used = x[:64]  # four batches of 16: a plain average of their statistics, nothing of the 99
    assert torch.allclose(net.bn.running_mean, used.mean(dim=(0, 2, 3)), atol=1e-5)
    per_batch = torch.stack([used[i : i + 16].var(dim=(0, 2, 3)) for i in range(0, 64, 16)])
    assert torch.allclose(net.bn.running_var, per_batch.mean(0), atol=1e-4)
    assert int(net.bn.num_batches_tracked) == 4 and net.bn.momentum == 0.1  # training's momentum is back
    kept = net.bn.running_mean.clone()
    train.precise_batch_norm(net, _Batches(x + 7.0), np.arange(200), replace(config, precise_bn=0), seed=1)
    assert torch.equal(net.bn.running_mean, kept)  # --precise-bn 0: training's running averages stay


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--schedule", "step"),
        ("--warmup", "1.5"),
        ("--patience", "-1"),
        ("--train-fraction", "0"),
        ("--train-fraction", "1.5"),
        ("--precise-bn", "-1"),
    ],  # fmt: skip
)
def test_bad_recipe_options_are_one_line(project, run_mmz, option, value):
    code, _, err = run_mmz("train", "--project", project, "--epochs", "3", *TINY, option, value)
    assert code == 2 and "Traceback" not in err and option in err
