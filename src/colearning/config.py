"""One typed run config: defaults here, then a YAML file, then ``key=value`` overrides.

    cfg = load_config("configs/quickstart.yaml", ["loss.beta=-0.2", "ensemble.n_members=3"])
    cfg.loss.beta                  # -0.2
    cfg.to_dict()                  # the resolved config, written into every run directory

Unknown keys and wrong types raise :class:`ConfigError` naming the valid keys.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from colearning.errors import ConfigError


@dataclass
class DataConfig:
    name: str = "digits"  # registry name: digits, cifar10, cifar100, imagefolder
    path: str | None = None  # file or directory of the data (cifar*, imagefolder)
    split: str = "official"  # "official" train/test, or "random" (pool all, split per seed)
    train_size: int | None = None  # images; None keeps the official count
    test_size: int | None = None  # images; None keeps the official count
    val_size: int = 0  # images held out of the training split per seed for selection; 0: none
    normalize: bool = False  # per-channel standardization after scaling to [0, 1]
    augment: bool | None = None  # crop+flip; None: on for vgg9, off otherwise (paper)
    cache_dir: str | None = None  # decoded-array cache; None: ~/.cache/colearning/decoded


@dataclass
class ModelConfig:
    name: str = "small_cnn"  # registry name: lenet5, vgg9, small_cnn, mlp
    options: dict[str, Any] = field(default_factory=dict)  # extra builder keyword arguments


@dataclass
class EnsembleConfig:
    n_members: int = 2  # N, the one place it is stated
    strategy: str = "auto"  # auto, loop, grouped, vmap (see colearning.engine)


@dataclass
class LossConfig:
    beta: float | list[list[float]] | None = None  # scalar or [N, N]; None: 0 unless beta_bar
    beta_bar: float | None = None  # size-normalized coupling: beta = beta_bar / N
    coupling: str = "uniform"  # who is coupled: uniform, matrix, ring, random, communities,
    # star (colearning.couplings)
    coupling_options: dict[str, Any] = field(default_factory=dict)  # e.g. {k: 2} for ring
    beta_schedule: str = "constant"  # the coupling over epochs: constant, warmup, cosine, step
    beta_schedule_options: dict[str, Any] = field(default_factory=dict)  # e.g. {epochs: 10}
    target_js: float | None = None  # adaptive coupling: scale beta each epoch to hold the
    # members' mean validation JS distance (nats) here (colearning.couplings.adapt_scale)
    peers: str = "detached"  # detached: p_j constant in L_i; joint: gradients through p_j
    kl_reduction: str = "batchmean"  # batchmean: Eq. 1 as written; mean: coupling / classes;
    # mean_all: both terms / classes (KLDivLoss's default reduction everywhere)
    divergence: str = "kl"  # coupling term D(p_j, p_i): kl (Eq. 1), reverse_kl, js, l2
    objective: str = "colearning"  # colearning (Eq. 1), joint (KL(q||p_ens)), interpolated
    joint_weight: float | None = None  # interpolated's lambda in [0, 1]: lambda KL(q||p_ens)
    # + (1 - lambda) KL(q||p_i); unset for the other objectives


@dataclass
class OptimConfig:
    lr: float = 0.01  # initial learning rate (paper: 0.01)
    momentum: float = 0.9  # SGD momentum (paper: 0.9)
    weight_decay: float = 5e-4  # L2 coefficient (paper: 0.0005)
    schedule: str = "constant"  # constant, step, cosine (per epoch)
    step_size: int = 50  # epochs between learning-rate drops (step schedule)
    gamma: float = 0.1  # learning-rate factor at each drop (step schedule)
    grad_clip: float | None = None  # max gradient norm per member; None: no clipping


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128  # images per step, shared by all members (paper: 512 / 256)
    eval_batch_size: int = 1024  # images per evaluation forward pass
    on_nonfinite: str = "stop"  # stop: end the run as diverged; skip: drop that step
    analysis_every: int = 1  # epochs between activation/weight statistics; 0: final only
    analysis_samples: int = 1000  # test images used for activation statistics
    save_probs_every: int = 0  # epochs between saved test probabilities; 0: final only
    progress: bool = True  # progress bars on stderr
    precision: str = "fp32"  # fp32, or bf16: autocast for the members' forward and backward
    # (the loss, softmax/KL, metrics and optimizer stay fp32)
    tf32: bool = False  # CUDA only: TF32 matmuls and convolutions under fp32 (Ampere and newer)
    compile: str = "off"  # off, default, reduce-overhead (CUDA graphs): torch.compile of the
    # members' forward and backward and of the loss; falls back to eager with a warning
    log_to: str | None = None  # tensorboard: also log every metric for TensorBoard
    # (RUN_DIR/tensorboard; pip install 'colearning[tensorboard]'); the run directory stays
    # the source of truth


EXPAND_MODES = ("add-freeze", "add-retrain", "boost")


@dataclass
class ExpandConfig:
    """Growing a trained run (Supp. "Expanding ensembles"); all unset: an ordinary run."""

    source: str | None = None  # run directory grown from; its N members come first
    mode: str | None = None  # add-freeze, add-retrain, boost (colearning.expand)
    add: int = 0  # M, new members; ensemble.n_members = N + M
    margin: int = 0  # boost: train on samples with k-m..k+m correct old votes, k = N/2


@dataclass
class Config:
    seed: int = 0  # determines the split, every member's init and the batch order
    device: str = "auto"  # auto, cpu, cuda, cuda:K
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    expand: ExpandConfig = field(default_factory=ExpandConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def get(self, dotted: str) -> Any:
        node: Any = self
        for part in dotted.split("."):
            node = getattr(node, part)
        return node


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check_type(value: Any, hint: Any, key: str) -> Any:
    """Return ``value`` coerced to ``hint`` (int -> float only) or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                return _check_type(value, option, key)
            except ConfigError as error:
                errors.append(error)
        raise ConfigError(f"{key} must be {_type_name(hint)}, got {value!r}")
    if hint is type(None):
        if value is None:
            return None
    elif hint is Any:
        return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(hint)
            return [_check_type(v, item, key) for v in value]
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint in (int, str, bool) and type(value) is hint:  # bool is not an int here
        return value
    raise ConfigError(f"{key} must be {_type_name(hint)}, got {value!r}")


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]}; valid keys here: "
            f"{', '.join(prefix + n for n in names)}"
        )
    kwargs = {}
    for name in names:
        if name not in values:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, values[name] or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(values[name], hint, prefix + name)
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> Config:
    """A validated :class:`Config` from a nested dict (missing keys take the defaults)."""
    config = _build(Config, values or {}, "")
    validate(config)
    return config


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["loss.beta=-0.2", "train.epochs=3"]`` -> nested dict; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. loss.beta=-0.2")
        try:
            value = load_yaml(raw) if raw.strip() else None
        except ConfigError:
            value = raw
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins (model.options merge key by key too)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# A config, sweep or run file is a few KB; anything this large is some other file.
MAX_YAML_BYTES = 4 * 2**20


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: ``*name`` could expand a few lines into gigabytes (a "billion
    laughs" file), which every later copy or dump of the config would then expand."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(f"YAML aliases (*{event.anchor}) are not allowed in config files "
                              f"(line {event.start_mark.line + 1}); write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A mapping, refusing a key given twice (YAML would silently keep the last)."""
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        where = (f"line {line}" if seen[key] == line
                                 else f"lines {seen[key]} and {line}")
                        raise ConfigError(f"key {key!r} is given twice ({where}); keep one")
                    seen[key] = line
                except TypeError:  # an unhashable key: the base class says so
                    break
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str = "config") -> Any:
    """A YAML document from ``text`` (no aliases); ConfigError naming ``source`` when it is
    not valid YAML."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source} is not valid YAML{where}") from None
    except ConfigError as error:  # an alias or a repeated key
        raise ConfigError(f"{source}: {error}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path`` with a one-line error for a missing, unreadable, binary,
    oversized or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"config file {path} is {size / 2**20:.1f} MB; a config is a few "
                              "KB of YAML (is this the right file?)")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (is this the right file?)"
                          ) from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    if "\0" in text:
        raise ConfigError(f"config file {path} is binary, not YAML (is this the right file?)")
    values = load_yaml(text, f"config file {path}") or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(values)}")
    return values


# Config keys that hold file-system paths: relative ones mean relative to the file that names
# them (a command-line override: to the current directory).
PATH_KEYS = (("data", "path"), ("data", "cache_dir"))


def resolve_paths(values: dict[str, Any], base_dir: str | Path) -> dict[str, Any]:
    """``values`` (a nested config dict) with relative :data:`PATH_KEYS` made absolute
    against ``base_dir`` ("~" expanded)."""
    out = dict(values)
    for section, key in PATH_KEYS:
        node = out.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            path = Path(node[key]).expanduser()
            if not path.is_absolute():
                out[section] = {**node, key: str((Path(base_dir) / path).absolute())}
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides.

    Relative data paths in the file are relative to the file; in the overrides, to the
    current directory.

    A run takes loss.beta or loss.beta_bar: an override of one clears the other that the
    file set (``loss.beta=-0.1`` on a file with ``beta_bar: -0.5`` means beta -0.1).
    """
    values = resolve_paths(read_yaml(path), Path(path).parent) if path is not None else {}
    return config_from_dict(merge_coupling(values,
                                           resolve_paths(parse_overrides(overrides or []), ".")))


def merge_coupling(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """:func:`merge`, where setting one of loss.beta / loss.beta_bar clears the other."""
    loss = update.get("loss") if isinstance(update.get("loss"), dict) else {}
    merged = merge(base, update)
    for key, other in (("beta", "beta_bar"), ("beta_bar", "beta")):
        if key in loss and other not in loss and isinstance(merged.get("loss"), dict):
            merged["loss"] = {**merged["loss"], other: None}
    return merged


# Keys that change how a run is shown, not what it computes: they may differ between a run
# and its resumption, and between the cells of a pack.
DISPLAY_KEYS = ("train.progress", "train.log_to")


def without_keys(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A copy of a (nested) config dict without the dotted ``keys``."""
    out = {key: dict(value) if isinstance(value, dict) else value
           for key, value in values.items()}
    for dotted in keys:
        section, _, key = dotted.rpartition(".")
        node = out.get(section) if section else out
        if isinstance(node, dict):
            node.pop(key, None)
    return out


def without_display(values: dict[str, Any]) -> dict[str, Any]:
    """A (nested) config dict without the :data:`DISPLAY_KEYS`."""
    return without_keys(values, DISPLAY_KEYS)


def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "", *,
                show: bool = False) -> list[str]:
    """The dotted keys whose values differ between two nested config dicts, in ``old``'s
    order (``show``: with the two values, ``key: old -> new``)."""
    keys = []
    for key in old:
        if isinstance(old[key], dict) and isinstance(new.get(key), dict):
            keys += config_diff(old[key], new[key], f"{prefix}{key}.", show=show)
        elif old[key] != new.get(key):
            keys.append(f"{prefix}{key}: {old[key]!r} -> {new.get(key)!r}" if show
                        else f"{prefix}{key}")
    return keys


CHOICES = {
    "data.split": ("official", "random"),
    "ensemble.strategy": ("auto", "loop", "grouped", "vmap"),
    "loss.peers": ("detached", "joint"),
    "loss.kl_reduction": ("batchmean", "mean", "mean_all"),
    "loss.objective": ("colearning", "joint", "interpolated"),  # colearning.losses.OBJECTIVES
    "loss.divergence": ("kl", "reverse_kl", "js", "l2"),  # colearning.losses.DIVERGENCES
    # colearning.couplings.COUPLINGS and SCHEDULES
    "loss.coupling": ("uniform", "matrix", "ring", "random", "communities", "star"),
    "loss.beta_schedule": ("constant", "warmup", "cosine", "step"),
    "optim.schedule": ("constant", "step", "cosine"),
    "train.on_nonfinite": ("stop", "skip"),
    "train.precision": ("fp32", "bf16"),
    "train.compile": ("off", "default", "reduce-overhead"),
    "train.log_to": (None, "tensorboard"),
}


# Integers travel into numpy and torch as int64; a seed is a non-negative one.
INT_RANGE = (-(2**63), 2**63 - 1)


def _numbers(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    """Every (dotted key, number) inside a config value, through nested dicts and lists."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _numbers(item, f"{key}.{name}")
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _numbers(item, key)


def _validate_numbers(config: Config) -> None:
    """Every number in the config is finite and fits int64; the seed is >= 0."""
    for key, value in _numbers(config.to_dict(), "config"):
        key = key.removeprefix("config.")
        if isinstance(value, float) and (value != value or abs(value) == float("inf")):
            raise ConfigError(f"{key} must be a finite number, got {value}")
        if isinstance(value, int) and not INT_RANGE[0] <= value <= INT_RANGE[1]:
            raise ConfigError(f"{key}={value} is out of range; integers must fit in 64 bits")
    if config.seed < 0:
        raise ConfigError(f"seed must be >= 0 (any integer up to 2^63 - 1), got {config.seed}")


def validate(config: Config) -> None:
    """Value checks that types alone cannot express; one-line ConfigError on failure."""
    _validate_numbers(config)
    for key, choices in CHOICES.items():
        if config.get(key) not in choices:
            raise ConfigError(
                f"{key}={config.get(key)!r} is not valid; valid: {', '.join(choices)}"
            )
    positive = ["ensemble.n_members", "train.epochs", "train.batch_size", "train.eval_batch_size",
                "optim.step_size"]
    for key in positive:
        if config.get(key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {config.get(key)}")
    for key in ["optim.lr", "optim.weight_decay", "optim.momentum", "train.analysis_every",
                "train.save_probs_every", "train.analysis_samples", "data.val_size"]:
        if config.get(key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {config.get(key)}")
    for key in ["data.train_size", "data.test_size"]:
        if config.get(key) is not None and config.get(key) < 1:
            raise ConfigError(f"{key} must be >= 1 or null, got {config.get(key)}")
    if config.loss.beta is not None and config.loss.beta_bar is not None:
        raise ConfigError("set loss.beta or loss.beta_bar, not both")
    beta = config.loss.beta
    if isinstance(beta, list):
        n = config.ensemble.n_members
        if len(beta) != n or any(len(row) != n for row in beta):
            raise ConfigError(
                f"loss.beta matrix must be {n}x{n} (ensemble.n_members={n}), got "
                f"{len(beta)} rows of lengths {[len(row) for row in beta]}"
            )
    _validate_objective(config)
    target = config.loss.target_js
    if target is not None:
        if not 0 < target < 0.6931471805599453:
            raise ConfigError(f"loss.target_js must be in (0, log 2) nats, got {target}")
        if config.data.val_size < 1:
            raise ConfigError("loss.target_js measures the members' JS distance on a "
                              "validation split: set data.val_size > 0")
        if config.loss.beta is None and config.loss.beta_bar is None \
                and config.loss.coupling != "communities":
            raise ConfigError("loss.target_js scales a coupling: set loss.beta or "
                              "loss.beta_bar (its starting value and sign)")
    if config.optim.gamma <= 0:
        raise ConfigError(f"optim.gamma must be > 0 (the learning-rate factor at each drop), "
                          f"got {config.optim.gamma}")
    if config.optim.grad_clip is not None and config.optim.grad_clip <= 0:
        raise ConfigError(f"optim.grad_clip must be > 0 or null, got {config.optim.grad_clip}")
    _validate_expand(config)


def _validate_objective(config: Config) -> None:
    loss = config.loss
    weight = loss.joint_weight
    if loss.objective == "interpolated":
        if weight is None or not 0.0 <= weight <= 1.0:
            raise ConfigError(f"loss.objective=interpolated needs loss.joint_weight in [0, 1] "
                              f"(lambda), got {weight!r}")
    elif weight is not None:
        raise ConfigError(f"loss.joint_weight applies to loss.objective=interpolated only, not "
                          f"{loss.objective} (joint is lambda = 1); remove it")
    if loss.objective != "colearning":
        if loss.beta is not None or loss.beta_bar is not None:
            raise ConfigError(f"loss.beta / loss.beta_bar apply to loss.objective=colearning "
                              f"only; remove them for {loss.objective}")
        if loss.kl_reduction != "batchmean":
            raise ConfigError(f"loss.kl_reduction applies to loss.objective=colearning only; "
                              f"remove it for {loss.objective}")
        if config.expand.source is not None:
            raise ConfigError(f"growing an ensemble trains with loss.objective=colearning; "
                              f"{loss.objective} is not supported there")


def _validate_expand(config: Config) -> None:
    expand = config.expand
    if expand.source is None:
        if expand.mode is not None or expand.add or expand.margin:
            raise ConfigError("expand.mode/add/margin need expand.source (the run directory to "
                              "grow); use colearn expand RUN_DIR --add M --mode MODE")
        return
    if expand.mode not in EXPAND_MODES:
        raise ConfigError(f"expand.mode={expand.mode!r} is not valid; valid: "
                          f"{', '.join(EXPAND_MODES)}")
    if expand.add < 1:
        raise ConfigError(f"expand.add must be >= 1 (new members), got {expand.add}")
    if expand.margin < 0:
        raise ConfigError(f"expand.margin must be >= 0, got {expand.margin}")
    if expand.margin and expand.mode != "boost":
        raise ConfigError(f"expand.margin applies to mode boost only, not {expand.mode}")
    if config.ensemble.n_members <= expand.add:
        raise ConfigError(
            f"ensemble.n_members={config.ensemble.n_members} must be the source's N plus "
            f"expand.add={expand.add}"
        )


def dump_yaml(config: Config) -> str:
    """The resolved config as YAML (keys in declaration order)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def env_number(name: str, default: float, *, minimum: float = 0.0, integer: bool = False
               ) -> float:
    """The number in environment variable ``name`` (``default`` when unset or empty); a value
    that is not a finite number >= ``minimum`` is a one-line ConfigError naming it."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"environment variable {name}={raw!r} must be {kind} >= {minimum:g}; "
                          f"fix or unset it")
    return value


def check_environment() -> None:
    """Refuse malformed COLEARNING_* variables at a command's start, in one line each, before
    anything is written (each is read again where it is used)."""
    env_number("COLEARNING_DIST_TIMEOUT", 300, minimum=1)
    env_number("COLEARNING_SLEEP_BEFORE_DATA", 0)
    spec = os.environ.get("COLEARNING_KILL_DURING_WRITE", "")
    name, _, count = spec.rpartition(":")
    if spec and not (name and count.strip().isdigit() and int(count) >= 1):
        raise ConfigError(f"environment variable COLEARNING_KILL_DURING_WRITE={spec!r} must "
                          "look like FILE:K (K >= 1, a testing hook); fix or unset it")
