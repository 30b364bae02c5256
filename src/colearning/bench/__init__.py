"""Training throughput of co-learning ensembles, and one timed epoch: ``colearn bench``.

    rows = measure_group([Workload("lenet5", 10, 512, s) for s in ("baseline", "grouped")],
                         device, settings)
    print(format_table(report(rows, [], device, settings)))

A *step* is one forward of all N members on one shared batch, the coupled loss (beta_bar=-1,
beta = beta_bar / N), its backward and one SGD step (lr 0.01, momentum 0.9, weight decay
5e-4): for the engine strategies the trainer's own step (``colearning.training.step.Pack``,
with its on-device finiteness mask and ``StackedSGD``). Strategies:

- ``baseline``: N separate nn.Modules (each a ``build_model`` with the same weights as the
  engine's members, channels-last on CPU), each with its own ``torch.optim.SGD``, run one
  after another in a Python loop, logits stacked into the same ``coupled_loss``: what
  ensemble libraries that loop over members do.
- ``loop``, ``grouped``, ``vmap``, ``auto``: the :class:`~colearning.engine.Ensemble`
  strategies, one SGD over the stacked parameters.

Timing is made to be repeatable: the strategies of one (model, N) are timed interleaved, a
step of each in turn, until each has ``--steps`` steps and ``--min-time`` seconds of them;
rows give the median with min and max, and a row whose spread (max - min) / median exceeds
25% is marked unsteady. ``auto`` is not timed again when it resolves to a timed strategy.
GFLOP/s are also given as a fraction of this device's matmul peak, measured at the start
(fp32 and bf16).

Units: ``images_per_second`` = B / t, training images per second (every member sees each
image); ``member_images_per_second`` = N * B / t, the images summed over members (the work
done); ``gflops_per_second`` = FLOPs counted with ``torch.utils.flop_counter`` (matmuls and
convolutions of one member's forward and backward, times N) / t. Medians over timed steps
after warm-up steps; on CUDA each step is timed with CUDA events.
Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA and the process's peak resident
set on CPU (Linux VmHWM, reset before each configuration).

The epoch (:func:`measure_epoch`) runs the trainer itself end to end on synthetic
CIFAR-shaped uint8 data (no dataset file needed): the data pool uploaded to the device, one
epoch of the trainer's steps on shuffled batches (augmented when the trainer would augment,
VGG-9), then its batched evaluation on the test images and ``evaluate_log_probs``.

Modules: ``records`` (Workload, Settings, the result rows and the constants), ``device``
(what the device is, its peak memory and matmul peak), ``build`` (a workload's config,
ensemble and SGD), ``probes`` (what is timed: a step per strategy, one epoch), ``harness``
(the interleaved timing and a whole run), ``output`` (the JSON report and the table) and
``options`` (``colearn bench``'s options and presets). The timed step is the trainer's own
(``colearning.training.step.Pack.step``), tested equal to N separate modules stepped by
``torch.optim.SGD`` (tests/test_bench.py).
"""

from colearning.bench.build import bench_config
from colearning.bench.device import (
    device_info,
    device_name,
    measure_peak,
    peak_memory_mib,
    reset_peak_memory,
    synchronize,
)
from colearning.bench.harness import count_flops, fill_speedups, measure_group, run, workloads
from colearning.bench.options import CPU_DEFAULTS, QUICK, bench, parse_list, parse_pairs
from colearning.bench.output import SCHEMA_VERSION, format_table, output_path, report, write_json
from colearning.bench.probes import make_step, measure_epoch, synthetic_cifar
from colearning.bench.records import (
    BASELINE,
    BATCH_SIZES,
    BETA_BAR,
    CIFAR_TEST,
    CIFAR_TRAIN,
    DEFAULT_STRATEGIES,
    SGD_IMPLEMENTATIONS,
    STRATEGIES,
    UNSTEADY_SPREAD,
    EpochResult,
    Settings,
    StepResult,
    Workload,
)

__all__ = [
    "BASELINE",
    "BATCH_SIZES",
    "BETA_BAR",
    "CIFAR_TEST",
    "CIFAR_TRAIN",
    "CPU_DEFAULTS",
    "DEFAULT_STRATEGIES",
    "EpochResult",
    "QUICK",
    "SCHEMA_VERSION",
    "SGD_IMPLEMENTATIONS",
    "STRATEGIES",
    "Settings",
    "StepResult",
    "UNSTEADY_SPREAD",
    "Workload",
    "bench",
    "bench_config",
    "count_flops",
    "device_info",
    "device_name",
    "fill_speedups",
    "format_table",
    "make_step",
    "measure_epoch",
    "measure_group",
    "measure_peak",
    "output_path",
    "parse_list",
    "parse_pairs",
    "peak_memory_mib",
    "report",
    "reset_peak_memory",
    "run",
    "synchronize",
    "synthetic_cifar",
    "workloads",
    "write_json",
]
