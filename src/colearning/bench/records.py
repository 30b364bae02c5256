"""What a bench is about: the workloads and settings it times, the rows it reports, and the
constants they default to (strategies, the paper's batch sizes and coupling, CIFAR sizes)."""

from __future__ import annotations

from dataclasses import dataclass, field

from colearning.models import MODELS

BASELINE = "baseline"
STRATEGIES = (BASELINE, "loop", "grouped", "vmap", "auto")
DEFAULT_STRATEGIES = (BASELINE, "loop", "grouped", "vmap")
# The models with a paper batch size (their registry metadata), and that size: the default
# workloads of colearn bench.
BATCH_SIZES = {name: MODELS.meta(name)["batch_size"] for name in MODELS
               if "batch_size" in MODELS.meta(name)}
BETA_BAR = -1.0  # the paper's best size-normalized coupling; beta = beta_bar / N
SGD_IMPLEMENTATIONS = ("default", "foreach", "fused")
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000  # images in one CIFAR-10 epoch and test set
# A configuration whose slowest timed step is this much slower than its fastest, relative to
# the median, is marked unsteady (``~`` in the table): its figures are not to be trusted.
UNSTEADY_SPREAD = 0.25


@dataclass(frozen=True)
class Workload:
    """One timed configuration: ``n_members`` copies of ``model`` at ``batch_size``."""

    model: str
    n_members: int
    batch_size: int
    strategy: str


@dataclass(frozen=True)
class Settings:
    """How every configuration is timed (the same for all rows of one report)."""

    steps: int = 10  # timed steps per configuration (median reported)
    warmup: int = 2  # untimed steps first (allocator, autotuning, compilation)
    min_time: float = 2.0  # seconds of timed steps per configuration at least
    time_limit: float = 60.0  # seconds of timed steps per configuration before stopping early
    bf16: bool = False  # torch.autocast(bfloat16) around the forward
    compile: str | None = None  # torch.compile mode ("default", "reduce-overhead", ...)
    channels_last: bool | None = None  # channels-last images; None: on CPU only
    sgd: str = "default"  # SGD implementation: default, foreach, fused
    image_size: int = 32
    num_classes: int = 10
    seed: int = 0


@dataclass
class StepResult:
    """Throughput of one :class:`Workload` (None where the configuration failed)."""

    model: str
    n_members: int
    batch_size: int
    strategy: str
    resolved_strategy: str  # what ran: auto resolved, baseline as is
    default: bool  # True when this is the strategy ``auto`` picks on this device
    steps_timed: int = 0
    step_seconds: list[float] = field(default_factory=list)
    median_step_seconds: float | None = None
    min_step_seconds: float | None = None
    max_step_seconds: float | None = None
    spread: float | None = None  # (max - min) / median of the timed steps
    unsteady: bool = False  # spread > UNSTEADY_SPREAD: too noisy to trust
    steps_per_second: float | None = None
    images_per_second: float | None = None  # B / t
    member_images_per_second: float | None = None  # N * B / t
    speedup_vs_baseline: float | None = None  # baseline median step time / this one's
    flops_per_step: float | None = None  # counted, forward + backward of N members
    gflops_per_second: float | None = None
    # median over rounds of GFLOP/s / the matmul peak probed in the same round (beside it)
    fraction_of_peak: float | None = None
    peak_gflops: float | None = None  # median of the peak probed beside this row's steps
    peak_spread: float | None = None  # (max - min) / median of those probes
    peak_unsteady: bool = False  # peak_spread > UNSTEADY_SPREAD: the peak itself moved
    peak_memory_mib: float | None = None
    final_loss: float | None = None  # mean member loss after the last step (a sanity check)
    error: str | None = None


@dataclass
class EpochResult:
    """One CIFAR-sized epoch end to end: data upload, training, evaluation."""

    model: str
    n_members: int
    batch_size: int
    strategy: str
    resolved_strategy: str
    train_images: int
    test_images: int
    steps: int
    augment: bool
    data_seconds: float  # uint8 -> float images on the device
    train_seconds: float  # all training steps, including batching and augmentation
    eval_seconds: float  # predict on the test images + evaluate_log_probs
    epoch_seconds: float  # train + eval (the figure to compare with the targets)
    total_seconds: float  # data + train + eval
    member_images_per_second: float  # N * train_images / train_seconds
    skipped_steps: int
    test_accuracy: float  # ensemble (mean) accuracy on the random labels: ~1/C, a sanity check
    peak_memory_mib: float | None = None
