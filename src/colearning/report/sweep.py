"""The sweep report: the paper's scaling figures and tests from a sweep directory's tables.

    build_sweep_report("sweeps/fig2c")     # -> sweeps/fig2c/report/report.html (+ PNGs)

Figures (each skipped, with a note, when the sweep lacks what it needs): accuracy vs beta
with std bands and the beta=0 line (Fig. 2c / 3a; S3 for the geometric and vote
combiners), the JS distance vs beta, the gain over beta=0 per (N, beta) as a heatmap
(Fig. 3b), the optimal beta vs N with exponential and log-log fits (Fig. 3c, >= 2 sizes),
accuracy vs beta_bar = beta * N (Fig. 3d, >= 2 sizes), and the ensemble gain over beta=0
along training (final-epoch numbers are the paper's measure; the curves show when an
effect appears or fades). Tables: per (N, beta) summary, optimal beta, paired Wilcoxon
signed-rank tests with Bonferroni correction per combiner (Fig. S4c, S3), problem cells.
Reads tables and metrics only; never trains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from colearning.report.figures import report_folder
from colearning.report.html import Section, Table, render_page, write_page
from colearning.report.sweep_figures import (
    COMBINER_TITLES,
    JS,
    MEMBERS,
    accuracy_over_epochs_figure,
    accuracy_vs_coupling,
    ensemble_sizes,
    facet_label,
    facet_values,
    gain_heatmap,
    gain_over_epochs_figure,
    js_vs_beta,
    optimal_beta_figure,
    select_rows,
)
from colearning.sweep import analysis
from colearning.sweep.layout import load_sweep_spec
from colearning.sweep.table import (
    cell_rows,
    epoch_rows,
    evaluation_metrics,
    facet_keys,
    summarize,
    write_tables,
)


# ------------------------------------------------------------------------- tables
def _fmt_pct(mean: Any, std: Any) -> str:
    if not isinstance(mean, (int, float)) or not math.isfinite(mean):
        return "-"
    if isinstance(std, (int, float)) and math.isfinite(std):
        return f"{100 * mean:.2f} ± {100 * std:.2f}"
    return f"{100 * mean:.2f}"


def _fmt(value: Any, spec: str = "{:.3g}") -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    return spec.format(value) if isinstance(value, (int, float)) else str(value)


def summary_table(summary: list[dict[str, Any]], facets: Sequence[str]) -> Table:
    gains = analysis.gain_over_independent(summary, analysis.ENSEMBLE, facets)
    header = [k.split(".")[-1] for k in facets] + [
        "N", "β", "β̄ = βN", "finished / cells", "ensemble (mean) %", "geometric %",
        "vote %", "members %", "gain over β=0 (pp)", "JS (nats)", "collapsed cells",
        "diverged/failed"]
    rows = []
    for row, gain in zip(summary, gains, strict=True):
        rows.append([*(row.get(k) for k in facets), row["N"], _fmt(row["beta"]),
                     _fmt(row["beta_bar"]), f"{row['n_finished']} / {row['n_cells']}",
                     *(_fmt_pct(row.get(f"{m}:mean"), row.get(f"{m}:std"))
                       for m in (*analysis.COMBINER_METRICS.values(), MEMBERS)),
                     _fmt(None if gain["gain"] is None else 100 * gain["gain"], "{:+.2f}"),
                     _fmt(row.get(f"{JS}:mean"), "{:.4f}"),
                     row["n_collapsed"], f"{row['n_diverged']}/{row['n_failed']}"])
    return Table("Final-epoch results per (N, β): mean ± std over seeds of the finished "
                 "cells; a group with fewer finished than cells averages the survivors only",
                 header, rows)


def wilcoxon_table(tests: list[dict[str, Any]], facets: Sequence[str], what: str) -> Table:
    header = [k.split(".")[-1] for k in facets] + [
        "N", "β", "β̄", "pairs", "mean diff coupled − indep. (pp)",
        "T+ (ranks where indep. > coupled)", "T−", "p", "p Bonferroni", "significant (<0.05)"]
    rows = [[*(t.get(k) for k in facets), t["N"], _fmt(t["beta"]), _fmt(t["beta_bar"]),
             t["pairs"], _fmt(100 * t["mean_diff"], "{:+.2f}"), _fmt(t["t_plus"], "{:g}"),
             _fmt(t["t_minus"], "{:g}"), _fmt(t["p"], "{:.3g}"),
             _fmt(t["p_bonferroni"], "{:.3g}"), "yes" if t["significant"] else "no"]
            for t in tests]
    return Table(f"Paired Wilcoxon signed-rank tests, coupled vs β=0 by seed ({what}); "
                 f"Bonferroni over the {sum(math.isfinite(t['p']) for t in tests)} tests "
                 "of this table", header, rows)


def problem_table(rows: list[dict[str, Any]]) -> Table | None:
    bad = [r for r in rows if r["status"] in ("diverged", "failed", "interrupted")
           or (r["status"] == "finished" and r.get("n_collapsed"))]
    if not bad:
        return None
    return Table("Cells that diverged, failed, were interrupted or have collapsed members",
                 ["cell", "status", "collapsed members", "epochs done", "error / detail"],
                 [[r["cell"], r["status"], r.get("n_collapsed") or 0, r["epochs_completed"],
                   r.get("error") or ""] for r in bad])


# ------------------------------------------------------------------------- the page
def build_sweep_report(path: str | Path, out: str | Path | None = None, *,
                       allow_incomplete: bool = False) -> Path:
    """Write ``out``/report.html (default ``path``/report) with every figure as a PNG.

    ``allow_incomplete``: let a coupling whose cells did not all finish be the optimal one.
    """
    path = Path(path)
    spec = load_sweep_spec(path)
    out = report_folder(Path(out) if out is not None else path / "report", out is not None)
    write_tables(path)
    rows = cell_rows(path)
    facets = facet_keys(rows)
    summary = summarize(rows, facets)
    epochs = epoch_rows(path)
    sizes = ensemble_sizes(rows)
    sections = [_status_section(spec.name, rows, path)]
    if not any(r["n_finished"] for r in summary):
        sections.append(Section("Results", warning="no cell has finished yet"))
        return _write(out, spec.name, sections)

    figures = [accuracy_vs_coupling(summary, facets, analysis.ENSEMBLE,
                                    out / "accuracy_vs_beta.png",
                                    what="Accuracy vs coupling (paper Fig. 2c / 3a)"),
               js_vs_beta(summary, facets, out / "js_vs_beta.png"),
               gain_heatmap(summary, facets, analysis.ENSEMBLE, out / "gain_heatmap.png",
                            "mean combiner, paper Fig. 3b")]
    sections.append(Section(
        "Accuracy vs coupling (Fig. 2c, 3a, 3b)", figures=figures,
        text="Final-epoch test accuracy (the paper's measure). Solid: ensemble (mean of "
             "member probabilities); dashed: individual networks averaged over members; "
             "bands: ± one std over seeds; dotted: the β=0 ensemble.",
        tables=[summary_table(summary, facets)]))
    sections.append(_scaling_section(summary, facets, sizes, out, allow_incomplete))
    sections.append(_epochs_section(epochs, facets, out))
    sections.append(_combiners_section(rows, summary, facets, out))
    robustness = _robustness_section(rows, summary, facets)
    if robustness is not None:
        sections.append(robustness)
    return _write(out, spec.name, sections)


def _write(out: Path, name: str, sections: list[Section]) -> Path:
    page = out / "report.html"
    write_page(page, render_page(f"Sweep {name}", sections))
    return page


def _status_section(name: str, rows: list[dict[str, Any]], path: Path) -> Section:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    collapsed = sum(1 for r in rows if r.get("n_collapsed"))
    text = (f"{len(rows)} cells: " + ", ".join(f"{v} {k}" for k, v in counts.items())
            + f"; {collapsed} with collapsed members. Tables: results.csv (one row per cell), "
              "summary.csv (per N, β), epochs.csv (per epoch), with .parquet copies.")
    pending = len(rows) - counts.get("finished", 0) - counts.get("diverged", 0)
    warning = (f"{pending} of {len(rows)} cells have no final result yet; the figures use the "
               f"finished ones. Continue with: colearn sweep --resume {path}"
               if pending else "")
    table = problem_table(rows)
    return Section("Cells", text=text, warning=warning, tables=[table] if table else [])


def _scaling_section(summary: list[dict[str, Any]], facets: Sequence[str],
                     sizes: list[int], out: Path, allow_incomplete: bool = False) -> Section:
    best = analysis.optimal_beta(summary, analysis.ENSEMBLE, facets,
                                 allow_incomplete=allow_incomplete)
    chooser = analysis.selection_metric(analysis.ENSEMBLE, summary)
    header = [k.split(".")[-1] for k in facets] + [
        "N", "β*", "β̄* = β*N", "finished / cells at β*", "test ensemble at β* %",
        "test ensemble at β=0 %", "gain (pp)", "β<0 left out (incomplete)"]
    how = ("chosen on the validation split (data.val_size), test accuracy reported at that "
           "choice" if chooser.startswith("val/") else
           "chosen on the TEST set (the runs hold out no validation split, so the optimum is "
           "flattered; set data.val_size)")
    rule = ("couplings whose cells did not all finish were allowed (--allow-incomplete)"
            if allow_incomplete else "couplings whose cells did not all finish are not "
            "eligible (--allow-incomplete lifts this)")
    table = Table(f"Optimal negative coupling β* per N: the grid's β<0 with the best mean "
                  f"final ensemble accuracy, {how}; {rule}", header,
                  [[*(b.get(k) for k in facets), b["N"], _fmt(b["beta"]),
                    _fmt(b["beta_bar"]), f"{b['n_finished']} / {b['n_cells']}",
                    _fmt_pct(b["value"], b["std"]),
                    _fmt_pct(b["independent"], None),
                    _fmt(None if b["gain"] is None else 100 * b["gain"], "{:+.2f}"),
                    ", ".join(f"{x:g}" for x in b["excluded"]) or "-"]
                   for b in best])
    if len(sizes) < 2:
        return Section("Optimal coupling vs N (Fig. 3c, 3d)", tables=[table],
                       text="The fits of β* against N and the curves against β̄ = β·N need "
                            "two or more ensemble sizes; this sweep has N = "
                            f"{', '.join(map(str, sizes))}.")
    fits: dict[tuple, dict[str, Any]] = {}
    lines = []
    for values in facet_values(best, facets):
        rows = select_rows(best, facets, values)
        n = [r["N"] for r in rows]
        b = [r["beta"] for r in rows]
        fits[values] = {"loglog": analysis.loglog_fit(n, b),
                        "exponential": analysis.exponential_fit(n, b)}
        label = facet_label(facets, values) or "all"
        line = fits[values]["loglog"]
        if line:
            lines.append(f"{label}: ln|β*| = ({line['slope']:.3f} ± {line['slope_se']:.3f}) "
                         f"ln N + ({line['intercept']:.3f} ± {line['intercept_se']:.3f}), "
                         f"r = {line['r']:.3f}, {line['points']} sizes")
        exp_fit = fits[values]["exponential"]
        if exp_fit:
            lines.append(f"{label}: |β*| = ({exp_fit['a']:.3g} ± {exp_fit['a_se']:.2g}) "
                         f"exp(-({exp_fit['rate']:.3g} ± {exp_fit['rate_se']:.2g}) N) + "
                         f"({exp_fit['c']:.3g} ± {exp_fit['c_se']:.2g})")
    figures = [optimal_beta_figure(best, facets, fits, out / "optimal_beta.png"),
               accuracy_vs_coupling(summary, facets, analysis.ENSEMBLE,
                                    out / "accuracy_vs_beta_bar.png", x="beta_bar",
                                    members=False,
                                    what="Ensemble accuracy vs β̄ = β·N (paper Fig. 3d)")]
    return Section("Optimal coupling vs N (Fig. 3c, 3d)", figures=figures, tables=[table],
                   text="Fits use natural logs; ± are standard errors (paper: slope "
                        "-0.99 ± 0.18, intercept -0.15).", pre="\n".join(lines))


def _epochs_section(epochs: list[dict[str, Any]], facets: Sequence[str], out: Path) -> Section:
    curves = analysis.gain_over_epochs(epochs, analysis.ENSEMBLE, facets)
    if not curves:
        return Section("Gain along training", text="No β≠0 cell pairs with a β=0 cell yet.")
    figures = [gain_over_epochs_figure(curves, facets, out / "gain_over_epochs.png",
                                       "mean combiner"),
               accuracy_over_epochs_figure(epochs, facets, analysis.ENSEMBLE,
                                           out / "accuracy_over_epochs.png")]
    return Section("Gain along training", figures=figures,
                   text="The paper reports final-epoch numbers; these curves show at which "
                        "epochs a coupled ensemble beats (above 0) or trails the β=0 "
                        "ensemble of the same seed, e.g. whether a gain appears only after "
                        "β=0 starts to overfit.")


# The evaluation columns the sweep report tabulates, when the cells have them (ood/auroc_*:
# every score of the first OOD set).
ROBUSTNESS_COLUMNS = ("shift/accuracy_mean", "shift/nll_mean", "shift/ece_mean",
                      "shift/accuracy_s5", "calibration/ensemble_ece_ts", "selective/aurc")


def _robustness_columns(rows: list[dict[str, Any]]) -> list[str]:
    present = evaluation_metrics(rows)
    return [k for k in present if k in ROBUSTNESS_COLUMNS or
            (k.startswith("ood/auroc_") and k.count("/") == 1)]


def _value(mean: Any, std: Any, key: str) -> str:
    if "accuracy" in key.rpartition("/")[2]:
        return _fmt_pct(mean, std)
    if not isinstance(mean, (int, float)) or not math.isfinite(mean):
        return "-"
    spread = f" ± {std:.2g}" if isinstance(std, (int, float)) and math.isfinite(std) else ""
    return f"{mean:.4g}{spread}"


def _robustness_section(rows: list[dict[str, Any]], summary: list[dict[str, Any]],
                        facets: Sequence[str]) -> Section | None:
    """Shift, OOD and calibration numbers of the cells ``colearn evaluate`` evaluated, per
    (N, β), and their seed-paired tests against β=0; None when no cell was evaluated."""
    keys = _robustness_columns(rows)
    if not keys:
        return None
    names = [k.split(".")[-1] for k in facets]
    means = Table("Robustness per (N, β): mean ± std over seeds of the evaluated cells "
                  "(accuracies in %)", [*names, "N", "β", *keys],
                  [[*(r.get(k) for k in facets), r["N"], _fmt(r["beta"]),
                    *(_value(r.get(f"{k}:mean"), r.get(f"{k}:std"), k) for k in keys)]
                   for r in summary])
    tests = []
    for key in keys:
        for t in analysis.paired_wilcoxon(rows, key, facets):
            diff = (_fmt(100 * t["mean_diff"], "{:+.2f}") if "accuracy" in key
                    else _fmt(t["mean_diff"], "{:+.4g}"))
            tests.append([key, *(t.get(k) for k in facets), t["N"], _fmt(t["beta"]),
                          t["pairs"], diff, _fmt(t["p"], "{:.3g}"),
                          _fmt(t["p_bonferroni"], "{:.3g}")])
    paired = Table("Seed-paired differences coupled − β=0 (accuracies in pp) with the "
                   "Wilcoxon signed-rank p, Bonferroni per metric",
                   ["metric", *names, "N", "β", "pairs", "mean diff", "p", "p Bonferroni"],
                   tests)
    return Section("Robustness: shift, OOD detection and calibration (colearn evaluate)",
                   tables=[means, paired] if tests else [means],
                   text="From each cell's evaluation/summary.json; results.csv and "
                        "summary.csv carry every such column. Compare configurations on one "
                        "with colearn compare --metric KEY.")


def _combiners_section(rows: list[dict[str, Any]], summary: list[dict[str, Any]],
                       facets: Sequence[str], out: Path) -> Section:
    figures, tables = [], []
    for name, metric in analysis.COMBINER_METRICS.items():
        tests = analysis.paired_wilcoxon(rows, metric, facets)
        if tests:
            tables.append(wilcoxon_table(tests, facets, COMBINER_TITLES[name]))
        if name == "mean":
            continue
        figures.append(accuracy_vs_coupling(summary, facets, metric,
                                            out / f"accuracy_vs_beta_{name}.png",
                                            members=False,
                                            what=f"Ensemble by {COMBINER_TITLES[name]} "
                                                 "(paper Fig. S3)"))
        figures.append(gain_heatmap(summary, facets, metric, out / f"gain_heatmap_{name}.png",
                                    f"{COMBINER_TITLES[name]}, paper Fig. S3"))
    return Section("Combiners and significance (Fig. S3, S4c)", figures=figures,
                   tables=tables,
                   text="Wilcoxon signed-rank test (two-sided, exact for small samples) of "
                        "the seed-paired differences between each coupled ensemble and the "
                        "β=0 ensemble with the same seed (same data split). T+ follows the "
                        "paper: T+ = 0 means the coupled ensemble was better on every seed. "
                        "With k seeds the smallest possible two-sided p is 2/2^k.")
