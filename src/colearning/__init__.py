"""colearning: co-learning ensembles of neural networks (Brazowski & Schneidman).

Network i of N minimizes KL(q||p_i) + sum_{j!=i} beta_ij KL(p_j||p_i); see the README.
"""

from colearning.combiners import COMBINERS, combine, ensemble_predict
from colearning.engine import Ensemble
from colearning.errors import ColearningError, ConfigError, DataError, RunDirError
from colearning.losses import CoupledKLLoss, CoupledLoss, beta_matrix, coupled_loss
from colearning.models import MODELS, build_model

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # colearning.train / colearning.resume / colearning.load_run come from the training module,
    # imported on first use so that "import colearning" stays light (no data/report stack).
    if name in ("train", "resume", "load_run", "load_ensemble", "Run"):
        from colearning import training

        return getattr(training, name)
    raise AttributeError(f"module 'colearning' has no attribute {name!r}")

__all__ = [
    "COMBINERS",
    "MODELS",
    "ColearningError",
    "ConfigError",
    "Run",
    "CoupledKLLoss",
    "CoupledLoss",
    "DataError",
    "Ensemble",
    "RunDirError",
    "__version__",
    "beta_matrix",
    "build_model",
    "combine",
    "coupled_loss",
    "ensemble_predict",
    "load_ensemble",
    "load_run",
    "resume",
    "train",
]
