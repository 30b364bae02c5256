"""Will it fit? The memory a run needs, estimated before anything is allocated.

    needed = estimate(config, raw, n_members=10)     # bytes, by part
    check_fits(config, raw, n_members, device)       # ConfigError when it cannot fit

Parts: the members' weights, gradients and optimizer state (3 copies of the parameters,
counting the per-member modules the stacked ensemble is built from, plus the optimizer's
state tensors: 1 for SGD with momentum, 2 for Adam), the activations one training
step keeps for its backward pass (every node of a traced member, at the batch size, twice:
the values and their gradients; members torch.fx cannot trace count their weights only)
and the dataset's uint8 images on the device. It is an estimate, deliberately on the low
side: a run refused by it could not have run, and one it lets through may still fail late.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.fx as fx

from colearning.config import Config
from colearning.data import RawDataset
from colearning.errors import ConfigError
from colearning.models import build_model
from colearning.optim import OPTIMIZERS

GIB = 2**30
FLOAT_BYTES = 4


def _member(config: Config, raw: RawDataset) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(config.model.name, num_classes=raw.num_classes,
                           in_channels=raw.in_channels, image_size=raw.image_size,
                           **config.model.options)


def _activation_values(member: torch.nn.Module, raw: RawDataset) -> int:
    """Values per image that one member's forward keeps (0 when fx cannot trace it)."""
    try:
        graph = fx.symbolic_trace(member)
    except Exception:  # noqa: BLE001 - untraceable: counted by its weights only
        return 0
    total = 0

    class Sizes(fx.Interpreter):
        def run_node(self, node: fx.Node) -> Any:
            nonlocal total
            out = super().run_node(node)
            if isinstance(out, torch.Tensor) and out.dim() > 0 and node.op != "placeholder":
                total += out[0].numel()
            return out

    shape = (2, raw.in_channels, raw.image_size, raw.image_size)
    try:
        with torch.no_grad():
            Sizes(graph).run(torch.empty(shape, device="meta"))
    except Exception:  # noqa: BLE001 - a shape the meta run cannot follow: weights only
        return 0
    return total


def estimate(config: Config, raw: RawDataset, n_members: int,
             coupled: int | None = None) -> dict[str, int]:
    """Bytes a run of ``n_members`` members needs on its device, by part; ``coupled``: the
    largest ensemble's N, whose [N, N] coupling matrices (a few copies) count too."""
    coupled = n_members if coupled is None else coupled
    member = _member(config, raw)
    parameters = sum(p.numel() for p in member.parameters())
    batch = config.train.batch_size
    images = sum(x.nbytes for _, x, _ in raw.sides())
    return {
        "weights": (3 + OPTIMIZERS.meta(config.optim.name)["state"](config.optim))
        * parameters * FLOAT_BYTES * n_members,
        "activations": 2 * _activation_values(member, raw) * batch * FLOAT_BYTES * n_members,
        "images": images,
        "couplings": 3 * coupled * coupled * FLOAT_BYTES,
    }


def available(device: torch.device) -> int | None:
    """Bytes free on ``device`` (None when unknown). On the CPU: the least of the machine's
    available memory, what the process's cgroup (memory.max) and its address-space and data
    limits (RLIMIT_AS, RLIMIT_DATA: ``prlimit``, ``ulimit -v``) still allow."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    limits = [_meminfo("MemAvailable"), _cgroup_free(), _rlimit_free()]
    known = [free for free in limits if free is not None]
    return max(min(known), 0) if known else None


def _meminfo(key: str, path: str = "/proc/meminfo") -> int | None:
    """A ``key: N kB`` line of /proc/meminfo (or /proc/self/status) in bytes."""
    try:
        with open(path) as info:
            for line in info:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


# (limit, usage) files of the process's memory cgroup: v2, then v1. A v1 "no limit" is a
# number near 2^63.
_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                  "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def _cgroup_free() -> int | None:
    """Bytes the process's memory cgroup still allows (None: no limit found)."""
    for limit_path, usage_path in _CGROUP_FILES:
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and usage is not None and limit < 2**60:
            return limit - usage
    return None


def _rlimit_free() -> int | None:
    """Bytes the address-space and data limits still allow this process (None: unlimited)."""
    import resource

    free = []
    for limit, used in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft = resource.getrlimit(limit)[0]
        current = _meminfo(used, "/proc/self/status")
        if soft != resource.RLIM_INFINITY and current is not None:
            free.append(soft - current)
    return min(free) if free else None


def check_fits(config: Config, raw: RawDataset, n_members: int, device: torch.device,
               coupled: int | None = None) -> None:
    """ConfigError (one line, before allocating) when the run cannot fit on ``device``."""
    free = available(device)
    if free is None:
        return
    parts = estimate(config, raw, n_members, coupled)
    needed = sum(parts.values())
    if needed <= free:
        return
    raise ConfigError(
        f"this run needs about {needed / GIB:.1f} GiB on {device} ({n_members} members: "
        f"{parts['weights'] / GIB:.1f} GiB of weights, gradients and optimizer state, "
        f"{parts['activations'] / GIB:.1f} GiB of activations at batch {config.train.batch_size}"
        f", {parts['couplings'] / GIB:.1f} GiB of couplings, {parts['images'] / GIB:.1f} GiB of "
        f"images) but {free / GIB:.1f} GiB are free; "
        "lower ensemble.n_members or train.batch_size, or split the members over processes "
        "(colearn train --nproc K)")


def check_couplings_fit(n_members: int) -> None:
    """ConfigError when even the [N, N] coupling matrices (a few float64 copies, built on the
    host before anything else) cannot fit: the first allocation a huge N would fail on."""
    needed = 3 * n_members * n_members * 8
    free = available(torch.device("cpu"))
    if free is not None and needed > free:
        raise ConfigError(
            f"ensemble.n_members={n_members} needs {needed / GIB:.1f} GiB for its [N, N] "
            f"couplings alone but {free / GIB:.1f} GiB are free; lower ensemble.n_members")


def out_of_memory(error: BaseException) -> bool:
    """Is ``error`` an allocator's failure (CPU or GPU), as opposed to another bug?"""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        sign in text for sign in ("can't allocate memory", "out of memory",
                                  "Cannot allocate memory", "failed to allocate"))


def allocation(error: BaseException) -> str:
    """The sizes an allocator's error names, in one short phrase."""
    text = " ".join(str(error).split())
    found = re.search(r"allocate (\d+) bytes", text)
    if found:
        return f"an allocation of {int(found.group(1)) / GIB:.2f} GiB failed"
    found = re.search(r"tried to allocate ([\d.]+ [KMGT]i?B)", text, re.IGNORECASE)
    if found:
        return f"an allocation of {found.group(1)} failed"
    return text[:120] or type(error).__name__
