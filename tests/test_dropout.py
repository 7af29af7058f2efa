"""mmz dropout-scan: a tiny run trained with --modality-dropout, scanned one dropped modality at a time."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from helpers import is_png, mmz_ok, tiny_cubes

from mmzcli import metrics, pdf

TINY = ["--width", "0.125", "--batch-size", "16", "--no-amp", "--norm", "batch"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def project(tmp_path_factory, one_torch_thread):
    """A tiny-profile project with a two-fold run trained (one epoch) with modality dropout."""
    project = tiny_cubes(tmp_path_factory.mktemp("dropout"), n=150)
    mmz_ok(
        "-q",
        "train",
        "--project",
        project,
        "--folds",
        "2",
        "--epochs",
        "1",
        "--name",
        "mdrop",
        "--modality-dropout",
        *TINY,
    )
    return project


def test_scan_drops_each_modality_and_ranks_by_mean_sigma_mad(project, run_mmz, tmp_path):
    code, _, err = run_mmz(
        "dropout-scan", "--run", "mdrop", "--project", project, "--baseline", "mdrop", "-o", tmp_path
    )
    assert code == 0, err
    report = json.loads((tmp_path / "dropout.json").read_text())
    curves = {c["label"]: c for c in report["curves"]}
    # two-band first-order modalities plus every single-band one (paper 7.4), nothing dropped, the baseline run
    assert set(curves) == {"nothing dropped", "g_r", "r_i", "g", "r", "i", "run mdrop"}
    assert [curves[k]["kind"] for k in ("g_r", "g", "nothing dropped", "run mdrop")] == [
        "multi",
        "single",
        "none",
        "reference",
    ]
    means = [c["mean"] for c in report["curves"]]
    assert means == sorted(means) and report["folds"] == [0, 1]
    none = curves["nothing dropped"]
    assert none["mean"] == pytest.approx(np.mean(none["binned"]["sigma_mad"]))
    assert len(none["binned"]["sigma_mad"]) == 8 and none["binned"]["sigma_mad_err"][0] is not None

    # nothing dropped = the run's own out-of-fold predictions, recomputed from its checkpoints
    oof = np.load(project / "runs" / "mdrop" / "oof.npz")
    expect = metrics.summary(pdf.median(oof["pdf"], np.linspace(0, 1, 51)), oof["z_spec"], 0.15)
    assert none["overall"]["n"] == expect["n"] == report["n"]
    assert none["overall"]["sigma_mad"] == pytest.approx(expect["sigma_mad"], abs=1e-6)
    np.testing.assert_allclose(curves["run mdrop"]["binned"]["sigma_mad"], none["binned"]["sigma_mad"], atol=1e-6)
    # dropping a modality changes the predictions
    assert any(curves[k]["overall"]["sigma_mad"] != none["overall"]["sigma_mad"] for k in ("g_r", "r_i", "g", "r", "i"))

    assert is_png(tmp_path / "dropout_vs_z.png")
    assert "ranked by mean σ_MAD" in err and "r_i" in err


def test_run_without_modality_dropout_is_refused(project, run_mmz):
    run = project / "runs" / "plain"
    run.mkdir(exist_ok=True)
    settings = yaml.safe_load((project / "runs" / "mdrop" / "config.yaml").read_text())
    settings["model"]["modality_dropout"] = False
    (run / "config.yaml").write_text(yaml.safe_dump(settings))
    code, _, err = run_mmz("dropout-scan", "--run", "plain", "--project", project)
    assert code == 2 and "not trained with modality dropout" in err and "--modality-dropout" in err
    assert len(err.strip().splitlines()) == 1, err


def test_unknown_run_or_baseline_without_predictions_exit_2(project, run_mmz, tmp_path):
    code, _, err = run_mmz("dropout-scan", "--run", "nope", "--project", project)
    assert code == 2 and "no run 'nope'" in err and "mdrop" in err and len(err.strip().splitlines()) == 1
    unfinished = project / "runs" / "unfinished"
    unfinished.mkdir(exist_ok=True)
    shutil.copy(project / "runs" / "mdrop" / "config.yaml", unfinished / "config.yaml")
    code, _, err = run_mmz(
        "dropout-scan", "--run", "mdrop", "--project", project, "--baseline", "unfinished", "-o", tmp_path
    )
    assert code == 2 and "no out-of-fold predictions" in err and len(err.strip().splitlines()) == 1, err
