"""``mmz predict``: photo-z catalogues with PDFs, from image tiles or from the project's cubes.

From tiles, the sources are those of a catalogue (``--catalog``) or, by default, every source that
sep detects in the tiles (``detect.py``). The work is split by tile: every source belongs to the
reference-band image that covers it best, and the sources of one tile are cut (the code of ``mmz
cutout``), predicted by every model of the run (PDFs averaged) and saved as one part file in
``<CAT>.parts/``. Once every tile is done the parts are merged, block by block, into
``<CAT>.partial`` and renamed to ``<CAT>``: memory depends on the largest tile, never on the survey,
and a file named ``<CAT>`` is always complete. ``--resume`` keeps the parts already done. Ranks of
``torchrun`` (or ``--shard I/N`` jobs) share the tiles; rank 0 (or a final ``--resume`` run) merges.

From cubes (``--cubes``), the catalogue is the run's out-of-fold prediction of the labelled set:
each object predicted by the models that did not train on it, with Z_SPEC, FOLD and the reference
magnitude attached.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmzcli.errors import ConfigError, InputError
from mmzcli.flags import Flag
from mmzcli.outputs import claim_catalogue, releases_locks, run_files
from mmzcli.runs import Ensemble, resolve_run

BLOCK_ROWS = 256  # sources cut and predicted together


def _rows(ids, ra, dec, pdfs, z_reg, flags, ebv, edges) -> dict[str, np.ndarray]:
    from mmzcli.catalog import summarise_pdfs

    return {
        "ID": ids,
        "RA": ra,
        "DEC": dec,
        **summarise_pdfs(pdfs, edges, ids),
        "Z_REG": z_reg,
        "FLAGS": flags,
        "EBV": ebv,
        "PDF": pdfs,
    }


# ----------------------------------------------------------------------------- from cubes: out of fold


@releases_locks
def predict_cubes(
    project: Path,
    output: Path,
    *,
    run: str | None = None,
    overwrite: bool = False,
    raw: bool = False,
    pdf_dtype: str = "float32",
    console=None,
) -> dict:
    """``mmz predict --cubes``: the run's out-of-fold PDFs of the labelled set as a catalogue; calibrated
    (unless ``raw``) by the PIT map fitted on the other half of them (calibrate.py)."""
    from mmzcli.calibrate import remap_cross_fitted
    from mmzcli.catalog import write_photoz
    from mmzcli.device import resolve_device
    from mmzcli.store import cubes_path, open_store

    project, output = Path(project), Path(output)
    run_dir = resolve_run(project, run)
    _refuse_existing(output, overwrite, {"project store": [cubes_path(project)], "run file": run_files(run_dir)})
    oof = run_dir.read_oof()
    ensemble = Ensemble.load(run_dir, project, resolve_device("cpu"), weights=False, raw=raw)  # for the header
    group = open_store(cubes_path(project))
    ids = group["id"][:]
    order = np.argsort(ids)
    where = order[np.searchsorted(ids, oof["id"], sorter=order)]
    if not np.array_equal(ids[where], oof["id"]):
        raise InputError(
            f"{run_dir.oof_path}: its objects are not those of {cubes_path(project)}; "
            f"the store was rebuilt after training: train the run again"
        )
    edges = ensemble.profile.redshift_grid.edges()
    pdfs = oof["pdf"]
    if ensemble.calibration is not None:
        pdfs = remap_cross_fitted(pdfs, oof["id"], ensemble.calibration)
    columns = _rows(
        oof["id"],
        group["ra"][:][where],
        group["dec"][:][where],
        pdfs,
        oof["z_reg"],
        group["flags"][:][where],
        oof["ebv"],
        edges,
    )
    columns.update(Z_SPEC=oof["z_spec"], FOLD=oof["fold"].astype(np.int16))
    columns[f"MAG_{ensemble.profile.reference_band.upper()}"] = oof["mag_ref"]
    header = ensemble.header("oof")
    header["NMODELS"] = (ensemble.n_models, "models: each object predicted by those of its own fold")
    if ensemble.calibration is not None:
        header["CALIB"] = ("pit-remap, cross-fitted", "each half of the objects by the other's map")
    write_photoz(output, columns, edges, header, pdf_dtype)
    if console is not None:
        console.print(f"{len(oof['id'])} out-of-fold objects of run {run_dir.name} -> {output}")
    return {"rows": len(oof["id"]), "output": str(output)}


def _refuse_existing(
    output: Path, overwrite: bool, inputs: dict, *, lock: bool = True, shard: tuple[int, int] | None = None
) -> None:
    """Refuse an output that is an input, is being written or is not an mmz catalogue; lock it (outputs.py)."""
    if not output.parent.is_dir():
        raise ConfigError(
            f"-o {output}: no such directory {output.parent} for the output catalogue; create it "
            f"or choose another output name"
        )
    claim_catalogue(output, inputs, overwrite, lock=lock, shard=shard)


# ----------------------------------------------------------------------------- from tiles


@dataclass(frozen=True)
class PredictOptions:
    """What ``mmz predict TILE...`` is asked for, beside the tiles and the output catalogue."""

    project: Path = Path(".")
    run: str | None = None  # name or directory; None: the project's latest trained run
    catalog: Path | None = None  # the sources; None: detect them in the tiles
    ebv: str | None = None  # a column of the catalogue or one value
    columns: dict[str, str] = field(default_factory=dict)  # id/ra/dec column names of the catalogue
    jobs: int = 1
    batch_size: int = 64
    device: str = "auto"
    amp: bool | None = None  # bf16 autocast; None: where the device runs it fast
    resume: bool = False
    overwrite: bool = False
    keep_going: bool = False
    allow_missing_bands: bool = False
    shard: str | None = None  # "I/N"
    raw: bool = False  # leave out the run's calibration
    pdf_dtype: str = "float32"  # or int16 (catalog.PDF_DTYPES)

    @property
    def detect(self) -> bool:
        return self.catalog is None


@dataclass
class Sources:
    """The sources of a catalogue: ids, positions, E(B-V) and the flag saying it was defaulted."""

    ids: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    ebv: np.ndarray
    ebv_flags: np.ndarray


@dataclass(frozen=True)
class WorkUnit:
    """One reference-band image and its sources: the catalogue rows it covers best, or (rows None) its detections."""

    name: str  # of its part file
    number: int  # tile number: detected sources get ids number * 10^6 + 1, 2, ...
    reference: int  # index of the reference-band image
    rows: np.ndarray | None = None


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text}: expected I/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise ConfigError(f"--shard {text}: I must be in 0..N-1")
    return index, count


def _index(paths: list[Path], profile: Any, keep_going: bool, skipped: list[str]) -> list:
    """TileImages of every readable tile; unreadable ones raise, or are listed in ``skipped``."""
    from mmzcli.tiles import index_tiles

    images = []
    for path in paths:
        try:
            images.extend(index_tiles([path], profile))
        except InputError as exc:
            if not keep_going:
                raise
            skipped.append(str(exc))
    return images


def _ebv_for(spec: str | None, column: np.ndarray | None, n: int, median: float) -> tuple[np.ndarray, np.ndarray]:
    """E(B-V) per source and the EBV_DEFAULT flag: --ebv VALUE, else the catalogue's column, else ``median``."""
    if spec is not None and _is_number(spec):
        if not 0 <= float(spec) < 10:
            raise ConfigError(f"--ebv {spec}: not a plausible E(B-V) in magnitudes")
        return np.full(n, float(spec), np.float32), np.zeros(n, np.int32)
    if column is None:
        return np.full(n, median, np.float32), np.full(n, int(Flag.EBV_DEFAULT), np.int32)
    ebv = np.asarray(column, dtype=np.float64)
    missing = ~np.isfinite(ebv) | (ebv < 0)
    return (
        np.where(missing, median, ebv).astype(np.float32),
        np.where(missing, int(Flag.EBV_DEFAULT), 0).astype(np.int32),
    )


def _read_sources(catalog: Path, columns: dict[str, str], ebv_spec: str | None, median: float) -> Sources:
    from mmzcli.catalog import read_table

    column = None if ebv_spec is not None and _is_number(ebv_spec) else (ebv_spec or "EBV")
    table = read_table(catalog, columns, optional={"ebv": column} if column else {})
    if ebv_spec is not None and column is not None and "ebv" not in table:
        raise InputError(f"{catalog}: no column '{ebv_spec}' for --ebv; name an E(B-V) column or give a value")
    ebv, flags = _ebv_for(ebv_spec, table.get("ebv"), len(table["id"]), median)
    return Sources(table["id"], table["ra"], table["dec"], ebv, flags)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@releases_locks
def predict_tiles(tiles: list[Path], output: Path, options: PredictOptions, console: Any = None) -> dict:
    """``mmz predict TILE... -o CAT``: see the module docstring."""
    from mmzcli.device import fast_bf16, resolve_device, torchrun_rank
    from mmzcli.progress import progress_bar
    from mmzcli.store import inputs_key
    from mmzcli.tiles import expand_tiles

    output, o = Path(output), options
    shard = parse_shard(o.shard)
    rank, world = torchrun_rank()
    torchrun = world > 1
    if not torchrun and shard is not None:
        rank, world = shard
    run = resolve_run(o.project, o.run)
    paths = expand_tiles(tiles)
    # torchrun: rank 0 locks the catalogue for every rank; --shard jobs lock their own shard
    _refuse_existing(
        output,
        o.overwrite,
        {"tile": paths, "catalogue": [o.catalog], "run file": run_files(run)},
        lock=rank == 0 or not torchrun,
        shard=None if torchrun else shard,
    )
    device = resolve_device(o.device)
    o = replace(o, amp=fast_bf16(device.type) if o.amp is None else o.amp)
    ensemble = Ensemble.load(run, Path(o.project), device, raw=o.raw)
    profile = ensemble.profile
    skipped: list[str] = []
    images = _index(paths, profile, o.keep_going, skipped)
    present = {image.band for image in images}
    absent = [b for b in profile.band_names if b not in present]
    if absent and not o.allow_missing_bands:
        raise InputError(
            f"the tiles hold no image in band(s) {', '.join(absent)} of run "
            f"{ensemble.run_dir.name} (profile {profile.name}: {', '.join(profile.band_names)}); "
            f"give those tiles, or --allow-missing-bands to predict without them"
        )
    references = [i for i, image in enumerate(images) if image.band == profile.reference_band]
    if not references:
        raise InputError(
            f"no tile of the reference band {profile.reference_band}: it defines the tiles the work is split by"
        )
    sources = None
    if o.catalog is not None:
        names = {"id": "ID", "ra": "RA", "dec": "DEC", **o.columns}
        sources = _read_sources(Path(o.catalog), names, o.ebv, ensemble.ebv_median)
    elif o.ebv is not None and not _is_number(o.ebv):
        raise ConfigError(
            f"--ebv {o.ebv}: with no --catalog the sources are detected and have no E(B-V) column; give a value"
        )

    parts = output.with_name(output.name + ".parts")
    calibration = None if ensemble.calibration is None else ensemble.calibration["pit_map"]
    key = inputs_key(
        "predict", images, o.catalog, ensemble.run_hash, calibration, o.detect, o.ebv, o.columns, o.allow_missing_bands
    )
    if torchrun:
        import torch.distributed as dist

        dist.init_process_group("gloo")  # (CPU) barriers only: the ranks share nothing but the parts folder
    if rank == 0 or not torchrun:  # --shard jobs run apart: each keeps what the others did
        _open_parts(parts, key, o.resume or shard is not None)
    if torchrun:
        dist.barrier()
    units = _units(images, references, sources, profile)
    predictor = _TilePredictor(images, ensemble, device, o, parts)
    mine = [u for u in units[rank::world] if not predictor.part(u).exists()]
    started, predicted = time.perf_counter(), 0
    with progress_bar(console) as bar:
        task = bar.add_task(
            f"predicting {len(units)} tiles" + (f" (shard {rank}/{world})" if world > 1 else ""),
            total=len(units[rank::world]),
            completed=len(units[rank::world]) - len(mine),
        )
        for unit in mine:
            try:
                columns = predictor.compute(unit, sources)
            except (OSError, ValueError, InputError) as exc:  # an input: a tile whose pixels cannot be read
                message = str(exc) if isinstance(exc, InputError) else f"{images[unit.reference].path}: {exc}"
                if not o.keep_going:
                    raise InputError(message) from None
                predictor.skip_note(unit).write_text(message)
            else:  # writing is the output's business: its errors are never blamed on the tile
                predictor.save(unit, columns)
                predictor.skip_note(unit).unlink(missing_ok=True)  # failed before, fine now
                predicted += len(columns["ID"])
            bar.advance(task)
    seconds = time.perf_counter() - started
    summary = {
        "tiles": len(units),
        "predicted_now": predicted,
        "seconds": seconds,
        "skipped": skipped,
        "models": ensemble.n_models,
        "detected": o.detect,
        "detection_bands": profile.detection_bands,
    }
    if torchrun:
        dist.barrier()
        dist.destroy_process_group()
    if rank != 0 or (world > 1 and not torchrun):
        if console is not None:
            console.print(
                f"shard {rank}/{world}: {predicted} sources in {seconds:.0f} s -> {parts}; "
                f"merge with the same command without --shard and with --resume"
            )
        return summary
    pending = [u.name for u in units if not predictor.part(u).exists() and not predictor.skip_note(u).exists()]
    if pending:
        raise InputError(
            f"{parts}: {len(pending)} tile(s) not predicted yet (e.g. {pending[0]}); "
            f"run the missing shards, then merge with --resume"
        )
    skipped += [predictor.skip_note(u).read_text() for u in units if predictor.skip_note(u).exists()]
    summary["rows"] = _merge(parts, units, output, ensemble, o.detect, skipped, o.pdf_dtype)
    if console is not None:
        _print_summary(console, summary, output)
    return summary


def _open_parts(parts: Path, key: str, keep: bool) -> None:
    """The folder of finished tiles: kept (if from the same inputs) for --resume and shards, else emptied."""
    from mmzcli.atomic import atomic_write_text

    state = parts / "state.json"
    if keep and state.exists():
        if json.loads(state.read_text()).get("key") != key:
            raise InputError(
                f"{parts}: an unfinished prediction from other inputs or another run is there; "
                f"run without --resume/--shard to start afresh"
            )
        return
    if parts.exists() and not keep:
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_text(state, json.dumps({"key": key}))


def _units(images: list, references: list[int], sources: Sources | None, profile: Any) -> list[WorkUnit]:
    """One unit of work per reference-band image, with the catalogue rows it holds (best coverage)."""
    from mmzcli.tiles import assign_images

    names = [f"tile{number:05d}-{Path(images[k].path).stem}" for number, k in enumerate(references)]
    if sources is None:
        return [WorkUnit(name, number, k) for number, (name, k) in enumerate(zip(names, references))]
    owner = assign_images([images[k] for k in references], sources.ra, sources.dec, [profile.reference_band])[:, 0]
    units = [
        WorkUnit(name, number, k, np.flatnonzero(owner == number))
        for number, (name, k) in enumerate(zip(names, references))
    ]
    uncovered = np.flatnonzero(owner < 0)
    if uncovered.size:  # off every reference tile: predicted with what other bands hold, never dropped
        units.append(WorkUnit("no-reference-tile", len(units), references[0], uncovered))
    return units


class _TilePredictor:
    """Cuts, predicts and saves the sources of one work unit as ``parts/<name>.npz``."""

    def __init__(self, images: list, ensemble: Ensemble, device: Any, options: PredictOptions, parts: Path):
        self.images, self.ensemble, self.device, self.options, self.parts = images, ensemble, device, options, parts

    def part(self, unit: WorkUnit) -> Path:
        return self.parts / f"{unit.name}.npz"

    def skip_note(self, unit: WorkUnit) -> Path:
        return self.parts / f"{unit.name}.skipped"

    def compute(self, unit: WorkUnit, sources: Sources | None) -> dict[str, np.ndarray]:
        """The catalogue rows of every source of ``unit`` (reads the tiles, writes nothing)."""
        from mmzcli.cutout import BlockTask, cut_blocks
        from mmzcli.tiles import assign_images, tile_pixels

        profile, o = self.ensemble.profile, self.options
        extra = {}
        if sources is None:
            from mmzcli.detect import detect

            reference = self.images[unit.reference]
            wanted = set(profile.detection_bands)
            found = detect(reference, [image for image in self.images if image.band in wanted])
            n = len(found["ra"])
            ids = unit.number * 1_000_000 + np.arange(1, n + 1, dtype=np.int64)
            ra, dec = found["ra"], found["dec"]
            ebv_values, flags0 = _ebv_for(o.ebv, None, n, self.ensemble.ebv_median)
            extra = {
                "X": (found["x"] + 1).astype(np.float32),
                "Y": (found["y"] + 1).astype(np.float32),
                "TILE": np.full(n, Path(reference.path).name[:64], dtype="S64"),
            }
        else:
            rows = unit.rows
            assert rows is not None  # a unit of catalogue sources has its rows
            ids, ra, dec = sources.ids[rows], sources.ra[rows], sources.dec[rows]
            ebv_values, flags0 = sources.ebv[rows], sources.ebv_flags[rows]
            n = len(rows)
        pdfs = np.zeros((n, profile.redshift_grid.n_bins), np.float32)
        z_reg = np.full(n, np.nan, np.float32)
        flags = flags0.copy()
        if n:
            assignment = assign_images(self.images, ra, dec, profile.band_names)

            def record(start: int, block: tuple) -> None:
                stamps, band_ok, block_flags = block
                stop = start + len(stamps)
                flags[start:stop] |= block_flags
                has_data = band_ok.any(axis=1)
                if has_data.any():
                    p, r = self.ensemble.predict(
                        stamps[has_data],
                        band_ok[has_data],
                        ebv_values[start:stop][has_data],
                        self.device,
                        o.batch_size,
                        bool(o.amp),
                    )
                    pdfs[start:stop][has_data], z_reg[start:stop][has_data] = p, r

            tasks = (
                BlockTask(
                    s,
                    assignment[s : s + BLOCK_ROWS],
                    ra[s : s + BLOCK_ROWS],
                    dec[s : s + BLOCK_ROWS],
                    profile.cutout_size,
                    profile.pixel_scale,
                )
                for s in range(0, n, BLOCK_ROWS)
            )
            cut_blocks(self.images, tasks, o.jobs if n > BLOCK_ROWS else 1, record)
        tile_pixels.cache_clear()  # unmap this tile's images: memory must not grow with the survey
        columns = _rows(ids, ra, dec, pdfs, z_reg, flags, ebv_values, profile.redshift_grid.edges())
        columns.update(extra)
        return columns

    def save(self, unit: WorkUnit, columns: dict[str, np.ndarray]) -> None:
        from mmzcli.atomic import atomic_path

        with atomic_path(self.part(unit)) as tmp:
            np.savez(tmp, allow_pickle=True, **columns)  # numpy's default, named so that no column is taken for it


def _merge(
    parts: Path,
    units: list[WorkUnit],
    output: Path,
    ensemble: Ensemble,
    detect: bool,
    skipped: list[str],
    pdf_dtype: str = "float32",
) -> int:
    """Append the parts, in tile order, to ``<output>.partial``; rename when complete; remove the parts."""
    from mmzcli.catalog import PhotozWriter

    header = ensemble.header("tiles")
    header["NSKIPPED"] = (len(skipped), "tiles skipped (--keep-going): see SKIPnnnn")
    for i, line in enumerate(skipped[:999], 1):
        header[f"SKIP{i:04d}"] = line  # long strings continue (CONTINUE convention)
    extra = {"X": np.dtype("f4"), "Y": np.dtype("f4"), "TILE": np.dtype("S64")} if detect else {}
    writer = PhotozWriter(output, ensemble.profile.redshift_grid.edges(), header, extra, pdf_dtype)
    try:
        for unit in units:
            path = parts / f"{unit.name}.npz"
            if not path.exists():
                if (parts / f"{unit.name}.skipped").exists():
                    continue
                raise InputError(
                    f"{path}: the part of tile {unit.name} is gone while merging (another process "
                    f"changed {parts}?); run the same command with --resume"
                )
            with np.load(path) as part:
                writer.append({k: part[k] for k in part.files})
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    shutil.rmtree(parts)
    return writer.rows


def _print_summary(console: Any, summary: dict, output: Path) -> None:
    from rich.table import Table

    table = Table(title=f"mmz predict -> {output}", show_header=False)
    table.add_row("tiles", str(summary["tiles"]))
    if summary["detected"]:
        table.add_row("sources", f"detected with sep in bands {' '.join(summary['detection_bands'])}")
    table.add_row("sources in the catalogue", str(summary["rows"]))
    table.add_row("models averaged", str(summary["models"]))
    if summary["predicted_now"]:
        table.add_row("sources / s", f"{summary['predicted_now'] / max(summary['seconds'], 1e-9):,.0f}")
    table.add_row("tiles skipped", str(len(summary["skipped"])))
    console.print(table)
    for line in summary["skipped"]:
        console.print(f"[yellow]skipped:[/] {line}")
