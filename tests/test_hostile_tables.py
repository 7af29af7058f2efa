"""Hostile tables and options for evaluate, bootstrap and build-cubes: one line, exit 2, no traceback, nothing written.

Each scenario builds its bad input in tmp_path from a few rows, runs the CLI
in-process and checks the refusal; the tests after the table check that what
must keep working (BOM CSVs, renamed truth columns, an existing output
directory, exactly the minimum sample) does.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from mmzcli import bootstrap
from mmzcli.catalog import write_photoz

EDGES = np.linspace(0.0, 2.0, 41)
MIN_OBJECTS, MIN_RESAMPLES = 50, 100  # the documented limits of mmz bootstrap (bootstrap.MIN_OBJECTS, MIN_RESAMPLES)
HEADER = {"PROFILE": "tiny", "RUN": "test", "OUTLTHR": 0.15, "REFBAND": "i", "CATKIND": "oof"}


# ----------------------------------------------------------------------------- tiny inputs


def columns(n: int, seed: int = 0, first_id: int = 1000) -> dict:
    """A photo-z catalogue's columns: Gaussian PDFs around z_spec, scatter 0.05(1+z)."""
    from scipy.special import ndtr

    rng = np.random.default_rng(seed)
    z_spec = rng.uniform(0.1, 1.8, n)
    sigma = 0.05 * (1 + z_spec)
    mu = z_spec + sigma * rng.normal(size=n)
    pdf = np.diff(ndtr((EDGES[None, :] - mu[:, None]) / sigma[:, None]), axis=1) + 1e-9
    return {
        "ID": np.arange(first_id, first_id + n),
        "PDF": pdf / pdf.sum(axis=1, keepdims=True),
        "Z_SPEC": z_spec.astype(np.float32),
        "MAG_I": (20 + z_spec).astype(np.float32),
    }


def photoz(path, cols: dict):
    """Write a photo-z catalogue as mmz predict does (Z_PHOT the median of the PDF)."""
    from mmzcli import pdf

    cols = dict(cols, PDF=np.asarray(cols["PDF"], np.float32))
    with np.errstate(invalid="ignore", divide="ignore"):
        cols.setdefault("Z_PHOT", pdf.median(np.nan_to_num(cols["PDF"], posinf=1.0), EDGES))
    write_photoz(path, cols, EDGES, HEADER)
    return path


def without(cols: dict, *names: str) -> dict:
    return {k: v for k, v in cols.items() if k not in names}


def with_pdf(cols: dict, change) -> dict:
    pdf = np.array(cols["PDF"], dtype=np.float64)
    change(pdf)
    return dict(cols, PDF=pdf)


def truth_csv(path, text: str, bom: bool = False):
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


def truth_rows(n: int = 40, z=None) -> str:
    cols = columns(n)
    z = cols["Z_SPEC"] if z is None else z
    return "ID,Z_SPEC\n" + "".join(f"{i},{v}\n" for i, v in zip(cols["ID"], z, strict=True))


def spec_catalogue(path, **overrides):
    """A spectroscopic catalogue for build-cubes (profile tiny: MAG_i)."""
    n = 3
    cols = {
        "ID": np.arange(1, n + 1),
        "RA": np.full(n, 150.0),
        "DEC": np.full(n, 2.0),
        "Z_SPEC": np.full(n, 0.5),
        "EBV": np.full(n, 0.02),
        "MAG_i": np.full(n, 21.0),
        **overrides,
    }
    table = Table(cols)
    table.write(path, format="ascii.csv" if path.suffix == ".csv" else "fits", overwrite=True)
    return path


# ----------------------------------------------------------------------------- the scenarios
# Each builder returns (argv after "mmz", paths that must not exist or must keep their bytes afterwards).


def bootstrap_two_rows(t):
    a, b = photoz(t / "a.fits", columns(2)), photoz(t / "b.fits", columns(2, seed=1))
    return ["bootstrap", a, b, "-K", 200, "-o", t / "out"], [t / "out"]


def bootstrap_one_below_the_minimum(t):
    n = MIN_OBJECTS - 1
    a, b = photoz(t / "a.fits", columns(n)), photoz(t / "b.fits", columns(n, seed=1))
    return ["bootstrap", a, b, "-K", 200, "-o", t / "out"], [t / "out"]


def bootstrap_huge_k(t):
    a = photoz(t / "a.fits", columns(60))
    return ["bootstrap", a, a, "-K", 10**20, "-o", t / "out"], [t / "out"]


def bootstrap_k_zero(t):
    a = photoz(t / "a.fits", columns(60))
    return ["bootstrap", a, a, "-K", 0, "-o", t / "out"], [t / "out"]


def bootstrap_k_one(t):
    a = photoz(t / "a.fits", columns(60))
    return ["bootstrap", a, a, "-K", 1, "-o", t / "out"], [t / "out"]


def bootstrap_output_is_a_file(t):
    a = photoz(t / "a.fits", columns(60))
    (t / "report.txt").write_text("keep me\n")
    return ["bootstrap", a, a, "-K", 100, "-o", t / "report.txt", "--no-plots"], [t / "report.txt"]


def bootstrap_no_common_ids(t):
    a, b = photoz(t / "a.fits", columns(60)), photoz(t / "b.fits", columns(60, first_id=9000))
    return ["bootstrap", a, b, "-K", 100, "-o", t / "out"], [t / "out"]


def evaluate_output_is_a_file(t):
    a = photoz(t / "a.fits", columns(20))
    (t / "report.txt").write_text("keep me\n")
    return ["evaluate", a, "-o", t / "report.txt", "--no-plots"], [t / "report.txt"]


def evaluate_output_under_a_file(t):
    a = photoz(t / "a.fits", columns(20))
    (t / "report.txt").write_text("keep me\n")
    return ["evaluate", a, "-o", t / "report.txt" / "sub", "--no-plots"], [t / "report.txt"]


def evaluate_output_is_an_input(t):
    a = photoz(t / "a.fits", columns(20))
    return ["evaluate", a, "-o", a, "--no-plots"], [a]


def evaluate_truth_lacks_id(t):
    a = photoz(t / "a.fits", without(columns(20), "Z_SPEC"))
    truth = truth_csv(t / "truth.csv", truth_rows(20).replace("ID,", "OBJID,", 1))
    return ["evaluate", a, "--truth", truth, "-o", t / "out", "--no-plots"], [t / "out"]


def evaluate_truth_lacks_z_spec(t):
    a = photoz(t / "a.fits", without(columns(20), "Z_SPEC"))
    truth = truth_csv(t / "truth.csv", truth_rows(20).replace(",Z_SPEC", ",ZSPEC", 1))
    return ["evaluate", a, "--truth", truth, "-o", t / "out", "--no-plots"], [t / "out"]


def evaluate_truth_with_invisible_name(t):
    a = photoz(t / "a.fits", without(columns(20), "Z_SPEC"))
    truth = truth_csv(t / "truth.csv", "\u200b" + truth_rows(20))  # a zero-width space before ID
    return ["evaluate", a, "--truth", truth, "-o", t / "out", "--no-plots"], [t / "out"]


def evaluate_truth_text_z_spec_csv(t):
    a = photoz(t / "a.fits", without(columns(20), "Z_SPEC"))
    z = [f"{v:.3f}" for v in columns(20)["Z_SPEC"]]
    z[1] = "abc"
    return (
        ["evaluate", a, "--truth", truth_csv(t / "truth.csv", truth_rows(20, z)), "-o", t / "out", "--no-plots"],
        [t / "out"],
    )


def evaluate_truth_text_z_spec_fits(t):
    a = photoz(t / "a.fits", without(columns(20), "Z_SPEC"))
    Table({"ID": columns(20)["ID"], "Z_SPEC": np.array([b"x"] * 20)}).write(t / "truth.fits")
    return ["evaluate", a, "--truth", t / "truth.fits", "-o", t / "out", "--no-plots"], [t / "out"]


def evaluate_truth_text_magnitude(t):
    a = photoz(t / "a.fits", without(columns(20), "Z_SPEC", "MAG_I"))
    cols = columns(20)
    Table({"ID": cols["ID"], "Z_SPEC": cols["Z_SPEC"], "MAG_i": np.array(["faint"] * 20)}).write(t / "truth.fits")
    return ["evaluate", a, "--truth", t / "truth.fits", "-o", t / "out", "--no-plots"], [t / "out"]


def evaluate_truth_text_ids(t):
    a = photoz(t / "a.fits", without(columns(20), "Z_SPEC"))
    truth = truth_csv(t / "truth.csv", "ID,Z_SPEC\nobj-a,0.5\nobj-b,0.6\n")
    return ["evaluate", a, "--truth", truth, "-o", t / "out", "--no-plots"], [t / "out"]


def evaluate_truth_empty_id_cell(t):
    a = photoz(t / "a.fits", without(columns(20), "Z_SPEC"))
    truth = truth_csv(t / "truth.csv", "ID,Z_SPEC\n1000,0.5\n,0.6\n1002,0.7\n")
    return ["evaluate", a, "--truth", truth, "-o", t / "out", "--no-plots"], [t / "out"]


def evaluate_truth_empty_file(t):
    a = photoz(t / "a.fits", without(columns(20), "Z_SPEC"))
    return ["evaluate", a, "--truth", truth_csv(t / "truth.csv", ""), "-o", t / "out", "--no-plots"], [t / "out"]


def evaluate_truth_header_only(t):
    a = photoz(t / "a.fits", without(columns(20), "Z_SPEC"))
    truth = truth_csv(t / "truth.csv", "ID,Z_SPEC\n")
    return ["evaluate", a, "--truth", truth, "-o", t / "out", "--no-plots"], [t / "out"]


def evaluate_truth_without_table_hdu(t):
    a = photoz(t / "a.fits", without(columns(20), "Z_SPEC"))
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(t / "image.fits")
    return ["evaluate", a, "--truth", t / "image.fits", "-o", t / "out", "--no-plots"], [t / "out"]


def evaluate_text_z_spec_in_catalogue(t):
    a = photoz(t / "a.fits", dict(columns(20), Z_SPEC=np.array([b"0.5"] * 20)))
    return ["evaluate", a, "-o", t / "out", "--no-plots"], [t / "out"]


def evaluate_nan_pdfs(t):
    a = photoz(t / "a.fits", with_pdf(columns(20), lambda p: p.fill(np.nan)))
    return ["evaluate", a, "-o", t / "out", "--no-plots"], [t / "out"]


def evaluate_negative_pdfs(t):
    def negative(p):
        p[:, :5] = -0.1
        p[:, 20] += 0.5

    a = photoz(t / "a.fits", with_pdf(columns(20), negative))
    return ["evaluate", a, "-o", t / "out", "--no-plots"], [t / "out"]


def evaluate_zero_rows(t):
    a = photoz(t / "a.fits", {k: v[:0] for k, v in columns(3).items()})
    return ["evaluate", a, "-o", t / "out", "--no-plots"], [t / "out"]


def evaluate_sentinel_z_spec(t):
    a = photoz(t / "a.fits", dict(columns(20), Z_SPEC=np.full(20, 1e30, np.float32)))
    return ["evaluate", a, "-o", t / "out"], [t / "out"]


def _build_cubes(t, catalogue):
    project = t / "project"
    project.mkdir()
    return (
        ["build-cubes", "--survey", "tiny", "--project", project, "--tiles", t / "none-*.fits", "--catalog", catalogue],
        [project / "cubes.zarr", project / "mmz.yaml"],
    )


def build_cubes_text_ebv_csv(t):
    return _build_cubes(t, spec_catalogue(t / "spec.csv", EBV=np.array(["0.02", "abc", "0.03"])))


def build_cubes_text_z_spec_fits(t):
    return _build_cubes(t, spec_catalogue(t / "spec.fits", Z_SPEC=np.array([b"0.5", b"0.6", b"n/a"])))


def build_cubes_text_magnitude_csv(t):
    return _build_cubes(t, spec_catalogue(t / "spec.csv", MAG_i=np.array(["21.0", "99+", "20.5"])))


def build_cubes_vector_ebv_fits(t):
    return _build_cubes(t, spec_catalogue(t / "spec.fits", EBV=np.full((3, 2), 0.02)))


def build_cubes_catalogue_is_a_directory(t):
    (t / "spec.fits").mkdir()
    return _build_cubes(t, t / "spec.fits")


# name, builder, words the one line must hold
SCENARIOS = [
    ("bootstrap: two matched objects", bootstrap_two_rows, ["2 matched objects", "50", "mmz evaluate"]),
    ("bootstrap: one object below the minimum", bootstrap_one_below_the_minimum, ["49 matched objects", "50"]),
    ("bootstrap: -K 10^20", bootstrap_huge_k, ["-K/--resamples", "100000000000000000000", "1000000"]),
    ("bootstrap: -K 0", bootstrap_k_zero, ["-K/--resamples 0", "100"]),
    ("bootstrap: -K 1", bootstrap_k_one, ["-K/--resamples 1", "100"]),
    ("bootstrap: -o an existing file", bootstrap_output_is_a_file, ["report.txt", "--output", "existing file"]),
    ("bootstrap: no common ID", bootstrap_no_common_ids, ["no common ID"]),
    ("evaluate: -o an existing file", evaluate_output_is_a_file, ["report.txt", "--output", "existing file"]),
    ("evaluate: -o under a file", evaluate_output_under_a_file, ["report.txt", "--output", "which is a file"]),
    ("evaluate: -o the input catalogue", evaluate_output_is_an_input, ["a.fits", "--output", "existing file"]),
    ("evaluate: truth lacks ID", evaluate_truth_lacks_id, ["truth.csv", "no column 'ID'", "OBJID", "--id-col"]),
    ("evaluate: truth lacks Z_SPEC", evaluate_truth_lacks_z_spec, ["no column 'Z_SPEC'", "ZSPEC", "--z-col"]),
    (
        "evaluate: truth column name hides a character",
        evaluate_truth_with_invisible_name,
        ["no column 'ID'", r"'\u200bID'"],
    ),
    (
        "evaluate: text in Z_SPEC of a truth CSV",
        evaluate_truth_text_z_spec_csv,
        ["truth.csv", "row 1", "'Z_SPEC'", "'abc'", "must hold numbers"],
    ),
    (
        "evaluate: text Z_SPEC column of a truth FITS",
        evaluate_truth_text_z_spec_fits,
        ["truth.fits", "row 0", "'Z_SPEC'", "'x'"],
    ),
    ("evaluate: text magnitudes in the truth", evaluate_truth_text_magnitude, ["truth.fits", "'MAG_i'", "'faint'"]),
    ("evaluate: text ids in the truth", evaluate_truth_text_ids, ["truth.csv", "row 0", "'ID'", "'obj-a'", "integer"]),
    ("evaluate: empty id cell in the truth", evaluate_truth_empty_id_cell, ["truth.csv", "row 1", "'ID'", "empty"]),
    ("evaluate: empty truth file", evaluate_truth_empty_file, ["truth.csv", "empty"]),
    ("evaluate: truth with a header only", evaluate_truth_header_only, ["truth.csv", "empty"]),
    ("evaluate: truth FITS without a table", evaluate_truth_without_table_hdu, ["image.fits", "No table found"]),
    (
        "evaluate: text Z_SPEC in the catalogue",
        evaluate_text_z_spec_in_catalogue,
        ["a.fits", "'Z_SPEC'", "must hold numbers"],
    ),
    ("evaluate: NaN PDFs", evaluate_nan_pdfs, ["a.fits", "none of its 20 objects", "20 without a valid PDF"]),
    ("evaluate: negative PDFs", evaluate_negative_pdfs, ["a.fits", "20 without a valid PDF"]),
    ("evaluate: no rows", evaluate_zero_rows, ["a.fits", "no rows"]),
    ("evaluate: Z_SPEC sentinel 1e30", evaluate_sentinel_z_spec, ["a.fits", "20 without a Z_SPEC in (-1, 15]"]),
    ("build-cubes: text in EBV of a CSV", build_cubes_text_ebv_csv, ["spec.csv", "row 1", "'EBV'", "'abc'"]),
    (
        "build-cubes: text Z_SPEC column of a FITS",
        build_cubes_text_z_spec_fits,
        ["spec.fits", "row 2", "'Z_SPEC'", "'n/a'"],
    ),
    ("build-cubes: text magnitude", build_cubes_text_magnitude_csv, ["spec.csv", "row 1", "'MAG_i'", "'99+'"]),
    ("build-cubes: vector EBV column", build_cubes_vector_ebv_fits, ["spec.fits", "'EBV'", "one value per row"]),
    ("build-cubes: catalogue is a directory", build_cubes_catalogue_is_a_directory, ["spec.fits", "directory"]),
]


def _resampling_must_not_start(*args, **kwargs):
    raise AssertionError("bootstrap_metrics was called: the options should have been refused first")


@pytest.mark.parametrize("build, words", [pytest.param(b, w, id=name) for name, b, w in SCENARIOS])
def test_hostile_input_is_refused_in_one_line(build, words, run_mmz, tmp_path, monkeypatch):
    # a refused K must be refused before any resampling (K = 10^20 would allocate without bound)
    monkeypatch.setattr(bootstrap, "bootstrap_metrics", _resampling_must_not_start)
    argv, untouched = build(tmp_path)
    before = {p: p.read_bytes() if p.is_file() else None for p in untouched}
    code, out, err = run_mmz(*argv)
    assert "Traceback" not in err, err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    assert out == ""
    for path, content in before.items():
        if content is None:
            assert not path.exists(), path
        else:
            assert path.read_bytes() == content, path


# ----------------------------------------------------------------------------- every hint names a real option


def _options(command: str) -> set[str]:
    import typer

    from mmzcli.cli import app

    return {opt for p in typer.main.get_command(app).commands[command].params for opt in p.opts}


@pytest.mark.parametrize(
    "build, command",
    [(evaluate_truth_lacks_id, "evaluate"), (evaluate_truth_lacks_z_spec, "evaluate"), (bootstrap_huge_k, "bootstrap")],
)
def test_hints_name_options_the_command_has(build, command, run_mmz, tmp_path, monkeypatch):
    monkeypatch.setattr(bootstrap, "bootstrap_metrics", _resampling_must_not_start)
    argv, _ = build(tmp_path)
    code, _, err = run_mmz(*argv)
    named = set(re.findall(r"(?<![\w/-])(--?[a-zA-Z][\w-]*)", err.replace("/--", " --")))
    assert code == 2 and named, err
    assert named <= _options(command), (named - _options(command), err)


# ----------------------------------------------------------------------------- what must keep working


def test_truth_csv_with_a_byte_order_mark_reads(run_mmz, tmp_path):
    a = photoz(tmp_path / "a.fits", without(columns(20), "Z_SPEC"))
    truth = truth_csv(tmp_path / "truth.csv", truth_rows(20), bom=True)  # as Excel writes "CSV UTF-8"
    code, out, err = run_mmz("evaluate", a, "--truth", truth, "-o", tmp_path / "out", "--no-plots", "--json")
    assert code == 0, err
    assert json.loads(out)[str(a)]["n"] == 20


def test_truth_columns_are_named_with_id_col_and_z_col(run_mmz, tmp_path):
    a = photoz(tmp_path / "a.fits", without(columns(60), "Z_SPEC"))
    rows = truth_rows(60).replace("ID,Z_SPEC", "objid,zspec", 1)
    truth = truth_csv(tmp_path / "truth.csv", rows)
    code, out, err = run_mmz(
        "evaluate",
        a,
        "--truth",
        truth,
        "--id-col",
        "objid",
        "--z-col",
        "zspec",
        "-o",
        tmp_path / "e",
        "--no-plots",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)[str(a)]["n"] == 60
    code, out, err = run_mmz(
        "bootstrap",
        a,
        a,
        "--truth",
        truth,
        "--id-col",
        "objid",
        "--z-col",
        "zspec",
        "-K",
        100,
        "-o",
        tmp_path / "b",
        "--no-plots",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "bootstrap.json").read_text())["n"] == 60


def test_an_existing_output_directory_is_used(run_mmz, tmp_path):
    a = photoz(tmp_path / "a.fits", columns(20))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine\n")
    code, _, err = run_mmz("evaluate", a, "-o", tmp_path / "out", "--no-plots")
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["n_common"] == 20
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine\n"


def test_bootstrap_judges_a_sample_of_exactly_the_minimum(run_mmz, tmp_path):
    assert (bootstrap.MIN_OBJECTS, bootstrap.MIN_RESAMPLES) == (MIN_OBJECTS, MIN_RESAMPLES)
    n = MIN_OBJECTS
    a, b = photoz(tmp_path / "a.fits", columns(n)), photoz(tmp_path / "b.fits", columns(n, seed=1))
    code, out, err = run_mmz("bootstrap", a, b, "-K", MIN_RESAMPLES, "-o", tmp_path / "out", "--no-plots", "--json")
    assert code == 0, err
    assert all(0 <= v["p_value"] <= 1 for v in json.loads(out).values())
    assert json.loads((tmp_path / "out" / "bootstrap.json").read_text())["n"] == n


def test_objects_with_invalid_pdfs_are_left_out_with_a_note(run_mmz, tmp_path):
    def spoil(p):
        p[0, 3] = np.inf
        p[1, :5] = -0.1
        p[2] = np.nan

    a = photoz(tmp_path / "a.fits", with_pdf(columns(20), spoil))
    code, out, err = run_mmz("evaluate", a, "-o", tmp_path / "out", "--no-plots", "--json")
    assert code == 0, err
    got = json.loads(out)[str(a)]
    assert got["n"] == 17 and np.isfinite(got["crps"])
    assert "3 objects without a usable z_phot, z_spec or PDF left out" in err
