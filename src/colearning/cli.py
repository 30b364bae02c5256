"""The ``colearn`` command line: it parses the arguments (:mod:`colearning.arguments`), calls
the library, and turns how a command ends (an error, a signal, a diverged run) into one line
and an exit code. Nothing else happens here."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from colearning.arguments import build_parser
from colearning.errors import ColearningError, ConfigError
from colearning.startup import exit_at_once_on_signals

EXIT_DIVERGED = 5  # a run that ended with status diverged (no error: see colearning.errors)


def _run_overrides(args: argparse.Namespace) -> list[str]:
    """key=value overrides plus the ones that --device and --no-progress stand for."""
    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"device={args.device}")
    if args.no_progress or getattr(args, "quiet", False):
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
    from colearning.training.launch import launch, without_nproc
    from colearning.training.shard import member_slice

    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    member_slice(_members_of(args), 0, args.nproc)  # count first: K processes for N members
    code, message = launch([sys.executable, "-m", "colearning", *without_nproc(args.argv)],
                           args.nproc)
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
    quiet = sharded and os.environ.get("RANK", "0") != "0"
    try:
        code, run = _train(args, quiet=quiet)
    finally:
        if sharded:
            finish_distributed()
    if run is not None and not quiet:  # train.evaluate_shift: rank 0, after the processes part
        from colearning.console import format_uncertainty
        from colearning.inference import finish_with_evaluation

        result = finish_with_evaluation(run)
        if result is not None and not args.quiet:
            print(format_uncertainty(result.summary, title=f"evaluation: {result.path}"))
    return code


def _train(args: argparse.Namespace, quiet: bool) -> tuple[int, Any]:
    """(exit code, the run or None) of ``colearn train``."""
    from colearning.config import load_config, parse_overrides
    from colearning.console import format_summary
    from colearning.training import resume, train

    overrides = _run_overrides(args)
    if args.resume:
        if args.config or args.run_dir:
            print("colearn: error: --resume takes the config and directory of the run; "
                  "drop --config/--run-dir", file=sys.stderr)
            return 2, None
        args.continue_with = f"colearn train --resume {args.resume}"
        run = resume(args.resume, parse_overrides(overrides) if overrides else None)
    else:
        from colearning.training.lifecycle import new_run_dir

        config = load_config(args.config, overrides)
        run_dir = args.run_dir or new_run_dir(config)
        args.continue_with = f"colearn train --resume {run_dir}"
        run = train(config, run_dir=run_dir)
    if not quiet and not args.quiet:  # ranks > 0 of a distributed run: rank 0 shows it
        print(format_summary(run.summary, title=f"run: {run.run_dir}"))
    return (0 if run.status == "finished" else EXIT_DIVERGED), run


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
    result = run_sweep(spec, out, progress=not args.no_progress, **_runner_options(args))
    print(format_result(result))
    return 0 if result.ok else 130 if result.count("interrupted") else 1


def _runner_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of colearning.sweep.runner.run_cells given on the command line."""
    pack = args.pack if args.pack in ("auto", "off") else _positive_int(args.pack, "--pack")
    return {"backend": args.backend, "workers": args.workers, "address": args.address,
            "cpus_per_cell": args.cpus_per_cell, "gpus_per_cell": args.gpus_per_cell,
            "pack": pack, "pack_members": args.pack_members}


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

    rows = compare_sweeps(args.sweeps, reference=args.reference, metric=args.metric,
                          epoch=args.epoch)
    print(markdown(rows))
    if args.reference is None and rows and not any(r["is_reference"] for r in rows):
        print("colearn: note: these sweeps have no independent configuration, so no "
              "differences; give --reference NAME, one of: "
              f"{', '.join(configuration_names(rows))}", file=sys.stderr)
    if args.out:
        rundir.atomic_write_text(Path(args.out), to_csv(rows))
        print(f"table: {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from colearning.console import format_evaluation, format_uncertainty
    from colearning.errors import ConfigError
    from colearning.inference import evaluate_run, evaluate_uncertainty

    uncertainty = bool(args.shift or args.ood or args.calibration)
    if args.data is None and not uncertainty:
        raise ConfigError("give --data FILE, --shift corruptions, --ood SET or --calibration")
    if (args.corruptions or args.severities) and not args.shift:
        raise ConfigError("--corruptions and --severities go with --shift corruptions")
    if args.data is not None:
        evaluation = evaluate_run(args.run_dir, args.data, name=args.name, split=args.split,
                                  epoch=args.epoch, batch_size=args.batch_size,
                                  device=args.device, progress=not args.no_progress)
        print(format_evaluation(evaluation.metrics, title=f"evaluation: {evaluation.path}"))
        print(f"metrics: {evaluation.path / 'metrics.json'}")
    if uncertainty:
        result = evaluate_uncertainty(
            args.run_dir, shift=bool(args.shift), ood=args.ood or (),
            calibrate=args.calibration, corruptions=_names(args.corruptions),
            severities=_numbers(args.severities, "--severities"), epoch=args.epoch,
            batch_size=args.batch_size, device=args.device, progress=not args.no_progress)
        print(format_uncertainty(result.summary, title=f"evaluation: {result.path}"))
    return 0


def _names(text: str | None) -> list[str] | None:
    """A comma-separated list of names (None: not given)."""
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


def _numbers(text: str | None, flag: str) -> list[int] | None:
    """A comma-separated list of integers (None: not given); a one-line error otherwise."""
    from colearning.errors import ConfigError

    names = _names(text)
    if names is None:
        return None
    try:
        return [int(name) for name in names]
    except ValueError:
        raise ConfigError(f"{flag} takes integers separated by commas, got {text!r}") from None


def cmd_expand(args: argparse.Namespace) -> int:
    from colearning.console import format_summary
    from colearning.expand import expand

    overrides = _run_overrides(args)
    run = expand(args.source, args.add, args.mode, overrides, margin=args.margin,
                 run_dir=args.run_dir)
    if not args.quiet:
        print(format_summary(run.summary,
                             title=f"run: {run.run_dir} (grown from {args.source})"))
    return 0 if run.status == "finished" else EXIT_DIVERGED


def cmd_distill(args: argparse.Namespace) -> int:
    import json

    from colearning.distillation import COMPARISON, distill, format_comparison

    run = distill(args.teacher, args.out, model=args.model, temperature=args.temperature,
                  weight=args.weight, epochs=args.epochs, members=args.members,
                  epoch=args.teacher_epoch, baseline=args.baseline,
                  overrides=_run_overrides(args))
    if not args.quiet:
        print(format_comparison(json.loads((run.run_dir / COMPARISON).read_text())))
        print(f"student: {run.run_dir}; comparison: {run.run_dir / COMPARISON}")
    return 0 if run.status == "finished" else EXIT_DIVERGED


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

    result = run_table_s5(spec, out, progress=not args.no_progress, **_runner_options(args))
    build_table_s5_report(out)
    print(format_table_s5(table_s5(out)))
    problems = [o for o in result.outcomes if o.status != "finished"]
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


COMMANDS = {"train": cmd_train, "sweep": cmd_sweep, "report": cmd_report,
            "evaluate": cmd_evaluate, "expand": cmd_expand, "distill": cmd_distill,
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


def _raise_signalled(signum: int, _frame: object) -> None:
    raise _Signalled(signum)


def _start_up() -> None:
    """The process's start: import the heavy libraries while every stop signal still exits at
    once (:func:`main` installed that), then let SIGINT raise KeyboardInterrupt and
    SIGTERM/SIGHUP :class:`_Signalled` (training loops and sweeps install their own handlers
    on top)."""
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
        exit_at_once_on_signals()
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
            from colearning.environment import check_environment

            check_environment()
            return COMMANDS[args.command](args)
        except ColearningError as error:
            # a distributed run's error is said once, by rank 0 (colearning.training.run)
            if not getattr(error, "said_by_another_rank", False):
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
        name = signal.Signals(signum).name
        if getattr(interrupt, "cells_checkpointed", False):
            # cells trained in worker processes (colearning.sweep.runner), which got the
            # signal too: each cell that was training checkpointed its own run
            print(f"colearn: interrupted ({name}); every cell that was training "
                  f"checkpointed; continue with: {args.continue_with}", file=sys.stderr)
            return 128 + signum
        where = (f"; continue with: {args.continue_with}" if args.continue_with
                 else "; nothing was written")
        print(f"colearn: interrupted ({name}) before training started{where}", file=sys.stderr)
        return 128 + signum


def _resume_command(stop: BaseException) -> str:
    paths = getattr(stop, "paths", ())
    return " ; ".join(f"colearn train --resume {p}" for p in paths) or "colearn train --resume"


if __name__ == "__main__":
    sys.exit(main())
