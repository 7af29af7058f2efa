"""A RAIL estimator stage around a trained mmz run: sources and survey tiles in, a qp ensemble out.

RAIL (LSST DESC's photo-z framework, ``pip install 'mmz[rail]'``) chains stages that take tables
and give qp ensembles. ``MmzEstimator`` follows its ``CatEstimator`` conventions: the ``model`` is
the mmz run (a name under ``project``/runs or a directory), the ``input`` a table of sources
(``id_col``, RA, DEC and optionally EBV, in chunks of ``chunk_size``), and for each chunk the sources
are cut from the ``tiles`` and predicted exactly as ``mmz predict`` does. The output is a qp
``hist`` ensemble on the run's redshift grid, one row per input source in input order, with
RAIL's ``zmode`` and the catalogue's estimates (``mmz export``'s names) as ancillary data. A
source outside every image has no PDF: it gets a flat one and the OUTSIDE bit in ``flags``.

    from mmzcli.rail_stage import MmzEstimator
    stage = MmzEstimator.make_stage(name="mmz", model="early-concat-s2o1-w1", project="P",
                                    tiles=["tiles/*.fits"], output="photoz_mmz.hdf5")
    ensemble = stage.estimate(table).data
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import qp
from ceci.config import StageParameter as Param
from rail.core.data import ModelHandle, TableHandle
from rail.estimation.estimator import CatEstimator

from mmzcli.errors import ConfigError
from mmzcli.export import ANCILLARY, hist_ensemble
from mmzcli.flags import Flag

AMP = {"auto": None, "on": True, "off": False}  # the stage's amp setting -> mmz predict's --amp


class MmzEstimator(CatEstimator):
    """mmz's multimodal CNN as a RAIL estimator (see the module docstring)."""

    name = "MmzEstimator"
    entrypoint_function = "estimate"
    inputs = [("model", ModelHandle), ("input", TableHandle)]
    config_options = CatEstimator.config_options.copy()
    config_options.update(
        project=Param(str, ".", msg="mmz project directory: the run's home and its survey profile"),
        tiles=Param(list, [], msg="FITS image tiles of every band of the run (paths or globs)"),
        ra_col=Param(str, "RA", msg="right ascension column (deg)"),
        dec_col=Param(str, "DEC", msg="declination column (deg)"),
        ebv_col=Param(str, "", msg="Galactic E(B-V) column ['': the training median, flagged]"),
        device=Param(str, "auto", msg="auto, cpu or cuda"),
        amp=Param(str, "auto", msg="bf16 autocast: auto (where the device runs it fast), on or off (float32)"),
        raw=Param(bool, False, msg="leave out the run's calibration (mmz calibrate)"),
        hdf5_groupname=Param(str, "", msg="group of the input in an HDF5 file ['': a plain table]"),
    )

    def open_model(self, **kwargs: Any) -> Any:
        """The model is an mmz run: a name under ``project``/runs or a run directory."""
        from mmzcli.runs import resolve_run

        self.model = resolve_run(Path(self.config.project), str(kwargs.get("model") or self.config.model))
        return self.model

    def _process_chunk(self, start: int, end: int, data: Any, first: bool) -> None:
        ensemble = self._predict(data)
        self._do_chunk_output(ensemble, start, end, first, data=data)

    def _predict(self, data: Any) -> qp.Ensemble:
        from astropy.table import Table

        from mmzcli.catalog import read_photoz
        from mmzcli.predict import PredictOptions, predict_tiles

        c = self.config
        if c.amp not in AMP:
            raise ConfigError(f"MmzEstimator amp: expected {', '.join(AMP)}, got {c.amp!r}")
        ids = np.asarray(data[c.id_col]).astype(np.int64)
        table = Table({"ID": ids, "RA": np.asarray(data[c.ra_col]), "DEC": np.asarray(data[c.dec_col])})
        if c.ebv_col:
            table["EBV"] = np.asarray(data[c.ebv_col])
        with tempfile.TemporaryDirectory(prefix="mmz-rail-") as tmp:
            sources, output = Path(tmp) / "sources.fits", Path(tmp) / "photoz.fits"
            table.write(sources)
            options = PredictOptions(
                project=Path(c.project), run=str(self.model.path), catalog=sources, ebv="EBV" if c.ebv_col else None,
                columns={"id": "ID", "ra": "RA", "dec": "DEC"}, device=c.device, raw=c.raw, amp=AMP[c.amp],
            )  # fmt: skip
            predict_tiles([Path(t) for t in c.tiles], output, options)
            cat = read_photoz(output)
        at = {i: k for k, i in enumerate(cat.columns["ID"])}
        order = np.array([at[i] for i in ids])  # predict writes tile by tile: back to input order
        pdfs = cat.columns["PDF"][order].astype(np.float64)
        flags = cat.columns["FLAGS"][order]
        empty = ~(pdfs.sum(axis=1) > 0)
        pdfs[empty] = 1.0 / pdfs.shape[1]  # no image data: a flat PDF, said by the OUTSIDE flag
        flags[empty] |= int(Flag.OUTSIDE)
        ancil = {name: cat.columns[column][order] for column, name in ANCILLARY.items() if column in cat.columns}
        ancil |= {"flags": flags, "id": ids}
        return hist_ensemble(pdfs, cat.edges, ancil)
