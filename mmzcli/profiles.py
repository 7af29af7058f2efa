"""Survey profiles: the YAML description of a survey's bands, pixels and redshift grid.

A profile is checked field by field on load (as GalSim checks its config): a
missing, unknown or mistyped key is reported with the file and the key path,
e.g. ``hsc9.yaml: bands[3].depth: expected a number, got 'deep'``.  A profile
may ``extends:`` another one; its ``bands`` then merge with the parent's by
name, and other keys override.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

from mmzcli.errors import ConfigError

FUSION_STAGES = ("extremely-early", "very-early", "early", "middle", "late")


def shipped_profiles_dir() -> Path:
    """The profiles shipped with mmz: inside the wheel, or beside the package in a checkout."""
    inside = Path(__file__).parent / "profiles"
    return inside if inside.is_dir() else Path(__file__).parent.parent / "profiles"


@dataclass(frozen=True)
class Band:
    name: str  # short name used everywhere in mmz (u, g, ..., Ks)
    filter: str  # filter-curve id: astro-sedpy name, or "speclite:" + speclite name
    wavelength: float  # effective wavelength, Angstrom
    depth: float  # 5-sigma point-source depth, AB mag
    psf_fwhm: float  # median seeing, arcsec
    zeropoint: float  # AB magnitude of one image unit (mag = zeropoint - 2.5 log10 flux)
    extinction: float  # R_b = A_b / E(B-V)
    aliases: tuple[str, ...] = ()  # other FILTER keyword values naming this band

    def matches(self, label: str) -> bool:
        label = label.strip().lower()
        return label in {self.name.lower(), self.filter.lower(), *(a.lower() for a in self.aliases)}


@dataclass(frozen=True)
class RedshiftGrid:
    z_min: float
    z_max: float
    n_bins: int

    @property
    def width(self) -> float:
        return (self.z_max - self.z_min) / self.n_bins

    def edges(self):
        import numpy as np

        return np.linspace(self.z_min, self.z_max, self.n_bins + 1)

    def centres(self):
        edges = self.edges()
        return 0.5 * (edges[1:] + edges[:-1])


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    pixel_scale: float  # arcsec / pixel of the cutouts
    cutout_size: int  # pixels
    bands: tuple[Band, ...]  # ascending wavelength
    reference_band: str
    reference_mag_limit: float
    redshift_grid: RedshiftGrid
    outlier_threshold: float
    detection_bands: tuple[str, ...] = ()
    band_pattern: str | None = None  # regex with a named group 'band', matched on file names
    fusion: str = "early"
    modalities: dict[str, Any] = field(default_factory=lambda: {"size": 2, "orders": [1]})
    simulation: dict[str, Any] = field(default_factory=dict)  # read by mmz simulate
    source: str = "<memory>"  # where it was loaded from, for messages

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]

    def band(self, name: str) -> Band:
        return self.bands[self.band_index(name)]

    def band_index(self, name: str) -> int:
        for i, band in enumerate(self.bands):
            if band.name == name:
                return i
        raise ConfigError(f"{self.source}: no band '{name}' (bands: {', '.join(self.band_names)})")

    def resolve_band(self, label: str) -> str | None:
        """The band a FILTER/EXTNAME value or file-name fragment names, or None."""
        for band in self.bands:
            if band.matches(label):
                return band.name
        return None

    def band_from_filename(self, filename: str) -> str | None:
        if not self.band_pattern:
            return None
        match = re.search(self.band_pattern, filename)
        return self.resolve_band(match.group("band")) if match else None

    def to_dict(self) -> dict[str, Any]:
        """A plain mapping that ``profile_from_dict`` reads back: the snapshot kept in projects."""
        data = asdict(self)
        data.pop("source")
        data["bands"] = [{**b, "aliases": list(b["aliases"])} for b in data["bands"]]
        data["detection_bands"] = list(self.detection_bands)
        return data


# ----------------------------------------------------------------------------- validation

_REQUIRED = (
    "name",
    "description",
    "pixel_scale",
    "cutout_size",
    "bands",
    "reference_band",
    "reference_mag_limit",
    "redshift_grid",
    "outlier_threshold",
)
_OPTIONAL = ("extends", "detection_bands", "band_pattern", "fusion", "modalities", "simulation")
_BAND_REQUIRED = ("name", "filter", "wavelength", "depth", "psf_fwhm", "zeropoint", "extinction")
_BAND_OPTIONAL = ("aliases",)
_GRID_KEYS = ("z_min", "z_max", "n_bins")


class _Checker:
    """Reads typed values out of a mapping, naming file and key path in every complaint."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {message}")

    def mapping(self, data: Any, key: str, required: tuple, optional: tuple = ()) -> dict:
        if not isinstance(data, dict):
            raise self.fail(key, f"expected a mapping, got {type(data).__name__}")
        missing = [k for k in required if k not in data]
        if missing:
            raise self.fail(key, f"missing required key '{missing[0]}' (required: {', '.join(required)})")
        unknown = [k for k in data if k not in required + optional]
        if unknown:
            raise self.fail(key, f"unknown key '{unknown[0]}' (allowed: {', '.join(required + optional)})")
        return data

    @overload
    def number(
        self, data: dict, key: str, path: str, *, positive: bool = ..., integer: Literal[False] = ...
    ) -> float: ...

    @overload
    def number(self, data: dict, key: str, path: str, *, positive: bool = ..., integer: Literal[True]) -> int: ...

    def number(self, data: dict, key: str, path: str, *, positive: bool = False, integer: bool = False) -> float:
        value = data[key]
        kind = "an integer" if integer else "a number"
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or not math.isfinite(value):
            raise self.fail(f"{path}{key}", f"expected {kind}, got {value!r}")
        if positive and value <= 0:
            raise self.fail(f"{path}{key}", f"expected a positive value, got {value!r}")
        return int(value) if integer else float(value)

    def string(self, data: dict, key: str, path: str) -> str:
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{path}{key}", f"expected a non-empty string, got {value!r}")
        return value

    def strings(self, data: dict, key: str, path: str) -> tuple[str, ...]:
        value = data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{path}{key}", f"expected a list of strings, got {value!r}")
        return tuple(value)


def profile_from_dict(data: Any, source: str = "<memory>") -> Profile:
    """Validate a profile mapping (already merged with any parent) and build it."""
    check = _Checker(source)
    data = check.mapping(data, "profile", _REQUIRED, _OPTIONAL)
    if not isinstance(data["bands"], list) or not data["bands"]:
        raise check.fail("bands", "expected a non-empty list of bands")
    bands = []
    for i, raw in enumerate(data["bands"]):
        path = f"bands[{i}]."
        raw = check.mapping(raw, f"bands[{i}]", _BAND_REQUIRED, _BAND_OPTIONAL)
        bands.append(
            Band(
                name=check.string(raw, "name", path),
                filter=check.string(raw, "filter", path),
                wavelength=check.number(raw, "wavelength", path, positive=True),
                depth=check.number(raw, "depth", path),
                psf_fwhm=check.number(raw, "psf_fwhm", path, positive=True),
                zeropoint=check.number(raw, "zeropoint", path),
                extinction=check.number(raw, "extinction", path),
                aliases=check.strings(raw, "aliases", path) if "aliases" in raw else (),
            )
        )
    names = [b.name for b in bands]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise check.fail("bands", f"band '{dup}' is listed twice")
    bands.sort(key=lambda b: b.wavelength)

    grid_keys = check.mapping(data["redshift_grid"], "redshift_grid", _GRID_KEYS)
    grid = RedshiftGrid(
        z_min=check.number(grid_keys, "z_min", "redshift_grid."),
        z_max=check.number(grid_keys, "z_max", "redshift_grid.", positive=True),
        n_bins=check.number(grid_keys, "n_bins", "redshift_grid.", positive=True, integer=True),
    )
    if not 0 <= grid.z_min < grid.z_max:
        raise check.fail("redshift_grid", f"expected 0 <= z_min < z_max, got {grid.z_min}..{grid.z_max}")

    reference = check.string(data, "reference_band", "")
    if reference not in names:
        raise check.fail("reference_band", f"'{reference}' is not a band (bands: {', '.join(names)})")
    detection = check.strings(data, "detection_bands", "") if "detection_bands" in data else (reference,)
    for name in detection:
        if name not in names:
            raise check.fail("detection_bands", f"'{name}' is not a band (bands: {', '.join(names)})")
    fusion = data.get("fusion", "early")
    if fusion not in FUSION_STAGES:
        raise check.fail("fusion", f"expected one of {', '.join(FUSION_STAGES)}, got {fusion!r}")
    pattern = data.get("band_pattern")
    if pattern is not None:
        try:
            if "band" not in re.compile(pattern).groupindex:
                raise check.fail("band_pattern", "the regex needs a named group (?P<band>...)")
        except re.error as exc:
            raise check.fail("band_pattern", f"not a valid regular expression ({exc})") from None
    threshold = check.number(data, "outlier_threshold", "", positive=True)
    for key in ("modalities", "simulation"):
        if key in data and not isinstance(data[key], dict):
            raise check.fail(key, f"expected a mapping, got {type(data[key]).__name__}")

    return Profile(
        name=check.string(data, "name", ""),
        description=check.string(data, "description", ""),
        pixel_scale=check.number(data, "pixel_scale", "", positive=True),
        cutout_size=check.number(data, "cutout_size", "", positive=True, integer=True),
        bands=tuple(bands),
        reference_band=reference,
        reference_mag_limit=check.number(data, "reference_mag_limit", ""),
        redshift_grid=grid,
        outlier_threshold=threshold,
        detection_bands=tuple(detection),
        band_pattern=pattern,
        fusion=fusion,
        modalities=dict(data.get("modalities", {"size": 2, "orders": [1]})),
        simulation=dict(data.get("simulation", {})),
        source=source,
    )


# ----------------------------------------------------------------------------- loading


def read_yaml_mapping(path: Path, what: str, advice: str) -> dict:
    """A YAML file that must hold a mapping (a profile, mmz.yaml, a run's files), or one ConfigError line.

    The line names the file and what it holds (``what``), and ends with ``advice``: what to do.
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror}); {advice}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{path}: malformed YAML{where} ({what}: {problem}); {advice}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping ({what}), got {type(data).__name__}; {advice}")
    return data


def _merge(parent: dict, child: dict) -> dict:
    """Child keys override the parent's; mappings merge; 'bands' merge by band name."""
    merged = dict(parent)
    for key, value in child.items():
        if key == "bands" and isinstance(value, list) and isinstance(parent.get("bands"), list):
            bands = {b.get("name"): dict(b) for b in parent["bands"] if isinstance(b, dict)}
            for band in value:
                name = band.get("name") if isinstance(band, dict) else None
                bands[name] = {**bands.get(name, {}), **band} if isinstance(band, dict) else band
            merged["bands"] = list(bands.values())
        elif isinstance(value, dict) and isinstance(parent.get(key), dict):
            merged[key] = _merge(parent[key], value)
        else:
            merged[key] = value
    return merged


def _profile_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
        path = Path(text)
        if not path.is_absolute() and relative_to is not None and not path.exists():
            path = relative_to / path
        if not path.exists():
            raise ConfigError(f"{text}: profile file not found")
        return path
    path = shipped_profiles_dir() / f"{text}.yaml"
    if not path.exists():
        raise ConfigError(
            f"unknown profile '{text}': shipped profiles are {', '.join(list_profiles())}; "
            f"or give the path of a .yaml file"
        )
    return path


def _load_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    data = read_yaml_mapping(path, "a survey profile", "fix the file (mmz profiles show hsc9 prints an example)")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: expected a profile name or path, got {parent!r}")
    return _merge(_load_raw(_profile_path(parent, path.parent), seen + (path.resolve(),)), data)


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a shipped profile by name (``hsc9``) or a user's by path (``my.yaml``)."""
    path = _profile_path(name_or_path)
    source = path.name if path.parent == shipped_profiles_dir() else str(path)
    return profile_from_dict(_load_raw(path), source=source)


def list_profiles() -> list[str]:
    return sorted(p.stem for p in shipped_profiles_dir().glob("*.yaml"))
