"""Every random stream of a run derives from the run seed and a purpose (and index).

Streams are derived, not chained, so member i's initialization does not depend on N and
the batch order of epoch e does not depend on how many steps ran before it: a resumed run
draws exactly what an uninterrupted one draws.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed for the stream named by ``keys`` within run ``seed``.

    >>> derive_seed(0, "member", 1) != derive_seed(0, "member", 2)
    True
    """
    text = "/".join(["colearning", str(seed), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *keys: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded for the stream ``keys`` of run ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *keys))
    return gen
