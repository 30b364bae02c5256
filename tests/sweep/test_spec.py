from __future__ import annotations

import pytest

from colearning.errors import ConfigError
from colearning.sweep.spec import cell_name, format_value, load_spec, spec_from_dict

BASE = {"data": {"name": "digits"}, "model": {"name": "mlp"}, "loss": {"beta": -0.4}}


def test_cells_are_seed_major_with_deterministic_names():
    spec = spec_from_dict({"base": BASE, "grid": {"N": [2, 3], "beta": [-0.4, 0, 1.0]},
                           "seeds": 2})
    names = [c.name for c in spec.cells()]
    assert names[:3] == ["N2_beta-0.4_seed0", "N2_beta0_seed0", "N2_beta1_seed0"]
    assert names[6] == "N2_beta-0.4_seed1" and len(names) == 12 == len(set(names))
    assert names == [c.name for c in spec_from_dict(spec.to_dict()).cells()]  # stable
    cell = spec.cells()[4]  # N3, beta 0, seed 0
    assert cell.config["ensemble"]["n_members"] == 3
    assert cell.config["loss"]["beta"] == 0.0 and cell.config["seed"] == 0
    assert cell.config["train"]["progress"] is False


def test_beta_bar_grid_clears_the_base_beta():
    spec = spec_from_dict({"base": BASE, "grid": {"beta_bar": [-1.0]}, "seeds": [3]})
    (cell,) = spec.cells()
    assert cell.name == "betabar-1_seed3"
    assert cell.config["loss"] == {**cell.config["loss"], "beta": None, "beta_bar": -1.0}


def test_any_config_key_and_filesystem_safe_names():
    spec = spec_from_dict({"base": BASE, "grid": {"loss.kl_reduction": ["batchmean", "mean"],
                                                  "optim.lr": [0.01, 1e-05]}})
    assert [c.name for c in spec.cells()] == [
        "klbatchmean_lr0.01", "klbatchmean_lr1e-05", "klmean_lr0.01", "klmean_lr1e-05"]
    assert format_value("a/b c") == "a-b-c" and format_value(True) == "true"
    assert cell_name({"seed": 1, "ensemble.n_members": 5}) == "N5_seed1"


@pytest.mark.parametrize("sweep, message", [
    ({"base": BASE, "grid": {"loss.betta": [0.1]}}, "unknown config key loss.betta"),
    ({"base": BASE, "grid": {"beta": [0.1]}, "sweeps": 2}, "unknown sweep key 'sweeps'"),
    ({"base": {**BASE, "optimizer": {}}}, "unknown config key optimizer"),
    ({"base": BASE, "grid": {"loss.kl_reduction": ["sum"]}}, "kl_reduction='sum'"),
    ({"base": BASE, "grid": {"beta": []}}, "one or more values"),
    ({"base": BASE, "grid": {"beta": [0.1, 0.1]}}, "repeats a value"),
    ({"base": BASE, "grid": {"beta": [0.1], "beta_bar": [1.0]}}, "not both"),
    ({"base": BASE, "seeds": 0}, "seeds must be"),
])
def test_invalid_sweeps_raise_config_error(sweep, message):
    with pytest.raises(ConfigError, match=message):
        spec_from_dict(sweep)


def test_base_config_file_overrides_and_relative_data_path(tmp_path, monkeypatch):
    (tmp_path / "run.yaml").write_text("model: {name: mlp}\ntrain: {epochs: 7}\n")
    (tmp_path / "sweep.yaml").write_text(
        "base_config: run.yaml\noverrides: {data: {name: imagefolder, path: imgs.tar}}\n"
        "grid: {beta: [0.0]}\n")
    monkeypatch.chdir(tmp_path)
    spec = load_spec(tmp_path / "sweep.yaml", overrides=["train.epochs=3"], seeds=2)
    assert spec.name == "sweep" and spec.grid["seed"] == [0, 1]
    assert spec.base["train"]["epochs"] == 3 and spec.base["model"]["name"] == "mlp"
    assert spec.base["data"]["path"] == str(tmp_path / "imgs.tar")


def test_shipped_sweep_configs_validate():
    from pathlib import Path

    root = Path(__file__).parents[2] / "configs" / "sweeps"
    sizes = {"fig2c_cpu_jpeg": 36, "fig2c_lenet5_cifar10": 630, "fig3_lenet5_cifar10": 2520,
             "figS4_vgg9_cifar100": 96}
    assert {name: len(load_spec(root / f"{name}.yaml").cells()) for name in sizes} == sizes


def test_relative_data_paths_are_relative_to_the_file_that_names_them(tmp_path, monkeypatch):
    from colearning.sweep import load_spec
    from colearning.sweep.runner import describe_cells

    (tmp_path / "configs" / "runs").mkdir(parents=True)
    (tmp_path / "configs" / "runs" / "base.yaml").write_text(
        "data: {name: imagefolder, path: ../../data/images.tar}\n")
    sweep = tmp_path / "configs" / "sweep.yaml"
    sweep.write_text("base_config: runs/base.yaml\ngrid: {beta: [0.0]}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(sweep)
    assert spec.base["data"]["path"] == str(tmp_path / "configs" / "runs" / ".." / ".." / "data"
                                            / "images.tar")
    listing = describe_cells(spec, tmp_path / "out")
    assert "cannot run: data.path" in listing and "does not exist" in listing
    sweep.write_text("base_config: runs/base.yaml\noverrides: {data: {path: d.tar}}\n"
                     "grid: {beta: [0.0]}\n")
    assert load_spec(sweep).base["data"]["path"] == str(tmp_path / "configs" / "d.tar")
    assert load_spec(sweep, ["data.path=x.tar"]).base["data"]["path"] == str(elsewhere / "x.tar")


# ------------------------------------------------------------------- grid keys on the command line
GRIDDED = {"base": BASE, "grid": {"beta": [-0.4, 0.0], "loss.coupling_options.k": [1]},
           "seeds": 2}


@pytest.mark.parametrize("override, message", [
    ("loss.beta=-0.1", r"loss.beta=-0.1 sets loss.beta, a grid key of the sweep \(loss.beta: "
                       r"\[-0.4, 0.0\]\); grids live in the sweep file"),
    ("loss.beta_bar=-0.5", "sets loss.beta_bar, which every cell replaces by the sweep's grid "
                           "key loss.beta"),
    ("loss={beta: 0.3}", "sets loss.beta, a grid key"),
    ("loss.coupling_options={k: 2}", "sets loss.coupling_options.k, a grid key"),
    ("seed=4", r"a grid key of the sweep \(seeds: 2\).*give --seeds K"),
])
def test_a_grid_key_on_the_command_line_is_refused(override, message):
    with pytest.raises(ConfigError, match=message) as error:
        spec_from_dict(GRIDDED, overrides=[override])
    assert "\n" not in str(error.value) and f"drop {override}" in str(error.value)
    # other keys still override the base
    spec = spec_from_dict(GRIDDED, overrides=["optim.lr=0.3", "loss.divergence=js"])
    assert spec.base["optim"]["lr"] == 0.3 and spec.cells()[0].config["loss"]["divergence"] == "js"


def test_cli_refuses_a_grid_key_override(tmp_path, capsys):
    from colearning.cli import main

    (tmp_path / "s.yaml").write_text("base: {model: {name: mlp}}\ngrid: {beta: [-0.4, 0.0]}\n")
    assert main(["sweep", "-c", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"),
                 "loss.beta=-0.1", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("colearn: error: loss.beta=-0.1 sets loss.beta, a grid key")
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ sweep size
def test_check_size_bounds_the_cell_count():
    from colearning.sweep.spec import MAX_CELLS, check_size

    assert MAX_CELLS == 100_000
    assert check_size({"optim.lr": 1000, "seed": 100}) == MAX_CELLS
    with pytest.raises(ConfigError, match=r"has 100,100 cells \(1,001 optim.lr x 100 seeds\)"):
        check_size({"optim.lr": 1001, "seed": 100})


@pytest.fixture
def no_cell_is_built(monkeypatch):
    """Building a cell (or a seed list) fails the test: a sweep too large to plan must be
    refused from its count alone (building 10^8 cells hangs with growing memory)."""
    import colearning.sweep.spec as spec_module

    def fail(*_args, **_kwargs):
        raise AssertionError("a cell was built before the sweep's size was checked")

    monkeypatch.setattr(spec_module, "cell_config", fail)
    monkeypatch.setattr(spec_module, "_seed_list", fail)


def test_a_grid_too_large_to_plan_is_refused_from_its_count(no_cell_is_built):
    values = [round(0.001 * (k + 1), 3) for k in range(100)]
    huge = {"base": BASE, "grid": {"optim.lr": values, "optim.momentum": values,
                                   "optim.weight_decay": values, "loss.beta": values}}
    with pytest.raises(ConfigError, match=r"the sweep has 100,000,000 cells \(100 optim.lr x "
                                          r"100 optim.momentum x 100 optim.weight_decay x 100 "
                                          r"loss.beta\), more than the 100,000 one sweep may "
                                          r"hold"):
        spec_from_dict(huge)
    with pytest.raises(ConfigError, match=r"the sweep has 2,000,000,000 cells \(2 loss.beta "
                                          r"x 1,000,000,000 seeds\)"):
        spec_from_dict({"base": BASE, "grid": {"beta": [0.0, 0.1]}, "seeds": 10**9})


def test_cli_refuses_too_many_seeds_in_one_line(no_cell_is_built, tmp_path, capsys):
    from colearning.cli import main

    (tmp_path / "s.yaml").write_text("base: {model: {name: mlp}}\ngrid: {beta: [-0.4, 0.0]}\n")
    assert main(["sweep", "-c", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"),
                 "--seeds", "60000", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("colearn: error: the sweep has 120,000 cells") and err.count("\n") == 1
