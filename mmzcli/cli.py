"""The ``mmz`` command line: thin wrappers, each calling one library function.

Bad input raises ``MmzError``; ``main`` prints it as one red line and exits
with code 2 (with the traceback only under ``--debug``).  Heavy libraries are
imported inside the commands, so ``mmz --help`` answers at once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mmzcli import __version__

app = typer.Typer(
    name="mmz",
    help="Photometric redshifts with PDFs from multi-band survey images (multimodal inception CNN).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
profiles_app = typer.Typer(help="List and show the shipped survey profiles.", invoke_without_command=True)
app.add_typer(profiles_app, name="profiles")

_state: dict[str, Any] = {"debug": False, "quiet": False, "argv": []}

ProjectOpt = Annotated[Path, typer.Option("--project", "-p", help="Project directory.", show_default=False)]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", help="Worker processes.", min=1)]
RunOpt = Annotated[
    Optional[str], typer.Option("--run", help="Run name or directory [default: the project's latest trained run].")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
AmpOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--amp/--no-amp",
        help="bf16 autocast [default: where the device runs it fast: CUDA, CPUs with AVX-512 BF16 or AMX].",
        show_default=False,
    ),
]


def _version(value: bool):
    if value:
        typer.echo(f"mmz {__version__}")
        raise typer.Exit()


@app.callback()
def callback(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")] = False,
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
):
    """mmz turns multi-band survey image tiles into photometric-redshift catalogues with full PDFs."""
    _state.update(debug=debug, quiet=quiet)


def _console():
    from rich.console import Console

    return Console(stderr=True, quiet=_state["quiet"])


# ----------------------------------------------------------------------------- profiles


@profiles_app.callback()
def profiles_list(ctx: typer.Context):
    """List the shipped survey profiles (``mmz profiles show NAME`` prints one).

    Example: mmz profiles
    """
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.table import Table

    from mmzcli.profiles import list_profiles, load_profile

    table = Table("profile", "bands", "pixel scale", "reference", "z grid", "description")
    for name in list_profiles():
        p = load_profile(name)
        g = p.redshift_grid
        table.add_row(
            name,
            " ".join(p.band_names),
            f'{p.pixel_scale}"',
            f"{p.reference_band} <= {p.reference_mag_limit}",
            f"{g.z_min}-{g.z_max} / {g.n_bins}",
            p.description,
        )
    Console().print(table)


@profiles_app.command("show")
def profiles_show(name: Annotated[str, typer.Argument(help="Profile name or path of a YAML file.")]):
    """Print one survey profile, after validation and 'extends' merging, as YAML.

    Example: mmz profiles show hsc9 > my-survey.yaml
    """
    import yaml

    from mmzcli.profiles import load_profile

    typer.echo(yaml.safe_dump(load_profile(name).to_dict(), sort_keys=False), nl=False)


# ----------------------------------------------------------------------------- images -> cubes


@app.command()
def cutout(
    tiles: Annotated[list[Path], typer.Argument(help="FITS image tiles with a celestial WCS.", show_default=False)],
    catalog: Annotated[Path, typer.Option("--catalog", "-c", help="Sources: FITS table or CSV.", show_default=False)],
    profile: Annotated[
        Optional[str],
        typer.Option(
            "--profile", "--survey", help="Survey profile: name or YAML path [default: the project's, from mmz.yaml]."
        ),
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Output Zarr store [default: PROJECT/stamps.zarr].")
    ] = None,
    project: ProjectOpt = Path("."),
    size: Annotated[
        Optional[int], typer.Option("--size", help="Stamp size in pixels [default: the profile's].")
    ] = None,
    id_col: Annotated[str, typer.Option("--id-col", help="Source id column.")] = "ID",
    ra_col: Annotated[str, typer.Option("--ra-col", help="Right ascension column (deg).")] = "RA",
    dec_col: Annotated[str, typer.Option("--dec-col", help="Declination column (deg).")] = "DEC",
    jobs: JobsOpt = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a complete output store.")] = False,
):
    """Cut one stamp per band around every source, north up and east left, at the profile's pixel scale.

    Example: mmz cutout tiles/*.fits --catalog sources.csv --profile cfhtls -o stamps.zarr
    """
    from mmzcli.cutout import run_cutout
    from mmzcli.project import project_profile
    from mmzcli.store import STAMPS_NAME

    run_cutout(
        tiles,
        catalog,
        project_profile(project, profile),
        output or project / STAMPS_NAME,
        size=size,
        columns={"id": id_col, "ra": ra_col, "dec": dec_col},
        jobs=jobs,
        overwrite=overwrite,
        console=_console(),
    )


@app.command("build-cubes")
def build_cubes(
    survey: Annotated[
        Optional[str],
        typer.Option("--survey", "--profile", help="Survey profile: name or YAML path [default: the project's]."),
    ] = None,
    project: ProjectOpt = Path("."),
    tiles: Annotated[
        Optional[str],
        typer.Option(
            "--tiles", help="Glob of FITS tiles [default: inputs.tiles of mmz.yaml, relative to the project]."
        ),
    ] = None,
    catalog: Annotated[
        Optional[Path],
        typer.Option("--catalog", help="Spectroscopic catalogue (FITS or CSV) [default: from mmz.yaml]."),
    ] = None,
    id_col: Annotated[Optional[str], typer.Option("--id-col", help="Id column [default: ID].")] = None,
    ra_col: Annotated[Optional[str], typer.Option("--ra-col", help="RA column [default: RA].")] = None,
    dec_col: Annotated[Optional[str], typer.Option("--dec-col", help="Dec column [default: DEC].")] = None,
    z_col: Annotated[
        Optional[str], typer.Option("--z-col", help="Spectroscopic redshift column [default: Z_SPEC].")
    ] = None,
    ebv_col: Annotated[Optional[str], typer.Option("--ebv-col", help="Galactic E(B-V) column [default: EBV].")] = None,
    mag_col: Annotated[
        Optional[str], typer.Option("--mag-col", help="Reference magnitude column [default: MAG_<reference band>].")
    ] = None,
    jobs: JobsOpt = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Rebuild a complete store.")] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Check the complete store instead: every chunk readable, every block written, labels and "
            "normalisation finite.",
        ),
    ] = False,
):
    """Build PROJECT/cubes.zarr: labelled, normalisable datacubes from tiles and a spectroscopic catalogue.

    Resumable: run the same command again after an interruption.  With --verify, read the
    whole store and exit 2 at its first problem.

    Example: mmz build-cubes --survey cfhtls --project myproj
    """
    from mmzcli.cubes import build_cubes as run
    from mmzcli.cubes import verify_cubes
    from mmzcli.project import record_command

    if verify:
        if overwrite:
            from mmzcli.errors import ConfigError

            raise ConfigError("--verify checks the store and --overwrite rebuilds it: pass one of them")
        verify_cubes(project, console=_console())
        return
    columns = {
        k: v
        for k, v in {
            "id": id_col,
            "ra": ra_col,
            "dec": dec_col,
            "z_spec": z_col,
            "ebv": ebv_col,
            "mag_ref": mag_col,
        }.items()
        if v is not None
    }
    if run(
        project,
        survey=survey,
        tiles=tiles,
        catalog=catalog,
        columns=columns,
        jobs=jobs,
        overwrite=overwrite,
        console=_console(),
    ).get("built"):
        record_command(project, _state["argv"])


# ----------------------------------------------------------------------------- training


@app.command()
def train(
    profile: Annotated[
        Optional[str], typer.Option("--profile", "--survey", help="Survey profile [default: the project's].")
    ] = None,
    fusion: Annotated[
        str, typer.Option("--fusion", help="Fusion stage: extremely-early, very-early, early, middle, late.")
    ] = "early",
    project: ProjectOpt = Path("."),
    name: Annotated[
        Optional[str],
        typer.Option("--name", help="Run name [default: from the settings, so the same command resumes]."),
    ] = None,
    modality_size: Annotated[int, typer.Option("--modality-size", help="Bands per modality.", min=1)] = 2,
    orders: Annotated[str, typer.Option("--orders", help="Modality orders, e.g. 1,2 (Table C.2).")] = "1",
    modalities: Annotated[
        Optional[str], typer.Option("--modalities", help="Explicit modalities, e.g. 'u,g;g,r;r,i'.")
    ] = None,
    baseline: Annotated[
        bool, typer.Option("--baseline", help="One modality holding all bands (the paper's baseline).")
    ] = False,
    fusion_type: Annotated[str, typer.Option("--fusion-type", help="concat or cross.")] = "concat",
    all_band_modality: Annotated[
        bool, typer.Option("--all-band-modality", help="Add a modality of all bands (paper 7.3).")
    ] = False,
    modality_dropout: Annotated[
        bool,
        typer.Option(
            "--modality-dropout", help="Drop 0-5 modalities per batch; adds single-band modalities (paper 7.4)."
        ),
    ] = False,
    folds: Annotated[int, typer.Option("--folds", help="Train folds 0..N-1 of the 5.", min=1, max=5)] = 5,
    fold: Annotated[Optional[int], typer.Option("--fold", help="Train this fold only.")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Models per fold (ensemble).", min=1)] = 1,
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs per model.", min=1)] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Batch size (per process).", min=1)] = 32,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate (the peak of the schedule).")] = 1e-3,
    schedule: Annotated[
        str, typer.Option("--schedule", help="cosine (linear warm-up, then cosine decay over the epochs) or constant.")
    ] = "cosine",
    warmup: Annotated[float, typer.Option("--warmup", help="Share of the planned steps spent warming up.")] = 0.05,
    patience: Annotated[
        int,
        typer.Option(
            "--patience",
            help="Stop after this many epochs without a better inner validation loss, counted in the last 20% of "
            "the epochs of a cosine schedule, where its rate has decayed (0: never).",
            min=0,
        ),
    ] = 5,
    precise_bn: Annotated[
        int,
        typer.Option(
            "--precise-bn",
            help="Re-estimate batch-norm statistics over this many training objects before each inner validation "
            "(0: keep training's running averages).",
            min=0,
        ),
    ] = 2048,
    scale_lr: Annotated[
        bool, typer.Option("--scale-lr", help="Scale --lr by batch size / 32, for larger batches (a speed option).")
    ] = False,
    train_fraction: Annotated[
        float,
        typer.Option(
            "--train-fraction",
            help="Train on this share (to a percent) of the training objects, chosen by id: learning curves in "
            "training-set size. The inner validation set and the held-out fold stay whole.",
        ),
    ] = 1.0,
    width: Annotated[float, typer.Option("--width", help="Channel-width multiplier (e.g. 0.25 on a CPU).")] = 1.0,
    norm: Annotated[
        str, typer.Option("--norm", help="none (the paper) or batch: batch-norm in every conv, for fast small runs.")
    ] = "none",
    device: DeviceOpt = "auto",
    amp: AmpOpt = None,
    compile: Annotated[
        Optional[bool],
        typer.Option(
            "--compile/--no-compile",
            help="torch.compile the model [default: on CUDA, falling back to eager if it fails; off on the CPU].",
            show_default=False,
        ),
    ] = None,
    memory_format: Annotated[
        str, typer.Option("--memory-format", help="auto (the faster one of the device), nchw or channels-last.")
    ] = "auto",
    cube_dtype: Annotated[
        str, typer.Option("--cube-dtype", help="float16 (half the memory; same metrics) or float32 training cubes.")
    ] = "float16",
    jobs: Annotated[
        int,
        typer.Option("--jobs", "-j", help="Models (fold x seed) trained at once, one process each.", min=1),
    ] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Require an existing run to continue.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Build the model, print its layout and parameter count, train nothing.")
    ] = False,
):
    """Train the multimodal network: cross-validation folds x seeds, checkpointed after every epoch.

    Each fold's model trains on the other folds less 1 in 8 of their objects (by id), the inner validation set
    that selects the best epoch and stops training; the held-out fold is only predicted, out of fold, at the end.
    Writes PROJECT/runs/NAME/: config.yaml, fold<k>_seed<r>.pt, metrics.json, train.log, oof.npz.
    Killed runs continue from their last complete epoch when the same command is run again.

    Example: mmz train --profile hsc9 --fusion early --project P --epochs 30 --seeds 3 --jobs 5
    """
    import math

    from mmzcli.errors import ConfigError
    from mmzcli.profiles import load_profile
    from mmzcli.project import project_profile
    from mmzcli.runs import RunDir, runs_dir
    from mmzcli.train import RunSpec, TrainConfig, train_run

    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"--lr {lr:g}: expected a finite learning rate > 0, e.g. 1e-3")
    if schedule not in ("cosine", "constant"):
        raise ConfigError(f"--schedule {schedule}: expected cosine or constant")
    if not 0 <= warmup < 1:
        raise ConfigError(f"--warmup {warmup:g}: expected a share of the steps in [0, 1), e.g. 0.05")
    if not 0.01 <= round(train_fraction, 2) <= 1:
        raise ConfigError(f"--train-fraction {train_fraction:g}: expected a share in [0.01, 1], e.g. 0.5")
    layouts = {"auto": None, "nchw": False, "channels-last": True}
    if memory_format not in layouts:
        raise ConfigError(f"--memory-format {memory_format}: expected auto, nchw or channels-last")
    from mmzcli.cubeset import CUBE_DTYPES

    if cube_dtype not in CUBE_DTYPES:
        raise ConfigError(f"--cube-dtype {cube_dtype}: expected {' or '.join(CUBE_DTYPES)}")
    try:
        order_list = tuple(int(o) for o in orders.split(","))
    except ValueError:
        raise ConfigError(f"--orders {orders}: expected integers separated by commas, e.g. 1,2") from None
    spec = RunSpec(
        fusion=fusion,
        fusion_type=fusion_type,
        modality_size=modality_size,
        orders=order_list,
        modalities=modalities,
        baseline=baseline,
        all_band_modality=all_band_modality,
        modality_dropout=modality_dropout,
        width=width,
        norm=norm,
        train=TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            schedule=schedule,
            warmup=warmup,
            patience=patience,
            scale_lr=scale_lr,
            train_fraction=round(train_fraction, 2),
            precise_bn=precise_bn,
            seeds=seeds,
            device=device,
            amp=amp,
            compile=compile,
            channels_last=layouts[memory_format],
            cube_dtype=cube_dtype,
            jobs=jobs,
            folds=(fold,) if fold is not None else tuple(range(folds)),
        ),
    )
    if dry_run:
        survey = load_profile(profile) if profile else project_profile(project, None)
        train_run(project, survey, spec, name=name, dry_run=True)
        return
    survey = project_profile(project, profile)
    run_name = name or spec.default_name()
    if resume and not RunDir(runs_dir(project) / run_name).config_path.exists():
        raise ConfigError(f"--resume: no run '{run_name}' in {runs_dir(project)}")
    train_run(project, survey, spec, name=run_name, console=_console())


# ----------------------------------------------------------------------------- prediction


@app.command()
def predict(
    tiles: Annotated[
        Optional[list[Path]], typer.Argument(help="FITS image tiles (all bands of the run).", show_default=False)
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Catalogue to write (FITS).")] = Path(
        "photoz_cat.fits"
    ),
    run: RunOpt = None,
    project: ProjectOpt = Path("."),
    catalog: Annotated[
        Optional[Path],
        typer.Option(
            "--catalog",
            "-c",
            help="Sources to predict: FITS table or CSV with ID, RA, DEC (and EBV) "
            "[default: detect every source in the tiles].",
        ),
    ] = None,
    detect: Annotated[
        bool,
        typer.Option(
            "--detect",
            help="Find the sources with sep on the profile's detection bands (the default without --catalog).",
        ),
    ] = False,
    cubes: Annotated[
        bool,
        typer.Option(
            "--cubes",
            help="Write the run's out-of-fold predictions of the labelled set (Z_SPEC, FOLD, MAG_<ref>) instead.",
        ),
    ] = False,
    ebv: Annotated[
        Optional[str],
        typer.Option(
            "--ebv",
            help="Galactic E(B-V): a column of the catalogue or one value "
            "[default: column EBV, else the training median, flagged].",
        ),
    ] = None,
    id_col: Annotated[str, typer.Option("--id-col", help="Source id column.")] = "ID",
    ra_col: Annotated[str, typer.Option("--ra-col", help="Right ascension column (deg).")] = "RA",
    dec_col: Annotated[str, typer.Option("--dec-col", help="Declination column (deg).")] = "DEC",
    jobs: JobsOpt = 1,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", help="Objects per forward pass (memory grows with it: ~1.7 GB at full width and 64).", min=1
        ),
    ] = 64,
    device: DeviceOpt = "auto",
    amp: AmpOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Keep the tiles already done by an interrupted run (and merge shards).")
    ] = False,
    shard: Annotated[
        Optional[str],
        typer.Option("--shard", help="Do tiles I, I+N, ... only (I/N), for job arrays; merge later with --resume."),
    ] = None,
    keep_going: Annotated[
        bool,
        typer.Option(
            "--keep-going", help="Skip unreadable tiles (listed in the summary and the header) instead of stopping."
        ),
    ] = False,
    allow_missing_bands: Annotated[
        bool, typer.Option("--allow-missing-bands", help="Predict even when no tile holds some band of the run.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing catalogue.")] = False,
    qp_output: Annotated[
        Optional[Path],
        typer.Option("--qp", help="Also write the PDFs as a qp ensemble (.hdf5, .fits), as mmz export does."),
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Leave out the run's PDF calibration (mmz calibrate), if it has one.")
    ] = False,
    pdf_dtype: Annotated[
        str,
        typer.Option(
            "--pdf-dtype",
            help=(
                "float32, or int16 with a per-row PDF_SCALE (PDF = PDF * PDF_SCALE, L1 error <= 8e-4);"
                " with -o CAT.fits.gz 4.2-4.9x smaller."
            ),
        ),
    ] = "float32",
):
    """Write a photo-z catalogue: PDF, median Z_PHOT, intervals and flags for every source of the tiles.

    The sources are those of --catalog or, without it, every source sep detects in the tiles.
    Every model of the run (folds x seeds) predicts every source; their PDFs are averaged.
    Interrupted runs continue with --resume; under torchrun the ranks share the tiles.

    Example: mmz predict tiles/*.fits -o photoz_cat.fits --project P
    """
    from mmzcli.catalog import PDF_DTYPES
    from mmzcli.device import torchrun_rank
    from mmzcli.errors import ConfigError
    from mmzcli.predict import PredictOptions, predict_cubes, predict_tiles

    if pdf_dtype not in PDF_DTYPES:
        raise ConfigError(f"--pdf-dtype {pdf_dtype}: expected {' or '.join(PDF_DTYPES)}")
    if qp_output is not None:  # before the work, so that a missing qp or a bad name costs nothing
        from mmzcli.export import check_qp_output

        check_qp_output(qp_output, overwrite)
    if cubes:
        if tiles or catalog or detect:
            raise ConfigError("--cubes predicts the project's labelled cubes: give no tiles, --catalog or --detect")
        predict_cubes(project, output, run=run, overwrite=overwrite, raw=raw, pdf_dtype=pdf_dtype, console=_console())
    else:
        if not tiles:
            raise ConfigError("no tiles given: mmz predict TILE... -o CAT.fits (or --cubes for the labelled set)")
        if catalog is not None and detect:
            raise ConfigError("--catalog gives the sources and --detect finds them: give one of the two")
        options = PredictOptions(
            project=project,
            run=run,
            catalog=catalog,
            ebv=ebv,
            columns={"id": id_col, "ra": ra_col, "dec": dec_col},
            jobs=jobs,
            batch_size=batch_size,
            device=device,
            amp=amp,
            resume=resume,
            overwrite=overwrite,
            keep_going=keep_going,
            allow_missing_bands=allow_missing_bands,
            shard=shard,
            raw=raw,
            pdf_dtype=pdf_dtype,
        )
        predict_tiles(tiles, output, options, console=_console())
    if qp_output is not None and torchrun_rank()[0] == 0 and output.exists():  # complete (not a --shard)
        _export(output, qp_output, overwrite)


@app.command()
def export(
    catalog: Annotated[Path, typer.Argument(help="Photo-z catalogue (FITS, from mmz predict).", show_default=False)],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="qp ensemble to write: .hdf5 (streamed), .fits or .pq.")
    ] = Path("photoz.hdf5"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
):
    """Write the PDFs of a catalogue as a qp ensemble, the format of LSST DESC's RAIL.

    A qp 'hist' ensemble on the catalogue's bins (ZGRID), densities in float32, with ID, position,
    point estimates (RAIL names zmode, zmean, zmedian) and FLAGS as ancillary data. Rows without a
    PDF (no image data, FLAGS OUTSIDE) are left out and counted. Needs qp: pip install 'mmz[rail]'.

    Example: mmz export photoz_cat.fits -o photoz.hdf5
    """
    _export(catalog, output, overwrite)


def _export(catalog: Path, output: Path, overwrite: bool) -> None:
    from mmzcli.export import export_qp

    done = export_qp(catalog, output, overwrite=overwrite)
    left = f"; {done['left_out']} rows without a PDF left out" if done["left_out"] else ""
    _console().print(f"{done['output']}: {done['rows']} PDFs as a qp hist ensemble{left}")


# ----------------------------------------------------------------------------- science outputs


@app.command()
def evaluate(
    catalogs: Annotated[
        list[Path],
        typer.Argument(
            help="Photo-z catalogues (FITS, from mmz predict); several are matched by ID and compared on their "
            "common objects.",
            show_default=False,
        ),
    ],
    truth: Annotated[
        Optional[Path],
        typer.Option(
            "--truth",
            help="Spectroscopic table (ID, Z_SPEC, MAG_*) for catalogues without Z_SPEC or magnitudes.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    mag_col: Annotated[
        Optional[str],
        typer.Option(
            "--mag-col", help="Magnitude column of the magnitude bins [default: MAG_<REFBAND of the header>]."
        ),
    ] = None,
    id_col: Annotated[str, typer.Option("--id-col", help="Id column of the --truth table.")] = "ID",
    z_col: Annotated[
        str, typer.Option("--z-col", help="Spectroscopic redshift column of the --truth table.")
    ] = "Z_SPEC",
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Output directory [default: evaluate/ beside the first catalogue]."),
    ] = None,
    bins: Annotated[int, typer.Option("--bins", help="Equal-count bins of magnitude and redshift.", min=1)] = 8,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each catalogue's overall metrics as JSON on stdout.")
    ] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the figures.")] = True,
):
    """Photo-z metrics (sigma_MAD, outlier fraction, bias; CRPS and PIT of the PDFs) with their plots.

    Overall and in equal-count bins of magnitude, z_spec and z_phot, with error bars = std over the
    folds when the catalogue has FOLD. Writes metrics.json, zphot_vs_zspec.png, metrics_vs_mag.png,
    metrics_vs_z.png and pit.png.

    Example: mmz evaluate P/catalogs/oof-early.fits P/catalogs/oof-baseline.fits -o P/plots/compare
    """
    from mmzcli.evaluate import evaluate_catalogs

    evaluate_catalogs(
        catalogs,
        truth=truth,
        mag_col=mag_col,
        id_col=id_col,
        z_col=z_col,
        output=output,
        n_bins=bins,
        as_json=as_json,
        plots=plots,
        console=_console(),
    )


@app.command()
def bootstrap(
    base: Annotated[Path, typer.Argument(help="Reference catalogue (e.g. the baseline model's).", show_default=False)],
    other: Annotated[
        Path, typer.Argument(help="Catalogue tested against it, on the objects matched by ID.", show_default=False)
    ],
    resamples: Annotated[int, typer.Option("--resamples", "-K", help="Bootstrap resamples (100 to 1000000).")] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same p-values.")] = 0,
    truth: Annotated[
        Optional[Path],
        typer.Option(
            "--truth",
            help="Spectroscopic table (ID, Z_SPEC) for catalogues without Z_SPEC.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    id_col: Annotated[str, typer.Option("--id-col", help="Id column of the --truth table.")] = "ID",
    z_col: Annotated[
        str, typer.Option("--z-col", help="Spectroscopic redshift column of the --truth table.")
    ] = "Z_SPEC",
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Output directory [default: bootstrap/ beside BASE].")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print base, other, gain and p_value per metric as JSON on stdout.")
    ] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the figure.")] = True,
):
    """Is OTHER significantly better than BASE? The paired bootstrap test of the paper (Appendix D).

    For sigma_MAD, outlier fraction, |bias| and CRPS: both values, the relative gain
    G = (|M_base| - |M_other|)/|M_base| and p = freq(delta_b - delta >= delta), delta > 0 when OTHER is
    better. Writes bootstrap.json and bootstrap.png (the bootstrapped and shifted delta distributions).
    Needs at least 50 matched objects: fewer cannot be judged.

    Example: mmz bootstrap P/catalogs/oof-baseline.fits P/catalogs/oof-early.fits -K 10000 --seed 1
    """
    from mmzcli.bootstrap import run_bootstrap

    run_bootstrap(
        base,
        other,
        resamples=resamples,
        seed=seed,
        truth=truth,
        id_col=id_col,
        z_col=z_col,
        output=output,
        as_json=as_json,
        plots=plots,
        console=_console(),
    )


@app.command()
def calibrate(
    run: RunOpt = None,
    project: ProjectOpt = Path("."),
):
    """Calibrate a run's PDFs by the PIT of its own out-of-fold predictions.

    Every CDF F becomes G(F), G the distribution function of the PIT (CDF at z_spec) over the run's
    out-of-fold objects, so that the PIT becomes uniform. Judged by cross-fitting (each half of the
    objects by the map of the other half): PIT KS statistic, PIT tails, CRPS, sigma_MAD before and
    after. Stored as calibration.json in the run; mmz predict applies it from then on (--raw does not), and
    refuses it once the run has trained further.

    Example: mmz calibrate --run early-concat-s2o1-w1 --project P
    """
    from mmzcli.calibrate import calibrate_run

    calibrate_run(project, run, console=_console())


@app.command()
def nz(
    catalog: Annotated[Path, typer.Argument(help="Photo-z catalogue (FITS, from mmz predict).", show_default=False)],
    bins: Annotated[
        str, typer.Option("--bins", help="Edges of the tomographic bins, e.g. 0.2,0.4,0.6,0.8,1.0.", show_default=False)
    ],
    by: Annotated[str, typer.Option("--by", help="Point estimate that assigns objects to bins (a column).")] = "Z_PHOT",
    weights: Annotated[
        Optional[str], typer.Option("--weights", help="Column of object weights (e.g. lensing).")
    ] = None,
    resamples: Annotated[int, typer.Option("--resamples", "-K", help="Bootstrap resamples for the error bands.")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same bands.")] = 0,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Output directory [default: nz/ beside CATALOG].")
    ] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw nz.png.")] = True,
):
    """The redshift distribution n(z) of each tomographic bin: the stacked PDFs of its objects.

    Objects fall in a bin by their --by estimate; a bin's n(z) is the (--weights) weighted mean of
    their PDFs, with 16-84% bands from a Poisson bootstrap over objects. With Z_SPEC in the catalogue
    (out-of-fold predictions) the true histogram and the bias of each bin's mean redshift are given.
    Writes nz.fits (HDU NZ: curves; BINS: summary), nz.json, nz.png and, with qp, nz.hdf5.

    Example: mmz nz oof-early.fits --bins 0.2,0.4,0.6,0.8,1.0 --by Z_BEST
    """
    from mmzcli.nz import nz_catalogue

    nz_catalogue(catalog, bins, by=by, weights=weights, resamples=resamples, seed=seed, output=output,
                 plots=plots, console=_console())  # fmt: skip


@app.command("dropout-scan")
def dropout_scan(
    run: Annotated[
        str,
        typer.Option(
            "--run", help="Run trained with --modality-dropout (name under PROJECT/runs).", show_default=False
        ),
    ],
    project: ProjectOpt = Path("."),
    baseline: Annotated[
        Optional[list[str]],
        typer.Option(
            "--baseline", help="Run drawn for comparison from its oof.npz (repeatable: baseline, reference model)."
        ),
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Output directory [default: PROJECT/runs/RUN/dropout].")
    ] = None,
    device: DeviceOpt = "auto",
):
    """Which modalities matter, and at which redshift? Out-of-fold sigma_MAD with one modality dropped at a time.

    Each fold's objects are predicted by the models that did not train on them, with nothing dropped
    and with each modality dropped in turn (paper 7.4, Fig. 10). Writes dropout.json and
    dropout_vs_z.png; the table is ranked by the mean sigma_MAD over 8 equal-count redshift bins.

    Example: mmz dropout-scan --run early-concat-s2o1-mdrop-w1 --project P --baseline baseline-w1
    """
    from mmzcli.dropout import dropout_scan as run_scan

    run_scan(project, run, baselines=baseline or [], output=output, device=device, console=_console())


# ----------------------------------------------------------------------------- simulation


@app.command()
def simulate(
    profile: Annotated[str, typer.Option("--profile", help="Survey profile to simulate: name or YAML path.")] = "hsc9",
    n: Annotated[int, typer.Option("-n", help="Number of galaxies in the spectroscopic sample.", min=1)] = 1000,
    project: ProjectOpt = Path("."),
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, identical files.")] = 0,
    tile_size: Annotated[int, typer.Option("--tile-size", help="Tile side in pixels.", min=128)] = 2048,
    jobs: JobsOpt = 1,
    catalog: Annotated[
        Optional[Path],
        typer.Option(
            "--catalog",
            help="Inject these objects (Z, MAG_<band>, optional size and position) instead of drawing a population.",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing simulation in the project.")
    ] = False,
):
    """Simulate a survey: image tiles, a spectroscopic sample and the truth, ready for build-cubes.

    Example: mmz simulate --profile hsc9 -n 3000 --project demo && mmz build-cubes --project demo
    """
    from mmzcli.sim.survey import simulate_survey

    simulate_survey(
        profile,
        n,
        project,
        seed=seed,
        tile_size=tile_size,
        jobs=jobs,
        catalog=catalog,
        overwrite=overwrite,
        console=_console(),
    )


@app.command()
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Where the demo project goes.")] = Path("demo"),
    jobs: JobsOpt = 2,
):
    """Run mmz end to end on a small simulated HSC-like survey (resumes where it stopped).

    Example: mmz demo --dir /tmp/mmz-demo
    """
    from mmzcli.demo import run_demo

    run_demo(directory, jobs=jobs, console=_console())


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Run the app, turning user-facing errors into one line and exit code 2.

    Errors of the operating system that reach here (a full disk, a read-only directory) are
    shown the same way, naming the file; an interrupt says how to go on.
    """
    from mmzcli.errors import MmzError

    _state["argv"] = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=argv, prog_name="mmz")
    except (MmzError, OSError) as exc:
        if _state["debug"]:
            raise
        _error_line(str(exc) if isinstance(exc, MmzError) else _os_error_text(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        _error_line("interrupted; run the same command again to resume where it stopped")
        sys.exit(130)


def _os_error_text(exc: OSError) -> str:
    import errno

    where = f"{exc.filename}: " if exc.filename else ""
    advice = {
        errno.ENOSPC: "free some disk space, then run the same command again to resume",
        errno.EACCES: "check the permissions of that path, or write elsewhere",
        errno.EROFS: "that file system is read-only: write elsewhere",
    }.get(exc.errno or -1, "rerun with --debug for details")
    return f"{where}{exc.strerror or exc}; {advice}"


def _error_line(text: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(text)}")
