"""The report of one run directory: every diagnostic of the paper, from saved artifacts.

    build_run_report("runs/demo")          # -> runs/demo/report/report.html (+ PNGs)

Each ``_section_*`` helper turns :class:`RunArtifacts` into one report section (figures
written with :mod:`.figures`, tables from :mod:`.tables`); a section whose inputs the run
did not save says so instead of failing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from colearning import metrics
from colearning.combiners import combine
from colearning.errors import ConfigError
from colearning.report import figures, tables
from colearning.report.artifacts import RunArtifacts, load_artifacts, read_predictions
from colearning.report.figures import report_folder
from colearning.report.html import Section, Table, render_page, write_page
from colearning.report.robustness import read_evaluation, robustness_section

MAX_MDS_EPOCHS = 30  # MDS time grows with the epochs; longer runs are subsampled evenly
MDS_RANDOM_STARTS = 1  # besides the classical-MDS start, which is usually the best already
COMBINERS = ("mean", "geometric", "vote")


def build_run_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the PNG figures and report.html of the run in ``path``; returns report.html."""
    run = load_artifacts(path)
    out = report_folder(Path(out) if out is not None else run.path / "report", out is not None)
    sections = [
        status_section(run),
        _section_performance(run, out),
        _section_distances(run, out),
        _section_samples(run, out),
        _section_structure(run, out),
        _section_uncertainty(run, out),
        robustness_section(read_evaluation(run.path), run.tag, out),
        Section("Config", text=f"The resolved config of the run ({run.path}/config.yaml).",
                pre=run.config_text),
    ]
    page = out / "report.html"
    write_page(page, render_page(f"colearning run report: {run.path.name} ({run.tag})",
                                 [section for section in sections if section is not None]))
    return page


def p_value(p: float) -> str:
    """``p = 0.012`` or ``p < 0.001`` (the paper writes bounds for tiny p-values)."""
    if not np.isfinite(p):
        return "p undefined"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _unavailable(title: str, why: str) -> Section:
    return Section(title, text=f"Not available: {why}.")


# ------------------------------------------------------------------ status
def _since(records: list[dict[str, Any]], key: str, member: int) -> int:
    """The first epoch of the last unbroken stretch of records in which ``key`` flags
    ``member``."""
    since = int(records[-1]["epoch"])
    for record in reversed(records):
        flags = record.get(key) or []
        if member >= len(flags) or not flags[member]:
            break
        since = int(record["epoch"])
    return since


def collapse_warnings(run: RunArtifacts) -> list[str]:
    """One line per member that collapsed at the last epoch, has non-finite predictions or
    a dead ReLU layer."""
    lines = []
    final = run.final
    for key, what in (("test/member_collapsed", "collapsed: after it had learned, its output "
                       "ignores the input (one class, near-constant probabilities, or a dead "
                       "ReLU layer)"),
                      ("test/member_not_learned", "has not learned yet: near-constant outputs "
                       "and accuracy near the best constant guess")):
        for i, flag in enumerate(final.get(key) or []):
            if flag:
                lines.append(f"member {i} {what}, since epoch {_since(run.metrics, key, i)}.")
    if run.log_probs is not None:
        for i, member in enumerate(run.log_probs):
            bad = ~np.isfinite(member).all(-1)  # a sample whose probabilities are not numbers
            if bad.all():
                lines.append(f"member {i} has no finite probability in predictions.npz (all "
                             "NaN/inf): it diverged; its accuracy and every ensemble number "
                             "that includes it are meaningless.")
            elif bad.any():
                lines.append(f"member {i} has non-finite probabilities on {int(bad.sum())} of "
                             f"{bad.size} test samples in predictions.npz.")
    if run.analysis:
        last = run.analysis[-1]
        for i, member in enumerate(last["members"]):
            dead = [layer for layer, stats in member["activation"].items() if stats.get("dead")]
            if dead:
                lines.append(f"member {i} has dead ReLU layers at epoch {last['epoch']} "
                             f"(every unit zero on every sample): {', '.join(dead)}.")
    return lines


def status_section(run: RunArtifacts) -> Section:
    status = run.status
    warnings = []
    if status != "finished":
        detail = run.summary.get("status_detail")
        warnings.append(f"Run status: {status}" + (f" ({detail})" if detail else "")
                        + f"; {len(run.metrics)} of {run.config.train.epochs} epochs completed.")
    warnings += collapse_warnings(run)
    final = run.final
    text = f"Status: {status}. Model {run.config.model.name} on {run.config.data.name}, "
    text += f"{run.tag}, {run.config.train.epochs} epochs planned."
    if final.get("test/ensemble_accuracy_mean") is not None:
        members = run.series("test/member_accuracy")[-1]
        text += (f" Final test accuracy: ensemble (mean) "
                 f"{100 * final['test/ensemble_accuracy_mean']:.2f}%, members "
                 + ", ".join(f"{100 * a:.2f}%" for a in members) + ".")
    return Section(
        "Run status", text=text, warning=" ".join(warnings),
        tables=[tables.status_table(run.summary, run.config.train.epochs, run.meta,
                                    run.probs_epochs)])


# ------------------------------------------------------------------ performance
def _section_performance(run: RunArtifacts, out: Path) -> Section:
    title = "Learning curves and convergence"
    if not run.metrics:
        return _unavailable(title, "no epoch completed (metrics.jsonl is empty)")
    epochs, member_acc = run.epochs, run.series("test/member_accuracy")
    ensemble_acc = run.series("test/ensemble_accuracy_mean")
    figs = [
        figures.learning_curves(epochs, member_acc, ensemble_acc,
                                run.series("train/loss_task"), run.series("train/loss_coupling"),
                                run.tag, out / "learning_curves.png"),
        figures.combiner_accuracy(epochs, {m: run.series(f"test/ensemble_accuracy_{m}")
                                           for m in COMBINERS},
                                  member_acc, run.tag, out / "combiner_accuracy.png"),
    ]
    captions = [
        "Fig. 2a: test accuracy of each member and of the mean ensemble per epoch (left); "
        "training loss parts per member (right, task solid, coupling dashed).",
        "Ensemble accuracy with the mean, geometric-mean and majority-vote combiners "
        "(paper Supp.), against the members' mean and range.",
    ]
    if len(epochs) >= 2:
        change = 100 * np.abs(np.diff(member_acc, axis=0))
        figs.append(figures.accuracy_change(epochs[1:], change,
                                            100 * np.abs(np.diff(ensemble_acc)), run.tag,
                                            out / "accuracy_change.png"))
        captions.append("Fig. S2b: absolute change of test accuracy between consecutive "
                        "epochs (log scale), a measure of convergence.")
    beta = run.series("train/beta_mean")
    if np.isfinite(beta).any() and np.nanmax(beta) != np.nanmin(beta):
        js = run.series("val/js_mean")
        js = js if np.isfinite(js).any() else run.series("test/js_mean")
        figs.append(figures.coupling_trajectory(epochs, beta, js, run.config.loss.target_js,
                                                run.tag, out / "coupling.png"))
        captions.append("The coupling in effect each epoch (its mean off-diagonal β, after the "
                        "beta schedule or the adaptive controller) and the members' mean JS "
                        "distance (validation split when there is one).")
    logits, weights = run.series("test/member_logit_norm"), run.series("train/member_weight_norm")
    if np.isfinite(logits).any() and np.isfinite(weights).any():
        figs.append(figures.member_size(epochs, logits, weights, run.tag,
                                        out / "member_size.png"))
        captions.append("Each member's output scale (mean norm of its centered test logits) "
                        "and parameter norm per epoch. Under a negative coupling a member "
                        "that runs away grows both until it collapses; the paper's Table S4 "
                        "reports wider weights at β < 0.")
    return Section(title, figures=figs, captions=captions,
                   tables=[tables.ensemble_table(run.final)])


# ------------------------------------------------------------------ functional distances
def mds_epochs(n_epochs: int, limit: int = MAX_MDS_EPOCHS) -> np.ndarray:
    """Indices of at most ``limit`` evenly spread epochs, always the first and the last."""
    if n_epochs <= limit:
        return np.arange(n_epochs)
    return np.unique(np.round(np.linspace(0, n_epochs - 1, limit)).astype(int))


def _section_distances(run: RunArtifacts, out: Path) -> Section:
    title = "Functional distances between members"
    n = run.n_members
    if not run.metrics:
        return _unavailable(title, "no epoch completed")
    if n < 2:
        return _unavailable(title, "the ensemble has a single member")
    js = np.array([_matrix(r.get("test/js_matrix"), n) for r in run.metrics])  # [T, N, N]
    to_ens = run.series("test/js_to_ensemble")
    valid = np.isfinite(js).all(axis=(1, 2)) & np.isfinite(to_ens).all(axis=1)
    if not valid.any():
        return _unavailable(title, "no epoch has finite JS distances")
    epochs = run.epochs[valid]
    js, to_ens = js[valid], to_ens[valid]
    label = ("d(n_0, n_1) = mean Jensen-Shannon divergence (nats)" if n == 2 else
             "d_i = mean Jensen-Shannon divergence to the other members (nats)")
    distance = np.stack([metrics.distance_to_others(m) for m in js])
    figs = [
        figures.kl_distance_trajectory(epochs, run.series("test/member_kl")[valid], distance,
                                       label, run.tag, out / "kl_distance_trajectory.png"),
        figures.js_heatmap(js[-1], run.tag, out / "js_matrix.png"),
    ]
    joint = _joint_trajectory(run)
    if joint is not None:  # every (member or ensemble, epoch) point in one embedding
        mds_epoch_list, trajectory, r, p = joint
        how = (f"all {trajectory.shape[0]} saved epochs' (member or ensemble, epoch) points "
               f"embedded jointly from their predictions (probs/epoch_K.npz, the first "
               f"{JOINT_MDS_SAMPLES} test samples)")
    else:
        keep = mds_epochs(len(epochs))
        full = np.stack([metrics.distance_matrix_with_ensemble(js[t], to_ens[t]) for t in keep])
        trajectory = metrics.mds_trajectory(full, seed=run.config.seed,
                                            n_init=MDS_RANDOM_STARTS)
        try:
            r, p = metrics.trajectory_distance_correlation(full, trajectory)
        except ConfigError:  # fewer than 3 pooled distances (N=2 and a single epoch)
            r, p = float("nan"), float("nan")
        mds_epoch_list = epochs[keep]
        how = ("each epoch embedded separately and aligned across epochs, because the run "
               "saved the predictions of fewer than two epochs (train.save_probs_every); "
               "with them the whole trajectory is embedded jointly, as in the paper"
               + ("" if len(keep) == len(epochs) else
                  f" ({len(keep)} of {len(epochs)} epochs shown)"))
    figs.append(figures.mds_trajectories(mds_epoch_list, trajectory, r, run.tag,
                                         out / "mds_trajectory.png"))
    sub = ""
    if n == 2 and to_ens[-1].sum() < js[-1, 0, 1]:
        # JS divergence is not a metric: the three points cannot form a triangle.
        sub = ("; with N = 2, d(0, ens) + d(1, ens) < d(0, 1), so the three points of an "
               "epoch lie on a line")
    captions = [
        "Fig. 2b: each member's test KL(q‖p_i) against its functional distance to the others, "
        "one point per epoch, light (early) to dark (late).",
        f"Fig. 4a: pairwise functional distance d(n_i, n_j) (Eq. 5: the mean over test "
        f"samples of the Jensen-Shannon (JS) divergence between the two members' predicted "
        f"distributions, in nats, at most ln 2) at epoch {epochs[-1]}.",
        f"Fig. 4b: metric MDS of the Jensen-Shannon distances among members and the ensemble: "
        f"{how}{sub}. Pearson r between d and embedded distances: r = {r:.3f}, "
        f"{p_value(p)}.",
    ]
    return Section(title, figures=figs, captions=captions)


# Test samples used for the joint MDS: the JS matrix of all (member, epoch) points costs
# ((N+1) T)^2 x samples x classes.
JOINT_MDS_SAMPLES = 2000


def _joint_trajectory(run: RunArtifacts) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """(epochs [T], coordinates [T, N+1, 2], r, p) of one MDS of every (member or ensemble,
    epoch) point, from the saved per-epoch log-probabilities; None with fewer than 2 saved."""
    saved = run.probs_epochs
    if len(saved) < 2:
        return None
    chosen = [saved[k] for k in mds_epochs(len(saved))]
    points = []
    for epoch in chosen:
        log_probs, _, _ = read_predictions(run.path / "probs" / f"epoch_{epoch}.npz")
        lp = torch.from_numpy(log_probs[:, :JOINT_MDS_SAMPLES]).double()
        ensemble = combine(lp, "mean", log=True).unsqueeze(0)
        points.append(torch.cat([lp, ensemble]))  # [N+1, n, C], the ensemble last
    stacked = torch.cat(points)  # [T (N+1), n, C]
    distances = metrics.js_matrix(stacked, log=True).numpy()
    coords = metrics.mds_embed(distances, seed=run.config.seed, n_init=MDS_RANDOM_STARTS)
    try:
        r, p = metrics.embedding_distance_correlation(distances, coords)
    except ConfigError:
        r, p = float("nan"), float("nan")
    return np.array(chosen), coords.reshape(len(chosen), -1, 2), r, p


def _matrix(value: Any, n: int) -> np.ndarray:
    if not value:
        return np.full((n, n), np.nan)
    return np.array([[np.nan if x is None else x for x in row] for row in value], dtype=float)


# ------------------------------------------------------------------ per-sample views
def _section_samples(run: RunArtifacts, out: Path) -> Section:
    title = "Per-sample agreement and confidence"
    if run.log_probs is None:
        return _unavailable(title, "the run saved no predictions.npz")
    log_probs, labels = torch.from_numpy(run.log_probs), torch.from_numpy(run.labels)
    n, _, n_classes = log_probs.shape
    ensemble = combine(log_probs, "mean", log=True)  # log p_ens
    p_true = metrics.true_class_prob(log_probs.exp(), labels).numpy()
    p_ens = metrics.true_class_prob(ensemble.exp(), labels).numpy()
    correct = (ensemble.argmax(-1) == labels).numpy()
    figs, captions = [], []
    if n >= 2:
        names = ("member 0", "member 1")
        note = "" if n == 2 else f" (N = {n}: members 0 and 1 shown)"
        figs.append(figures.sample_agreement(p_true[0], p_true[1], p_ens, correct, names,
                                             run.tag + note, out / "sample_agreement.png"))
        captions.append(
            f"Fig. 5a: probability of the true class per test sample given by two members{note}; "
            "blue where the mean ensemble is correct, red where it is wrong.")
    figs.append(figures.entropy_histograms(metrics.entropy(log_probs, log=True).numpy(),
                                           metrics.entropy(ensemble, log=True).numpy(), n_classes,
                                           run.tag, out / "entropy_histograms.png"))
    captions.append("Fig. 5b / S5: distribution over test samples of the entropy of each "
                    "member's prediction; a peak near 0 means confident members.")
    votes = metrics.votes_correct(log_probs, labels).numpy()
    rho, p = metrics.spearman(votes, p_ens)
    rescued = metrics.rescued_count(log_probs, ensemble, labels)
    figs.append(figures.votes_vs_confidence(votes, p_ens, correct, n, rho, rescued, run.tag,
                                            out / "votes_vs_confidence.png"))
    captions.append(f"Fig. 5c: number of members voting for the true class vs the ensemble's "
                    f"probability of it; Spearman ρ = {rho:.3f} ({p_value(p)}); {rescued} samples "
                    "were classified correctly by the ensemble but by no member.")
    return Section(title, figures=figs, captions=captions,
                   text=f"From predictions.npz: {log_probs.shape[1]} test samples, "
                        f"{n_classes} classes (final weights)."
                        + (f" Note: {run.predictions_note}." if run.predictions_note else ""))


# ------------------------------------------------------------------ structure
def _weight_layer(weights: dict[str, np.ndarray]) -> str:
    """Conv2 as in the paper when the model has it, else its second (or only) layer."""
    if "Conv2" in weights:
        return "Conv2"
    names = list(weights)
    return names[1] if len(names) > 1 else names[0]


def _section_structure(run: RunArtifacts, out: Path) -> Section:
    title = "Structure: activations and weights"
    figs: list[Path] = []
    captions: list[str] = []
    section_tables: list[Table] = []
    notes = []
    if run.analysis:
        first, last = run.analysis[0], run.analysis[-1]
        initial = first if first["epoch"] == 0 and last is not first else None
        layers = list(last["members"][0]["activation"])
        if layers:
            epochs = np.array([r["epoch"] for r in run.analysis])
            sparsity = {layer: np.array([[m["activation"].get(layer, {}).get("sparsity", np.nan)
                                          for m in r["members"]] for r in run.analysis],
                                        dtype=float)
                        for layer in layers}
            figs.append(figures.activation_sparsity(epochs, sparsity, run.tag,
                                                    out / "activation_sparsity.png"))
            captions.append("Fig. 6a: mean fraction of non-active (zero) units per sample in "
                            "each ReLU layer, per member, over training.")
            final_mean = np.array([[m["activation"][layer]["mean"] for layer in layers]
                                   for m in last["members"]], dtype=float)
            init_mean = None if initial is None else np.array(
                [np.mean([m["activation"][layer]["mean"] for m in initial["members"]])
                 for layer in layers])
            figs.append(figures.mean_activation(layers, final_mean, init_mean, last["epoch"],
                                                run.tag, out / "mean_activation.png"))
            captions.append("Fig. 6b: mean activation per unit and sample in each ReLU layer.")
            section_tables += tables.activation_tables(last, initial)
        else:
            notes.append("the model has no ReLU layers, so no activation statistics")
        section_tables.append(tables.weight_table(last, initial))
    else:
        notes.append("no analysis.jsonl (activation and weight statistics)")
    if run.weights:
        layer = _weight_layer(run.weights)
        figs.append(figures.weight_histograms(layer, run.weights[layer], run.tag,
                                              out / "weight_histograms.png"))
        captions.append(f"Fig. 6c: distribution of the {layer} weights of each member in the "
                        "last checkpoint.")
    else:
        notes.append(f"no weight histograms: {run.weights_note}")
    text = (f"Statistics on the first {run.config.train.analysis_samples} test images "
            "(analysis.jsonl); non-active = zero output of a ReLU unit.")
    if notes:
        text += " Not available: " + "; ".join(notes) + "."
    return Section(title, text=text, figures=figs, captions=captions, tables=section_tables)


# ------------------------------------------------------------------ uncertainty
def _section_uncertainty(run: RunArtifacts, out: Path) -> Section:
    title = "Uncertainty and calibration"
    if not run.metrics:
        return _unavailable(title, "no epoch completed")
    member = {"NLL": run.series("test/member_kl"), "Brier": run.series("test/member_brier"),
              "ECE": run.series("test/member_ece")}
    ensemble = {"NLL": run.series("test/ensemble_nll"),
                "Brier": run.series("test/ensemble_brier"),
                "ECE": run.series("test/ensemble_ece")}
    figs = [figures.uncertainty_curves(run.epochs, member, ensemble, run.tag,
                                       out / "uncertainty_curves.png")]
    captions = ["Negative log-likelihood, Brier score and expected calibration error (15 "
                "equal-width bins) of the members and the mean ensemble per epoch."]
    if run.log_probs is not None:
        probs, labels = torch.from_numpy(run.log_probs).exp(), torch.from_numpy(run.labels)
        curves = {}
        for i in range(probs.shape[0]):
            bins = metrics.reliability_bins(probs[i], labels)
            curves[f"member {i}"] = tuple(np.asarray(b) for b in bins)
        bins = metrics.reliability_bins(combine(probs, "mean"), labels)
        curves["ensemble (mean)"] = tuple(np.asarray(b) for b in bins)
        figs.append(figures.reliability_diagram(curves, run.tag, out / "reliability.png"))
        captions.append("Reliability diagram of the final predictions: accuracy against "
                        "confidence per bin (left) and how many samples fall in each bin.")
    disagreement = run.final.get("test/disagreement")
    text = "Beyond the paper. Member NLL equals KL(q‖p_i) for one-hot labels."
    if disagreement is not None:
        text += (f" Final disagreement between members: {disagreement:.4f} (fraction of "
                 "member pairs × samples whose predicted labels differ).")
    return Section(title, text=text, figures=figs, captions=captions,
                   tables=[tables.final_metrics_table(run.final)])
