"""mmz export: the catalogue's PDFs as a qp ensemble (RAIL's format), streamed, with its ancillary columns."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import qp

from mmzcli.catalog import PhotozWriter, summarise_pdfs
from mmzcli.export import export_qp
from mmzcli.flags import Flag

EDGES = np.linspace(0.0, 2.0, 41)


@pytest.fixture
def catalogue(tmp_path):
    """A 300-row catalogue whose row 7 has no PDF (outside every image), as predict writes it."""
    rng = np.random.default_rng(3)
    n = 300
    pdfs = rng.gamma(0.3, size=(n, len(EDGES) - 1)).astype(np.float32)
    pdfs /= pdfs.sum(axis=1, keepdims=True)
    pdfs[7] = 0
    ids = np.arange(n, dtype=np.int64) * 11 + 5
    flags = np.zeros(n, np.int32)
    flags[7] = int(Flag.OUTSIDE)
    writer = PhotozWriter(tmp_path / "cat.fits", EDGES, {})
    writer.append({"ID": ids, "RA": rng.uniform(0, 1, n), "DEC": rng.uniform(0, 1, n),
                   **summarise_pdfs(pdfs, EDGES, ids), "FLAGS": flags, "PDF": pdfs})  # fmt: skip
    return writer.finish(), pdfs, ids


def test_the_ensemble_holds_the_pdfs_as_densities_and_the_ancillary_columns(run_mmz, catalogue, tmp_path):
    path, pdfs, ids = catalogue
    code, _, err = run_mmz("export", path, "-o", tmp_path / "photoz.hdf5")
    said = " ".join(err.split())
    assert code == 0 and "299 PDFs" in said and "1 rows without a PDF left out" in said
    ensemble = qp.read(str(tmp_path / "photoz.hdf5"))
    keep = np.arange(len(ids)) != 7
    np.testing.assert_array_equal(ensemble.metadata["bins"].ravel(), EDGES)
    np.testing.assert_allclose(ensemble.objdata["pdfs"], pdfs[keep] / np.diff(EDGES), rtol=1e-6)
    np.testing.assert_array_equal(ensemble.ancil["id"], ids[keep])
    for name in ("zmode", "zmean", "zmedian", "zbest", "zmc", "flags", "ra", "dec"):
        assert len(ensemble.ancil[name]) == keep.sum(), name
    assert not np.any(ensemble.ancil["flags"] & int(Flag.OUTSIDE))
    np.testing.assert_allclose(ensemble.cdf(EDGES[-1]).ravel(), 1.0, atol=1e-5)  # densities integrate to 1
    with h5py.File(tmp_path / "photoz.hdf5") as f:
        assert f["data"]["pdfs"].dtype == np.float32


@pytest.mark.parametrize("block_rows", [64, 1])  # 5 blocks, one holding the empty row; 300, one of it alone
def test_streamed_blocks_write_the_file_one_block_writes(catalogue, tmp_path, block_rows):
    path, _, _ = catalogue
    export_qp(path, tmp_path / "blocks.hdf5", block_rows=block_rows)
    export_qp(path, tmp_path / "whole.hdf5")
    a, b = qp.read(str(tmp_path / "blocks.hdf5")), qp.read(str(tmp_path / "whole.hdf5"))
    np.testing.assert_array_equal(a.objdata["pdfs"], b.objdata["pdfs"])
    np.testing.assert_array_equal(a.ancil["id"], b.ancil["id"])


def test_fits_output_round_trips(catalogue, tmp_path):
    path, pdfs, ids = catalogue
    export_qp(path, tmp_path / "photoz.fits", block_rows=100)
    ensemble = qp.read(str(tmp_path / "photoz.fits"))
    keep = np.arange(len(ids)) != 7
    np.testing.assert_array_equal(np.ravel(ensemble.ancil["id"]), ids[keep])
    np.testing.assert_allclose(ensemble.objdata["pdfs"], pdfs[keep] / np.diff(EDGES), rtol=1e-6)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d, cat: ["export", cat, "-o", d / "photoz.csv"], "qp writes .hdf5"),
        (lambda d, cat: ["export", d / "nothing.fits", "-o", d / "x.hdf5"], "no such catalogue file"),
        (lambda d, cat: ["export", cat, "-o", cat], "exists; use --overwrite"),
    ],
)
def test_bad_exports_are_refused_in_one_line(run_mmz, catalogue, tmp_path, make, expected):
    path, _, _ = catalogue
    code, _, err = run_mmz(*make(tmp_path, path))
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


def test_a_catalogue_without_any_pdf_is_refused(run_mmz, tmp_path):
    writer = PhotozWriter(tmp_path / "empty.fits", EDGES, {})
    empty = np.zeros((3, len(EDGES) - 1), np.float32)
    writer.append({"ID": np.arange(3), **summarise_pdfs(empty, EDGES, np.arange(3)), "PDF": empty})
    code, _, err = run_mmz("export", writer.finish(), "-o", tmp_path / "x.hdf5")
    assert code == 2 and "none of its 3 rows has a PDF" in err
    assert not (tmp_path / "x.hdf5").exists()
