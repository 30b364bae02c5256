"""Who is coupled to whom, how strongly, and when: couplings and beta schedules by name.

    beta = coupling_matrix(config.loss, n_members)          # [N, N], zero diagonal
    beta_now = beta * beta_factor(config.loss, epoch, config.train.epochs)

Couplings (``loss.coupling``, parameters in ``loss.coupling_options``):

- ``uniform`` (default, the paper): every pair at beta, or beta = beta_bar / N.
- ``matrix``: ``loss.beta`` is the [N, N] matrix itself (a list beta means this too).
- ``ring`` (``k``, default 1): member i coupled to its k nearest neighbours on each side of
  a ring.
- ``random`` (``p``, default 0.5; ``seed``, default 0): each pair coupled with probability
  p (a symmetric graph drawn from ``seed``).
- ``communities`` (``groups``, default 2; ``beta_in``, ``beta_out``): members split into
  contiguous groups of (nearly) equal size; beta_in within a group, beta_out across. The
  strengths are these options (loss.beta / loss.beta_bar must be unset).
- ``star``: member 0 coupled to every other member and they to it; no other pairs.

Graphs take loss.beta (every edge at beta) or loss.beta_bar, normalized per member degree:
member i's edges get beta_bar / (degree_i + 1), which is the paper's beta_bar / N for the
complete graph, so beta_bar keeps its meaning (the total coupling a member feels,
sum_j beta_ij = beta_bar (degree_i / (degree_i + 1)), is the same on every graph).

Beta schedules (``loss.beta_schedule``, options in ``loss.beta_schedule_options``) are a
factor on the whole matrix per epoch, from the one schedule registry the learning rate
uses too (:mod:`colearning.schedules`: constant, warmup, cosine, step).

:func:`coupling_label` names all of it in a few characters (``uniform``, ``ring(k=2)``,
``communities(beta_in=0.1,beta_out=-0.1,groups=2)+warmup(epochs=3)``, ``uniform+js0.2`` for
the adaptive controller); run directory names, sweep tables, the optimal-coupling analysis,
``colearn compare`` and the sweep report group cells by it. The strength itself (beta or
beta_bar) is not part of the label: it is the axis within a group.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from colearning.config import LossConfig, one_strength
from colearning.errors import ConfigError
from colearning.losses import beta_matrix
from colearning.registry import Registry, with_defaults
from colearning.schedules import schedule_factor

Builder = Callable[[int, float | None, float | None, dict[str, Any]], torch.Tensor]
COUPLINGS: Registry[Builder] = Registry("coupling", key="loss.coupling")


def _on_graph(edges: torch.Tensor, beta: float | None, beta_bar: float | None) -> torch.Tensor:
    """[N, N] couplings on a boolean graph: beta per edge, or beta_bar / (degree_i + 1)."""
    edges = edges & ~torch.eye(edges.shape[0], dtype=torch.bool)
    one_strength(beta, beta_bar)
    if beta_bar is not None:
        degree = edges.sum(1, keepdim=True).double()
        strength = beta_bar / (degree + 1)
    else:
        strength = torch.tensor(float(beta or 0.0), dtype=torch.float64)
    return torch.where(edges, strength, torch.zeros((), dtype=torch.float64))


@COUPLINGS.register("uniform", strength="beta")
def uniform(n: int, beta: float | None, beta_bar: float | None,
            options: dict[str, Any]) -> torch.Tensor:
    with_defaults(options, {}, "coupling uniform")
    if isinstance(beta, list):
        raise ConfigError("a beta matrix needs loss.coupling=matrix (or leave it as the "
                          "default and it is taken as one)")
    return beta_matrix(beta, n, beta_bar=beta_bar, dtype=torch.float64)


@COUPLINGS.register("matrix", strength="matrix")
def matrix(n: int, beta: Any, beta_bar: float | None, options: dict[str, Any]) -> torch.Tensor:
    with_defaults(options, {}, "coupling matrix")
    if not isinstance(beta, list) or beta_bar is not None:
        raise ConfigError("loss.coupling=matrix takes loss.beta as an [N, N] list of lists")
    return beta_matrix(beta, n, dtype=torch.float64)


@COUPLINGS.register("ring", strength="beta")
def ring(n: int, beta: float | None, beta_bar: float | None,
         options: dict[str, Any]) -> torch.Tensor:
    k = with_defaults(options, {"k": 1}, "coupling ring")["k"]
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"ring option k must be an integer >= 1, got {k!r}")
    index = torch.arange(n)
    distance = (index[:, None] - index[None, :]).abs()
    distance = torch.minimum(distance, n - distance)
    return _on_graph(distance <= k, beta, beta_bar)


@COUPLINGS.register("random", strength="beta")
def random(n: int, beta: float | None, beta_bar: float | None,
           options: dict[str, Any]) -> torch.Tensor:
    chosen = with_defaults(options, {"p": 0.5, "seed": 0}, "coupling random")
    p = chosen["p"]
    if not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ConfigError(f"random option p must be a probability in [0, 1], got {p!r}")
    draws = torch.rand(n, n, generator=torch.Generator().manual_seed(int(chosen["seed"])))
    upper = torch.triu(draws < p, diagonal=1)
    return _on_graph(upper | upper.T, beta, beta_bar)


@COUPLINGS.register("communities", strength="options")
def communities(n: int, beta: float | None, beta_bar: float | None,
                options: dict[str, Any]) -> torch.Tensor:
    chosen = with_defaults(options, {"groups": 2, "beta_in": 0.0, "beta_out": 0.0},
                      "coupling communities")
    groups = chosen["groups"]
    if beta is not None or beta_bar is not None:
        raise ConfigError("coupling communities takes its strengths from coupling_options "
                          "beta_in and beta_out; unset loss.beta and loss.beta_bar")
    if not isinstance(groups, int) or not 1 <= groups <= n:
        raise ConfigError(f"communities option groups must be an integer in 1..{n}, got "
                          f"{groups!r}")
    group = torch.arange(n) * groups // n  # contiguous, sizes differ by at most one
    same = group[:, None] == group[None, :]
    inside, across = (torch.tensor(float(chosen[key]), dtype=torch.float64)
                      for key in ("beta_in", "beta_out"))
    return torch.where(same, inside, across) * (1 - torch.eye(n, dtype=torch.float64))


@COUPLINGS.register("star", strength="beta")
def star(n: int, beta: float | None, beta_bar: float | None,
         options: dict[str, Any]) -> torch.Tensor:
    with_defaults(options, {}, "coupling star")
    edges = torch.zeros(n, n, dtype=torch.bool)
    edges[0, :] = edges[:, 0] = True
    return _on_graph(edges, beta, beta_bar)


def _topology(loss: LossConfig) -> str:
    """The coupling's registry name: a list beta under the default is a matrix."""
    return "matrix" if isinstance(loss.beta, list) and loss.coupling == "uniform" \
        else loss.coupling


def strength_in_options(loss: LossConfig) -> bool:
    """Whether ``loss``'s coupling takes its strengths from its options (communities:
    beta_in, beta_out) rather than from loss.beta / loss.beta_bar (its registry metadata)."""
    return COUPLINGS.meta(_topology(loss))["strength"] == "options"


def check_coupling(loss: LossConfig, n_members: int) -> torch.Tensor:
    """:func:`coupling_matrix`, after the rules a coupling's options and strength must obey
    (one-line ConfigErrors): the adaptive coupling needs a strength to scale."""
    if loss.target_js is not None and loss.beta is None and loss.beta_bar is None \
            and not strength_in_options(loss):
        raise ConfigError("loss.target_js scales a coupling: set loss.beta or loss.beta_bar "
                          "(its starting value and sign)")
    return coupling_matrix(loss, n_members)


def coupling_matrix(loss: LossConfig, n_members: int) -> torch.Tensor:
    """The [N, N] float64 coupling matrix of ``loss`` (zero diagonal), before any schedule."""
    return COUPLINGS.get(_topology(loss))(n_members, loss.beta, loss.beta_bar,
                                          dict(loss.coupling_options))


def _named(name: str, options: dict[str, Any]) -> str:
    if not options:
        return name
    return f"{name}({','.join(f'{key}={_text(options[key])}' for key in sorted(options))})"


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def coupling_label(loss: LossConfig) -> str:
    """A short stable name of ``loss``'s coupling: its topology with the options set, the
    beta schedule unless constant, and the JS target of the adaptive controller when set."""
    label = _named(_topology(loss), dict(loss.coupling_options))
    if loss.beta_schedule != "constant" or loss.beta_schedule_options:
        label += "+" + _named(loss.beta_schedule, dict(loss.beta_schedule_options))
    if loss.target_js is not None:
        label += f"+js{loss.target_js:g}"
    return label


# The adaptive coupling's update: scale_{t+1} = clip(scale_t * exp(GAIN * (target - js_t) /
# target), SCALE_MIN, SCALE_MAX). A JS distance below the target strengthens the coupling
# (more negative beta: more diversity), above it weakens it; multiplicative, so the sign of
# the configured coupling never flips, and one epoch changes beta by at most a factor e^GAIN.
ADAPT_GAIN = 0.5
SCALE_MIN, SCALE_MAX = 0.0, 8.0


def adapt_scale(scale: float, js: float | None, target: float) -> float:
    """The adaptive coupling's next scale of the configured matrix, from this epoch's mean
    validation JS distance ``js`` (unchanged when it is unknown or not finite)."""
    if js is None or not math.isfinite(js):
        return scale
    step = max(-1.0, min(1.0, (target - js) / target))
    return min(SCALE_MAX, max(SCALE_MIN, scale * math.exp(ADAPT_GAIN * step)))


def beta_factor(loss: LossConfig, epoch: int, epochs: int) -> float:
    """The beta schedule's factor on the coupling matrix at 0-based ``epoch`` of ``epochs``
    (:mod:`colearning.schedules`)."""
    return schedule_factor(loss.beta_schedule, loss.beta_schedule_options, epoch, epochs)
