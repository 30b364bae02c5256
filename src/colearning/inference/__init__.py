"""A trained run on images it has not seen: predict, and evaluate beside the run.

    result = colearning.predict("runs/demo", images)          # probs [B, C], member_probs [N, B, C]
    evaluation = evaluate_run("runs/demo", "other_data.yaml")  # RUN_DIR/evaluation/<tag>/

Modules: ``images`` (checking images against the run's inputs and normalizing them as its
training did), ``prediction`` (:func:`predict`), ``sources`` (the data ``--data`` names)
and ``evaluate`` (:func:`evaluate_run`: every per-run metric, written beside the run).
"""

from colearning.inference.evaluate import Evaluation, evaluate_run
from colearning.inference.prediction import Prediction, predict

__all__ = ["Evaluation", "Prediction", "evaluate_run", "predict"]
