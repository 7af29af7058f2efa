"""A training run's directory, and the models in it.

``PROJECT/runs/NAME/`` holds ``config.yaml`` (the settings that fix the weights),
``profile.yaml`` (the survey profile, for predict), one ``fold<k>_seed<r>.pt``
per finished model, ``fold<k>_seed<r>.state.pt`` while one trains,
``metrics.json``, ``train.log`` and ``oof.npz`` (docs/design.md).  Only this
module spells those names.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from mmzcli.errors import ConfigError, InputError
from mmzcli.profiles import read_yaml_mapping

if TYPE_CHECKING:
    from mmzcli.model import ModelConfig
    from mmzcli.profiles import Profile

RUNS_DIR = "runs"
MODEL_FILE = re.compile(r"fold(\d+)_seed(\d+)\.pt")  # finished models only, never the .state.pt of one training
MODEL_FORMAT = "mmz-model"  # the "format" of a finished model's checkpoint
STATE_FORMAT = "mmz-train-state"  # the "format" of a model's resumable training state
FORMAT_VERSION = 1  # of both; a reader refuses newer ones


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def profile_path(self) -> Path:
        return self.path / "profile.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    @property
    def oof_path(self) -> Path:
        return self.path / "oof.npz"

    def read_oof(self) -> dict[str, np.ndarray]:
        """The run's out-of-fold predictions (id, pdf, z_spec, ...), or a one-line refusal before they exist."""
        if not self.oof_path.exists():
            raise InputError(
                f"{self.path}: no out-of-fold predictions (oof.npz) yet; they are written when mmz train finishes"
            )
        return dict(np.load(self.oof_path))

    @property
    def calibration_path(self) -> Path:
        """The PIT map of ``mmz calibrate``, which ``mmz predict`` applies."""
        return self.path / "calibration.json"

    def model_path(self, fold: int, seed: int) -> Path:
        return self.path / f"fold{fold}_seed{seed}.pt"

    def state_path(self, fold: int, seed: int) -> Path:
        """The resumable training state of a model not finished yet."""
        return self.path / f"fold{fold}_seed{seed}.state.pt"

    def model_paths(self) -> list[Path]:
        """Every finished model file, sorted."""
        return sorted(p for p in self.path.glob("fold*_seed*.pt") if MODEL_FILE.fullmatch(p.name))

    def finished_folds(self, n_folds: int, seeds: int) -> list[int]:
        """The folds whose ``seeds`` models are all finished."""
        return [k for k in range(n_folds) if all(self.model_path(k, r).exists() for r in range(seeds))]

    def settings(self) -> dict:
        """``config.yaml``: the settings the run was trained with."""
        return read_yaml_mapping(
            self.config_path, "the run's settings", "restore it, or train under another name with --name NEW"
        )

    def profile(self, project: Path) -> Profile:
        """The survey profile the run was trained with (its snapshot; the project's for old runs)."""
        from mmzcli.profiles import profile_from_dict
        from mmzcli.project import project_profile

        if not self.profile_path.exists():
            return project_profile(project, None)
        advice = "restore it, or remove it to use the project's profile (mmz.yaml)"
        data = read_yaml_mapping(self.profile_path, "the run's survey profile", advice)
        try:
            return profile_from_dict(data, source=str(self.profile_path))
        except ConfigError as exc:  # names the file and key already
            raise ConfigError(f"{exc} (input: the run's survey profile; {advice})") from None


def runs_dir(project: Path) -> Path:
    return Path(project) / RUNS_DIR


def known_runs(project: Path) -> list[str]:
    return sorted(p.name for p in runs_dir(project).glob("*") if RunDir(p).config_path.exists())


def resolve_run(project: Path, run: str | None) -> RunDir:
    """``run`` as a path or a name under PROJECT/runs; by default the latest trained run."""
    runs = runs_dir(project)
    if run is not None:
        for candidate in (Path(run), runs / run):
            if RunDir(candidate).config_path.exists():
                return RunDir(candidate)
        raise InputError(f"no run '{run}' in {runs} (runs: {', '.join(known_runs(project)) or 'none'})")
    trained = [RunDir(p) for p in runs.glob("*") if RunDir(p).model_paths()]
    if not trained:
        raise InputError(f"no trained run in {runs}; train one with mmz train (or name it with --run)")
    return max(trained, key=lambda r: max(f.stat().st_mtime for f in r.model_paths()))


class CheckpointError(InputError):
    """A file under a checkpoint's name that holds no usable checkpoint: damaged, foreign, or without weights.

    Training replaces such a file; a checkpoint that is merely newer than this mmz raises a plain
    ``InputError`` instead, so that it is never overwritten.
    """


def checkpoint_of(kind: str, content: dict) -> dict:
    """``content`` with the format marker that ``load_checkpoint`` checks (``kind``: MODEL_FORMAT or STATE_FORMAT)."""
    return {"format": kind, "format_version": FORMAT_VERSION, **content}


def _required_keys(kind: str) -> tuple[str, ...]:
    return ("model", "config") if kind == MODEL_FORMAT else ("model", "optimizer", "epoch")


def _why_unloadable(source: Path | BinaryIO, exc: Exception) -> str:
    """Why torch.load failed, in our words: torch's own message suggests weights_only=False, never show it."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            head = f.read(4)
    else:
        source.seek(0)
        head = source.read(4)
    if not head:
        return "an empty file"
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # a zip (torch's format) or a pickle (its old one)
        return "not a torch file"
    if "Weights only load failed" in str(exc):
        return "it holds Python objects besides tensors and plain containers, which mmz never loads"
    return "a damaged or truncated torch file"


def load_checkpoint(source: Path | BinaryIO, *, kind: str = MODEL_FORMAT, name: str | Path | None = None) -> dict:
    """A finished model's checkpoint (``kind`` STATE_FORMAT: a training state), checked before use.

    Read as plain tensors and containers, never unpickling code (weights_only=True).  Checkpoints
    carry ``format`` (``kind``) and ``format_version``; those written before the marker are still read
    when they have the keys they always had ("model" and "config" for a model; "model", "optimizer"
    and "epoch" for a state).  Anything else raises ``CheckpointError`` (``name`` labels a stream).
    """
    import torch

    name = str(source) if name is None else name  # str() is what the messages below print anyway
    what = "a finished mmz model" if kind == MODEL_FORMAT else "an mmz training state"
    advice = (
        "retrain it (mmz train with the run's settings resumes the run and replaces it) or remove the file"
        if kind == MODEL_FORMAT
        else "remove it: mmz train then trains this model from its first epoch"
    )
    try:
        checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file (input: {what})") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read {what} ({exc.strerror})") from None
    except Exception as exc:  # a damaged or foreign file: torch raises anything from KeyError to UnpicklingError
        raise CheckpointError(f"{name}: not {what} ({_why_unloadable(source, exc)}); {advice}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{name}: not {what} (a torch file of a {type(checkpoint).__name__}, not an mmz checkpoint); {advice}"
        )
    marker, version = checkpoint.get("format"), checkpoint.get("format_version")
    if marker is not None and marker != kind:
        raise CheckpointError(f"{name}: not {what} (its format is {marker!r}); {advice}")
    if marker is not None and not isinstance(version, int):
        raise CheckpointError(f"{name}: not {what} (format_version {version!r} is not a number); {advice}")
    if marker is not None and isinstance(version, int) and version > FORMAT_VERSION:  # an int: checked above
        raise InputError(
            f"{name}: {what} of format version {version}, newer than this mmz reads ({FORMAT_VERSION}); upgrade mmz"
        )
    missing = [key for key in _required_keys(kind) if key not in checkpoint]
    if missing and marker is None:
        raise CheckpointError(
            f"{name}: not {what} (a torch file with neither mmz's format marker nor the "
            f"'{missing[0]}' of an older mmz checkpoint); {advice}"
        )
    if missing:
        raise CheckpointError(f"{name}: not {what} (no '{missing[0]}' in it); {advice}")
    if not (isinstance(checkpoint["model"], dict) and checkpoint["model"]):
        raise CheckpointError(f"{name}: not {what} (it holds no weights: a training that diverged left it); {advice}")
    if kind == MODEL_FORMAT and not isinstance(checkpoint["config"], dict):
        raise CheckpointError(
            f"{name}: not {what} (its 'config' is a {type(checkpoint['config']).__name__}, not a mapping); {advice}"
        )
    return checkpoint


def build_model(checkpoint: dict, device: Any) -> Any:
    """The network of a finished model's checkpoint, on ``device``, in eval mode."""
    from mmzcli.model import ModelConfig, PhotoZNet

    model = PhotoZNet(ModelConfig.from_dict(checkpoint["config"]))
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval()


@dataclass
class Ensemble:
    """Every finished model of a run (folds x seeds); their PDFs are averaged."""

    run_dir: Path
    profile: Profile
    models: list  # empty where loaded for the header only
    n_models: int
    config: ModelConfig
    run_hash: str
    ebv_median: float  # of the training sample: the value used where a source has none
    calibration: dict | None = None  # of mmz calibrate: its PIT map is applied to every PDF

    @classmethod
    def load(cls, run: RunDir, project: Path, device: Any, weights: bool = True, raw: bool = False) -> Ensemble:
        """The run's finished models on ``device`` (none with ``weights`` False: the header only), with the
        run's calibration unless ``raw``."""
        from mmzcli.calibrate import load_calibration
        from mmzcli.model import ModelConfig

        run_dir = run.path
        paths = run.model_paths()
        if not paths:
            raise InputError(f"{run_dir}: no finished model (fold<k>_seed<r>.pt) yet; let mmz train finish a fold")
        profile = run.profile(project)
        digest = hashlib.sha256()
        models, config = [], None
        for path in paths:
            data = path.read_bytes()  # read once: hashed for RUNHASH, then loaded
            digest.update(data)
            checkpoint = load_checkpoint(io.BytesIO(data), name=path)
            config = ModelConfig.from_dict(checkpoint["config"])
            if weights:
                models.append(build_model(checkpoint, device))
        assert config is not None  # paths is not empty
        if list(config.bands) != profile.band_names:
            raise InputError(
                f"{run_dir}: its models take bands {', '.join(config.bands)} but its profile "
                f"{profile.name} has {', '.join(profile.band_names)}"
            )
        ebv_median = float(np.median(np.load(run.oof_path)["ebv"])) if run.oof_path.exists() else 0.0
        calibration = None if raw else load_calibration(run)
        return cls(run_dir, profile, models, len(paths), config, digest.hexdigest()[:16], ebv_median, calibration)

    def header(self, kind: str) -> dict:
        """Provenance keywords of the catalogue (docs/formats.md)."""
        from mmzcli import __version__

        grid, cfg = self.profile.redshift_grid, self.config
        modalities = " ".join("".join(m) if all(len(b) == 1 for b in m) else "_".join(m) for m in cfg.modalities)
        return {
            "MMZVERS": (__version__, "mmz version"),
            "CATKIND": (kind, "tiles: survey sources; oof: out-of-fold"),
            "PROFILE": (self.profile.name, "survey profile"),
            "RUN": (self.run_dir.name, "training run"),
            "RUNHASH": (self.run_hash, "sha256 of the run's checkpoints, first 16 hex"),
            "NMODELS": (self.n_models, "models averaged (folds x seeds)"),
            "FUSION": (cfg.fusion, "fusion stage"),
            "FUSTYPE": (cfg.fusion_type, "fusion type"),
            "MODALITY": (modalities, "band groups processed in parallel"),
            "WIDTH": (cfg.width, "channel-width multiplier"),
            "NBINS": (grid.n_bins, "redshift bins of the PDF"),
            "ZMIN": (grid.z_min, "lower edge of the grid"),
            "ZMAX": (grid.z_max, "upper edge of the grid"),
            "OUTLTHR": (self.profile.outlier_threshold, "|dz|/(1+z) outlier threshold of the survey"),
            "REFBAND": (self.profile.reference_band, "reference band (magnitude limit)"),
            "CALIB": ("none" if self.calibration is None else "pit-remap", "PDF calibration (mmz calibrate)"),
        }

    def predict(
        self, cubes: np.ndarray, band_ok: np.ndarray, ebv: np.ndarray, device, batch_size: int, amp: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean PDF and mean regression estimate of all models; the head runs in float32."""
        import torch

        from mmzcli.device import autocast

        pdfs = np.zeros((len(cubes), self.config.n_bins), np.float64)
        z_reg = np.zeros(len(cubes), np.float64)
        with torch.inference_mode():
            for start in range(0, len(cubes), batch_size):
                part = slice(start, start + batch_size)
                x = torch.from_numpy(np.ascontiguousarray(cubes[part])).to(device)
                x = x.contiguous(memory_format=torch.channels_last)
                ok = torch.from_numpy(band_ok[part]).to(device)
                e = torch.from_numpy(ebv[part].astype(np.float32)).to(device)
                for model in self.models:
                    with autocast(device, amp):
                        latent = model.forward_features(x, e, ok)
                    logits, reg = model.forward_head(latent.float())
                    pdfs[part] += torch.softmax(logits.float(), -1).double().cpu().numpy()
                    z_reg[part] += reg.double().cpu().numpy()
        pdfs /= len(self.models)
        pdfs /= pdfs.sum(axis=1, keepdims=True)
        if self.calibration is not None:
            from mmzcli.calibrate import remap

            pdfs = remap(pdfs, self.calibration["pit_map"])
        return pdfs.astype(np.float32), (z_reg / len(self.models)).astype(np.float32)
