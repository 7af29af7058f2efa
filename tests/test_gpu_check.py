"""bench/gpu_check.sh, the one command for a lent GPU, runs end to end: here on the CPU with tiny settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fitsio

from mmzcli.device import fast_bf16

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_check_runs_on_a_cpu_and_reports_every_figure(tmp_path):
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OUT": str(tmp_path / "out"),
        "GPU_CHECK_PROJECT": str(tmp_path / "survey"),
        "GPU_CHECK_N": "200",
        "GPU_CHECK_WIDTH": "0.05",  # a tiny network: the script's logic is tested here, not its speed
        "GPU_CHECK_DEVICE": "cpu",
        "GPU_CHECK_JOBS": "2",
        "GPU_CHECK_STEPS": "2",
        "GPU_CHECK_VARIANTS": "0",  # minutes on a CPU at batch 128; ran on the GPU (docs/benchmarks.md)
    }
    done = subprocess.run(  # a real shell script: it must run as the device machine runs it
        ["bash", str(ROOT / "bench" / "gpu_check.sh")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    bench = json.loads((out / "bench.json").read_text())
    assert {r["model"] for r in bench["rows"]} == {"baseline", "mm2-early"}
    assert all(r["step"] > 0 and r["loop"] > 0 and r["utilisation"] > 0 for r in bench["rows"])
    assert "concurrent" not in bench and bench["compile_mode"] is None  # models at once: a file of their own
    jobs = json.loads((out / "bench-jobs.json").read_text())["concurrent"]
    assert [c["jobs"] for c in jobs] == [2] and jobs[0]["aggregate"] > 0
    assert len(json.loads((out / "metrics.json").read_text())["models"]) == 2  # 2 folds, together
    log = (out / "gpu_check.log").read_text()
    assert "aggregate while all ran together" in log and "2 models at once: " in log and "done in" in log
    assert bench["precision"] == ("bf16" if fast_bf16("cpu") else "fp32")  # emulated bf16 would take minutes


def test_the_gpu_study_runs_on_a_cpu_and_brings_back_the_variants_table(tmp_path):
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OUT": str(tmp_path / "out"),
        "GPU_STUDY_DIR": str(tmp_path / "study"),
        "GPU_STUDY_N": "300",  # the bootstrap needs 50 held-out objects
        "GPU_STUDY_WIDTH": "0.05",
        "GPU_STUDY_EPOCHS": "1",
        "GPU_STUDY_DEVICE": "cpu",
        "GPU_STUDY_VARIANTS": "dropout",
        "GPU_STUDY_TEST_N": "200",
    }
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_study.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    variants = json.loads((out / "variants.json").read_text())
    assert set(variants["against_baseline"]) == {"multimodal", "dropout"}
    assert all(0 <= r["sigma_mad"]["p_value"] <= 1 for r in variants["against_baseline"].values())
    assert json.loads((out / "accuracy.json").read_text())["simulated"] is True
    curves = json.loads((out / "dropout.json").read_text())["curves"]  # nothing, each modality dropped; references
    assert {"none", "multi", "reference"} <= {c["kind"] for c in curves}
    assert (out / "dropout_vs_z.png").stat().st_size > 0
    for run in ("baseline", "multimodal", "dropout"):  # every run's learning curve comes back
        assert "epoch 1:" in (out / f"run-{run}-train.log").read_text()

    # a run trained by hand stands in for a model: its catalogue is predicted again, and the report names it
    study = [sys.executable, str(ROOT / "bench" / "accuracy.py"), "--profile", "hsc9", "--dir", str(tmp_path / "study")]
    unfinished = subprocess.run([*study, "--step", "train", "--run", "baseline=none"], capture_output=True, text=True)
    assert unfinished.returncode != 0 and "run none" in unfinished.stderr and "mmz train" in unfinished.stderr
    done = subprocess.run([*study, "--step", "all", "--run", "multimodal=dropout"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert fitsio.read_header(str(tmp_path / "study" / "oof-multimodal.fits"), "PHOTOZ")["RUN"] == "dropout"
    report = json.loads((tmp_path / "study" / "accuracy.json").read_text())
    assert report["training"]["multimodal"]["run"] == "dropout" and report["training"]["baseline"]["run"] == "baseline"
    assert report["training"]["multimodal"]["recipe"]["epochs"] == 1

    # fold 0's models on an independent test survey (made by gpu_study.sh): the CNNs from its tiles, the forest
    # refitted, all scored, the variants against the baseline too
    test = tmp_path / "study" / "test"
    result = json.loads((out / "accuracy-test.json").read_text())
    assert result["simulated"] is True and result["test_survey"]["seed"] == 1001
    assert set(result["bootstrap"]) == {"multimodal_vs_baseline", "baseline_vs_forest", "multimodal_vs_forest"}
    assert set(result["variants_against_baseline"]) == {"dropout"}
    assert fitsio.read_header(str(test / "test-forest.fits"), "PHOTOZ")["CATKIND"].strip() == "test"
    assert result["models"]["multimodal"] == "multimodal" and result["test_survey"]["objects"] >= 50
    header = fitsio.read_header(str(test / "test-dropout.fits"), "PHOTOZ")  # from the tiles, by the dropout run
    assert header["CATKIND"] == "tiles" and header["RUN"] == "dropout"
    other_size = subprocess.run([*study, "--step", "test", "--test-n", "300"], capture_output=True, text=True)
    assert other_size.returncode != 0 and "--test-n 200" in other_size.stderr
