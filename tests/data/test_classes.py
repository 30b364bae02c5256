"""data.classes: a run on a subset of the dataset's classes, relabelled in the given order,
the other classes' test images kept as the OOD set held-out."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from colearning.config import config_from_dict
from colearning.data import RawDataset, held_out, select_classes
from colearning.errors import ConfigError


def tiny() -> RawDataset:
    x = np.arange(12, dtype=np.uint8).reshape(12, 1, 1, 1).repeat(2, 2).repeat(2, 3)
    y = np.arange(12, dtype=np.int64) % 4
    return RawDataset(x, y, x[:8], y[:8], ["a", "b", "c", "d"])


def test_classes_are_relabelled_in_the_given_order():
    raw = tiny()
    picked = select_classes(raw, ["c", 0])  # names and indices mix
    assert picked.classes == ["c", "a"]
    assert picked.train_y.tolist() == [1, 0, 1, 0, 1, 0]
    assert picked.train_x[:, 0, 0, 0].tolist() == [0, 2, 4, 6, 8, 10]
    assert picked.test_y.tolist() == [1, 0, 1, 0]
    assert held_out(raw, ["c", 0])[:, 0, 0, 0].tolist() == [1, 3, 5, 7]
    assert select_classes(raw, None) is raw and len(held_out(raw, None)) == 0


@pytest.mark.parametrize("classes, said", [
    ([0, 11], "class index 11 is out of range"), (["a", "cat"], "unknown class 'cat'"),
    ([2, "c"], "names class 'c' \\(index 2\\) twice")])
def test_unknown_or_repeated_classes_are_refused_when_read(classes, said):
    with pytest.raises(ConfigError, match=said):
        select_classes(tiny(), classes)


@pytest.mark.parametrize("classes, said", [
    ([3], "at least 2 classes"), ([1, 1], "names 1 twice"), ([-1, 2], "indices must be >= 0")])
def test_the_config_refuses_fewer_than_two_or_duplicates(classes, said):
    with pytest.raises(ConfigError, match=said):
        config_from_dict({"data": {"classes": classes}})


def test_a_pack_on_classes_equals_its_runs_alone(tmp_path):
    from colearning.training import load_ensemble, train, train_pack
    from colearning.training.pack import check_packable

    base = {"seed": 0, "device": "cpu", "data": {"name": "digits", "classes": [0, 1, 2]},
            "model": {"name": "mlp"}, "ensemble": {"n_members": 2},
            "train": {"epochs": 1, "batch_size": 64, "progress": False, "analysis_every": 0}}
    other = copy.deepcopy(base)
    other["seed"] = 1
    first, second = config_from_dict(base), config_from_dict(other)
    runs = train_pack([(first, tmp_path / "a"), (second, tmp_path / "b")])
    alone = train(second, tmp_path / "alone")
    assert runs[1].summary["test/ensemble_accuracy_mean"] == \
        alone.summary["test/ensemble_accuracy_mean"]
    assert load_ensemble(tmp_path / "a")[0].inputs["num_classes"] == 3
    fewer = copy.deepcopy(base)
    fewer["data"]["classes"] = [0, 1]
    with pytest.raises(ConfigError, match="differ in data.classes"):
        check_packable([first, config_from_dict(fewer)])
