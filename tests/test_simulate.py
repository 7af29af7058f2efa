"""mmz simulate: files and headers, determinism, physics, photometry on the pixels, bad input."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from mmzcli.errors import ConfigError, InputError
from mmzcli.profiles import load_profile, shipped_profiles_dir
from mmzcli.sim.population import Kind, SedParams
from mmzcli.sim.settings import FieldSettings, SimSettings
from mmzcli.sim.survey import Role, build_sky, centred_on_catalog, simulate_survey, spectroscopic_catalog

TILE = 256  # tiny: 0.2"/px, 32 px cutouts -> 36 targets per tile


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("sim") / "tiny"
    simulate_survey("tiny", 40, project, seed=3, tile_size=TILE, jobs=1)
    return project


def digests(project: Path) -> dict[str, str]:
    files = sorted((project / "tiles").glob("*.fits")) + [project / "specz.fits", project / "truth.fits"]
    return {p.relative_to(project).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def user_profile(tmp_path: Path, simulation: dict, base: str = "tiny") -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(
        yaml.safe_dump(
            {"extends": str(shipped_profiles_dir() / f"{base}.yaml"), "name": "mine", "simulation": simulation}
        )
    )
    return path


def inject(tmp_path: Path, rows: dict, profile="tiny", **kw) -> Path:
    cat = tmp_path / "objects.fits"
    Table(rows).write(cat, overwrite=True)
    project = tmp_path / "inj"
    simulate_survey(profile, 0, project, catalog=cat, tile_size=TILE, **kw)
    return project


# ----------------------------------------------------------------------------- files


def test_writes_one_image_per_band_per_tile_with_honest_headers(tiny_run):
    profile = load_profile("tiny")
    names = sorted(p.name for p in (tiny_run / "tiles").iterdir())
    assert names == [f"tile-{t:04d}-{b}.fits" for t in (0, 1) for b in sorted(profile.band_names)]
    for band in profile.bands:
        with fits.open(tiny_run / "tiles" / f"tile-0001-{band.name}.fits") as hdul:
            hdr, data = hdul[0].header, hdul[0].data
            assert data.dtype == np.dtype(">f4") and data.shape == (TILE, TILE)
            assert hdr["FILTER"] == band.name and hdr["MAGZERO"] == band.zeropoint
            assert hdr["SEEING"] == band.psf_fwhm and hdr["GAIN"] > 0 and hdr["EXPTIME"] > 0
            assert hdr["BUNIT"] and "DATE" not in hdr
            wcs = WCS(hdr)
            assert wcs.wcs.ctype[0] == "RA---TAN"
            assert np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600 == pytest.approx(profile.pixel_scale)
            assert abs(np.median(data)) < 0.2 * np.std(data)  # background-subtracted
    leftovers = [p.name for p in tiny_run.rglob(".*")]
    assert leftovers == []  # no temporary files left behind


def test_specz_truth_and_config_are_consistent(tiny_run):
    specz = Table.read(tiny_run / "specz.fits")
    truth = Table.read(tiny_run / "truth.fits")
    assert len(specz) == 40 and len(set(specz["ID"])) == 40
    assert specz["ID"].dtype.kind == "i" and specz["ID"].dtype.itemsize == 8
    for col in ["RA", "DEC", "Z_SPEC", "EBV"] + [f"{k}_{b}" for k in ("MAG", "MAGERR") for b in "gri"]:
        assert col in specz.colnames
    assert len(truth) > len(specz) and {0, 2}.issubset(set(truth["ROLE"]))  # neighbours too
    matched = truth[np.isin(truth["ID"], specz["ID"])]
    assert np.all(matched["ROLE"] == 0)
    assert np.allclose(matched["RA"], specz["RA"]) and np.allclose(matched["EBV"], specz["EBV"], rtol=1e-6)
    dz = np.abs(specz["Z_SPEC"] - matched["Z"]) / (1 + matched["Z"])
    assert np.mean(dz < 1e-3) > 0.9  # small errors, a few wrong redshifts at most
    # observed magnitudes scatter around the truth by about their errors (bright objects)
    pull = (specz["MAG_i"] - matched["MAG_i"]) / specz["MAGERR_i"]
    assert np.median(np.abs(pull)) < 1.5
    config = yaml.safe_load((tiny_run / "mmz.yaml").read_text())
    assert config["inputs"]["tiles"] == "tiles/*.fits" and config["inputs"]["catalog"] == "specz.fits"
    assert config["inputs"]["columns"]["mag_ref"] == "MAG_i" and config["profile"]["name"] == "tiny"


def test_truth_roles_and_kinds_are_their_enums(tiny_run):
    truth, specz = Table.read(tiny_run / "truth.fits"), Table.read(tiny_run / "specz.fits")
    role, kind = np.asarray(truth["ROLE"]), np.asarray(truth["KIND"])
    assert role.dtype.kind == kind.dtype.kind == "i" and role.dtype.itemsize == kind.dtype.itemsize == 2
    assert set(role) <= set(Role) and set(kind) <= set(Kind) and Role.NEIGHBOUR in role
    assert set(truth["ID"][role == Role.TARGET]) == set(specz["ID"])
    assert np.array_equal(role == Role.STAR, kind == Kind.STAR)
    companion = role == Role.COMPANION
    assert np.all(np.isin(truth["HOST_ID"][companion], specz["ID"])) and np.all(truth["HOST_ID"][~companion] == 0)


def test_same_seed_gives_identical_files_whatever_the_number_of_processes(tiny_run, tmp_path):
    simulate_survey("tiny", 40, tmp_path / "again", seed=3, tile_size=TILE, jobs=2)
    assert digests(tmp_path / "again") == digests(tiny_run)
    simulate_survey("tiny", 40, tmp_path / "other", seed=4, tile_size=TILE, jobs=1)
    assert digests(tmp_path / "other")["specz.fits"] != digests(tiny_run)["specz.fits"]


def test_leftovers_of_a_killed_run_are_cleared_and_never_look_complete(tmp_path):
    project = tmp_path / "p"
    (project / ".tiles.999.tmp").mkdir(parents=True)
    (project / ".tiles.999.tmp" / "tile-0000-g.fits").write_bytes(b"half")
    (project / ".specz.fits.999.tmp.fits").write_bytes(b"half")
    (project / ".truth.fits.999.tmp.fits").write_bytes(b"half")
    simulate_survey("tiny", 5, project, tile_size=TILE)
    assert sorted(p.name for p in project.iterdir()) == ["mmz.yaml", "specz.fits", "tiles", "truth.fits"]


def test_existing_simulation_needs_overwrite(tiny_run, tmp_path):
    with pytest.raises(InputError, match="--overwrite"):
        simulate_survey("tiny", 40, tiny_run, seed=3, tile_size=TILE)
    project = tmp_path / "p"
    simulate_survey("tiny", 5, project, tile_size=TILE)
    simulate_survey("tiny", 8, project, tile_size=TILE, overwrite=True)
    assert len(Table.read(project / "specz.fits")) == 8
    assert len(list((project / "tiles").glob("*.fits"))) == 3


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"profile": "nosuch"}, ConfigError, "unknown profile 'nosuch'"),
        ({"n": 0}, InputError, "positive"),
        ({"n": -3}, InputError, "positive"),
        ({"tile_size": 40}, InputError, "tile-size"),
    ],
)
def test_bad_arguments_are_one_clear_error(tmp_path, kwargs, error, match):
    args = {"profile": "tiny", "n": 5, "project": tmp_path / "p", "tile_size": TILE, **kwargs}
    with pytest.raises(error, match=match):
        simulate_survey(args.pop("profile"), args.pop("n"), args.pop("project"), **args)


def test_unwritable_project_is_an_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InputError, match="cannot write"):
        simulate_survey("tiny", 5, blocker / "project", tile_size=TILE)


@pytest.mark.parametrize(
    "section, match",
    [
        ({"spec": {"z_maximum": 1.0}}, r"mine.yaml: simulation.spec: unknown key 'z_maximum'"),
        ({"spec": {"z_error": "small"}}, r"mine.yaml: simulation.spec.z_error: expected a number, got 'small'"),
        ({"grids": [{"bands": ["K"], "pixel_scale": 0.15}]}, r"simulation.grids\[0\].bands: no band 'K'"),
        ({"spec": {"mag_fractions": [[20, 0.5], [22, 0.4]]}}, r"mag_fractions: expected .* summing to 1"),
        ({"spec": {"mag_fractions": [[20, "half"], [22, 0.5]]}}, r"mag_fractions: expected \[\[upper mag, fraction\]"),
        ({"field": [150, 2]}, r"simulation.field: expected a mapping, got \[150, 2\]"),
        ({"sed": {"red_tzero": 0.1}}, r"simulation.sed: unknown key 'red_tzero' \(allowed: red_t0, "),
        ({"imaging": {"sky": {"K": 15.0}}}, r"simulation.imaging.sky: no band 'K'"),
        ({"grids": {"bands": ["i"]}}, r"simulation.grids: expected a list"),
        ({"grids": [{"pixel_scale": 0.3}]}, r"simulation.grids\[0\]: expected a mapping of bands"),
        ({"grids": [{"bands": ["i"], "coverage": 1.5}]}, r"simulation.grids\[0\].coverage: expected a fraction"),
        ({"grids": [{"bands": ["i"], "rotation": True}]}, r"simulation.grids\[0\].rotation: expected a number"),
        ({"morphology": {"knots": 2.5}}, r"simulation.morphology.knots: expected a whole number of clumps"),
        ({"sed": {"variety": 1.5}}, r"simulation.sed.variety: expected a share of the light, 0 to 1, got 1.5"),
    ],
)
def test_bad_simulation_section_names_the_file_and_key(tmp_path, section, match):
    path = user_profile(tmp_path, section)
    with pytest.raises(ConfigError, match=match):
        simulate_survey(str(path), 5, tmp_path / "p", tile_size=TILE)
    assert not (tmp_path / "p").exists()


def test_settings_are_resolved_typed_and_frozen(tmp_path):
    path = user_profile(
        tmp_path,
        {
            "spec": {"z_error": 1, "mag_fractions": [[20, 0.5], [22, 0.5]]},
            "grids": [{"bands": ["i"], "rotation": 2}],
            "sed": {"red_dust": 0},
        },
    )
    profile = load_profile(str(path))
    settings = SimSettings.from_profile(profile)
    assert settings.spec.z_error == 1.0 and isinstance(settings.spec.z_error, float)
    assert settings.spec.mag_limit == profile.reference_mag_limit and settings.spec.z_max == profile.redshift_grid.z_max
    assert settings.spec.mag_fractions == ((20.0, 0.5), (22.0, 0.5)) and settings.spec.wrong_fraction == 0.01
    assert settings.grids[0].bands == ("i",) and settings.grids[0].pixel_scale == profile.pixel_scale
    assert settings.sed.red_dust == 0.0 and settings.sed.blue_dust == SedParams().blue_dust
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.spec.z_error = 2.0


def test_injection_centres_new_settings_and_refuses_a_catalogue_wider_than_a_tile(tmp_path):
    profile = load_profile("tiny")
    settings = SimSettings.from_profile(profile)
    centred = centred_on_catalog(
        profile, {"RA": np.array([10.0, 10.002]), "DEC": np.array([-5.0, -4.999])}, TILE, settings
    )
    assert (centred.field.ra, centred.field.dec) == pytest.approx((10.001, -4.9995))
    assert settings.field == FieldSettings() and centred.spec is settings.spec  # a new object, the old one intact
    assert centred_on_catalog(profile, {"Z": np.ones(2)}, TILE, settings) is settings
    cat = tmp_path / "objects.fits"
    Table(
        {"Z": [0.3, 0.4], "RA": [150.0, 150.1], "DEC": [2.2, 2.2], **{f"MAG_{b}": [20.0, 20.0] for b in "gri"}}
    ).write(cat)
    with pytest.raises(InputError, match=r"spans 360\", more than one tile of 256 px"):
        simulate_survey("tiny", 0, tmp_path / "p", catalog=cat, tile_size=TILE)
    assert not (tmp_path / "p").exists()  # refused before anything is written


@pytest.mark.parametrize(
    "curve, package",
    [("speclite:cfht_megacam-q", "speclite"), ("speclite:sdss_g0", "speclite"), ("cfht_megacam-u", "astro-sedpy")],
)
def test_unknown_filter_curve_is_one_line_naming_it(tmp_path, curve, package):
    path = tmp_path / "mine.yaml"
    band = {
        "name": "g",
        "filter": curve,
        "wavelength": 4670,
        "depth": 22.2,
        "psf_fwhm": 1.4,
        "zeropoint": 22.5,
        "extinction": 3.303,
    }
    path.write_text(
        yaml.safe_dump({"extends": str(shipped_profiles_dir() / "tiny.yaml"), "name": "mine", "bands": [band]})
    )
    with pytest.raises(ConfigError, match=f"unknown filter curve '{curve}' \\({package} has none") as info:
        simulate_survey(str(path), 5, tmp_path / "p", tile_size=TILE)
    assert "\n" not in str(info.value)


def test_injection_catalogue_lacking_a_band_is_refused(tmp_path):
    cat = tmp_path / "objects.fits"
    Table({"Z": [0.3], "MAG_g": [20.0], "MAG_r": [19.5]}).write(cat)
    with pytest.raises(InputError, match="lacks column 'MAG_I'"):
        simulate_survey("tiny", 0, tmp_path / "p", catalog=cat, tile_size=TILE)
    Table({"MAG_g": [20.0], "MAG_r": [19.5], "MAG_i": [19.0]}).write(cat, overwrite=True)
    with pytest.raises(InputError, match="lacks column 'Z'"):
        simulate_survey("tiny", 0, tmp_path / "p", catalog=cat, tile_size=TILE)
    assert not (tmp_path / "p").exists()  # refused before anything is written


# ----------------------------------------------------------------------------- pixels


def aperture_photometry(project: Path, band, ra, dec, radius_arcsec):
    """Magnitudes in circular apertures, and centroid offsets [px] from the WCS positions."""
    with fits.open(project / "tiles" / f"tile-0000-{band.name}.fits") as hdul:
        data, wcs = hdul[0].data.astype(float), WCS(hdul[0].header)
    scale = np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600
    x, y = wcs.all_world2pix(ra, dec, 0)
    yy, xx = np.mgrid[0 : data.shape[0], 0 : data.shape[1]]
    mags, offsets = [], []
    for a, b in zip(x, y):
        inside = np.hypot(xx - a, yy - b) < radius_arcsec / scale
        mags.append(band.zeropoint - 2.5 * np.log10(data[inside].sum()))
        core = np.hypot(xx - a, yy - b) < 1.0 / scale
        w = data * core
        offsets.append(np.hypot((w * xx).sum() / w.sum() - a, (w * yy).sum() / w.sum() - b))
    return np.array(mags), np.array(offsets)


def test_injected_objects_are_recovered_by_aperture_photometry(tmp_path):
    profile = load_profile("tiny")
    ra = 150.0 + np.array([-15, 0, 15]) / 3600
    dec = 2.2 + np.array([-12, 14, -3]) / 3600
    mags = {"MAG_g": [18.6, 18.0, 19.1], "MAG_r": [18.0, 17.2, 18.7], "MAG_i": [17.7, 16.8, 18.5]}
    project = inject(tmp_path, {"Z": [0.1, 0.45, 0.8], "RA": ra, "DEC": dec, "R_HALF": [0.3, 0.5, 0.25], **mags})
    truth = Table.read(project / "truth.fits")
    assert len(truth) == 3 and np.all(truth["ROLE"] == 0)
    for band in profile.bands:
        assert np.allclose(truth[f"MAG_{band.name}"], mags[f"MAG_{band.name}"], atol=1e-6)
        measured, offsets = aperture_photometry(project, band, ra, dec, radius_arcsec=4.0)
        assert np.allclose(measured, mags[f"MAG_{band.name}"], atol=0.05), (band.name, measured)
        assert np.all(offsets < 0.1), offsets  # drawn where the WCS says, to a tenth of a pixel


def moffat_fwhm(cut: np.ndarray, dx: float, dy: float, guess: float) -> float:
    """FWHM [px] of a Moffat profile, beta free, fitted to a point source (dx, dy) from the cutout centre."""
    from scipy.optimize import least_squares

    h = cut.shape[0] // 2
    yy, xx = np.mgrid[-h : h + 1, -h : h + 1]

    def resid(p):
        amp, x0, y0, fwhm, beta = p
        alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
        return (amp * (1 + ((xx - x0) ** 2 + (yy - y0) ** 2) / alpha**2) ** -beta - cut).ravel()

    fit = least_squares(resid, [cut.max(), dx, dy, guess, 3.0], bounds=([0, -2, -2, 0.5, 1.1], [np.inf, 2, 2, 20, 20]))
    return fit.x[3]


def test_measured_depth_and_psf_match_the_profile(tmp_path):
    profile = load_profile("tiny")
    # three point-like, bright objects: the rest of the tile is empty sky
    ra = 150.0 + np.array([-15, 0, 15]) / 3600
    dec = 2.2 + np.array([14, -14, 7]) / 3600
    project = inject(
        tmp_path,
        {
            "Z": [0.3] * 3,
            "RA": ra,
            "DEC": dec,
            "R_HALF": [1e-3] * 3,
            "MAG_g": [18.0] * 3,
            "MAG_r": [18.0] * 3,
            "MAG_i": [18.0] * 3,
        },
    )
    import galsim

    rng = np.random.default_rng(1)
    for band in profile.bands:
        with fits.open(project / "tiles" / f"tile-0000-{band.name}.fits") as hdul:
            data, wcs = hdul[0].data.astype(float), WCS(hdul[0].header)
        psf = galsim.Moffat(beta=3.5, fwhm=band.psf_fwhm).drawImage(nx=21, ny=21, scale=profile.pixel_scale).array
        xs, ys = wcs.all_world2pix(ra, dec, 0)
        fluxes = []
        for _ in range(600):  # optimal PSF photometry at places far from the objects
            i, j = rng.integers(15, TILE - 15, 2)
            if np.min(np.hypot(xs - i, ys - j)) > 30:
                fluxes.append(np.sum(psf * data[j - 10 : j + 11, i - 10 : i + 11]) / np.sum(psf**2))
        depth = band.zeropoint - 2.5 * np.log10(5 * np.std(fluxes))
        assert depth == pytest.approx(band.depth, abs=0.2)
        for x0, y0 in zip(xs, ys):
            ix, iy = round(x0), round(y0)
            fwhm = moffat_fwhm(data[iy - 10 : iy + 11, ix - 10 : ix + 11], x0 - ix, y0 - iy, 4.0)
            assert fwhm * profile.pixel_scale == pytest.approx(band.psf_fwhm, rel=0.10)


def test_psf_of_every_hsc9_band_on_its_own_grid(tmp_path):
    """J, H, Ks on VISTA's rotated 0.15"/px grid, y and the optical bands on HSC's: FWHM within 10%."""
    profile = load_profile("hsc9")
    dec = 2.2 + np.array([-12, 10, 0]) / 3600
    ra = 150.1 + np.array([-5, 0, 5]) / 3600 / np.cos(np.radians(dec))  # where every NIR mosaic covers
    mags = {f"MAG_{b}": [19.0] * 3 for b in profile.band_names}
    project = inject(tmp_path, {"Z": [0.3] * 3, "RA": ra, "DEC": dec, "R_HALF": [1e-3] * 3, **mags}, profile="hsc9")
    truth = Table.read(project / "truth.fits")
    for band in profile.bands:
        assert np.all(truth[f"IN_{band.name}"])
        with fits.open(project / "tiles" / f"tile-0000-{band.name}.fits") as hdul:
            data, wcs = hdul[0].data.astype(float), WCS(hdul[0].header)
        scale = np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600
        for x0, y0 in zip(*wcs.all_world2pix(ra, dec, 0)):
            ix, iy = round(x0), round(y0)
            fwhm = moffat_fwhm(data[iy - 12 : iy + 13, ix - 12 : ix + 13], x0 - ix, y0 - iy, band.psf_fwhm / scale)
            assert fwhm * scale == pytest.approx(band.psf_fwhm, rel=0.10), band.name


def test_other_pixel_grid_with_partial_coverage(tmp_path):
    """As hsc9's NIR: a band on its own rotated grid covering part of each tile."""
    path = user_profile(tmp_path, {"grids": [{"bands": ["i"], "pixel_scale": 0.25, "rotation": 2.0, "coverage": 0.6}]})
    project = tmp_path / "grid"
    simulate_survey(str(path), 30, project, seed=1, tile_size=TILE)
    hdr_i = fits.getheader(project / "tiles" / "tile-0000-i.fits")
    hdr_r = fits.getheader(project / "tiles" / "tile-0000-r.fits")
    wcs = WCS(hdr_i)
    assert np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600 == pytest.approx(0.25)
    assert hdr_i["NAXIS1"] < hdr_r["NAXIS1"]
    truth = Table.read(project / "truth.fits")
    assert 0.4 < np.mean(truth["IN_i"]) < 0.8 and np.all(truth["IN_r"][truth["ROLE"] == 0])
    specz = Table.read(project / "specz.fits")
    inside = truth["IN_i"][truth["ROLE"] == 0]
    assert np.all(np.isfinite(np.asarray(specz["MAG_r"])))
    assert np.all(np.ma.getmaskarray(specz["MAG_i"]) == ~inside)  # NaN where not covered


# ----------------------------------------------------------------------------- physics


def test_igm_and_milky_way_dust():
    from mmzcli.sim.sed import igm_transmission, photometry_grid

    forest = igm_transmission(np.linspace(1050 * 4, 1170 * 4, 50), 3.0).mean()
    assert 0.6 < forest < 0.85  # mean Lyman-alpha forest transmission at z = 3
    assert igm_transmission(np.array([1300.0 * 4]), 3.0)[0] == 1.0
    profile = load_profile("sdss")
    grid = photometry_grid(tuple(b.filter for b in profile.bands))
    one = np.ones(1)
    for k in (0, 3):  # E and Im at z = 0.1: A_b / E(B-V) close to the profile's R_b
        dimming = (
            -2.5
            * np.log10(
                grid.relative_fluxes(k * one, 0.1 * one, 0 * one, 0.1 * one)
                / grid.relative_fluxes(k * one, 0.1 * one, 0 * one)
            )[0]
            / 0.1
        )
        assert np.allclose(dimming, [b.extinction for b in profile.bands], rtol=0.08)
    red = [-2.5 * np.log10(grid.relative_fluxes(0 * one, z * one, 0 * one)[0]) for z in (0.1, 0.4)]
    assert (red[1][1] - red[1][2]) - (red[0][1] - red[0][2]) > 0.5  # g-r of E reddens with z


def test_basis_spectra_mix_by_r_light_with_the_template_sequence():
    from mmzcli.sim.sed import BASIS, photometry_grid

    grid = photometry_grid(tuple(b.filter for b in load_profile("sdss").bands))
    z, ebv, mw = np.array([0.05, 0.2]), np.array([0.0, 0.3]), np.array([0.02, 0.1])
    plain = grid.relative_fluxes(np.array([0.0, 2.5]), z, ebv, mw)
    none = np.zeros((2, len(BASIS)))
    assert np.array_equal(grid.relative_fluxes(np.array([0.0, 2.5]), z, ebv, mw, none), plain)
    pure = [
        grid.relative_fluxes(np.array([t, t]), z, ebv, mw, np.eye(len(BASIS))[[j, j]])
        for t in (0.0, 3.0)
        for j in (0, 3)
    ]
    assert np.array_equal(pure[0], pure[2]) and np.array_equal(pure[1], pure[3])  # the type index no longer counts
    at_rest = grid.relative_fluxes(np.zeros(4), np.zeros(4), np.zeros(4), None, np.eye(len(BASIS)))
    assert np.allclose(at_rest[:, 2], 1.0, rtol=1e-4)  # each normalised, like the templates, to unit rest-frame r light
    old_metal_rich, metal_poor = pure[0], pure[1]
    assert np.all(old_metal_rich[:, 0] / old_metal_rich[:, 1] < metal_poor[:, 0] / metal_poor[:, 1])  # u-g redder
    quarter = np.array([[0.25, 0, 0, 0], [0, 0, 0, 0.25]])
    mixed = grid.relative_fluxes(np.array([0.0, 2.5]), z, ebv, mw, quarter)
    assert np.allclose(mixed, 0.75 * plain + 0.25 * np.stack([old_metal_rich[0], metal_poor[1]]))


def test_sed_variety_mixes_in_basis_light_and_widens_the_colour_redshift_relation(tmp_path):
    profile = load_profile(str(user_profile(tmp_path, {"sed": {"variety": 0.4}}, base="sdss")))
    plain, varied = spectroscopic_catalog("sdss", 1500, seed=2), spectroscopic_catalog(profile, 1500, seed=2)
    sky = build_sky(profile, 300, 2, 2048, SimSettings.from_profile(profile))
    galaxy = sky.table["KIND"] != 2
    for column in ("BASIS_BULGE", "BASIS_DISK"):
        share = sky.table[column][galaxy]
        assert share.min() >= 0 and share.max() <= 0.4 and 0.15 < share.mean() < 0.25  # uniform in [0, 0.4]

    def scatter(cat):  # g-r about its running median in z: the spread at fixed redshift
        z, gr = cat["Z_TRUE"], np.asarray(cat["TRUE_MAG_g"] - cat["TRUE_MAG_r"])
        red = cat["KIND"] == 0
        bins = np.digitize(z[red], np.quantile(z[red], np.linspace(0, 1, 11)[1:-1]))
        return np.mean([np.std(gr[red][bins == b]) for b in range(10)])

    assert scatter(varied) > 1.2 * scatter(plain)  # red galaxies: no longer one template at each luminosity


def test_far_uv_dust_and_where_each_megacam_u_drops_out():
    import extinction

    from mmzcli.sim.sed import igm_transmission, internal_attenuation, photometry_grid

    wave = np.array([1500.0, 2000.0, 5500.0, 12000.0])
    assert np.allclose(internal_attenuation(wave), extinction.calzetti00(wave, 4.05, 4.05))
    assert internal_attenuation(np.array([1499.9]))[0] == pytest.approx(10.33, abs=0.03)  # continuous
    assert internal_attenuation(np.array([950.0]))[0] > internal_attenuation(np.array([1200.0]))[0] + 2
    assert igm_transmission(np.linspace(700 * 4, 911 * 4, 50), 3.0).mean() < 0.5  # Lyman continuum
    profile = load_profile("hsc6")  # u = MegaCam u.MP9302 (CLAUDS), a speclite curve
    assert profile.band("u").filter == "speclite:cfht_megacam-u" and profile.resolve_band("u*") == "u"
    u_star = "cfht_megacam_us_9301"  # the older MegaCam u* (u.MP9301): CFHTLS, CLAUDS in XMM-LSS
    grid = photometry_grid((profile.band("u").filter, u_star, profile.band("g").filter))
    z = np.array([2.8, 3.0, 3.3])

    def u_minus_g(ebv):  # an Im-type star-forming galaxy: [z, (u, u*)]
        mag = -2.5 * np.log10(grid.relative_fluxes(np.full(3, 3.0), z, np.full(3, ebv)))
        return mag[:, :2] - mag[:, 2:]

    assert np.all(u_minus_g(0.2)[1] - u_minus_g(0.0)[1] > 0.3)  # dust reddens rest 950 Å against 1200 Å
    (u, u_s) = u_minus_g(0.1).T
    assert np.all(np.diff(u) > 0) and np.all(np.diff(u_s) > 0) and np.all(u > u_s + 0.3)
    assert u[0] < 1.5 < u[1]  # u.MP9302 samples rest > 912 Å up to z ~ 2.9
    assert u_s[1] < 1.5 < u_s[2]  # u*, 150 Å redder, up to z ~ 3.1


def test_most_z3_galaxies_of_the_hsc_profiles_are_u_dropouts():
    cat = spectroscopic_catalog("hsc6", 4000, seed=3)
    z = cat["Z_TRUE"]
    true = cat["TRUE_MAG_u"] - cat["TRUE_MAG_g"]
    noisy = np.asarray(cat["MAG_u"] - cat["MAG_g"], float)
    for lo, hi, most in ((2.9, 3.1, 0.75), (3.1, 3.3, 0.9)):
        at = (z > lo) & (z < hi)
        assert at.sum() > 20 and np.mean(true[at] > 1.5) > most and np.mean(noisy[at] > 1.5) > most - 0.1


def test_sdss_population_is_the_main_galaxy_sample():
    cat = spectroscopic_catalog("sdss", 1500, seed=2)
    assert 0.08 < np.median(cat["Z_TRUE"]) < 0.12 and cat["Z_TRUE"].max() <= 0.4
    mag_r = np.asarray(cat["MAG_r"]) - 2.285 * cat["EBV"]  # dereddened, noisy
    assert np.percentile(mag_r, 99) < 17.9 and 0.3 < np.mean(cat["KIND"] == 0) < 0.7


def test_cfhtls_sample_follows_the_magnitude_fractions():
    cat = spectroscopic_catalog("cfhtls", 1000, seed=2)
    i = np.asarray(cat["MAG_i"]) - 1.632 * cat["EBV"]
    fractions = [np.mean(i <= 19.5), np.mean((i > 19.5) & (i <= 22.5)), np.mean(i > 22.5)]
    assert np.allclose(fractions, [0.34, 0.57, 0.09], atol=0.04)
    assert cat["Z_TRUE"].max() > 1.5


def test_cli_turns_bad_input_into_exit_code_2(tiny_run, capsys):
    from mmzcli.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--profile", "tiny", "-n", "5", "--project", str(tiny_run)])
    assert exit_info.value.code == 2
    assert "--overwrite" in capsys.readouterr().err


def test_the_young_burst_of_a_disk_is_drawn_as_clumps_in_the_same_places_in_every_band():
    """A disk whose light is all burst: with knots its images in two bands are the same clumps scaled by
    the flux ratio, brighter in their peaks than the smooth disk, with the same total flux."""
    import galsim

    from mmzcli.sim.render import BandImaging, PixelGrid, TileTask, galaxy_profile

    def task(flux: float, knots: int):
        grid = PixelGrid((150.0, 2.0), (32.0, 32.0), 0.2, 0.0, (64, 64))
        band = BandImaging("g", 0.8, 27.0, 25.0, 22.0, 60.0)
        one = np.ones(1)
        return TileTask(Path("x.fits"), band, grid, 1, one * 32, one * 32, one * 0, one * flux, one * flux, knots,
                        np.array([7]), one, one * 1.5, one, one * 0.7, one * 0.3, np.zeros(1, bool),
                        np.zeros(1, bool), {})  # fmt: skip

    gsp = galsim.GSParams(minimum_fft_size=32)
    psf = galsim.Moffat(beta=3.5, fwhm=0.8, gsparams=gsp)

    def draw(t):
        return galaxy_profile(t, 0, psf, gsp)[0].drawImage(nx=64, ny=64, scale=0.2).array

    blue, red, smooth = draw(task(100.0, 12)), draw(task(40.0, 12)), draw(task(100.0, 0))
    np.testing.assert_allclose(red, 0.4 * blue, atol=1e-3 * red.max())  # the same clumps in both bands
    assert abs(blue.sum() - smooth.sum()) < 0.02 * smooth.sum()  # light moved, not made
    assert blue.max() > 1.2 * smooth.max() and np.abs(blue - smooth).sum() > 0.3 * smooth.sum()  # clumpy
