"""mmz demo runs every step end to end (on a tiny survey here) and skips them all when run again."""

from __future__ import annotations

import json

from mmzcli import demo
from mmzcli.catalog import read_photoz


def test_demo_runs_end_to_end_and_resumes(tmp_path, monkeypatch):
    for name, value in {"DEMO_PROFILE": "tiny", "DEMO_GALAXIES": 150, "DEMO_TILE_SIZE": 512,
                        "DEMO_WIDTH": 0.125, "DEMO_EPOCHS": 1}.items():
        monkeypatch.setattr(demo, name, value)
    timings = demo.run_demo(tmp_path, jobs=1)
    assert {"simulate", "build-cubes", "predict (tiles -> catalogue)", "evaluate", "bootstrap"} <= set(timings)
    assert sum(name.startswith("train ") for name in timings) == 2
    survey = read_photoz(tmp_path / "photoz_cat.fits")
    assert len(survey) == 150 and survey.header["CATKIND"] == "tiles"
    metrics = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert len(json.dumps(metrics)) > 100 and (tmp_path / "evaluate" / "pit.png").exists()
    assert (tmp_path / "bootstrap" / "bootstrap.json").exists()
    assert demo.run_demo(tmp_path, jobs=1) == {}  # everything done: nothing runs again
