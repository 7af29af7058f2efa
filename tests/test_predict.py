"""mmz predict: the catalogue format, agreement with training, detection, resuming, sharding, bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import fitsio
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from helpers import mmz_ok

from mmzcli.catalog import read_photoz
from mmzcli.errors import ConfigError

TINY = ["--width", "0.125", "--batch-size", "16", "--no-amp", "--norm", "batch"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def project(tmp_path_factory, one_torch_thread):
    """A simulated two-tile 'tiny' survey with a one-fold run trained for two epochs."""
    project = tmp_path_factory.mktemp("predict") / "proj"
    mmz_ok("-q", "simulate", "--profile", "tiny", "-n", "150", "--tile-size", "512", "--project", project)
    mmz_ok("-q", "build-cubes", "--project", project)
    mmz_ok("-q", "train", "--project", project, "--fold", "0", "--epochs", "2", "--name", "run", *TINY)
    return project


@pytest.fixture(scope="module")
def catalogue(project):
    out = project / "photoz.fits"
    mmz_ok(
        "-q",
        "predict",
        *_tiles(project),
        "--catalog",
        project / "specz.fits",
        "-o",
        out,
        "--project",
        project,
        "--no-amp",
        "--qp",
        project / "photoz.hdf5",
    )
    return out


def _tiles(project):
    return sorted((project / "tiles").glob("*.fits"))


def test_catalogue_columns_hdus_units_and_provenance(catalogue, project):
    with fits.open(catalogue) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "PHOTOZ", "ZGRID"]
        assert isinstance(hdul["ZGRID"], fits.BinTableHDU)  # TOPCAT reads tables, not images
        header = hdul["PHOTOZ"].header
        for key in (
            "MMZVERS",
            "PROFILE",
            "RUN",
            "RUNHASH",
            "NMODELS",
            "FUSION",
            "MODALITY",
            "NBINS",
            "ZMIN",
            "ZMAX",
            "OUTLTHR",
            "CATKIND",
        ):
            assert key in header, key
        assert header["PROFILE"] == "tiny" and header["RUN"] == "run" and header["NMODELS"] == 1
        names = hdul["PHOTOZ"].columns.names
        for column in (
            "ID",
            "RA",
            "DEC",
            "Z_PHOT",
            "Z_MODE",
            "Z_MEAN",
            "Z_L68",
            "Z_U68",
            "Z_L95",
            "Z_U95",
            "ODDS",
            "Z_BEST",
            "Z_RISK",
            "Z_STD",
            "Z_CONF",
            "Z_MC",
            "Z_REG",
            "FLAGS",
            "PDF",
        ):
            assert column in names, column
        assert hdul["PHOTOZ"].columns["RA"].unit == "deg"
        assert header[f"TCOMM{names.index('Z_PHOT') + 1}"].startswith("photometric redshift")
        assert hdul["PHOTOZ"].columns["PDF"].format == "50E"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a wrong CHECKSUM/DATASUM warns
        fits.open(catalogue, checksum=True).close()
    specz = Table.read(project / "specz.fits")
    table = Table.read(catalogue, hdu="PHOTOZ")
    assert sorted(table["ID"]) == sorted(specz["ID"])  # every source, none dropped


def test_pdfs_and_their_summaries(catalogue):
    cat = read_photoz(catalogue)
    pdf, edges = cat.columns["PDF"].astype(np.float64), cat.edges
    np.testing.assert_allclose(pdf.sum(axis=1), 1.0, atol=1e-5)
    cdf = np.cumsum(pdf, axis=1)
    first = (cdf < 0.5).sum(axis=1)  # the bin holding the median
    centre = 0.5 * (edges[first] + edges[first + 1])
    assert np.all(np.abs(cat.columns["Z_PHOT"] - centre) <= 0.5 * (edges[1] - edges[0]) + 1e-6)
    c = cat.columns
    assert np.all(c["Z_L95"] <= c["Z_L68"]) and np.all(c["Z_L68"] <= c["Z_PHOT"])
    assert np.all(c["Z_PHOT"] <= c["Z_U68"]) and np.all(c["Z_U68"] <= c["Z_U95"])
    assert np.all((c["ODDS"] >= 0) & (c["ODDS"] <= 1 + 1e-6))
    assert np.all((c["Z_MC"] >= edges[0]) & (c["Z_MC"] <= edges[-1]) & (c["Z_STD"] > 0))
    assert np.all((c["Z_CONF"] >= 0) & (c["Z_CONF"] <= 1 + 1e-6) & (c["Z_RISK"] >= 0) & (c["Z_RISK"] < 1))


def test_predict_writes_the_qp_ensemble_beside_the_catalogue(catalogue, project):
    import qp

    cat = read_photoz(catalogue)
    ensemble = qp.read(str(project / "photoz.hdf5"))
    has_pdf = np.isfinite(cat.columns["Z_PHOT"])
    np.testing.assert_array_equal(ensemble.ancil["id"], cat.columns["ID"][has_pdf])
    densities = cat.columns["PDF"][has_pdf] / np.diff(cat.edges)
    np.testing.assert_allclose(ensemble.objdata["pdfs"], densities, rtol=1e-6)


def test_the_rail_stage_gives_the_catalogue_pdfs_in_input_order(catalogue, project):
    from rail.core.data import DataStore

    from mmzcli.rail_stage import MmzEstimator

    DataStore.allow_overwrite = True  # RAIL's process-wide store: tests may run a stage twice
    specz = Table.read(project / "specz.fits")[::-1]  # an order of the user's, not predict's
    table = {"object_id": np.asarray(specz["ID"]), **{c: np.asarray(specz[c]) for c in ("RA", "DEC", "EBV")}}
    stage = MmzEstimator.make_stage(
        name="mmz", model="run", project=str(project), tiles=[str(t) for t in _tiles(project)], ebv_col="EBV",
        output_mode="return", chunk_size=64, device="cpu", amp="off",  # the catalogue's float32
    )  # fmt: skip
    ensemble = stage.estimate(table).data
    cat = read_photoz(catalogue)
    rows = np.argsort(cat.columns["ID"])[np.searchsorted(np.sort(cat.columns["ID"]), table["object_id"])]
    assert ensemble.npdf == len(specz)  # one distribution per input source, in three chunks
    np.testing.assert_array_equal(np.ravel(ensemble.ancil["id"]), table["object_id"])
    np.testing.assert_allclose(ensemble.objdata["pdfs"] * np.diff(cat.edges), cat.columns["PDF"][rows], atol=1e-6)
    np.testing.assert_array_equal(np.ravel(ensemble.ancil["zmedian"]), cat.columns["Z_PHOT"][rows])


def test_the_rail_stage_refuses_an_unknown_amp(catalogue, project):
    from mmzcli.rail_stage import MmzEstimator

    specz = Table.read(project / "specz.fits")[:4]
    table = {"object_id": np.asarray(specz["ID"]), "RA": np.asarray(specz["RA"]), "DEC": np.asarray(specz["DEC"])}
    stage = MmzEstimator.make_stage(
        name="mmz_amp", model="run", project=str(project), tiles=[str(t) for t in _tiles(project)],
        output_mode="return", device="cpu", amp="fast",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="MmzEstimator amp: expected auto, on, off, got 'fast'"):
        stage.estimate(table)


def test_astropy_and_fitsio_read_the_same_catalogue(catalogue):
    a = Table.read(catalogue, hdu="PHOTOZ")
    b = fitsio.read(str(catalogue), ext="PHOTOZ")
    for name in ("ID", "RA", "Z_PHOT", "FLAGS", "PDF"):
        np.testing.assert_array_equal(np.asarray(a[name]), b[name])
    grid = fitsio.read(str(catalogue), ext="ZGRID")
    np.testing.assert_allclose(grid["Z_HI"] - grid["Z_LO"], 1.0 / 50)
    np.testing.assert_allclose(grid["Z_MID"], 0.5 * (grid["Z_LO"] + grid["Z_HI"]))


def test_tiles_give_the_out_of_fold_pdfs_of_training(catalogue, project, run_mmz):
    """Cutting, normalisation and the network in predict are those of training: same PDFs."""
    oof = project / "oof.fits"
    code, _, err = run_mmz("-q", "predict", "--cubes", "--project", project, "-o", oof)
    assert code == 0, err
    o, c = read_photoz(oof, require=("ID", "PDF", "Z_SPEC", "FOLD", "MAG_I")), read_photoz(catalogue)
    assert o.header["CATKIND"] == "oof" and set(o.columns["FOLD"]) == {0}
    assert o.header["NMODELS"] == 1 and o.header["RUNHASH"] == c.header["RUNHASH"]
    where = np.searchsorted(c.columns["ID"], o.columns["ID"], sorter=np.argsort(c.columns["ID"]))
    rows = np.argsort(c.columns["ID"])[where]
    # training's out-of-fold pass reads float16 cubes, predict cuts float32 ones: 2e-5 apart with precise BN
    np.testing.assert_allclose(c.columns["PDF"][rows], o.columns["PDF"], atol=5e-5)
    specz = Table.read(project / "specz.fits")
    z = dict(zip(specz["ID"], specz["Z_SPEC"]))
    np.testing.assert_allclose(o.columns["Z_SPEC"], [z[i] for i in o.columns["ID"]], rtol=1e-6)


def test_calibrate_fits_a_map_and_predict_applies_it_unless_raw(catalogue, project, run_mmz):
    import json

    from mmzcli.calibrate import remap

    runs = project / "runs"
    code, _, err = run_mmz("calibrate", "--project", project, "--run", "run")  # ~30 out-of-fold objects
    assert code == 2 and "too few to calibrate" in err and not (runs / "run" / "calibration.json").exists()
    # a copy of the run whose out-of-fold predictions are many and biased: calibrate fits and judges them
    shutil.copytree(runs / "run", runs / "cal")
    try:
        rng = np.random.default_rng(0)
        n, edges = 600, read_photoz(catalogue).edges
        z_spec = rng.uniform(edges[5], edges[-5], n)
        centres = 0.5 * (edges[1:] + edges[:-1])
        pdfs = np.exp(-0.5 * ((centres - z_spec[:, None] - 0.1 - rng.normal(0, 0.1, (n, 1))) / 0.05) ** 2)
        oof = dict(np.load(runs / "run" / "oof.npz"))
        np.savez(runs / "cal" / "oof.npz", **{k: np.resize(v, (n, *v.shape[1:])) for k, v in oof.items()}
                 | {"id": np.arange(n), "pdf": (pdfs / pdfs.sum(axis=1, keepdims=True)).astype(np.float32),
                    "z_spec": z_spec.astype(np.float32)})  # fmt: skip
        code, _, err = run_mmz("calibrate", "--project", project, "--run", "cal")
        assert code == 0, err
        calibration = json.loads((runs / "cal" / "calibration.json").read_text())
        judged = calibration["judged"]
        assert judged["calibrated"]["pit_ks"] < judged["raw"]["pit_ks"] / 2
        assert judged["calibrated"]["crps"] < judged["raw"]["crps"]
        # the same models as run "run": predict applies the map to the same PDFs, --raw does not
        args = [
            "-q",
            "predict",
            *_tiles(project),
            "--catalog",
            project / "specz.fits",
            "--project",
            project,
            "--no-amp",
        ]
        assert run_mmz(*args, "--run", "cal", "-o", project / "cal.fits")[0] == 0
        assert run_mmz(*args, "--run", "cal", "--raw", "-o", project / "raw.fits")[0] == 0
        raw, cal = read_photoz(catalogue), read_photoz(project / "cal.fits")
        assert cal.header["CALIB"] == "pit-remap" and read_photoz(project / "raw.fits").header["CALIB"] == "none"
        np.testing.assert_allclose(cal.columns["PDF"], remap(raw.columns["PDF"], calibration["pit_map"]), atol=2e-6)
        np.testing.assert_array_equal(read_photoz(project / "raw.fits").columns["PDF"], raw.columns["PDF"])
        assert np.mean(cal.columns["Z_PHOT"] < raw.columns["Z_PHOT"]) > 0.9  # the PDFs were biased high
        np.savez(runs / "cal" / "oof.npz", **(oof | {"pdf": oof["pdf"] * 0.5}))  # as if trained further
        code, _, err = run_mmz(
            "-q", "predict", "--cubes", "--project", project, "--run", "cal", "-o", project / "s.fits"
        )
        assert code == 2 and "run mmz calibrate again, or predict with --raw" in " ".join(err.split())
    finally:  # the copy is the project's latest run: other tests must not predict with it
        shutil.rmtree(runs / "cal")


def test_int16_pdfs_change_no_estimate_and_every_reader_gets_the_pdfs(project, run_mmz):
    full, compact = project / "oof32.fits", project / "oof16.fits.gz"
    assert run_mmz("-q", "predict", "--cubes", "--project", project, "-o", full)[0] == 0
    assert run_mmz("-q", "predict", "--cubes", "--project", project, "-o", compact, "--pdf-dtype", "int16")[0] == 0
    a, b = read_photoz(full), read_photoz(compact)  # mmz decodes int16 PDFs itself
    for name in ("Z_PHOT", "Z_BEST", "Z_MC", "Z_L95", "ODDS", "Z_STD"):
        np.testing.assert_array_equal(a.columns[name], b.columns[name])  # computed before storage
    assert np.abs(a.columns["PDF"] - b.columns["PDF"]).sum(axis=1).max() < 1e-3
    assert b.header["PDFENC"] == "int16"
    again = ("-q", "predict", "--cubes", "--project", project, "-o", compact, "--pdf-dtype", "int16")
    assert run_mmz(*again)[0] == 2 and run_mmz(*again, "--overwrite")[0] == 0  # a gzipped catalogue is mmz's
    for table in (Table.read(compact, hdu="PHOTOZ"), fitsio.read(str(compact), ext="PHOTOZ")):
        assert np.asarray(table["PDF"]).dtype.kind == "i"
        pdf = np.asarray(table["PDF"]) * np.asarray(table["PDF_SCALE"])[:, None]  # docs/formats.md's one line
        np.testing.assert_array_equal(pdf, b.columns["PDF"])  # the same floats in every reader
    code, _, err = run_mmz("-q", "predict", "--cubes", "--project", project, "-o", project / "x.fits",
                           "--pdf-dtype", "int8")  # fmt: skip
    assert code == 2 and "--pdf-dtype int8: expected float32 or int16" in err


def test_int16_codes_spend_the_l1_budget_whatever_the_pdf_width():
    from mmzcli.catalog import PDF_L1, decode_pdfs, encode_pdfs

    centres = np.linspace(0.005, 3.995, 400)
    pdfs = [np.exp(-0.5 * ((centres - 1.3) / width) ** 2) for width in (0.004, 0.03, 0.3, 3.0)]
    pdfs = np.array([p / p.sum() for p in pdfs] + [np.zeros(400)], dtype=np.float32)
    codes, scale = encode_pdfs(pdfs)
    assert codes.dtype == np.int16 and not codes[-1].any() and scale[-1] == 0  # no PDF stays no PDF
    error = np.abs(decode_pdfs({"PDF": codes, "PDF_SCALE": scale}) - pdfs).sum(axis=1)
    assert (error[:4] <= PDF_L1 * 1.001).all() and (error[:4] > 0.25 * PDF_L1).all()  # not finer than needed
    assert np.abs(codes[:4]).max(axis=1).max() < 32767 and (codes[:4] >= 0).all()
    assert abs(float(pdfs[3].max()) - float(codes[3].max() * scale[3])) < scale[3]  # a broad PDF: few steps


def test_detect_finds_isolated_sources_above_10_sigma(project):
    from mmzcli.detect import detect
    from mmzcli.profiles import load_profile
    from mmzcli.tiles import expand_tiles, index_tiles

    profile = load_profile("tiny")
    images = index_tiles(expand_tiles([project / "tiles" / "*.fits"]), profile)
    truth = Table.read(project / "truth.fits")
    i_band = profile.band("i")
    found_all, total = 0, 0
    for tile in np.unique(truth["TILE"]):
        mine = [im for im in images if f"tile-{tile:04d}-" in im.path]
        reference = next(im for im in mine if im.band == "i")
        found = detect(reference, mine)
        on = truth[truth["TILE"] == tile]
        x, y, mag = np.asarray(on["X"]), np.asarray(on["Y"]), np.asarray(on["MAG_i"])
        radius = np.maximum(on["R_DISK"], on["R_BULGE"]) / profile.pixel_scale
        distance = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
        np.fill_diagonal(distance, np.inf)
        # isolated: no neighbour less than 2 mag fainter within 2" + 3 of its half-light radii, not at an edge
        crowded = ((distance < 2 / profile.pixel_scale + 3 * radius[None]) & (mag[None] < mag[:, None] + 2)).any(1)
        ny, nx = reference.shape
        inside = (x > 5) & (y > 5) & (x < nx - 6) & (y < ny - 6)
        bright = mag < i_band.depth - 2.5 * np.log10(2)  # S/N >= 10 for a point source at the 5-sigma depth
        keep = bright & ~crowded & inside
        nearest = np.hypot(x[keep, None] - found["x"][None], y[keep, None] - found["y"][None]).min(axis=1)
        # a clumpy disk's light centre is not its profile's: within half a half-light radius (1 px at least)
        found_all += int((nearest < np.maximum(1.0, 0.5 * radius[keep])).sum())
        total += int(keep.sum())
    assert total > 50
    assert found_all >= 0.95 * total, f"{found_all}/{total}"


def test_detect_through_the_command_line(project, run_mmz):
    out = project / "detected.fits"
    code, _, err = run_mmz("-q", "predict", *_tiles(project), "--detect", "-o", out, "--project", project)
    assert code == 0, err
    cat = read_photoz(out, require=("ID", "X", "Y", "TILE", "PDF"))
    assert len(cat) > 100 and len(set(cat.columns["ID"])) == len(cat)
    assert np.all(cat.columns["FLAGS"] & 128)  # no E(B-V) given: the training median, flagged
    assert set(cat.columns["TILE"].astype(str)) == {"tile-0000-i.fits", "tile-0001-i.fits"}


def test_shards_and_resume_merge_into_the_same_catalogue(project, catalogue, run_mmz):
    out = project / "sharded.fits"
    common = [*_tiles(project), "--catalog", project / "specz.fits", "-o", out, "--project", project, "--no-amp"]
    assert run_mmz("-q", "predict", *common, "--shard", "0/2")[0] == 0
    assert not out.exists()  # a shard never writes the catalogue
    parts = out.with_name(out.name + ".parts")
    (done,) = list(parts.glob("*.npz"))
    # mark the finished tile: --resume must keep it, not redo it
    with np.load(done) as part:
        marked = {k: part[k] for k in part.files}
    marked["Z_REG"] = np.full_like(marked["Z_REG"], -7.0)
    np.savez(done, **marked)
    code, _, err = run_mmz("-q", "predict", *common, "--resume")
    assert code == 0, err
    assert not parts.exists()
    merged, straight = read_photoz(out), read_photoz(catalogue)
    assert np.sum(merged.columns["Z_REG"] == -7.0) == len(marked["ID"]) > 0
    np.testing.assert_array_equal(merged.columns["ID"], straight.columns["ID"])
    np.testing.assert_array_equal(merged.columns["PDF"], straight.columns["PDF"])


def test_corrupt_tile_stops_the_run_or_is_skipped_and_recorded(project, run_mmz, tmp_path):
    tiles = tmp_path / "tiles"
    shutil.copytree(project / "tiles", tiles)
    bad = tiles / "tile-0001-g.fits"
    bad.write_bytes(bad.read_bytes()[: 2880 * 3])  # a copy cut short
    out = tmp_path / "cat.fits"
    args = [*sorted(tiles.glob("*.fits")), "--catalog", project / "specz.fits", "-o", out, "--project", project]
    code, _, err = run_mmz("-q", "predict", *args)
    assert code == 2 and "tile-0001-g.fits" in err and "truncated" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not out.with_name("cat.fits.partial").exists()
    code, _, err = run_mmz("-q", "predict", *args, "--keep-going")
    assert code == 0, err
    cat = read_photoz(out)
    assert cat.header["NSKIPPED"] == 1 and "tile-0001-g.fits" in cat.header["SKIP0001"]
    truth = Table.read(project / "truth.fits")
    on_tile_1 = set(truth["ID"][(truth["TILE"] == 1) & (truth["ROLE"] == 0)])
    rows = np.isin(cat.columns["ID"], list(on_tile_1))
    assert rows.any() and np.all(cat.columns["FLAGS"][rows] & 4)  # their g band is missing, and flagged


def test_bad_runs_and_tiles_exit_2_without_a_catalogue(project, run_mmz, tmp_path):
    out = tmp_path / "cat.fits"
    specz = ["--catalog", project / "specz.fits", "-o", out, "--project", project]
    code, _, err = run_mmz("predict", *_tiles(project), *specz, "--run", "nosuchrun")
    assert code == 2 and "no run 'nosuchrun'" in err and "(runs: run)" in err  # names the runs there are
    only_gr = [t for t in _tiles(project) if not t.name.endswith("-i.fits")]
    code, _, err = run_mmz("predict", *only_gr, *specz)
    assert code == 2 and "band(s) i" in err
    other = tmp_path / "other"
    other.mkdir()
    data = fits.getdata(_tiles(project)[0])
    header = fits.getheader(_tiles(project)[0])
    header["FILTER"] = "HSC-Y"
    fits.writeto(other / "tile-y.fits", data, header)
    code, _, err = run_mmz("predict", *_tiles(project), other / "tile-y.fits", *specz)
    assert code == 2 and "not a band of profile tiny" in err
    empty = tmp_path / "empty"
    code, _, err = run_mmz("predict", *_tiles(project), *specz[:-2], "--project", empty)
    assert code == 2 and "no trained run" in err
    assert not out.exists() and not list(tmp_path.glob("cat.fits*"))


def test_torchrun_ranks_share_the_tiles_and_rank_0_merges(project, catalogue):
    out = project / "torchrun.fits"
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
        "predict",
        *map(str, _tiles(project)),
        "--catalog",
        str(project / "specz.fits"),
        "-o",
        str(out),
        "--project",
        str(project),
        "--no-amp",
        "--device",
        "cpu",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    merged, straight = read_photoz(out), read_photoz(catalogue)
    np.testing.assert_array_equal(merged.columns["ID"], straight.columns["ID"])
    np.testing.assert_allclose(merged.columns["PDF"], straight.columns["PDF"], atol=1e-6)


def test_without_catalog_every_source_is_detected_as_the_user_expects(project, run_mmz):
    """``mmz predict tiles/*.fits -o photoz_cat.fits``, as the README writes it: detection, and the summary says so."""
    out = project / "photoz_cat.fits"
    code, _, err = run_mmz("predict", *_tiles(project), "-o", out, "--project", project)
    assert code == 0, err
    assert "detected with sep" in " ".join(err.split())
    cat = read_photoz(out, require=("ID", "X", "Y", "TILE", "PDF"))
    assert len(cat) > 100 and len(set(cat.columns["ID"])) == len(cat)
    assert set(cat.columns["TILE"].astype(str)) == {"tile-0000-i.fits", "tile-0001-i.fits"}
    code, _, err = run_mmz(
        "predict",
        *_tiles(project),
        "--detect",
        "--catalog",
        project / "specz.fits",
        "-o",
        project / "both.fits",
        "--project",
        project,
    )
    assert code == 2 and "one of the two" in err


@pytest.mark.parametrize("keep_going", [False, True])
def test_a_full_disk_is_the_outputs_fault_never_the_tiles(project, run_mmz, monkeypatch, keep_going):
    """With a full disk, predict blamed the input tile, and --keep-going recorded a healthy tile as skipped."""
    import errno

    from mmzcli import predict

    def no_space(path, **_):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(predict.np, "savez", no_space)
    out = project / f"full-{keep_going}.fits"
    code, _, err = run_mmz(
        "-q",
        "predict",
        *_tiles(project),
        "--catalog",
        project / "specz.fits",
        "-o",
        out,
        "--project",
        project,
        "--no-amp",
        *(["--keep-going"] if keep_going else []),
    )
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "No space left on device" in err and "free some disk space" in err
    assert f"{out.name}.parts" in err  # the output's part file is named, not a tile
    assert not out.exists()
    assert not list(out.with_name(out.name + ".parts").glob("*.skipped"))
