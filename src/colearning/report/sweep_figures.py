"""The sweep report's figures: accuracy and JS distance against the coupling, the gain
heatmap, the optimal coupling against N, and the gain along training (PNG files; the page
that shows them is :mod:`colearning.report.sweep`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

from colearning.report.figures import save_figure, suptitle
from colearning.sweep import analysis

COMBINER_TITLES = {"mean": "mean of probabilities (Eq. 4)", "geometric": "geometric mean",
                   "vote": "majority vote"}
MEMBERS = "test/member_accuracy_mean"
JS = "test/js_mean"


# ------------------------------------------------------------------------- helpers
def _figure(ncols: int = 1, nrows: int = 1, width: float = 5.6,
            height: float = 4.2) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig: Figure, path: Path) -> Path:
    return save_figure(fig, path)


def facet_label(facets: Sequence[str], values: Sequence[Any]) -> str:
    """``loss.kl_reduction=mean`` style text for a facet combination ('' without facets)."""
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(facets, values, strict=True))


def facet_values(rows: list[dict[str, Any]], facets: Sequence[str]) -> list[tuple]:
    seen: dict[tuple, None] = {}
    for row in rows:
        seen[tuple(row.get(k) for k in facets)] = None
    return list(seen) or [()]


def select_rows(rows: list[dict[str, Any]], facets: Sequence[str], values: tuple,
            n: int | None = None) -> list[dict[str, Any]]:
    return [r for r in rows if tuple(r.get(k) for k in facets) == values
            and (n is None or r["N"] == n) and r["beta"] is not None]


def ensemble_sizes(rows: list[dict[str, Any]]) -> list[int]:
    return sorted({r["N"] for r in rows})


def _pct(value: Any) -> float:
    return 100 * value if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def _series(rows: list[dict[str, Any]], metric: str, x: str = "beta",
            scale: float = 100.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = sorted((r for r in rows if r.get("n_finished")), key=lambda r: r[x])
    xs = np.array([r[x] for r in rows], dtype=float)
    mean = np.array([r.get(f"{metric}:mean", math.nan) for r in rows], dtype=float) * scale
    std = np.array([r.get(f"{metric}:std", math.nan) for r in rows], dtype=float) * scale
    return xs, mean, np.nan_to_num(std)


def beta_color(beta: float, betas: Sequence[float]) -> Any:
    """Blues for beta < 0, reds for beta > 0, darker with |beta| (by rank among the grid's
    betas of that sign, so neighbours differ); black for beta = 0.

    (A plain diverging map fades small couplings, the interesting ones, to near white.)
    """
    if beta == 0:
        return "black"
    same = sorted(abs(b) for b in betas if b != 0 and (b < 0) == (beta < 0))
    rank = same.index(abs(beta)) if abs(beta) in same else len(same) - 1
    shade = 0.35 + 0.65 * rank / max(1, len(same) - 1)
    return colormaps["Blues" if beta < 0 else "Reds"](shade)


# A final accuracy this far below the panel's median is a collapse (chance level); plotting
# it on the same axis would flatten the differences of about 1 point that the figure is for.
OFF_SCALE_PP = 10.0


def _focus(ax: Any, rows: list[dict[str, Any]], metric: str, x: str, members: bool) -> list[str]:
    """Zoom the y-axis on the non-collapsed points and span the x-axis over the whole grid.

    Collapsed points get a red triangle on the bottom edge; diverged/failed couplings (no
    final accuracy) a red cross. Returns the notes for the off-scale points.
    """
    grid = sorted({r[x] for r in rows if r[x] is not None})
    if len(grid) > 1:
        pad = 0.04 * (grid[-1] - grid[0])
        ax.set_xlim(grid[0] - pad, grid[-1] + pad)
    done = [r for r in rows if r.get("n_finished") and _finite(r.get(f"{metric}:mean"))]
    if not done:
        return []
    median = float(np.median([r[f"{metric}:mean"] for r in done])) * 100
    keys = [metric, MEMBERS] if members else [metric]
    low, high, notes, off = [], [], [], []
    for r in done:
        if 100 * r[f"{metric}:mean"] < median - OFF_SCALE_PP:
            off.append(r)
            notes.append(f"{r[x]:g}: ensemble {100 * r[f'{metric}:mean']:.1f}%"
                         + (f" ({r['n_collapsed']}/{r['n_finished']} cells collapsed)"
                            if r.get("n_collapsed") else ""))
            continue
        for key in keys:
            mean, std = r.get(f"{key}:mean"), r.get(f"{key}:std")
            if _finite(mean):
                spread = std if _finite(std) else 0.0
                low.append(100 * (mean - spread))
                high.append(100 * (mean + spread))
    if off and low:
        bottom, top = min(low) - 0.6, max(high) + 0.6
        ax.set_ylim(bottom, top)
        for r in off:
            ax.plot(r[x], bottom, "v", color="tab:red", ms=9, clip_on=False, zorder=5)
    bottom = ax.get_ylim()[0]
    for r in rows:  # failed cells are shown, not dropped: a red x wherever any failed
        if r.get("n_diverged") or r.get("n_failed"):
            ax.plot(r[x], bottom, "x", color="tab:red", ms=8, mew=2, clip_on=False, zorder=5)
    return notes


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _note_unfinished(ax: Any, summary: list[dict[str, Any]], x: str = "beta",
                     off_scale: Sequence[str] = ()) -> None:
    """Say in the panel which couplings diverged/failed (red x) or fell off scale (red v)."""
    bad = [r for r in summary if r.get("n_diverged") or r.get("n_failed")]
    if not any(r.get("n_finished") for r in summary):
        ax.text(0.5, 0.5, "no finished cells yet", ha="center", va="center",
                transform=ax.transAxes, color="0.4")
    label = "β" if x == "beta" else "β̄"
    lines = []
    if bad:
        parts = [f"{r[x]:g}" + (f" (N={r['N']})" if len({b['N'] for b in bad}) > 1 else "")
                 + f": {r['n_diverged'] + r['n_failed']}/{r['n_cells']}" for r in
                 sorted(bad, key=lambda r: (r["N"], r[x]))]
        lines.append(f"x diverged/failed cells at {label} " + ", ".join(parts))
    if off_scale:
        lines.append(f"v off scale at {label} " + "; ".join(off_scale))
    if lines:
        ax.text(0.99, 0.02, "\n".join(lines), ha="right", va="bottom", transform=ax.transAxes,
                fontsize=7, color="tab:red")


def _size_colors(sizes: Sequence[int]) -> dict[int, Any]:
    palette = colormaps["viridis"]
    return {n: palette(0.85 * k / max(1, len(sizes) - 1)) for k, n in enumerate(sizes)}


# ------------------------------------------------------------------------- figures
def accuracy_vs_coupling(summary: list[dict[str, Any]], facets: Sequence[str], metric: str,
                         path: Path, *, x: str = "beta", members: bool = True,
                         what: str = "") -> Path:
    """Ensemble (solid) and mean individual (dashed) accuracy vs beta or beta_bar, one panel
    per facet, one colour per N, std bands over seeds, dotted line at the beta=0 ensemble."""
    groups = facet_values(summary, facets)
    sizes = ensemble_sizes(summary)
    colors = _size_colors(sizes)
    fig, axes = _figure(len(groups))
    seeds = max((r.get("n_finished") or 0 for r in summary), default=0)
    for ax, values in zip(axes[0], groups, strict=True):
        for n in sizes:
            rows = select_rows(summary, facets, values, n)
            xs, mean, std = _series(rows, metric, x)
            if not len(xs):
                continue
            label = f"ensemble, N={n}" if len(sizes) > 1 else "ensemble"
            ax.plot(xs, mean, "o-", color=colors[n], label=label, lw=1.8, ms=4)
            ax.fill_between(xs, mean - std, mean + std, color=colors[n], alpha=0.18, lw=0)
            zero = [r for r in rows if r["beta"] == 0 and r.get("n_finished")]
            if zero:
                ax.axhline(100 * zero[0][f"{metric}:mean"], color=colors[n], ls=":", lw=1.2,
                           label="ensemble at β=0" if len(sizes) == 1 else None)
            if members and len(sizes) <= 2:
                xs_m, mean_m, std_m = _series(rows, MEMBERS, x)
                label = "individual networks (mean)" + (f", N={n}" if len(sizes) > 1 else "")
                ax.plot(xs_m, mean_m, "s--", color=colors[n], alpha=0.75, label=label, ms=3)
                ax.fill_between(xs_m, mean_m - std_m, mean_m + std_m, color=colors[n],
                                alpha=0.08, lw=0)
        ax.axvline(0, color="0.6", lw=0.8)
        panel = select_rows(summary, facets, values)
        off_scale = _focus(ax, panel, metric, x, members and len(sizes) <= 2)
        _note_unfinished(ax, panel, x, off_scale)
        ax.set_xlabel("coupling β" if x == "beta" else "normalized coupling β̄ = β·N")
        ax.set_ylabel("test accuracy at the final epoch (%)")
        ax.set_title(facet_label(facets, values) or "all cells", fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    suptitle(fig, f"{what}: mean ± std over {seeds} seed(s)")
    return _save(fig, path)


def js_vs_beta(summary: list[dict[str, Any]], facets: Sequence[str], path: Path) -> Path:
    """Mean pairwise JS divergence between members (Eq. 5) vs beta, per facet and N."""
    groups = facet_values(summary, facets)
    sizes = ensemble_sizes(summary)
    colors = _size_colors(sizes)
    fig, axes = _figure(len(groups))
    for ax, values in zip(axes[0], groups, strict=True):
        for n in sizes:
            xs, mean, std = _series(select_rows(summary, facets, values, n), JS, scale=1.0)
            if not len(xs):
                continue
            ax.plot(xs, mean, "o-", color=colors[n], label=f"N={n}", ms=4)
            ax.fill_between(xs, mean - std, mean + std, color=colors[n], alpha=0.18, lw=0)
        _note_unfinished(ax, select_rows(summary, facets, values))
        ax.set_xlabel("coupling β")
        ax.set_ylabel("mean JS divergence between members (nats)")
        ax.set_title(facet_label(facets, values) or "all cells", fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    suptitle(fig, "Functional distance d(n_i, n_j) at the final epoch: mean ± std over seeds")
    return _save(fig, path)


def gain_heatmap(summary: list[dict[str, Any]], facets: Sequence[str], metric: str,
                 path: Path, what: str) -> Path:
    """Mean ensemble accuracy minus the beta=0 mean, per (N, beta), in percentage points."""
    groups = facet_values(summary, facets)
    gains = analysis.gain_over_independent(summary, metric, facets)
    sizes = ensemble_sizes(summary)
    betas = sorted({g["beta"] for g in gains if g["beta"] is not None})
    fig, axes = _figure(len(groups), width=max(4.5, 0.55 * len(betas) + 2.5),
                        height=max(3.4, 0.45 * len(sizes) + 2.0))
    for ax, values in zip(axes[0], groups, strict=True):
        grid = np.full((len(sizes), len(betas)), np.nan)
        for g in select_rows(gains, facets, values):
            if g["gain"] is not None:
                grid[sizes.index(g["N"]), betas.index(g["beta"])] = 100 * g["gain"]
        # A robust colour range: one collapsed cell (-40 pp) must not wash out the +1 pp
        # gains; the printed numbers are exact, the colours saturate beyond the range.
        finite = np.abs(grid[np.isfinite(grid)])
        limit = max(0.5, float(np.percentile(finite, 75))) if finite.size else 1.0
        image = ax.imshow(np.clip(grid, -limit, limit), cmap="RdBu", aspect="auto",
                          norm=TwoSlopeNorm(0.0, -limit, limit))
        for i in range(len(sizes)):
            for j in range(len(betas)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:+.1f}", ha="center", va="center", fontsize=7,
                            color="white" if abs(grid[i, j]) > 0.7 * limit else "black")
                else:  # no finished cell here (pending, diverged or failed)
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=6, color="0.5")
        ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas], rotation=60, fontsize=8)
        ax.set_yticks(range(len(sizes)), [str(n) for n in sizes])
        ax.set_xlabel("coupling β")
        ax.set_ylabel("ensemble size N")
        ax.set_title(facet_label(facets, values) or "all cells", fontsize=10)
        fig.colorbar(image, ax=ax, label="gain over β=0 (pp)", extend="both")
    suptitle(fig, f"Ensemble accuracy gain over independent training ({what})")
    return _save(fig, path)


def optimal_beta_figure(best: list[dict[str, Any]], facets: Sequence[str],
                        fits: dict[tuple, dict[str, Any]], path: Path) -> Path:
    """beta* vs N with the exponential fit (left) and on log-log axes with the line fit."""
    fig, axes = _figure(2)
    linear, loglog = axes[0]
    groups = facet_values(best, facets)
    palette = colormaps["tab10"]
    for k, values in enumerate(groups):
        rows = sorted(select_rows(best, facets, values), key=lambda r: r["N"])
        n = np.array([r["N"] for r in rows], dtype=float)
        b = np.array([r["beta"] for r in rows], dtype=float)
        label = facet_label(facets, values) or "optimal β"
        linear.plot(n, b, "o", color=palette(k), label=label)
        loglog.plot(n, np.abs(b), "o", color=palette(k), label=label)
        grid = np.linspace(n.min(), n.max(), 200)
        exp_fit, line = fits[values].get("exponential"), fits[values].get("loglog")
        if exp_fit:
            linear.plot(grid, -analysis.exponential_curve(exp_fit, grid), "-", color=palette(k),
                        label=f"-({exp_fit['a']:.2g} e^(-{exp_fit['rate']:.2g} N) "
                              f"+ {exp_fit['c']:.2g})")
        if line:
            loglog.plot(grid, np.exp(line["intercept"]) * grid ** line["slope"], "-",
                        color=palette(k),
                        label=f"ln|β*| = ({line['slope']:.2f} ± "
                              f"{standard_error(line['slope_se'])}) ln N + "
                              f"({line['intercept']:.2f} ± "
                              f"{standard_error(line['intercept_se'])})")
    loglog.set_xscale("log")
    loglog.set_yscale("log")
    sizes = sorted({r["N"] for r in best})
    loglog.set_xticks(sizes, [str(n) for n in sizes])
    loglog.xaxis.set_minor_formatter(NullFormatter())
    loglog.yaxis.set_major_formatter(ScalarFormatter())
    linear.set_xlabel("ensemble size N")
    linear.set_ylabel("optimal coupling β* (β<0)")
    linear.set_xticks(sizes, [str(n) for n in sizes])  # ensemble sizes: integers
    loglog.set_xlabel("ensemble size N (log scale)")
    loglog.set_ylabel("|β*| (log scale)")
    for ax in (linear, loglog):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    suptitle(fig, "Optimal coupling β* (the grid's β<0 with the best mean ensemble accuracy) "
                  "vs ensemble size; for comparison, the paper's own fit (Fig. 3c) has slope "
                  "-0.99 ± 0.18")
    return _save(fig, path)


def gain_over_epochs_figure(curves: dict[tuple, dict[str, list[float]]],
                            facets: Sequence[str], path: Path, what: str) -> Path:
    """Ensemble gain over beta=0 along training, per (N, facet) panel, one line per beta."""
    panels = sorted({k[:-1] for k in curves}, key=lambda k: (k[-1], [str(v) for v in k[:-1]]))
    sizes = sorted({p[-1] for p in panels})
    groups = list(dict.fromkeys(p[:-1] for p in panels))
    betas = sorted({k[-1] for k in curves})
    fig, axes = _figure(len(groups), len(sizes))
    for i, n in enumerate(sizes):
        for j, values in enumerate(groups):
            ax = axes[i][j]
            limit, clipped = _gain_limit([curves.get(values + (n, b)) for b in betas]), []
            for beta in betas:
                curve = curves.get(values + (n, beta))
                if not curve:
                    continue
                mean = 100 * np.array(curve["mean"])
                if np.nanmin(mean) < -limit or np.nanmax(mean) > limit:
                    clipped.append(f"{beta:g}")
                ax.plot(curve["epoch"], mean, color=beta_color(beta, betas), lw=1.4,
                        label=f"β={beta:g}")
            ax.axhline(0, color="black", lw=0.8)
            ax.set_ylim(-limit, limit)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel("ensemble accuracy − β=0 (pp)")
            label = facet_label(facets, values)
            note = (f"\nβ = {', '.join(clipped)} leave the axis (collapse or divergence)"
                    if clipped else "")
            ax.set_title(f"N={n}" + (f", {label}" if label else "") + note, fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=3, loc="upper left")
    suptitle(fig, f"Ensemble gain over independent training along training\n({what}; "
                  "mean over seeds, paired by seed)")
    return _save(fig, path)


def _gain_limit(curves: Sequence[dict[str, list[float]] | None]) -> float:
    """A y-range (pp) that shows the small gains: collapsed couplings (tens of points below)
    would otherwise flatten every other curve. Curves whose final gain is within 5 pp set it.
    """
    spans = [max(abs(v) for v in c["mean"]) for c in curves
             if c and c["mean"] and abs(c["mean"][-1]) < 0.05]
    return max(2.0, 1.3 * 100 * max(spans)) if spans else 40.0


def accuracy_over_epochs_figure(epochs: list[dict[str, Any]], facets: Sequence[str],
                                metric: str, path: Path) -> Path:
    """Mean ensemble (solid) and individual (dashed) accuracy over epochs per beta."""
    keys = sorted({tuple(r.get(k) for k in facets) + (r["N"],) for r in epochs
                   if r.get("beta") is not None}, key=lambda k: (k[-1], [str(v) for v in k]))
    sizes = sorted({k[-1] for k in keys})
    groups = list(dict.fromkeys(k[:-1] for k in keys))
    betas = sorted({r["beta"] for r in epochs if r.get("beta") is not None})
    fig, axes = _figure(len(groups), len(sizes))
    for i, n in enumerate(sizes):
        for j, values in enumerate(groups):
            ax = axes[i][j]
            for beta in betas:
                rows = [r for r in select_rows(epochs, facets, values, n) if r["beta"] == beta]
                for key, style in ((metric, "-"), (MEMBERS, "--")):
                    by_epoch: dict[int, list[float]] = {}
                    for r in rows:
                        if r.get(key) is not None:
                            by_epoch.setdefault(r["epoch"], []).append(r[key])
                    if not by_epoch:
                        continue
                    xs = sorted(by_epoch)
                    ys = [100 * float(np.mean(by_epoch[e])) for e in xs]
                    color = beta_color(beta, betas)
                    ax.plot(xs, ys, style, color=color, lw=1.8 if beta == 0 else 1.1,
                            label=f"β={beta:g}" if style == "-" else None)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel("test accuracy (%)")
            label = facet_label(facets, values)
            ax.set_title(f"N={n}" + (f", {label}" if label else "")
                         + "; solid: ensemble, dashed: members", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=2, loc="lower right")
    suptitle(fig, "Test accuracy along training, mean over seeds (β=0 in black)")
    return _save(fig, path)


def standard_error(value: float) -> str:
    """A standard error for a caption: two decimals, or n/a."""
    return f"{value:.2f}" if math.isfinite(value) else "n/a"
