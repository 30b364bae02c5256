"""The ``colearn`` command line. It parses arguments and calls the library; no logic here."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from colearning import __version__
from colearning.errors import ColearningError, ConfigError

EPILOG = "Exit codes: 0 ok, 2 bad config/arguments, 3 bad data, 4 run-directory problem, " \
         "5 diverged, 6 another process of a distributed run failed, 130/143/129 interrupted " \
         "(SIGINT/SIGTERM/SIGHUP), 1 crash."


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a co-learning ensemble into a run directory",
        description="Train a co-learning ensemble. The config is the YAML file, then key=value "
                    "overrides (e.g. loss.beta=-0.2 ensemble.n_members=5); unknown keys are "
                    "errors. Writes config.yaml, metrics.jsonl, checkpoint.pt, predictions.npz "
                    "and summary.json into the run directory.",
        epilog=EPILOG)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides in dotted form, values parsed as YAML")
    p.add_argument("--config", "-c", help="YAML config file (default: built-in defaults)")
    p.add_argument("--run-dir", help="run directory to create (default: a new one under ./runs)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="training device (same as device=...); default: config's, i.e. auto")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--nproc", type=int, metavar="K",
                   help="split the members over K processes on this machine (torchrun "
                        "--standalone --nproc-per-node K -m colearning train ...): gloo on "
                        "CPU, NCCL with one GPU per process; rank 0 writes the run directory")


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="run a grid of co-learning runs (beta, N, seeds, ...) and tabulate them",
        description="Run every cell of a sweep file (a base run config and a grid of values) "
                    "into SWEEP_DIR/cells/<name>/, then write results.csv (one row per cell), "
                    "summary.csv (mean/std/count over seeds per (N, beta)) and epochs.csv "
                    "(+ .parquet with pyarrow). Rerunning resumes: finished cells are skipped, "
                    "interrupted ones continue from their checkpoints, failed ones are retried. "
                    "colearn report SWEEP_DIR draws the paper's figures. Exits 1 when a cell "
                    "failed (its error is in cells/<name>/cell_error.json), 130 when stopped.",
        epilog=EPILOG)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides of the base run config (e.g. train.epochs=20); not of a "
                        "grid key (grids live in the sweep file); with --resume only "
                        "train.epochs=M, which extends every cell to M epochs")
    p.add_argument("--config", "-c", help="sweep YAML file (see configs/sweeps/)")
    p.add_argument("--out", "-o", help="sweep directory (default: sweeps/<sweep name>)")
    p.add_argument("--resume", metavar="SWEEP_DIR",
                   help="continue the sweep in SWEEP_DIR (its saved sweep.yaml); with "
                        "train.epochs=M, extend every cell to M epochs")
    p.add_argument("--seeds", type=int, metavar="K", help="use seeds 0..K-1 instead of the file's")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local worker processes (default) or Ray tasks")
    p.add_argument("--workers", "-j", type=int, metavar="K",
                   help="parallel cells (local: processes, default one per core on CPU; "
                        "ray: CPUs of a local Ray)")
    p.add_argument("--address", help="Ray cluster address: auto, HOST:6379, or "
                   "ray://HOST:10001 (needs ray[client]); default: a local Ray")
    p.add_argument("--pack", default="auto", metavar="auto|off|K",
                   help="train compatible cells together as packs, their members stacked in "
                        "one engine (each cell still writes its own run directory): auto "
                        "(default; on CUDA packs of up to --pack-members members, on CPU no "
                        "packing, which measured no gain there), off (one cell at a time) or "
                        "K (up to K cells a pack)")
    p.add_argument("--pack-members", type=int, metavar="M",
                   help="most members in one pack (default with --pack auto: 400 on CUDA; "
                        "giving it turns packing on for CPU too)")
    p.add_argument("--cpus-per-cell", type=float, default=1.0,
                   help="Ray: CPUs per task (one pack, or one cell with --pack off)")
    p.add_argument("--gpus-per-cell", type=float, default=0.0,
                   help="Ray: GPUs per task (one pack, or one cell with --pack off); a fraction "
                        "shares one GPU between tasks")
    p.add_argument("--dry-run", action="store_true", help="say what the run would do, "
                   "train and write nothing: its refusal, or per cell: left as it is, new, "
                   "resumed, extended or refused (and why)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="draw the paper's figures and an HTML report from a run or sweep",
        description="Read a finished (or stopped) run directory and write PNG figures plus one "
                    "self-contained report.html: learning curves (Fig. 2a), KL vs distance "
                    "trajectories (2b), the JS matrix (4a), MDS trajectories (4b), per-sample "
                    "agreement, entropy and votes (5a-c), activation sparsity, mean activation "
                    "and weight histograms (6a-c), Tables S3/S4, convergence (S2b), combiners, "
                    "NLL/Brier/ECE with a reliability diagram, the run status, collapse "
                    "warnings and the config. Reads saved files only; never trains. A sweep "
                    "directory (with sweep.yaml) gets the sweep report.",
        epilog=EPILOG)
    p.add_argument("path", metavar="PATH", help="run directory (config.yaml) or sweep directory "
                   "(sweep.yaml)")
    p.add_argument("--out", "-o", metavar="DIR",
                   help="folder for report.html and the PNGs (default: PATH/report)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="sweeps: let a coupling whose cells did not all finish (diverged, "
                        "failed, running) be the optimal beta; by default it is not eligible")


def _add_expand(sub: argparse._SubParsersAction) -> None:
    from colearning.config import EXPAND_MODES

    p = sub.add_parser(
        "expand", help="grow a trained run by M members (add-freeze, add-retrain, boost)",
        description="Grow the finished run RUN_DIR (N members) into a new run of N+M members "
                    "(paper Supp., Table S5). add-freeze: only the M new members train; the "
                    "old ones stay fixed and, with loss.beta != 0, enter the new members' "
                    "coupling. add-retrain: all N+M train together, coupled, for train.epochs "
                    "more epochs. boost: M new members (independent unless loss.beta is set) "
                    "train on the samples that k-m..k+m of the old members classify correctly "
                    "(k = N/2, m = --margin). The rest of the config is the source's, then "
                    "key=value overrides; seed, data split and model must stay the source's. "
                    "The new run records its source in config.yaml (expand.*) and lineage.json; "
                    "resume it with colearn train --resume.",
        epilog=EPILOG)
    p.add_argument("source", metavar="RUN_DIR", help="finished run directory to grow")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. loss.beta=0 train.epochs=50")
    p.add_argument("--add", type=int, required=True, metavar="M", help="new members")
    p.add_argument("--mode", required=True, choices=EXPAND_MODES)
    p.add_argument("--margin", type=int, default=0, metavar="m",
                   help="boost: border = k-m..k+m correct old votes (default 0: the tie)")
    p.add_argument("--run-dir", help="run directory to create (default: RUN_DIR-MODE-addM)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="training device")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_expand_table(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "expand-table", help="reproduce Table S5: grown ensembles vs from-scratch ones",
        description="Per seed: train N members (the base), grow them by M (add-freeze with "
                    "beta 0 and beta, add-retrain, boost) and train N+M from scratch for the "
                    "same and the double epoch budget; then write table_s5.txt/.csv and "
                    "report.html (mean ± std over seeds, paired difference to the base, the "
                    "paper's values). Running again continues where it stopped.",
        epilog=EPILOG)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides of the base run config (e.g. train.epochs=20)")
    p.add_argument("--config", "-c", help="Table S5 YAML file (configs/sweeps/tableS5_*.yaml)")
    p.add_argument("--out", "-o", help="output directory (default: sweeps/<name>)")
    p.add_argument("--resume", metavar="DIR", help="continue the Table S5 run in DIR")
    p.add_argument("--seeds", type=int, metavar="K", help="use seeds 0..K-1 instead of the file's")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="compare the configurations of several sweeps, seed-paired",
        description="Read finished (or stopped) sweep directories and print one Markdown "
                    "table row per configuration (objective and its knob, N): cells "
                    "finished and collapsed, test ensemble and member accuracy (mean +/- std "
                    "over seeds) and JS distance at each cell's validation-selected epoch, "
                    "and the seed-paired difference to the reference configuration with a "
                    "Wilcoxon signed-rank p. Reads saved files only; never trains.",
        epilog=EPILOG)
    p.add_argument("sweeps", nargs="+", metavar="SWEEP_DIR", help="sweep directories")
    p.add_argument("--reference", metavar="CONFIGURATION",
                   help="the configuration differences are taken against, a name from the "
                        "table's first column without its other grid values (default: "
                        "independent, the colearning cells at beta = 0); a name that matches "
                        "no configuration is an error listing the valid ones")
    p.add_argument("--out", "-o", metavar="FILE.csv", help="also write the table as CSV")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure training throughput of every strategy against a member loop",
        description="Time training steps (forward, coupled loss, backward, SGD) of N members "
                    "per engine strategy and of a baseline of N separate nn.Modules in a "
                    "Python loop; print a table (median step time, images/s, member-images/s, "
                    "ratio to the baseline, counted GFLOP/s, peak memory) and write JSON. "
                    "--epoch also times one CIFAR-sized epoch of the trainer end to end.",
        epilog=EPILOG)
    p.add_argument("--models", help="comma-separated models (default: lenet5,vgg9)")
    p.add_argument("--members", help="comma-separated ensemble sizes N (default: 1,2,10,50)")
    p.add_argument("--strategies",
                   help="comma-separated: baseline, loop, grouped, vmap, auto "
                        "(default: baseline,loop,grouped,vmap)")
    p.add_argument("--steps", type=int, help="timed steps per configuration (default 10; 5 "
                                             "on CPU)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 2; 1 on CPU)")
    p.add_argument("--min-time", type=float, metavar="SECONDS",
                   help="timed seconds per configuration at least (default 2; --quick 0)")
    p.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="stop timing a configuration after this much (default 60; 10 on CPU)")
    p.add_argument("--batch-size", type=int, help="images per step (default: 512 lenet5, 256 "
                                                  "vgg9)")
    p.add_argument("--skip", metavar="MODEL:N,...",
                   help="configurations to leave out (default: none; vgg9:50 on CPU; '' for "
                        "none)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--epoch", nargs="?", const="lenet5:50", metavar="MODEL:N,...",
                   help="also time one full epoch (training + evaluation) of each MODEL:N "
                        "(default when given alone: lenet5:50)")
    p.add_argument("--epoch-size", metavar="TRAIN,TEST",
                   help="images in the timed epoch (default 50000,10000: CIFAR-10)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast in the forward")
    p.add_argument("--compile", nargs="?", const="default", metavar="MODE",
                   help="torch.compile the models (MODE: default, reduce-overhead = CUDA "
                        "graphs, max-autotune)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last images (default: on CPU only)")
    p.add_argument("--sgd", default="default", choices=["default", "foreach", "fused"],
                   help="SGD implementation")
    p.add_argument("--quick", action="store_true",
                   help="seconds-long smoke run: lenet5, N=1,2, batch 32, 2 steps, tiny epoch")
    p.add_argument("--out", "-o", default="bench.json",
                   help="JSON file (default bench.json); a directory (existing, or given with a "
                        "trailing /) gets bench.json inside")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colearn", description="Co-learning ensembles of neural networks.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"colearn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_sweep(sub)
    _add_report(sub)
    _add_expand(sub)
    _add_expand_table(sub)
    _add_compare(sub)
    _add_bench(sub)
    return parser


def _run_overrides(args: argparse.Namespace) -> list[str]:
    """key=value overrides plus the ones that --device and --no-progress stand for."""
    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"device={args.device}")
    if args.no_progress:
        overrides.append("train.progress=false")
    return overrides


def _config_xor_resume(args: argparse.Namespace, config_name: str, dir_name: str,
                       extend: bool = False) -> bool:
    """True when exactly one of --config / --resume is given (and --resume alone, or with
    train.epochs=M where ``extend``); else say so."""
    overrides = [item for item in args.overrides
                 if not (extend and item.partition("=")[0].strip() == "train.epochs")]
    if bool(args.config) == bool(args.resume):
        message = f"give --config {config_name} or --resume {dir_name}"
    elif args.resume and extend and (overrides or args.seeds or args.out):
        extra = overrides + ["--seeds"] * bool(args.seeds) + ["--out"] * bool(args.out)
        message = ("--resume takes the saved sweep; its only key=value is train.epochs=M "
                   f"(to extend every cell); drop {' '.join(extra)}")
    elif args.resume and (overrides or args.seeds or args.out):
        message = "--resume takes what was saved; drop key=value, --seeds and --out"
    else:
        return True
    print(f"colearn: error: {message}", file=sys.stderr)
    return False


def _launch(args: argparse.Namespace) -> int:
    """``colearn train --nproc K ...``: the same command as K processes of one job."""
    from colearning.training.launch import launch
    from colearning.training.shard import member_slice

    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    member_slice(_members_of(args), 0, args.nproc)  # count first: K processes for N members
    argv, skip = [], False
    for item in args.argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            argv.append(item)
    code, message = launch([sys.executable, "-m", "colearning", *argv], args.nproc)
    if message:
        where = args.resume or args.run_dir
        hint = (f"; continue with: colearn train --resume {where} --nproc {args.nproc}"
                if where else "")
        print(f"colearn: error: {message}{hint}", file=sys.stderr)
    return code


def _members_of(args: argparse.Namespace) -> int:
    """N of the run ``colearn train`` is asked for (the config, or the run it resumes)."""
    from colearning.config import config_from_dict, load_config, read_yaml
    from colearning.rundir import CONFIG, require_run_dir

    if args.resume:
        return config_from_dict(read_yaml(require_run_dir(args.resume) / CONFIG)
                                ).ensemble.n_members
    return load_config(args.config, _run_overrides(args)).ensemble.n_members


def cmd_train(args: argparse.Namespace) -> int:

    if args.nproc is not None and "WORLD_SIZE" not in os.environ:
        return _launch(args)
    from colearning.training.shard import finish_distributed, init_from_environment

    sharded = init_from_environment(args.device or "auto")
    try:
        return _train(args, quiet=sharded and os.environ.get("RANK", "0") != "0")
    finally:
        if sharded:
            finish_distributed()


def _train(args: argparse.Namespace, quiet: bool) -> int:
    from colearning.config import load_config, parse_overrides
    from colearning.console import format_summary
    from colearning.training import resume, train

    overrides = _run_overrides(args)
    if args.resume:
        if args.config or args.run_dir:
            print("colearn: error: --resume takes the config and directory of the run; "
                  "drop --config/--run-dir", file=sys.stderr)
            return 2
        args.continue_with = f"colearn train --resume {args.resume}"
        run = resume(args.resume, parse_overrides(overrides) if overrides else None)
    else:
        from colearning.training.lifecycle import new_run_dir

        config = load_config(args.config, overrides)
        run_dir = args.run_dir or new_run_dir(config)
        args.continue_with = f"colearn train --resume {run_dir}"
        run = train(config, run_dir=run_dir)
    if not quiet:  # ranks > 0 of a distributed run: rank 0 shows the summary
        print(format_summary(run.summary, title=f"run: {run.run_dir}"))
    return 0 if run.status == "finished" else 5


def cmd_sweep(args: argparse.Namespace) -> int:
    from colearning.sweep.layout import load_sweep_spec
    from colearning.sweep.runner import describe_cells, format_result, run_sweep
    from colearning.sweep.spec import load_spec

    if not _config_xor_resume(args, "SWEEP.yaml", "SWEEP_DIR", extend=True):
        return 2
    if args.resume:  # with train.epochs=M: every cell is extended (runner.check_sweep_dir)
        spec, out = load_sweep_spec(args.resume, args.overrides), args.resume
    else:
        spec = load_spec(args.config, args.overrides, seeds=args.seeds)
        out = args.out or f"sweeps/{spec.name}"
    args.continue_with = f"colearn sweep --resume {out}"
    if args.dry_run:
        print(describe_cells(spec, out))
        return 0
    pack = args.pack if args.pack in ("auto", "off") else _positive_int(args.pack, "--pack")
    result = run_sweep(spec, out, backend=args.backend, workers=args.workers,
                       address=args.address, cpus_per_cell=args.cpus_per_cell,
                       gpus_per_cell=args.gpus_per_cell, pack=pack,
                       pack_members=args.pack_members, progress=not args.no_progress)
    print(format_result(result))
    return 0 if result.ok else 130 if result.count("interrupted") else 1


def _positive_int(text: str, flag: str) -> int:
    from colearning.errors import ConfigError

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{flag} must be auto, off or a number >= 1, got {text!r}")
    return value


def cmd_report(args: argparse.Namespace) -> int:
    from colearning.report import build_report

    page = build_report(args.path, args.out, allow_incomplete=args.allow_incomplete)
    print(f"report: {page}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from colearning import rundir
    from colearning.sweep.compare import compare_sweeps, configuration_names, markdown
    from colearning.sweep.table import to_csv

    rows = compare_sweeps(args.sweeps, reference=args.reference)
    print(markdown(rows))
    if args.reference is None and rows and not any(r["is_reference"] for r in rows):
        print("colearn: note: these sweeps have no independent configuration, so no "
              "differences; give --reference NAME, one of: "
              f"{', '.join(configuration_names(rows))}", file=sys.stderr)
    if args.out:
        rundir.atomic_write_text(Path(args.out), to_csv(rows))
        print(f"table: {args.out}")
    return 0


def cmd_expand(args: argparse.Namespace) -> int:
    from colearning.console import format_summary
    from colearning.expand import expand

    overrides = _run_overrides(args)
    run = expand(args.source, args.add, args.mode, overrides, margin=args.margin,
                 run_dir=args.run_dir)
    print(format_summary(run.summary, title=f"run: {run.run_dir} (grown from {args.source})"))
    return 0 if run.status == "finished" else 5


def cmd_expand_table(args: argparse.Namespace) -> int:
    from colearning.expand.table import (
        format_table_s5,
        load_table_s5_dir,
        load_table_s5_spec,
        table_s5,
    )
    from colearning.expand.table_run import run_table_s5

    if not _config_xor_resume(args, "TABLE_S5.yaml", "DIR"):
        return 2
    if args.resume:
        spec, out = load_table_s5_dir(args.resume), args.resume
    else:
        spec = load_table_s5_spec(args.config, args.overrides, seeds=args.seeds)
        out = args.out or f"sweeps/{spec.name}"
    args.continue_with = f"colearn expand-table --resume {out}"
    from colearning.report.table_s5 import build_table_s5_report

    outcomes = run_table_s5(spec, out, progress=not args.no_progress)
    build_table_s5_report(out)
    print(format_table_s5(table_s5(out)))
    problems = [o for o in outcomes if o.status != "finished"]
    for outcome in problems:
        print(f"  {outcome.status}: {outcome.name}" + (f": {outcome.error}" if outcome.error
                                                      else ""), file=sys.stderr)
    print(f"table: {out}/table_s5.txt, {out}/report.html")
    return 0 if not problems else 130 if any(o.status == "interrupted" for o in problems) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from colearning.bench import bench, format_table, output_path, write_json

    out = output_path(args.out)  # checked before any work: a long run's results are not lost
    data = bench(models=args.models, members=args.members, strategies=args.strategies,
                 steps=args.steps, warmup=args.warmup, device=args.device, epoch=args.epoch,
                 epoch_size=args.epoch_size, skip=args.skip, batch_size=args.batch_size,
                 quick=args.quick, time_limit=args.time_limit, min_time=args.min_time,
                 bf16=args.bf16,
                 compile=args.compile, channels_last=args.channels_last, sgd=args.sgd,
                 progress=not args.no_progress)
    print(format_table(data))
    print(f"json: {write_json(data, out)}")
    return 0


COMMANDS = {"train": cmd_train, "sweep": cmd_sweep, "report": cmd_report, "expand": cmd_expand,
            "expand-table": cmd_expand_table, "compare": cmd_compare, "bench": cmd_bench}


def _stopped(stop: Any, args: argparse.Namespace, entry: bool) -> int:
    """The one line of a run stopped by a signal (rank 0 only); its exit code."""
    if entry:  # the process's entry point: it is ending, and more signals of a burst must
        # not turn the interpreter's exit into a traceback
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
    if not _rank_label():  # the ranks of a distributed run stop together: one line
        print(f"colearn: stopped by {stop}: checkpoint written; continue with: "
              f"{args.continue_with or _resume_command(stop)}", file=sys.stderr)
    return 128 + stop.signum


def _stopped_run(error: BaseException) -> Any:
    """The Interrupted a KeyboardInterrupt arrived on top of (while it unwound), if any."""
    from colearning.training import Interrupted

    seen = error.__context__
    while seen is not None:
        if isinstance(seen, Interrupted):
            return seen
        seen = seen.__context__
    return None


def _rank_label() -> str:
    """" (rank R)" in a process of a distributed run other than rank 0, else ""."""
    rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"
    return "" if rank == "0" else f" (rank {rank})"


class _Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP outside a training loop: unwinds like Ctrl-C (temporary files are
    removed on the way) and ends with one line and exit 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _exit_at_once(signum: int, _frame: object) -> None:
    """A signal while the command starts (torch half-imported, nothing written): exit at
    once with one line, never a traceback from inside an import."""
    os.write(2, f"colearn: interrupted ({signal.Signals(signum).name}) while starting; "
                "nothing was written\n".encode())
    os._exit(128 + signum)


def _raise_signalled(signum: int, _frame: object) -> None:
    raise _Signalled(signum)


def _start_up() -> None:
    """The process's start: import the heavy libraries with every stop signal exiting at once,
    then let SIGINT raise KeyboardInterrupt and SIGTERM/SIGHUP :class:`_Signalled` (training
    loops and sweeps install their own handlers on top)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_at_once)
    import numpy  # noqa: F401
    import torch  # noqa: F401

    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_signalled)


def _tolerant_streams() -> None:
    """Print any path, even one of non-UTF-8 bytes, instead of failing to encode it."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the process's entry point (colearn, python -m colearning)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _exit_at_once)
    _tolerant_streams()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills a positional list once, so key=value after options (colearn expand
    # RUN_DIR --add 5 --mode boost loss.beta=0) arrives here: it belongs to the overrides.
    if extra and (not isinstance(getattr(args, "overrides", None), list)
                  or any(item.startswith("-") for item in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides += extra
    args.continue_with = None  # a command sets it once it knows where its results go
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if argv is None:
        _start_up()
    try:
        from colearning.training import Interrupted

        try:
            from colearning.config import check_environment

            check_environment()
            return COMMANDS[args.command](args)
        except ColearningError as error:
            if not getattr(error, "echo", False):  # rank 0's error, said once by rank 0
                print(f"colearn: error{_rank_label()}: {error}", file=sys.stderr)
            return error.exit_code
        except Interrupted as stop:
            return _stopped(stop, args, entry=argv is None)
        except (MemoryError, RuntimeError) as error:  # an allocation no estimate foresaw
            from colearning.training.resources import allocation, out_of_memory

            if not out_of_memory(error):
                raise
            print(f"colearn: error{_rank_label()}: out of memory ({allocation(error)}); "
                  "lower ensemble.n_members or train.batch_size, or free memory; run "
                  "directories keep their last checkpoint", file=sys.stderr)
            return ConfigError.exit_code
    except KeyboardInterrupt as interrupt:  # Ctrl-C outside a training loop
        stopped = _stopped_run(interrupt)
        if stopped is not None:  # a later Ctrl-C of a burst, while a stopped run unwound
            return _stopped(stopped, args, entry=argv is None)
        signum = getattr(interrupt, "signum", signal.SIGINT)
        where = (f"; continue with: {args.continue_with}" if args.continue_with
                 else "; nothing was written")
        print(f"colearn: interrupted ({signal.Signals(signum).name}) before training started"
              f"{where}", file=sys.stderr)
        return 128 + signum


def _resume_command(stop: BaseException) -> str:
    paths = getattr(stop, "paths", ())
    return " ; ".join(f"colearn train --resume {p}" for p in paths) or "colearn train --resume"


if __name__ == "__main__":
    sys.exit(main())
