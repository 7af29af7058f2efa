"""build-cubes: labels, folds, normalisation, project config, and resuming after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from helpers import survey_field

from mmzcli.cubes import fold_of
from mmzcli.cutout import compress
from mmzcli.flags import Flag


def test_folds_are_deterministic_balanced_and_order_free():
    ids = np.arange(100_000, dtype=np.int64) * 7 + 3
    folds = fold_of(ids)
    assert set(np.unique(folds)) == {0, 1, 2, 3, 4}
    assert np.all(np.abs(np.bincount(folds) / len(ids) - 0.2) < 0.01)
    shuffled = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_array_equal(fold_of(ids[shuffled]), folds[shuffled])
    assert fold_of(np.array([-5, 2**62])).dtype == np.int8


def test_build_cubes_writes_labelled_normalised_store(tmp_path, run_mmz):
    tiles, catalog = survey_field(tmp_path, n=60)
    project = tmp_path / "proj"
    code, _, err = run_mmz(
        "-q",
        "build-cubes",
        "--survey",
        "tiny",
        "--project",
        project,
        "--tiles",
        f"{tiles}/*.fits",
        "--catalog",
        catalog,
    )
    assert code == 0, err
    g = zarr.open_group(str(project / "cubes.zarr"), mode="r")
    assert g["cubes"].shape == (60, 3, 32, 32) and g["cubes"].chunks == (32, 3, 32, 32)
    assert g.attrs["complete"] and g.attrs["bands"] == ["g", "r", "i"] and g.attrs["n_labelled"] == 59
    z, flags = g["z_spec"][:], g["flags"][:]
    assert np.isnan(z[0]) and flags[0] & Flag.NO_ZSPEC and not np.isnan(z[1:]).any()
    np.testing.assert_array_equal(g["fold"][:], fold_of(g["id"][:]))
    assert g["mag_ref"].dtype == np.float32 and g["ebv"][:].max() <= 0.1
    labelled = ~np.isnan(z)
    cubes = compress(g["cubes"][:][labelled].astype(np.float64))
    np.testing.assert_allclose(g["norm/mean"][:], cubes.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g["norm/std"][:], cubes.std(axis=(0, 2, 3)), rtol=1e-5)

    # the project now remembers its inputs: a bare command finds a complete store and leaves it alone
    stamp = (project / "cubes.zarr" / "zarr.json").stat().st_mtime_ns
    code, _, err = run_mmz("build-cubes", "--project", project)
    assert code == 0 and "nothing to do" in err
    assert (project / "cubes.zarr" / "zarr.json").stat().st_mtime_ns == stamp
    code, _, err = run_mmz("-q", "build-cubes", "--project", project, "--overwrite")
    assert code == 0, err
    assert "build-cubes" in (project / "mmz.yaml").read_text()


def _blocks_done(partial):
    try:
        return len(json.loads((partial / "zarr.json").read_text())["attributes"]["blocks_done"])
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_build_resumes_to_the_same_store(tmp_path, run_mmz):
    tiles, catalog = survey_field(tmp_path, n=4000, shape=(400, 400), noise=0.05)
    args = ["-q", "build-cubes", "--survey", "tiny", "--tiles", f"{tiles}/*.fits", "--catalog", str(catalog)]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    code, _, err = run_mmz(*args, "--project", reference)
    assert code == 0, err

    partial = resumed / "cubes.zarr.partial"
    # SIGKILL needs a process of its own to kill: this build alone runs outside pytest
    process = subprocess.Popen([sys.executable, "-m", "mmzcli", *args, "--project", str(resumed)])
    deadline = time.time() + 60
    while _blocks_done(partial) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = _blocks_done(partial)
    assert 2 <= done < 16, "the build must be killed in the middle (16 blocks in all)"
    assert not (resumed / "cubes.zarr").exists()

    code, _, err = run_mmz(*args, "--project", resumed)
    assert code == 0, err
    a = zarr.open_group(str(reference / "cubes.zarr"), mode="r")
    b = zarr.open_group(str(resumed / "cubes.zarr"), mode="r")
    assert sorted(b.attrs["blocks_done"]) == list(range(0, 4000, 256))
    for name in ("cubes", "band_ok", "flags", "id", "z_spec", "fold", "norm/mean", "norm/std"):
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
    assert len(np.unique(b["id"][:])) == 4000
    assert not (resumed / "cubes.zarr.partial").exists()


def test_a_block_and_its_running_sums_are_recorded_in_one_write(tmp_path, monkeypatch):
    """A kill between two metadata writes would leave blocks_done ahead of the sums (seen in CI)."""
    from zarr.core.group import AsyncGroup

    from mmzcli import store

    group = store.open_for_writing(
        tmp_path / "s.zarr",
        key="k",
        n=4,
        bands=["g", "r"],
        size=8,
        image_name="cubes",
        columns={"id": np.arange(4)},
        attrs={},
        overwrite=False,
    )
    writes = []
    save = AsyncGroup._save_metadata
    monkeypatch.setattr(AsyncGroup, "_save_metadata", lambda self, *a, **k: writes.append(1) or save(self, *a, **k))
    store.write_block(
        group,
        "cubes",
        0,
        np.ones((2, 2, 8, 8), np.float32),
        np.ones((2, 2), bool),
        np.zeros(2, np.int32),
        {"norm_sums": [[1.0, 2.0]], "other": 3},
    )
    assert len(writes) == 1
    attrs = zarr.open_group(str(store.partial_path(tmp_path / "s.zarr")), mode="r").attrs
    assert attrs["blocks_done"] == [0] and attrs["norm_sums"] == [[1.0, 2.0]] and attrs["other"] == 3


@pytest.mark.parametrize("option", ["--tiles", "--catalog"])
def test_missing_inputs_are_named(tmp_path, run_mmz, option):
    tiles, catalog = survey_field(tmp_path, n=5)
    args = {"--tiles": ["--catalog", catalog], "--catalog": ["--tiles", f"{tiles}/*.fits"]}[option]
    code, _, err = run_mmz("build-cubes", "--survey", "tiny", "--project", tmp_path / "p", *args)
    assert code == 2 and option in err and "mmz.yaml" in err
    assert not os.path.exists(tmp_path / "p" / "cubes.zarr")
