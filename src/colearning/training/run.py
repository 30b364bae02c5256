"""Entry points: train a run, resume one, or train many runs together as packs.

    run = colearning.train(load_config("configs/quickstart.yaml"), run_dir="runs/demo")
    colearning.resume("runs/demo")
    runs = train_pack([(config_a, "sweeps/x/cells/a"), (config_b, "sweeps/x/cells/b")])

Each is the same loop (:func:`colearning.training.loop.fit`) on a pack of cells; a plain
run is a pack of one.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from colearning import rundir
from colearning.config import Config, config_from_dict, read_yaml
from colearning.couplings import check_coupling, coupling_matrix
from colearning.data import DATASETS, RawDataset, as_raw
from colearning.engine import Ensemble
from colearning.errors import ColearningError, ConfigError, RunDirError
from colearning.losses import OBJECTIVES
from colearning.models import check_model_options
from colearning.names import check_names
from colearning.training.data import (
    Pool,
    cell_data,
    given_data,
    load_raw,
    make_pool,
    record_data,
    resumed_data,
)
from colearning.training.growth import check_grown, growth_plan
from colearning.training.lifecycle import (
    Run,
    check_new_run_dir,
    checkpoint_position,
    locked_all,
    new_run_dir,
    record_pack,
    resume_state,
    write_new_run,
)
from colearning.training.loop import fit
from colearning.training.metric_log import tensorboard_writer
from colearning.training.pack import check_packable
from colearning.training.plan import MemberPlan, plain_plan
from colearning.training.process import Interrupted, isolated_rng
from colearning.training.resources import (
    allocation,
    check_couplings_fit,
    check_fits,
    out_of_memory,
)
from colearning.training.setup import build_members, resolve_device
from colearning.training.shard import MembersPart, Shard, current_shard
from colearning.training.step import Cell, stacking_order
from colearning.training.teacher import check_teacher, soft_targets


def preflight(config: Config) -> None:
    """Fail fast, before any directory or data is touched, on names that cannot resolve."""
    check_names(config)
    check_model_options(config.model.name, config.model.options)
    DATASETS.get(config.data.name)
    resolve_device(config.device)
    if config.train.log_to == "tensorboard":
        tensorboard_writer()
    check_couplings_fit(config.ensemble.n_members)  # before building the [N, N] matrix
    check_coupling(config.loss, config.ensemble.n_members)  # bad options: one line, now
    check_grown([config], current_shard().world)  # before anything is written
    if config.distill.teacher is not None:
        check_teacher(config)


def train(config: Config | dict[str, Any], run_dir: str | Path | None = None, *,
          data: Any = None) -> Run:
    """Train a new run of ``config`` into ``run_dir`` (default: a new folder under ./runs).

    ``data``: the data itself instead of data.name/data.path (arrays, numpy or torch:
    (x_train, y_train, x_test, y_test[, x_val, y_val]) or a dict of those keys; or (train,
    test[, val]) torch Datasets of (image, label); :mod:`colearning.data.arrays`). The run
    records data.name "arrays" and the data's sha256; resume it with the same ``data=``.
    """
    if isinstance(config, dict):
        config = config_from_dict(config)
    raw = None
    if data is not None:
        config, raw = given_data(config, data)
    preflight(config)
    shard = current_shard()
    _check_split(shard, config.ensemble.n_members)
    path = Path(shard.broadcast(str(run_dir if run_dir is not None else new_run_dir(config))))
    found = _contents(path)  # what a failed start puts back (None: no directory)

    def prepare() -> None:
        with rundir.os_errors(path, "create the run directory"):
            if path.exists() and not path.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))
            check_new_run_dir(path)
            path.mkdir(parents=True, exist_ok=True)

    def start() -> list[_Entry]:
        try:
            write_new_run(path, config)
            if raw is not None:
                record_data(path, raw)
        except BaseException:  # a full disk, an interrupt
            _forget_new_run(path, found)
            raise
        return [_Entry(0, config, path)]

    with _run_directories([path], shard, start, prepare) as entries:
        try:
            return _fit([entries[0].spec()], shard, raw)[0]
        except Exception as error:
            # Failed before its first epoch (bad data, no room, a model that cannot be
            # built): the directory goes back to how it was, so the same --run-dir works on
            # the retry and no empty run directory is left behind. (A stop by a signal keeps
            # the run: its message says how to continue it.)
            if shard.writer and not isinstance(error, Interrupted):
                _forget_new_run(path, found)
            raise


def _check_split(shard: Shard, n_members: int) -> None:
    """Refuse more processes than members before any directory is made; every rank
    refuses, rank 0 says it."""
    try:
        shard.for_members(n_members)
    except ConfigError as error:
        error.said_by_another_rank = not shard.writer
        raise


def _contents(path: Path) -> set[str] | None:
    """The names in ``path`` before a fresh run starts there (None: no such directory)."""
    try:
        return {entry.name for entry in path.iterdir()}
    except OSError:
        return None


def _forget_new_run(path: Path, found: set[str] | None) -> None:
    """Put ``path`` back as :func:`_contents` found it (``found``), unless training began
    (a checkpoint or a metrics line): the files of the fresh start go, and the directory
    itself when it did not exist before."""
    if (path / rundir.METRICS).exists() or (path / rundir.CHECKPOINT).exists():
        return
    for name in sorted(set(_contents(path) or ()) - (found or set())):
        with contextlib.suppress(OSError):
            entry = path / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    if found is None:
        with contextlib.suppress(OSError):
            path.rmdir()


def resume(run_dir: str | Path, overrides: dict[str, Any] | None = None, *,
           data: Any = None) -> Run:
    """Continue the run in ``run_dir`` from its last checkpoint (a finished run is returned
    as it is). ``overrides`` may only repeat the saved config. ``data``: a run trained on
    ``train(config, data=...)`` needs the same data again (checked by its sha256)."""
    path = rundir.require_run_dir(run_dir)
    raw = None if data is None else as_raw(data)

    def start() -> list[_Entry]:
        config, checkpoint, finished = resume_state(path, overrides)
        resumed_data(path, config, raw, needed=finished is None)
        return [_Entry(0, config, path, checkpoint, finished)]

    shard = current_shard()
    with _run_directories([path], shard, start) as entries:
        if entries[0].finished is not None:
            return entries[0].finished
        return _fit([entries[0].spec()], shard, raw)[0]


def train_pack(cells: Sequence[tuple[Config | dict[str, Any], str | Path]]) -> list[Run]:
    """Train (or resume) several runs together: ``cells`` are (config, run directory) pairs
    that may share a pack (:func:`colearning.training.pack.check_packable`).

    A directory that holds a finished run is returned as it is; one that holds a stopped
    run resumes from its checkpoint (with the config it was started with, which must equal
    the given one); an empty or absent one starts fresh. Cells at different checkpoint
    positions train as separate packs, one after the other. Returns the runs in the order
    given; raises Interrupted (after every cell checkpointed) on SIGINT/SIGTERM. Under
    torchrun, the pack's members are split over the processes.
    """
    configs = [c if isinstance(c, Config) else config_from_dict(c) for c, _ in cells]
    paths = [Path(p) for _, p in cells]
    check_packable(configs)
    for config in configs:
        preflight(config)

    def prepare() -> None:
        for path in paths:
            _mkdir(path)

    def start() -> list[_Entry]:
        entries = []
        for position, (config, path) in enumerate(zip(configs, paths, strict=True)):
            if rundir.is_run_dir(path):
                saved, checkpoint, finished = resume_state(path, config.to_dict())
                entries.append(_Entry(position, saved, path, checkpoint, finished))
            else:
                check_new_run_dir(path)
                write_new_run(path, config)
                entries.append(_Entry(position, config, path))
        return entries

    shard = current_shard()
    _check_split(shard, sum(config.ensemble.n_members for config in configs))
    results: dict[int, Run] = {}
    with _run_directories(paths, shard, start, prepare) as entries:
        todo: dict[tuple[int, int], list[_Entry]] = {}
        for entry in entries:
            if entry.finished is not None:
                results[entry.position] = entry.finished
            else:
                todo.setdefault(checkpoint_position(entry.checkpoint), []).append(entry)
        for group in todo.values():
            runs = _fit([entry.spec() for entry in group], shard)
            for entry, run in zip(group, runs, strict=True):
                results[entry.position] = run
    return [results[k] for k in range(len(cells))]


@dataclass
class _Entry:
    """One run directory about to train: its config, checkpoint (None: fresh) or, when it
    already finished, its Run."""

    position: int
    config: Config
    path: Path
    checkpoint: dict[str, Any] | None = None
    finished: Run | None = None

    def spec(self) -> tuple[Config, Path, dict[str, Any] | None]:
        return self.config, self.path, self.checkpoint


@contextlib.contextmanager
def _run_directories(paths: list[Path], shard: Shard, start: Callable[[], list[_Entry]],
                     prepare: Callable[[], None] | None = None) -> Iterator[list[_Entry]]:
    """What ``start`` says about each run directory, with the directories locked.

    In one process: ``prepare()`` (which makes the directories), then ``start()`` and the
    training with all of them locked. Sharded over processes: rank 0 does the same and
    sends the other ranks ``start``'s entries (or its error, which they raise too); they
    train on the same entries and write nothing (only rank 0 writes), so every run
    directory holds exactly what one process writes.
    """
    if not shard.writer:
        entries = shard.broadcast(None)
        if isinstance(entries, BaseException):
            entries.said_by_another_rank = True  # rank 0 says it; this rank exits with its code
            raise entries
        for entry in entries:
            entry.config = copy.deepcopy(entry.config)
            entry.config.train.progress = False  # rank 0 shows the progress
        shard.barrier()
        yield entries
        return
    with contextlib.ExitStack() as stack:
        try:
            if prepare is not None:
                prepare()
            stack.enter_context(locked_all(paths))
            entries = start()
        except ColearningError as error:
            shard.broadcast(error)
            raise
        shard.broadcast(entries)
        shard.barrier()  # every rank has its entries before any trains
        yield entries


def load_ensemble(run_dir: str | Path, epoch: str = "final", *,
                  checkpoint: str | None = None) -> tuple[Ensemble, Config]:
    """The trained members of a run, ready for inference, and the run's config.

    ``ensemble(x)`` gives logits [N, B, C] for images x [B, C, H, W] as the run saw them:
    pixels in [0, 1], standardized by ``ensemble.inputs["mean"]`` / ``["std"]`` (per
    channel) when the run had data.normalize. ``epoch``: ``"final"``, the run's last
    checkpoint (the end of its last completed epoch), or ``"best"``, the validation-best
    epoch a run with train.keep_best kept (best.pt; its summary's best_epoch).
    ``checkpoint``: the older name of ``epoch``. The ensemble is in eval mode.
    """
    if checkpoint is not None:
        epoch = checkpoint
    if epoch not in ("final", "best"):
        raise ConfigError(f"unknown epoch {epoch!r}; valid: final, best")
    path = rundir.require_run_dir(run_dir)
    config = config_from_dict(read_yaml(path / rundir.CONFIG))
    source = path / (rundir.CHECKPOINT if epoch == "final" else rundir.BEST)
    if epoch == "best" and not source.exists():
        raise RunDirError(f"{path} has no {rundir.BEST}: train with train.keep_best=true (and "
                          "data.val_size > 0) to keep the validation-best epoch")
    saved = (rundir.load_checkpoint if epoch == "final" else rundir.load_best)(source)
    inputs = saved.get("inputs")
    if inputs is None:  # a checkpoint from before 0.2: read the shapes off the dataset
        raw = load_raw(config)
        inputs = {"num_classes": raw.num_classes, "in_channels": raw.in_channels,
                  "image_size": raw.image_size, "mean": None, "std": None}
    shape = Pool(torch.empty(0), torch.empty(0), inputs["num_classes"], inputs["in_channels"],
                 inputs["image_size"])
    ensemble = build_members(config, shape, torch.device("cpu"))
    try:
        ensemble.load_state_dict(saved["model"])
    except (RuntimeError, KeyError) as error:
        raise RunDirError(f"{source} does not match the run's model "
                          f"({type(error).__name__}); restore the run's config.yaml") from None
    ensemble.inputs = inputs
    return ensemble.eval(), config


def _say(config: Config, text: str) -> None:
    """A start-up status line on stderr (with the progress bars), so a slow start shows."""
    if config.train.progress:
        print(f"colearn: {text}", file=sys.stderr, flush=True)


def engine_note(ensemble: Ensemble, device: torch.device) -> str:
    """One line saying how the members run, and why not as one wide network if not."""
    strategy = ensemble.resolved_strategy(device)
    if strategy == "grouped":
        return "members run as one wide network (strategy grouped)"
    how = "one after another" if strategy == "loop" else "through torch.func.vmap"
    why = f"; not grouped: {ensemble.grouped_problem}" if ensemble.grouped_problem else ""
    return f"members run {how} (strategy {strategy}{why})"


def _held_rows(specs: list[tuple[Config, Path, dict[str, Any] | None]],
               shard: Shard) -> dict[Path, tuple[int, int]]:
    """Per cell of a sharded run or pack: (first member, count) of its members in this
    process's rows, in the order step.Pack stacks the cells (step.stacking_order)."""
    if not shard.distributed:
        return {}
    order = sorted(specs, key=lambda spec: stacking_order(spec[0].ensemble.n_members,
                                                          spec[0]))
    out, start, rows = {}, 0, shard.local
    for config, path, _ in order:
        n = config.ensemble.n_members
        low, high = max(start, rows.start), min(start + n, rows.stop)
        out[path] = (low - start, max(0, high - low))
        start += n
    return out


def _lone_coupled(config: Config) -> str:
    """What couples the members of a one-member run (which has no peers), "" if nothing."""
    loss = config.loss
    if config.ensemble.n_members != 1:
        return ""
    if loss.objective != "colearning":  # distill teaches one network: not an ensemble's
        alone = not OBJECTIVES.meta(loss.objective).get("ensemble", True)
        return "" if alone else f"loss.objective={loss.objective}"
    for key in ("beta", "beta_bar", "target_js"):
        if getattr(loss, key) not in (None, 0.0):
            return f"loss.{key}"
    return "loss.coupling" if loss.coupling not in ("uniform", "matrix") else ""


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fit(specs: list[tuple[Config, Path, dict[str, Any] | None]],
         shard: Shard | None = None, given: RawDataset | None = None) -> list[Run]:
    """Build the pack's data and member plans, then run the loop (in the runs' RNG scope).
    ``shard``: this process's place among the processes of a sharded run or pack;
    ``given``: the data given in memory (None: read the configs' dataset)."""
    first = specs[0][0]
    shard = shard or Shard()
    total = sum(config.ensemble.n_members for config, _, _ in specs)
    if shard.distributed:
        try:  # every rank refuses alike; rank 0 says it
            check_grown([config for config, _, _ in specs], shard.world)
            if first.train.compile != "off":
                raise ConfigError("train.compile works in one process; set "
                                  "train.compile=off for a run sharded over processes")
            shard = shard.for_members(total)
        except ConfigError as error:
            error.said_by_another_rank = not shard.writer
            raise
    device = resolve_device(first.device)
    started = time.perf_counter()
    with isolated_rng(first):
        if given is None:
            _say(first, f"reading {first.data.name}" + (f" from {first.data.path}"
                                                        if first.data.path else ""))
        raw = load_raw(first, given)
        here = shard.local.stop - shard.local.start if shard.distributed else total
        check_fits(first, raw, here, device, coupled=max(c.ensemble.n_members for c, _, _ in specs))
        pool = make_pool(raw, device)
        seconds = time.perf_counter() - started
        _say(first, f"data ready ({len(pool.labels):,} images, {seconds:.1f} s); building "
                    f"{total} members" + (f" of {len(specs)} runs" if len(specs) > 1 else "")
                    + f" on {device}")
        cells, held = [], _held_rows(specs, shard)
        for config, path, checkpoint in specs:
            if shard.writer and _lone_coupled(config):
                print(f"colearn: warning: {path}: ensemble.n_members=1 is one network, not an "
                      f"ensemble: {_lone_coupled(config)} and the ensemble combiners do nothing "
                      "(set ensemble.n_members >= 2)", file=sys.stderr, flush=True)
            data = cell_data(config, raw, device)
            if config.distill.teacher is not None:  # trains alone: the pool is its own
                pool.soft = soft_targets(config, pool, data, device, path, given,
                                         write=shard.writer)
            if config.expand.source is not None:
                plan = growth_plan(config, pool, data, device, path)
            elif shard.distributed:  # build this process's members only (step.Pack stacks them)
                index, count = held[path]
                part = MembersPart(config.ensemble.n_members, build_members(
                    config, pool, device, n_members=count, first_index=index) if count else None)
                plan = MemberPlan(part, coupling_matrix(config.loss, part.n_members).to(
                    device=device, dtype=torch.float32))
            else:
                plan = plain_plan(config, build_members(config, pool, device))
            cells.append(Cell(config, path, data, plan, checkpoint))
        rows = shard.local
        built = next(cell.plan.trained.held for cell in cells if shard.distributed and
                     cell.plan.trained.held is not None) if shard.distributed else \
            cells[0].plan.trained
        _say(first, engine_note(built, device) + (
            f"; members {rows.start}-{rows.stop - 1} of {total} on rank {shard.rank} of "
            f"{shard.world}" if shard.distributed else ""))
        if len(cells) > 1 and shard.writer:
            record_pack([cell.path for cell in cells], device)
        # fit returns the runs in its own (size-sorted) order: give them back in ours
        try:
            by_path = {run.run_dir: run for run in fit(cells, pool, device, shard)}
        except (MemoryError, RuntimeError) as error:
            if not out_of_memory(error):
                raise
            raise ConfigError(
                f"out of memory while training {total} members on {device} "
                f"({allocation(error)}); the last checkpoint is intact: free memory and resume, "
                "or start again with a smaller ensemble.n_members or train.batch_size "
                "(or --nproc K)") from None
        return [by_path[cell.path] for cell in cells]
