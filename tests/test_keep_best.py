"""Keeping the validation-best epoch (train.keep_best) and early stopping
(train.early_stopping): best.pt holds that epoch's weights, a resumed run selects as an
uninterrupted one, an early-stopped cell of a pack ends while its neighbours go on."""

import copy

import numpy as np
import pytest
import torch

from colearning import rundir
from colearning.config import config_from_dict, merge, read_yaml
from colearning.errors import ConfigError
from colearning.names import check_names
from colearning.optim import StackedSGD
from colearning.sweep.layout import done_status
from colearning.training import load_ensemble, resume, train, train_pack
from tests.conftest import TINY, assert_records_close, comparable

# lr 1.0 overshoots: validation accuracy peaks at epoch 1 (0.88), drops to 0.55 at epoch 2
# and climbs back below the peak, so the best epoch is not the last and patience 3 ends the
# run after epoch 4 of 5.
BEST = {"data": {"name": "digits", "val_size": 200}, "optim": {"lr": 1.0},
        "train": {"epochs": 5, "batch_size": 256, "progress": False, "keep_best": True,
                  "early_stopping": {"patience": 3}}}


def tiny(*updates):
    """The tiny digits config with ``updates`` merged in, in order."""
    values = copy.deepcopy(TINY)
    for update in updates:
        values = merge(values, copy.deepcopy(update))
    return values


def state(ensemble):
    return {key: value.clone() for key, value in ensemble.state_dict().items()}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return train(tiny(BEST), tmp_path_factory.mktemp("best") / "straight")


def test_best_pt_holds_the_weights_of_the_best_epoch(straight, tmp_path):
    metrics = straight.metrics
    assert straight.status == "finished" and len(metrics) == 4  # stopped after epoch 4 of 5
    accuracy = [r["val/ensemble_accuracy_mean"] for r in metrics]
    best = accuracy.index(max(accuracy)) + 1  # the earliest of equals
    assert best == 1 < len(metrics)
    summary = straight.summary
    assert (summary["best_epoch"], summary["best_metric"], summary["best_value"]) == (
        best, "val/ensemble_accuracy_mean", accuracy[best - 1])
    assert summary["stopped_early"] is True
    assert summary["status_detail"] == (
        "stopped early after epoch 4: val/ensemble_accuracy_mean did not improve for 3 epochs "
        f"(best {accuracy[0]:.6g} at epoch 1)")
    saved = rundir.load_best(straight.run_dir / rundir.BEST)
    assert (saved["epoch"], saved["value"]) == (best, accuracy[best - 1])
    # the same run trained exactly `best` epochs ends with those weights
    short = train(tiny(BEST, {"train": {"epochs": best, "keep_best": False,
                                        "early_stopping": None}}), tmp_path / "short")
    kept, config = load_ensemble(straight.run_dir, epoch="best")
    final, _ = load_ensemble(short.run_dir)
    assert config == straight.config and not kept.training
    torch.testing.assert_close(state(kept), state(final), rtol=1e-4, atol=1e-6)
    last, _ = load_ensemble(straight.run_dir)  # "final": the epoch it stopped at
    assert any(not torch.equal(a, b) for a, b in zip(state(last).values(),
                                                    state(kept).values(), strict=True))


def test_a_resumed_run_selects_and_stops_as_an_uninterrupted_one(straight, tmp_path):
    path = tmp_path / "resumed"
    first = train(tiny(BEST, {"train": {"epochs": 2}}), path)
    assert first.status == "finished" and "stopped_early" in first.summary
    assert not first.summary["stopped_early"]
    # epochs 3 and 4 are no better than epoch 1: only the replayed history knows that
    longer = resume(path, {"train": {"epochs": 5}})
    assert comparable(longer.metrics) == comparable(straight.metrics)
    keys = ("status", "status_detail", "best_epoch", "best_value", "stopped_early",
            "epochs_completed")
    assert {k: longer.summary[k] for k in keys} == {k: straight.summary[k] for k in keys}
    ours, theirs = (rundir.load_best(p / rundir.BEST) for p in (path, straight.run_dir))
    assert (ours["epoch"], ours["value"]) == (theirs["epoch"], theirs["value"])
    torch.testing.assert_close(ours["model"], theirs["model"], rtol=0, atol=0)


def test_an_early_stopped_run_has_ended(straight, tmp_path):
    # resumed, even with more epochs, it is returned as it is (a straight run of any length
    # stops at the same epoch); a sweep leaves it alone
    again = resume(straight.run_dir, {"train": {"epochs": 9}})
    assert again.summary == straight.summary and again.config.train.epochs == 5
    assert read_yaml(straight.run_dir / "config.yaml")["train"]["epochs"] == 5
    values = straight.config.to_dict()
    values["train"]["epochs"] = 9
    assert done_status(straight.run_dir, values) == "finished"
    # killed after its last checkpoint, before its summary: the resume ends it at once
    copy_dir = tmp_path / "killed"
    copy_dir.mkdir()
    for name in ("config.yaml", "meta.json", "metrics.jsonl", "checkpoint.pt", "best.pt",
                 "analysis.jsonl"):
        (copy_dir / name).write_bytes((straight.run_dir / name).read_bytes())
    ended = resume(copy_dir)
    assert ended.status == "finished" and ended.summary["stopped_early"]
    assert ended.summary["status_detail"] == straight.summary["status_detail"]
    assert ended.metrics == straight.metrics
    predictions = [np.load(p / "predictions.npz")["log_probs"] for p in (copy_dir,
                                                                        straight.run_dir)]
    np.testing.assert_allclose(*predictions, rtol=1e-5, atol=1e-6)


def test_an_early_stopped_cell_of_a_pack_ends_while_its_neighbour_goes_on(tmp_path,
                                                                          monkeypatch):
    base = {"data": {"name": "digits", "val_size": 200},
            "train": {"epochs": 5, "batch_size": 256, "progress": False}}
    # min_delta 1: no accuracy can improve by more than 1, so after epoch 1 every epoch is
    # stale and patience 2 ends the cell after epoch 3, while it still learns (lr > 0)
    stopping = tiny(base, {"train": {"early_stopping": {"patience": 2, "min_delta": 1.0}}})
    going = tiny(base, {"seed": 1, "optim": {"lr": 0.1}})  # no early stopping: 5 epochs
    alone = [train(c, tmp_path / f"alone{k}") for k, c in enumerate((stopping, going))]
    assert [len(r.metrics) for r in alone] == [3, 5]
    assert alone[0].summary["stopped_early"] and "stopped_early" not in alone[1].summary

    steps = []  # per optimizer step: which members stepped, and the stopped cell's summary
    original = StackedSGD.step

    def recording(self, active=None):
        steps.append((active.tolist(), (tmp_path / "p0" / "summary.json").exists()))
        return original(self, active)

    monkeypatch.setattr(StackedSGD, "step", recording)
    packed = train_pack([(stopping, tmp_path / "p0"), (going, tmp_path / "p1")])
    for lone, cell in zip(alone, packed, strict=True):
        assert cell.status == "finished"
        assert_records_close([{k: v for k, v in r.items() if k != "time/pack_cells"}
                              for r in cell.metrics],
                             [{k: v for k, v in r.items() if k != "time/pack_cells"}
                              for r in lone.metrics])
    assert packed[0].summary["status_detail"] == alone[0].summary["status_detail"]
    per_epoch = len(steps) // 5
    assert all(mask == [True] * 4 for mask, _ in steps[:3 * per_epoch])
    # epochs 4 and 5: the stopped cell's members take no step; it was finished at once
    assert all(mask == [False, False, True, True] and done
               for mask, done in steps[3 * per_epoch:])


@pytest.mark.parametrize(("train_keys", "val_size", "match"), [
    ({"keep_best": True}, 0, "train.keep_best selects on a validation split: set "
                             "data.val_size > 0"),
    ({"early_stopping": {"patience": 2}}, 0, "train.early_stopping selects on a validation"),
    ({"early_stopping": {"patience": 0}}, 50, "patience must be an integer >= 1"),
    ({"early_stopping": {"metric": "val/ensemble_nll"}}, 50, "patience must be an integer"),
    ({"early_stopping": {"patience": 2, "min_delta": -0.1}}, 50, "min_delta must be a number "
                                                                 ">= 0"),
    ({"early_stopping": {"patience": 2, "mode": "max"}}, 50,
     "unknown config key train.early_stopping.mode; valid keys here: "
     "train.early_stopping.metric, train.early_stopping.patience"),
    ({"early_stopping": {"patience": 2, "metric": "val/js_mean"}}, 50,  # no direction
     r"metric='val/js_mean' is not valid .*valid: val/ensemble_accuracy_geometric"),
    ({"early_stopping": {"patience": 2, "metric": "test/ensemble_nll"}}, 50,  # not val
     r"metric='test/ensemble_nll' is not valid .*val/ensemble_nll"),
])
def test_bad_selection_configs_are_one_line_errors(train_keys, val_size, match):
    with pytest.raises(ConfigError, match=match) as error:
        check_names(config_from_dict({"data": {"val_size": val_size}, "train": train_keys}))
    assert "\n" not in str(error.value)


def test_the_direction_comes_from_the_metric_registry():
    from colearning.training.selection import Watch

    config = config_from_dict({"data": {"val_size": 50}, "train": {
        "early_stopping": {"patience": 1, "metric": "val/ensemble_nll", "min_delta": 0.1}}})
    watch = Watch.of(config)
    assert not watch.maximize  # ensemble_nll: lower is better
    records = [{"epoch": 1, "val/ensemble_nll": 1.0}, {"epoch": 2, "val/ensemble_nll": 0.85},
               {"epoch": 3, "val/ensemble_nll": None}]  # NaN is null in metrics.jsonl
    assert [watch.update(r) for r in records[:2]] == [True, True]
    assert not watch.update({"epoch": 3, "val/ensemble_nll": 0.8})  # within min_delta
    assert watch.stopped and (watch.best_epoch, watch.best_value) == (2, 0.85)
    assert Watch.of(config_from_dict({})) is None
