"""colearning: co-learning ensembles of neural networks (Brazowski & Schneidman).

Network i of N minimizes KL(q||p_i) + sum_{j!=i} beta_ij KL(p_j||p_i); see README.md and docs/.
"""

import importlib

from colearning.errors import ColearningError, ConfigError, DataError, RunDirError

__version__ = "0.2.0"

# Every public name but the errors is imported on first use: ``import colearning`` (and the
# ``colearn`` command's start) does not import torch until something needs it, so Ctrl-C
# during start-up reaches the command's one-line message instead of a traceback.
_LAZY = {
    "COMBINERS": "combiners", "combine": "combiners", "ensemble_predict": "combiners",
    "Ensemble": "engine",
    "CoupledKLLoss": "losses", "CoupledLoss": "losses", "beta_matrix": "losses",
    "coupled_loss": "losses",
    "MODELS": "models", "build_model": "models", "register_model": "models",
    "register_dataset": "data",
    "Run": "training", "load_ensemble": "training", "load_run": "training",
    # train and resume finish with train.evaluate_shift's evaluation (inference.finish)
    "resume": "inference.finish", "train": "inference.finish",
    "Prediction": "inference", "evaluate_run": "inference", "predict": "inference",
    "distill": "distillation",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(f"colearning.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'colearning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "COMBINERS",
    "MODELS",
    "ColearningError",
    "ConfigError",
    "CoupledKLLoss",
    "CoupledLoss",
    "DataError",
    "Ensemble",
    "Prediction",
    "Run",
    "RunDirError",
    "__version__",
    "beta_matrix",
    "build_model",
    "combine",
    "coupled_loss",
    "distill",
    "ensemble_predict",
    "evaluate_run",
    "load_ensemble",
    "load_run",
    "predict",
    "register_dataset",
    "register_model",
    "resume",
    "train",
]
