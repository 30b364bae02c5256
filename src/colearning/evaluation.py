"""Per-epoch evaluation: member log-probabilities [N, B, C] -> the flat metric dict of a run.

Keys follow ``split/metric``; lists are per member. These are the keys written to
metrics.jsonl and summary.json (docs/guide.md lists them).

Every metric is an entry of :data:`METRICS` (a registry): its function of the epoch's
:class:`Outputs` and what the rest of the library needs to know about it (one value per
member or one for the ensemble, which way is better, its title and format, whether sweep
tables carry it). Registering one is all a new metric takes: it is then computed every
epoch, written to metrics.jsonl, tabulated by sweeps and shown in the run report.

    @register_metric("ensemble_top2", scope="ensemble", direction="max",
                     title="top-2 accuracy (%)", percent=True, table=("test",))
    def top2(out):
        return (out.ensemble.topk(2, -1).indices == out.labels[:, None]).any(-1).float().mean()
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from colearning import metrics
from colearning.combiners import COMBINERS, combine, ensemble_predict
from colearning.errors import ConfigError
from colearning.registry import Registry


class Outputs:
    """One split's predictions at one epoch, and what metrics share (computed once, on
    first use): ``log_probs`` [N, B, C] (log_softmax), ``labels`` [B], ``probs``,
    ``ensemble`` (log p_ens of the mean combiner, [B, C]) and ``js`` (the [N+1, N+1] JS
    matrix of the members and the ensemble, Eq. 5)."""

    def __init__(self, log_probs: torch.Tensor, labels: torch.Tensor) -> None:
        self.log_probs = log_probs.float()
        self.labels = labels.long()

    @functools.cached_property
    def probs(self) -> torch.Tensor:
        return self.log_probs.exp()

    @functools.cached_property
    def ensemble(self) -> torch.Tensor:
        return combine(self.log_probs, "mean", log=True)

    @functools.cached_property
    def js(self) -> torch.Tensor:
        return metrics.js_matrix_with_ensemble(self.log_probs, self.ensemble, log=True)

    @property
    def n_members(self) -> int:
        return self.log_probs.shape[0]


@dataclass(frozen=True)
class Metric:
    """A registered metric. ``compute(outputs)`` gives a number (scope ``ensemble``), one per
    member (``member``: a tensor [N] or list) or an [N, N] matrix (``pairs``). ``direction``:
    ``max`` or ``min`` is better, None for neither (diversity). ``table``: the splits whose
    sweep tables carry it (members: their mean, min and max). ``pair``: the ensemble metric
    shown beside a member metric in the report."""

    compute: Any
    scope: str
    direction: str | None
    title: str
    percent: bool = False
    table: tuple[str, ...] = ()
    pair: str | None = None
    summary: str | None = None  # its short title in the end-of-run table; None: not shown


METRICS: Registry[Metric] = Registry("metric")
SCOPES = ("member", "ensemble", "pairs")


def _register(name: str, compute: Any, scope: str, direction: str | None, title: str,
              **options: Any) -> None:
    if scope not in SCOPES:
        raise ValueError(f"metric scope must be one of {SCOPES}, got {scope!r}")
    METRICS.register(name)(Metric(compute, scope, direction, title, **options))


def register_metric(name: str, *, scope: str, direction: str | None, title: str,
                    **options: Any) -> Any:
    """A decorator registering ``compute(outputs)`` as metric ``name`` (see :class:`Metric`)."""
    def decorator(compute: Any) -> Any:
        _register(name, compute, scope, direction, title, **options)
        return compute
    return decorator


def metric_names(scope: str | None = None) -> Iterator[str]:
    """The registered metrics (of ``scope``), in the order they were registered."""
    return (name for name in METRICS.ordered()
            if scope is None or METRICS.get(name).scope == scope)


def sweep_columns() -> tuple[str, ...]:
    """The metric columns of sweep tables (results.csv), derived from the registry: each
    ensemble metric per split of its ``table``, each member metric's mean, min and max."""
    columns = []
    for split in ("test", "val"):
        for name in METRICS.ordered():
            metric = METRICS.get(name)
            if split not in metric.table:
                continue
            if metric.scope == "member":
                columns += [f"{split}/{name}_{stat}" for stat in ("mean", "min", "max")]
            elif metric.scope == "ensemble":
                columns.append(f"{split}/{name}")
    return tuple(columns)


def selection_direction(key: str, what: str = "train.early_stopping.metric") -> str:
    """Which way is better (``max`` or ``min``) for validation key ``key`` when a run selects
    on it (train.keep_best, train.early_stopping): an ensemble metric whose registry entry
    has a direction. Anything else is a one-line ConfigError listing the valid keys."""
    valid = {f"val/{name}": METRICS.get(name).direction for name in METRICS.ordered()
             if METRICS.get(name).scope == "ensemble" and METRICS.get(name).direction}
    if key not in valid:
        raise ConfigError(f"{what}={key!r} is not valid (a validation ensemble metric for which "
                          f"higher or lower is better); valid: {', '.join(valid)}")
    return valid[key]


# Which way is better for a table column that is no registry entry (the keys of ``colearn
# evaluate``'s summary: shift/ece_s5, ood/fpr95_entropy, selective/aurc): the first of these
# words in its last part.
KEY_WORDS = {"accuracy": "max", "auroc": "max", "aupr": "max", "nll": "min", "ece": "min",
             "brier": "min", "fpr95": "min", "aurc": "min", "kl": "min"}


def registered_metric(key: str) -> Metric | None:
    """The registry entry a table column stands for: ``test/ensemble_nll``, a member metric's
    ``test/member_accuracy_mean`` (its mean, min or max) and a suffixed variant such as
    ``calibration/ensemble_nll_ts`` map to theirs; None for any other key."""
    name = key.rpartition("/")[2]
    for candidate in (name, name.rpartition("_")[0]):
        if candidate in METRICS:
            return METRICS.get(candidate)
    return None


def key_direction(key: str) -> str | None:
    """``max`` or ``min`` when higher or lower of table column ``key`` is better, else None:
    its registry entry's direction when it maps to one (:func:`registered_metric`), else by
    :data:`KEY_WORDS`.

    >>> key_direction("shift/accuracy_mean"), key_direction("ood/fpr95_entropy")
    ('max', 'min')
    """
    metric = registered_metric(key)
    if metric is not None:
        return metric.direction
    words = key.rpartition("/")[2].split("_")
    return next((KEY_WORDS[word] for word in words if word in KEY_WORDS), None)


def _member(compute: Any) -> Any:
    return lambda out: compute(out).tolist()


_register("member_accuracy", _member(lambda o: metrics.accuracy(o.log_probs, o.labels)),
          "member", "max", "accuracy (%)", percent=True, table=("test",),
          pair="ensemble_accuracy_mean", summary="accuracy %")
# KL(q||p_i) with one-hot q, i.e. the member's NLL (paper Fig. 2b x-axis)
_register("member_kl", _member(lambda o: metrics.kl_to_target(o.log_probs, o.labels, log=True)),
          "member", "min", "NLL = KL(q‖p) (nats)", pair="ensemble_nll", summary="KL(q||p)")
_register("member_brier", _member(lambda o: metrics.brier(o.probs, o.labels)),
          "member", "min", "Brier", pair="ensemble_brier")
_register("member_ece", _member(lambda o: metrics.expected_calibration_error(o.probs,
                                                                            o.labels)),
          "member", "min", "ECE (15 bins)", pair="ensemble_ece")
_register("member_entropy", _member(lambda o: metrics.entropy(o.log_probs, log=True).mean(-1)),
          "member", None, "mean entropy (nats)", pair="ensemble_entropy")
_register("member_logit_norm", _member(lambda o: logit_norm(o.log_probs)),
          "member", None, "centered logit norm")
for _method in COMBINERS:
    _register(f"ensemble_accuracy_{_method}",
              lambda o, m=_method: (ensemble_predict(o.log_probs, m, log=True)
                                    == o.labels).float().mean().item(),
              "ensemble", "max", f"accuracy, {_method} (%)", percent=True,
              summary=f"ensemble ({_method})",
              table=("test", "val"))
_register("ensemble_nll", lambda o: metrics.nll(o.ensemble, o.labels, log=True).item(),
          "ensemble", "min", "NLL (nats)", table=("test",))
_register("ensemble_brier", lambda o: metrics.brier(o.ensemble.exp(), o.labels).item(),
          "ensemble", "min", "Brier")
_register("ensemble_ece", lambda o: metrics.expected_calibration_error(o.ensemble.exp(),
                                                                      o.labels).item(),
          "ensemble", "min", "ECE (15 bins)")
_register("ensemble_entropy", lambda o: metrics.entropy(o.ensemble, log=True).mean().item(),
          "ensemble", None, "mean entropy (nats)")
_register("js_matrix", lambda o: o.js[:o.n_members, :o.n_members].tolist(), "pairs", None,
          "JS distance matrix (nats, Eq. 5)")
_register("js_mean", lambda o: metrics.js_mean(o.js[:o.n_members, :o.n_members]),
          "ensemble", None, "mean pairwise JS distance d (nats)", table=("test",),
          summary="mean JS distance d")
_register("js_to_ensemble", lambda o: o.js[:o.n_members, o.n_members].tolist(), "member",
          None, "JS to ensemble (nats)")
_register("disagreement", lambda o: metrics.disagreement(o.log_probs), "ensemble", None,
          "disagreement (fraction of pairs × samples)", table=("test",))


# A member ignores its input when its outputs barely move (mean L1 distance of p_i(.|x) from
# the member's average output below COLLAPSE_SPREAD, out of a maximum of 2; healthy members
# sit near 1, the collapsed LeNet-5s of Eq. 1 at beta = -0.4 near 0.01) and it names one class
# for at least ONE_CLASS_SHARE of the samples.
COLLAPSE_SPREAD = 0.05
ONE_CLASS_SHARE = 0.9
# A member has learned once its accuracy beat the best constant guess (the share of the most
# frequent label) by LEARNED_MARGIN at some epoch; before that, near-constant outputs are an
# untrained member's, not a collapse.
LEARNED_MARGIN = 0.1


def output_spread(probs: torch.Tensor) -> torch.Tensor:
    """Per member of probs [N, B, C]: mean over samples of |p_i(.|x) - mean_x p_i(.|x)|_1, [N]."""
    probs = probs.float()
    return (probs - probs.mean(1, keepdim=True)).abs().sum(-1).mean(-1)


def ignores_input(probs: torch.Tensor) -> list[bool]:
    """Per member of probs [N, B, C]: True when its output (nearly) ignores the input: one
    class for almost every sample (>= ONE_CLASS_SHARE) and near-constant probabilities
    (output spread < COLLAPSE_SPREAD). An untrained member looks like this too."""
    if probs.shape[1] < 2:
        return [False] * probs.shape[0]
    predicted = probs.argmax(-1)  # [N, B]
    share = torch.stack([row.bincount(minlength=probs.shape[-1]).max() for row in predicted])
    one_class = share.float() / probs.shape[1] >= ONE_CLASS_SHARE
    return ((output_spread(probs) < COLLAPSE_SPREAD) & one_class).tolist()


def learned_members(accuracy: list[float], labels: torch.Tensor,
                    before: list[bool] | None = None) -> list[bool]:
    """Per member: has it learned (now, or ``before``: at an earlier epoch)? Learned means
    an accuracy at least LEARNED_MARGIN above the best constant guess on these labels."""
    labels = labels.long()
    guess = labels.bincount().max().item() / max(len(labels), 1) if len(labels) else 0.0
    before = before if before is not None and len(before) == len(accuracy) \
        else [False] * len(accuracy)
    return [bool(b) or a >= guess + LEARNED_MARGIN for a, b in zip(accuracy, before, strict=True)]


def member_states(ignoring: list[bool], learned: list[bool],
                  dead: list[list[str]] | None = None) -> dict[str, list[bool]]:
    """Collapsed (ignores its input, or has a dead ReLU layer, after it had learned) and not
    learned (the same signs in a member that never learned) members, per member."""
    dead = dead or [[] for _ in ignoring]
    broken = [bool(i or d) for i, d in zip(ignoring, dead, strict=True)]
    return {"collapsed": [b and k for b, k in zip(broken, learned, strict=True)],
            "not_learned": [b and not k for b, k in zip(broken, learned, strict=True)]}


def logit_norm(log_probs: torch.Tensor) -> torch.Tensor:
    """Per member of log_probs [N, B, C]: the mean over samples of the L2 norm of its centered
    logits, [N]. Softmax ignores a shift of the logits, so z - mean_c z is all a member's
    output scale is, and log_softmax keeps it exactly: z - mean_c z = log p - mean_c log p.
    Under a negative coupling this grows without bound before a member collapses."""
    centered = log_probs.double() - log_probs.double().mean(-1, keepdim=True)
    return centered.norm(dim=-1).mean(-1).float()


def evaluate_log_probs(
    log_probs: torch.Tensor, labels: torch.Tensor, prefix: str = "test",
    learned_before: list[bool] | None = None,
) -> dict[str, Any]:
    """Flat metrics for member log-probabilities [N, B, C] (log_softmax) and labels [B].

    ``learned_before``: per member, whether it had learned at an earlier epoch (the previous
    record's ``member_learned``); a member that ignores its input is collapsed only if it
    had learned, else not learned yet.

    Every metric is computed from the log-probabilities, so entropies near 0 and NLLs of
    confidently wrong members keep their precision (a run saves these, not probabilities).

    >>> p = torch.tensor([[[0.9, 0.1], [0.3, 0.7]], [[0.6, 0.4], [0.8, 0.2]]])
    >>> evaluate_log_probs(p.log(), torch.tensor([0, 1]))["test/ensemble_accuracy_mean"]
    0.5
    """
    if log_probs.dim() != 3 or labels.shape != log_probs.shape[1:2]:
        raise ConfigError(
            f"evaluate_log_probs needs log_probs [N, B, C] and labels [B], got "
            f"{list(log_probs.shape)} and {list(labels.shape)}"
        )
    outputs = Outputs(log_probs, labels)
    out: dict[str, Any] = {f"{prefix}/{name}": _plain(METRICS.get(name).compute(outputs))
                           for name in METRICS.ordered()}
    labels, probs = outputs.labels, outputs.probs
    learned = learned_members(out[f"{prefix}/member_accuracy"], labels, learned_before)
    out[f"{prefix}/member_learned"] = learned
    out[f"{prefix}/member_ignores_input"] = ignores_input(probs)
    states = member_states(out[f"{prefix}/member_ignores_input"], learned)
    out[f"{prefix}/member_collapsed"] = states["collapsed"]
    out[f"{prefix}/member_not_learned"] = states["not_learned"]
    return out


def _plain(value: Any) -> Any:
    """A metric's value as JSON-ready Python: tensors become numbers or lists."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.dim() == 0 else value.tolist()
    return value
