"""``mmz nz``: the redshift distributions n(z) of tomographic bins, stacked from the catalogue's PDFs.

Each object falls in the tomographic bin of its point estimate (``--by``); a bin's n(z) is the
weighted mean of its objects' PDFs, as a density on the catalogue's redshift grid. Error bands
come from a Poisson bootstrap over objects (each resample weights every object by a Poisson(1)
draw), which streams: the catalogue is read block by block and memory stays flat in its length.
With Z_SPEC in the catalogue (out-of-fold predictions), the true histogram of each bin and the bias
of its mean redshift are given beside it: the number a cosmic-shear analysis needs to trust.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmzcli.errors import ConfigError, InputError

BLOCK_ROWS = 50_000
RESAMPLES = 200


def parse_bins(text: str) -> np.ndarray:
    """'0.2,0.4,0.6' -> the edges of the tomographic bins, increasing, at least two."""
    try:
        edges = np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise ConfigError(f"--bins {text!r}: expected comma-separated redshifts, e.g. 0.2,0.4,0.6,0.8") from None
    if len(edges) < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise ConfigError(f"--bins {text!r}: expected at least two finite, increasing redshifts, e.g. 0.2,0.4,0.6")
    return edges


@dataclass
class Stack:
    """Running sums of one tomographic bin, with those of every bootstrap resample."""

    n_grid: int
    resamples: int
    objects: int = 0
    weight: float = 0.0
    pdf: np.ndarray = field(init=False)  # sum of w p(z)
    boot_pdf: np.ndarray = field(init=False)  # per resample
    boot_weight: np.ndarray = field(init=False)
    true_hist: np.ndarray = field(init=False)  # sum of w over z_spec bins
    true_z: float = 0.0  # sum of w z_spec
    boot_true_z: np.ndarray = field(init=False)

    def __post_init__(self):
        self.pdf, self.true_hist = np.zeros(self.n_grid), np.zeros(self.n_grid)
        self.boot_pdf = np.zeros((self.resamples, self.n_grid))
        self.boot_weight, self.boot_true_z = np.zeros(self.resamples), np.zeros(self.resamples)

    def add(self, pdfs, w, poisson, z_spec, edges) -> None:
        self.objects += len(w)
        self.weight += float(w.sum())
        self.pdf += w @ pdfs
        self.boot_pdf += (poisson * w) @ pdfs
        self.boot_weight += poisson @ w
        if z_spec is not None:
            self.true_hist += np.histogram(z_spec, edges, weights=w)[0]
            self.true_z += float(w @ z_spec)
            self.boot_true_z += (poisson * w) @ z_spec


def stack_catalogue(
    catalogue: Path,
    bins: np.ndarray,
    *,
    by: str = "Z_PHOT",
    weights: str | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    block_rows: int = BLOCK_ROWS,
) -> tuple[list[Stack], np.ndarray, dict]:
    """The stacks of the tomographic ``bins`` (by column ``by``), the grid edges and the row counts."""
    import fitsio

    from mmzcli.catalog import decode_pdfs, photoz_layout

    names, edges, n_rows = photoz_layout(catalogue, require=("ID", "PDF"))
    for option, column in (("--by", by), ("--weights", weights)):
        if column is not None and column.upper() not in names:
            raise InputError(f"{catalogue}: no column {column!r} ({option}); columns: {', '.join(names)}")
    truth = "Z_SPEC" if "Z_SPEC" in names else None
    scale = "PDF_SCALE" if "PDF_SCALE" in names else None  # int16 PDFs (predict --pdf-dtype int16)
    columns = [c for c in ("PDF", scale, by.upper(), None if weights is None else weights.upper(), truth) if c]
    stacks = [Stack(len(edges) - 1, resamples) for _ in range(len(bins) - 1)]
    counts = {"rows": n_rows, "no_pdf": 0, "outside_bins": 0, "bad_weight": 0}
    with fitsio.FITS(str(catalogue)) as fits:
        for start in range(0, n_rows, block_rows):
            rows = fits["PHOTOZ"].read(
                columns=list(dict.fromkeys(columns)), rows=np.arange(start, min(start + block_rows, n_rows))
            )
            pdfs = decode_pdfs(rows).astype(np.float64)
            z = rows[by.upper()].astype(np.float64)
            w = np.ones(len(z)) if weights is None else rows[weights.upper()].astype(np.float64)
            has_pdf = (pdfs.sum(axis=1) > 0) & np.isfinite(z)
            good_w = np.isfinite(w) & (w >= 0)
            tomo = np.searchsorted(bins, z, side="right") - 1  # bin i holds bins[i] <= z < bins[i + 1]
            inside = (tomo >= 0) & (tomo < len(stacks))
            counts["no_pdf"] += int((~has_pdf).sum())
            counts["bad_weight"] += int((has_pdf & ~good_w).sum())
            counts["outside_bins"] += int((has_pdf & good_w & ~inside).sum())
            poisson = np.random.default_rng([seed, start]).poisson(1.0, (resamples, len(z))).astype(np.float64)
            for i, stack in enumerate(stacks):
                take = has_pdf & good_w & (tomo == i)
                if take.any():
                    z_spec = None if truth is None else rows[truth][take].astype(np.float64)
                    stack.add(pdfs[take], w[take], poisson[:, take], z_spec, edges)
    return stacks, edges, counts


def summarise(stacks: list[Stack], bins: np.ndarray, edges: np.ndarray) -> tuple[dict, list[dict]]:
    """n(z) densities with 16-84% bands (arrays per bin) and one summary row per tomographic bin."""
    widths, mids = np.diff(edges), 0.5 * (edges[1:] + edges[:-1])
    curves: dict[str, np.ndarray] = {}
    table: list[dict] = []
    for i, s in enumerate(stacks, 1):
        row: dict = {
            "bin": i,
            "z_min": float(bins[i - 1]),
            "z_max": float(bins[i]),
            "objects": s.objects,
            "weight": s.weight,
        }
        if s.weight <= 0:
            nan = np.full(len(mids), np.nan)
            curves |= {f"NZ_{i}": nan, f"NZ_{i}_LO": nan, f"NZ_{i}_HI": nan}
            table.append(row | {"mean_z": None, "mean_z_err": None})
            continue
        nz = s.pdf / s.weight / widths
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = s.boot_pdf / s.boot_weight[:, None] / widths
        boot = boot[s.boot_weight > 0]
        lo, hi = np.percentile(boot, [16, 84], axis=0)
        curves |= {f"NZ_{i}": nz, f"NZ_{i}_LO": lo, f"NZ_{i}_HI": hi}
        boot_mean = (boot * widths) @ mids
        row |= {"mean_z": float((nz * widths) @ mids), "mean_z_err": float(np.std(boot_mean))}
        if s.true_hist.sum() > 0:
            curves[f"NZ_{i}_SPEC"] = s.true_hist / s.true_hist.sum() / widths
            boot_true = s.boot_true_z[s.boot_weight > 0] / s.boot_weight[s.boot_weight > 0]
            true_mean = s.true_z / s.weight
            row |= {
                "mean_z_spec": true_mean,
                "bias": row["mean_z"] - true_mean,
                "bias_err": float(np.std(boot_mean - boot_true)),  # paired: the same resamples
            }
        table.append(row)
    return curves, table


def nz_catalogue(
    catalogue: Path,
    bins_text: str,
    *,
    by: str = "Z_PHOT",
    weights: str | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    output: Path | None = None,
    plots: bool = True,
    console=None,
) -> dict:
    """``mmz nz``: nz.fits (curves and summary), nz.json, nz.hdf5 (qp, when installed), nz.png."""
    from mmzcli.evaluate import check_output_dir, make_output_dir

    if not 10 <= resamples <= 100_000:
        raise ConfigError(f"--resamples {resamples}: give 10 to 100000 (error bands need a few hundred)")
    bins = parse_bins(bins_text)
    out_dir = check_output_dir(Path(output) if output is not None else Path(catalogue).parent / "nz")
    stacks, edges, counts = stack_catalogue(
        Path(catalogue), bins, by=by, weights=weights, resamples=resamples, seed=seed
    )
    if not any(s.objects for s in stacks):
        raise InputError(f"{catalogue}: no object with a PDF has {by} within --bins {bins_text}")
    curves, table = summarise(stacks, bins, edges)
    make_output_dir(out_dir)
    report = {"catalogue": str(catalogue), "by": by.upper(), "weights": weights, "resamples": resamples,
              "seed": seed, "counts": counts, "bins": table}  # fmt: skip
    written = [_write_fits(out_dir / "nz.fits", edges, curves, table), _write_json(out_dir / "nz.json", report)]
    qp_path = _write_qp(out_dir / "nz.hdf5", edges, curves, len(stacks))
    if qp_path is not None:
        written.append(qp_path)
    if plots:
        from mmzcli.plots import nz_bands

        written.append(nz_bands(edges, curves, table, out_dir / "nz.png", by.upper()))
    if console is not None:
        _print_table(table, counts, console)
        console.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    return report


def _write_fits(path: Path, edges: np.ndarray, curves: dict, table: list[dict]) -> Path:
    import fitsio

    from mmzcli.atomic import atomic_path

    grid = {"Z_LO": edges[:-1], "Z_MID": 0.5 * (edges[1:] + edges[:-1]), "Z_HI": edges[1:]}
    nz = np.zeros(len(edges) - 1, dtype=[(k, "f8") for k in [*grid, *curves]])
    for k, v in (grid | curves).items():
        nz[k] = v
    keys = ("bin", "z_min", "z_max", "objects", "weight", "mean_z", "mean_z_err", "mean_z_spec", "bias", "bias_err")
    summary = np.zeros(len(table), dtype=[(k.upper(), "i4" if k in ("bin", "objects") else "f8") for k in keys])
    for i, row in enumerate(table):
        for k in keys:
            value = row.get(k)
            summary[k.upper()][i] = np.nan if value is None else value
    with atomic_path(path) as tmp, fitsio.FITS(str(tmp), "rw", clobber=True) as fits:
        fits.write(nz, extname="NZ")
        fits.write(summary, extname="BINS")
    return path


def _write_json(path: Path, report: dict) -> Path:
    from mmzcli.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=1))
    return path


def _write_qp(path: Path, edges: np.ndarray, curves: dict, n: int) -> Path | None:
    """The n(z) of the bins as one qp hist ensemble (one distribution per bin), when qp is installed."""
    from mmzcli.atomic import atomic_path
    from mmzcli.export import hist_ensemble

    keep = [i for i in range(1, n + 1) if np.all(np.isfinite(curves[f"NZ_{i}"]))]
    if not keep:
        return None
    try:
        ensemble = hist_ensemble(
            np.stack([curves[f"NZ_{i}"] * np.diff(edges) for i in keep]), edges, {"bin": np.array(keep)}
        )
    except ConfigError:  # qp not installed: the FITS table and the plot are enough
        return None
    with atomic_path(path) as tmp:
        ensemble.write_to(str(tmp))
    return path


def _print_table(table: list[dict], counts: dict, console) -> None:
    from rich.table import Table

    view = Table(title="n(z) of the tomographic bins")
    truth = any("bias" in row for row in table)
    for name in ("bin", "z range", "objects", "<z>", *(("<z_spec>", "bias") if truth else ())):
        view.add_column(name, justify="right")
    for row in table:
        mean = "-" if row["mean_z"] is None else f"{row['mean_z']:.4f} ± {row['mean_z_err']:.4f}"
        cells = [str(row["bin"]), f"{row['z_min']:g}-{row['z_max']:g}", str(row["objects"]), mean]
        if truth:
            has = "bias" in row
            cells += [
                f"{row['mean_z_spec']:.4f}" if has else "-",
                f"{row['bias']:+.4f} ± {row['bias_err']:.4f}" if has else "-",
            ]
        view.add_row(*cells)
    console.print(view)
    left = [f"{v} {k.replace('_', ' ')}" for k, v in counts.items() if k != "rows" and v]
    if left:
        console.print(f"of {counts['rows']} rows, left out: {', '.join(left)}", highlight=False)
