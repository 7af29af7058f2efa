"""Damaged, foreign and unwritable cube stores: refused in one line that names the store, the array and the chunk.

One store is built per module; each scenario damages its own copy.
"""

from __future__ import annotations

import errno
import json
import os
import shutil

import numpy as np
import pytest
import zarr
from helpers import survey_field, tiny_cubes

from mmzcli import store
from mmzcli.errors import InputError


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A project with a complete cubes.zarr (60 sources: two chunks of cubes) and its inputs."""
    root = tmp_path_factory.mktemp("field")
    tiny_cubes(root, n=60)
    return root


@pytest.fixture
def project(built, tmp_path):
    """A copy of the built project, for one scenario to damage."""
    return shutil.copytree(built / "proj", tmp_path / "proj")


def _truncate(path):
    path.write_bytes(path.read_bytes()[:20])


def _garble(path):
    path.write_bytes(bytes(len(path.read_bytes())))


def _set_attrs(store_path, **attrs):
    metadata = store_path / "zarr.json"
    document = json.loads(metadata.read_text())
    document["attributes"].update(attrs)
    metadata.write_text(json.dumps(document))


# damage -> the words the one-line refusal must contain (besides the store's path and "--overwrite")
LISTED = {  # found by open_store's listing: train, predict --cubes and dropout-scan refuse these before reading
    "rm z_spec chunk": (lambda s: (s / "z_spec/c/0").unlink(), ["z_spec/c/0", "missing"]),
    "rm one cubes chunk": (lambda s: (s / "cubes/c/1/0/0/0").unlink(), ["cubes/c/1/0/0/0", "missing"]),
    "rm flags chunk (int: no NaN fill)": (lambda s: (s / "flags/c/0").unlink(), ["flags/c/0", "missing"]),
    "empty band_ok chunk": (lambda s: (s / "band_ok/c/0/0").write_bytes(b""), ["band_ok/c/0/0", "empty"]),
    "truncated z_spec zarr.json": (lambda s: _truncate(s / "z_spec/zarr.json"), ["z_spec/zarr.json"]),
    "rm norm/std zarr.json": (lambda s: (s / "norm/std/zarr.json").unlink(), ["norm/std/zarr.json", "missing"]),
    "rm the ebv array": (lambda s: shutil.rmtree(s / "ebv"), ["'ebv'", "missing"]),
    "truncated group zarr.json": (lambda s: _truncate(s / "zarr.json"), ["not a readable Zarr store"]),
}
DECODED = {  # found only by reading the chunk: --verify, and read_array where stores are read
    "truncated cubes chunk": (lambda s: _truncate(s / "cubes/c/1/0/0/0"), ["cubes/c/1/0/0/0", "cannot be read"]),
    "garbled flags chunk": (lambda s: _garble(s / "flags/c/0"), ["flags/c/0", "cannot be read"]),
}
CONTENT = {  # readable but wrong: --verify only
    "a block never recorded done": (lambda s: _set_attrs(s, blocks_done=[]), ["rows 0..59", "never recorded"]),
    "labelled row without z_spec": (
        lambda s: zarr.open_group(str(s), mode="r+")["z_spec"].__setitem__(5, np.nan),
        ["row 5", "z_spec"],
    ),
    "zero norm/std": (lambda s: zarr.open_group(str(s), mode="r+")["norm/std"].__setitem__(1, 0.0), ["norm/std"]),
}


def _assert_one_line_refusal(code, err, project, words):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "Traceback" not in err and str(project / "cubes.zarr") in err and "--overwrite" in err, err
    for word in words:
        assert word in err, (word, err)


COMMANDS = {
    "train": ["train", "--fold", "0", "--epochs", "1", "--width", "0.125"],
    "build-cubes": ["build-cubes"],
    "build-cubes --verify": ["build-cubes", "--verify"],
}
LISTED_CASES = [
    pytest.param(damage, COMMANDS[command], id=f"{damage}-{command}")
    for damage in LISTED
    for command in COMMANDS
    if (damage, command) != ("truncated group zarr.json", "build-cubes")
]  # not complete: rebuilt


@pytest.mark.parametrize(("damage", "command"), LISTED_CASES)
def test_a_damaged_store_is_refused_before_it_is_read(project, run_mmz, damage, command):
    hurt, words = LISTED[damage]
    hurt(project / "cubes.zarr")
    code, _, err = run_mmz("-q", *command, "--project", project)
    _assert_one_line_refusal(code, err, project, words)


@pytest.mark.parametrize("damage", {**DECODED, **CONTENT}, ids=[*DECODED, *CONTENT])
def test_verify_reads_everything_and_stops_at_the_first_problem(project, run_mmz, damage):
    hurt, words = {**DECODED, **CONTENT}[damage]
    hurt(project / "cubes.zarr")
    code, _, err = run_mmz("-q", "build-cubes", "--verify", "--project", project)
    _assert_one_line_refusal(code, err, project, words)


@pytest.mark.parametrize("damage", DECODED, ids=list(DECODED))
def test_reading_a_corrupt_chunk_names_it(project, damage):
    hurt, words = DECODED[damage]
    hurt(project / "cubes.zarr")
    group = store.open_store(project / "cubes.zarr")  # the listing cannot see inside a chunk
    name = words[0].split("/")[0]
    array = store.checked_array(group, name)
    intact = array[:32] if name == "cubes" else None  # chunk 0 still reads: only the damaged chunk fails
    with pytest.raises(InputError, match=words[0]) as caught:
        array[np.arange(array.shape[0])]  # read_rows reads cubes with index arrays
    assert "\n" not in str(caught.value) and "--overwrite" in str(caught.value)
    assert intact is None or np.isfinite(intact).all()


def test_verify_reports_a_sound_store(built, run_mmz):
    code, _, err = run_mmz("build-cubes", "--verify", "--project", built / "proj")
    assert code == 0, err
    assert "OK" in err and "13 arrays" in err and "14 chunks" in err and "59 labelled" in err


def test_verify_and_overwrite_exclude_each_other(project, run_mmz):
    code, _, err = run_mmz("build-cubes", "--verify", "--overwrite", "--project", project)
    assert code == 2 and "--verify checks the store and --overwrite rebuilds it" in err


def test_every_chunk_is_stored_even_when_it_equals_the_fill_value(tmp_path):
    """zarr skips (and deletes) fill-valued chunks by default: a listing could not tell them from lost ones."""
    path = tmp_path / "s.zarr"
    group = store.open_for_writing(
        path,
        key="k",
        n=4,
        bands=["g"],
        size=4,
        image_name="cubes",
        columns={"id": np.arange(4), "ebv": np.zeros(4, np.float32)},
        attrs={},
        overwrite=False,
    )
    store.write_block(
        group, "cubes", 0, np.zeros((4, 1, 4, 4), np.float32), np.zeros((4, 1), bool), np.zeros(4, np.int32), {}
    )
    store.write_array(group, "flags", np.zeros(4, np.int32))
    store.finish(group, path, {"norm/mean": np.zeros(1, np.float32)})
    for chunk in ("cubes/c/0/0/0/0", "band_ok/c/0/0", "flags/c/0", "ebv/c/0", "norm/mean/c/0"):
        assert (path / chunk).is_file(), chunk
    group = store.open_store(path)
    assert group.attrs["arrays"] == ["band_ok", "cubes", "ebv", "flags", "id", "norm/mean"]
    assert np.isnan(group["cubes"].fill_value)  # a chunk that escapes the listing reads NaN, not data


def test_a_store_from_before_chunk_checks_still_opens(project, run_mmz):
    """Schema 1 stores did not store fill-valued chunks: a missing one is not damage there, and they still open."""
    path = project / "cubes.zarr"
    document = json.loads((path / "zarr.json").read_text())
    document["attributes"]["schema_version"] = 1
    del document["attributes"]["arrays"]
    (path / "zarr.json").write_text(json.dumps(document))
    mean = json.loads((path / "norm/mean/zarr.json").read_text())  # as an old store's norm/mean, all 0: zarr
    mean["fill_value"] = 0.0  # did not store its chunk, and filled floats with 0
    (path / "norm/mean/zarr.json").write_text(json.dumps(mean))
    (path / "norm/mean/c/0").unlink()
    assert store.read_array(store.open_store(path), "norm/mean").tolist() == [0.0, 0.0, 0.0]
    code, _, err = run_mmz("build-cubes", "--verify", "--project", project)
    assert code == 0, err
    assert "older mmz" in err and "1 not stored" in err


# ----------------------------------------------------------------------------- inputs of a complete store


@pytest.mark.parametrize("option", ["--catalog", "--z-col"])
def test_other_inputs_for_a_complete_store_are_refused(built, project, run_mmz, tmp_path, option):
    from astropy.table import Table

    other = tmp_path / "other.fits"
    table = Table.read(built / "specz.fits")
    table["Z_SPEC"][3] = 0.5
    table.write(other)
    options = {"--catalog": ["--catalog", other], "--z-col": ["--catalog", built / "specz.fits", "--z-col", "EBV"]}
    stamp = (project / "cubes.zarr" / "zarr.json").stat().st_mtime_ns
    code, _, err = run_mmz("build-cubes", "--project", project, *options[option])
    expected = {"--catalog": "other.fits", "--z-col": "z_spec = EBV"}[option]
    _assert_one_line_refusal(code, err, project, ["other inputs", expected])
    assert (project / "cubes.zarr" / "zarr.json").stat().st_mtime_ns == stamp


def test_the_same_inputs_spelled_otherwise_leave_a_complete_store_alone(built, run_mmz, monkeypatch):
    project = built / "proj"
    stamp = (project / "cubes.zarr" / "zarr.json").stat().st_mtime_ns
    monkeypatch.chdir(built)
    code, _, err = run_mmz(
        "build-cubes", "--project", "proj", "--catalog", "proj/../specz.fits", "--tiles", "tiles/*.fits"
    )
    assert code == 0 and "nothing to do" in err, err
    assert (project / "cubes.zarr" / "zarr.json").stat().st_mtime_ns == stamp


# ----------------------------------------------------------------------------- writing and resuming


def _fail_writes(monkeypatch, error, key_part):
    """Make zarr's file writes whose path contains ``key_part`` raise ``error`` (as a full or read-only disk)."""
    import zarr.storage._local as local

    put = local._put

    def failing(path, value, exclusive=False):
        if key_part in str(path):
            raise error
        return put(path, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", failing)


def _count_blocks(monkeypatch):
    written = []
    write_block = store.write_block
    monkeypatch.setattr(
        store,
        "write_block",
        lambda group, name, start, *a: written.append(start) or write_block(group, name, start, *a),
    )
    return written


def test_a_full_disk_mid_build_is_one_line_about_the_output_and_the_build_resumes(tmp_path, run_mmz, monkeypatch):
    tiles, catalog = survey_field(tmp_path, n=300)  # blocks of 256 rows: 0 and 256 (cubes chunk 8 onwards)
    args = [
        "-q",
        "build-cubes",
        "--survey",
        "tiny",
        "--project",
        tmp_path / "p",
        "--tiles",
        f"{tiles}/*.fits",
        "--catalog",
        catalog,
    ]
    with monkeypatch.context() as patch:
        _fail_writes(patch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "cubes/c/8/")
        code, _, err = run_mmz(*args)
    partial = tmp_path / "p" / "cubes.zarr.partial"
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(partial) in err and "output" in err and "No space left" in err and "free disk space" in err
    assert "resumes" in err
    assert json.loads((partial / "zarr.json").read_text())["attributes"]["blocks_done"] == [0]

    written = _count_blocks(monkeypatch)
    code, _, err = run_mmz(*args)
    assert code == 0, err
    assert written == [256]  # the finished block was kept
    code, _, err = run_mmz("build-cubes", "--verify", "--project", tmp_path / "p")
    assert code == 0, err


@pytest.mark.parametrize(
    ("code_", "advice"),
    [(errno.EACCES, "writable"), (errno.EROFS, "writable"), (errno.ENOSPC, "free disk space")],
    ids=["EACCES", "EROFS", "ENOSPC"],
)
def test_a_failure_while_creating_the_store_is_one_line(tmp_path, run_mmz, monkeypatch, code_, advice):
    tiles, catalog = survey_field(tmp_path, n=10)
    _fail_writes(monkeypatch, OSError(code_, os.strerror(code_)), "cubes.zarr.partial")
    code, _, err = run_mmz(
        "-q",
        "build-cubes",
        "--survey",
        "tiny",
        "--project",
        tmp_path / "p",
        "--tiles",
        f"{tiles}/*.fits",
        "--catalog",
        catalog,
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(tmp_path / "p" / "cubes.zarr.partial") in err and "output" in err and os.strerror(code_) in err
    assert advice in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_project_is_one_line(tmp_path, run_mmz):
    tiles, catalog = survey_field(tmp_path, n=10)
    project = tmp_path / "p"
    project.mkdir()
    project.chmod(0o555)
    try:
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
    finally:
        project.chmod(0o755)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "cubes.zarr.partial" in err and "writable" in err


def test_a_build_killed_and_resumed_from_elsewhere_resumes(tmp_path, run_mmz, monkeypatch):
    """`mmz build-cubes --project P --catalog P/specz.fits ...`, killed, then `cd P && mmz build-cubes
    --catalog specz.fits ...`: the same inputs, so the build resumes."""
    survey_field(tmp_path, n=300)  # P = tmp_path: tiles/ and specz.fits inside it
    parent, name = tmp_path.parent, tmp_path.name

    def interrupted(group, image_name, start, *a):
        if start == 256:
            raise KeyboardInterrupt  # as Ctrl-C, or a kill between two blocks
        return write_block(group, image_name, start, *a)

    write_block = store.write_block
    monkeypatch.chdir(parent)
    with monkeypatch.context() as patch:
        patch.setattr(store, "write_block", interrupted)
        code, _, _ = run_mmz(
            "-q",
            "build-cubes",
            "--survey",
            "tiny",
            "--project",
            name,
            "--tiles",
            f"{name}/tiles/*.fits",
            "--catalog",
            f"{name}/specz.fits",
        )
    assert code != 0 and (tmp_path / "cubes.zarr.partial").exists()

    monkeypatch.chdir(tmp_path)
    written = _count_blocks(monkeypatch)
    code, _, err = run_mmz(
        "-q", "build-cubes", "--survey", "tiny", "--tiles", "tiles/*.fits", "--catalog", "specz.fits"
    )
    assert code == 0, err
    assert written == [256]
    assert store.open_store(tmp_path / "cubes.zarr").attrs["n_labelled"] == 299
