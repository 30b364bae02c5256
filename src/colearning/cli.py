"""The ``colearn`` command line. It parses arguments and calls the library; no logic here."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from colearning import __version__
from colearning.errors import ColearningError

EPILOG = "Exit codes: 0 ok, 2 bad config/arguments, 3 bad data, 4 run-directory problem, " \
         "5 diverged, 130/143 interrupted (SIGINT/SIGTERM), 1 crash."


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colearn", description="Co-learning ensembles of neural networks.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"colearn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from colearning.config import load_config, parse_overrides
    from colearning.console import format_summary
    from colearning.train import resume, train

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"device={args.device}")
    if args.no_progress:
        overrides.append("train.progress=false")
    if args.resume:
        if args.config or args.run_dir:
            print("colearn: error: --resume takes the config and directory of the run; "
                  "drop --config/--run-dir", file=sys.stderr)
            return 2
        run = resume(args.resume, parse_overrides(overrides) if overrides else None)
    else:
        run = train(load_config(args.config, overrides), run_dir=args.run_dir)
    print(format_summary(run.summary, title=f"run: {run.run_dir}"))
    return 0 if run.status == "finished" else 5


COMMANDS = {"train": cmd_train}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from colearning.train import Interrupted

    try:
        return COMMANDS[args.command](args)
    except ColearningError as error:
        print(f"colearn: error: {error}", file=sys.stderr)
        return error.exit_code
    except Interrupted as stop:
        print(f"colearn: {stop}: checkpoint written; continue with colearn train --resume",
              file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
