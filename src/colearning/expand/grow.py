"""Growing a trained run by M new members (paper Sec. 3.4, Supp. "Expanding ensembles").

    run = expand("runs/base10", add=5, mode="add-freeze", overrides=["loss.beta=0"])
    run.config.ensemble.n_members        # 15: the 10 old members first, then the 5 new ones

This module writes the grown run's config (the ``expand`` section) and trains it; what the
training loop does with such a config (which members train, frozen peers, the boost subset)
is the member plan of :mod:`colearning.training.growth`.
"""

from __future__ import annotations

from pathlib import Path

from colearning import rundir
from colearning.config import (
    Config,
    config_from_dict,
    merge,
    merge_coupling,
    parse_overrides,
    read_yaml,
)
from colearning.errors import ConfigError
from colearning.training import Run, train


def grown_config(source: str | Path, add: int, mode: str, overrides: list[str] | None = None,
                 margin: int = 0) -> Config:
    """The config of ``source`` grown by ``add`` members in ``mode``, then ``key=value`` overrides.

    ``ensemble.n_members`` is derived (N + add); an override that states another value is an
    error. A loss.beta override clears the source's loss.beta_bar and vice versa. For boost the
    new members are independent (loss.beta=0) unless the overrides set the coupling.
    """
    path = rundir.require_run_dir(source)
    saved = read_yaml(path / rundir.CONFIG)
    n_old = config_from_dict(saved).ensemble.n_members
    user = parse_overrides(overrides or [])
    if "expand" in user:
        raise ConfigError("set the expansion with --add/--mode/--margin, not expand.* overrides")
    stated = (user.get("ensemble") or {}).get("n_members")
    if stated is not None and stated != n_old + add:
        raise ConfigError(f"ensemble.n_members={stated} contradicts the source's {n_old} members "
                          f"+ --add {add}; leave it out, it is derived ({n_old + add})")
    loss = user.get("loss") or {}
    values = merge_coupling(saved, user)
    if mode == "boost" and not {"beta", "beta_bar"} & set(loss):
        values = merge(values, {"loss": {"beta": 0.0, "beta_bar": None}})
    return config_from_dict(merge(values, {
        "ensemble": {"n_members": n_old + add},
        "expand": {"source": str(path.resolve()), "mode": mode, "add": add, "margin": margin},
    }))


def default_run_dir(source: str | Path, mode: str, add: int) -> Path:
    """``<source>-<mode>-add<M>`` next to the source (``-2``, ``-3`` ... when taken)."""
    source = Path(source)
    base = source.parent / f"{source.name}-{mode}-add{add}"
    path, k = base, 2
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


def expand(source: str | Path, add: int, mode: str, overrides: list[str] | None = None, *,
           margin: int = 0, run_dir: str | Path | None = None) -> Run:
    """Grow the finished run ``source`` by ``add`` members into a new run directory.

    Returns the :class:`colearning.training.Run` of the grown run (default directory:
    :func:`default_run_dir`). Resume it like any run: ``colearn train --resume DIR``.
    """
    config = grown_config(source, add, mode, overrides, margin)
    return train(config, run_dir if run_dir is not None else default_run_dir(source, mode, add))
