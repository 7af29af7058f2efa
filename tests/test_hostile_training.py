"""Hostile training: divergence, damaged or foreign checkpoints, training states beside models, respelled
projects, malformed run files.  Each is refused in one line (exit 2) or handled, never a traceback.

One store and one trained run are built per module; each scenario works on its own copy.
"""

from __future__ import annotations

import argparse
import os
import shutil

import pytest
import torch
import yaml
from astropy.io import fits
from helpers import mmz_ok, tiny_cubes

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--width", "0.125", "--batch-size", "16", "--no-amp", "--norm", "batch", "--fold", "0"]
ONE_EPOCH = [*TINY, "--epochs", "1"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, one_torch_thread):
    """A project with a complete cubes.zarr of a 'tiny' field, its tiles and catalogue beside it."""
    root = tmp_path_factory.mktemp("field")
    tiny_cubes(root, n=60)
    return root


@pytest.fixture(scope="module")
def trained(built, tmp_path_factory):
    """A copy of ``built`` with run 'a': fold 0 trained for one epoch."""
    root = tmp_path_factory.mktemp("trained")
    project = shutil.copytree(built / "proj", root / "proj")
    mmz_ok("-q", "train", "--project", project, "--name", "a", *ONE_EPOCH)
    return project


@pytest.fixture
def project(built, tmp_path):
    """A fresh copy of the built project, for one scenario."""
    return shutil.copytree(built / "proj", tmp_path / "proj")


@pytest.fixture
def run_project(trained, tmp_path):
    """A copy of the trained project, for one scenario to damage."""
    return shutil.copytree(trained, tmp_path / "proj")


def refused(code: int, err: str, *words: str) -> None:
    """Exit 2 with one line that holds ``words``: no traceback, and never torch's advice to unpickle code."""
    assert code == 2, err
    assert "Traceback" not in err and "weights_only" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err


def photoz_header(path):
    return fits.getheader(path, "PHOTOZ")


# ----------------------------------------------------------------------------- 1. options and divergence


@pytest.mark.parametrize(
    "args, words",
    [
        (["--lr", "-1"], ["--lr -1", "> 0"]),
        (["--lr", "0"], ["--lr 0", "> 0"]),
        (["--lr", "nan"], ["--lr nan", "finite"]),
        (["--lr", "inf"], ["--lr inf", "finite"]),
    ],
)
def test_a_learning_rate_that_cannot_train_is_refused(project, run_mmz, args, words):
    code, _, err = run_mmz("-q", "train", "--project", project, "--name", "r", *ONE_EPOCH, *args)
    refused(code, err, *words)
    assert not (project / "runs" / "r").exists()


@pytest.mark.parametrize("option", ["--epochs", "--batch-size"])
def test_zero_epochs_or_batch_size_is_refused(project, run_mmz, option):
    code, _, err = run_mmz("-q", "train", "--project", project, "--name", "r", *TINY, option, "0")
    assert code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if "Error" in line and option in line], err
    assert not (project / "runs" / "r").exists()


def test_divergence_stops_at_once_and_writes_no_model(project, run_mmz):
    run = project / "runs" / "hot"
    for _ in range(2):  # a second try is not skipped as "finished": it diverges again
        code, _, err = run_mmz("-q", "train", "--project", project, "--name", "hot", *ONE_EPOCH, "--lr", "1e12")
        refused(code, err, "fold 0 seed 0 diverged at epoch 1, step ", "lower --lr (now 1e+12)", "--name")
        assert not (run / "fold0_seed0.pt").exists() and not (run / "fold0_seed0.state.pt").exists()
    code, _, err = run_mmz("-q", "predict", "--cubes", "-o", project / "cat.fits", "--project", project)
    refused(code, err, "no trained run")


def test_divergence_keeps_the_last_good_epoch_which_resumes(project, run_mmz, monkeypatch):
    from mmzcli import model

    run = project / "runs" / "late"
    state = run / "fold0_seed0.state.pt"
    loss_fn = model.loss_fn

    def nan_after_the_first_epoch(*args):  # the training loss of epoch 2 on is NaN; validation stays finite
        loss = loss_fn(*args)
        return loss * float("nan") if torch.is_grad_enabled() and state.exists() else loss

    monkeypatch.setattr(model, "loss_fn", nan_after_the_first_epoch)
    args = ["-q", "train", "--project", project, "--name", "late", *TINY, "--epochs", "2"]
    code, _, err = run_mmz(*args)
    refused(code, err, "fold 0 seed 0 diverged at epoch 2, step 1 (loss nan)", "lower --lr (now 0.001)")
    assert not (run / "fold0_seed0.pt").exists()
    kept = torch.load(state, weights_only=True)
    assert kept["format"] == "mmz-train-state" and kept["epoch"] == 0 and kept["best_model"]
    # a kill in the middle of an atomic write leaves a hidden temporary file beside the state
    (run / ".fold0_seed0.state.pt.999.tmp.pt").write_bytes(b"half a file")
    monkeypatch.setattr(model, "loss_fn", loss_fn)
    code, _, err = run_mmz(*args)
    assert code == 0, err
    assert "resuming after epoch 1" in (run / "train.log").read_text()
    finished = torch.load(run / "fold0_seed0.pt", weights_only=True)
    assert finished["format"] == "mmz-model" and finished["format_version"] == 1
    assert [h["epoch"] for h in finished["metrics"]["history"]] == [0, 1] and not state.exists()


def test_a_damaged_training_state_is_trained_again(project, run_mmz):
    run = project / "runs" / "s"
    run.mkdir(parents=True)
    (run / "fold0_seed0.state.pt").write_bytes(b"PK\x03\x04 truncated")
    code, _, err = run_mmz("-q", "train", "--project", project, "--name", "s", *ONE_EPOCH)
    assert code == 0, err
    assert "holds no usable training state" in (run / "train.log").read_text()
    assert torch.load(run / "fold0_seed0.pt", weights_only=True)["model"]


def test_the_training_state_of_another_network_is_trained_again(project, run_mmz):
    from mmzcli.model import PhotoZNet
    from mmzcli.profiles import load_profile
    from mmzcli.runs import STATE_FORMAT, checkpoint_of
    from mmzcli.train import RunSpec, model_config

    run = project / "runs" / "s"
    run.mkdir(parents=True)
    wider = PhotoZNet(model_config(RunSpec(width=0.25, norm="batch"), load_profile("tiny")))  # copied in by hand
    state = {"model": wider.state_dict(), "optimizer": {}, "epoch": 3, "best": {"loss": 1.0, "epoch": 3},
             "best_model": wider.state_dict(), "history": []}  # fmt: skip
    torch.save(checkpoint_of(STATE_FORMAT, state), run / "fold0_seed0.state.pt")
    code, _, err = run_mmz("-q", "train", "--project", project, "--name", "s", *ONE_EPOCH)
    assert code == 0, err
    assert "is the state of another network" in (run / "train.log").read_text()
    trained = torch.load(run / "fold0_seed0.pt", weights_only=True)["metrics"]
    assert [h["epoch"] for h in trained["history"]] == [0]  # from its first epoch


# ----------------------------------------------------------------------------- 2. checkpoints that are not models


def _checkpoint(run):
    return torch.load(run / "fold0_seed0.pt", weights_only=True)


def _save(run, make):
    """Replace run 'a''s model with ``make(its checkpoint)``: a dict to torch.save, or raw bytes."""
    path = run / "fold0_seed0.pt"
    content = make(_checkpoint(run))
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)


# damage -> words of the refusal (besides the file's name)
NOT_A_MODEL = {
    "truncated": (lambda c: None, "damaged or truncated"),
    "not a torch file": (lambda c: b"not a checkpoint at all\n", "not a torch file"),
    "empty file": (lambda c: b"", "an empty file"),
    "a foreign torch file": (lambda c: {"state_dict": c["model"]}, "mmz's format marker"),
    "a torch file of a list": (lambda c: [1, 2, 3], "a torch file of a list"),
    "a pickle of code": (lambda c: {**c, "config": argparse.Namespace(width=1.0)}, "Python objects"),
    "diverged: no weights": (lambda c: {**c, "model": None}, "no weights"),
    "a training state": (lambda c: {**c, "format": "mmz-train-state"}, "'mmz-train-state'"),
    "marker without model": (lambda c: {k: v for k, v in c.items() if k != "model"}, "no 'model'"),
    "config not a mapping": (lambda c: {**c, "config": "early"}, "'config' is a str"),
}


@pytest.mark.parametrize("damage", NOT_A_MODEL)
def test_predict_refuses_a_file_that_is_not_a_finished_model(run_project, run_mmz, damage):
    make, words = NOT_A_MODEL[damage]
    run = run_project / "runs" / "a"
    if damage == "truncated":
        path = run / "fold0_seed0.pt"
        path.write_bytes(path.read_bytes()[:2000])
    else:
        _save(run, make)
    code, _, err = run_mmz("-q", "predict", "--cubes", "-o", run_project / "cat.fits", "--project", run_project)
    refused(code, err, "fold0_seed0.pt: not a finished mmz model", words, "retrain it", "remove the file")
    assert not (run_project / "cat.fits").exists()


def test_train_replaces_a_model_without_weights(run_project, run_mmz):
    run = run_project / "runs" / "a"
    _save(run, lambda c: {k: v for k, v in c.items() if k not in ("format", "format_version")} | {"model": None})
    code, _, err = run_mmz("-q", "train", "--project", run_project, "--name", "a", *ONE_EPOCH)
    assert code == 0, err
    assert _checkpoint(run)["model"], "the model was trained again"
    assert "holds no usable model; training it again" in (run / "train.log").read_text()


def test_a_newer_checkpoint_is_refused_and_kept(run_project, run_mmz):
    run = run_project / "runs" / "a"
    _save(run, lambda c: {**c, "format_version": 99})
    before = (run / "fold0_seed0.pt").read_bytes()
    code, _, err = run_mmz("-q", "predict", "--cubes", "-o", run_project / "cat.fits", "--project", run_project)
    refused(code, err, "format version 99", "upgrade mmz")
    code, _, err = run_mmz("-q", "train", "--project", run_project, "--name", "a", *ONE_EPOCH)
    refused(code, err, "format version 99", "upgrade mmz")
    assert (run / "fold0_seed0.pt").read_bytes() == before


def test_models_written_before_the_marker_still_predict(run_project, run_mmz):
    run = run_project / "runs" / "a"
    _save(run, lambda c: {k: v for k, v in c.items() if k not in ("format", "format_version")})
    code, _, err = run_mmz("-q", "predict", "--cubes", "-o", run_project / "cat.fits", "--project", run_project)
    assert code == 0, err
    assert photoz_header(run_project / "cat.fits")["NMODELS"] == 1


# ----------------------------------------------------------------------------- 3. training states are not models


def _training_state(run, fold):
    """A model of ``run`` in training: its state file, the form mmz train writes after each epoch."""
    checkpoint = _checkpoint(run)
    torch.save(
        {
            "format": "mmz-train-state",
            "format_version": 1,
            "model": checkpoint["model"],
            "optimizer": {},
            "epoch": 0,
            "best": {"loss": 1.0, "epoch": 0},
            "best_model": checkpoint["model"],
            "history": [],
        },
        run / f"fold{fold}_seed0.state.pt",
    )


def test_predict_uses_finished_models_only_while_others_train(built, run_project, run_mmz):
    from mmzcli.runs import resolve_run

    run = run_project / "runs" / "a"
    _training_state(run, fold=1)  # run 'a' trains fold 1
    newer = run_project / "runs" / "b"  # run 'b', started after 'a', has no finished model yet
    newer.mkdir()
    shutil.copy(run / "config.yaml", newer / "config.yaml")
    shutil.copy(run / "fold1_seed0.state.pt", newer / "fold0_seed0.state.pt")
    later = (run / "fold0_seed0.pt").stat().st_mtime + 100
    for path in newer.iterdir():
        os.utime(path, (later, later))
    assert resolve_run(run_project, None).name == "a"
    cat = run_project / "oof.fits"
    code, _, err = run_mmz("-q", "predict", "--cubes", "-o", cat, "--project", run_project)
    assert code == 0, err
    assert photoz_header(cat)["NMODELS"] == 1 and photoz_header(cat)["RUN"] == "a"
    tiles = sorted((built / "tiles").glob("*.fits"))
    cat = run_project / "tiles.fits"
    code, _, err = run_mmz(
        "-q", "predict", *tiles, "--catalog", built / "specz.fits", "-o", cat, "--project", run_project, "--no-amp"
    )
    assert code == 0, err
    assert photoz_header(cat)["NMODELS"] == 1 and photoz_header(cat)["RUN"] == "a"


# ----------------------------------------------------------------------------- 4. resuming, however P is spelled


def test_resuming_does_not_depend_on_how_the_project_is_spelled(project, run_mmz, monkeypatch):
    code, _, err = run_mmz("-q", "train", "--project", project, *ONE_EPOCH)
    assert code == 0, err
    (run,) = (project / "runs").iterdir()
    model = run / "fold0_seed0.pt"
    stamp = model.stat().st_mtime_ns
    monkeypatch.chdir(project)
    code, _, err = run_mmz("train", "--project", ".", *ONE_EPOCH)
    assert code == 0, err
    assert "fold 0 seed 0: finished (fold0_seed0.pt); not trained again" in err
    assert model.stat().st_mtime_ns == stamp
    # another setting is refused: which one, and how to keep both runs (never by deleting this one)
    code, _, err = run_mmz("-q", "train", "--project", ".", *ONE_EPOCH, "--lr", "0.002")
    refused(code, err, "config.yaml", "train.lr: 0.001 there, 0.002 now", "--name")
    assert "remove" not in err and model.exists()


def test_a_store_rebuilt_from_other_inputs_is_another_setting(run_project, run_mmz):
    config = run_project / "runs" / "a" / "config.yaml"
    settings = yaml.safe_load(config.read_text())
    assert settings["store"]["inputs_key"]  # the store counts by content
    settings["store"]["inputs_key"] = "0123456789abcdef"
    config.write_text(yaml.safe_dump(settings))
    code, _, err = run_mmz("-q", "train", "--project", run_project, "--name", "a", *ONE_EPOCH)
    refused(code, err, "store.inputs_key: '0123456789abcdef' there")


def test_runs_that_recorded_the_store_path_still_resume(run_project, run_mmz):
    config = run_project / "runs" / "a" / "config.yaml"
    settings = yaml.safe_load(config.read_text())
    settings["store"] = "some/other/spelling/cubes.zarr"  # config.yaml of runs trained before inputs_key
    del settings["store_path"]
    config.write_text(yaml.safe_dump(settings))
    stamp = (run_project / "runs" / "a" / "fold0_seed0.pt").stat().st_mtime_ns
    code, _, err = run_mmz("-q", "train", "--project", run_project, "--name", "a", *ONE_EPOCH)
    assert code == 0, err
    assert (run_project / "runs" / "a" / "fold0_seed0.pt").stat().st_mtime_ns == stamp


# ----------------------------------------------------------------------------- 5. malformed run files

RUN_FILES = {  # run file, its new content, the command -> words of the refusal
    "profile.yaml: bad YAML": ("profile.yaml", "bands: [g, r\n", "predict", ["profile.yaml: malformed YAML"]),
    "profile.yaml: invalid": ("profile.yaml", "name: tiny\n", "predict", ["profile.yaml", "missing required key"]),
    "profile.yaml: a list": ("profile.yaml", "- g\n- r\n", "predict", ["profile.yaml", "mapping"]),
    "config.yaml: bad YAML": ("config.yaml", "model: {width: [\n", "train", ["config.yaml: malformed YAML"]),
    "config.yaml: a string": ("config.yaml", "just words\n", "train", ["config.yaml", "mapping"]),
}


@pytest.mark.parametrize("case", RUN_FILES)
def test_malformed_run_files_are_refused_in_one_line(run_project, run_mmz, case):
    name, text, command, words = RUN_FILES[case]
    (run_project / "runs" / "a" / name).write_text(text)
    if command == "predict":
        code, _, err = run_mmz("-q", "predict", "--cubes", "-o", run_project / "c.fits", "--project", run_project)
    else:
        code, _, err = run_mmz("-q", "train", "--project", run_project, "--name", "a", *ONE_EPOCH)
    refused(code, err, *words)


def test_resume_of_a_missing_run_is_refused(project, run_mmz):
    code, _, err = run_mmz("-q", "train", "--project", project, "--name", "nope", "--resume", *ONE_EPOCH)
    refused(code, err, "--resume: no run 'nope'")
