"""The ``colearn`` command's arguments: one argparse sub-parser per command, with the help
texts and the exit codes (:func:`build_parser`). Parsing only; :mod:`colearning.cli` runs the
commands."""

from __future__ import annotations

import argparse

from colearning import __version__

EPILOG = "Exit codes: 0 ok, 2 bad config/arguments, 3 bad data, 4 run-directory problem, " \
         "5 diverged, 6 another process of a distributed run failed, 130/143/129 interrupted " \
         "(SIGINT/SIGTERM/SIGHUP), 1 crash."


def _config_keys() -> str:
    """The config keys by section, read off the config dataclasses (so the list cannot drift
    from them); their defaults and meanings are a table in docs/guide.md."""
    import dataclasses
    import typing

    from colearning.config import Config

    hints = typing.get_type_hints(Config)
    top, sections = [], []
    for item in dataclasses.fields(Config):
        section = hints[item.name]
        if dataclasses.is_dataclass(section):
            names = ", ".join(field.name for field in dataclasses.fields(section))
            sections.append(f"{item.name}: {names}")
        else:
            top.append(item.name)
    return "; ".join([", ".join(top), *sections])


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a co-learning ensemble into a run directory",
        description="Train a co-learning ensemble. The config is the YAML file, then key=value "
                    "overrides (e.g. loss.beta=-0.2 ensemble.n_members=5); unknown keys are "
                    "errors. Writes config.yaml, metrics.jsonl, checkpoint.pt, predictions.npz "
                    "and summary.json into the run directory.",
        epilog=f"Config keys, by section (as section.key=value; each key's default and "
               f"meaning: docs/guide.md, section Config keys): {_config_keys()}. {EPILOG}")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides in dotted form, values parsed as YAML")
    p.add_argument("--config", "-c", help="YAML config file (default: built-in defaults)")
    p.add_argument("--run-dir", help="run directory to create (default: a new one under ./runs)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint")
    _add_training_output(p, "training device (same as device=...); default: config's, i.e. "
                            "auto")
    p.add_argument("--nproc", type=int, metavar="K",
                   help="split the members over K processes on this machine (torchrun "
                        "--standalone --nproc-per-node K -m colearning train ...): gloo on "
                        "CPU, NCCL with one GPU per process; rank 0 writes the run directory")


def _add_runner_options(p: argparse.ArgumentParser) -> None:
    """How cells are trained (colearning.sweep.runner.run_cells): colearn sweep and
    colearn expand-table."""
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
    _add_runner_options(p)
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


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="compute a run's metrics on other data, written beside the run",
        description="Evaluate the trained run RUN_DIR (its final or best weights) on one "
                    "side of another dataset: every per-run metric of the library (the metrics "
                    "training records, keys eval/<metric>) goes to RUN_DIR/evaluation/<tag>/"
                    "metrics.json with what was evaluated, the member log-probabilities and "
                    "labels to predictions.npz beside it, and a table of the headline metrics "
                    "to the terminal. The run's own files are not touched; running it again "
                    "replaces that evaluation's two files. Images whose channels or size "
                    "differ from the run's are refused. --shift, --ood and --calibration "
                    "evaluate the run's own test split under corruptions, against OOD sets "
                    "and with temperature scaling: RUN_DIR/evaluation/shift.csv, ood.csv, "
                    "ood_scores.npz, calibration.json and summary.json (resumable; see "
                    "docs/guide.md, 'Uncertainty, shift and OOD').",
        epilog=EPILOG)
    p.add_argument("run_dir", metavar="RUN_DIR", help="trained run directory")
    p.add_argument("--data", "-d", metavar="FILE",
                   help="YAML file naming the data (a config, or a data: section, e.g. "
                        "data: {name: cifar10, path: ...}) or an .npz file with x_train, "
                        "y_train, x_test, y_test (optional x_val, y_val)")
    p.add_argument("--split", choices=["test", "train", "val", "all"], default="test",
                   help="which side of the data (default: test, the official test side; val: "
                        "the .npz file's x_val, y_val)")
    p.add_argument("--name", metavar="TAG",
                   help="folder under RUN_DIR/evaluation/ (default: the dataset's name, or the "
                        ".npz file's, then -SPLIT unless test and -best with --epoch best)")
    p.add_argument("--epoch", choices=["final", "best"], default="final",
                   help="which weights: final (the last checkpoint, default) or best (the "
                        "validation-best epoch of a run trained with train.keep_best=true)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the members run (default: auto, cuda when available)")
    p.add_argument("--batch-size", type=int, default=1024, metavar="B",
                   help="images per forward pass (default 1024)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars while a dataset is read")
    p.add_argument("--shift", choices=["corruptions"],
                   help="corruptions: the run's test split under every corruption and "
                        "severity (shift.csv)")
    p.add_argument("--corruptions", metavar="A,B,...",
                   help="with --shift: only these corruptions (default: all)")
    p.add_argument("--severities", metavar="1,2,...",
                   help="with --shift: only these severities, 1-5 (default: all)")
    p.add_argument("--ood", action="append", metavar="SET",
                   help="out-of-distribution set against the run's test split (ood.csv): "
                        "held-out (the classes a data.classes run left out), noise, or a "
                        "YAML/.npz data file (resized to the run's images); repeatable")
    p.add_argument("--calibration", action="store_true",
                   help="temperature scaling on the validation split and selective "
                        "prediction (calibration.json; also written by --shift and --ood)")


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
    _add_training_output(p)


def _add_training_output(p: argparse.ArgumentParser, device: str = "training device",
                         printed: str = "summary") -> None:
    """--device, --no-progress and --quiet: the same on every command that trains."""
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help=device)
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars, and no per-epoch lines where stderr is not a terminal")
    p.add_argument("--quiet", "-q", action="store_true",
                   help=f"print only errors and warnings (no progress, status lines or {printed})")


def _add_distill(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill", help="train one network on a trained ensemble's soft predictions",
        description="Distill the finished run RUN_DIR (the teacher ensemble) into a student: "
                    "an ordinary run directory of one network (--members K: K independent "
                    "ones) of the teacher's architecture or --model, trained on the teacher's "
                    "training split with alpha T^2 KL(p_T || p^T) + (1 - alpha) CE(y, p), "
                    "p_T = softmax(log p_ens / T) the teacher's mean-combined probabilities "
                    "softened at temperature T (Hinton et al. 2015). The rest of the config is "
                    "the teacher's (seed and data split must stay), then key=value overrides. "
                    "With --baseline (default) the same network is also trained on the hard "
                    "labels alone, into OUT-baseline. distill.json in OUT compares teacher, "
                    "student and baseline (test accuracy, NLL, ECE, Brier; shift metrics where "
                    "colearn evaluate wrote RUN_DIR/evaluation/summary.json). Running the "
                    "command again continues an interrupted student or baseline.",
        epilog=EPILOG)
    p.add_argument("teacher", metavar="RUN_DIR", help="finished run directory: the teacher")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides of the student and the baseline, e.g. optim.lr=0.05")
    p.add_argument("--out", "-o", metavar="DIR",
                   help="the student's run directory (default: RUN_DIR-distilled beside the "
                        "teacher, -MODEL / -NK appended for another model / K members)")
    p.add_argument("--model", metavar="NAME", help="the student's architecture, a registered "
                   "model (default: the teacher's, with its options)")
    p.add_argument("--temperature", "-T", type=float, default=4.0, metavar="T",
                   help="softening temperature T > 0 (default 4)")
    p.add_argument("--weight", type=float, default=0.9, metavar="ALPHA",
                   help="weight of the soft term in [0, 1]; the hard labels get 1 - ALPHA "
                        "(default 0.9)")
    p.add_argument("--epochs", type=int, metavar="E", help="training epochs (default: the "
                   "teacher's train.epochs)")
    p.add_argument("--members", type=int, default=1, metavar="K",
                   help="student networks, each distilled on its own (default 1)")
    p.add_argument("--teacher-epoch", choices=["final", "best"], default="final",
                   help="the teacher's weights: final (default) or best (train.keep_best)")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="also train the student's network on hard labels only, into "
                        "OUT-baseline, for the comparison (default: on)")
    _add_training_output(p, printed="table")


def _add_expand_table(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "expand-table", help="reproduce Table S5: grown ensembles vs from-scratch ones",
        description="Per seed: train N members (the base: ensemble.n_members, loss.beta, "
                    "train.epochs of the file's run config), grow them by M = expand.add "
                    "(add-freeze with beta 0 and beta, add-retrain, boost) and train N+M from "
                    "scratch for the same and the double epoch budget; then write "
                    "table_s5.txt/.csv and report.html (mean ± std over seeds, paired "
                    "difference to the base, the paper's values). The cells are sweep cells, "
                    "trained as colearn sweep trains them (workers, packs, Ray) in two stages: "
                    "the base and from-scratch cells, then the grown ones. Running again "
                    "continues where it stopped.",
        epilog=EPILOG)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides of the base run config (e.g. train.epochs=20 "
                        "ensemble.n_members=4 loss.beta=-0.05), and expand.add=M, "
                        "expand.margin=m")
    p.add_argument("--config", "-c", help="Table S5 YAML file (configs/sweeps/tableS5_*.yaml)")
    p.add_argument("--out", "-o", help="output directory (default: sweeps/<name>)")
    p.add_argument("--resume", metavar="DIR", help="continue the Table S5 run in DIR")
    p.add_argument("--seeds", type=int, metavar="K", help="use seeds 0..K-1 instead of the file's")
    _add_runner_options(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


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
    p.add_argument("--metric", metavar="KEY",
                   help="take the seed-paired differences and Wilcoxon p on this results.csv "
                        "column instead of the test ensemble accuracy at the best epoch, e.g. "
                        "shift/accuracy_mean, shift/ece_mean or ood/auroc_mutual_information "
                        "(written by colearn evaluate); the table adds its mean +/- std")
    p.add_argument("--epoch", type=int, metavar="E",
                   help="take every cell at epoch E instead of its validation-selected epoch "
                        "(cells that reached E count, finished or not): follow a gain over "
                        "training")
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
    _add_evaluate(sub)
    _add_expand(sub)
    _add_distill(sub)
    _add_expand_table(sub)
    _add_compare(sub)
    _add_bench(sub)
    return parser
