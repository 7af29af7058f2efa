"""Hostile outputs: an output never destroys an input or a stranger's file, and has one writer at a time.

Each scenario runs on its own copy of one small project (a field, its cubes and a tiny run trained once)
and must exit 2 with one line, leaving every file of the project as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys

import pytest
from helpers import mmz_ok, run_cli, survey_field

from mmzcli.outputs import hold_catalogue_lock, hold_lock, hold_run_lock, lock_path, releases_locks

TINY = ["--width", "0.125", "--epochs", "1", "--fold", "0", "--norm", "batch", "--batch-size", "16", "--no-amp"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A project: tiles/, specz.fits, cubes.zarr and runs/run (one fold, one epoch)."""
    root = tmp_path_factory.mktemp("hostile") / "proj"
    root.mkdir()
    tiles, catalog = survey_field(root)
    mmz_ok(
        "-q", "build-cubes", "--survey", "tiny", "--project", root, "--tiles", f"{tiles}/*.fits", "--catalog", catalog
    )
    mmz_ok("-q", "train", "--project", root, "--name", "run", *TINY)
    return root


@pytest.fixture
def project(built, tmp_path):
    """A copy of the project, for one scenario to attack."""
    return shutil.copytree(built, tmp_path / "proj", symlinks=True)


def snapshot(root):
    """Every entry under ``root``: a file's sha256, a link's target, or "dir"."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            key = os.path.relpath(path, root)
            if os.path.islink(path):
                entries[key] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                entries[key] = "dir"
            else:
                with open(path, "rb") as f:
                    entries[key] = hashlib.sha256(f.read()).hexdigest()
    return entries


def _tiles(p):
    return sorted((p / "tiles").glob("*.fits"))


def _predict(p, output, *extra):
    return [
        "predict",
        *_tiles(p),
        "--catalog",
        p / "specz.fits",
        "--project",
        p,
        "--run",
        "run",
        "--no-amp",
        "--device",
        "cpu",
        "-o",
        output,
        *extra,
    ]


def _cutout(p, output, *extra):
    return ["cutout", *_tiles(p), "--catalog", p / "specz.fits", "--profile", "tiny", "-o", output, *extra]


def _foreign_folder(p):
    (p / "mine").mkdir()
    (p / "mine" / "thesis.tex").write_text("years of work\n")


def _foreign_cubes(p):
    shutil.rmtree(p / "cubes.zarr")
    _foreign_folder(p)
    (p / "mine").rename(p / "cubes.zarr")


# scenario -> (prepare the project, the command, words the one-line refusal must hold)
SCENARIOS = {
    "predict -o a tile": (
        None,
        lambda p: _predict(p, p / "tiles" / "tile-0000-i.fits"),
        ["that is an input (tile", "choose another"],
    ),
    "predict -o a tile --overwrite": (
        None,
        lambda p: _predict(p, p / "tiles" / "tile-0000-i.fits", "--overwrite"),
        ["that is an input (tile"],
    ),
    "predict -o the catalogue --overwrite": (
        None,
        lambda p: _predict(p, p / "specz.fits", "--overwrite"),
        ["that is an input (catalogue"],
    ),
    "predict -o a symlink to a tile --overwrite": (
        lambda p: (p / "link.fits").symlink_to(p / "tiles" / "tile-0000-i.fits"),
        lambda p: _predict(p, p / "link.fits", "--overwrite"),
        ["that is an input (tile"],
    ),
    "predict -o a hard link to the catalogue --overwrite": (
        lambda p: os.link(p / "specz.fits", p / "same.fits"),
        lambda p: _predict(p, p / "same.fits", "--overwrite"),
        ["that is an input (catalogue"],
    ),
    "predict -o a model of the run --overwrite": (
        None,
        lambda p: _predict(p, p / "runs" / "run" / "fold0_seed0.pt", "--overwrite"),
        ["(run file"],
    ),
    "predict -o the tiles folder --overwrite": (
        None,
        lambda p: _predict(p, p / "tiles", "--overwrite"),
        ["an input lies inside it (tile"],
    ),
    "predict -o X whose X.partial is a link to a tile": (
        lambda p: (p / "cat.fits.partial").symlink_to(p / "tiles" / "tile-0000-i.fits"),
        lambda p: _predict(p, p / "cat.fits"),
        ["cat.fits.partial would be written over an input (tile"],
    ),
    "predict -o an empty folder --overwrite": (
        lambda p: (p / "out").mkdir(),
        lambda p: _predict(p, p / "out", "--overwrite"),
        ["a directory is there"],
    ),
    "predict -o a text file --overwrite": (
        lambda p: (p / "notes.txt").write_text("mine\n"),
        lambda p: _predict(p, p / "notes.txt", "--overwrite"),
        ["not a catalogue mmz wrote", "remove it yourself"],
    ),
    "predict -o a FITS table mmz did not write --overwrite": (
        lambda p: shutil.copy(p / "specz.fits", p / "other.fits"),
        lambda p: _predict(p, p / "other.fits", "--overwrite"),
        ["not a catalogue mmz wrote"],
    ),
    "predict -o X whose X.partial is a stranger's": (
        lambda p: (p / "cat.fits.partial").write_text("mine\n"),
        lambda p: _predict(p, p / "cat.fits"),
        ["cat.fits.partial beside it is not an unfinished catalogue"],
    ),
    "predict -o X whose X.parts is a stranger's folder": (
        lambda p: ((p / "cat.fits.parts").mkdir(), (p / "cat.fits.parts" / "notes.txt").write_text("mine\n")),
        lambda p: _predict(p, p / "cat.fits"),
        ["cat.fits.parts beside it is not mmz's folder"],
    ),
    "predict --cubes -o the run's oof.npz --overwrite": (
        None,
        lambda p: [
            "predict",
            "--cubes",
            "--project",
            p,
            "--run",
            "run",
            "-o",
            p / "runs" / "run" / "oof.npz",
            "--overwrite",
        ],
        ["that is an input (run file"],
    ),
    "predict --cubes -o the cube store --overwrite": (
        None,
        lambda p: ["predict", "--cubes", "--project", p, "--run", "run", "-o", p / "cubes.zarr", "--overwrite"],
        ["that is an input (project store"],
    ),
    "cutout -o a tile": (None, lambda p: _cutout(p, p / "tiles" / "tile-0000-g.fits"), ["that is an input (tile"]),
    "cutout -o the tiles folder": (None, lambda p: _cutout(p, p / "tiles"), ["an input lies inside it (tile"]),
    "cutout -o the catalogue --overwrite": (
        None,
        lambda p: _cutout(p, p / "specz.fits", "--overwrite"),
        ["that is an input (catalogue"],
    ),
    "cutout -o a stranger's folder --overwrite": (
        _foreign_folder,
        lambda p: _cutout(p, p / "mine", "--overwrite"),
        ["not a stamp store mmz wrote"],
    ),
    "cutout -o the project's cube store --overwrite": (
        None,
        lambda p: _cutout(p, p / "cubes.zarr", "--overwrite"),
        ["is mmz's cube store, not a stamp store"],
    ),
    "cutout -o a text file": (
        lambda p: (p / "notes.txt").write_text("mine\n"),
        lambda p: _cutout(p, p / "notes.txt"),
        ["a file is there", "stamp store (a directory)"],
    ),
    "build-cubes where cubes.zarr is a stranger's folder": (
        _foreign_cubes,
        lambda p: ["build-cubes", "--project", p],
        ["not a cube store mmz wrote"],
    ),
    "build-cubes --overwrite where cubes.zarr is a stranger's folder": (
        _foreign_cubes,
        lambda p: ["build-cubes", "--project", p, "--overwrite"],
        ["not a cube store mmz wrote"],
    ),
    "train where runs/NAME is a file": (
        lambda p: (p / "runs" / "x").write_text("mine\n"),
        lambda p: ["train", "--project", p, "--name", "x", *TINY],
        ["run directory", "a file is there"],
    ),
    "dropout-scan -o a file": (
        lambda p: (p / "notes.txt").write_text("mine\n"),
        lambda p: ["dropout-scan", "--project", p, "--run", "run", "-o", p / "notes.txt"],
        ["is an existing file"],
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=list(SCENARIOS))
def test_an_output_that_would_destroy_something_is_refused(project, run_mmz, scenario):
    prepare, command, words = SCENARIOS[scenario]
    if prepare is not None:
        prepare(project)
    before = snapshot(project)
    code, _, err = run_mmz(*command(project))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)
    assert snapshot(project) == before  # the inputs untouched, nothing written (no lock file left either)


# ----------------------------------------------------------------------------- one writer per output


@releases_locks
def _run_while_holding(claim, root, args) -> tuple[int, dict, dict]:
    """Run ``mmz ARGS`` in this process while it holds what ``claim`` locks (released after).

    Returns the exit code and snapshots of ``root`` taken, under the lock, before and after the command.
    """
    claim()
    before = snapshot(root)
    return run_cli(*args), before, snapshot(root)


# scenario -> (what the other writer holds, the command refused)
LOCKED = {
    "predict": (lambda p: hold_catalogue_lock(p / "cat.fits"), lambda p: _predict(p, p / "cat.fits")),
    "predict --shard while the catalogue is written": (
        lambda p: hold_catalogue_lock(p / "cat.fits"),
        lambda p: _predict(p, p / "cat.fits", "--shard", "0/2"),
    ),
    "predict while a shard job runs": (
        lambda p: hold_catalogue_lock(p / "cat.fits", (1, 2)),
        lambda p: _predict(p, p / "cat.fits"),
    ),
    "predict --shard 1/2 twice": (
        lambda p: hold_catalogue_lock(p / "cat.fits", (1, 2)),
        lambda p: _predict(p, p / "cat.fits", "--shard", "1/2"),
    ),
    "predict --cubes": (
        lambda p: hold_catalogue_lock(p / "oof.fits"),
        lambda p: ["predict", "--cubes", "--project", p, "--run", "run", "-o", p / "oof.fits"],
    ),
    "cutout": (lambda p: hold_lock(p / "stamps.zarr"), lambda p: _cutout(p, p / "stamps.zarr")),
    "build-cubes": (lambda p: hold_lock(p / "cubes.zarr"), lambda p: ["build-cubes", "--project", p]),
    "train": (
        lambda p: hold_run_lock(p / "runs" / "run", [0]),
        lambda p: ["train", "--project", p, "--name", "run", *TINY],
    ),
}


@pytest.mark.parametrize("scenario", LOCKED, ids=list(LOCKED))
def test_a_second_writer_is_refused_at_once_with_the_holders_pid(project, capsys, scenario):
    claim, command = LOCKED[scenario]
    code, before, after = _run_while_holding(lambda: claim(project), project, command(project))
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"another mmz (PID {os.getpid()}) is writing the output" in err and "wait for it to finish" in err, err
    assert after == before  # the refused command wrote nothing
    assert not list(project.rglob("*.lock"))  # the holder's lock file is removed when it lets go


def test_a_lock_left_by_a_killed_writer_blocks_nothing(project, run_mmz):
    stamps, catalogue = project / "stamps.zarr", project / "cat.fits"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom mmzcli.outputs import output_lock\n"
            "with output_lock(sys.argv[1]), output_lock(sys.argv[2]):\n"
            "    print('held', flush=True)\n    time.sleep(120)\n",
            stamps,
            catalogue,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run_mmz("-q", *_cutout(project, stamps))
        assert code == 2 and f"another mmz (PID {holder.pid})" in err  # alive: it holds the store
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(stamps).read_text().strip() == str(holder.pid)  # killed: its lock files stay behind
    assert lock_path(catalogue).exists()

    assert run_mmz("-q", *_cutout(project, stamps))[0] == 0
    code, _, err = run_mmz("-q", *_cutout(project, stamps, "--overwrite"))  # mmz's own store: replaced
    assert code == 0, err
    code, _, err = run_mmz("-q", *_predict(project, catalogue))
    assert code == 0, err
    assert not lock_path(stamps).exists() and not lock_path(catalogue).exists()  # removed by the finished runs
    code, _, err = run_mmz("-q", *_predict(project, catalogue))
    assert code == 2 and "use --overwrite" in err, err  # mmz's own catalogue: only with --overwrite
    code, _, err = run_mmz("-q", *_predict(project, catalogue, "--overwrite"))
    assert code == 0, err
