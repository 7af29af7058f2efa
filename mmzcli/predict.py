"""``mmz predict``: photo-z catalogues with PDFs, from image tiles or from the project's cubes.

From tiles, the work is split by tile: every source belongs to the reference-band
image that covers it best, and the sources of one tile are cut (the code of
``mmz cutout``), predicted by every model of the run (PDFs averaged) and saved
as one part file in ``<CAT>.parts/``.  Once every tile is done the parts are
merged, block by block, into ``<CAT>.partial`` and renamed to ``<CAT>``: memory
depends on the largest tile, never on the survey, and a file named ``<CAT>`` is
always complete.  ``--resume`` keeps the parts already done.  Ranks of
``torchrun`` (or ``--shard I/N`` jobs) share the tiles; rank 0 (or a final
``--resume`` run) merges.

From cubes (``--cubes``), the catalogue is the run's out-of-fold prediction of the
labelled set: each object predicted by the models that did not train on it,
with Z_SPEC, FOLD and the reference magnitude attached.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmzcli.errors import ConfigError, InputError

BLOCK_ROWS = 256  # sources cut and predicted together


# ----------------------------------------------------------------------------- the run's models

def resolve_run(project: Path, run: str | None) -> Path:
    """The run directory: ``run`` as a path or a name under PROJECT/runs, by default the latest trained one."""
    runs = Path(project) / "runs"
    if run is not None:
        for candidate in (Path(run), runs / run):
            if (candidate / "config.yaml").exists():
                return candidate
        known = sorted(p.name for p in runs.glob("*") if (p / "config.yaml").exists())
        raise InputError(f"no run '{run}' in {runs} (runs: {', '.join(known) or 'none'})")
    trained = [p for p in runs.glob("*") if list(p.glob("fold*_seed*.pt"))]
    if not trained:
        raise InputError(f"no trained run in {runs}; train one with mmz train (or name it with --run)")
    return max(trained, key=lambda p: max(f.stat().st_mtime for f in p.glob("fold*_seed*.pt")))


@dataclass
class Ensemble:
    """Every finished model of a run (folds x seeds); their PDFs are averaged."""

    run_dir: Path
    profile: object
    models: list  # empty where loaded for the header only
    n_models: int
    config: object  # ModelConfig
    run_hash: str
    ebv_median: float  # of the training sample: the value used where a source has none

    @classmethod
    def load(cls, run_dir: Path, project: Path, device, weights: bool = True) -> Ensemble:
        import yaml

        from mmzcli.model import ModelConfig, PhotoZNet
        from mmzcli.profiles import profile_from_dict
        from mmzcli.project import project_profile
        from mmzcli.train import load_checkpoint

        paths = sorted(run_dir.glob("fold*_seed*.pt"))
        if not paths:
            raise InputError(f"{run_dir}: no finished model (fold*_seed*.pt) yet; let mmz train finish a fold")
        snapshot = run_dir / "profile.yaml"
        profile = (profile_from_dict(yaml.safe_load(snapshot.read_text()), source=str(snapshot))
                   if snapshot.exists() else project_profile(project, None))
        digest = hashlib.sha256()
        models, config = [], None
        for path in paths:
            data = path.read_bytes()  # read once: hashed for RUNHASH, then loaded
            digest.update(data)
            checkpoint = load_checkpoint(io.BytesIO(data))
            config = ModelConfig.from_dict(checkpoint["config"])
            if weights:
                model = PhotoZNet(config)
                model.load_state_dict(checkpoint["model"])
                models.append(model.to(device).eval())
        if list(config.bands) != profile.band_names:
            raise InputError(f"{run_dir}: its models take bands {', '.join(config.bands)} but its profile "
                             f"{profile.name} has {', '.join(profile.band_names)}")
        oof = run_dir / "oof.npz"
        ebv_median = float(np.median(np.load(oof)["ebv"])) if oof.exists() else 0.0
        return cls(run_dir, profile, models, len(paths), config, digest.hexdigest()[:16], ebv_median)

    def header(self, kind: str) -> dict:
        """Provenance keywords of the catalogue (design.md section 6)."""
        from mmzcli import __version__

        grid, cfg = self.profile.redshift_grid, self.config
        modalities = " ".join("".join(m) if all(len(b) == 1 for b in m) else "_".join(m) for m in cfg.modalities)
        return {"MMZVERS": (__version__, "mmz version"), "CATKIND": (kind, "tiles: survey sources; oof: out-of-fold"),
                "PROFILE": (self.profile.name, "survey profile"), "RUN": (self.run_dir.name, "training run"),
                "RUNHASH": (self.run_hash, "sha256 of the run's checkpoints, first 16 hex"),
                "NMODELS": (self.n_models, "models averaged (folds x seeds)"),
                "FUSION": (cfg.fusion, "fusion stage"), "FUSTYPE": (cfg.fusion_type, "fusion type"),
                "MODALITY": (modalities, "band groups processed in parallel"),
                "WIDTH": (cfg.width, "channel-width multiplier"),
                "NBINS": (grid.n_bins, "redshift bins of the PDF"), "ZMIN": (grid.z_min, "lower edge of the grid"),
                "ZMAX": (grid.z_max, "upper edge of the grid"),
                "OUTLTHR": (self.profile.outlier_threshold, "|dz|/(1+z) outlier threshold of the survey"),
                "REFBAND": (self.profile.reference_band, "reference band (magnitude limit)")}

    def predict(self, cubes: np.ndarray, band_ok: np.ndarray, ebv: np.ndarray, device, batch_size: int,
                amp: bool) -> tuple[np.ndarray, np.ndarray]:
        """Mean PDF and mean regression estimate of all models; the head runs in float32."""
        import torch

        from mmzcli.train import _autocast

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
                    with _autocast(device, amp):
                        latent = model.forward_features(x, e, ok)
                    logits, reg = model.forward_head(latent.float())
                    pdfs[part] += torch.softmax(logits.float(), -1).double().cpu().numpy()
                    z_reg[part] += reg.double().cpu().numpy()
        pdfs /= len(self.models)
        pdfs /= pdfs.sum(axis=1, keepdims=True)
        return pdfs.astype(np.float32), (z_reg / len(self.models)).astype(np.float32)


def _rows(ids, ra, dec, pdfs, z_reg, flags, ebv, edges) -> dict[str, np.ndarray]:
    from mmzcli.catalog import summarise_pdfs

    return {"ID": ids, "RA": ra, "DEC": dec, **summarise_pdfs(pdfs, edges), "Z_REG": z_reg, "FLAGS": flags,
            "EBV": ebv, "PDF": pdfs}


# ----------------------------------------------------------------------------- from cubes: out of fold

def predict_cubes(project: Path, output: Path, *, run: str | None = None, overwrite: bool = False,
                  console=None) -> dict:
    """``mmz predict --cubes``: the run's out-of-fold PDFs of the labelled set as a catalogue."""
    from mmzcli.catalog import write_photoz
    from mmzcli.store import open_store
    from mmzcli.train import resolve_device

    project, output = Path(project), Path(output)
    _refuse_existing(output, overwrite)
    run_dir = resolve_run(project, run)
    oof_path = run_dir / "oof.npz"
    if not oof_path.exists():
        raise InputError(f"{run_dir}: no out-of-fold predictions (oof.npz) yet; they are written when "
                         f"mmz train finishes")
    ensemble = Ensemble.load(run_dir, project, resolve_device("cpu"), weights=False)  # for the header
    oof = dict(np.load(oof_path))
    group = open_store(project / "cubes.zarr")
    ids = group["id"][:]
    order = np.argsort(ids)
    where = order[np.searchsorted(ids, oof["id"], sorter=order)]
    if not np.array_equal(ids[where], oof["id"]):
        raise InputError(f"{oof_path}: its objects are not those of {project / 'cubes.zarr'}; "
                         f"the store was rebuilt after training: train the run again")
    edges = ensemble.profile.redshift_grid.edges()
    columns = _rows(oof["id"], group["ra"][:][where], group["dec"][:][where], oof["pdf"], oof["z_reg"],
                    group["flags"][:][where], oof["ebv"], edges)
    columns.update(Z_SPEC=oof["z_spec"], FOLD=oof["fold"].astype(np.int16))
    columns[f"MAG_{ensemble.profile.reference_band.upper()}"] = oof["mag_ref"]
    header = ensemble.header("oof")
    header["NMODELS"] = (ensemble.n_models, "models: each object predicted by those of its own fold")
    write_photoz(output, columns, edges, header)
    if console is not None:
        console.print(f"{len(oof['id'])} out-of-fold objects of run {run_dir.name} -> {output}")
    return {"rows": len(oof["id"]), "output": str(output)}


def _refuse_existing(output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise InputError(f"{output}: the catalogue exists; use --overwrite to replace it")
    if not output.parent.is_dir():
        raise InputError(f"{output.parent}: no such directory for the catalogue")


# ----------------------------------------------------------------------------- from tiles

@dataclass
class Sources:
    """The sources of a catalogue: ids, positions, E(B-V) and the flag saying it was defaulted."""

    ids: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    ebv: np.ndarray
    ebv_flags: np.ndarray


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


def _rank_world(shard: tuple[int, int] | None) -> tuple[int, int, bool]:
    """(rank, world size, under torchrun?): torchrun's environment, else --shard, else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return int(os.environ["RANK"]), world, True
    if shard is not None:
        return shard[0], shard[1], False
    return 0, 1, False


def _index(paths, profile, keep_going: bool, skipped: list[str]):
    """TileImages of every readable tile; unreadable ones raise, or are listed in ``skipped``."""
    from mmzcli.cutout import index_tiles

    images = []
    for path in paths:
        try:
            images.extend(index_tiles([path], profile))
        except InputError as exc:
            if not keep_going:
                raise
            skipped.append(str(exc))
    return images


def _ebv_for(spec: str | None, column: np.ndarray | None, n: int, median: float):
    """E(B-V) per source and the EBV_DEFAULT flag: --ebv VALUE, else the catalogue's column, else ``median``."""
    from mmzcli.cutout import Flag

    if spec is not None and _is_number(spec):
        if not 0 <= float(spec) < 10:
            raise ConfigError(f"--ebv {spec}: not a plausible E(B-V) in magnitudes")
        return np.full(n, float(spec), np.float32), np.zeros(n, np.int32)
    if column is None:
        return np.full(n, median, np.float32), np.full(n, int(Flag.EBV_DEFAULT), np.int32)
    ebv = np.asarray(column, dtype=np.float64)
    missing = ~np.isfinite(ebv) | (ebv < 0)
    return (np.where(missing, median, ebv).astype(np.float32),
            np.where(missing, int(Flag.EBV_DEFAULT), 0).astype(np.int32))


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


def predict_tiles(tiles: list[Path], output: Path, *, project: Path = Path("."), run: str | None = None,
                  catalog: Path | None = None, detect: bool = False, ebv: str | None = None,
                  columns: dict[str, str] | None = None, jobs: int = 1, batch_size: int = 64,
                  device: str = "auto", amp: bool = True, resume: bool = False, overwrite: bool = False,
                  keep_going: bool = False, allow_missing_bands: bool = False, shard: str | None = None,
                  console=None) -> dict:
    """``mmz predict TILE... -o CAT``: see the module docstring."""
    from mmzcli.cutout import _progress, expand_tiles
    from mmzcli.train import resolve_device

    output = Path(output)
    if (catalog is None) == (not detect):
        raise ConfigError("give the sources with --catalog FILE, or find them with --detect (one of the two)")
    _refuse_existing(output, overwrite)
    rank, world, torchrun = _rank_world(parse_shard(shard))
    torch_device = resolve_device(device)
    ensemble = Ensemble.load(resolve_run(project, run), Path(project), torch_device)
    profile = ensemble.profile
    skipped: list[str] = []
    images = _index(expand_tiles(tiles), profile, keep_going, skipped)
    present = {image.band for image in images}
    absent = [b for b in profile.band_names if b not in present]
    if absent and not allow_missing_bands:
        raise InputError(f"the tiles hold no image in band(s) {', '.join(absent)} of run "
                         f"{ensemble.run_dir.name} (profile {profile.name}: {', '.join(profile.band_names)}); "
                         f"give those tiles, or --allow-missing-bands to predict without them")
    references = [i for i, image in enumerate(images) if image.band == profile.reference_band]
    if not references:
        raise InputError(f"no tile of the reference band {profile.reference_band}: it defines the tiles "
                         f"the work is split by")
    sources = None
    if catalog is not None:
        names = {"id": "ID", "ra": "RA", "dec": "DEC", **(columns or {})}
        sources = _read_sources(Path(catalog), names, ebv, ensemble.ebv_median)
    elif ebv is not None and not _is_number(ebv):
        raise ConfigError(f"--ebv {ebv}: with --detect there is no catalogue column; give a value")

    parts = output.with_name(output.name + ".parts")
    key = _inputs_key(ensemble, images, catalog, detect, ebv, columns, allow_missing_bands)
    if torchrun:
        import torch.distributed as dist

        dist.init_process_group("gloo")  # (CPU) barriers only: the ranks share nothing but the parts folder
    if rank == 0 or not torchrun:  # --shard jobs run apart: each keeps what the others did
        _open_parts(parts, key, resume or shard is not None)
    if torchrun:
        dist.barrier()
    units = _units(images, references, sources, profile)
    mine = [u for u in units[rank::world] if not (parts / f"{u['name']}.npz").exists()]
    context = {"images": images, "ensemble": ensemble, "device": torch_device, "batch_size": batch_size,
               "amp": amp, "jobs": jobs, "detect": detect, "ebv": ebv, "parts": parts}
    started, predicted = time.perf_counter(), 0
    with _progress(console) as bar:
        task = bar.add_task(f"predicting {len(units)} tiles" + (f" (shard {rank}/{world})" if world > 1 else ""),
                            total=len(units[rank::world]), completed=len(units[rank::world]) - len(mine))
        for unit in mine:
            try:
                predicted += _predict_unit(unit, sources, **context)
                (parts / f"{unit['name']}.skipped").unlink(missing_ok=True)  # failed before, fine now
            except (OSError, ValueError, InputError) as exc:  # a tile whose pixels cannot be read
                message = str(exc) if isinstance(exc, InputError) else f"{images[unit['reference']].path}: {exc}"
                if not keep_going:
                    raise InputError(message) from None
                (parts / f"{unit['name']}.skipped").write_text(message)
            bar.advance(task)
    seconds = time.perf_counter() - started
    summary = {"tiles": len(units), "predicted_now": predicted, "seconds": seconds, "skipped": skipped,
               "models": ensemble.n_models}
    if torchrun:
        dist.barrier()
        dist.destroy_process_group()
    if rank != 0 or (world > 1 and not torchrun):
        if console is not None:
            console.print(f"shard {rank}/{world}: {predicted} sources in {seconds:.0f} s -> {parts}; "
                          f"merge with the same command without --shard and with --resume")
        return summary
    pending = [u["name"] for u in units if not (parts / f"{u['name']}.npz").exists()
               and not (parts / f"{u['name']}.skipped").exists()]
    if pending:
        raise InputError(f"{parts}: {len(pending)} tile(s) not predicted yet (e.g. {pending[0]}); "
                         f"run the missing shards, then merge with --resume")
    skipped += [(parts / f"{u['name']}.skipped").read_text() for u in units
                if (parts / f"{u['name']}.skipped").exists()]
    summary["rows"] = _merge(parts, units, output, ensemble, detect, skipped)
    if console is not None:
        _print_summary(console, summary, output)
    return summary


def _inputs_key(ensemble, images, catalog, *settings) -> str:
    files = sorted({(image.path, os.path.getmtime(image.path)) for image in images})
    catalog_part = (str(catalog), os.path.getmtime(catalog)) if catalog else None
    parts = [ensemble.run_hash, files, catalog_part, *settings]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _open_parts(parts: Path, key: str, keep: bool) -> None:
    """The folder of finished tiles: kept (if from the same inputs) for --resume and shards, else emptied."""
    state = parts / "state.json"
    if keep and state.exists():
        if json.loads(state.read_text()).get("key") != key:
            raise InputError(f"{parts}: an unfinished prediction from other inputs or another run is there; "
                             f"run without --resume/--shard to start afresh")
        return
    if parts.exists() and not keep:
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    from mmzcli.project import atomic_write_text

    atomic_write_text(state, json.dumps({"key": key}))


def _units(images, references, sources: Sources | None, profile) -> list[dict]:
    """One unit of work per reference-band image, with the catalogue rows it holds (best coverage)."""
    from mmzcli.cutout import assign_images

    units = []
    for number, k in enumerate(references):
        units.append({"name": f"tile{number:05d}-{Path(images[k].path).stem}", "number": number,
                      "reference": k, "rows": None})
    if sources is not None:
        owner = assign_images([images[k] for k in references], sources.ra, sources.dec,
                              [profile.reference_band])[:, 0]
        for number, unit in enumerate(units):
            unit["rows"] = np.flatnonzero(owner == number)
        uncovered = np.flatnonzero(owner < 0)
        if uncovered.size:  # off every reference tile: predicted with what other bands hold, never dropped
            units.append({"name": "no-reference-tile", "number": len(units), "reference": references[0],
                          "rows": uncovered})
    return units


def _predict_unit(unit, sources: Sources | None, *, images, ensemble, device, batch_size, amp, jobs,
                  detect, ebv, parts) -> int:
    """Cut, predict and save the sources of one tile as ``parts/<name>.npz``; returns their number."""
    from mmzcli.cutout import _cut_block_task, _init_worker, _pixels, _run_parallel, assign_images

    profile = ensemble.profile
    extra = {}
    if detect:
        from mmzcli.detect import detect as find

        reference = images[unit["reference"]]
        wanted = set(profile.detection_bands)
        found = find(reference, [image for image in images if image.band in wanted])
        n = len(found["ra"])
        ids = unit["number"] * 1_000_000 + np.arange(1, n + 1, dtype=np.int64)
        ra, dec = found["ra"], found["dec"]
        ebv_values, flags0 = _ebv_for(ebv, None, n, ensemble.ebv_median)
        extra = {"X": (found["x"] + 1).astype(np.float32), "Y": (found["y"] + 1).astype(np.float32),
                 "TILE": np.full(n, Path(reference.path).name[:64], dtype="S64")}
    else:
        rows = unit["rows"]
        ids, ra, dec = sources.ids[rows], sources.ra[rows], sources.dec[rows]
        ebv_values, flags0 = sources.ebv[rows], sources.ebv_flags[rows]
        n = len(rows)
    pdfs = np.zeros((n, profile.redshift_grid.n_bins), np.float32)
    z_reg = np.full(n, np.nan, np.float32)
    flags = flags0.copy()
    if n:
        assignment = assign_images(images, ra, dec, profile.band_names)
        size, scale = profile.cutout_size, profile.pixel_scale

        def record(start, result):
            stamps, band_ok, block_flags = result
            stop = start + len(stamps)
            flags[start:stop] |= block_flags
            has_data = band_ok.any(axis=1)
            if has_data.any():
                p, r = ensemble.predict(stamps[has_data], band_ok[has_data], ebv_values[start:stop][has_data],
                                        device, batch_size, amp)
                pdfs[start:stop][has_data], z_reg[start:stop][has_data] = p, r

        tasks = ((s, assignment[s:s + BLOCK_ROWS], ra[s:s + BLOCK_ROWS], dec[s:s + BLOCK_ROWS], size, scale)
                 for s in range(0, n, BLOCK_ROWS))
        if jobs == 1 or n <= BLOCK_ROWS:
            _init_worker(images)
            for args in tasks:
                record(*_cut_block_task(*args))
        else:
            _run_parallel(images, tasks, jobs, record, lambda k: None)
    _pixels.cache_clear()  # unmap this tile's images: memory must not grow with the survey
    columns = _rows(ids, ra, dec, pdfs, z_reg, flags, ebv_values, profile.redshift_grid.edges())
    columns.update(extra)
    tmp = parts / f".{unit['name']}.tmp.npz"
    np.savez(tmp, **columns)
    os.replace(tmp, parts / f"{unit['name']}.npz")
    return n


def _merge(parts: Path, units, output: Path, ensemble, detect: bool, skipped: list[str]) -> int:
    """Append the parts, in tile order, to ``<output>.partial``; rename when complete; remove the parts."""
    from mmzcli.catalog import PhotozWriter

    header = ensemble.header("tiles")
    header["NSKIPPED"] = (len(skipped), "tiles skipped (--keep-going): see SKIPnnnn")
    for i, line in enumerate(skipped[:999], 1):
        header[f"SKIP{i:04d}"] = line  # long strings continue (CONTINUE convention)
    extra = {"X": np.dtype("f4"), "Y": np.dtype("f4"), "TILE": np.dtype("S64")} if detect else {}
    writer = PhotozWriter(output, ensemble.profile.redshift_grid.edges(), header, extra)
    try:
        for unit in units:
            path = parts / f"{unit['name']}.npz"
            if path.exists():
                with np.load(path) as part:
                    writer.append({k: part[k] for k in part.files})
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    shutil.rmtree(parts)
    return writer.rows


def _print_summary(console, summary: dict, output: Path) -> None:
    from rich.table import Table

    table = Table(title=f"mmz predict -> {output}", show_header=False)
    table.add_row("tiles", str(summary["tiles"]))
    table.add_row("sources in the catalogue", str(summary["rows"]))
    table.add_row("models averaged", str(summary["models"]))
    if summary["predicted_now"]:
        table.add_row("sources / s", f"{summary['predicted_now'] / max(summary['seconds'], 1e-9):,.0f}")
    table.add_row("tiles skipped", str(len(summary["skipped"])))
    console.print(table)
    for line in summary["skipped"]:
        console.print(f"[yellow]skipped:[/] {line}")
