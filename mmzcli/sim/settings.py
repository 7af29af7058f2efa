"""The ``simulation:`` section of a profile as typed, frozen settings: one small dataclass per section.

The dataclasses are the declaration: their fields are the allowed keys and their
defaults the code defaults; a field without a default is derived from the rest of
the profile (``SimSettings.from_profile``, the one place where settings are merged
over the defaults and checked).  The YAML layout is in docs/simulation.md.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from mmzcli.errors import ConfigError
from mmzcli.profiles import Profile
from mmzcli.sim.population import SedParams

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")  # a settings dataclass


@dataclass(frozen=True)
class FieldSettings:
    """Centre of the simulated area, deg."""

    ra: float = 150.0
    dec: float = 2.2


@dataclass(frozen=True, kw_only=True)
class SpecSettings:
    """The spectroscopic sample."""

    mag_limit: float  # reference band, dereddened; default: the profile's reference_mag_limit
    mag_bright: float = 14.0
    # ((upper mag, fraction), ...): a sample stratified by magnitude, e.g. CFHTLS
    mag_fractions: tuple[tuple[float, float], ...] | None = None
    z_max: float  # default: the profile's redshift_grid.z_max
    z_error: float = 3.0e-5  # sigma of z_spec / (1+z)
    wrong_fraction: float = 0.005  # catastrophic spectroscopic failures


@dataclass(frozen=True, kw_only=True)
class NeighbourSettings:
    """Galaxies around the targets, drawn at the survey's real surface density."""

    mag_limit: float  # faintest neighbour drawn (reference band); default: its 5σ depth + 0.5
    pair_fraction: float = 0.05  # targets with a physical companion 1-4" away
    blend_leak: float = 0.3  # fraction of overlapping neighbour light the catalogue photometry keeps


@dataclass(frozen=True)
class StarSettings:
    """Field stars, at a surface density that grows with magnitude."""

    density_at_20: float = 1000.0  # per deg^2 with reference mag < 20
    mag_bright: float = 14.0


@dataclass(frozen=True)
class EbvSettings:
    """Milky Way E(B-V) (SFD scale), log-normal per source."""

    median: float = 0.03
    sigma_ln: float = 0.5


@dataclass(frozen=True)
class LayoutSettings:
    """Where the targets go: a jittered grid, denser than in real surveys."""

    target_spacing: float = 1.25  # target separation, in cutouts


@dataclass(frozen=True)
class ImagingSettings:
    """What the images record besides the profile's PSF, depth and zeropoint."""

    exptime: float = 60.0  # s, nominal
    moffat_beta: float = 3.5
    # {band: mag/arcsec^2}, for the Poisson noise of bright objects; default: a dark sky (survey.py)
    sky: Mapping[str, float] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class MorphologySettings:
    """Light that is not smooth: the young burst of a star-forming disk sits in clumps."""

    # the disk's burst light (population.Galaxies.burst, the SB template) as this many GalSim
    # RandomKnots spread like the disk; 0 puts it back into the smooth exponential
    knots: int = 12


@dataclass(frozen=True, kw_only=True)
class GridSettings:
    """Bands on a pixel grid of their own (hsc9's NIR), alternately shifted and rotated per tile."""

    bands: tuple[str, ...]
    pixel_scale: float  # arcsec / pixel; default: the profile's
    rotation: float = 0.0  # deg
    coverage: float = 1.0  # fraction of the tile's width covered


@dataclass(frozen=True, kw_only=True)
class SimSettings:
    """Every knob of ``mmz simulate``, resolved against the profile."""

    field: FieldSettings = FieldSettings()
    spec: SpecSettings
    neighbours: NeighbourSettings
    stars: StarSettings = StarSettings()
    ebv: EbvSettings = EbvSettings()
    layout: LayoutSettings = LayoutSettings()
    imaging: ImagingSettings = ImagingSettings()
    morphology: MorphologySettings = MorphologySettings()
    grids: tuple[GridSettings, ...] = ()
    sed: SedParams = SedParams()  # overrides of the colour model (population.SedParams)

    @classmethod
    def from_profile(cls, profile: Profile) -> SimSettings:
        """The profile's ``simulation:`` section merged over the defaults and checked.

        Raises
        ------
        ConfigError
            An unknown key, a value that is not a number, a band the profile lacks, or
            magnitude fractions that do not sum to 1; the message names the file and the key.
        """
        where = f"{profile.source}: simulation"
        s = _merge(profile.simulation, where)
        ref = profile.band(profile.reference_band)
        s["spec"]["mag_limit"] = s["spec"]["mag_limit"] or profile.reference_mag_limit
        s["spec"]["z_max"] = s["spec"]["z_max"] or profile.redshift_grid.z_max
        s["neighbours"]["mag_limit"] = s["neighbours"]["mag_limit"] or ref.depth + 0.5
        _check(s, profile, where)
        fractions = s["spec"]["mag_fractions"]
        s["spec"]["mag_fractions"] = None if fractions is None else tuple((float(m), float(f)) for m, f in fractions)
        s["imaging"]["sky"] = {band: float(mag) for band, mag in s["imaging"]["sky"].items()}
        return cls(
            **{name: _build(kind, s[name]) for name, kind in _SECTIONS.items()},
            grids=tuple(
                _build(GridSettings, {"pixel_scale": profile.pixel_scale, **grid, "bands": tuple(grid["bands"])})
                for grid in s["grids"]
            ),
            sed=_build(SedParams, s["sed"]),
        )


# the sections whose keys are the fields of one dataclass, merged key by key over its defaults;
# ``grids`` (a list) and ``sed`` (overrides of SedParams) are given whole
_SECTIONS: dict[str, type] = {
    "field": FieldSettings,
    "spec": SpecSettings,
    "neighbours": NeighbourSettings,
    "stars": StarSettings,
    "ebv": EbvSettings,
    "layout": LayoutSettings,
    "imaging": ImagingSettings,
    "morphology": MorphologySettings,
}


def _defaults(kind: type) -> dict[str, Any]:
    """A section's keys and code defaults; None where the value is derived from the profile."""
    out = {}
    for f in dataclasses.fields(kind):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = None
    return out


def _merge(given: dict, where: str) -> dict[str, Any]:
    """Every section as a dict of all its keys, the given values over the defaults."""
    out: dict[str, Any] = {**{name: _defaults(kind) for name, kind in _SECTIONS.items()}, "grids": [], "sed": {}}
    for key, value in copy.deepcopy(given).items():
        if key not in out:
            raise ConfigError(f"{where}: unknown key '{key}' (allowed: {', '.join(out)})")
        if key not in _SECTIONS:
            out[key] = value
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{where}.{key}: expected a mapping, got {value!r}")
        for name in value:
            if name not in out[key]:
                raise ConfigError(f"{where}.{key}: unknown key '{name}' (allowed: {', '.join(out[key])})")
        out[key].update(value)
    return out


def _build(kind: type[T], values: dict[str, Any]) -> T:
    """An instance of a settings dataclass, its float fields made floats (YAML may give ints)."""
    floats = {f.name for f in dataclasses.fields(kind) if f.type == "float"}
    return kind(**{k: float(v) if k in floats else v for k, v in values.items()})


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check(s: dict[str, Any], profile: Profile, where: str) -> None:
    """The merged section: known SED keys, magnitude fractions, bands of the profile, numbers."""
    for name, value in (("imaging.sky", s["imaging"]["sky"]), ("sed", s["sed"])):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}.{name}: expected a mapping, got {value!r}")
    sed_keys = [f.name for f in dataclasses.fields(SedParams)]
    for key in s["sed"]:
        if key not in sed_keys:
            raise ConfigError(f"{where}.sed: unknown key '{key}' (allowed: {', '.join(sed_keys)})")
    fractions = s["spec"]["mag_fractions"]
    if fractions is not None:
        ok = isinstance(fractions, list) and all(
            isinstance(f, list) and len(f) == 2 and all(map(_is_number, f)) for f in fractions
        )
        if not ok or abs(sum(f[1] for f in fractions) - 1) > 0.01:
            raise ConfigError(
                f"{where}.spec.mag_fractions: expected [[upper mag, fraction], ...] "
                f"with fractions summing to 1, got {fractions!r}"
            )
    names = set(profile.band_names)
    if not isinstance(s["grids"], list):
        raise ConfigError(f"{where}.grids: expected a list of mappings of bands, pixel_scale, rotation, coverage")
    for i, grid in enumerate(s["grids"]):
        if (
            not isinstance(grid, dict)
            or set(grid) - {"bands", "pixel_scale", "rotation", "coverage"}
            or not isinstance(grid.get("bands"), list)
        ):
            raise ConfigError(f"{where}.grids[{i}]: expected a mapping of bands, pixel_scale, rotation, coverage")
        unknown = set(grid["bands"]) - names
        if unknown:
            raise ConfigError(f"{where}.grids[{i}].bands: no band '{min(unknown)}' in the profile")
    for band in s["imaging"]["sky"]:
        if band not in names:
            raise ConfigError(f"{where}.imaging.sky: no band '{band}' in the profile")
    numbers = [
        (f"{section}.{key}", value)
        for section in _SECTIONS
        for key, value in s[section].items()
        if key not in ("mag_fractions", "sky")
    ]
    numbers += [(f"sed.{k}", v) for k, v in s["sed"].items()]
    numbers += [(f"imaging.sky.{k}", v) for k, v in s["imaging"]["sky"].items()]
    numbers += [(f"grids[{i}].{k}", v) for i, g in enumerate(s["grids"]) for k, v in g.items() if k != "bands"]
    for key, value in numbers:
        if not _is_number(value):
            raise ConfigError(f"{where}.{key}: expected a number, got {value!r}")
    if not 0 <= s["sed"].get("variety", 0.0) <= 1:
        raise ConfigError(f"{where}.sed.variety: expected a share of the light, 0 to 1, got {s['sed']['variety']!r}")
    knots = s["morphology"]["knots"]
    if isinstance(knots, bool) or not isinstance(knots, int) or not 0 <= knots <= 100:
        raise ConfigError(f"{where}.morphology.knots: expected a whole number of clumps, 0 to 100, got {knots!r}")
    for i, grid in enumerate(s["grids"]):
        if not 0 < grid.get("coverage", 1.0) <= 1:
            raise ConfigError(f"{where}.grids[{i}].coverage: expected a fraction in (0, 1]")
