"""mmz train: learning, checkpoints, resuming after SIGKILL, DDP on CPU, bad settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from helpers import tiny_cubes

TINY = ["--width", "0.125", "--batch-size", "16", "--no-amp", "--norm", "batch"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the runs in pytest's process


@pytest.fixture(scope="module")
def project(tmp_path_factory, one_torch_thread):
    """A tiny-profile project with 400 labelled objects whose colours encode z."""
    return tiny_cubes(tmp_path_factory.mktemp("train"), n=400, shape=(320, 320))


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # torch's threads in a new process, as one_torch_thread here


def mmz_process(*args):
    """``mmz ARGS`` in a new interpreter, for the SIGKILL test; fails unless it exits 0."""
    return subprocess.run(
        [sys.executable, "-m", "mmzcli", *map(str, args)], capture_output=True, text=True, check=True, env=ONE_THREAD
    )


def test_training_learns_and_writes_the_run(project, run_mmz):
    # a constant rate and no early stop: 8 full epochs of learning (the recipe has tests of its own)
    fixed = ["--schedule", "constant", "--patience", "0"]
    code, _, err = run_mmz(
        "-q", "train", "--project", project, "--fold", 0, "--epochs", 8, "--name", "learn", *TINY, *fixed
    )
    assert code == 0, err
    run = project / "runs" / "learn"
    assert {"config.yaml", "fold0_seed0.pt", "metrics.json", "train.log", "oof.npz"} <= {p.name for p in run.iterdir()}
    result = json.loads((run / "metrics.json").read_text())
    history = result["models"][0]["history"]
    # the colours carry z: the scatter falls far below that of a guess from the z distribution alone
    assert history[-1]["train_loss"] < 0.9 * history[0]["train_loss"]
    z = zarr.open_group(str(project / "cubes.zarr"), mode="r")["z_spec"][:]
    z = z[np.isfinite(z)]
    guess = (np.median(z) - z) / (1 + z)
    assert min(h["val_sigma_mad"] for h in history) < 0.6 * 1.4826 * np.median(np.abs(guess - np.median(guess)))
    checkpoint = torch.load(run / "fold0_seed0.pt", weights_only=True)
    assert checkpoint["metrics"]["best_epoch"] == int(np.argmin([h["val_loss"] for h in history]))
    oof = np.load(run / "oof.npz")
    g = zarr.open_group(str(project / "cubes.zarr"), mode="r")
    assert set(oof["fold"]) == {0} and len(oof["id"]) == int(((g["fold"][:] == 0) & np.isfinite(g["z_spec"][:])).sum())
    np.testing.assert_allclose(oof["pdf"].sum(axis=1), 1.0, atol=1e-5)
    assert len((run / "train.log").read_text().splitlines()) == 9  # a start line and one line per epoch
    # the same command again finds the work done: the checkpoint is not written again
    stamp = (run / "fold0_seed0.pt").stat().st_mtime_ns
    code, _, err = run_mmz("train", "--project", project, "--fold", 0, "--epochs", 8, "--name", "learn", *TINY, *fixed)
    assert code == 0 and json.loads((run / "metrics.json").read_text())["models"] == result["models"], err
    assert (run / "fold0_seed0.pt").stat().st_mtime_ns == stamp


def _epochs_done(state: Path) -> int:
    try:
        return torch.load(state, weights_only=True)["epoch"] + 1
    except Exception:
        return 0


def test_killed_run_resumes_to_the_same_weights(project):
    # real processes: one to SIGKILL, and the straight and resumed runs in the same kind of process (own torch
    # threads and global state, not pytest's), as the weights are compared bit for bit
    args = ["--project", project, "--fold", 1, "--epochs", 4, *TINY]
    mmz_process("-q", "train", *args, "--name", "straight")
    process = subprocess.Popen(
        [sys.executable, "-m", "mmzcli", "-q", "train", *map(str, args), "--name", "killed"], env=ONE_THREAD
    )
    state = project / "runs" / "killed" / "fold1_seed0.state.pt"
    deadline = time.time() + 600
    while _epochs_done(state) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 2 <= _epochs_done(state) < 4, "the run must be killed between epochs 2 and 4"
    mmz_process("-q", "train", *args, "--name", "killed", "--resume")
    a = torch.load(project / "runs" / "straight" / "fold1_seed0.pt", weights_only=True)
    b = torch.load(project / "runs" / "killed" / "fold1_seed0.pt", weights_only=True)
    assert a["metrics"]["best_epoch"] == b["metrics"]["best_epoch"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)


def test_ddp_with_two_gloo_processes(project):
    # torchrun starts the ranks as processes; --standalone rendezvous on a free port (no fixed port to collide on)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "mmzcli",
        "-q",
        "train",
        "--project",
        str(project),
        "--fold",
        "2",
        "--epochs",
        "2",
        "--name",
        "ddp",
        "--device",
        "cpu",
        *TINY,
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=ONE_THREAD, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = project / "runs" / "ddp"
    assert (run / "fold2_seed0.pt").exists() and (run / "oof.npz").exists()
    assert "world size 2" in (run / "train.log").read_text()


def test_dry_run_prints_layout_and_parameter_count(run_mmz):
    code, out, err = run_mmz("train", "--profile", "hsc9", "--fusion", "early", "--dry-run")
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("parameters: ") and 0.95 * 12.51e6 < int(last.split()[1]) < 1.05 * 12.51e6


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fusion", "sideways"], "fusion"),
        (["--modalities", "g,r;r,q"], "'q'"),
        (["--profile", "hsc6"], "this project is for survey 'tiny'"),
    ],
)
def test_bad_settings(project, run_mmz, args, message):
    code, _, err = run_mmz("train", "--project", project, "--fold", 0, "--epochs", 1, *TINY, *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_bad_stores(tmp_path, project, run_mmz):
    code, _, err = run_mmz("train", "--project", tmp_path, "--profile", "tiny", *TINY)
    assert code == 2 and "cubes.zarr: no such store" in err
    # a store whose bands differ from the profile's
    other = tmp_path / "other"
    other.mkdir()
    (other / "cubes.zarr").symlink_to(project / "cubes.zarr")
    custom = tmp_path / "p.yaml"
    custom.write_text(
        "extends: tiny\nname: tiny\nbands:\n  - {name: z, filter: sdss_z0, wavelength: 8917, depth: 23,"
        " psf_fwhm: 0.7, zeropoint: 27, extinction: 1.263}\n"
    )
    code, _, err = run_mmz("train", "--project", other, "--profile", custom, *TINY)
    assert code == 2 and "differ from profile" in err
    # a store with no labelled object
    empty = tmp_path / "empty"
    src = zarr.open_group(str(project / "cubes.zarr"), mode="r")
    dst = zarr.open_group(str(empty / "cubes.zarr"), mode="w")
    arrays = ("cubes", "band_ok", "flags", "id", "ra", "dec", "ebv", "mag_ref", "fold", "norm/mean", "norm/std",
              "norm/fold_sums")  # fmt: skip
    for name in arrays:
        dst.create_array(name, data=src[name][:])
    dst.create_array("z_spec", data=np.full(src["z_spec"].shape, np.nan, np.float32))
    dst.attrs.update(dict(src.attrs))
    code, _, err = run_mmz("train", "--project", empty, "--profile", "tiny", *TINY)
    assert code == 2 and "no labelled object" in err


def _sorted_pixels(cube) -> np.ndarray:
    """Each band's pixel values, sorted: what flips and quarter turns leave unchanged."""
    return np.sort(np.asarray(cube).reshape(len(cube), -1), axis=1)


def test_streaming_from_zarr_yields_the_same_rows_and_values_as_the_resident_set(project):
    import torch

    from mmzcli.cubeset import CubeSet, labelled_rows

    g = zarr.open_group(str(project / "cubes.zarr"), mode="r")
    rows = labelled_rows(g)
    cpu = torch.device("cpu")
    resident = CubeSet(g, rows, cpu)
    stream = CubeSet(g, rows, cpu, memory_fraction=0.0, stream_chunks=3)
    assert resident.resident and not stream.resident
    held = torch.cat([b[0] for b in resident.batches(rows, 64)])  # in the order of rows
    seen = []
    for cubes, _ok, _ebv, z in stream.batches(rows, 16, np.random.default_rng(0)):
        index = [int(np.flatnonzero(resident.z == zz)[0]) for zz in z.numpy()]
        for got, row in zip(cubes, index, strict=True):  # each cube travels with its own label, the same values
            np.testing.assert_array_equal(_sorted_pixels(got), _sorted_pixels(held[np.searchsorted(rows, row)]))
            np.testing.assert_allclose(_sorted_pixels(got), _sorted_pixels(g["cubes"][row]), rtol=2e-3, atol=1e-3)
        seen.extend(index)
    assert len(seen) == len(set(seen)) and len(seen) > 0.8 * len(rows)  # no repeats; only pool remainders dropped
    in_order = torch.cat([b[0] for b in stream.batches(rows[:50], 16)])
    np.testing.assert_array_equal(in_order.numpy(), torch.cat([b[0] for b in resident.batches(rows[:50], 16)]).numpy())
    assert len(in_order) == 50  # without a generator: every row once, in order
