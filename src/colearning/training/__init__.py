"""Training co-learning ensembles into resumable run directories.

    run = colearning.train(load_config("configs/quickstart.yaml"), run_dir="runs/demo")
    run.summary["test/ensemble_accuracy_mean"]

Modules, in the order they build on each other: ``data`` (one pool of images on the
device, one split per cell), ``setup`` (device, members, schedule, prediction helpers),
``plan`` / ``growth`` (which members of a cell train, on which samples), ``teacher``
(a distilled run's teacher and its soft targets), ``lifecycle`` (the
run directory: created, checkpointed, resumed, summarized), ``pack`` (which runs may train
together), ``step`` (the stacked members, optimizer and one step of a pack of cells),
``selection`` (the validation-best epoch and early stopping), ``records`` (the end of an
epoch: evaluation, metrics lines, best weights, checkpoints), ``loop`` (the one
training loop, the epoch driver) and ``run`` (the entry points: ``train``, ``resume``,
``train_pack``).
"""

from colearning.training.lifecycle import Run, load_run
from colearning.training.process import Interrupted
from colearning.training.run import load_ensemble, resume, train, train_pack

__all__ = ["Interrupted", "Run", "load_ensemble", "load_run", "resume", "train", "train_pack"]
