"""The training engine: cubes held in 16 bits on the device, augmentation there, several models at once."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr
from helpers import mmz_ok, tiny_cubes

from mmzcli import store
from mmzcli.cubeset import CubeSet, augment, labelled_rows
from mmzcli.errors import ConfigError
from mmzcli.runs import RunDir, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NET = ["--width", "0.125", "--batch-size", "16", "--no-amp", "--norm", "batch"]
TINY = [*NET, "--epochs", "2"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def project(tmp_path_factory, one_torch_thread):
    return tiny_cubes(tmp_path_factory.mktemp("engine"), n=160)


def test_augmentation_draws_each_symmetry_of_the_square_equally():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    symmetries = [torch.rot90(im, k, (-2, -1)) for im in (image, image.flip(-1)) for k in range(4)]
    torch.manual_seed(0)
    out = augment(image.expand(8000, 1, 4, 4).contiguous())
    which = torch.stack([(out == s).flatten(1).all(1) for s in symmetries])  # [8, n]
    assert torch.all(which.sum(0) == 1)  # every output is exactly one of the 8 symmetries of its input
    counts = which.sum(1)
    assert torch.all((counts > 850) & (counts < 1150)), counts  # 1000 each, +-5 sigma


@pytest.mark.parametrize(("dtype", "tolerance"), [("float16", 1e-3), ("float32", 1e-6)])
def test_held_cubes_give_back_the_raw_pixels_within_their_precision(project, dtype, tolerance):
    group = store.open_store(project / store.CUBES_NAME)
    rows = labelled_rows(group)
    held = CubeSet(group, rows, CPU, dtype=dtype)
    x, ok, _ebv, z = next(held.batches(rows[:40], 40))
    raw = group["cubes"][rows[:40]]
    assert np.all(np.abs(x.numpy() - raw) <= tolerance * (np.abs(raw) + 1))
    assert held.bytes == len(rows) * raw[0].size * getattr(torch, dtype).itemsize  # half the memory in float16
    np.testing.assert_array_equal(z.numpy(), group["z_spec"][rows[:40]])
    np.testing.assert_array_equal(ok.numpy(), group["band_ok"][rows[:40]])


def test_pixels_beyond_float16_even_compressed_are_refused_with_what_to_do(project, tmp_path):
    import shutil

    other = tmp_path / "proj"
    shutil.copytree(project, other)
    group = zarr.open_group(str(other / store.CUBES_NAME), mode="r+")
    cubes = group["cubes"][:]
    cubes[3, 0, 10, 10] = 1e10  # compressed: 1e5, more than float16 holds
    store.write_array(group, "cubes", cubes)
    reader = store.open_store(other / store.CUBES_NAME)
    with pytest.raises(ConfigError, match=r"cubes.zarr: compressed pixel values reach .* --cube-dtype float32"):
        CubeSet(reader, labelled_rows(reader), CPU)
    held = CubeSet(reader, labelled_rows(reader), CPU, dtype="float32")
    assert held.resident


def test_models_trained_at_once_in_processes_are_those_trained_one_by_one(project):
    mmz_ok("-q", "train", "--project", project, "--folds", "2", *TINY, "--name", "one")
    mmz_ok("-q", "train", "--project", project, "--folds", "2", *TINY, "--name", "two", "--jobs", "2")
    one, two = RunDir(project / "runs" / "one"), RunDir(project / "runs" / "two")
    for fold in (0, 1):
        a, b = (load_checkpoint(r.model_path(fold, 0)) for r in (one, two))
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (fold, key)
        assert [h["val_loss"] for h in a["metrics"]["history"]] == [h["val_loss"] for h in b["metrics"]["history"]]
    np.testing.assert_array_equal(np.load(one.oof_path)["pdf"], np.load(two.oof_path)["pdf"])
    log = two.log_path.read_text()
    assert "2 models, 2 at a time" in log and log.count("epoch 2: train loss") == 2  # the workers log too
    recorded = yaml.safe_load(one.config_path.read_text())["train"]
    assert recorded["channels_last"] is True and recorded["cube_dtype"] == "float16"  # the CPU's layout, recorded


def _children(pid: int) -> list[int]:
    """Worker processes (multiprocessing spawn) whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_a_killed_train_leaves_no_model_training_behind(project, tmp_path):
    """SIGKILL of mmz train --jobs: its workers exit too, so none writes a run whose lock is gone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [
        "train",
        "--project",
        str(project),
        "--folds",
        "2",
        *NET,
        "--epochs",
        "50",
        "--name",
        "killed",
        "--jobs",
        "2",
    ]
    parent = subprocess.Popen([sys.executable, "-m", "mmzcli", "-q", *args])  # a real process, to be killed
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers := _children(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(workers) == 2
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 30  # a loaded 2-core machine: seconds to notice
        while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = [w for w in workers if Path(f"/proc/{w}").exists() and b"Z" not in _state(w)]
        assert not alive, f"workers {alive} outlived their mmz train"
    finally:
        parent.kill()
        for w in workers:
            if Path(f"/proc/{w}").exists():
                os.kill(w, signal.SIGKILL)


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return b"Z"


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [("--cube-dtype", "half", "expected float16 or float32"), ("--memory-format", "nhwc", "expected auto, nchw")],
)
def test_unknown_engine_choices_are_refused_in_one_line(run_mmz, project, option, value, expected):
    code, _, err = run_mmz("train", "--project", project, *TINY, "--name", "bad", option, value)
    assert code == 2 and f"{option} {value}: {expected}" in err and len(err.strip().splitlines()) == 1
    assert not (project / "runs" / "bad").exists()


def test_the_epoch_rate_leaves_out_the_warm_up_of_its_first_steps():
    from mmzcli.train import SYNC_EVERY, EpochLosses

    class Quiet:
        def step(self, *args, **kwargs):
            pass

    losses = EpochLosses(0, 0, 0, 1e-3, Quiet())
    for i in range(SYNC_EVERY):  # the first group: a slow step, as a compiling one
        if i == 0:
            time.sleep(0.5)
        losses.add(torch.tensor(1.0), 32)
    for _ in range(SYNC_EVERY):
        losses.add(torch.tensor(1.0), 32)
    whole_epoch = losses.samples / (time.perf_counter() - losses.started)
    assert losses.rate > 5 * whole_epoch  # the steady rate, not one diluted by the warm-up


def test_a_running_mps_daemon_is_recognised_by_its_control_pipe(tmp_path, monkeypatch):
    from mmzcli.device import mps_running

    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    assert not mps_running()
    (tmp_path / "control").touch()
    assert mps_running()
