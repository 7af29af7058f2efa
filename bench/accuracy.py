"""The accuracy study: single-modality baseline vs 2-band first-order early fusion vs a colour forest.

On a simulated survey (``mmz simulate``), with the same cross-validation folds for all three:

- the paper's baseline (one modality holding every band) and its multimodal network (2-band,
  first-order modalities, early concatenation fusion), trained with identical settings;
- the catalogue-level peer: a random forest on colours from forced aperture photometry of the
  same cube stamps (asinh magnitudes, Lupton et al. 1999), whose PDF is the histogram of its
  trees' predictions on the profile's redshift grid (TPZ, Carrasco Kind & Brunner 2013);
- ``mmz evaluate`` (sigma_MAD, eta, bias overall and in bins; plots) and ``mmz bootstrap``
  (paired bootstrap p-values, paper Appendix D) on the three out-of-fold catalogues.

Run (each step is done once; run the same command again after an interruption and it goes on
where it stopped: simulation, cubes, every training epoch, the forest folds, the catalogues)::

    # the plan for ~2.5 h of a 2-core CPU (docs/accuracy.md: what it costs, what it compromises)
    .venv/bin/python bench/accuracy.py --profile hsc9 -n 30000 --width 0.125 --epochs 5 --folds 1
    .venv/bin/python bench/accuracy.py --profile sdss -n 30000 --width 0.125 --epochs 5 --folds 1
    # the full study (a GPU: add --amp and -j 16 at the first call)
    .venv/bin/python bench/accuracy.py --profile hsc9 -n 30000 --width 0.25 --epochs 10 --folds 5
    # pipeline check: minutes
    .venv/bin/python bench/accuracy.py --profile hsc9 -n 1500 --width 0.125 --epochs 2 --folds 1
    # the fusion-stage and modality-size runs against the baseline (variants.json; --parallel N on a GPU)
    .venv/bin/python bench/accuracy.py --profile hsc9 -n 6000 --step variants [--parallel 9]
    # analyse runs trained by hand with mmz train (e.g. longer, with their own epochs) as the two CNNs
    .venv/bin/python bench/accuracy.py --profile sdss -n 6000 --step all --run baseline=RUN --run multimodal=RUN
    # fold 0's three models on an independent simulated test survey of 10,000 galaxies (another seed)
    .venv/bin/python bench/accuracy.py --profile hsc9 -n 6000 --step test --run baseline=RUN --run multimodal=RUN

The study lives in ``--dir`` (default ``~/mmz-accuracy/<profile>-<n>``), outside the work tree
so that it outlives a session.  Its settings are fixed by the first call (``study.json``); a
later call may leave them out, and is refused if it gives different ones.  For hsc9 the
spectroscopic sample is cut at i <= 24 by a child profile (``profile-hsc9-i24.yaml``, written
into the study directory) that keeps hsc6's 50/50 split of targets below and above i = 22.

Writes into the study directory (which is also the mmz project): the simulation and
``cubes.zarr``, ``runs/baseline`` and ``runs/multimodal``, ``oof-{baseline,multimodal,forest}.fits``,
``forest/`` (photometry, feature importances), ``evaluate/`` (metrics.json and plots),
``bootstrap/<base>-vs-<other>/``, ``accuracy.json`` (everything below), ``commands.txt`` (every
command run, for docs) and ``timings.json`` (wall time of every step, summed over sessions);
``--step test`` adds ``test/``, the independent test survey, its catalogues and ``accuracy-test.json``.
Every figure it prints comes from a SIMULATED survey.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TIMINGS_LOCK = threading.Lock()
sys.path.insert(0, str(ROOT))

MODELS = ("baseline", "multimodal", "forest")  # catalogue oof-<model>.fits of each
CNN_FLAGS = {
    "baseline": ["--baseline"],
    "multimodal": ["--fusion", "early", "--fusion-type", "concat", "--modality-size", "2", "--orders", "1"],
}
PAIRS = (("baseline", "multimodal"), ("forest", "baseline"), ("forest", "multimodal"))  # bootstrap BASE OTHER
# The orderings of the paper's Fig. 2-5 (issue 13): fusion stage at modality size 2, and modality size at early
# fusion (first order, concatenation); "multimodal" is the early, size-2 point of both; "dropout" is it trained
# with modality dropout, for mmz dropout-scan. --step variants.
VARIANT_FLAGS = {
    **{f"fusion-{stage}": ["--fusion", stage, "--fusion-type", "concat", "--modality-size", "2", "--orders", "1"]
       for stage in ("extremely-early", "very-early", "middle", "late")},
    **{f"size-{k}": ["--fusion", "early", "--fusion-type", "concat", "--modality-size", str(k), "--orders", "1"]
       for k in (1, 3, 4)},
    "dropout": [*CNN_FLAGS["multimodal"], "--modality-dropout"],  # for mmz dropout-scan (paper 7.4)
}  # fmt: skip
CNN_FLAGS |= VARIANT_FLAGS
FUSION_ORDER = ("fusion-extremely-early", "fusion-very-early", "multimodal", "fusion-middle", "fusion-late")
SIZE_ORDER = ("size-1", "multimodal", "size-3", "size-4")
DEFAULTS = {
    "n": 30000,
    "width": 0.25,
    "epochs": 10,
    "folds": 5,
    "seed": 1,
    "amp": False,
    "norm": "batch",
    "batch_size": 32,
    "lr": 1e-3,
    "trees": 200,
    "min_leaf": 3,
    "resamples": 10000,
    "aperture": None,
    "sed_variety": 0.0,
}
APERTURE = {"hsc9": 2.0, "sdss": 3.0}  # arcsec diameter: HSC's standard 2", the SDSS fibre's 3"
HSC9_MAG_LIMIT = 24.0
# issue 13 against the colour forest: sdss, both CNNs' sigma_MAD <= 0.8x its; hsc9, the multimodal CNN's
# <= 1.0x (moonshot 0.8x), with eta and CRPS not worse
FOREST_RATIO_TARGET = {"sdss": 0.8, "hsc9": 1.0}
P_TARGET = 0.05

# Paper Table 2: SDSS MGS (r <= 17.8), REAL data; sigma_MAD and bias in 1e-3, eta(|dz| >= 0.05) in %.
PAPER_TABLE2 = (
    ("Pasquet et al. 2019 (P19)", 9.08, 0.31, 0.04),
    ("Dey et al. 2021", 8.98, 0.19, 0.07),
    ("Hayat et al. 2021", 8.25, 0.21, 0.1),
    ("Treyer et al. 2023 (the baseline)", 8.00, 0.18, -0.31),
    ("Multimodal network (the paper)", 7.85, 0.16, 0.31),
)


# ----------------------------------------------------------------------------- the study directory


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, default=None):
    return json.loads(path.read_text()) if path.exists() else default


class Study:
    """The study directory (an mmz project), its fixed settings and its logs of commands and wall times."""

    def __init__(self, root: Path, settings: dict):
        self.root, self.settings = root, settings
        self.runs: dict[str, str] = {}  # model -> a run trained by hand (--run); else the run is named as the model

    def run_name(self, model: str) -> str:
        return self.runs.get(model, model)

    @classmethod
    def open(cls, args) -> Study:
        n = args.n if args.n is not None else DEFAULTS["n"]
        root = Path(args.dir) if args.dir else Path.home() / "mmz-accuracy" / f"{args.profile}-{n}"
        root.mkdir(parents=True, exist_ok=True)
        given = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k, None) is not None}
        given["profile"] = args.profile
        stored = read_json(root / "study.json")
        if stored is None:
            settings = {**DEFAULTS, **given, "created": now()}
            settings["aperture"] = settings["aperture"] or APERTURE[args.profile]
            write_json(root / "study.json", settings)
        else:
            clash = [k for k, v in given.items() if stored.get(k) != v]
            if clash:
                k = clash[0]
                sys.exit(
                    f"{root / 'study.json'}: this study was started with {k} = {stored.get(k)!r}, "
                    f"not {given[k]!r}; leave --{k.replace('_', '-')} out to continue it, or choose "
                    f"another --dir"
                )
            settings = stored
        return cls(root, settings)

    @contextlib.contextmanager
    def lock(self):
        """Only one driver per study: a second one would train the same runs twice."""
        with open(self.root / ".accuracy.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                sys.exit(
                    f"{self.root}: another bench/accuracy.py is working on this study (lock "
                    f"{self.root / '.accuracy.lock'}); wait for it or stop it first"
                )
            yield

    @property
    def profile_arg(self) -> str:
        """What ``mmz simulate --profile`` gets: the shipped profile, the i <= 24 child profile for hsc9,
        and a child of either with the simulator's SED variety where the study asks for it."""
        base = self.settings["profile"] if self.settings["profile"] != "hsc9" else self.hsc9_i24()
        variety = self.settings.get("sed_variety", 0.0)  # studies begun before the setting have none
        if not variety:
            return base
        path = self.root / "profile-variety.yaml"
        if not path.exists():
            path.write_text(
                "# kcorrect's basis spectra mixed into every galaxy (bench/accuracy.py --sed-variety)\n"
                f"extends: {base}\n"
                f"name: {Path(base).stem}-variety\n"
                f"simulation:\n  sed: {{variety: {variety}}}\n"
            )
        return str(path)

    def hsc9_i24(self) -> str:
        path = self.root / "profile-hsc9-i24.yaml"
        if not path.exists():
            path.write_text(
                "# hsc9 with the spectroscopic sample cut at i <= 24 (bench/accuracy.py): the issue's\n"
                "# limit, and the paper's Table 3 sizes. The targets keep hsc6's split: as many at\n"
                "# i <= 22 as at 22 < i <= 24 (hsc6: 45% / 45% / 10% at 24 < i <= 25).\n"
                "extends: hsc9\n"
                "name: hsc9-i24\n"
                'description: "HSC-Deep u+grizy+JHKs, spectroscopic sample i <= 24 (accuracy study), z 0-4"\n'
                f"reference_mag_limit: {HSC9_MAG_LIMIT}\n"
                "simulation:\n"
                f"  spec: {{mag_limit: {HSC9_MAG_LIMIT}, mag_fractions: [[22.0, 0.5], [{HSC9_MAG_LIMIT}, 0.5]]}}\n"
            )
        return str(path)

    def profile(self):
        from mmzcli.project import project_profile

        return project_profile(self.root, None)

    def log_time(self, step: str, seconds: float, command: str | None = None, rc: int = 0) -> None:
        with TIMINGS_LOCK:  # --parallel runs finish in threads
            self._log_time(step, seconds, command, rc)

    def _log_time(self, step: str, seconds: float, command: str | None, rc: int) -> None:
        path = self.root / "timings.json"
        entries = read_json(path, [])
        entries.append(
            {
                "step": step,
                "seconds": round(seconds, 2),
                "finished": now(),
                "rc": rc,
                "host": platform.node(),
                "cpus": os.cpu_count(),
                **({"command": command} if command else {}),
            }
        )
        write_json(path, entries)

    def wall(self) -> dict[str, float]:
        """Wall seconds of each step: an interrupted attempt adds to the one that finished it; a
        step run again after it had finished (e.g. the analysis) counts its last run only."""
        out: dict[str, float] = {}
        finished: set[str] = set()
        for e in read_json(self.root / "timings.json", []):
            step = e["step"]
            if step in finished:
                out[step] = 0.0
                finished.discard(step)
            out[step] = round(out.get(step, 0.0) + e["seconds"], 1)
            if e["rc"] == 0:
                finished.add(step)
        return out


# ----------------------------------------------------------------------------- running mmz


def _die_with_parent() -> list[str]:
    """A prefix that makes the child get SIGTERM when the driver dies, even by SIGKILL, so that no
    orphaned trainer goes on beside the next driver (Linux, util-linux setpriv; else nothing)."""
    return ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []


def mmz(study: Study, step: str, *args: str, capture: bool = False) -> str:
    """Run ``mmz ARGS`` (this interpreter's mmzcli), log the command and its wall time; stdout if ``capture``."""
    command = [*_die_with_parent(), sys.executable, "-m", "mmzcli", *args]
    shown = "mmz " + shlex.join(args)
    with open(study.root / "commands.txt", "a") as f:
        f.write(f"{now()} {shown}\n")
    print(f"\n== {step}: {shown}", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE if capture else None, text=True)
    try:
        out, _ = proc.communicate()
    except BaseException:  # Ctrl-C, SIGTERM: stop the child too (its work is resumable)
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        study.log_time(step, time.perf_counter() - start, shown, rc=-1)
        raise
    study.log_time(step, time.perf_counter() - start, shown, rc=proc.returncode)
    if proc.returncode != 0:
        sys.exit(
            f"{step}: '{shown}' failed with exit code {proc.returncode}; fix the cause and run "
            f"bench/accuracy.py again: it continues where it stopped"
        )
    return out or ""


@contextlib.contextmanager
def timed(study: Study, step: str):
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        study.log_time(step, time.perf_counter() - start, rc=-1)
        raise
    study.log_time(step, time.perf_counter() - start)


def bootstrap(study: Study, base: Path, other: Path, out: Path, step: str, truth: Path | None = None) -> dict:
    """``mmz bootstrap BASE OTHER`` into ``out``: per metric base, other, gain, p-value and the 95% interval of
    the difference; ``truth`` is the spectroscopic table of catalogues without Z_SPEC."""
    s = study.settings
    with_truth = [] if truth is None else ["--truth", str(truth)]
    result = json.loads(
        mmz(study, step, "-q", "bootstrap", str(base), str(other), *with_truth, "-K", str(s["resamples"]),
            "--seed", str(s["seed"]), "-o", str(out), "--json", capture=True)
    )  # fmt: skip
    full = read_json(out / "bootstrap.json", {})
    metrics = {k: {**v, "delta_ci95": full.get(k, {}).get("delta_ci95")} for k, v in result.items()}
    return {**metrics, "n": full.get("n")}


# ----------------------------------------------------------------------------- step 1: data


def step_data(study: Study) -> None:
    from mmzcli.store import cubes_path, is_complete

    s, root = study.settings, study.root
    if (root / "specz.fits").exists():
        print(f"data: simulation done ({root / 'specz.fits'})")
    else:  # not resumable inside, but atomic: a killed simulation starts afresh
        mmz(
            study,
            "simulate",
            "simulate",
            "--profile",
            study.profile_arg,
            "-n",
            str(s["n"]),
            "--project",
            str(root),
            "-j",
            str(s.get("jobs", 2)),
            "--seed",
            str(s["seed"]),
        )
    if is_complete(cubes_path(root)):
        print(f"data: cubes done ({cubes_path(root)})")
    else:
        mmz(study, "build-cubes", "build-cubes", "--project", str(root), "-j", str(s.get("jobs", 2)))


# ----------------------------------------------------------------------------- step 2: the CNNs


def run_done(run_dir: Path, folds: int) -> bool:
    """Every fold's model is finished and oof.npz covers exactly those folds."""
    if not all((run_dir / f"fold{k}_seed0.pt").exists() for k in range(folds)):
        return False
    oof = run_dir / "oof.npz"
    return oof.exists() and set(np.unique(np.load(oof)["fold"]).tolist()) == set(range(folds))


def predicted_from(catalogue: Path, run_dir: Path) -> bool:
    """The catalogue holds this run's current out-of-fold PDFs as the network gave them (a --run may have changed
    the run; a catalogue written before --raw may hold calibrated PDFs)."""
    import fitsio

    if not catalogue.exists() or catalogue.stat().st_mtime < (run_dir / "oof.npz").stat().st_mtime:
        return False
    header = fitsio.read_header(str(catalogue), "PHOTOZ")
    return header.get("RUN") == run_dir.name and header.get("CALIB", "none") == "none"


def step_cnn(study: Study, model: str) -> None:
    s, root, name = study.settings, study.root, study.run_name(model)
    run_dir = root / "runs" / name
    if run_done(run_dir, s["folds"]):
        print(f"train: run {name} done ({run_dir})")
    elif name != model:
        sys.exit(
            f"train: run {name} ({run_dir}) has no finished model and out-of-fold predictions for folds "
            f"0..{s['folds'] - 1}; finish it with mmz train, or leave --run {model}={name} out to train {model} here"
        )
    else:
        mmz(
            study,
            f"train-{model}",
            "train",
            "--project",
            str(root),
            *CNN_FLAGS[model],
            "--width",
            f"{s['width']:g}",
            "--epochs",
            str(s["epochs"]),
            "--folds",
            str(s["folds"]),
            "--norm",
            s["norm"],
            "--amp" if s["amp"] else "--no-amp",
            "--batch-size",
            str(s["batch_size"]),
            "--lr",
            f"{s['lr']:g}",
            "--name",
            model,
        )
    catalogue = root / f"oof-{model}.fits"
    if predicted_from(catalogue, run_dir):
        print(f"train: catalogue {catalogue.name} done")
    else:
        mmz(
            study,
            f"predict-{model}",
            "predict",
            "--cubes",
            "--project",
            str(root),
            "--run",
            name,
            "--raw",  # the networks as trained: a run's PIT calibration (mmz calibrate) is judged on its own
            "-o",
            str(catalogue),
            "--overwrite",
        )


def step_variants(study: Study, parallel: int, only: list[str] | None = None) -> dict:
    """The fusion-stage and modality-size runs, ``parallel`` at a time (a GPU: several models fill it), each
    against the baseline by the paired bootstrap on the same objects; writes variants.json."""
    from concurrent.futures import ThreadPoolExecutor

    unknown = set(only or ()) - set(VARIANT_FLAGS)
    if unknown:
        sys.exit(f"--variants {','.join(sorted(unknown))}: expected some of {','.join(VARIANT_FLAGS)}")
    names = ["baseline", "multimodal", *(only or VARIANT_FLAGS)]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(lambda name: step_cnn(study, name), names))  # each resumable; a failure exits
    s, root = study.settings, study.root
    rows = {}
    for name in names[1:]:
        boot = bootstrap(study, root / "oof-baseline.fits", root / f"oof-{name}.fits",
                         root / "bootstrap" / f"baseline-vs-{name}", f"bootstrap-baseline-vs-{name}")  # fmt: skip
        rows[name] = {m: boot[m] for m in ("sigma_mad", "eta", "crps")}
        rows[name]["training"] = run_speed(root / "runs" / study.run_name(name))
    if "dropout" in rows:  # which band pair matters at which redshift (paper Fig. 10)
        mmz(study, "dropout-scan", "-q", "dropout-scan", "--project", str(root), "--run", study.run_name("dropout"),
            "--baseline", study.run_name("baseline"), "--baseline", study.run_name("multimodal"),
            "-o", str(root / "dropout-scan"))  # fmt: skip
    result = {"simulated": True, "study_dir": str(root), "settings": dict(s), "written": now(),
              "fusion_order": FUSION_ORDER, "size_order": SIZE_ORDER, "against_baseline": rows}  # fmt: skip
    write_json(root / "variants.json", result)
    print("\n| model | σ_MAD | baseline's | gain | p (better than the baseline) | η | CRPS |")
    print("|---|---|---|---|---|---|---|")
    for name in dict.fromkeys(n for n in (*FUSION_ORDER, *SIZE_ORDER, "dropout") if n in rows):
        r = rows[name]
        sm = r["sigma_mad"]
        print(f"| {name} | {sm['other']:.4f} | {sm['base']:.4f} | {sm['gain']:+.1%} | {sm['p_value']:.4f} "
              f"| {r['eta']['other']:.3f} | {r['crps']['other']:.4f} |")  # fmt: skip
    print(f"\nwrote {root / 'variants.json'}")
    return result


# ----------------------------------------------------------------------------- step 2b: the colour forest


def aperture_weights(size: int, radius: float, oversample: int = 8) -> np.ndarray:
    """[size, size] fraction of each pixel inside a circle of ``radius`` px at the stamp centre ((S-1)/2)."""
    centre = (size - 1) / 2
    sub = (np.arange(size * oversample) + 0.5) / oversample - 0.5  # sub-pixel centres, pixel i spans i +- 0.5
    yy, xx = np.meshgrid(sub, sub, indexing="ij")
    inside = (xx - centre) ** 2 + (yy - centre) ** 2 <= radius**2
    return inside.reshape(size, oversample, size, oversample).mean(axis=(1, 3))


def aperture_photometry(
    cubes, band_ok: np.ndarray, profile, diameter: float, block: int = 512
) -> dict[str, np.ndarray]:
    """Forced circular-aperture fluxes at the centre of every stamp of ``cubes`` [N, B, S, S] (a Zarr
    array or any array), and their 1-sigma noise.

    Fluxes are sums of the background-subtracted stamp pixels (tile units) weighted by the
    pixels' fractions inside the aperture.  The noise of each stamp is the robust sigma
    (1.4826 MAD) of its pixels beyond ``noise_radius`` of the centre times the aperture's
    sqrt(sum of squared weights): pixel-to-pixel correlations (resampled bands) are ignored.
    Returns flux, flux_err [N, B] (NaN where band_ok is false) and the radii used.
    """
    size = profile.cutout_size
    radius = diameter / 2 / profile.pixel_scale
    w = aperture_weights(size, radius).ravel()
    yy, xx = np.indices((size, size)) - (size - 1) / 2
    noise_radius = max(3 * radius, size / 2 - 12)
    sky = (np.hypot(xx, yy) >= noise_radius).ravel()
    n, bands = cubes.shape[:2]
    flux, err = np.full((n, bands), np.nan), np.full((n, bands), np.nan)
    chunk = getattr(cubes, "chunks", (block,))[0]  # whole Zarr chunks per read
    block = block // chunk * chunk or chunk
    for lo in range(0, n, block):
        x = np.asarray(cubes[lo : lo + block], dtype=np.float32).reshape(-1, bands, size * size)
        flux[lo : lo + len(x)] = x @ w
        pixels = x[:, :, sky]
        mad = np.median(np.abs(pixels - np.median(pixels, axis=-1, keepdims=True)), axis=-1)
        err[lo : lo + len(x)] = 1.4826 * mad * np.sqrt(np.sum(w**2))
    flux[~band_ok], err[~band_ok] = np.nan, np.nan
    return {"flux": flux, "flux_err": err, "radius_px": radius, "noise_radius_px": noise_radius}


def asinh_mag(flux: np.ndarray, softening: np.ndarray, zeropoint: np.ndarray) -> np.ndarray:
    """Lupton et al. (1999) magnitudes: -2.5/ln10 [asinh(x / 2b) + ln b], x and b in units of the 0-mag flux.

    Equal to zeropoint - 2.5 log10(flux) for flux >> b; finite and monotonic for faint and
    negative fluxes.  ``softening`` b is in the same units as ``flux`` (per band).
    """
    f0 = 10.0 ** (0.4 * zeropoint)
    x, b = flux / f0, softening / f0
    return -2.5 / math.log(10) * (np.arcsinh(x / (2 * b)) + np.log(b))


def forest_features(
    phot: dict, group, profile, softening: np.ndarray | None = None
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Dereddened reference magnitude, adjacent colours and E(B-V): the forest's input [N, F].

    The asinh softening of each band is its median 1-sigma aperture noise over the stamps
    with data (or ``softening``: the training survey's, for another survey's stamps).  A missing
    band (band_ok false) gives NaN in its colours.
    """
    names = profile.band_names
    zp = np.array([b.zeropoint for b in profile.bands])
    r_ext = np.array([b.extinction for b in profile.bands])
    if softening is None:
        softening = np.nanmedian(phot["flux_err"], axis=0)
    ebv = group["ebv"][:].astype(np.float64)
    mags = asinh_mag(phot["flux"], softening, zp) - r_ext * ebv[:, None]
    ref = profile.band_index(profile.reference_band)
    features = np.column_stack([mags[:, ref], mags[:, :-1] - mags[:, 1:], ebv])
    labels = [profile.reference_band] + [f"{a}-{b}" for a, b in pairwise(names)] + ["EBV"]
    return features.astype(np.float32), labels, softening


def tree_pdfs(forest, x: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PDF [n, N_b] = histogram of the trees' predictions on the grid (TPZ), and the forest's mean."""
    z = np.stack([tree.predict(x) for tree in forest.estimators_])  # [trees, n]
    n_bins = len(edges) - 1
    k = np.clip(np.searchsorted(edges, z, side="right") - 1, 0, n_bins - 1)
    rows = np.broadcast_to(np.arange(x.shape[0]), z.shape)
    counts = np.bincount((rows * n_bins + k).ravel(), minlength=x.shape[0] * n_bins)
    return (counts.reshape(x.shape[0], n_bins) / len(z)).astype(np.float32), z.mean(axis=0)


def survey_photometry(study: Study, root: Path, group, profile, step: str = "forest-photometry") -> dict:
    """The aperture photometry of every stamp of ``root``'s cubes, measured once (``forest/photometry.npz``)."""
    folder = root / "forest"
    folder.mkdir(exist_ok=True)
    path = folder / "photometry.npz"
    if path.exists():
        return dict(np.load(path))
    aperture = study.settings["aperture"]
    print(f'\n== forest: {aperture:g}"-diameter aperture photometry of {group["cubes"].shape[0]} cubes', flush=True)
    with timed(study, step):
        phot = aperture_photometry(group["cubes"], group["band_ok"][:], profile, aperture)
    np.savez(folder / ".photometry.tmp.npz", id=group["id"][:], **phot)
    os.replace(folder / ".photometry.tmp.npz", path)
    return phot


def fit_forest(study: Study, features: np.ndarray, z_spec: np.ndarray, fold: int):
    """The random forest of CV fold ``fold`` (seeded by it: refitting gives the same forest)."""
    from sklearn.ensemble import RandomForestRegressor

    s = study.settings
    forest = RandomForestRegressor(
        n_estimators=s["trees"],
        min_samples_leaf=s["min_leaf"],
        n_jobs=s.get("jobs", 2),
        random_state=s["seed"] * 100 + fold,
    )
    return forest.fit(features, z_spec)


def write_forest_catalogue(
    study: Study, path: Path, group, rows: np.ndarray, pdfs: np.ndarray, z_mean: np.ndarray, labels: list[str],
    kind: str, folds: np.ndarray | None,
) -> None:  # fmt: skip
    """The forest's PDFs of ``group``'s ``rows`` as an mmz photo-z catalogue, with Z_SPEC and the ref. magnitude."""
    from mmzcli import __version__
    from mmzcli.catalog import summarise_pdfs, write_photoz

    s, profile = study.settings, study.profile()
    grid = profile.redshift_grid
    edges = grid.edges()
    ids = group["id"][:][rows]
    columns = {
        "ID": ids,
        "RA": group["ra"][:][rows],
        "DEC": group["dec"][:][rows],
        **summarise_pdfs(pdfs, edges, ids),
        "Z_REG": z_mean.astype(np.float32),
        "FLAGS": group["flags"][:][rows],
        "EBV": group["ebv"][:][rows].astype(np.float32),
        "PDF": pdfs,
        "Z_SPEC": group["z_spec"][:][rows].astype(np.float32),
        **({} if folds is None else {"FOLD": folds.astype(np.int16)}),
        f"MAG_{profile.reference_band.upper()}": group["mag_ref"][:][rows].astype(np.float32),
    }
    settings = f"trees={s['trees']} min_leaf={s['min_leaf']} aperture={s['aperture']} seed={s['seed']}"
    header = {
        "MMZVERS": (__version__, "mmz version"),
        "CATKIND": (kind, "tiles: survey sources; oof: out-of-fold; test: test survey"),
        "PROFILE": (profile.name, "survey profile"),
        "RUN": ("colour-forest", "random forest on aperture colours"),
        "RUNHASH": (hashlib.sha256(settings.encode()).hexdigest()[:16], "sha256 of the forest settings"),
        "NMODELS": (1 if folds is None else s["folds"], "forests: each object predicted by its fold's"),
        "FUSION": ("none", "not a CNN"),
        "MODALITY": (" ".join(labels), "forest features"),
        "NBINS": (grid.n_bins, "redshift bins of the PDF"),
        "ZMIN": (grid.z_min, "lower edge of the grid"),
        "ZMAX": (grid.z_max, "upper edge of the grid"),
        "OUTLTHR": (profile.outlier_threshold, "|dz|/(1+z) outlier threshold of the survey"),
        "REFBAND": (profile.reference_band, "reference band (magnitude limit)"),
        "NTREES": (s["trees"], "trees per forest; PDF = histogram of their predictions"),
        "MINLEAF": (s["min_leaf"], "min_samples_leaf"),
        "APERDIAM": (s["aperture"], "[arcsec] aperture diameter, at the stamp centre"),
        "MAGKIND": ("asinh", "Lupton et al. 1999; softening = median 1-sigma noise"),
    }
    write_photoz(path, columns, edges, header)


def step_forest(study: Study) -> None:
    from mmzcli import __version__
    from mmzcli.cubeset import labelled_rows
    from mmzcli.store import cubes_path, open_store

    s, root = study.settings, study.root
    catalogue = root / "oof-forest.fits"
    if catalogue.exists():
        print(f"forest: catalogue {catalogue.name} done")
        return
    profile = study.profile()
    group = open_store(cubes_path(root))
    phot = survey_photometry(study, root, group, profile)
    features, labels, softening = forest_features(phot, group, profile)

    rows = labelled_rows(group)
    fold, z_spec = group["fold"][:], group["z_spec"][:].astype(np.float64)
    edges = profile.redshift_grid.edges()
    parts, importances = [], {}
    with timed(study, "forest-fit"):
        for k in range(s["folds"]):  # the CNN runs' folds: fold k validates, the others train
            train, test = rows[fold[rows] != k], rows[fold[rows] == k]
            print(f"forest: fold {k}: {len(train)} training, {len(test)} validation objects", flush=True)
            forest = fit_forest(study, features[train], z_spec[train], k)
            pdfs, z_mean = tree_pdfs(forest, features[test], edges)
            parts.append((test, pdfs, z_mean))
            importances[str(k)] = dict(zip(labels, np.round(forest.feature_importances_, 4).tolist()))
    test = np.concatenate([p[0] for p in parts])
    pdfs, z_mean = (np.concatenate([p[i] for p in parts]) for i in (1, 2))
    write_forest_catalogue(study, catalogue, group, test, pdfs, z_mean, labels, "oof", fold[test])
    write_json(
        root / "forest" / "forest.json",
        {
            "mmz_version": __version__,
            "features": labels,
            "softening_flux": dict(zip(profile.band_names, softening.tolist())),
            "aperture_arcsec": s["aperture"],
            "aperture_radius_px": float(phot["radius_px"]),
            "noise_radius_px": float(phot["noise_radius_px"]),
            "trees": s["trees"],
            "min_samples_leaf": s["min_leaf"],
            "feature_importances": importances,
        },
    )
    print(f"forest: {len(test)} out-of-fold objects -> {catalogue}")


# ----------------------------------------------------------------------------- step 3: analyse


def run_speed(run_dir: Path) -> dict:
    """Training samples/s and epochs of a finished run, from its metrics.json, and the recipe and network
    (width, norm: a --run's may differ from the study's settings) it was trained with."""
    from mmzcli.runs import RunDir

    m = read_json(run_dir / "metrics.json", {})
    history = [h for model in m.get("models", []) for h in model["history"]]
    rates = [h["samples_per_s"] for h in history]
    run = RunDir(run_dir)
    config = run.settings() if run.config_path.exists() else {}
    return {
        "run": run_dir.name,
        "recipe": config.get("train", {}),
        "network": {k: v for k, v in config.get("model", {}).items() if k in ("width", "norm", "fusion", "modalities")},
        "models": len(m.get("models", [])),
        "epochs_trained": len(history),
        "best_epochs": [model["best_epoch"] for model in m.get("models", [])],
        "train_samples_per_s_mean": round(float(np.mean(rates)), 2) if rates else None,
        "train_samples_per_s_range": [round(min(rates), 2), round(max(rates), 2)] if rates else None,
    }


def issue_targets(survey: str, overall: dict[str, dict], boot: dict) -> dict:
    """Issue 13's targets, met or not, from each model's overall metrics and the paired bootstraps."""
    sig = {m: overall[m]["sigma_mad"] for m in MODELS}
    p_mm = boot["multimodal_vs_baseline"]["sigma_mad"]["p_value"]
    ratios = {m: sig[m] / sig["forest"] for m in ("baseline", "multimodal")}
    ratio_target = FOREST_RATIO_TARGET[survey]
    within = {m: ratios[m] <= ratio_target for m in ratios}
    mm, forest = overall["multimodal"], overall["forest"]
    if survey == "sdss":
        forest_rule, forest_met = f"both CNNs' sigma_MAD <= {ratio_target} x the colour forest's", all(within.values())
    else:
        forest_rule = f"multimodal sigma_MAD <= {ratio_target} x the colour forest's, eta and CRPS not worse"
        forest_met = within["multimodal"] and mm["eta"] <= forest["eta"] and mm["crps"] <= forest["crps"]
    return {
        "multimodal_beats_baseline": {
            "rule": f"sigma_MAD(multimodal) < sigma_MAD(baseline) with paired-bootstrap p < {P_TARGET}",
            "sigma_mad_baseline": sig["baseline"],
            "sigma_mad_multimodal": sig["multimodal"],
            "p_value": p_mm,
            "met": bool(sig["multimodal"] < sig["baseline"] and p_mm < P_TARGET),
        },
        "cnn_vs_forest": {
            "rule": forest_rule,
            "ratio": ratios["multimodal"],
            "baseline_ratio": ratios["baseline"],
            "met": bool(forest_met),
            "baseline_within": bool(within["baseline"]),
        },
    }


def score(
    study: Study, cats: dict[str, Path], out: Path, truth: Path | None = None, step: str = ""
) -> tuple[dict, dict]:
    """``mmz evaluate`` of the three catalogues and ``mmz bootstrap`` of each pair in PAIRS, into ``out``
    (``evaluate/``, ``bootstrap/``); ``truth`` is the spectroscopic table of catalogues without Z_SPEC, ``step``
    the prefix of the steps' names in timings.json."""
    with_truth = [] if truth is None else ["--truth", str(truth)]
    evaluated = json.loads(
        mmz(study, f"{step}evaluate", "-q", "evaluate", *map(str, cats.values()), *with_truth,
            "-o", str(out / "evaluate"), "--json", capture=True)
    )  # fmt: skip
    report = read_json(out / "evaluate" / "metrics.json")
    by_path = {c["path"]: c for c in report["catalogs"]}
    metrics = {}
    for m, path in cats.items():
        full = by_path.get(str(path), {})
        overall = {**evaluated[str(path)], **full.get("overall", {})}  # the file adds the spread over folds
        metrics[m] = {"overall": overall, **{k: full.get(k) for k in ("by_mag", "by_z_spec", "by_z_phot", "pit")}}
    boot = {
        f"{other}_vs_{base}": bootstrap(study, cats[base], cats[other], out / "bootstrap" / f"{base}-vs-{other}",
                                        f"{step}bootstrap-{base}-vs-{other}", truth)
        for base, other in PAIRS
    }  # fmt: skip
    return metrics, boot


def step_analyse(study: Study) -> dict:
    from mmzcli import __version__
    from mmzcli.cubeset import labelled_rows
    from mmzcli.store import cubes_path, open_store

    s, root = study.settings, study.root
    cats = {m: root / f"oof-{m}.fits" for m in MODELS}
    missing = [str(p) for p in cats.values() if not p.exists()]
    if missing:
        sys.exit(f"analyse: missing {', '.join(missing)}; run the data and train steps first (--step all)")
    for name in ("evaluate", "bootstrap"):
        check = subprocess.run([sys.executable, "-m", "mmzcli", name, "--help"], capture_output=True, check=False)
        if check.returncode != 0:
            sys.exit(f"analyse: 'mmz {name}' is not available in this checkout yet; run --step analyse later")

    metrics, boot = score(study, cats, root)
    targets = issue_targets(s["profile"], {m: metrics[m]["overall"] for m in MODELS}, boot)
    forest = targets["cnn_vs_forest"]
    ratios = {"baseline/forest": forest["baseline_ratio"], "multimodal/forest": forest["ratio"]}

    group = open_store(cubes_path(root))
    profile = study.profile()
    wall = study.wall()
    result = {
        "simulated": True,
        "note": "Every figure here comes from a survey simulated by mmz simulate, not from real data.",
        "profile": profile.name,
        "mmz_version": __version__,
        "written": now(),
        "study_dir": str(root),
        "settings": {
            **dict(s),
            "objects": int(group["cubes"].shape[0]),
            "labelled": len(labelled_rows(group)),
            "n_out_of_fold": metrics["baseline"]["overall"]["n"],
            "outlier_threshold": profile.outlier_threshold,
            "reference_band": profile.reference_band,
            "mag_limit": HSC9_MAG_LIMIT if s["profile"] == "hsc9" else profile.reference_mag_limit,
            "seeds": {
                "simulation": s["seed"],
                "forest": f"{s['seed']} x 100 + fold",
                "bootstrap": s["seed"],
                "cnn": "fold and epoch (mmz train; one model per fold)",
            },
            "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
        },
        "training": {m: run_speed(root / "runs" / study.run_name(m)) for m in ("baseline", "multimodal")},
        "wall_seconds": wall,
        "metrics": metrics,
        "bootstrap": boot,
        "ratios": ratios,
        "targets": targets,
        "forest": read_json(root / "forest" / "forest.json"),
    }
    if s["profile"] == "sdss":
        result["paper_table2"] = [
            {"method": name, "sigma_mad_1e3": a, "eta_pct": b, "bias_1e3": c, "data": "real SDSS MGS"}
            for name, a, b, c in PAPER_TABLE2
        ]
    write_json(root / "accuracy.json", result)
    print_report(result)
    print(f"\nwrote {root / 'accuracy.json'}; plots in {root / 'evaluate'} and {root / 'bootstrap'}")
    return result


# ----------------------------------------------------------------------------- step 4: an independent test survey

TEST_SEED_OFFSET = 1000  # the test survey's simulation seed: the study's + 1000, another draw of the same survey


def step_test(study: Study, n: int) -> dict:
    """Fold 0's three models, and the variant runs that exist, on an independent simulated test survey (same
    profile and depth, another seed).

    Its galaxies influenced no training, epoch, normalisation or choice, and there can be as many as
    wanted, which gives the paired bootstrap the power that one held-out fold of a small study lacks.
    The CNNs predict from the test tiles with ``mmz predict`` (the user's path, not the cubes); the
    forest is fold 0's refitted (same seed, same forest) on the study's aperture photometry, with the
    study's asinh softening.  Writes ``test/`` (an mmz project) and ``test/accuracy-test.json``.
    """
    from mmzcli.cubeset import labelled_rows
    from mmzcli.store import cubes_path, is_complete, open_store

    s, root, test = study.settings, study.root, study.root / "test"
    test.mkdir(exist_ok=True)
    wanted = {"n": n, "seed": s["seed"] + TEST_SEED_OFFSET}
    stored = read_json(test / "test.json")
    if stored is not None and stored != wanted:
        sys.exit(f"{test / 'test.json'}: the test survey was made with {stored}, not {wanted}; "
                 f"give --test-n {stored['n']}, or remove {test} to make another")  # fmt: skip
    write_json(test / "test.json", wanted)
    if not (test / "specz.fits").exists():
        mmz(study, "test-simulate", "simulate", "--profile", study.profile_arg, "-n", str(n), "--project", str(test),
            "-j", str(s.get("jobs", 2)), "--seed", str(wanted["seed"]))  # fmt: skip
    if not is_complete(cubes_path(test)):
        mmz(study, "test-build-cubes", "build-cubes", "--project", str(test), "-j", str(s.get("jobs", 2)))
    truth = test / "specz.fits"

    def trained(name: str) -> bool:
        return (root / "runs" / study.run_name(name) / "fold0_seed0.pt").exists()

    variants = [v for v in VARIANT_FLAGS if trained(v)]  # those of --step variants that exist
    cats = {m: test / f"test-{m}.fits" for m in (*MODELS, *variants)}
    tiles = sorted(str(t) for t in (test / "tiles").glob("*.fits"))
    for model in ("baseline", "multimodal", *variants):
        run_dir = root / "runs" / study.run_name(model)
        if not trained(model):
            sys.exit(f"test: run {run_dir.name} has no finished fold-0 model ({run_dir}); train it first")
        if predicted_from(cats[model], run_dir):
            print(f"test: catalogue {cats[model].name} done")
            continue
        mmz(study, f"test-predict-{model}", "predict", *tiles, "--catalog", str(truth), "--project", str(test),
            "--run", str(run_dir), "--raw", "-j", str(s.get("jobs", 2)), "-o", str(cats[model]),
            "--overwrite")  # fmt: skip

    if not cats["forest"].exists():
        profile = study.profile()
        group, test_group = open_store(cubes_path(root)), open_store(cubes_path(test))
        features, labels, softening = forest_features(survey_photometry(study, root, group, profile), group, profile)
        test_phot = survey_photometry(study, test, test_group, profile, "test-forest-photometry")
        test_features, _, _ = forest_features(test_phot, test_group, profile, softening)
        rows, test_rows = labelled_rows(group), labelled_rows(test_group)
        train = rows[group["fold"][:][rows] != 0]
        with timed(study, "test-forest"):
            forest = fit_forest(study, features[train], group["z_spec"][:][train].astype(np.float64), 0)
            pdfs, z_mean = tree_pdfs(forest, test_features[test_rows], profile.redshift_grid.edges())
        write_forest_catalogue(study, cats["forest"], test_group, test_rows, pdfs, z_mean, labels, "test", None)

    metrics, boot = score(study, {m: cats[m] for m in MODELS}, test, truth, step="test-")
    against_baseline = {
        v: bootstrap(study, cats["baseline"], cats[v], test / "bootstrap" / f"baseline-vs-{v}",
                     f"test-bootstrap-baseline-vs-{v}", truth)
        for v in variants
    }  # fmt: skip
    result = {
        "simulated": True,
        "note": "Every figure here comes from surveys simulated by mmz simulate, not from real data.",
        "test_survey": {**wanted, "dir": str(test), "objects": metrics["baseline"]["overall"]["n"]},
        "models": {m: study.run_name(m) if m != "forest" else "colour forest, fold 0" for m in MODELS},
        "trained_on": "fold 0's training folds of the study (its held-out fold and the test survey: never)",
        "written": now(),
        "metrics": metrics,
        "bootstrap": boot,
        "targets": issue_targets(s["profile"], {m: metrics[m]["overall"] for m in MODELS}, boot),
        "variants_against_baseline": {v: {**b, "run": study.run_name(v)} for v, b in against_baseline.items()},
    }
    write_json(test / "accuracy-test.json", result)
    size = result["test_survey"]["objects"]
    print(f"\n## Independent SIMULATED test survey: {size} objects, seed {wanted['seed']}\n")
    print("| model | σ_MAD | η | bias | CRPS |\n|---|---|---|---|---|")
    for m in MODELS:
        o = metrics[m]["overall"]
        print(f"| {m} ({result['models'][m]}) | {o['sigma_mad']:.4f} | {100 * o['eta']:.2f}% | {o['bias']:+.4f} "
              f"| {o.get('crps', float('nan')):.4f} |")  # fmt: skip
    for key, b in boot.items():
        cells = ", ".join(f"{metric} {100 * b[metric]['gain']:+.1f}% (p = {b[metric]['p_value']:.4f})"
                          for metric in ("sigma_mad", "eta", "crps") if b[metric]["gain"] is not None)  # fmt: skip
        print(f"- {key.replace('_vs_', ' vs ')}: {cells}")
    for v, b in against_baseline.items():
        sm = b["sigma_mad"]
        print(f"- {v} vs baseline: sigma_mad {sm['other']:.4f} ({100 * sm['gain']:+.1f}%, p = {sm['p_value']:.4f}), "
              f"crps {100 * b['crps']['gain']:+.1f}% (p = {b['crps']['p_value']:.4f})")  # fmt: skip
    print(f"\nwrote {test / 'accuracy-test.json'}")
    return result


# ----------------------------------------------------------------------------- printing (markdown, for the docs)

LABELS = {
    "baseline": "baseline CNN",
    "multimodal": "multimodal CNN (2-band, 1st order, early)",
    "forest": "colour forest (aperture asinh mags)",
}


def print_report(r: dict) -> None:
    s, m = r["settings"], r["metrics"]
    planned = {v["recipe"].get("epochs", s["epochs"]) for v in r["training"].values()}  # a --run may differ
    epochs = "/".join(f"{e}" for e in sorted(planned))
    widths = {v.get("network", {}).get("width", s["width"]) for v in r["training"].values()}
    width = "/".join(f"{w:g}" for w in sorted(widths))
    print(
        f"\n## Accuracy study, SIMULATED {r['profile']} ({s['labelled']} labelled galaxies, "
        f"{s['n_out_of_fold']} predicted out of fold; {s['folds']} fold(s), width {width}, "
        f"{epochs} epochs, norm {s['norm']}, {'bf16' if s['amp'] else 'fp32'})\n"
    )
    thr = s["outlier_threshold"]
    print(f"| model | σ_MAD | η (\\|Δz\\| ≥ {thr:g}) | bias | CRPS | σ_MAD / forest's |")
    print("|---|---|---|---|---|---|")
    for k in MODELS:
        o = m[k]["overall"]
        err = f" ± {o['sigma_mad_err']:.4f}" if o.get("sigma_mad_err") is not None else ""
        ratio = o["sigma_mad"] / m["forest"]["overall"]["sigma_mad"]
        print(
            f"| {LABELS[k]} | {o['sigma_mad']:.4f}{err} | {100 * o['eta']:.2f}% | {o['bias']:+.4f} | "
            f"{o.get('crps', float('nan')):.4f} | {ratio:.2f} |"
        )
    print(
        "\nPaired bootstrap (paper App. D), p = freq(δ_b − δ ≥ δ), δ = M(base) − M(other) > 0 when OTHER is better:\n"
    )
    print("| other vs base | σ_MAD gain | p | η gain | p | \\|bias\\| gain | p |")
    print("|---|---|---|---|---|---|---|")
    for key, b in r["bootstrap"].items():
        cells = []
        for metric in ("sigma_mad", "eta", "abs_bias"):
            g = b[metric]["gain"]
            cells += ["–" if g is None else f"{100 * g:+.1f}%", f"{b[metric]['p_value']:.4f}"]
        print(f"| {key.replace('_vs_', ' vs ')} | " + " | ".join(cells) + " |")
    for key in ("by_mag", "by_z_spec"):
        bins = m["baseline"][key]
        if not bins:
            continue
        what = f"MAG_{s['reference_band']}" if key == "by_mag" else "z_spec"
        print(f"\nσ_MAD (η) in {len(bins['n'])} equal-count bins of {what}:\n")
        print(f"| {what} | N | " + " | ".join(LABELS[k].split(" (")[0] for k in MODELS) + " |")
        print("|---|---|" + "---|" * len(MODELS))
        for i in range(len(bins["n"])):
            cells = [f"{m[k][key]['sigma_mad'][i]:.4f} ({100 * m[k][key]['eta'][i]:.1f}%)" for k in MODELS]
            print(f"| {bins['x_lo'][i]:.2f}–{bins['x_hi'][i]:.2f} | {bins['n'][i]} | " + " | ".join(cells) + " |")
    t = r["targets"]
    a, b = t["multimodal_beats_baseline"], t["cnn_vs_forest"]
    print("\nTargets:")
    print(
        f"- multimodal σ_MAD below the baseline's with p < {P_TARGET}: {a['sigma_mad_multimodal']:.4f} vs "
        f"{a['sigma_mad_baseline']:.4f}, p = {a['p_value']:.4f} -> {'MET' if a['met'] else 'NOT MET'}"
    )
    print(
        f"- {b['rule']}: multimodal {b['ratio']:.2f}×, baseline {b['baseline_ratio']:.2f}× -> "
        f"{'MET' if b['met'] else 'NOT MET'}"
    )
    if "paper_table2" in r:
        print(
            "\nBeside the paper's Table 2 (SDSS MGS r ≤ 17.8; σ_MAD and bias in 10⁻³, η(|Δz| ≥ 0.05) in %). "
            "The paper's rows are REAL data; ours are SIMULATED:\n"
        )
        print("| method | data | σ_MAD (10⁻³) | η (%) | bias (10⁻³) |")
        print("|---|---|---|---|---|")
        for row in r["paper_table2"]:
            print(
                f"| {row['method']} | real | {row['sigma_mad_1e3']:.2f} | {row['eta_pct']:.2f} "
                f"| {row['bias_1e3']:+.2f} |"
            )
        for k in MODELS:
            o = m[k]["overall"]
            print(
                f"| {LABELS[k]}, this study | **simulated** | {1e3 * o['sigma_mad']:.2f} | {100 * o['eta']:.2f} | "
                f"{1e3 * o['bias']:+.2f} |"
            )
    print("\nTraining speed (samples/s, mean over epochs) and wall times (s, summed over sessions):")
    for k, v in r["training"].items():
        print(
            f"- {k} (run {v['run']}): {v['train_samples_per_s_mean']} samples/s over {v['epochs_trained']} epochs "
            f"(best epochs {v['best_epochs']})"
        )
    print("- " + ", ".join(f"{k} {v:.0f}" for k, v in r["wall_seconds"].items()))


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--profile", choices=("hsc9", "sdss"), required=True)
    p.add_argument("-n", type=int, help=f"spectroscopic galaxies to simulate [{DEFAULTS['n']}]")
    p.add_argument("--dir", help="study directory [~/mmz-accuracy/<profile>-<n>]")
    p.add_argument("--width", type=float, help=f"channel-width multiplier of both CNNs [{DEFAULTS['width']}]")
    p.add_argument("--epochs", type=int, help=f"epochs per model [{DEFAULTS['epochs']}]")
    p.add_argument("--folds", type=int, choices=range(1, 6), help=f"CV folds 0..F-1 of the 5 [{DEFAULTS['folds']}]")
    p.add_argument("--seed", type=int, help=f"simulation, forest and bootstrap seed [{DEFAULTS['seed']}]")
    p.add_argument("--amp", action="store_true", default=None, help="bf16 autocast (GPU); default fp32 (--no-amp)")
    p.add_argument("--no-amp", dest="amp", action="store_false")
    p.add_argument("--trees", type=int, help=f"trees per forest [{DEFAULTS['trees']}]")
    p.add_argument("--aperture", type=float, help="aperture diameter, arcsec [hsc9 2, sdss 3]")
    p.add_argument(
        "--sed-variety",
        type=float,
        help="simulate with this SED variety (simulation.sed.variety: the largest share of a galaxy's light "
        "from kcorrect's basis spectra; docs/simulation.md) [0]",
    )
    p.add_argument("--resamples", "-K", type=int, help=f"bootstrap resamples [{DEFAULTS['resamples']}]")
    p.add_argument("--jobs", "-j", type=int, default=2, help="processes for simulate/build-cubes, forest threads [2]")
    p.add_argument(
        "--step",
        choices=("all", "data", "train", "forest", "analyse", "variants", "test"),
        default="all",
        help="train = both CNNs and the forest; forest = the forest alone; variants = the fusion-stage and "
        "modality-size runs against the baseline (variants.json); test = fold 0's models on an independent "
        "simulated test survey (test/accuracy-test.json)",
    )
    p.add_argument("--test-n", type=int, default=10000, help="galaxies of the --step test survey [10000]")
    p.add_argument("--parallel", type=int, default=1, help="runs trained at once by --step variants (a GPU) [1]")
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="MODEL=NAME",
        help="take MODEL (baseline, multimodal or a variant) from the finished run NAME, trained by hand with "
        "mmz train (another recipe or length), instead of training it here; repeatable",
    )
    p.add_argument("--variants", help=f"comma-separated subset of the variant runs [all: {','.join(VARIANT_FLAGS)}]")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    study = Study.open(args)
    study.settings["jobs"] = args.jobs  # not a study setting: free to change between sessions
    for pair in args.run:
        model, _, name = pair.partition("=")
        if model not in CNN_FLAGS or not name:
            sys.exit(f"--run {pair}: expected MODEL=NAME with MODEL one of {', '.join(CNN_FLAGS)}")
        study.runs[model] = name
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM; run the same command to continue"))
    print(f"study {study.root}: {json.dumps({k: v for k, v in study.settings.items() if k != 'jobs'})}", flush=True)
    start = time.perf_counter()
    with study.lock():
        if args.step in ("all", "data"):
            step_data(study)
        if args.step in ("all", "train", "forest"):
            step_forest(study)
        if args.step in ("all", "train"):
            for model in ("baseline", "multimodal"):
                step_cnn(study, model)
        if args.step in ("all", "analyse"):
            step_analyse(study)
        if args.step == "test":
            step_test(study, args.test_n)
        if args.step == "variants":
            step_data(study)
            step_variants(study, args.parallel, args.variants.split(",") if args.variants else None)
    print(f"\nbench/accuracy.py --step {args.step}: {time.perf_counter() - start:.0f} s this session")


if __name__ == "__main__":
    main()
