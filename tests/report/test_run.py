"""Tests for colearning.report: the run report from saved artifacts."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import colearning.training.loop
import colearning.training.run
import colearning.training.setup
from colearning import rundir
from colearning.errors import RunDirError
from colearning.report import build_report
from colearning.report.artifacts import load_artifacts
from colearning.report.html import render_page
from colearning.report.run import collapse_warnings, mds_epochs, p_value, status_section

PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = {
    "learning_curves", "combiner_accuracy", "accuracy_change", "kl_distance_trajectory",
    "js_matrix", "mds_trajectory", "sample_agreement", "entropy_histograms",
    "votes_vs_confidence", "activation_sparsity", "mean_activation", "weight_histograms",
    "uncertainty_curves", "reliability", "member_size",
}


def _forbidden(*args, **kwargs):
    raise AssertionError("the report must not train or evaluate a network")


@pytest.fixture(scope="module")
def report(trained_run: Path) -> Path:
    """report.html of the tiny run in its default place, built once with every training and
    evaluation entry point of the trainer made to fail."""
    with pytest.MonkeyPatch.context() as patch:
        for module, name in ((colearning.training.run, "_fit"), (colearning.training.loop, "fit"),
                             (colearning.training.setup, "predict"),
                             (colearning.training.setup, "predict_split"),
                             (colearning.training.setup, "build_members")):
            patch.setattr(module, name, _forbidden)
        return build_report(trained_run)


def test_report_writes_every_figure_as_png(report: Path):
    pngs = {p.stem: p for p in report.parent.glob("*.png")}
    assert set(pngs) == FIGURES
    for path in pngs.values():
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 5_000, path.name


def test_html_embeds_figures_tables_and_config(report: Path, trained_run: Path):
    page = report.read_text()
    assert page.count("data:image/png;base64,") == len(FIGURES)
    assert 'src="' + "out/" not in page  # nothing linked, all embedded
    for caption in ("Table S3a", "Table S3b", "Table S4", "Final test metrics",
                    "Ensemble vs members"):
        assert caption in page
    for layer in ("ReLU1", "ReLU2", "Conv1", "Conv2", "FC1"):
        assert f"<td>{layer}</td>" in page
    assert (trained_run / "config.yaml").read_text().splitlines()[0] in page
    assert "n_members: 3" in page
    assert "N=3, β=-0.2" in page
    assert "Status: finished" in page
    assert re.search(r'<h2 id="s1">(.*?)</h2>', page).group(1) == "Run status"
    assert 'class="warning"' not in page  # a healthy run raises no warning


def test_tables_show_the_saved_numbers(report: Path, trained_run: Path):
    page = report.read_text()
    summary = json.loads((trained_run / "summary.json").read_text())
    for accuracy in summary["test/member_accuracy"]:
        assert f"<td>{100 * accuracy:.2f}</td>" in page
    final = rundir.read_jsonl(trained_run / "analysis.jsonl")[-1]
    std = final["members"][1]["weight_std"]["Conv2"]
    assert f"<td>{std:.3g}</td>" in page


def test_report_never_trains_and_defaults_to_run_dir_report(report: Path, trained_run: Path):
    assert report == trained_run / "report" / "report.html" and report.is_file()
    assert colearning.training.train is not _forbidden  # the patches are gone again


def _imported_colearning_modules(name: str) -> set[str]:
    """colearning modules that ``name`` imports (anywhere in its source), transitively."""
    import importlib.util

    seen: set[str] = set()
    todo = [name]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            continue
        package = module if spec.submodule_search_locations else module.rpartition(".")[0]
        tree = ast.parse(Path(spec.origin).read_text())
        # A package's PEP 562 __getattr__ (colearning.train -> colearning.training) imports
        # only when that attribute is asked for: not an import of the module itself.
        lazy = {id(inner) for node in tree.body
                if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
                for inner in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in lazy:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level
                                                      + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            todo += [n for n in names if n.startswith("colearning")
                     and n != "colearning.report.sweep"  # the sweep report's own business
                     and _is_module(n)]
    return seen


def _is_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # "package.function": a name, not a module
        return False


def test_report_modules_do_not_import_the_trainer():
    reached = _imported_colearning_modules("colearning.report.run")
    assert {"colearning.report.figures", "colearning.metrics", "colearning.rundir"} <= reached
    assert "colearning.training" not in reached


def test_final_weights_come_from_the_checkpoint(trained_run: Path):
    run = load_artifacts(trained_run)
    assert list(run.weights) == ["Conv1", "Conv2", "FC1"]
    state = rundir.load_checkpoint(trained_run / "checkpoint.pt")["model"]
    np.testing.assert_array_equal(run.weights["Conv2"], state["3__weight"].numpy())
    assert run.weights["Conv2"].shape == (3, 16, 8, 3, 3)
    # The trainer's own final weight statistics agree with the weights read back.
    final = run.analysis[-1]
    for i, member in enumerate(final["members"]):
        for layer, std in member["weight_std"].items():
            expected = torch.from_numpy(run.weights[layer][i]).std().item()
            assert std == pytest.approx(expected, rel=1e-5)
    assert run.probs_epochs == [2]
    assert run.log_probs.shape[0] == 3 and run.labels.shape == run.log_probs.shape[1:2]
    assert run.log_probs.dtype == np.float32 and run.predictions_note == ""


def test_not_a_run_directory_is_a_run_dir_error(tmp_path: Path):
    with pytest.raises(RunDirError, match="neither a run directory"):
        build_report(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        build_report(tmp_path / "file.txt")
    with pytest.raises(RunDirError):
        build_report(tmp_path / "missing")


def test_sweep_directory_goes_to_the_sweep_report(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    calls = []
    fake = type(sys)("colearning.report.sweep")
    fake.build_sweep_report = lambda path, out, allow_incomplete=False: calls.append(
        (path, out)) or Path(path) / "r.html"
    monkeypatch.setitem(sys.modules, "colearning.report.sweep", fake)
    (tmp_path / "sweep.yaml").write_text("name: demo\n")
    assert build_report(tmp_path, tmp_path / "o") == tmp_path / "r.html"
    assert calls == [(tmp_path, tmp_path / "o")]


def test_collapsed_and_stopped_runs_are_flagged_at_the_top(run_copy: Path):
    records = rundir.read_jsonl(run_copy / "metrics.jsonl")
    records[-1]["test/member_collapsed"] = [False, True, False]
    (run_copy / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    analysis = rundir.read_jsonl(run_copy / "analysis.jsonl")
    analysis[-1]["members"][2]["activation"]["ReLU2"]["dead"] = 1.0
    (run_copy / "analysis.jsonl").write_text("".join(json.dumps(r) + "\n" for r in analysis))
    summary = json.loads((run_copy / "summary.json").read_text())
    summary.update(status="diverged", status_detail="diverged at epoch 3, step 2")
    (run_copy / "summary.json").write_text(json.dumps(summary))

    run = load_artifacts(run_copy)
    assert collapse_warnings(run) == [
        "member 1 collapsed: after it had learned, its output ignores the input (one class, "
        "near-constant probabilities, or a dead ReLU layer), since epoch 3.",  # 0-based
        "member 2 has dead ReLU layers at epoch 3 (every unit zero on every sample): ReLU2.",
    ]
    page = render_page("t", [status_section(run)])
    warning = re.search(r'<div class="warning">(.*?)</div>', page).group(1)
    assert "Run status: diverged (diverged at epoch 3, step 2); 3 of 3 epochs" in warning
    assert "member 1 collapsed" in warning and "ReLU2" in warning
    assert "Status: diverged" in page


def test_run_without_predictions_or_checkpoint_still_reports(run_copy: Path):
    (run_copy / "predictions.npz").unlink()
    (run_copy / "checkpoint.pt").unlink()
    (run_copy / "summary.json").unlink()  # as while a run is still going
    page = build_report(run_copy, run_copy / "out").read_text()
    assert "Not available: the run saved no predictions.npz" in page
    assert "no weight histograms: no checkpoint.pt" in page
    assert "Run status: running" in page  # no summary.json yet
    pngs = {p.stem for p in (run_copy / "out").glob("*.png")}
    assert pngs == FIGURES - {"sample_agreement", "entropy_histograms", "votes_vs_confidence",
                              "reliability", "weight_histograms"}


def test_run_with_no_completed_epoch(run_copy: Path):
    (run_copy / "metrics.jsonl").write_text("")
    (run_copy / "predictions.npz").unlink()
    (run_copy / "summary.json").unlink()
    page = build_report(run_copy, run_copy / "out").read_text()
    assert page.count("Not available: no epoch completed") == 3
    assert "Run status: running; 0 of 3 epochs completed." in page
    assert {p.stem for p in (run_copy / "out").glob("*.png")} == {
        "activation_sparsity", "mean_activation", "weight_histograms"}


def test_mds_epochs_subsamples_evenly_and_keeps_the_ends():
    assert mds_epochs(5).tolist() == [0, 1, 2, 3, 4]
    picked = mds_epochs(150, limit=30)
    assert len(picked) == 30 and picked[0] == 0 and picked[-1] == 149
    assert np.all(np.diff(picked) >= 4) and np.all(np.diff(picked) <= 6)


def test_p_value_text():
    assert p_value(0.0123) == "p = 0.012"
    assert p_value(1e-9) == "p < 0.001"
    assert p_value(float("nan")) == "p undefined"


def test_old_float16_predictions_still_load_with_a_note(run_copy: Path):
    # Runs before 0.2 saved float16 probabilities under "probs"; they keep loading.
    path = run_copy / "predictions.npz"
    with np.load(path) as saved:
        log_probs, labels = saved["log_probs"], saved["labels"]
    np.savez_compressed(path, probs=np.exp(log_probs).astype(np.float16), labels=labels)
    run = load_artifacts(run_copy)
    assert run.predictions_note.startswith("predictions.npz was written")
    np.testing.assert_allclose(np.exp(run.log_probs), np.exp(log_probs), atol=1e-3)
    html = build_report(run_copy).read_text()
    assert "float16" in html


def test_mds_embeds_the_whole_trajectory_jointly_when_epochs_were_saved(tmp_path: Path):
    from colearning.config import config_from_dict
    from colearning.training import train
    from tests.report.conftest import TINY_RUN

    config = {**TINY_RUN, "train": {**TINY_RUN["train"], "save_probs_every": 1}}
    run = train(config_from_dict(config), run_dir=tmp_path / "run")
    page = build_report(run.run_dir).read_text()
    assert "all 3 saved epochs" in page and "(member or ensemble, epoch) points embedded " \
        "jointly" in page
    assert (run.run_dir / "report" / "mds_trajectory.png").stat().st_size > 0


def test_report_says_when_the_mds_could_not_be_joint(report: Path):
    text = report.read_text()  # the tiny run saved epoch 2's predictions only
    assert "saved the predictions of fewer than two epochs (train.save_probs_every)" in text
    assert "Jensen-Shannon (JS) divergence" in text


def test_a_member_of_nan_probabilities_is_a_warning_box(run_copy: Path):
    import numpy as np

    with np.load(run_copy / "predictions.npz") as saved:
        arrays = dict(saved)
    arrays["log_probs"][1] = np.nan  # the whole of member 1
    arrays["log_probs"][2, :5] = np.inf  # five samples of member 2
    rundir.atomic_savez(run_copy / "predictions.npz", **arrays)
    run = load_artifacts(run_copy)
    lines = collapse_warnings(run)
    assert any(line.startswith("member 1 has no finite probability") for line in lines)
    assert any("member 2 has non-finite probabilities on 5 of" in line for line in lines)
    page = build_report(run_copy, run_copy / "out").read_text()
    warning = re.search(r'<div class="warning">(.*?)</div>', page).group(1)
    assert "member 1 has no finite probability" in warning
