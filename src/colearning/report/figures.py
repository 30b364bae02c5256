"""One plotting function per report figure: arrays in, a PNG written, its path out.

Every function is pure (no run directory, no globals): it takes the numbers, a ``tag``
naming the run (``N=2, β=-0.2``, put into the title) and the output ``path``. Figures are
built on :class:`matplotlib.figure.Figure` with the Agg canvas, never through pyplot, so
nothing stays open and no display is needed. Members are coloured C0, C1, ... everywhere,
the ensemble is black; accuracies are in %, KL/JS in nats.
"""

from __future__ import annotations

import io
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from colearning import rundir
from colearning.errors import RunDirError

DPI = 110
ENSEMBLE = "black"
CORRECT, WRONG = "tab:blue", "tab:red"  # ensemble right / wrong on a sample (paper Fig. 5)
# Light-to-dark colour maps for epoch progressions, one per member (then repeated).
MIN_BIN_COUNT = 10  # reliability points from fewer samples are noise
RAMPS = ("Blues", "Oranges", "Greens", "Reds", "Purples", "Greys", "YlOrBr", "PuRd")


def member_color(i: int) -> tuple[float, ...]:
    palette = colormaps["tab10" if i < 10 else "tab20"]
    return palette(i % palette.N)


def _figure(ncols: int = 1, nrows: int = 1, width: float = 6.4,
            height: float = 4.4) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, without pyplot's global figure registry
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, list(axes.ravel())


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG atomically: an interrupted or failed write never leaves a
    0-byte or half figure in place of a good one."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    with rundir.os_errors(path.parent, "create the report folder"):
        path.parent.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_bytes(path, buffer.getvalue())
    return path


def report_folder(out: Path, chosen: bool) -> Path:
    """``out`` created, or a one-line error saying it cannot be written (and, when it is
    the default folder inside a run or sweep, to pick one with --out)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        message = str(rundir.os_error(out, error, "write the report into"))
        if not chosen:
            message += "; write the report elsewhere with --out DIR"
        raise RunDirError(message) from None
    return out


def _save(fig: Figure, path: str | Path) -> Path:
    path = save_figure(fig, path)
    fig.clear()
    return path


def _title(fig: Figure, what: str, tag: str, detail: str = "") -> None:
    """Two lines: what the figure shows, then the run (N, β) and any headline number."""
    suptitle(fig, f"{what}\n{tag}" + (f"; {detail}" if detail else ""))


def suptitle(fig: Figure, text: str, fontsize: float = 11) -> None:
    """The figure's title, each line wrapped to the figure's width (no title cut off at the
    edges)."""
    width = fig.get_figwidth() * 72 / (0.6 * fontsize)  # characters that fit, roughly
    lines = [textwrap.fill(line, max(20, int(width))) for line in text.split("\n")]
    fig.suptitle("\n".join(lines), fontsize=fontsize)


def _epoch_axis(ax: Axes) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _plain_log_labels(ax: Axes) -> None:
    """Log-axis tick labels as 0.3, 1, 5 rather than 3×10⁻¹."""
    def minor(value: float, _pos: int) -> str:  # label 2x and 5x only, to keep it legible
        leading = value / 10 ** np.floor(np.log10(value)) if value > 0 else 0
        return f"{value:g}" if round(leading) in (2, 5) else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def _member_label(i: int) -> str:
    return f"member {i}"


# ------------------------------------------------------------------ performance
def learning_curves(epochs: np.ndarray, member_accuracy: np.ndarray, ensemble_accuracy: np.ndarray,
                    loss_task: np.ndarray, loss_coupling: np.ndarray, tag: str,
                    path: str | Path) -> Path:
    """Fig. 2a: test accuracy [T, N] and [T] (fractions) and training loss parts [T, N]."""
    fig, (acc, loss) = _figure(ncols=2)
    for i in range(member_accuracy.shape[1]):
        acc.plot(epochs, 100 * member_accuracy[:, i], color=member_color(i), marker=".",
                 label=_member_label(i))
    acc.plot(epochs, 100 * ensemble_accuracy, color=ENSEMBLE, lw=2.2, marker="o",
             label="ensemble (mean)")
    acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    _epoch_axis(acc)
    _epoch_axis(loss)
    acc.legend(fontsize=8)
    for i in range(loss_task.shape[1]):
        loss.plot(epochs, loss_task[:, i], color=member_color(i), label=f"{_member_label(i)} task")
        loss.plot(epochs, loss_coupling[:, i], color=member_color(i), ls="--",
                  label=f"{_member_label(i)} coupling")
    loss.axhline(0, color="0.7", lw=0.8)
    loss.set(xlabel="epoch", ylabel="training loss (nats)",
             title="training loss: task KL(q‖p_i), coupling Σβ KL(p_j‖p_i)")
    finite = np.abs(np.concatenate([loss_task[np.isfinite(loss_task)],
                                    loss_coupling[np.isfinite(loss_coupling)]]))
    if finite.size and finite.max() > 100 * max(float(np.median(finite)), 1e-3):
        # a run heading for divergence: losses over orders of magnitude, negative couplings
        loss.set_yscale("symlog", linthresh=1.0)
    loss.legend(fontsize=7, ncols=2 if loss_task.shape[1] > 3 else 1)
    _title(fig, "Learning curves (paper Fig. 2a)", tag)
    return _save(fig, path)


def combiner_accuracy(epochs: np.ndarray, by_method: Mapping[str, np.ndarray],
                      member_accuracy: np.ndarray, tag: str, path: str | Path) -> Path:
    """Ensemble test accuracy [T] per combiner, with the members' [T, N] mean and range."""
    fig, (ax,) = _figure()
    styles = {"mean": "-", "geometric": "--", "vote": ":"}
    for method, accuracy in by_method.items():
        ax.plot(epochs, 100 * accuracy, ls=styles.get(method, "-"), lw=2, marker=".",
                label=f"ensemble, {method}")
    ax.plot(epochs, 100 * member_accuracy.mean(1), color="0.4", lw=1.5, label="member mean")
    ax.fill_between(epochs, 100 * member_accuracy.min(1), 100 * member_accuracy.max(1),
                    color="0.85", label="member min–max")
    ax.set(xlabel="epoch", ylabel="test accuracy (%)")
    _epoch_axis(ax)
    ax.legend(fontsize=8)
    _title(fig, "Ensemble accuracy per combiner (paper Supp. Fig. S3)", tag)
    return _save(fig, path)


def coupling_trajectory(epochs: np.ndarray, beta_mean: np.ndarray, js: np.ndarray,
                        target: float | None, tag: str, path: str | Path) -> Path:
    """The mean off-diagonal coupling per epoch [T] (left) and the members' mean JS distance
    [T] with the adaptive coupling's target (right)."""
    fig, (left, right) = _figure(2, width=4.6)
    left.plot(epochs, beta_mean, marker=".", lw=2, color=ENSEMBLE)
    left.axhline(0, color="0.7", lw=0.8)
    left.set(xlabel="epoch", ylabel="mean coupling β")
    right.plot(epochs, js, marker=".", lw=2, color="tab:purple", label="mean JS distance")
    if target is not None:
        right.axhline(target, color="tab:red", ls="--", label=f"target {target:g}")
    right.set(xlabel="epoch", ylabel="JS distance (nats)")
    right.legend(fontsize=8)
    for ax in (left, right):
        _epoch_axis(ax)
    _title(fig, "Coupling over training (schedule or adaptive) and the members' diversity",
           tag)
    return _save(fig, path)


def member_size(epochs: np.ndarray, logit_norm: np.ndarray, weight_norm: np.ndarray,
                tag: str, path: str | Path) -> Path:
    """Each member's centered-logit norm on the test set [T, N] (left) and parameter norm
    [T, N] (right) per epoch: how a negatively coupled member runs away before it collapses."""
    fig, (left, right) = _figure(2, width=4.6)
    for ax, values, label in ((left, logit_norm, "logit norm |z - mean z| (test mean)"),
                              (right, weight_norm, "weight norm |θ|")):
        for i in range(values.shape[1]):
            ax.plot(epochs, values[:, i], color=member_color(i), marker=".", lw=1,
                    label=_member_label(i))
        ax.set(xlabel="epoch", ylabel=label)
        finite = values[np.isfinite(values) & (values > 0)]
        if finite.size and finite.max() > 50 * finite.min():  # a runaway: see all scales
            ax.set_yscale("log")
            _plain_log_labels(ax)
        _epoch_axis(ax)
    if logit_norm.shape[1] <= 10:
        left.legend(fontsize=7)
    _title(fig, "Member output scale and weight size over training", tag)
    return _save(fig, path)


def accuracy_change(epochs: np.ndarray, member_change: np.ndarray, ensemble_change: np.ndarray,
                    tag: str, path: str | Path) -> Path:
    """Fig. S2b: |Δ accuracy| [T-1, N] and [T-1] (percentage points) on a log axis.

    ``epochs`` [T-1] is the later epoch of each pair; zero changes cannot be drawn on a log
    axis and are left out (said in the axis label).
    """
    fig, (ax,) = _figure()
    floor = np.nan

    def positive(x: np.ndarray) -> np.ndarray:
        return np.where(x > 0, x, floor)

    for i in range(member_change.shape[1]):
        ax.plot(epochs, positive(member_change[:, i]), color=member_color(i), marker=".",
                lw=1, label=_member_label(i))
    ax.plot(epochs, positive(ensemble_change), color=ENSEMBLE, marker="o", lw=2,
            label="ensemble (mean)")
    ax.set_yscale("log")
    _plain_log_labels(ax)
    _epoch_axis(ax)
    ax.set(xlabel="epoch", ylabel="|Δ test accuracy| vs previous epoch\n"
           "(percentage points, log; zeros not drawn)")
    ax.legend(fontsize=8)
    _title(fig, "Convergence (paper Fig. S2b)", tag)
    return _save(fig, path)


# ------------------------------------------------------------------ functional distances
def kl_distance_trajectory(epochs: np.ndarray, member_kl: np.ndarray, distance: np.ndarray,
                           distance_label: str, tag: str, path: str | Path) -> Path:
    """Fig. 2b: (KL(q‖p_i), d) per member [T, N], light (first epoch) to dark (last)."""
    fig, (ax,) = _figure(width=7.0, height=5.0)
    norm = Normalize(epochs.min(), max(epochs.max(), epochs.min() + 1))
    shade = 0.25 + 0.75 * norm(epochs)  # keep the first epoch visible
    handles = []
    for i in range(member_kl.shape[1]):
        ramp = colormaps[RAMPS[i % len(RAMPS)]]
        ax.plot(member_kl[:, i], distance[:, i], color=ramp(0.6), lw=0.8, alpha=0.6)
        ax.scatter(member_kl[:, i], distance[:, i], c=ramp(shade), s=36,
                   edgecolors="none", zorder=3)
        handles.append(Line2D([], [], color=ramp(0.9), marker="o", ls="", label=_member_label(i)))
    greys = ListedColormap(colormaps["Greys"](np.linspace(0.25, 1.0, 256)))  # as ``shade``
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=greys), ax=ax, label="epoch (light → dark)")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    ax.set(xlabel="KL(q‖p_i) on the test split (nats)", ylabel=distance_label)
    ax.legend(handles=handles, fontsize=8)
    _title(fig, "Performance vs distance over training (paper Fig. 2b)", tag)
    return _save(fig, path)


def js_heatmap(matrix: np.ndarray, tag: str, path: str | Path) -> Path:
    """Fig. 4a: the final JS distance matrix d(n_i, n_j) [N, N] (nats)."""
    n = matrix.shape[0]
    side = min(4.0 + 0.45 * n, 11.0)
    fig, (ax,) = _figure(width=side + 1.2, height=side)
    image = ax.imshow(matrix, cmap="viridis", vmin=0)
    fig.colorbar(image, ax=ax, label="d(n_i, n_j) = mean JS divergence (nats)")
    ticks = np.arange(n)
    labels = [str(i) for i in ticks]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set(xlabel="member j", ylabel="member i")
    if n <= 12:
        top = matrix.max() if matrix.max() > 0 else 1.0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{matrix[i, j]:.3g}", ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] < 0.6 * top else "black")
    _title(fig, "Functional distances at the end (paper Fig. 4a)", tag)
    return _save(fig, path)


def mds_trajectories(epochs: np.ndarray, trajectory: np.ndarray, r: float, tag: str,
                     path: str | Path) -> Path:
    """Fig. 4b: aligned MDS paths [T, N+1, 2] of the members and the ensemble (last).

    Colour intensity grows with the epoch; crosses mark the first epoch, circles the last.
    """
    fig, (ax,) = _figure(width=7.0, height=6.0)
    n = trajectory.shape[1] - 1
    shade = np.linspace(0.25, 1.0, len(epochs))
    handles = []
    for k in range(n + 1):
        ensemble = k == n
        ramp = colormaps["Greys" if ensemble else RAMPS[k % len(RAMPS)]]
        colors = ramp(shade)
        xy = trajectory[:, k]
        ax.plot(xy[:, 0], xy[:, 1], color=ramp(0.6), lw=2.2 if ensemble else 1, alpha=0.7)
        ax.scatter(xy[:, 0], xy[:, 1], c=colors, s=40 if ensemble else 22, zorder=3,
                   edgecolors="none")
        ax.scatter(*xy[0], marker="x", s=110, color=ramp(0.9), zorder=4, linewidths=2)
        ax.scatter(*xy[-1], marker="o", s=90, facecolors="none", edgecolors=ramp(1.0),
                   zorder=4, linewidths=1.5)
        handles.append(Line2D([], [], color=ramp(0.9), marker="o", lw=2.2 if ensemble else 1,
                              label="ensemble (mean)" if ensemble else _member_label(k)))
    handles += [Line2D([], [], color="0.3", marker="x", ls="", label=f"start (epoch {epochs[0]})"),
                Line2D([], [], color="0.3", marker="o", mfc="none", ls="",
                       label=f"end (epoch {epochs[-1]})")]
    ax.legend(handles=handles, fontsize=8)
    ax.set(xlabel="MDS dimension 1 (nats)", ylabel="MDS dimension 2 (nats)")
    ax.set_aspect("equal", adjustable="datalim")
    r_text = "undefined" if not np.isfinite(r) else f"{r:.3f}"
    _title(fig, "MDS of functional distances over training (paper Fig. 4b)", tag,
           f"r(d, embedded distance) = {r_text}")
    return _save(fig, path)


# ------------------------------------------------------------------ per-sample views
def sample_agreement(p_first: np.ndarray, p_second: np.ndarray, p_ensemble: np.ndarray,
                     ensemble_correct: np.ndarray, names: tuple[str, str], tag: str,
                     path: str | Path) -> Path:
    """Fig. 5a: true-class probabilities [B] of two members and the ensemble per sample."""
    fig, (left, right) = _figure(ncols=2, width=5.6, height=5.0)
    correct = ensemble_correct.astype(bool)
    for mask, color, label in ((correct, CORRECT, "ensemble correct"),
                               (~correct, WRONG, "ensemble wrong")):
        left.scatter(p_first[mask], p_second[mask], s=5, alpha=0.45, color=color,
                     edgecolors="none", label=f"{label} ({mask.sum()})")
        right.scatter(p_first[mask] - p_second[mask], p_ensemble[mask], s=5, alpha=0.45,
                      color=color, edgecolors="none", label=f"{label} ({mask.sum()})")
    left.set(xlabel=f"p(y_true|x), {names[0]}", ylabel=f"p(y_true|x), {names[1]}",
             xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title="member vs member")
    left.set_aspect("equal")
    right.set(xlabel=f"p(y_true|x): {names[0]} − {names[1]}", ylabel="p_ens(y_true|x)",
              xlim=(-1.02, 1.02), ylim=(-0.02, 1.02),
              title="specialization: edges = one member sure, the other not")
    # one legend for both panels, below them: inside, it covered the dense corners
    handles, labels = left.get_legend_handles_labels()
    legend = fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=2)
    for handle in legend.legend_handles:
        handle.set_sizes([30])
        handle.set_alpha(1)
    _title(fig, "Per-sample agreement (paper Fig. 5a)", tag)
    return _save(fig, path)


def entropy_histograms(member_entropy: np.ndarray, ensemble_entropy: np.ndarray, n_classes: int,
                       tag: str, path: str | Path) -> Path:
    """Fig. 5b / S5: histograms of per-sample entropies H[p_i(y|x)] [N, B] and [B] (nats)."""
    fig, (ax,) = _figure(width=7.0)
    bins = np.linspace(0.0, np.log(n_classes), 31)
    weight = 100.0 / member_entropy.shape[1]
    for i in range(member_entropy.shape[0]):
        ax.hist(member_entropy[i], bins=bins, histtype="step", lw=1.4, color=member_color(i),
                weights=np.full(member_entropy.shape[1], weight), label=_member_label(i))
    ax.hist(ensemble_entropy, bins=bins, histtype="step", lw=2, ls="--", color=ENSEMBLE,
            weights=np.full(len(ensemble_entropy), 100.0 / len(ensemble_entropy)),
            label="ensemble (mean)")
    ax.set(xlabel=f"entropy H[p(y|x)] (nats; max ln {n_classes} = {np.log(n_classes):.2f})",
           ylabel="samples (%)")
    ax.legend(fontsize=8, ncols=2 if member_entropy.shape[0] > 5 else 1)
    _title(fig, "Confidence: per-sample entropy (paper Fig. 5b, S5)", tag)
    return _save(fig, path)


def votes_vs_confidence(votes: np.ndarray, p_ensemble: np.ndarray, ensemble_correct: np.ndarray,
                        n_members: int, rho: float, rescued: int, tag: str,
                        path: str | Path) -> Path:
    """Fig. 5c: members voting for the true class [B] vs p_ens(y_true|x) [B].

    Red and blue dots are shifted sideways (and jittered, seeded) to show their spread.
    """
    fig, (ax,) = _figure(width=7.0)
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(votes))
    correct = ensemble_correct.astype(bool)
    for mask, color, shift, label in ((correct, CORRECT, 0.15, "ensemble correct"),
                                      (~correct, WRONG, -0.15, "ensemble wrong")):
        ax.scatter(votes[mask] + shift + jitter[mask], p_ensemble[mask], s=5, alpha=0.4,
                   color=color, edgecolors="none", label=f"{label} ({mask.sum()})")
    means = [p_ensemble[votes == k].mean() if (votes == k).any() else np.nan
             for k in range(n_members + 1)]
    ax.plot(range(n_members + 1), means, color="0.2", marker="_", ms=24, ls="", mew=2.5)
    handles = [Line2D([], [], color=c, marker="o", ms=5, ls="", label=f"{what} ({m.sum()})")
               for m, c, what in ((correct, CORRECT, "ensemble correct"),
                                  (~correct, WRONG, "ensemble wrong"))]
    handles.append(Line2D([], [], color="0.2", marker="_", ms=12, mew=2.5, ls="",
                          label="mean per vote count"))
    ax.set_xticks(range(n_members + 1))
    ax.set(xlabel="members whose argmax is the true class (count)",
           ylabel="p_ens(y_true|x)", ylim=(-0.02, 1.02))
    ax.legend(handles=handles, fontsize=8)
    rho_text = "undefined" if not np.isfinite(rho) else f"{rho:.3f}"
    _title(fig, "Votes vs ensemble confidence (paper Fig. 5c)", tag,
           f"Spearman ρ = {rho_text}; {rescued} rescued (no member right, ensemble right)")
    return _save(fig, path)


# ------------------------------------------------------------------ structure
def activation_sparsity(epochs: np.ndarray, sparsity: Mapping[str, np.ndarray], tag: str,
                        path: str | Path) -> Path:
    """Fig. 6a: fraction of non-active units per ReLU layer, {layer: [E, N]}, over epochs."""
    layers = list(sparsity)
    ncols = min(len(layers), 2 if len(layers) <= 4 else 3)  # stays legible at page width
    nrows = -(-len(layers) // ncols)
    fig, axes = _figure(ncols=ncols, nrows=nrows, width=4.2, height=3.4)
    for ax, layer in zip(axes, layers, strict=False):
        values = sparsity[layer]
        for i in range(values.shape[1]):
            ax.plot(epochs, 100 * values[:, i], color=member_color(i), marker=".",
                    label=_member_label(i))
        ax.set(title=layer, xlabel="epoch (0 = initialization)", ylabel="non-active units (%)")
        _epoch_axis(ax)
    for ax in axes[len(layers):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    _title(fig, "Activation sparsity over training (paper Fig. 6a)", tag)
    return _save(fig, path)


def mean_activation(layers: Sequence[str], final: np.ndarray, initial: np.ndarray | None,
                    epoch: int, tag: str, path: str | Path) -> Path:
    """Fig. 6b: mean activation per ReLU layer [N, L] at ``epoch`` (bars per member)."""
    n, n_layers = final.shape
    fig, (ax,) = _figure(width=max(6.4, 1.2 * n_layers + 2))
    width = 0.8 / (n + (initial is not None))
    x = np.arange(n_layers)
    for i in range(n):
        ax.bar(x + i * width, final[i], width, color=member_color(i), label=_member_label(i))
    if initial is not None:
        ax.bar(x + n * width, initial, width, color="0.8", hatch="//", edgecolor="0.5",
               label="at initialization (member mean)")
    ax.set_xticks(x + width * (n - 1 + (initial is not None)) / 2, list(layers))
    ax.set(xlabel="hidden layer", ylabel="mean activation per unit and sample (a.u.)")
    top = np.nanmax(final) if initial is None else max(np.nanmax(final), np.nanmax(initial))
    ax.set_ylim(0, 1.3 * top if top > 0 else 1.0)  # room for the legend above the bars
    ax.legend(fontsize=8, ncols=min(n + 1, 4), loc="upper center")
    _title(fig, f"Mean activation per layer at epoch {epoch} (paper Fig. 6b)", tag)
    return _save(fig, path)


def weight_histograms(layer: str, weights: np.ndarray, tag: str, path: str | Path) -> Path:
    """Fig. 6c: histogram of one layer's final weights, per member [N, ...]."""
    fig, (ax,) = _figure(width=7.0)
    flat = weights.reshape(weights.shape[0], -1)
    edge = np.quantile(np.abs(flat), 0.999) * 1.05 or 1.0
    bins = np.linspace(-edge, edge, 61)
    for i in range(flat.shape[0]):
        ax.hist(np.clip(flat[i], -edge, edge), bins=bins, histtype="step", lw=1.4, density=True,
                color=member_color(i), label=f"{_member_label(i)} (std {flat[i].std():.3f})")
    ax.set(xlabel=f"{layer} weight value (a.u.; outer 0.1% clipped into the end bins)",
           ylabel="density (1/a.u.)")
    ax.legend(fontsize=8, ncols=2 if flat.shape[0] > 5 else 1)
    _title(fig, f"{layer} weights of the final checkpoint (paper Fig. 6c)", tag)
    return _save(fig, path)


# ------------------------------------------------------------------ uncertainty
def uncertainty_curves(epochs: np.ndarray, member: Mapping[str, np.ndarray],
                       ensemble: Mapping[str, np.ndarray], tag: str, path: str | Path) -> Path:
    """NLL, Brier and ECE over epochs: ``member`` {name: [T, N]}, ``ensemble`` {name: [T]}."""
    names = list(member)
    fig, axes = _figure(ncols=len(names), width=4.4, height=3.8)
    units = {"NLL": "nats", "Brier": "score, 0 = perfect", "ECE": "15 bins, 0 = calibrated"}
    for ax, name in zip(axes, names, strict=True):
        for i in range(member[name].shape[1]):
            ax.plot(epochs, member[name][:, i], color=member_color(i), marker=".",
                    label=_member_label(i))
        ax.plot(epochs, ensemble[name], color=ENSEMBLE, lw=2, marker="o", label="ensemble (mean)")
        ax.set(title=name, xlabel="epoch", ylabel=f"{name} ({units.get(name, '')})")
        _epoch_axis(ax)
    axes[0].legend(fontsize=7)
    _title(fig, "Uncertainty on the test split over training", tag)
    return _save(fig, path)


def reliability_diagram(curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                        tag: str, path: str | Path) -> Path:
    """Reliability diagram: {label: (confidence, accuracy, counts)} per bin, [n_bins] each."""
    fig, (left, right) = _figure(ncols=2, width=5.2, height=4.6)
    left.plot([0, 100], [0, 100], color="0.5", ls=":", label="perfect calibration")
    for k, (label, (confidence, accuracy, counts)) in enumerate(curves.items()):
        ensemble = label.startswith("ensemble")
        color = ENSEMBLE if ensemble else member_color(k)
        filled = counts >= MIN_BIN_COUNT
        left.plot(100 * confidence[filled], 100 * accuracy[filled], marker="o", ms=4,
                  color=color, lw=2 if ensemble else 1, label=label)
        centers = (np.arange(len(counts)) + 0.5) / len(counts)
        right.plot(100 * centers, 100 * counts / max(counts.sum(), 1), marker=".", color=color,
                   lw=2 if ensemble else 1, label=label)
    left.set(xlabel="confidence: max probability (%)", ylabel="accuracy in the bin (%)",
             xlim=(0, 100), ylim=(0, 100),
             title=f"reliability (15 bins; bins with ≥ {MIN_BIN_COUNT} samples)")
    right.set(xlabel="confidence bin centre (%)", ylabel="samples in the bin (%)",
              title="confidence histogram")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    _title(fig, "Calibration of the final predictions", tag)
    return _save(fig, path)
