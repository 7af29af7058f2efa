"""``mmz evaluate``: the paper's metrics, PDF calibration and their plots, for one or several catalogues.

Metrics (paper §5.1) on dz = (z_phot - z_spec)/(1 + z_spec): sigma_MAD, the
outlier fraction eta (|dz| >= OUTLTHR of the catalogue header) and the bias,
over all objects and in 8 equal-count bins of magnitude, of z_spec and of
z_phot, with error bars from the spread over the cross-validation folds when
the catalogue has a FOLD column (paper Fig. 2, B.1).  Beyond the paper: the
PIT histogram and the CRPS of the PDFs.  Several catalogues are matched by ID
and compared on their common objects.

Example::

    mmz evaluate P/catalogs/oof-early.fits P/catalogs/oof-baseline.fits -o P/plots/early-vs-baseline
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmzcli import metrics
from mmzcli.errors import ConfigError, InputError

DEFAULT_THRESHOLD = 0.15  # eta's |dz| limit when a catalogue header has no OUTLTHR (all surveys but SDSS)
Z_SPEC_MAX = 15.0  # beyond any measured galaxy redshift (the record is about 14): a sentinel such as 99, not a z
JSON_KEYS = ("n", "sigma_mad", "eta", "bias", "crps", "outlier_threshold")


@dataclass
class Scored:
    """One catalogue reduced to what the metrics need, on the objects compared (sorted by ID)."""

    label: str
    path: Path
    header: dict
    edges: np.ndarray
    threshold: float
    id: np.ndarray
    z_phot: np.ndarray
    z_spec: np.ndarray
    pdf: np.ndarray
    mag: np.ndarray | None = None
    mag_column: str | None = None
    fold: np.ndarray | None = None
    dz: np.ndarray = field(init=False)

    def __post_init__(self):
        self.dz = metrics.delta_z(self.z_phot, self.z_spec)

    def take(self, rows: np.ndarray) -> Scored:
        return Scored(
            self.label,
            self.path,
            self.header,
            self.edges,
            self.threshold,
            self.id[rows],
            self.z_phot[rows],
            self.z_spec[rows],
            self.pdf[rows],
            None if self.mag is None else self.mag[rows],
            self.mag_column,
            None if self.fold is None else self.fold[rows],
        )


def _note(console, text: str) -> None:
    if console is not None:
        console.print(f"[yellow]note:[/] {text}", highlight=False, soft_wrap=True)


def _grid_text(edges: np.ndarray) -> str:
    return f"{len(edges) - 1} bins on {edges[0]:g}-{edges[-1]:g}"


def _labels(paths: list[Path]) -> list[str]:
    """Short, distinct names for legends: the file stem, or more of the path where stems repeat."""
    stems = [p.stem for p in paths]
    labels = [s if stems.count(s) == 1 else f"{p.parent.name}/{s}" for s, p in zip(stems, paths)]
    return [lab if labels.count(lab) == 1 else f"{lab} #{i + 1}" for i, lab in enumerate(labels)]


def read_truth(path: Path, mag_column: str | None, id_col: str = "ID", z_col: str = "Z_SPEC") -> dict[str, np.ndarray]:
    """ID and Z_SPEC (and the magnitude column when it is there) of a spectroscopic table."""
    from mmzcli.catalog import read_table

    return read_table(
        path,
        {"id": id_col, "z_spec": z_col},
        optional={"mag": mag_column} if mag_column else None,
        options={"id": "--id-col", "z_spec": "--z-col"},
    )


def _numeric(cat, name: str) -> np.ndarray:
    """A column of a photo-z catalogue as float64: a hand-made file may hold text where mmz writes numbers."""
    values = np.asarray(cat.columns[name])
    if values.dtype.kind not in "biuf":
        raise InputError(
            f"{cat.path}: column {name!r} must hold numbers, found {values.dtype}; "
            f"give a catalogue written by mmz predict"
        )
    return values.astype(np.float64)


def check_output_dir(path: Path) -> Path:
    """Refuse an output directory that is a file, lies under one or cannot be written, before any work is done."""
    path = Path(path)
    for place in (path, *path.parents):
        if not place.exists():
            continue
        if not place.is_dir():
            where = "is an existing file" if place == path else f"lies under {place}, which is a file"
            raise ConfigError(f"output directory {path} (--output): {where}; name a directory, new or existing")
        if not os.access(place, os.W_OK | os.X_OK):
            raise ConfigError(
                f"output directory {path} (--output): {place} is not writable; name a directory you can write in"
            )
        break
    return path


def make_output_dir(path: Path) -> Path:
    """Create the output directory (checked by ``check_output_dir``; the file system may still refuse)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"output directory {path} (--output): cannot create it ({exc.strerror or exc}); "
            f"name a directory you can write in"
        ) from None
    return path


def _join(ids: np.ndarray, truth: dict[str, np.ndarray], key: str) -> np.ndarray:
    """``truth[key]`` for each id (NaN for ids the truth table lacks)."""
    order = np.argsort(truth["id"])
    sorted_ids = truth["id"][order]
    pos = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
    found = sorted_ids[pos] == ids
    return np.where(found, np.asarray(truth[key], dtype=np.float64)[order][pos], np.nan)


def load_matched(
    paths: list[Path],
    *,
    truth: Path | None = None,
    mag_col: str | None = None,
    id_col: str = "ID",
    z_col: str = "Z_SPEC",
    console=None,
) -> list[Scored]:
    """Read catalogues, join the truth, keep the objects every catalogue can be scored on, sorted by ID.

    Raises ``InputError`` for a missing column, catalogues on different redshift
    grids or with different outlier thresholds, and catalogues with no common ID.
    ``id_col`` and ``z_col`` name the columns of the ``truth`` table.  Objects
    without a finite Z_PHOT, a Z_SPEC in -1..Z_SPEC_MAX or a PDF of finite
    non-negative values with a positive sum are left out (and counted in a note).
    """
    from mmzcli.catalog import read_photoz

    paths = [Path(p) for p in paths]
    cats = [read_photoz(p, require=("ID", "Z_PHOT", "PDF")) for p in paths]
    first = cats[0]
    for cat in cats[1:]:
        if len(cat.edges) != len(first.edges) or not np.allclose(cat.edges, first.edges, rtol=0, atol=1e-9):
            raise InputError(
                f"{first.path} and {cat.path}: different redshift grids ({_grid_text(first.edges)} "
                f"vs {_grid_text(cat.edges)}); compare catalogues predicted on the same grid"
            )
    thresholds = []
    for cat in cats:
        if "OUTLTHR" in cat.header:
            thresholds.append(float(cat.header["OUTLTHR"]))
        else:
            thresholds.append(DEFAULT_THRESHOLD)
            _note(console, f"{cat.path}: no OUTLTHR keyword; eta uses |dz| >= {DEFAULT_THRESHOLD}")
    for cat, t in zip(cats[1:], thresholds[1:]):
        if t != thresholds[0]:
            raise InputError(
                f"{first.path} and {cat.path}: different outlier thresholds (OUTLTHR "
                f"{thresholds[0]:g} vs {t:g}); compare catalogues of the same survey profile"
            )

    scored, truths = [], {}
    for cat, label, threshold in zip(cats, _labels(paths), thresholds):
        cols = cat.columns
        ids = np.asarray(cols["ID"])
        if ids.dtype.kind not in "iu":
            raise InputError(
                f"{cat.path}: column 'ID' must hold integer ids, found {ids.dtype}; "
                f"give a catalogue written by mmz predict"
            )
        ids = ids.astype(np.int64)
        if len(np.unique(ids)) != len(ids):
            raise InputError(f"{cat.path}: column 'ID' repeats ids; objects are matched by ID, which must be unique")
        refband = str(cat.header.get("REFBAND", "")).strip()
        mag_name = (mag_col or (f"MAG_{refband}" if refband else "")).upper() or None
        if truth is not None and mag_name not in truths:
            truths[mag_name] = read_truth(truth, mag_name, id_col, z_col)
        known = truths.get(mag_name, {})
        # the catalogue's own values first; the truth table fills what it lacks (by ID)
        z_spec = _numeric(cat, "Z_SPEC") if "Z_SPEC" in cols else None
        if known:
            joined = _join(ids, known, "z_spec")
            z_spec = joined if z_spec is None else np.where(np.isfinite(z_spec), z_spec, joined)
        if z_spec is None:
            raise InputError(
                f"{cat.path}: no column 'Z_SPEC'; give the spectroscopic redshifts with "
                f"--truth specz.fits (columns ID, Z_SPEC; see --id-col, --z-col)"
            )
        mag = _numeric(cat, mag_name) if mag_name in cols else None
        if "mag" in known:
            joined = _join(ids, known, "mag")
            mag = joined if mag is None else np.where(np.isfinite(mag), mag, joined)
        if mag is None and mag_col:
            where = f"{cat.path}" + (f" or {truth}" if truth is not None else "")
            raise InputError(f"{where}: no column '{mag_name}' for --mag-col; name a magnitude column present")
        if mag is None and mag_name:
            _note(
                console,
                f"{cat.path}: no column '{mag_name}'; no metrics against magnitude "
                f"(give --truth with {mag_name} or --mag-col)",
            )
        pdf = _numeric(cat, "PDF")
        z_phot = _numeric(cat, "Z_PHOT")
        fold = _numeric(cat, "FOLD") if "FOLD" in cols else None
        if fold is not None:
            fold = np.where(np.isfinite(fold), fold, -1).astype(np.int64)
        scored.append(
            Scored(
                label,
                cat.path,
                cat.header,
                cat.edges,
                threshold,
                ids,
                z_phot,
                z_spec,
                pdf,
                mag,
                mag_name if mag is not None else None,
                fold,
            )
        )

    # objects every catalogue can be scored on
    usable = []
    for s in scored:
        with np.errstate(invalid="ignore"):
            pdf_ok = np.isfinite(s.pdf).all(axis=1) & (s.pdf >= 0).all(axis=1) & (s.pdf.sum(axis=1) > 0)
            z_ok = np.isfinite(s.z_spec) & (s.z_spec > -1) & (s.z_spec <= Z_SPEC_MAX)
        ok = np.isfinite(s.z_phot) & z_ok & pdf_ok
        if len(ok) == 0:
            raise InputError(f"{s.path}: the catalogue has no rows; give a catalogue of objects with a z_spec")
        if not ok.any():
            via_truth = "" if truth is None else f" (after joining {truth} by ID)"
            reasons = [
                f"{int(count)} {what}"
                for count, what in (
                    ((~z_ok).sum(), f"without a Z_SPEC in (-1, {Z_SPEC_MAX:g}]{via_truth}"),
                    ((~np.isfinite(s.z_phot)).sum(), "without a finite Z_PHOT"),
                    ((~pdf_ok).sum(), "without a valid PDF (finite, >= 0, not all 0)"),
                )
                if count
            ]
            raise InputError(
                f"{s.path}: none of its {len(ok)} objects can be scored ({', '.join(reasons)}); "
                f"give objects with a spectroscopic redshift (--truth supplies Z_SPEC) and a valid PDF"
            )
        usable.append(ok)
    common = scored[0].id[usable[0]]
    for s, ok in zip(scored[1:], usable[1:]):
        common = np.intersect1d(common, s.id[ok])
    if len(common) == 0:
        raise InputError(
            f"{' and '.join(str(s.path) for s in scored)}: no common ID among the objects with a "
            f"z_phot and a z_spec; compare catalogues of the same objects"
        )
    if len(scored) > 1:
        union = len(np.unique(np.concatenate([s.id[ok] for s, ok in zip(scored, usable)])))
        if union > len(common):
            _note(
                console,
                f"{union - len(common)} objects are not in every catalogue; comparing the {len(common)} common ones",
            )
    for s, ok in zip(scored, usable):
        dropped = int((~ok).sum())
        if dropped:
            _note(console, f"{s.path}: {dropped} objects without a usable z_phot, z_spec or PDF left out")
    out = []
    for s in scored:
        order = np.argsort(s.id)
        out.append(s.take(order[np.searchsorted(s.id[order], common)]))
    mags = [s for s in out if s.mag is not None]
    if mags and len(mags) < len(out):  # compare on the same objects: magnitudes from whichever catalogue has them
        for s in out:
            if s.mag is None:
                s.mag, s.mag_column = mags[0].mag, mags[0].mag_column
    return out


def score(s: Scored, n_bins: int = 8) -> dict:
    """Overall and binned metrics, PIT and CRPS of one matched catalogue."""
    crps = metrics.crps(s.pdf, s.edges, s.z_spec)
    pit = metrics.pit(s.pdf, s.edges, s.z_spec)
    overall = metrics.point_metrics(s.dz, s.threshold, crps)
    overall["outlier_threshold"] = s.threshold
    spread = metrics.fold_spread(s.dz, s.fold, s.threshold, crps)
    if spread is not None:
        overall.update({f"{k}_err": v for k, v in spread.items()})
    result: dict[str, Any] = {
        "label": s.label,
        "path": str(s.path),
        "run": s.header.get("RUN"),
        "profile": s.header.get("PROFILE"),
        "z_grid": {"z_min": float(s.edges[0]), "z_max": float(s.edges[-1]), "n_bins": len(s.edges) - 1},
        "overall": overall,
        "pit": metrics.pit_histogram(pit),
        "folds": None if s.fold is None else sorted(int(f) for f in np.unique(s.fold)),
    }
    for key, x in (("by_mag", s.mag), ("by_z_spec", s.z_spec), ("by_z_phot", s.z_phot)):
        if x is None:
            result[key] = None
            continue
        ok = np.isfinite(x)  # objects without a magnitude count overall, not in magnitude bins
        result[key] = metrics.binned_metrics(
            s.dz[ok], x[ok], s.threshold, n_bins, None if s.fold is None else s.fold[ok]
        )
    if s.mag is not None:
        result["by_mag"]["column"] = s.mag_column
    return result


def print_table(results: list[dict], console) -> None:
    from rich.table import Table

    threshold = results[0]["overall"]["outlier_threshold"]
    folds = any("sigma_mad_err" in r["overall"] for r in results)
    table = Table(
        "catalogue",
        "N",
        "σ_MAD",
        f"η(≥{threshold:g}) %",
        "bias",
        "CRPS",
        "PIT KS",
        "PIT tails %",
        title="Photo-z metrics" + (" (dim: std over folds)" if folds else ""),
    )
    for r in results:
        o = r["overall"]
        table.add_row(
            r["label"],
            str(o["n"]),
            f"{o['sigma_mad']:.4f}",
            f"{100 * o['eta']:.2f}",
            f"{o['bias']:+.4f}",
            f"{o['crps']:.4f}",
            f"{r['pit']['ks_stat']:.3f}",
            f"{100 * r['pit']['tails']:.2f}",
        )
        if "sigma_mad_err" in o:
            table.add_row(
                "",
                "",
                f"±{o['sigma_mad_err']:.4f}",
                f"±{100 * o['eta_err']:.2f}",
                f"±{o['bias_err']:.4f}",
                f"±{o['crps_err']:.4f}",
                "",
                "",
                style="dim",
            )
    console.print(table)


def write_plots(scored: list[Scored], results: list[dict], out_dir: Path, n_bins: int = 8) -> list[Path]:
    from mmzcli import plots

    threshold = scored[0].threshold
    entries = [
        {"label": r["label"], "z_spec": s.z_spec, "z_phot": s.z_phot, "overall": r["overall"]}
        for s, r in zip(scored, results)
    ]
    written = [plots.zphot_vs_zspec(entries, out_dir / "zphot_vs_zspec.png", threshold)]

    def series(key, x_of):
        return [
            {"label": r["label"], "binned": r[key], "overall": r["overall"], "x": x_of(s)}
            for s, r in zip(scored, results)
        ]

    n = results[0]["overall"]["n"]
    if scored[0].mag is not None:
        assert scored[0].mag_column is not None  # read together with the magnitudes
        by_mag = series("by_mag", lambda s: s.mag[np.isfinite(s.mag)])
        label = plots.mag_label(scored[0].mag_column, str(scored[0].header.get("REFBAND", "")).strip())
        written.append(
            plots.metrics_vs(
                [{"xlabel": label, "series": by_mag}],
                out_dir / "metrics_vs_mag.png",
                f"Metrics in {n_bins} equal-count magnitude bins ({n} objects)",
            )
        )
    written.append(
        plots.metrics_vs(
            [
                {"xlabel": plots.ZSPEC_LABEL, "series": series("by_z_spec", lambda s: s.z_spec)},
                {"xlabel": plots.ZPHOT_LABEL, "series": series("by_z_phot", lambda s: s.z_phot)},
            ],
            out_dir / "metrics_vs_z.png",
            f"Metrics in {n_bins} equal-count redshift bins ({n} objects)",
        )
    )
    written.append(
        plots.pit_histogram(
            [{"label": r["label"], "pit": r["pit"], "crps": r["overall"]["crps"]} for r in results], out_dir / "pit.png"
        )
    )
    return written


def evaluate_catalogs(
    paths: list[Path],
    *,
    truth: Path | None = None,
    mag_col: str | None = None,
    id_col: str = "ID",
    z_col: str = "Z_SPEC",
    output: Path | None = None,
    n_bins: int = 8,
    as_json: bool = False,
    plots: bool = True,
    console=None,
) -> dict:
    """``mmz evaluate``: metrics.json, four PNG figures, a table on the terminal (and JSON on stdout)."""
    from mmzcli import __version__
    from mmzcli.atomic import atomic_write_text

    out_dir = check_output_dir(Path(output) if output is not None else Path(paths[0]).parent / "evaluate")
    scored = load_matched(paths, truth=truth, mag_col=mag_col, id_col=id_col, z_col=z_col, console=console)
    results = [score(s, n_bins) for s in scored]
    make_output_dir(out_dir)
    report = {
        "mmz_version": __version__,
        "n_common": len(scored[0].id),
        "n_bins": n_bins,
        "truth": None if truth is None else str(truth),
        "catalogs": results,
    }
    atomic_write_text(out_dir / "metrics.json", json.dumps(report, indent=1, allow_nan=True))
    written = write_plots(scored, results, out_dir, n_bins) if plots else []
    if console is not None:
        print_table(results, console)
        figures = f" and {len(written)} figures ({', '.join(p.name for p in written)})" if written else ""
        console.print(f"wrote {out_dir / 'metrics.json'}{figures}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps({str(p): {k: r["overall"][k] for k in JSON_KEYS} for p, r in zip(paths, results)}, indent=1))
    return report
