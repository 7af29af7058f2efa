"""mmz demo runs every step end to end (on a tiny survey here) and skips them all when run again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import is_png

from mmzcli import demo
from mmzcli.catalog import read_photoz

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_demo_runs_end_to_end_and_resumes(tmp_path, monkeypatch):
    for name, value in {
        "DEMO_PROFILE": "tiny",
        "DEMO_GALAXIES": 300,
        "DEMO_TILE_SIZE": 512,
        "DEMO_WIDTH": 0.125,
        "DEMO_EPOCHS": 1,
    }.items():
        monkeypatch.setattr(demo, name, value)
    timings = demo.run_demo(tmp_path, jobs=1)
    assert {"simulate", "build-cubes", "predict (tiles -> catalogue)", "evaluate", "bootstrap"} <= set(timings)
    assert sum(name.startswith("train ") for name in timings) == 2
    survey = read_photoz(tmp_path / "photoz_cat.fits")
    assert len(survey) == 300 and survey.header["CATKIND"] == "tiles"  # 300: the bootstrap needs 50 in fold 0
    assert np.all((survey.columns["Z_PHOT"] >= 0) & (survey.columns["Z_PHOT"] <= 1))  # on the tiny grid, 0-1

    # evaluate: both out-of-fold catalogues, on the same labelled objects of fold 0, with sane metrics
    oof = read_photoz(tmp_path / "catalogs" / "oof-early.fits", require=("ID", "PDF", "Z_SPEC", "FOLD"))
    assert oof.header["CATKIND"] == "oof" and set(oof.columns["FOLD"]) == {0}
    report = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert [c["label"] for c in report["catalogs"]] == ["oof-early", "oof-baseline"]
    assert report["n_common"] == len(oof) > 10
    overall = {c["label"]: c["overall"] for c in report["catalogs"]}
    for label, o in overall.items():
        assert o["n"] == len(oof) and o["outlier_threshold"] == 0.15, label
        assert 0 < o["sigma_mad"] < 1 and 0 <= o["eta"] <= 1 and abs(o["bias"]) < 1 and 0 < o["crps"] < 1, label
    assert all(c["z_grid"] == {"z_min": 0.0, "z_max": 1.0, "n_bins": 50} for c in report["catalogs"])
    for name in ("zphot_vs_zspec.png", "metrics_vs_mag.png", "metrics_vs_z.png", "pit.png"):
        assert is_png(tmp_path / "evaluate" / name), name

    # bootstrap: the baseline against early fusion, scored as evaluate scored them
    boot = json.loads((tmp_path / "bootstrap" / "bootstrap.json").read_text())
    assert Path(boot["base"]).name == "oof-baseline.fits" and Path(boot["other"]).name == "oof-early.fits"
    assert boot["n"] == len(oof) and boot["resamples"] > 0
    for key in ("sigma_mad", "eta", "crps"):
        assert boot[key]["base"] == pytest.approx(overall["oof-baseline"][key]), key
        assert boot[key]["other"] == pytest.approx(overall["oof-early"][key]), key
        assert 0 <= boot[key]["p_value"] <= 1, key
    assert boot["abs_bias"]["other"] == pytest.approx(abs(overall["oof-early"]["bias"]))
    assert is_png(tmp_path / "bootstrap" / "bootstrap.png")

    assert demo.run_demo(tmp_path, jobs=1) == {}  # everything done: nothing runs again
