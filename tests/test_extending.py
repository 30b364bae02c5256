"""A new coupling, objective and metric are one registration each (tests/plugin_example.py):
they train, pack, sweep (in worker processes) and report like the library's own; so are a
model and a dataset in the user's own files."""

import copy
import csv
import sys

import pytest

from colearning.couplings import COUPLINGS
from colearning.data import DATASETS
from colearning.errors import ConfigError
from colearning.evaluation import METRICS
from colearning.losses import OBJECTIVES
from colearning.report import build_report
from colearning.sweep.runner import run_sweep
from colearning.sweep.spec import spec_from_dict
from colearning.training import train, train_pack
from tests.conftest import assert_records_close

PLUGIN = "tests.plugin_example"
BASE = {"plugins": [PLUGIN], "device": "cpu", "data": {"name": "digits"},
        "model": {"name": "small_cnn", "options": {"width": 4}}, "ensemble": {"n_members": 4},
        "optim": {"lr": 0.05},
        "train": {"epochs": 2, "batch_size": 256, "progress": False, "analysis_every": 0}}


@pytest.fixture
def plugin():
    """The plugin, forgotten afterwards: the other tests see the library's own entries."""
    yield
    for registry, name in ((COUPLINGS, "pairs"), (OBJECTIVES, "smoothed"),
                           (METRICS, "ensemble_top2"), (DATASETS, "user_stripes")):
        if name in registry:
            registry.unregister(name)
    for module in (PLUGIN, "user_data"):
        sys.modules.pop(module, None)


def config(**loss):
    return {**copy.deepcopy(BASE), "loss": loss}


@pytest.mark.slow
def test_a_plugins_coupling_objective_and_metric_work_everywhere(plugin, tmp_path):
    paired = train(config(coupling="pairs", beta=-0.3), tmp_path / "pairs")
    record = paired.metrics[-1]
    assert 0 < record["test/ensemble_accuracy_mean"] <= record["test/ensemble_top2"] <= 1
    assert record["train/beta_mean"] == pytest.approx(-0.3 * 4 / 12)  # 2 pairs of 4 members
    assert all(c != 0 for c in record["train/loss_coupling"])  # every member has its partner
    smoothed = {**config(coupling="pairs", objective="smoothed"), "seed": 1}
    smooth = train(smoothed, tmp_path / "smoothed")
    assert smooth.metrics[-1]["train/loss_coupling"] == [0.0] * 4
    assert smooth.metrics[-1]["train/loss_task"][0] > 0

    # packed with each other (seeds and objectives are a pack's per-cell keys): the numbers
    # they get alone
    packed = train_pack([(config(coupling="pairs", beta=-0.3), tmp_path / "p0"),
                         (smoothed, tmp_path / "p1")])
    for cell, lone in zip(packed, (paired, smooth), strict=True):
        assert_records_close([{k: v for k, v in r.items() if k != "time/pack_cells"}
                              for r in cell.metrics],
                             [{k: v for k, v in r.items() if k != "time/pack_cells"}
                              for r in lone.metrics], rtol=1e-4)

    # a sweep over the new coupling, in a worker process that imports the plugin itself
    spec = spec_from_dict({"name": "ext", "base": config(beta=-0.3),
                           "grid": {"loss.coupling": ["uniform", "pairs"]}})
    result = run_sweep(spec, tmp_path / "sweep", workers=1, pack="off", progress=False)
    assert result.ok
    with open(tmp_path / "sweep" / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["coupling"] for row in rows) == ["pairs", "uniform"]
    assert all(0 < float(row["test/ensemble_top2"]) <= 1 for row in rows)

    # the end-of-run table, the run report show the metric, and the coupling by its name
    from colearning.console import format_summary

    assert "top-2" in format_summary(paired.summary)
    page = build_report(paired.run_dir).read_text()
    assert "top-2 accuracy (%)" in page and "pairs" in page
    assert build_report(tmp_path / "sweep").is_file()


def test_a_plugin_that_cannot_be_imported_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="plugins: cannot import 'no_such_module_here' "
                                          r"\(ModuleNotFoundError"):
        train({**config(), "plugins": ["no_such_module_here"]}, tmp_path / "r")
    with pytest.raises(ConfigError, match="is not a module name"):
        train({**config(), "plugins": ["../evil.py"]}, tmp_path / "r")
    assert not (tmp_path / "r").exists()


USER_MODEL = '''
from torch import nn


def build(num_classes, in_channels, image_size, hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, hidden),
                         nn.ReLU(), nn.Linear(hidden, num_classes))
'''

USER_DATA = '''
import numpy as np

from colearning import register_dataset


@register_dataset("user_stripes")
def stripes(path=None, **_):
    """Horizontal (0) or vertical (1) stripes over noise: 6x6 gray floats in [0, 1]."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 240)
    images = rng.uniform(0, 0.3, (240, 6, 6))
    images[labels == 0, ::2, :] += 0.7
    images[labels == 1, :, ::2] += 0.7
    return {"x_train": images[:200], "y_train": labels[:200], "x_test": images[200:],
            "y_test": labels[200:], "classes": ["horizontal", "vertical"]}
'''


@pytest.mark.slow
def test_a_model_in_the_users_own_file_by_its_import_path(plugin, tmp_path, monkeypatch):
    """model.name "module:factory": no registration; sweep workers import it themselves,
    and a dataset registered (register_dataset) in a plugin file of the user's."""
    from colearning import load_ensemble, register_model
    from colearning.models import MODELS

    (tmp_path / "user_net.py").write_text(USER_MODEL)
    (tmp_path / "user_data.py").write_text(USER_DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = {"name": "user_net:build", "options": {"hidden": 8}}
    run = train({**config(beta=-0.2), "model": model}, tmp_path / "run")
    assert run.status == "finished"
    ensemble, _ = load_ensemble(run.run_dir)
    assert ensemble.member(0)[1].out_features == 8
    base = config(beta=-0.2)
    base.update(plugins=["user_data"], model=model, data={"name": "user_stripes"})
    base["train"]["batch_size"] = 50
    spec = spec_from_dict({"name": "own", "base": base, "grid": {"loss.beta": [0.0, -0.2]}})
    assert run_sweep(spec, tmp_path / "sweep", workers=2, pack="off", progress=False).ok
    with open(tmp_path / "sweep" / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and all(float(row["test/ensemble_accuracy_mean"]) > 0.6
                                  for row in rows)  # stripes are easy to tell apart
    with pytest.raises(ConfigError, match="model.name='user_net:nope': cannot import it"):
        train({**config(), "model": {"name": "user_net:nope"}}, tmp_path / "bad")

    @register_model("user_mlp", augment=False)
    def user_mlp(num_classes, in_channels, image_size, hidden=16):
        return MODELS.get("mlp")(num_classes=num_classes, in_channels=in_channels,
                                 image_size=image_size, hidden=[hidden])
    try:
        assert train({**config(), "model": {"name": "user_mlp"}}, tmp_path / "reg").status \
            == "finished"
    finally:
        MODELS.unregister("user_mlp")
