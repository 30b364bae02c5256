"""A trained run on images it has not seen: predict, and evaluate beside the run.

    result = colearning.predict("runs/demo", images)          # probs [B, C], member_probs [N, B, C]
    evaluation = evaluate_run("runs/demo", "other_data.yaml")  # RUN_DIR/evaluation/<tag>/

Modules: ``images`` (checking images against the run's inputs and normalizing them as its
training did), ``prediction`` (:func:`predict`), ``sources`` (the data ``--data`` names),
``evaluate`` (:func:`evaluate_run`: every per-run metric, written beside the run),
``uncertainty`` (:func:`evaluate_uncertainty`: corruptions, OOD sets, temperature scaling;
with ``shifted``, ``ood_sets``, ``calibrated`` and ``run_sides``) and ``finish``
(:func:`finish_with_evaluation`: train.evaluate_shift at the end of a run).
"""

from colearning.inference.evaluate import Evaluation, evaluate_run
from colearning.inference.finish import finish_with_evaluation
from colearning.inference.prediction import Prediction, predict
from colearning.inference.uncertainty import Uncertainty, evaluate_uncertainty

__all__ = ["Evaluation", "Prediction", "Uncertainty", "evaluate_run", "evaluate_uncertainty",
           "finish_with_evaluation", "predict"]
