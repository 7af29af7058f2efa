"""The figures of ``mmz evaluate``, ``mmz bootstrap`` and ``mmz dropout-scan`` (PNG, matplotlib Agg).

Figures are built on ``matplotlib.figure.Figure`` (no pyplot state, no GUI
backend) and written atomically.  They follow the paper's: metrics in 8
equal-count bins drawn at the median of each bin, error bars = standard
deviation over the validation folds, the distribution of the binned variable
as a grey histogram behind (Fig. 2, B.1); bootstrap distributions of the metric
difference with the observed one marked (Fig. D.1); sigma_MAD against
redshift with one modality dropped at a time (Fig. 10).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DPI = 120
METRIC_LABELS = {
    "sigma_mad": r"$\sigma_\mathrm{MAD}$",
    "eta": r"outlier fraction $\eta$ [%]",
    "bias": r"bias $\langle\Delta z\rangle$",
    "abs_bias": r"$|$bias$|$",
    "crps": "CRPS",
}
METRIC_SCALE = {"sigma_mad": 1.0, "eta": 100.0, "bias": 1.0, "crps": 1.0}  # eta is drawn in per cent
ZSPEC_LABEL = r"spectroscopic redshift $z_\mathrm{spec}$"
ZPHOT_LABEL = r"photometric redshift $z_\mathrm{phot}$ (PDF median)"


def figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.4, 4.8), **kwargs):
    """A figure and its axes (always a 2-d array), without pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def save(fig, path: Path) -> Path:
    """Write a PNG atomically: readers never see half a file."""
    from mmzcli.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return Path(path)


def colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def mag_label(column: str, refband: str = "") -> str:
    """MAG_I -> 'i magnitude [AB mag]', spelling the band as the header's REFBAND does (i is not Johnson I)."""
    band = column[4:] if column.upper().startswith("MAG_") else column
    if refband and band.upper() == refband.upper():
        band = refband
    return f"{band} magnitude [AB mag]"


def _background_histogram(ax, values: np.ndarray, lo: float, hi: float) -> None:
    """The distribution of the binned variable, in grey behind the curves, on a right-hand axis."""
    twin = ax.twinx()
    twin.hist(values, bins=40, range=(lo, hi), color="0.85", zorder=0)
    twin.set_ylabel("objects per histogram bin", color="0.5")
    twin.tick_params(axis="y", colors="0.5")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)


# ----------------------------------------------------------------------------- evaluate


def zphot_vs_zspec(entries: list[dict], path: Path, threshold: float) -> Path:
    """One density panel per catalogue: z_phot against z_spec, the 1:1 line and the outlier limits.

    ``entries``: dicts with label, z_spec, z_phot and overall (the metrics).
    """
    from matplotlib.colors import LogNorm

    n = len(entries)
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig, axes = figure(nrows, ncols, size=(4.6 * ncols, 4.4 * nrows))
    lo = min(min(e["z_spec"].min(), e["z_phot"].min()) for e in entries)
    hi = max(max(e["z_spec"].max(), e["z_phot"].max()) for e in entries)
    lo, hi = max(lo - 0.02 * (hi - lo), -0.05), hi + 0.02 * (hi - lo)
    line = np.linspace(lo, hi, 200)
    for ax, e in zip(axes.flat, entries):
        _, _, _, image = ax.hist2d(
            e["z_spec"], e["z_phot"], bins=120, range=[[lo, hi], [lo, hi]], norm=LogNorm(), cmap="viridis", cmin=1
        )
        ax.plot(line, line, color="k", lw=0.8, label="1:1")
        for sign in (1, -1):
            ax.plot(
                line,
                line + sign * threshold * (1 + line),
                color="crimson",
                lw=0.8,
                ls="--",
                label=rf"$|\Delta z| = {threshold:g}$" if sign == 1 else None,
            )
        o = e["overall"]
        ax.text(
            0.03,
            0.97,
            f"N = {o['n']}\n"
            + rf"$\sigma_\mathrm{{MAD}}$ = {o['sigma_mad']:.4f}"
            + "\n"
            + rf"$\eta$ = {100 * o['eta']:.2f} %"
            + "\n"
            + f"bias = {o['bias']:+.4f}",
            transform=ax.transAxes,
            va="top",
            ha="left",
            fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8},
        )
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel=ZSPEC_LABEL, ylabel=ZPHOT_LABEL, title=e["label"])
        ax.set_aspect("equal")
        ax.legend(loc="lower right", fontsize=8)
        fig.colorbar(image, ax=ax, label="objects per pixel", shrink=0.8, format="%g")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(
        r"Photometric vs spectroscopic redshift, $\Delta z = (z_\mathrm{phot} - z_\mathrm{spec})/(1 + z_\mathrm{spec})$"
    )
    return save(fig, path)


def metrics_vs(panels: list[dict], path: Path, title: str, metrics=("sigma_mad", "eta", "bias")) -> Path:
    """Metrics in equal-count bins, one column per binned variable, one row per metric (paper Fig. 2, B.1).

    ``panels``: dicts with xlabel and series: a list of dicts with label, binned
    (the output of ``metrics.binned_metrics``), overall (metrics over all objects)
    and x (the binned values, for the background histogram).
    """
    fig, axes = figure(len(metrics), len(panels), size=(5.6 * len(panels), 2.7 * len(metrics)), sharex="col")
    for col, panel in enumerate(panels):
        series = panel["series"]
        palette = colours(len(series))
        xs = np.concatenate([s["x"] for s in series])
        lo, hi = np.percentile(xs, [0.5, 99.5])
        spread = [np.diff(s["binned"]["x_mid"]).min() if len(s["binned"]["x_mid"]) > 1 else 0.0 for s in series]
        shift = 0.06 * min(spread) if spread else 0.0  # points slightly apart, as in the paper
        for row, key in enumerate(metrics):
            ax = axes[row, col]
            _background_histogram(ax, series[0]["x"], lo, hi)
            scale = METRIC_SCALE[key]
            for i, (s, colour) in enumerate(zip(series, palette)):
                b = s["binned"]
                x = np.asarray(b["x_mid"]) + (i - (len(series) - 1) / 2) * shift
                y = np.asarray(b[key], dtype=float) * scale
                err = b.get(f"{key}_err")
                err = None if err is None else np.array([np.nan if v is None else v for v in err]) * scale
                ax.errorbar(x, y, yerr=err, color=colour, marker="o", ms=4, lw=1.3, capsize=3, label=s["label"])
                ax.axhline(s["overall"][key] * scale, color=colour, lw=0.8, ls=":")
            if key == "bias":
                ax.axhline(0.0, color="k", lw=0.6)
            ax.set_ylabel(METRIC_LABELS[key])
            ax.set_xlim(lo, hi)
            ax.grid(alpha=0.3)
        axes[-1, col].set_xlabel(panel["xlabel"])
        axes[0, col].legend(fontsize=8, title="dotted: all objects", title_fontsize=7)
    fig.suptitle(title)
    return save(fig, path)


def pit_histogram(entries: list[dict], path: Path) -> Path:
    """PIT histograms (flat at 1 when the PDFs are calibrated); ``entries``: label, pit (histogram dict), crps."""
    fig, axes = figure(size=(6.4, 4.4))
    ax = axes[0, 0]
    for e, colour in zip(entries, colours(len(entries))):
        h = e["pit"]
        ax.stairs(
            h["density"],
            h["edges"],
            color=colour,
            lw=1.6,
            label=f"{e['label']}: CRPS {e['crps']:.4f}, KS D {h['ks_stat']:.3f}",
        )
    ax.axhline(1.0, color="k", ls="--", lw=0.8, label="calibrated (uniform)")
    ax.set(
        xlabel=r"PIT = CDF$(z_\mathrm{spec})$",
        ylabel="density",
        xlim=(0, 1),
        ylim=(0, None),
        title="PDF calibration: probability integral transform",
    )
    ax.text(
        0.5,
        0.02,
        "U shape: PDFs too narrow; hump: too broad; slope: biased",
        transform=ax.transAxes,
        ha="center",
        fontsize=8,
        color="0.4",
    )
    ax.legend(fontsize=8, loc="upper center")
    return save(fig, path)


# ----------------------------------------------------------------------------- bootstrap


def bootstrap_deltas(result: dict, samples: dict[str, np.ndarray], path: Path) -> Path:
    """Per metric: the bootstrapped differences (green), shifted by delta to satisfy H0 (red), delta (blue).

    ``result``: the per-metric dicts of ``bootstrap.paired_bootstrap``; ``samples``: delta_b per metric.
    """
    from matplotlib.ticker import MaxNLocator

    keys = list(samples)
    ncols = min(len(keys), 2)
    nrows = -(-len(keys) // ncols)
    fig, axes = figure(nrows, ncols, size=(5.2 * ncols, 3.9 * nrows))
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        r = result[key]
        delta = r["delta"]
        original = samples[key]
        shifted = original - delta
        lo, hi = np.percentile(np.concatenate([original, shifted]), [0.05, 99.95])
        lo, hi = min(lo, delta, -abs(delta)), max(hi, delta)
        bins = np.linspace(lo, hi, 60)
        ax.hist(original, bins=bins, color="tab:green", alpha=0.55, label=r"$\delta_b$ (bootstrap)")
        ax.hist(shifted, bins=bins, color="tab:red", alpha=0.55, label=r"$\delta_b - \delta$ (under $H_0$)")
        ax.axvline(delta, color="tab:blue", lw=1.6, label=rf"$\delta$ = {delta:.3g}")
        name = METRIC_LABELS[key].split(" [")[0].replace("outlier fraction ", "")
        ax.set(
            xlabel=rf"$\delta$ = {name} (base) $-$ {name} (other)",
            ylabel="bootstrap samples",
            title=f"{name}: p = {r['p_value']:.4f}" + ("" if r["gain"] is None else f", gain {100 * r['gain']:+.1f} %"),
        )
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Paired bootstrap, K = {len(next(iter(samples.values())))} resamples "
        f"({result['n']} objects); positive = other is better"
    )
    return save(fig, path)


# ----------------------------------------------------------------------------- dropout scan


def dropout_vs_z(curves: list[dict], z_spec: np.ndarray, path: Path, title: str) -> Path:
    """sigma_MAD against z_spec per dropped modality (paper Fig. 10), ranked by the mean over the bins.

    ``curves``: dicts with label, kind (none | single | multi | reference), binned and mean.
    Single-band drops are grey; the no-drop and reference curves dot-dashed.
    """
    fig, axes = figure(1, 2, size=(12.5, 5.4), width_ratios=(3.2, 1))
    ax, side = axes[0]
    _background_histogram(ax, z_spec, *np.percentile(z_spec, [0.5, 99.5]))
    ranked = sorted(curves, key=lambda c: c["mean"])
    multi = [c for c in ranked if c["kind"] == "multi"]
    palette = dict(zip([c["label"] for c in multi], colours(len(multi))))
    references = iter(["c", "k", "tab:purple", "tab:olive"] * 4)
    mids = [np.asarray(c["binned"]["x_mid"]) for c in ranked]
    step = min((np.diff(m).min() for m in mids if len(m) > 1), default=0.0)
    for i, c in enumerate(ranked):
        if c["kind"] == "single":
            style = {"color": "0.6", "lw": 1.0}
        elif c["kind"] == "none":
            style = {"color": "darkred", "ls": "-.", "lw": 1.8}
        elif c["kind"] == "reference":
            style = {"color": next(references), "ls": "-.", "lw": 1.8}
        else:
            style = {"color": palette[c["label"]], "lw": 1.6}
        x = mids[i] + (i - (len(ranked) - 1) / 2) * 0.015 * step  # slightly apart, as in the paper
        err = c["binned"].get("sigma_mad_err")
        err = None if err is None else [np.nan if v is None else v for v in err]
        ax.errorbar(
            x,
            c["binned"]["sigma_mad"],
            yerr=err,
            marker="o",
            ms=3,
            capsize=2,
            label=f"{c['label']} ({c['mean']:.4f})",
            **style,
        )
        side.plot([i], [c["mean"]], marker="o", ms=6, color=style["color"])
    ax.set(xlabel=ZSPEC_LABEL, ylabel=METRIC_LABELS["sigma_mad"], title=title)
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=7,
        title=r"dropped modality (mean $\sigma_\mathrm{MAD}$), ranked",
        title_fontsize=7,
        loc="upper left",
        ncols=2,
    )
    side.set_xticks(range(len(ranked)), [c["label"] for c in ranked], rotation=90, fontsize=7)
    side.set(ylabel=r"mean $\sigma_\mathrm{MAD}$ over the redshift bins", title="ranking")
    side.grid(alpha=0.3)
    return save(fig, path)


# ----------------------------------------------------------------------------- n(z)


def nz_bands(edges: np.ndarray, curves: dict, table: list[dict], path: Path, by: str) -> Path:
    """The stacked n(z) of each tomographic bin with its 16-84% bootstrap band, the true histogram
    (dashed) where the catalogue has Z_SPEC, and each bin's mean redshift (ticks)."""
    fig, axes = figure(size=(7.2, 4.4))
    ax = axes[0, 0]
    mids = 0.5 * (edges[1:] + edges[:-1])
    top = 0.0
    for row, colour in zip(table, colours(len(table))):
        i = row["bin"]
        nz = curves[f"NZ_{i}"]
        if not np.all(np.isfinite(nz)):
            continue
        label = f"{row['z_min']:g} ≤ {by} < {row['z_max']:g} ({row['objects']})"
        ax.fill_between(mids, curves[f"NZ_{i}_LO"], curves[f"NZ_{i}_HI"], color=colour, alpha=0.3, lw=0)
        ax.plot(mids, nz, color=colour, lw=1.5, label=label)
        if f"NZ_{i}_SPEC" in curves:
            ax.stairs(curves[f"NZ_{i}_SPEC"], edges, color=colour, ls="--", lw=1)
        ax.axvline(row["mean_z"], color=colour, lw=0.8, ymax=0.05)
        top = max(top, float(np.nanmax(nz)), float(np.max(curves.get(f"NZ_{i}_SPEC", 0.0))))
    ax.set(xlabel="redshift z", ylabel="n(z), normalised", ylim=(0, 1.15 * top if top > 0 else None),
           title="stacked PDFs of the tomographic bins (dashed: z_spec histogram)")  # fmt: skip
    drawn = np.stack([curves[k] for k in curves if k.endswith(("_HI", "_SPEC"))])
    used = np.nonzero(np.nanmax(drawn, axis=0) > 1e-3 * top)[0]
    if len(used):
        ax.set_xlim(edges[max(used[0] - 2, 0)], edges[min(used[-1] + 3, len(edges) - 1)])
    ax.legend(fontsize=8)
    return save(fig, path)
