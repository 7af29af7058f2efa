"""Survey profiles: the shipped ones load with real values; bad ones are refused with file and key."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mmzcli.errors import ConfigError
from mmzcli.profiles import list_profiles, load_profile, profile_from_dict

SHIPPED = ["cfhtls", "hsc6", "hsc9", "sdss", "tiny"]


def test_shipped_profiles_are_listed_and_valid():
    assert set(SHIPPED) <= set(list_profiles())
    for name in SHIPPED:
        p = load_profile(name)
        waves = [b.wavelength for b in p.bands]
        assert waves == sorted(waves), name
        assert p.cutout_size in (32, 64)
        edges = p.redshift_grid.edges()
        assert len(edges) == p.redshift_grid.n_bins + 1 and edges[0] == p.redshift_grid.z_min
        # bins must be narrower than the expected scatter sigma_MAD (1+z) ~ outlier threshold / 3
        assert p.redshift_grid.width < p.outlier_threshold / 3
        assert profile_from_dict(p.to_dict()).bands == p.bands


def test_paper_facts():
    sdss, cfhtls, hsc6, hsc9 = (load_profile(n) for n in ("sdss", "cfhtls", "hsc6", "hsc9"))
    assert sdss.band_names == list("ugriz") and sdss.pixel_scale == 0.396
    assert sdss.outlier_threshold == 0.05 and sdss.reference_mag_limit == 17.8
    assert (sdss.redshift_grid.z_max, sdss.redshift_grid.n_bins) == (0.4, 180)
    assert len(cfhtls.bands) == 5 and cfhtls.outlier_threshold == 0.15
    assert len(hsc6.bands) == 6 and len(hsc9.bands) == 9 and hsc9.pixel_scale == 0.168
    assert hsc9.band_names[:6] == hsc6.band_names and hsc9.band_names[6:] == ["J", "H", "Ks"]
    assert hsc9.band("i") == hsc6.band("i")  # extends: the parent's bands carry over
    # Galactic extinction coefficients fall with wavelength
    for p in (sdss, cfhtls, hsc9):
        r = [b.extinction for b in p.bands]
        assert np.all(np.diff(r) < 0), p.name


def test_band_resolution_from_header_and_file_name():
    p = load_profile("sdss")
    assert p.resolve_band("SDSS-R") == "r" and p.resolve_band(" R ") == "r" and p.resolve_band("y") is None
    assert p.band_from_filename("frame-i-004263-4-0123.fits") == "i"


def _write(tmp_path, data, name="p.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("pixel_scale"), "p.yaml: profile: missing required key 'pixel_scale'"),
        (lambda d: d.update(colour="red"), "p.yaml: profile: unknown key 'colour'"),
        (lambda d: d["bands"][1].update(depth="deep"), "p.yaml: bands[1].depth: expected a number, got 'deep'"),
        (lambda d: d["bands"][0].pop("filter"), "p.yaml: bands[0]: missing required key 'filter'"),
        (lambda d: d.update(reference_band="q"), "p.yaml: reference_band: 'q' is not a band"),
        (lambda d: d["redshift_grid"].update(n_bins=0), "p.yaml: redshift_grid.n_bins: expected a positive value"),
        (lambda d: d.update(fusion="sideways"), "p.yaml: fusion: expected one of"),
        (lambda d: d["bands"].append(dict(d["bands"][0])), "p.yaml: bands: band 'g' is listed twice"),
        (lambda d: d.update(band_pattern="(x"), "p.yaml: band_pattern: not a valid regular expression"),
    ],
)
def test_invalid_profiles_name_file_and_key(tmp_path, change, message):
    data = load_profile("tiny").to_dict()
    change(data)
    with pytest.raises(ConfigError) as err:
        load_profile(_write(tmp_path, data))
    assert message in str(err.value)


def test_extends_merges_bands_by_name_and_detects_loops(tmp_path):
    _write(tmp_path, load_profile("tiny").to_dict(), "base.yaml")
    child = _write(
        tmp_path,
        {
            "extends": "base.yaml",
            "name": "child",
            "bands": [
                {"name": "r", "depth": 25.0},
                {
                    "name": "z",
                    "filter": "sdss_z0",
                    "wavelength": 8932,
                    "depth": 23,
                    "psf_fwhm": 0.7,
                    "zeropoint": 27,
                    "extinction": 1.263,
                },
            ],
        },
    )
    p = load_profile(child)
    assert p.name == "child" and p.band_names == ["g", "r", "i", "z"]
    assert p.band("r").depth == 25.0 and p.band("r").filter == "sdss_r0"
    _write(tmp_path, {"extends": "b.yaml"}, "a.yaml")
    _write(tmp_path, {"extends": "a.yaml"}, "b.yaml")
    with pytest.raises(ConfigError, match="loops back"):
        load_profile(tmp_path / "a.yaml")


def test_malformed_yaml_and_unknown_names(tmp_path):
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed YAML at line 2"):
        load_profile(_write(tmp_path, "name: x\n\tbands: []\n", "bad.yaml"))
    with pytest.raises(ConfigError, match="unknown profile 'lsst'.*sdss"):
        load_profile("lsst")
    with pytest.raises(ConfigError, match="missing.yaml: profile file not found"):
        load_profile(tmp_path / "missing.yaml")


def test_profiles_commands(run_mmz):
    code, out, _ = run_mmz("profiles")
    assert code == 0 and all(name in out for name in SHIPPED)
    code, out, _ = run_mmz("profiles", "show", "hsc9")
    assert code == 0 and yaml.safe_load(out)["name"] == "hsc9" and len(yaml.safe_load(out)["bands"]) == 9
