"""One typed run config: defaults here, then a YAML file, then ``key=value`` overrides.

    cfg = load_config("configs/quickstart.yaml", ["loss.beta=-0.2", "ensemble.n_members=3"])
    cfg.loss.beta                  # -0.2
    cfg.to_dict()                  # the resolved config, written into every run directory

Unknown keys and wrong types raise :class:`ConfigError` naming the valid keys.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from colearning.config_checks import (
    validate_classes,
    validate_distill,
    validate_expand,
    validate_numbers,
    validate_objective,
    validate_optim,
    validate_selection,
)
from colearning.errors import ConfigError
from colearning.plugins import import_plugins
from colearning.schedules import schedule_factor
from colearning.yamlfiles import (  # noqa: F401 - the config's files, also read from here
    MAX_YAML_BYTES,
    load_yaml,
    parse_overrides,
    read_yaml,
    resolve_paths,
)


def _choice(default: Any, *others: Any, tags: tuple[str, ...] = ()) -> Any:
    """A config field whose value is one of a fixed few (``default`` first); names that a
    registry lists (models, couplings, ...) are checked against it instead
    (:func:`colearning.names.check_names`)."""
    return field(default=default, metadata={"choices": (default, *others), "tags": tags})


def _tagged(default: Any = None, *tags: str, factory: Any = None) -> Any:
    """A config field with tags (:data:`TAGS`), from which the key groups are derived."""
    if factory is not None:
        return field(default_factory=factory, metadata={"tags": tags})
    return field(default=default, metadata={"tags": tags})


# What a tag on a field means (keys_tagged(tag) lists the fields that carry it):
TAGS = {
    "display": "changes how a run is shown, not what it computes: may differ between a run "
               "and its resumption, and between the cells of a pack",
    "cell": "may differ between the cells of a pack (each cell's own experiment)",
    "coupling": "matters only when members are coupled (the paper's objective at beta != 0)",
    "label": "part of the coupling's label (colearning.couplings.coupling_label), not its "
             "strength",
}


# Keys that name a registry entry (data.name, model.name, loss.coupling, loss.divergence,
# loss.objective, optim.schedule, loss.beta_schedule) list no names here: the registries
# are the lists (colearning.names.check_names checks them).


@dataclass
class DataConfig:
    name: str = "digits"  # a registered dataset (colearning.data.DATASETS)
    path: str | None = None  # file or directory of the data (cifar*, imagefolder)
    # "official" train/test, or "random" (pool all, split per seed)
    split: str = _choice("official", "random")
    train_size: int | None = None  # images; None keeps the official count
    test_size: int | None = None  # images; None keeps the official count
    val_size: int = 0  # images held out of the training split per seed for selection; 0: none
    # train, validate and test on these classes only (names or indices), relabelled 0..k-1 in
    # this order; the other classes' test images are the OOD set held-out; null: all classes
    classes: list[str | int] | None = None
    normalize: bool = False  # per-channel standardization after scaling to [0, 1]
    augment: bool | None = None  # crop+flip; None: the model's paper recipe (its registry
    # metadata: on for vgg9)
    cache_dir: str | None = None  # decoded-array cache; None: ~/.cache/colearning/decoded


@dataclass
class ModelConfig:
    name: str = "small_cnn"  # a registered model (colearning.models.MODELS)
    options: dict[str, Any] = field(default_factory=dict)  # extra builder keyword arguments


@dataclass
class EnsembleConfig:
    n_members: int = _tagged(2, "cell")  # N, the one place it is stated
    # how the members run (colearning.engine)
    strategy: str = _choice("auto", "loop", "grouped", "vmap")


@dataclass
class LossConfig:
    # scalar or [N, N]; None: 0 unless beta_bar
    beta: float | list[list[float]] | None = _tagged(None, "cell", "coupling")
    # size-normalized coupling: beta = beta_bar / N
    beta_bar: float | None = _tagged(None, "cell", "coupling")
    # who is coupled (colearning.couplings.COUPLINGS)
    coupling: str = _tagged("uniform", "coupling", "label")
    # e.g. {k: 2} for ring
    coupling_options: dict[str, Any] = _tagged(None, "coupling", "label", factory=dict)
    # the coupling over epochs (colearning.schedules)
    beta_schedule: str = _tagged("constant", "coupling", "label")
    # e.g. {epochs: 10}
    beta_schedule_options: dict[str, Any] = _tagged(None, "coupling", "label", factory=dict)
    # adaptive coupling: scale beta each epoch to hold the members' mean validation JS
    # distance (nats) here (colearning.couplings.adapt_scale)
    target_js: float | None = _tagged(None, "coupling", "label")
    # detached: p_j constant in L_i; joint: gradients through p_j
    peers: str = _choice("detached", "joint")
    # batchmean: Eq. 1 as written; mean: coupling / classes; mean_all: both terms / classes
    # (KLDivLoss's default reduction everywhere)
    kl_reduction: str = _choice("batchmean", "mean", "mean_all", tags=("cell",))
    # the coupling term D(p_j, p_i) (colearning.losses.DIVERGENCES)
    divergence: str = _tagged("kl", "coupling")
    # what each member minimizes (colearning.losses.OBJECTIVES)
    objective: str = _tagged("colearning", "cell")
    # interpolated's lambda in [0, 1]: lambda KL(q||p_ens) + (1 - lambda) KL(q||p_i); unset
    # for the other objectives
    joint_weight: float | None = _tagged(None, "cell")


@dataclass
class OptimConfig:
    name: str = "sgd"  # the optimizer (colearning.optim.OPTIMIZERS): sgd, adam, adamw
    lr: float = _tagged(0.01, "cell")  # initial learning rate (paper: 0.01)
    momentum: float = 0.9  # SGD momentum (paper: 0.9)
    # sgd and adam: L2 coefficient added to the gradient; adamw: decoupled decay (paper: 0.0005)
    weight_decay: float = _tagged(5e-4, "cell")
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam/adamw moments
    eps: float = 1e-8  # adam/adamw denominator term
    warmup_epochs: int = 0  # linear learning-rate warm-up in front of the schedule; 0: none
    schedule: str = "constant"  # the learning rate over epochs (colearning.schedules)
    schedule_options: dict[str, Any] = field(default_factory=dict)  # e.g. {every: 50,
    # gamma: 0.1} for step
    grad_clip: float | None = None  # max gradient norm per member; None: no clipping


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128  # images per step, shared by all members (paper: 512 / 256)
    eval_batch_size: int = 1024  # images per evaluation forward pass
    # stop: end the run as diverged; skip: drop that step
    on_nonfinite: str = _choice("stop", "skip")
    analysis_every: int = 1  # epochs between activation/weight statistics; 0: final only
    analysis_samples: int = 1000  # test images used for activation statistics
    save_probs_every: int = 0  # epochs between saved test probabilities; 0: final only
    progress: bool = _tagged(True, "display")  # progress bars on stderr
    # fp32, or bf16: autocast for the members' forward and backward (the loss, softmax/KL,
    # metrics and optimizer stay fp32); auto: bf16 where native and timed faster
    # (colearning.training.precision)
    precision: str = _choice("fp32", "bf16", "auto")
    tf32: bool = False  # CUDA only: TF32 matmuls and convolutions under fp32 (Ampere and newer)
    # off, default, reduce-overhead (CUDA graphs): torch.compile of the members' forward and
    # backward and of the loss; falls back to eager with a warning
    compile: str = _choice("off", "default", "reduce-overhead")
    # tensorboard: also log every metric for TensorBoard (RUN_DIR/tensorboard; pip install
    # 'colearning[tensorboard]'); the run directory stays the source of truth
    log_to: str | None = _choice(None, "tensorboard", tags=("display",))
    # keep the weights of the validation-best epoch (best.pt beside the checkpoint; needs
    # data.val_size > 0): on early_stopping's metric, else val/ensemble_accuracy_mean; load
    # them with load_ensemble(run, epoch="best")
    keep_best: bool = _tagged(False, "cell")
    # {metric: val/ensemble_accuracy_mean, patience: 5, min_delta: 0}: end a cell when the
    # metric has not improved for patience epochs (in a pack that cell stops stepping);
    # null: never
    early_stopping: dict[str, Any] | None = _tagged(None, "cell")
    # at the end of a finished run, evaluate it under corruptions, on OOD sets (noise, and
    # held-out with data.classes) and with temperature scaling: RUN_DIR/evaluation/
    # (colearning.inference.uncertainty; run by colearn train, colearning.train and sweeps)
    evaluate_shift: bool = _tagged(False, "display")


EXPAND_MODES = ("add-freeze", "add-retrain", "boost")


@dataclass
class ExpandConfig:
    """Growing a trained run (Supp. "Expanding ensembles"); all unset: an ordinary run."""

    source: str | None = None  # run directory grown from; its N members come first
    mode: str | None = None  # add-freeze, add-retrain, boost (colearning.expand)
    add: int = 0  # M, new members; ensemble.n_members = N + M
    margin: int = 0  # boost: train on samples with k-m..k+m correct old votes, k = N/2


@dataclass
class DistillConfig:
    """Training on a trained ensemble's soft predictions (colearning.distill; loss.objective
    distill); teacher unset: an ordinary run."""

    teacher: str | None = None  # run directory of the teaching ensemble (same seed and data)
    temperature: float = 4.0  # T: softmax(log p_ens / T) teaches softmax(z / T) (Hinton: 2-20)
    weight: float = 0.9  # alpha: the soft term's weight; the hard-label term gets 1 - alpha
    epoch: str = _choice("final", "best")  # the teacher's weights (load_ensemble's epoch)


@dataclass
class Config:
    # modules that register models, data sets, couplings, objectives or metrics, imported
    # whenever a config is read, so in every process (colearning.plugins)
    plugins: list[str] = field(default_factory=list)
    seed: int = _tagged(0, "cell")  # determines the split, every member's init and the batch order
    device: str = "auto"  # auto, cpu, cuda, cuda:K
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    expand: ExpandConfig = field(default_factory=ExpandConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

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


def _upgrade(values: dict[str, Any]) -> dict[str, Any]:
    """A config dict written before 0.3 in today's layout: optim.step_size and optim.gamma
    (the step learning-rate schedule's) are optim.schedule_options ``every`` and ``gamma``."""
    optim = values.get("optim") if isinstance(values, dict) else None
    if not isinstance(optim, dict) or not {"step_size", "gamma"} & set(optim):
        return values
    optim = dict(optim)
    legacy = {"every": optim.pop("step_size", 50), "gamma": optim.pop("gamma", 0.1)}
    if optim.get("schedule") == "step" and not optim.get("schedule_options"):
        optim["schedule_options"] = legacy
    return {**values, "optim": optim}


def config_from_dict(values: dict[str, Any], *, plugins: bool = True) -> Config:
    """A validated :class:`Config` from a nested dict (missing keys take the defaults); its
    plugins are imported first, so the registries hold their entries. ``plugins=False``:
    only compared, never imported (a config found inside a checkpoint)."""
    config = _build(Config, _upgrade(values or {}), "")
    if plugins:
        import_plugins(config.plugins)
    validate(config)
    return config


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins (model.options merge key by key too)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
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


def keys_tagged(tag: str, cls: type | None = None, prefix: str = "") -> tuple[str, ...]:
    """The dotted config keys whose field carries ``tag`` (:data:`TAGS`), in declaration
    order: the one source of every key group."""
    if tag not in TAGS:
        raise ValueError(f"unknown tag {tag!r}; valid: {', '.join(TAGS)}")
    cls = cls or Config
    hints = typing.get_type_hints(cls)
    keys: list[str] = []
    for item in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[item.name]):
            keys += keys_tagged(tag, hints[item.name], f"{prefix}{item.name}.")
        elif tag in item.metadata.get("tags", ()):
            keys.append(f"{prefix}{item.name}")
    return tuple(keys)


DISPLAY_KEYS = keys_tagged("display")


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




def one_strength(beta: Any, beta_bar: Any) -> None:
    """A coupling's strength is loss.beta or loss.beta_bar, never both: the one check, for
    configs, coupling builders and :func:`colearning.losses.beta_matrix`."""
    if beta is not None and beta_bar is not None:
        raise ConfigError("set loss.beta or loss.beta_bar, not both")


def _choices(cls: type, prefix: str = "") -> Iterator[tuple[str, tuple[Any, ...]]]:
    """(dotted key, allowed values) of every fixed-choice field, through the sections."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[item.name]):
            yield from _choices(hints[item.name], f"{prefix}{item.name}.")
        elif "choices" in item.metadata:
            yield f"{prefix}{item.name}", item.metadata["choices"]


def validate(config: Config) -> None:
    """Value checks that types alone cannot express; one-line ConfigError on failure."""
    validate_numbers(config)
    for key, choices in _choices(Config):
        if config.get(key) not in choices:
            raise ConfigError(f"{key}={config.get(key)!r} is not valid; valid: "
                              f"{', '.join(map(str, choices))}")
    positive = ["ensemble.n_members", "train.epochs", "train.batch_size", "train.eval_batch_size"]
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
    one_strength(config.loss.beta, config.loss.beta_bar)
    beta = config.loss.beta
    if isinstance(beta, list):
        n = config.ensemble.n_members
        if len(beta) != n or any(len(row) != n for row in beta):
            raise ConfigError(
                f"loss.beta matrix must be {n}x{n} (ensemble.n_members={n}), got "
                f"{len(beta)} rows of lengths {[len(row) for row in beta]}"
            )
    validate_objective(config)
    validate_optim(config)
    target = config.loss.target_js
    if target is not None:
        if not 0 < target < 0.6931471805599453:
            raise ConfigError(f"loss.target_js must be in (0, log 2) nats, got {target}")
        if config.data.val_size < 1:
            raise ConfigError("loss.target_js measures the members' JS distance on a "
                              "validation split: set data.val_size > 0")
    for key in ("optim.schedule", "loss.beta_schedule"):  # the registry is the list of names
        schedule_factor(config.get(key), config.get(f"{key}_options"), 0, config.train.epochs)
    if config.optim.grad_clip is not None and config.optim.grad_clip <= 0:
        raise ConfigError(f"optim.grad_clip must be > 0 or null, got {config.optim.grad_clip}")
    validate_expand(config, EXPAND_MODES)
    validate_distill(config)
    validate_classes(config.data.classes)
    validate_selection(config)


def dump_yaml(config: Config) -> str:
    """The resolved config as YAML (keys in declaration order)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
