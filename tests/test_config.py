from pathlib import Path

import pytest

from colearning.config import (
    Config,
    config_from_dict,
    dump_yaml,
    load_config,
    parse_overrides,
)
from colearning.errors import ConfigError


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("loss:\n  beta: -0.4\ntrain:\n  epochs: 3\n")
    config = load_config(path, ["loss.beta=0.1", "ensemble.n_members=5", "model.options.width=8"])
    assert config.loss.beta == 0.1 and config.train.epochs == 3
    assert config.ensemble.n_members == 5 and config.model.options == {"width": 8}
    assert config.optim.lr == 0.01  # default
    assert load_config(None) == Config()


def test_roundtrip_through_yaml(tmp_path):
    config = load_config(None, ["loss.beta=[[0, -0.1], [-0.2, 0]]", "seed=3"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(config))
    assert load_config(path) == config


def test_int_is_accepted_for_float_but_not_bool_for_int():
    assert config_from_dict({"optim": {"lr": 1}}).optim.lr == 1.0
    with pytest.raises(ConfigError, match="train.epochs must be int"):
        config_from_dict({"train": {"epochs": True}})


@pytest.mark.parametrize(
    "values, match",
    [
        ({"loss": {"betta": 1}}, r"unknown config key loss\.betta; valid keys here: loss\.beta"),
        ({"nope": 1}, "unknown config key nope"),
        ({"train": {"epochs": "ten"}}, "train.epochs must be int, got 'ten'"),
        ({"ensemble": {"n_members": 0}}, "ensemble.n_members must be >= 1"),
        ({"train": {"batch_size": 0}}, "train.batch_size must be >= 1"),
        ({"loss": {"peers": "all"}}, "valid: detached, joint"),
        ({"optim": {"schedule": "linear"}}, "valid: constant, cosine, step, warmup"),
        ({"loss": {"beta": 0.1, "beta_bar": -1.0}}, "not both"),
        ({"loss": {"beta": [[0, 1], [1, 0]]}, "ensemble": {"n_members": 3}}, "must be 3x3"),
        ({"loss": {"beta": float("nan")}}, "finite"),
        ({"loss": {"beta": [[0.0, float("inf")], [0.0, 0.0]]}}, "finite"),
        ({"data": {"test_size": 0}}, "data.test_size must be >= 1"),
        ({"train": "fast"}, "train must be a mapping"),
        ({"loss": {"objective": "interpolated"}}, r"needs loss.joint_weight in \[0, 1\]"),
        ({"loss": {"objective": "interpolated", "joint_weight": 1.5}}, r"in \[0, 1\]"),
        ({"loss": {"joint_weight": 0.5}}, "applies to loss.objective=interpolated only"),
        ({"loss": {"objective": "joint", "joint_weight": 0.5}}, "joint is lambda = 1"),
        ({"loss": {"objective": "joint", "beta": -0.2}}, "apply to loss.objective=colearning"),
        ({"loss": {"objective": "joint"}, "expand": {"source": "runs/a", "mode": "add-freeze",
                                                     "add": 1}, "ensemble": {"n_members": 3}},
         "growing an ensemble"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"seed": 2**64}, "seed=18446744073709551616 is out of range"),
        ({"train": {"epochs": 10**30}}, "train.epochs=.* is out of range"),
        ({"optim": {"momentum": float("nan")}}, "optim.momentum must be a finite number"),
        ({"optim": {"schedule": "step", "schedule_options": {"gamma": float("inf")}}},
         "optim.schedule_options.gamma must be a finite number"),
        ({"optim": {"schedule": "step", "schedule_options": {"gamma": 0.0}}},
         "step option gamma must be a number > 0"),
        ({"optim": {"lr": float("-inf")}}, "optim.lr must be a finite number"),
        ({"loss": {"coupling": "ring", "coupling_options": {"k": float("nan")}}},
         "loss.coupling_options.k must be a finite number"),
        ({"model": {"options": {"hidden": [32, float("inf")]}}},
         "model.options.hidden must be a finite number"),
    ],
)
def test_bad_configs(values, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(values)


def test_bad_override_syntax_and_files(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["loss.beta"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listed)


def test_shipped_configs_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.yaml")) + sorted((root / "paper").glob("*.yaml"))
    assert len(files) >= 3
    for path in files:
        load_config(path)


def test_shipped_configs_describe_kl_reduction_as_the_code_does():
    # "mean" divides only the coupling KLs by C (colearning.losses); a comment claiming it
    # divides both terms would describe a different, learning-rate-like change.
    root = Path(__file__).resolve().parents[1] / "configs"
    for path in root.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            if "kl_reduction" in line and "#" in line:
                comment = line.split("#", 1)[1]
                assert "both" not in comment, f"{path}: {line.strip()}"


def test_an_override_of_beta_clears_the_files_beta_bar_and_back(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("loss:\n  beta_bar: -0.5\nensemble:\n  n_members: 4\n")
    assert load_config(path, ["loss.beta=-0.1"]).loss.beta == -0.1
    assert load_config(path, ["loss.beta=-0.1"]).loss.beta_bar is None
    path.write_text("loss:\n  beta: -0.1\n")
    config = load_config(path, ["loss.beta_bar=-1"])
    assert (config.loss.beta, config.loss.beta_bar) == (None, -1.0)
    with pytest.raises(ConfigError, match="not both"):  # both in the overrides: still an error
        load_config(path, ["loss.beta=-0.1", "loss.beta_bar=-1"])


def test_relative_data_paths_in_a_config_file_are_relative_to_it(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "run.yaml"
    path.write_text("data: {name: imagefolder, path: ../data/x.tar, cache_dir: cache}\n")
    monkeypatch.chdir(tmp_path / "configs")
    monkeypatch.chdir("/")
    config = load_config(path, ["data.name=cifar10"])
    assert config.data.path == str(tmp_path / "configs" / ".." / "data" / "x.tar")
    assert config.data.cache_dir == str(tmp_path / "configs" / "cache")
    assert load_config(path, ["data.path=y"]).data.path == "/y"  # overrides: the cwd


@pytest.mark.parametrize("key, bad, valid", [
    ("loss.objective", "ncl", "colearning, distill, interpolated, joint"),
    ("loss.divergence", "wasserstein", "js, kl, l2, reverse_kl"),
    ("loss.coupling", "mesh", "communities, matrix, random, ring, star, uniform"),
    ("model.name", "lenet", None),
    ("data.name", "mnist", None),
])
def test_every_named_key_is_checked_against_its_registry(key, bad, valid):
    """The registries are the only lists of names: one check for all of them."""
    from colearning.names import check_names
    from colearning.registry import Registry

    registry = Registry.by_key[key]
    section, name = key.split(".")
    config = config_from_dict({section: {name: bad}})  # types and ranges only
    with pytest.raises(ConfigError, match=f"{key}='{bad}' is not valid; valid: "
                                          f"{', '.join(registry.names())}"):
        check_names(config)
    if valid is not None:
        assert ", ".join(registry.names()) == valid
    check_names(Config())  # the defaults name registered entries


def test_shipped_sweeps_point_at_the_shared_data():
    """A data path in a shipped sweep is relative to its file: with ../shared beside the
    repository (as in CI), every one names a file that exists."""
    from colearning.sweep.spec import load_spec

    root = Path(__file__).resolve().parents[1]
    if not (root.parent / "shared" / "data").is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    checked = 0
    for path in sorted((root / "configs").rglob("*.yaml")):
        text = path.read_text()
        if "path:" not in text or "grid:" not in text:
            continue
        for cell in load_spec(path).cells()[:1]:
            assert Path(cell.config["data"]["path"]).exists(), path
            checked += 1
    assert checked >= 3


def test_hostile_config_files_fail_with_one_line(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"seed: 1\n\x00\x01\x02")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("model: {name: l\xe9net}\n".encode("latin-1"))
    bomb = tmp_path / "bomb.yaml"  # a "billion laughs" inside model.options
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 10) + "]" for k in range(1, 9)]
    bomb.write_text("model:\n  name: mlp\n  options:\n" + "".join(
        f"    {line}\n" for line in lines))
    huge = tmp_path / "huge.yaml"
    huge.write_text("seed: 0\n" + "# padding\n" * (5 * 2**20 // 10))
    cases = {binary: "is binary", latin: "not UTF-8 text", bomb: r"YAML aliases \(\*a0\)",
             huge: "MB; a config is a few KB"}
    for path, message in cases.items():  # refused before anything expands or parses
        with pytest.raises(ConfigError, match=message):
            load_config(path)


def test_hostile_config_files_on_the_command_line(tmp_path, capsys):
    from colearning.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    assert main(["train", "--config", str(bad), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("colearn: error: config file") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_fixed_choices_are_field_metadata():
    with pytest.raises(ConfigError, match="ensemble.strategy='fast' is not valid; valid: "
                                          "auto, loop, grouped, vmap"):
        config_from_dict({"ensemble": {"strategy": "fast"}})


def test_a_key_given_twice_in_a_file_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("seed: 1\ntrain:\n  epochs: 2\n  epochs: 5\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: key 'epochs' is given twice "
                                          r"\(lines 3 and 4\)"):
        load_config(path)
    path.write_text("loss: {beta: -0.1, beta: -0.2}\n")
    with pytest.raises(ConfigError, match="key 'beta' is given twice"):
        load_config(path)


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("5E-4", 5e-4), (".5", 0.5),
                                         ("2.5e+3", 2500.0), ("1.5e3", 1500.0)])
def test_numbers_in_any_spelling_python_or_yaml_1_2_accept(text, value, tmp_path):
    """PyYAML follows YAML 1.1, where 1e-3 is a string: not here (files, overrides, grids)."""
    assert load_config(None, [f"optim.lr={text}"]).optim.lr == value
    path = tmp_path / "run.yaml"
    path.write_text(f"optim:\n  lr: {text}\ntrain:\n  epochs: 1_000\n")
    config = load_config(path)
    assert config.optim.lr == value and config.train.epochs == 1000
    from colearning.sweep.spec import load_spec

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: s\nbase_config: run.yaml\ngrid:\n  optim.weight_decay: [{text}, 0]\n")
    cells = load_spec(sweep).cells()
    assert sorted(c.config["optim"]["weight_decay"] for c in cells) == sorted([value, 0.0])


def test_non_finite_numbers_are_refused_where_a_finite_one_is_required():
    for text in (".nan", ".inf", "-.inf"):
        with pytest.raises(ConfigError, match="optim.lr must be a finite number"):
            load_config(None, [f"optim.lr={text}"])
