"""Growing trained ensembles (paper Sec. 3.4, Supp. "Expanding ensembles", Table S5).

    from colearning.expand import expand, border_indices
    run = expand("runs/base10", add=5, mode="add-freeze", overrides=["loss.beta=-0.07"])

Modules: ``grow`` (the grown run's config, and training it; the member plan the training
loop receives is :mod:`colearning.training.growth`), ``table`` (the Table S5 experiment:
base, expansions and from-scratch runs planned as sweep cells, and its table) and
``table_run`` (training those cells with the sweep runner, in two stages).
"""

from colearning.expand.grow import expand, grown_config
from colearning.training.growth import LINEAGE, border_indices, border_range, check_source

__all__ = [
    "LINEAGE",
    "border_indices",
    "border_range",
    "check_source",
    "expand",
    "format_table_s5",
    "grown_config",
    "load_table_s5_spec",
    "run_table_s5",
    "table_s5",
]


def __getattr__(name: str):  # the Table S5 driver builds on the sweep runner: import lazily
    if name in ("format_table_s5", "load_table_s5_spec", "table_s5"):
        from colearning.expand import table as module

        return getattr(module, name)
    if name == "run_table_s5":
        from colearning.expand.table_run import run_table_s5

        return run_table_s5
    raise AttributeError(f"module 'colearning.expand' has no attribute {name!r}")
