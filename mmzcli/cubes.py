"""``mmz build-cubes``: image tiles + a spectroscopic catalogue -> ``<project>/cubes.zarr``.

Every catalogue row becomes one row of the store (nothing is dropped): rows
without a usable redshift keep their cubes with ``z_spec`` NaN or a flag, and
are counted.  Each object gets a cross-validation fold from a hash of its id,
so folds do not change when the catalogue is reordered or extended.  The
normalisation statistics (mean and standard deviation of the compressed pixels
of each band) come from the labelled objects that have data in that band.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import numpy as np

from mmzcli.errors import InputError
from mmzcli.flags import Flag
from mmzcli.outputs import claim_store, releases_locks

N_FOLDS = 5


INNER_VALIDATION = 8  # 1 in 8 of a fold's training objects select its epoch and stop it (never the held-out fold)


def _bucket(ids: np.ndarray, n: int, stream: int) -> np.ndarray:
    """A deterministic, well-mixed number 0..n-1 per id: the splitmix64 finaliser of (id + (stream+1) x golden)."""
    with np.errstate(over="ignore"):  # modulo 2^64, as splitmix64 means it
        z = ids.astype(np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(stream + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(n)).astype(np.int8)


def fold_of(ids: np.ndarray, n_folds: int = N_FOLDS) -> np.ndarray:
    """The cross-validation fold of each id: stable when the catalogue is reordered or extended."""
    return _bucket(ids, n_folds, stream=0)


def inner_validation(ids: np.ndarray) -> np.ndarray:
    """Whether each id belongs to the inner validation set of the training folds (1 in INNER_VALIDATION).

    A hash of its own (another splitmix64 stream than ``fold_of``), so it is independent of the fold.
    """
    return _bucket(ids, INNER_VALIDATION, stream=1) == 0


def training_subset(ids: np.ndarray, fraction: float) -> np.ndarray:
    """Whether each id is among the ``fraction`` (to a percent) of objects trained on, for learning curves in
    training-set size: a third hash stream, so the subsets are nested (the 25% lie in the 50%) and
    independent of fold and inner validation."""
    return _bucket(ids, 100, stream=2) < round(100 * fraction)


def normalisation(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation of compressed pixels from (count, sum, sum of squares) [3, B].

    A band without pixels gets (0, 1), so it passes through unchanged.
    """
    count, total, total_sq = sums
    empty = count == 0
    mean = np.where(empty, 0.0, total / np.maximum(count, 1))
    std = np.where(empty, 1.0, np.sqrt(np.maximum(total_sq / np.maximum(count, 1) - mean**2, 0.0)))
    std = np.where(std > 0, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def _resolve_inputs(
    project: Path, profile, tiles: str | None, catalog: Path | None, columns: dict[str, str], config: dict | None
):
    """Tiles, catalogue and column names: the command line wins over mmz.yaml, which wins over defaults."""
    from mmzcli.project import CONFIG_NAME, DEFAULT_COLUMNS

    inputs = (config or {}).get("inputs", {})
    if tiles is None and "tiles" not in inputs:
        raise InputError(
            f"no tiles given: pass --tiles 'GLOB' or name them under inputs.tiles in {project / CONFIG_NAME}"
        )
    if catalog is None and "catalog" not in inputs:
        raise InputError(
            f"no spectroscopic catalogue given: pass --catalog FILE or name it under "
            f"inputs.catalog in {project / CONFIG_NAME}"
        )
    tile_pattern, tile_base = (tiles, None) if tiles is not None else (inputs["tiles"], project)
    catalog_path = Path(catalog) if catalog is not None else project / inputs["catalog"]
    names = {**DEFAULT_COLUMNS, "mag_ref": f"MAG_{profile.reference_band}", **inputs.get("columns", {}), **columns}
    return tile_pattern, tile_base, catalog_path, names


def _labels(path: Path, table: dict[str, np.ndarray], names: dict[str, str], grid):
    """Redshift columns checked: returns (z_spec f4, ebv f4, mag f4, labelled mask, flags, counts)."""
    z = np.asarray(table["z_spec"], dtype=np.float64)
    ebv = np.asarray(table["ebv"], dtype=np.float64)
    bad_ebv = ~np.isfinite(ebv) | (ebv < 0)
    if bad_ebv.any():
        row = int(np.flatnonzero(bad_ebv)[0])
        raise InputError(
            f"{path}: row {row}: {names['ebv']} = {ebv[row]} is not a valid E(B-V) "
            f"({int(bad_ebv.sum())} such rows); fill it from a dust map (e.g. SFD)"
        )
    no_z = ~np.isfinite(z) | (z < 0)
    out_of_grid = ~no_z & ((z < grid.z_min) | (z >= grid.z_max))
    flags = np.where(no_z, int(Flag.NO_ZSPEC), 0) | np.where(out_of_grid, int(Flag.ZSPEC_OUT_OF_GRID), 0)
    z = np.where(no_z, np.nan, z)
    counts = {"no_zspec": int(no_z.sum()), "zspec_out_of_grid": int(out_of_grid.sum())}
    return (
        z.astype(np.float32),
        ebv.astype(np.float32),
        np.asarray(table["mag_ref"], dtype=np.float32),
        ~no_z & ~out_of_grid,
        flags.astype(np.int32),
        counts,
    )


@releases_locks
def build_cubes(
    project: Path,
    *,
    survey: str | None = None,
    tiles: str | None = None,
    catalog: Path | None = None,
    columns: dict[str, str] | None = None,
    jobs: int = 1,
    overwrite: bool = False,
    console=None,
) -> dict:
    """Build (or resume, or leave alone when complete) the project's cube store. Returns a summary."""
    from mmzcli import store
    from mmzcli.catalog import read_table
    from mmzcli.cutout import cut_to_store, summary_table
    from mmzcli.project import project_profile, read_config, write_config
    from mmzcli.tiles import expand_tiles, index_tiles

    project = Path(project)
    profile = project_profile(project, survey)
    config = read_config(project)
    path = store.cubes_path(project)
    claim_store(path, "cubes", {}, label="output store")  # one writer; never replaces what mmz did not write
    complete = store.is_complete(path) and not overwrite
    explicit = tiles is not None or catalog is not None or bool(columns)
    if complete:
        store.open_store(path)  # a listing: a damaged store is named, not left alone
    if complete and not explicit:
        if console is not None:
            console.print(f"{path} is complete; nothing to do (--overwrite rebuilds it)")
        return {"built": False}
    tile_pattern, tile_base, catalog_path, names = _resolve_inputs(
        project, profile, tiles, catalog, columns or {}, config
    )
    catalog_path = catalog_path.resolve()  # resolved paths: the same build, however its paths are spelled

    def images_and_key():
        images = index_tiles([p.resolve() for p in expand_tiles([tile_pattern], tile_base)], profile)
        return images, store.inputs_key("cubes", images, catalog_path, names, profile.to_dict())

    if complete:  # explicit inputs: they must be those the store was built from
        _refuse_other_inputs(path, images_and_key()[1], catalog_path, names)
        if console is not None:
            console.print(f"{path} is complete and built from these inputs; nothing to do (--overwrite rebuilds it)")
        return {"built": False}
    table = read_table(catalog_path, names)
    z_spec, ebv, mag, labelled, z_flags, counts = _labels(catalog_path, table, names, profile.redshift_grid)
    images, key = images_and_key()
    columns_out = {
        "id": table["id"],
        "ra": table["ra"],
        "dec": table["dec"],
        "ebv": ebv,
        "z_spec": z_spec,
        "mag_ref": mag,
        "fold": fold_of(table["id"]),
    }
    norm_groups = np.where(labelled, columns_out["fold"], -1)  # per fold: training normalises without its held-out fold
    size = profile.cutout_size
    group, summary = cut_to_store(
        path,
        images,
        profile,
        columns_out,
        image_name="cubes",
        size=size,
        key=key,
        jobs=jobs,
        overwrite=overwrite,
        norm_groups=norm_groups,
        n_norm_groups=N_FOLDS,
        console=console,
        attrs={
            "profile_snapshot": profile.to_dict(),
            "n_folds": N_FOLDS,
            "catalog": str(catalog_path),
            "columns": names,
        },
    )
    with store.writing(store.partial_path(path)):
        store.write_array(group, "flags", store.read_array(group, "flags") | z_flags)
    fold_sums = summary.pop("norm_sums")  # [fold, (count, sum, sum of squares), band]
    all_folds = fold_sums.sum(axis=0)
    mean, std = normalisation(all_folds)
    empty = all_folds[0] == 0
    store.finish(
        group,
        path,
        {"norm/mean": mean, "norm/std": std, "norm/fold_sums": fold_sums},
        attrs={"n_labelled": int(labelled.sum()), **counts},
    )

    if config is None or tiles is not None or catalog is not None or columns:
        write_config(
            project,
            profile,
            tiles=tile_pattern if tile_base is not None else str(Path(tile_pattern).absolute()),
            catalog=os.path.relpath(catalog_path.absolute(), project.absolute()),
            columns=names,
        )
    summary.update(
        counts,
        built=True,
        labelled=int(labelled.sum()),
        empty_bands=[b for b, e in zip(profile.band_names, empty) if e],
    )
    if console is not None:
        table_out = summary_table(summary, f"mmz build-cubes -> {path}")
        table_out.add_row("labelled (usable z_spec)", str(summary["labelled"]))
        table_out.add_row("no usable z_spec", str(counts["no_zspec"]))
        table_out.add_row("z_spec outside the grid", str(counts["zspec_out_of_grid"]))
        console.print(table_out)
        if summary["empty_bands"]:
            console.print(
                f"[yellow]warning:[/] no labelled object has data in band(s) "
                f"{', '.join(summary['empty_bands'])}: their normalisation is (0, 1)"
            )
    return summary


def _refuse_other_inputs(path: Path, key: str, catalog: Path, names: dict[str, str]) -> None:
    """Refuse explicit inputs that differ from those a complete store was built from (never rebuild silently)."""
    import zarr

    attrs = zarr.open_group(str(path), mode="r").attrs
    if attrs.get("inputs_key") == key:
        return
    if attrs.get("catalog") is not None and not _same_file(cast(str, attrs["catalog"]), catalog):
        what = f"catalogue {attrs['catalog']}, not {catalog}"
    elif attrs.get("columns") not in (None, names):
        was = cast(Mapping[str, str], attrs["columns"])
        what = "columns " + ", ".join(
            f"{k} = {names.get(k)}, not {was.get(k)}" for k in sorted({*was, *names}) if names.get(k) != was.get(k)
        )
    else:
        what = "other tiles, other file contents or another profile"
    raise InputError(
        f"{path}: this complete store was built from other inputs ({what}); pass --overwrite to "
        f"rebuild it from these, or leave out --tiles/--catalog/column options to keep it"
    )


def _same_file(recorded: str, catalog: Path) -> bool:
    try:
        return os.path.samefile(recorded, catalog)
    except OSError:  # gone, or a relative path recorded by an older mmz
        return recorded == str(catalog)


def verify_cubes(project: Path, console=None) -> dict:
    """``mmz build-cubes --verify``: every chunk readable, every block done, labels and normalisation sound.

    Raises InputError at the first problem; returns the counts it printed.
    """
    from mmzcli import store

    path = store.cubes_path(project)
    group, report = store.verify_store(path, console=console)
    flags, z = store.read_array(group, "flags"), store.read_array(group, "z_spec")
    labelled = (flags & (Flag.NO_ZSPEC | Flag.ZSPEC_OUT_OF_GRID)) == 0
    unlabelled_z = labelled & ~np.isfinite(z)
    if unlabelled_z.any():
        row = int(np.flatnonzero(unlabelled_z)[0])
        raise InputError(
            f"{path}: row {row}: z_spec is {z[row]} but the row is not flagged NO_ZSPEC "
            f"({int(unlabelled_z.sum())} such rows): the store is damaged; {store.rebuild_hint(path)}"
        )
    if group.attrs.get("n_labelled", int(labelled.sum())) != int(labelled.sum()):
        raise InputError(
            f"{path}: {int(labelled.sum())} rows are labelled but {group.attrs['n_labelled']} were "
            f"when it was built: the store is damaged; {store.rebuild_hint(path)}"
        )
    for name in ("norm/mean", "norm/std"):
        values = store.read_array(group, name)
        if (
            values.shape != (len(group.attrs["bands"]),)
            or not np.isfinite(values).all()
            or (name == "norm/std" and (values <= 0).any())
        ):
            raise InputError(
                f"{path}: array '{name}' is {values.tolist()}, not one finite"
                f"{' positive' if name == 'norm/std' else ''} value per band: the store is damaged; "
                f"{store.rebuild_hint(path)}"
            )
    report.update(rows=len(flags), labelled=int(labelled.sum()))
    if console is not None:
        size = report["bytes"] / 2**20
        console.print(
            f"{path}: OK: {report['arrays']} arrays, {report['chunks']} chunks read ({size:.1f} MiB), "
            f"{report.get('blocks', 0)} blocks done, {report['rows']} rows of which "
            f"{report['labelled']} labelled, normalisation finite"
        )
        if report["schema_version"] < 2:
            console.print(
                f"[yellow]note:[/] written by an older mmz that did not store chunks equal to the fill "
                f"value ({report['not_stored']} not stored), so a lost chunk cannot be told from an "
                f"empty one; `mmz build-cubes --overwrite` rebuilds it in the checkable form"
            )
    return report
