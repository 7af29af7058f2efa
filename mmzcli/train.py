"""Training: cross-validation folds x seeds of the multimodal network, resumable, AMP, DDP.

One process (CPU, or one GPU):
    mmz train --profile hsc9 --fusion early --project P --name early2
Several models at once on one GPU or on the CPU's cores (one process per model):
    mmz train --profile hsc9 --fusion early --project P --seeds 3 --jobs 4
Several GPUs or processes (DistributedDataParallel; NCCL on GPUs, gloo on CPU):
    torchrun --nproc-per-node 4 -m mmzcli train --profile hsc9 --fusion early --project P

For every fold k (the objects of fold k validate, the others train) and seed r,
the network is trained with Adam on loss = cross-entropy + MAE (paper eq. 1),
with random flips and 90-degree rotations drawn on the device.  After every
epoch a checkpoint holds the model, the optimiser, the epoch and the best
state so far; each epoch's randomness is seeded from (seed, fold, epoch), so a
run killed at any point and resumed ends with the same weights as one that was
never interrupted.  The best epoch (lowest validation loss) is kept as
``fold<k>_seed<r>.pt``; at the end, the out-of-fold PDFs of every labelled
object (mean over seeds) go to ``oof.npz``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmzcli.cubes import inner_validation, normalisation, training_subset
from mmzcli.cubeset import CubeSet, labelled_rows
from mmzcli.device import autocast, fast_bf16, init_distributed, mps_running, resolve_device
from mmzcli.errors import ConfigError, InputError
from mmzcli.outputs import hold_run_lock, releases_locks
from mmzcli.runs import MODEL_FORMAT, STATE_FORMAT, CheckpointError, RunDir, build_model, checkpoint_of, load_checkpoint


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)
    seeds: int = 1
    device: str = "auto"  # auto | cpu | cuda
    amp: bool | None = None  # bf16 autocast; None: where the device runs it fast (device.fast_bf16)
    channels_last: bool | None = None  # None: the faster layout of the device (FASTER_LAYOUT)
    compile: bool | None = None  # None: on CUDA (falls back to eager, logged, if it fails), off on the CPU
    cube_dtype: str = "float16"  # how the training cubes are held (float32: twice the memory, same metrics)
    jobs: int = 1  # models trained at once, one process each
    schedule: str = "cosine"  # cosine: linear warm-up, then cosine decay over the planned steps | constant
    warmup: float = 0.05  # share of the planned steps spent warming up the learning rate from 0
    min_lr: float = 0.01  # the cosine ends at this fraction of the peak learning rate
    patience: int = 5  # stop when the inner validation loss has not improved for this many epochs (0: never)
    scale_lr: bool = False  # multiply lr by batch_size / 32 (the paper's batch), for larger batches
    train_fraction: float = 1.0  # share of the training objects trained on (learning curves; training_subset)
    precise_bn: int = 2048  # batch-norm statistics re-estimated over this many training objects each epoch (0: never)
    memory_fraction: float = 0.5  # hold the training set on the device when it needs less than this share of its
    # free memory (shared by the --jobs processes), else stream it from Zarr
    stream_chunks: int = 16  # chunks read together (and shuffled together) when streaming from Zarr

    def for_device(self, device) -> TrainConfig:
        """This configuration with the automatic choices made for ``device``."""
        kind = device.type
        return replace(
            self,
            amp=fast_bf16(kind) if self.amp is None else self.amp,
            channels_last=FASTER_LAYOUT[kind] == "channels_last" if self.channels_last is None else self.channels_last,
            compile=kind == "cuda" if self.compile is None else self.compile,
        )


# The memory layout that trains faster, by device type, measured with bench/train.py (docs/benchmarks.md):
# on an H200 plain NCHW beats channels_last (907 -> 964 samples/s baseline, 608 -> 866 two-band early: the
# grouped convolutions of the modalities lose 30% in channels_last); on a 2-core CPU, channels_last (the
# two-band model at width 0.125: 27.4 samples/s in channels_last, 16.4 in NCHW).
FASTER_LAYOUT = {"cuda": "nchw", "cpu": "channels_last"}
SYNC_EVERY = 32  # training losses are read back (and checked for divergence) every this many steps


def _seed(*parts: int) -> int:
    """One integer seed from several (run seed, fold, epoch), stable across runs and platforms."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


# ----------------------------------------------------------------------------- one model


def bin_index(z, grid):
    import torch

    return torch.clamp(((z - grid.z_min) / grid.width).long(), 0, grid.n_bins - 1)


def train_step(net, optimizer, batch, grid, device, amp: bool):
    """One Adam step on a batch (cubes, band_ok, ebv, z) with loss CE + MAE (paper eq. 1); the loss stays on
    the device.  ``mmz train`` and ``bench/train.py`` both step through here."""
    from mmzcli.model import loss_fn

    x, ok, ebv, z = batch
    with autocast(device, amp):
        logits, z_reg = net(x, ebv, ok)
    loss = loss_fn(logits.float(), z_reg.float(), z, bin_index(z, grid))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def precise_batch_norm(model, source: CubeSet, rows: np.ndarray, config: TrainConfig, seed: int) -> None:
    """Batch-norm statistics as a plain average over ``config.precise_bn`` training objects, with the weights as
    they now are ("precise BN", Wu & Johnson 2021), for the inner validation and the checkpoint.

    The running averages that training leaves (momentum 0.1) rest on its last ~20 batches: on simulated hsc9 they
    alone moved the inner validation sigma_MAD of one fixed network within 0.0196-0.0215, as much as its last
    epochs wandered; averaged over 2,048 objects, 0.0204 in both draws (bench/bn_noise.py).  Every rank draws
    the same batches from ``seed``, so that DDP replicas keep equal statistics.
    """
    import torch

    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not layers or config.precise_bn <= 0:
        return
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches below
    torch.manual_seed(seed)  # the flips and rotations, as in training
    model.train()
    seen = 0
    with torch.no_grad():
        for x, ok, ebv, z in source.batches(rows, config.batch_size, np.random.default_rng(seed)):
            with autocast(source.device, bool(config.amp)):
                model(x, ebv, ok)
            seen += len(z)
            if seen >= config.precise_bn:
                break
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum


def evaluate_rows(model, source: CubeSet, rows: np.ndarray, grid, device, config: TrainConfig):
    """PDFs (softmax), regression estimates and mean loss over ``rows`` (eval mode, no augmentation)."""
    import torch

    from mmzcli.model import loss_fn

    model.eval()
    pdfs, regs, total = [], [], 0.0
    with torch.no_grad():
        for x, ok, ebv, z in source.batches(rows, 256):
            with autocast(device, bool(config.amp)):
                logits, z_reg = model(x, ebv, ok)
            logits, z_reg = logits.float(), z_reg.float()
            total += float(loss_fn(logits, z_reg, z, bin_index(z, grid))) * len(z)
            pdfs.append(torch.softmax(logits, -1).cpu().numpy())
            regs.append(z_reg.cpu().numpy())
    return np.concatenate(pdfs), np.concatenate(regs), total / max(len(rows), 1)


def _save(checkpoint: dict, path: Path) -> None:
    import torch

    from mmzcli.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


# the TrainConfig fields that change the weights, compared when a run resumes (folds may be trained apart)
WEIGHT_SETTINGS = ("epochs", "batch_size", "lr", "seeds", "amp", "channels_last", "schedule", "warmup", "min_lr",
                   "patience", "scale_lr", "cube_dtype", "train_fraction", "precise_bn")  # fmt: skip
REFERENCE_BATCH = 32  # the paper's batch size: --scale-lr scales the learning rate from it


def peak_lr(config: TrainConfig) -> float:
    return config.lr * (config.batch_size / REFERENCE_BATCH if config.scale_lr else 1.0)


def learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """The learning rate of optimiser step ``step`` (from 0) of ``total`` planned: a function of the step only,
    so a resumed run follows the same schedule."""
    peak = peak_lr(config)
    if config.schedule == "constant":
        return peak
    warmup = max(1, round(config.warmup * total))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (config.min_lr + (1 - config.min_lr) * 0.5 * (1 + math.cos(math.pi * progress)))


ANNEALED_TAIL = 0.2  # share of the planned epochs, at the end of a decaying schedule, in which patience counts


def patience_counts_from(config: TrainConfig) -> int:
    """The first epoch whose failure to improve counts towards ``patience``. On a decaying schedule only the
    annealed tail counts: at a higher rate the inner validation loss wanders by about 1% from epoch to epoch
    and the decay still to come brings the last gains (an hsc9 run stopped at 16% of the peak rate kept a
    model 17% worse than the 30-epoch run trained to the end: docs/accuracy.md)."""
    return 0 if config.schedule == "constant" else round(config.epochs * (1 - ANNEALED_TAIL))


def stopped_early(config: TrainConfig, best_epoch: int, epoch: int) -> bool:
    """Whether epoch ``epoch`` need not run: ``patience`` counted epochs since the best one brought nothing
    better."""
    counted_since = max(best_epoch, patience_counts_from(config) - 1)
    return config.patience > 0 and best_epoch >= 0 and epoch - counted_since > config.patience


class EpochLosses:
    """One epoch's training losses, kept on the device and read back every SYNC_EVERY steps.

    Reading a loss makes the host wait for the GPU; reading them in groups lets it queue the next
    steps meanwhile.  A non-finite loss stops training, naming its step.
    """

    def __init__(self, fold: int, seed: int, epoch: int, lr: float, report):
        self.fold, self.seed, self.epoch, self.lr, self.report = fold, seed, epoch, lr, report
        self.pending: list = []
        self.total, self.steps, self.samples, self.started = 0.0, 0, 0, time.perf_counter()
        self.warm: tuple[float, int] | None = None  # (time, samples) at the first read-back

    def add(self, loss, samples: int) -> None:
        self.pending.append(loss.detach())
        self.samples += samples
        if len(self.pending) == SYNC_EVERY:
            self.read_back()

    def read_back(self) -> None:
        if not self.pending:
            return
        import torch

        values = torch.stack(self.pending).tolist()
        self.pending.clear()
        for value in values:
            self.steps += 1
            if not math.isfinite(value):  # stop at once: the state of the last good epoch stays on disk
                where = f"epoch {self.epoch + 1}, step {self.steps}"
                raise _diverged(self.fold, self.seed, where, value, self.lr)
        self.total += sum(values)
        self.report.step(values[-1], self.rate, advance=len(values))
        if self.warm is None:
            self.warm = (time.perf_counter(), self.samples)

    @property
    def rate(self) -> float:
        """Samples per second after the epoch's first SYNC_EVERY steps, whose time holds the warm-up
        (compilation, autotuning: a minute on a GPU, the rate of a short epoch would hide the
        steady one); over the whole epoch until then.  Exact once read back: the GPU has caught up.
        The epoch's wall time, warm-up included, is its record's ``seconds``."""
        now = time.perf_counter()
        if self.warm is None or self.samples == self.warm[1]:
            return self.samples / (now - self.started)
        return (self.samples - self.warm[1]) / (now - self.warm[0])


def _diverged(fold: int, seed: int, where: str, loss: float, lr: float) -> ConfigError:
    return ConfigError(
        f"fold {fold} seed {seed} diverged at {where} (loss {loss:g}); lower --lr (now {lr:g}) "
        f"and give the run a new --name"
    )


@dataclass
class ModelJob:
    """One model to train: fold k and seed r, its rows and normalisation, the settings, and its run."""

    fold: int
    seed: int
    train_rows: np.ndarray
    val_rows: np.ndarray
    norm: tuple[np.ndarray, np.ndarray]  # per-band mean and std over the training folds
    model_config: Any
    config: TrainConfig  # made for the device (TrainConfig.for_device)
    grid: Any
    run: RunDir


def train_one(job: ModelJob, source: CubeSet, device, dist_info, report) -> dict:
    """Train (or resume, or skip when finished) the model of one fold and seed. Returns its metrics."""
    import torch

    from mmzcli import metrics, pdf
    from mmzcli.model import PhotoZNet

    fold, seed, config, grid, run = job.fold, job.seed, job.config, job.grid, job.run
    train_rows, val_rows, norm = job.train_rows, job.val_rows, job.norm
    rank, world, distributed = dist_info
    final = run.model_path(fold, seed)
    if final.exists():
        try:
            metrics_done = load_checkpoint(final).get("metrics", {})
            report.note(f"fold {fold} seed {seed}: finished ({final.name}); not trained again")
            return metrics_done
        except CheckpointError:  # damaged, foreign or without weights: nothing to keep
            report.note(f"fold {fold} seed {seed}: {final.name} holds no usable model; training it again")
    state_path = run.state_path(fold, seed)

    def fresh_model():
        torch.manual_seed(_seed(seed, fold))
        model = PhotoZNet(job.model_config)
        model.norm_mean.copy_(torch.as_tensor(norm[0]))
        model.norm_std.copy_(torch.as_tensor(norm[1]))
        return model, torch.optim.Adam(model.parameters(), lr=peak_lr(config))

    model, optimizer = fresh_model()
    best: dict[str, Any]  # "loss" (float) and "epoch" (int) of the best epoch so far
    start, best, history = 0, {"loss": math.inf, "epoch": -1}, []
    best_state = None
    state = None
    if state_path.exists():
        try:
            state = load_checkpoint(state_path, kind=STATE_FORMAT)
        except CheckpointError:  # damaged or foreign: the state of a model is only a cache of its epochs
            report.note(
                f"fold {fold} seed {seed}: {state_path.name} holds no usable training state; "
                f"training this model from its first epoch"
            )
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start, best, history, best_state = state["epoch"] + 1, state["best"], state["history"], state["best_model"]
            report.note(f"fold {fold} seed {seed}: resuming after epoch {start} ({state_path.name})")
        except (RuntimeError, KeyError, ValueError) as exc:  # another network's state, copied in by hand
            model, optimizer = fresh_model()  # load_state_dict may have copied part of it
            report.note(
                f"fold {fold} seed {seed}: {state_path.name} is the state of another network "
                f"({str(exc).splitlines()[0][:80]}); training this model from its first epoch"
            )
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)  # type: ignore[call-overload]  # documented; torch's overloads omit it
    for value in optimizer.state.values():  # the optimiser state follows the model to its device
        for key, tensor in value.items():
            if torch.is_tensor(tensor) and key != "step":
                value[key] = tensor.to(device)
    net: Any = model  # becomes DistributedDataParallel and/or compiled: each called as the model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    uncompiled = net
    if config.compile:
        report.log("torch.compile: the model is compiled at its first step (eager again if that fails)")
        net = torch.compile(net)

    steps = len(train_rows) // (config.batch_size * world)
    for epoch in range(start, config.epochs):
        if stopped_early(config, best["epoch"], epoch):  # checked before each epoch: a resumed run stops alike
            tail = f" of the cosine's last {ANNEALED_TAIL:.0%}" if patience_counts_from(config) else ""
            report.note(
                f"fold {fold} seed {seed}: stopped after epoch {epoch}, no better inner validation "
                f"loss for {config.patience} epochs{tail} (best: epoch {best['epoch'] + 1})"
            )
            break
        torch.manual_seed(_seed(seed, fold, epoch))
        rng = np.random.default_rng(_seed(seed, fold, epoch))
        model.train()
        losses = EpochLosses(fold, seed, epoch, config.lr, report)
        report.start_epoch(fold, seed, epoch, steps)
        for batch_number, (x, ok, ebv, z) in enumerate(
            source.batches(train_rows, config.batch_size, rng, (rank, world)), 1
        ):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, epoch * steps + batch_number - 1, config.epochs * steps)

            batch = (x, ok, ebv, z)
            try:
                loss = train_step(net, optimizer, batch, grid, device, bool(config.amp))
            except Exception as exc:  # torch.compile fails in training on some stacks (torch 2.13 CPU)
                if net is uncompiled:
                    raise
                report.note(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); training uncompiled")
                net = uncompiled
                loss = train_step(net, optimizer, batch, grid, device, bool(config.amp))
            losses.add(loss, len(z) * world)
        losses.read_back()
        precise_batch_norm(model, source, train_rows, config, _seed(seed, fold, epoch, 1))
        pdfs, _, val_loss = evaluate_rows(model, source, val_rows, grid, device, config)
        if not math.isfinite(val_loss):
            raise _diverged(fold, seed, f"epoch {epoch + 1}, in validation", val_loss, config.lr)
        z_phot = pdf.median(pdfs, grid.edges())
        scores = metrics.summary(z_phot, source.z[val_rows], report.threshold)
        record = {
            "epoch": epoch,
            "train_loss": losses.total / max(losses.steps, 1),
            "val_loss": val_loss,
            "val_sigma_mad": scores["sigma_mad"],
            "val_eta": scores["eta"],
            "samples_per_s": losses.rate,
            "seconds": time.perf_counter() - losses.started,  # the epoch's training and inner validation
            "lr": optimizer.param_groups[0]["lr"],
        }
        history.append(record)
        if val_loss < best["loss"]:
            best = {"loss": val_loss, "epoch": epoch}
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        report.end_epoch(record)
        if rank == 0:
            _save(
                checkpoint_of(
                    STATE_FORMAT,
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "epoch": epoch,
                        "best": best,
                        "best_model": best_state,
                        "history": history,
                    },
                ),
                state_path,
            )
        if distributed:
            torch.distributed.barrier()

    if best_state is None:  # never a finished model without weights
        raise ConfigError(
            f"{state_path}: no epoch of fold {fold} seed {seed} reached a finite validation loss, so "
            f"there is no model to keep; remove the file, lower --lr (now {config.lr:g}) and give the "
            f"run a new --name"
        )
    result = {
        "fold": fold,
        "seed": seed,
        "best_epoch": best["epoch"],
        "epochs_trained": len(history),
        "validation": "inner",  # the val_ figures: the inner validation set, never the held-out fold
        "train_objects": len(train_rows),
        "validation_objects": len(val_rows),
        "val_loss": best["loss"],
        **{k: v for k, v in history[best["epoch"]].items() if k.startswith("val_")},
        "history": history,
    }
    if rank == 0:
        _save(
            checkpoint_of(MODEL_FORMAT, {"model": best_state, "config": asdict(job.model_config), "metrics": result}),
            final,
        )
        state_path.unlink(missing_ok=True)
    if distributed:
        torch.distributed.barrier()
    return result


# ----------------------------------------------------------------------------- reporting


class Report:
    """Progress on the terminal (rich) and one line per epoch in the run's log; silent off rank 0.

    In a worker process (``--jobs``) there is no terminal: ``sink`` takes the lines for the parent to show.
    """

    def __init__(self, console, log_path: Path | None, threshold: float, sink=None):
        self.console, self.log_path, self.threshold, self.sink = console, log_path, threshold, sink
        self.progress, self.task = None, None

    def __enter__(self):
        if self.console is not None and not self.console.quiet:
            from mmzcli.progress import progress_bar

            self.progress = progress_bar(
                self.console, "loss {task.fields[loss]:.3f}  {task.fields[rate]:.0f} samples/s"
            )
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def start_epoch(self, fold, seed, epoch, steps):
        self.where = f"fold {fold} seed {seed} epoch {epoch + 1}"
        if self.progress is not None:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(self.where, total=steps, loss=0.0, rate=0.0)

    def step(self, loss, rate, advance=1):
        if self.progress is not None:
            self.progress.update(self.task, advance=advance, loss=loss, rate=rate)

    def end_epoch(self, record):
        self.note(
            f"{self.where}: train loss {record['train_loss']:.4f}  val loss {record['val_loss']:.4f}  "
            f"sigma_MAD {record['val_sigma_mad']:.4f}  eta {record['val_eta']:.3f}  "
            f"{record['samples_per_s']:.0f} samples/s"
        )

    def note(self, line: str):
        """A line for the log and the terminal: an epoch, a model skipped, resumed or replaced."""
        self.log(line)
        self.show(line)

    def show(self, line: str):
        if self.progress is not None:
            self.progress.console.print(line)
        if self.sink is not None:
            self.sink(line)

    def log(self, line: str):
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")


# ----------------------------------------------------------------------------- where the models train


def cube_set(group, rows: np.ndarray, device, config: TrainConfig) -> CubeSet:
    """The cubes of ``rows`` for training or prediction on ``device``; each of the --jobs processes holds its own."""
    return CubeSet(
        group,
        rows,
        device,
        dtype=config.cube_dtype,
        memory_fraction=config.memory_fraction / config.jobs,
        stream_chunks=config.stream_chunks,
        channels_last=bool(config.channels_last),
    )


_WORKER: dict[str, Any] = {}  # a --jobs process: its cube set, device and the queue of lines to show


def _start_worker(
    store_path: Path, rows: np.ndarray, device, config: TrainConfig, threads: int, lines, parent: int
) -> None:
    import threading

    def exit_with_parent() -> None:  # a killed mmz train must not leave models training without its run lock
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True).start()  # before the seconds of importing torch

    import torch

    from mmzcli.store import open_store

    torch.set_num_threads(threads)
    _WORKER.update(source=cube_set(open_store(store_path), rows, device, config), device=device, lines=lines)


def _train_in_worker(job: ModelJob, log_path: Path | None, threshold: float) -> dict:
    with Report(None, log_path, threshold, sink=_WORKER["lines"].put) as report:
        return train_one(job, _WORKER["source"], _WORKER["device"], (0, 1, False), report)


def train_in_processes(
    jobs: list[ModelJob], store_path: Path, rows: np.ndarray, device, config: TrainConfig, report: Report
) -> None:
    """Train ``config.jobs`` models at a time, one process each, to fill a GPU that one small model leaves idle.

    Every model is the one ``train_one`` makes alone (its own rows, seeds and checkpoints), so a run is
    resumable and, with the same threads per model, bit-identical to sequential training.  Processes are
    spawned (CUDA cannot fork); on the CPU they share its cores.  A model that fails stops the models not
    yet started; those already training finish theirs.
    """
    import multiprocessing
    import queue
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    import torch

    context = multiprocessing.get_context("spawn")
    lines = context.Queue()

    def show_lines() -> None:
        while True:
            try:
                report.show(lines.get_nowait())
            except queue.Empty:
                return

    workers = min(config.jobs, len(jobs))
    threads = max(1, torch.get_num_threads() // workers)
    report.log(f"start: {len(jobs)} models, {workers} at a time, one process each ({threads} CPU threads)")
    if device.type == "cuda" and workers > 1 and not mps_running():
        report.note(
            f"CUDA MPS is not running, so the {workers} processes take turns on the GPU; start it "
            f"(nvidia-cuda-mps-control -d) to run their kernels side by side (1.8x on an H200)"
        )
    setup = (store_path, rows, device, config, threads, lines, os.getpid())
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=setup) as pool:
        running = {pool.submit(_train_in_worker, job, report.log_path, report.threshold) for job in jobs}
        try:
            while running:
                finished, running = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                show_lines()
                for future in finished:
                    future.result()  # a worker's error, raised here
        except BaseException:
            for future in running:
                future.cancel()
            raise
    show_lines()


# ----------------------------------------------------------------------------- a run


@dataclass
class RunSpec:
    """What the command line asks for; ``model_config`` turns it into the network's configuration."""

    fusion: str = "early"
    fusion_type: str = "concat"
    modality_size: int = 2
    orders: tuple[int, ...] = (1,)
    modalities: str | None = None  # explicit "u,g;g,r"
    baseline: bool = False
    all_band_modality: bool = False
    modality_dropout: bool = False
    width: float = 1.0
    norm: str = "none"  # none (the paper) | batch: learns much faster at the small widths of CPU studies
    train: TrainConfig = field(default_factory=TrainConfig)

    def default_name(self) -> str:
        subset = f"-f{self.train.train_fraction:g}" if self.train.train_fraction < 1 else ""
        return self._configuration_name() + subset

    def _configuration_name(self) -> str:
        if self.baseline:
            return f"baseline-w{self.width:g}" + ("-bn" if self.norm == "batch" else "")
        if self.modalities:
            return f"{self.fusion}-custom-w{self.width:g}"
        orders = "".join(map(str, self.orders))
        extras = ("-all" if self.all_band_modality else "") + ("-mdrop" if self.modality_dropout else "")
        extras += "-bn" if self.norm == "batch" else ""
        return f"{self.fusion}-{self.fusion_type}-s{self.modality_size}o{orders}{extras}-w{self.width:g}"


def model_config(spec: RunSpec, profile):
    from mmzcli.model import ModelConfig, add_modalities, modalities_from_profile, parse_modalities

    bands = tuple(profile.band_names)
    groups: tuple[tuple[str, ...], ...]
    if spec.baseline:
        groups = (bands,)
    elif spec.modalities:
        groups = add_modalities(
            parse_modalities(spec.modalities, bands),
            bands,
            all_band=spec.all_band_modality,
            single_band=spec.modality_dropout,
        )
    else:
        groups = modalities_from_profile(
            bands, spec.modality_size, spec.orders, all_band=spec.all_band_modality, single_band=spec.modality_dropout
        )
    grid = profile.redshift_grid
    return ModelConfig(
        bands=bands,
        modalities=groups,
        fusion=spec.fusion,
        fusion_type=spec.fusion_type,
        n_bins=grid.n_bins,
        z_min=grid.z_min,
        z_max=grid.z_max,
        width=spec.width,
        modality_dropout=spec.modality_dropout,
        norm=spec.norm,
    )


INFORMATIONAL = ("mmz_version", "store_path")  # recorded in config.yaml, never compared
_MISSING = object()  # a key one of two config.yaml mappings lacks
# settings added since runs were first made, with the value they implicitly had before, so older runs continue
SETTINGS_BEFORE = {"train.cube_dtype": "float32", "train.train_fraction": 1.0, "train.precise_bn": 0}


def settings_difference(previous: dict, current: dict, prefix: str = "") -> tuple[str, str, str] | None:
    """The first setting that differs between two ``config.yaml`` mappings: (dotted key, old, new), shown short.

    Only what changes the weights counts: not the mmz version, nor the store's path (the store counts by its
    ``inputs_key``, so ``--project P`` and ``cd P; --project .`` are one run).  Runs that recorded the store's
    path as typed (before ``inputs_key``) are not compared on the store.
    """

    def show(value) -> str:
        if value is _MISSING:
            return "(none)"
        short = f"{value:g}" if isinstance(value, float) else ""  # 1e+12, not 1000000000000.0
        text = short if short and float(short) == value else repr(value)
        return text if len(text) <= 60 else text[:57] + "..."

    for key in [*current, *(k for k in previous if k not in current)]:
        old, new = previous.get(key, SETTINGS_BEFORE.get(prefix + key, _MISSING)), current.get(key, _MISSING)
        if not prefix and (key in INFORMATIONAL or (key == "store" and isinstance(old, str))):
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            found = settings_difference(old, new, f"{prefix}{key}.")
            if found is not None:
                return found
        elif old != new:
            return f"{prefix}{key}", show(old), show(new)
    return None


@releases_locks
def train_run(
    project: Path, profile, spec: RunSpec, *, name: str | None = None, dry_run: bool = False, console=None
) -> dict:
    """``mmz train``: every fold x seed of one configuration, then the out-of-fold PDFs."""
    import torch
    import yaml

    from mmzcli import __version__, metrics, pdf
    from mmzcli.atomic import atomic_write_text
    from mmzcli.model import PhotoZNet, count_parameters
    from mmzcli.runs import runs_dir
    from mmzcli.store import cubes_path, open_store

    config = model_config(spec, profile)
    if dry_run:
        with torch.device("meta"):  # the layout and the count, without allocating the weights
            model = PhotoZNet(config)
        print(model.summary())
        print(f"parameters: {count_parameters(model)}")
        return {"parameters": count_parameters(model)}

    store_path = cubes_path(project)
    group = open_store(store_path)
    if list(group.attrs["bands"]) != profile.band_names:
        raise InputError(
            f"{store_path}: its bands ({', '.join(group.attrs['bands'])}) differ from profile "
            f"{profile.name}'s ({', '.join(profile.band_names)}); use the profile it was built with"
        )
    rows = labelled_rows(group)
    if len(rows) == 0:
        raise InputError(f"{store_path}: no labelled object (usable Z_SPEC and image data); nothing to train on")
    folds = group["fold"][:]
    inner = inner_validation(group["id"][:])
    kept = training_subset(group["id"][:], spec.train.train_fraction)
    for k in spec.train.folds:
        if not 0 <= k < group.attrs["n_folds"]:
            raise ConfigError(f"--fold {k}: the store has folds 0..{group.attrs['n_folds'] - 1}")
        train_rows, val_rows = training_split(rows, folds, inner, k, kept)
        if not len(train_rows) or not len(val_rows) or not np.any(folds[rows] == k):
            raise InputError(
                f"{store_path}: fold {k} leaves no training, inner validation or held-out object "
                f"({len(train_rows)}, {len(val_rows)}, {int(np.sum(folds[rows] == k))}); a larger sample is needed"
            )

    cuda = spec.train.device != "cpu" and torch.cuda.is_available()
    rank, world, distributed = init_distributed("nccl" if cuda else "gloo")
    device = resolve_device(spec.train.device)
    train = spec.train.for_device(device)
    if train.jobs > 1 and distributed:
        raise ConfigError("--jobs: under torchrun every process trains its share already; leave --jobs out")
    grid = profile.redshift_grid
    name = name or spec.default_name()
    run = RunDir(runs_dir(project) / name)
    run_dir = run.path
    settings = {
        "mmz_version": __version__,
        "profile": profile.name,
        "store": {"inputs_key": group.attrs.get("inputs_key")},  # what it holds, not how P was spelled
        "store_path": str(store_path.resolve()),  # for information: not compared
        "model": asdict(config),
        "run": {k: v for k, v in asdict(spec).items() if k != "train"},
        "train": {k: v for k, v in asdict(train).items() if k in WEIGHT_SETTINGS},
    }
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as YAML reads them back
    if rank == 0:
        hold_run_lock(run_dir, spec.train.folds)  # one mmz train per fold of a run (torchrun: rank 0)
        run_dir.mkdir(parents=True, exist_ok=True)
        config_path = run.config_path
        if config_path.exists():
            differs = settings_difference(run.settings(), settings)
            if differs is not None:
                key, old, new = differs
                raise ConfigError(
                    f"{config_path}: run '{name}' exists with other settings ({key}: {old} there, "
                    f"{new} now); repeat its settings to continue it, or give these a new --name"
                )
        else:
            atomic_write_text(config_path, yaml.safe_dump(settings, sort_keys=False))
        atomic_write_text(run.profile_path, yaml.safe_dump(profile.to_dict(), sort_keys=False))  # for predict
    if distributed:
        torch.distributed.barrier()

    log_path = run.log_path if rank == 0 else None
    with Report(console if rank == 0 else None, log_path, profile.outlier_threshold) as report:
        jobs = []
        for fold in spec.train.folds:
            norm = fold_normalisation(group, fold)
            if norm is None:  # a store of mmz 0.1: its statistics include fold k
                report.note(
                    f"{store_path} has no per-fold normalisation (built by mmz 0.1); using all folds' "
                    f"statistics: rebuild it (mmz build-cubes --overwrite) so that fold {fold} never counts"
                )
                norm = (group["norm/mean"][:], group["norm/std"][:])
            split = training_split(rows, folds, inner, fold, kept)
            if train.train_fraction < 1:
                report.log(
                    f"fold {fold}: training on {len(split[0])} objects ({train.train_fraction:.0%} of its training "
                    f"objects, --train-fraction); inner validation {len(split[1])}, "
                    f"held out {np.sum(folds[rows] == fold)}"
                )
            jobs += [ModelJob(fold, seed, *split, norm, config, train, grid, run) for seed in range(spec.train.seeds)]
        source = None  # the cubes of every labelled row, when this process trains (not --jobs)
        if train.jobs > 1:
            train_in_processes(jobs, store_path, rows, device, train, report)
        else:
            source = cube_set(group, rows, device, train)
            report.log(
                f"start: {len(rows)} labelled objects ({'held on the device' if source.resident else 'streamed'}, "
                f"{train.cube_dtype}), device {device}, world size {world}, "
                f"{'channels_last' if train.channels_last else 'NCHW'}, compile {'on' if train.compile else 'off'}, "
                f"{'bf16' if train.amp else 'float32'}"
            )
            for job in jobs:
                train_one(job, source, device, (rank, world, distributed), report)

    summary: dict[str, Any] = {}
    if rank == 0:  # over every finished model of the run, also those trained by other commands (--fold K)
        done = run.finished_folds(group.attrs["n_folds"], spec.train.seeds)
        summary["models"] = [
            load_checkpoint(run.model_path(k, r))["metrics"] for k in done for r in range(spec.train.seeds)
        ]
        if source is None:  # trained by --jobs workers: the finished folds' cubes, read here once
            source = cube_set(group, rows[np.isin(folds[rows], done)], device, train)
        oof = out_of_fold(run, source, rows, folds, done, spec.train.seeds, train, grid, group, device)
        summary["oof"] = metrics.summary(pdf.median(oof["pdf"], grid.edges()), oof["z_spec"], profile.outlier_threshold)
        atomic_write_text(run.metrics_path, json.dumps(summary, indent=1))
        if console is not None:
            o = summary["oof"]
            console.print(
                f"run {name}: {o['n']} out-of-fold objects, sigma_MAD {o['sigma_mad']:.4f}, "
                f"eta {o['eta']:.3f}, bias {o['bias']:+.4f} -> {run_dir}"
            )
    if distributed:
        torch.distributed.barrier()
    return summary


def training_split(
    rows: np.ndarray, folds: np.ndarray, inner: np.ndarray, fold: int, kept: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train, inner validation) rows of ``fold``: the other folds, split by ``inner`` (an id hash); of the
    training rows only the ``kept`` ones (``--train-fraction``), the inner validation set stays whole.

    The held-out fold takes no part: it is predicted once, out of fold, at the end.
    """
    training = rows[folds[rows] != fold]
    train = training[~inner[training]]
    return (train if kept is None else train[kept[train]]), training[inner[training]]


def fold_normalisation(group, fold: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-band mean and std of compressed pixels over the labelled objects of every fold but ``fold``.

    None for a store without per-fold sums (mmz 0.1).
    """
    if "norm/fold_sums" not in (group.attrs.get("arrays") or []):
        return None
    sums = group["norm/fold_sums"][:]
    return normalisation(np.delete(sums, fold, axis=0).sum(axis=0))


def out_of_fold(run: RunDir, source: CubeSet, rows, folds, done, seeds: int, config, grid, group, device) -> dict:
    """The labelled objects of the ``done`` folds, predicted by the models that did not see them (mean over seeds)."""
    from mmzcli.atomic import atomic_path

    parts = []
    for fold in done:
        val_rows = rows[folds[rows] == fold]
        pdfs, regs = 0.0, 0.0
        for seed in range(seeds):
            model = build_model(load_checkpoint(run.model_path(fold, seed)), device)
            p, r, _ = evaluate_rows(model, source, val_rows, grid, device, config)
            pdfs, regs = pdfs + p / seeds, regs + r / seeds
        parts.append((val_rows, pdfs, regs))
    order = np.concatenate([p[0] for p in parts])
    oof = {
        "id": group["id"][:][order],
        "fold": folds[order],
        "z_spec": source.z[order],
        "mag_ref": group["mag_ref"][:][order],
        "ebv": source.ebv[order],
        "pdf": np.concatenate([p[1] for p in parts]).astype(np.float32),
        "z_reg": np.concatenate([p[2] for p in parts]).astype(np.float32),
    }
    with atomic_path(run.oof_path) as tmp:
        np.savez(tmp, **oof)
    return oof
