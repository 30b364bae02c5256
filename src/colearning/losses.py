"""The co-learning loss of the paper (Eq. 1-3) for N members at once, and the related
ensemble objectives, as one registry (``loss.objective``).

For member i and sample x (q the label distribution, p_i the member's softmax):

    colearning:    L_i(x) = KL(q || p_i) + sum_{j != i} beta_ij * KL(p_j || p_i)

beta < 0 pushes members apart (diversity), beta > 0 pulls them together (mutual
learning, as Deep Mutual Learning does), beta = 0 is independent training with
cross-entropy. The related objectives train the ensemble p_ens = mean_i p_i itself:

    interpolated:  L_i(x) = lambda * KL(q || p_ens) + (1 - lambda) * KL(q || p_i)
    joint:         interpolated at lambda = 1: KL(q || p_ens), end-to-end joint training

(lambda = ``loss.joint_weight``). The trainer sums the members' losses, so it descends
N * [lambda * KL(q || p_ens) + (1 - lambda) * mean_i KL(q || p_i)]: each member's gradient
has the scale of its own cross-entropy, lambda = 0 is independent training exactly and
lambda = 1 joint training (Webb et al. 2019; Jeffares et al. 2023, "learner collusion").

One objective learns from a trained ensemble instead of from peers (``colearn distill``):

    distill:       L_i(x) = alpha T^2 KL(p_T || p_i^T) + (1 - alpha) KL(q || p_i)

p_T the teacher ensemble's soft targets at temperature T (:func:`softened`), p_i^T =
softmax(z_i / T) (Hinton et al. 2015).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from colearning.config import one_strength
from colearning.errors import ConfigError
from colearning.registry import Registry

PEERS = ("detached", "joint")
KL_REDUCTIONS = ("batchmean", "mean", "mean_all")


class CoupledLoss(NamedTuple):
    """Per-member loss parts, each a tensor [N] ([K, N] for a pack): ``total = task +
    coupling``."""

    total: torch.Tensor
    task: torch.Tensor
    coupling: torch.Tensor


def beta_matrix(
    beta: float | torch.Tensor | np.ndarray | None,
    n_members: int,
    *,
    beta_bar: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Coupling matrix [N, N] with a zero diagonal, from a scalar, a matrix or beta_bar.

    ``beta_bar`` is the size-normalized coupling of the paper (Sec. 3.1): beta = beta_bar / N,
    which puts the optimum near beta_bar = -1 for every ensemble size. Give either ``beta``
    or ``beta_bar``, not both.

    >>> beta_matrix(-0.5, 3)[0]
    tensor([ 0.0000, -0.5000, -0.5000])
    >>> beta_matrix(None, 4, beta_bar=-1.0)[0, 1].item()
    -0.25
    """
    if n_members < 1:
        raise ConfigError(f"n_members must be >= 1, got {n_members}")
    beta = _as_beta(beta)
    if isinstance(beta, torch.Tensor) and beta.dim() == 0:
        beta = float(beta)
    one_strength(beta, beta_bar)
    if beta_bar is not None:
        beta = float(beta_bar) / n_members
    if beta is None:
        beta = 0.0
    if isinstance(beta, (int, float)):
        if not np.isfinite(beta):
            raise ConfigError(f"beta must be finite, got {beta}")
        matrix = torch.full((n_members, n_members), float(beta), dtype=dtype, device=device)
    else:
        matrix = torch.as_tensor(beta).to(dtype=dtype, device=device)
        if matrix.shape != (n_members, n_members):
            raise ConfigError(
                f"beta matrix must have shape [{n_members}, {n_members}] (one row and column "
                f"per member), got {list(matrix.shape)}"
            )
        if not torch.isfinite(matrix).all():
            raise ConfigError("beta matrix contains NaN or inf; give finite couplings")
    return matrix.masked_fill(torch.eye(n_members, dtype=torch.bool, device=device), 0.0)


def _as_beta(beta: Any) -> float | torch.Tensor | None:
    """A coupling as given (None, a number, a 0-d or [N, N] array or tensor, nested lists) as
    None, a float or a tensor; anything else is a one-line ConfigError."""
    if beta is None or isinstance(beta, torch.Tensor):
        return beta
    if isinstance(beta, (bool, np.bool_, str, bytes)):
        raise ConfigError(f"beta must be a number or an [N, N] matrix, got {type(beta).__name__} "
                          f"{beta!r}")
    if isinstance(beta, (int, float, np.integer, np.floating)):
        return float(beta)
    try:
        matrix = torch.as_tensor(np.asarray(beta, dtype=np.float64))
    except (TypeError, ValueError):
        raise ConfigError(f"beta must be a number or an [N, N] matrix of numbers, got "
                          f"{type(beta).__name__}") from None
    return float(matrix) if matrix.dim() == 0 else matrix


def _coupling_weights(
    beta: float | torch.Tensor | np.ndarray | None,
    beta_bar: float | None,
    n_members: int,
    n_peers: int,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Coupling rows of the trained members: [N, M] (M = N + frozen peers), or [K, N, N]
    for a pack of K ensembles given a [K, N, N] beta.

    A beta given as a tensor is used as it is, its shape checked but not its values: a
    NaN check would make the host wait for the device at every step. Build it once with
    :func:`beta_matrix`, which checks it (the trainer does); floats, lists and arrays are
    checked here.
    """
    if isinstance(beta, torch.Tensor) and beta.dim() == 0 and beta_bar is None:
        # a 0-d tensor is a scalar: broadcast on its device (no host sync for its value)
        beta = beta.to(device=device, dtype=dtype).expand(n_members, n_peers)
    if isinstance(beta, torch.Tensor) and beta_bar is None:
        rows = (beta.shape[0], n_members, n_peers) if beta.dim() == 3 else (n_members, n_peers)
        if tuple(beta.shape) != rows:
            raise ConfigError(f"beta must be [{', '.join(map(str, rows))}] (one row per member, "
                              f"one column per peer), got {list(beta.shape)}")
        mask = 1 - torch.eye(n_members, n_peers, dtype=dtype, device=device)
        return beta.to(device=device, dtype=dtype) * mask
    beta = _as_beta(beta)  # numbers, lists and arrays: checked by beta_matrix below
    if isinstance(beta, torch.Tensor):
        beta = beta.to(dtype)
        if beta.dim() == 2 and beta.shape == (n_members, n_peers) and n_peers > n_members:
            # Frozen peers are never trained, so their rows are irrelevant: pad with zeros.
            beta = torch.cat([beta, beta.new_zeros(n_peers - n_members, n_peers)])
    return beta_matrix(beta, n_peers, beta_bar=beta_bar, device=device, dtype=dtype)[:n_members]


def _target_distribution(target: torch.Tensor, logits: torch.Tensor,
                         dtype: torch.dtype) -> torch.Tensor:
    """Label distribution q broadcastable to logits [..., N, B, C].

    Class indices [..., B] (shared by the members of an ensemble) or [..., N, B] (one batch
    per member), or probabilities [..., B, C] / [..., N, B, C].
    """
    *lead, n, batch, classes = logits.shape
    if target.dtype.is_floating_point:
        per_member = target.dim() == logits.dim()
        q = target.to(dtype)
        trailing, what = (batch, classes), f"[..., B, C] = [..., {batch}, {classes}]"
    else:
        per_member = target.dim() == logits.dim() - 1
        q = F.one_hot(target.long(), classes).to(dtype) if target.dim() else None
        trailing, what = (batch,), f"[..., B] = [..., {batch}] class indices"
    shape = tuple(target.shape)
    expected = (*lead, n, *trailing) if per_member else (*lead, *trailing)
    if q is None or shape != expected[len(expected) - len(shape):]:
        raise ConfigError(f"target must be {what} (or one per member, [..., N, ...]) for "
                          f"logits {list(logits.shape)}, got {target.dtype} {list(shape)}")
    return q if per_member else q.unsqueeze(-3)


# Peers per chunk of the pairwise KL: one [..., B, N, chunk] float64 block stays near this
# many elements (64 MB).
_KL_CHUNK_ELEMENTS = 2**23


def _accumulation_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """float64 for the pairwise KLs wherever the device has it (MPS does not)."""
    return dtype if device.type == "mps" else torch.float64


def _peer_chunk(log_p: torch.Tensor, classes: int) -> int:
    """Peers per chunk so that one block of [..., N, chunk, B, classes] elements, every
    leading dim (the K ensembles of a pack) included, stays near _KL_CHUNK_ELEMENTS."""
    return max(1, _KL_CHUNK_ELEMENTS // max(1, log_p[..., 0].numel() * classes))


def pairwise_kl(log_p: torch.Tensor, peer_log_p: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p_j || p_i) [..., N, M, B] from log-probabilities [..., N, B, C] and
    [..., M, B, C] (any leading dims, e.g. K ensembles of a pack).

    KL = sum_c p_j (log p_j - log p_i) per sample, as the negative entropy of p_j minus the
    cross term sum_c p_j log p_i (a batched matmul over the samples). When p_i ~= p_j the
    two terms nearly cancel, so pass float64 log-probabilities (:func:`coupled_loss` does):
    the rounding left is ~1e-16 nats, far below any KL that matters. A per-sample KL that
    rounding still makes negative is clamped at 0. Peers go in chunks of a bounded block.
    """
    chunk = _peer_chunk(log_p, classes=1)
    by_sample = log_p.transpose(-3, -2).contiguous()  # [..., B, N, C]; contiguous: one BLAS call
    out = []
    for start in range(0, peer_log_p.shape[-3], chunk):
        peers = peer_log_p[..., start:start + chunk, :, :]  # [..., m, B, C]
        p_j = peers.exp()
        neg_entropy = (p_j * peers).sum(-1).transpose(-1, -2)  # [..., B, m]
        cross = torch.matmul(by_sample, p_j.permute(*range(p_j.dim() - 3), -2, -1, -3)
                             .contiguous())  # [..., B, N, m]
        out.append((neg_entropy.unsqueeze(-2) - cross).clamp_min(0.0))
    kl = torch.cat(out, dim=-1)  # [..., B, N, M]
    return kl.permute(*range(kl.dim() - 3), -2, -1, -3)


def _pairwise(log_p: torch.Tensor, peer_log_p: torch.Tensor,
              term: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """[..., N, M, B] of ``term(log p_i, log p_j)`` [..., N, m, B, C] -> summed over classes,
    peers in chunks of a bounded block (an elementwise [N, M, B, C] tensor otherwise)."""
    chunk = _peer_chunk(log_p, classes=log_p.shape[-1])
    mine = log_p.unsqueeze(-3)  # [..., N, 1, B, C]
    out = [term(mine, peer_log_p[..., start:start + chunk, :, :].unsqueeze(-4)).sum(-1)
           for start in range(0, peer_log_p.shape[-3], chunk)]
    return torch.cat(out, dim=-2)


def _reverse_kl(log_p: torch.Tensor, peer_log_p: torch.Tensor) -> torch.Tensor:
    """KL(p_i || p_j) per sample: the member's own distribution weighs the log-ratio."""
    return _pairwise(log_p, peer_log_p, lambda a, b: a.exp() * (a - b)).clamp_min(0.0)


def _js(log_p: torch.Tensor, peer_log_p: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence per sample, in nats: at most log 2."""
    def term(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        log_m = torch.logaddexp(a, b) - math.log(2.0)
        return 0.5 * (a.exp() * (a - log_m) + b.exp() * (b - log_m))

    return _pairwise(log_p, peer_log_p, term).clamp_min(0.0)


def _squared_l2(log_p: torch.Tensor, peer_log_p: torch.Tensor) -> torch.Tensor:
    """sum_c (p_i - p_j)^2 per sample: the negative-correlation-learning distance."""
    return _pairwise(log_p, peer_log_p, lambda a, b: (a.exp() - b.exp()) ** 2)


# Divergence D(p_j, p_i) of member i from peer j: per-sample [..., N, M, B] from
# log-probabilities [..., N, B, C] (members) and [..., M, B, C] (peers).
DIVERGENCES: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = \
    Registry("divergence", key="loss.divergence")
DIVERGENCES.register("kl")(pairwise_kl)  # KL(p_j || p_i), the paper's Eq. 1
DIVERGENCES.register("reverse_kl")(_reverse_kl)
DIVERGENCES.register("js")(_js)
DIVERGENCES.register("l2")(_squared_l2)


def coupled_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    beta: float | torch.Tensor | np.ndarray | None = None,
    *,
    beta_bar: float | None = None,
    peers: str = "detached",
    kl_reduction: str = "batchmean",
    frozen: torch.Tensor | None = None,
    divergence: str = "kl",
) -> CoupledLoss:
    """Co-learning loss from member logits [N, B, C]; returns :class:`CoupledLoss` of [N] tensors.

    Args:
        logits: member outputs before softmax, [N, B, C] (member axis first), or
            [K, N, B, C] for a pack of K ensembles of N members each (parts [K, N]), each
            coupled within itself only.
        target: class indices [B] or label distributions q [B, C] shared by the members
            (a pack: [K, B] or [K, B, C], one batch per ensemble); or one per member,
            [N, B] / [N, B, C] (members on their own batches).
        beta: coupling, a float (uniform all-to-all) or an [N, N] matrix beta_ij (row i is
            the coupling seen by member i; the diagonal is ignored); a pack may give one
            matrix per ensemble, [K, N, N]. None means 0.
        beta_bar: size-normalized coupling instead of ``beta``: beta = beta_bar / N.
        peers: ``"detached"`` (default) makes p_j a constant inside L_i, so each member
            minimizes only its own loss and member j gets no gradient from L_i (the paper's
            "each network minimizes its own loss"; it also lets members live on different
            devices). ``"joint"`` lets gradients flow through p_j too, i.e. gradient descent
            on sum_i L_i as one objective.
        kl_reduction: ``"batchmean"`` (default; Eq. 1 as written: every KL summed over
            classes, averaged over the batch) or ``"mean"``: the coupling KLs are also divided
            by the number of classes C, as torch.nn.KLDivLoss's default reduction does when
            code adds ``beta * KLDivLoss()(log p_i, p_j)`` to a cross-entropy task loss. The
            task term stays the batch-mean cross-entropy, so under ``"mean"`` a given beta
            acts C times weaker: ``mean`` at beta equals ``batchmean`` at beta / C.
            ``"mean_all"``: both terms divided by C, what KLDivLoss's default reduction
            gives when code uses it for the task term too; the loss is Eq. 1 / C, so under
            SGD it trains exactly as ``batchmean`` with the learning rate / C and the weight
            decay x C (without ``optim.grad_clip``, whose threshold sees gradients / C); the
            logged losses are the divided ones.
        frozen: optional peer log-probabilities [M, B, C] of members that are not trained
            (growing an ensemble). They enter every member's coupling term as extra peers j;
            ``beta`` must then be [N, N+M] (or a float).
        divergence: the coupling term D(p_j, p_i): ``"kl"`` (default; KL(p_j || p_i), Eq.
            1), ``"reverse_kl"`` (KL(p_i || p_j)), ``"js"`` (Jensen-Shannon, bounded by
            log 2) or ``"l2"`` (sum_c (p_i - p_j)^2, bounded by 2), see
            :data:`DIVERGENCES`.

    The parts come in ``torch.promote_types(logits.dtype, torch.float32)``: float64 logits
    give float64 losses, bf16/fp16 logits are upcast to float32. The pairwise KLs are summed
    per sample in float64 (see :func:`pairwise_kl`), so a coupling KL is never negative.

    ``total[i]`` is the batch mean of KL(q||p_i) + sum_j beta_ij KL(p_j||p_i);
    ``total.sum().backward()`` trains every member on its own loss. In detached mode the
    gradient w.r.t. member i's logits is ((p_i - q) + sum_j beta_ij (p_i - p_j)) / B.

    >>> parts = coupled_loss(torch.zeros(2, 4, 3), torch.tensor([0, 1, 2, 0]), beta=-0.5)
    >>> parts.total.shape, float(parts.coupling.abs().sum())
    (torch.Size([2]), 0.0)
    """
    if logits.dim() not in (3, 4):
        raise ConfigError(f"logits must be [N, B, C] (member axis first) or [K, N, B, C] (a "
                          f"pack of ensembles), got {list(logits.shape)}")
    if peers not in PEERS:
        raise ConfigError(f"unknown peers mode {peers!r}; valid: {', '.join(PEERS)}")
    if kl_reduction not in KL_REDUCTIONS:
        raise ConfigError(
            f"unknown kl_reduction {kl_reduction!r}; valid: {', '.join(KL_REDUCTIONS)}"
        )
    *_, n_members, batch, classes = logits.shape
    # float64 stays float64 (gradcheck, reference runs); bf16/fp16 logits are upcast.
    dtype = torch.promote_types(logits.dtype, torch.float32)
    q = _target_distribution(target.to(logits.device), logits, dtype)

    log_p = F.log_softmax(logits.to(dtype), dim=-1)  # [..., N, B, C]
    # Task term KL(q || p_i) = sum_c q (log q - log p_i); xlogy keeps q = 0 entries at 0.
    task = (torch.special.xlogy(q, q) - q * log_p).sum(-1).mean(-1)  # [..., N]

    # The coupling KLs are small differences of O(1) terms when members agree: accumulate
    # them in float64 (an O(N M B C) matmul, cheap next to the members' forward pass) and
    # return them in ``dtype``.
    wide = _accumulation_dtype(dtype, logits.device)
    wide_log_p = F.log_softmax(logits.to(wide), dim=-1) if wide != dtype else log_p
    peer_log_p = wide_log_p.detach() if peers == "detached" else wide_log_p
    if frozen is not None:
        if logits.dim() != 3 or frozen.dim() != 3 or frozen.shape[1:] != (batch, classes):
            raise ConfigError(
                f"frozen peers must be [M, {batch}, {classes}] (for [N, B, C] logits), got "
                f"{list(frozen.shape)}"
            )
        peer_log_p = torch.cat([peer_log_p, frozen.detach().to(peer_log_p)], dim=0)
    weights = _coupling_weights(beta, beta_bar, n_members, peer_log_p.shape[-3],
                                logits.device, dtype)
    pair = DIVERGENCES.get(divergence)(wide_log_p, peer_log_p).mean(-1).to(dtype)  # [.., N, M]
    coupling = (weights * pair).sum(-1)  # [..., N]

    if kl_reduction in ("mean", "mean_all"):
        coupling = coupling / classes
    if kl_reduction == "mean_all":
        task = task / classes
    return CoupledLoss(task + coupling, task, coupling)


def interpolated_loss(logits: torch.Tensor, target: torch.Tensor,
                      joint_weight: float | torch.Tensor) -> CoupledLoss:
    """The interpolated ensemble objective from member logits [N, B, C] ([K, N, B, C] for a
    pack); returns :class:`CoupledLoss` of [N] ([K, N]) tensors.

    ``total[i]`` is the batch mean of lambda * KL(q || p_ens) + (1 - lambda) * KL(q || p_i),
    with p_ens = mean_j p_j and lambda = ``joint_weight`` in [0, 1] (a float, or a tensor
    broadcastable to the parts, e.g. [K, 1], one per ensemble of a pack); ``task[i]`` is
    KL(q || p_i), the member's own loss, and ``coupling[i] = total[i] - task[i]``.
    ``total.sum().backward()`` descends N times the objective: gradients flow through
    p_ens into every member (there are no detached peers). With hard labels, KL(q || p) is
    the cross-entropy. ``target`` as in :func:`coupled_loss`.

    >>> parts = interpolated_loss(torch.zeros(2, 4, 3), torch.tensor([0, 1, 2, 0]), 0.5)
    >>> [round(float(v), 4) for v in parts.total]
    [1.0986, 1.0986]
    """
    if logits.dim() not in (3, 4):
        raise ConfigError(f"logits must be [N, B, C] (member axis first) or [K, N, B, C] (a "
                          f"pack of ensembles), got {list(logits.shape)}")
    if isinstance(joint_weight, (int, float)) and not 0.0 <= joint_weight <= 1.0:
        raise ConfigError(f"joint_weight (lambda) must be in [0, 1], got {joint_weight}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    q = _target_distribution(target.to(logits.device), logits, dtype)
    log_p = F.log_softmax(logits.to(dtype), dim=-1)  # [..., N, B, C]
    n_members = logits.shape[-3]
    # log p_ens = log mean_j p_j, computed from log-probabilities (no underflow).
    log_ens = torch.logsumexp(log_p, dim=-3, keepdim=True) - math.log(n_members)
    entropy_q = torch.special.xlogy(q, q).sum(-1)  # sum_c q log q, 0 for hard labels
    task = (entropy_q - (q * log_p).sum(-1)).mean(-1)  # [..., N]
    joint = (entropy_q - (q * log_ens).sum(-1)).mean(-1)  # [..., 1] or [..., N]
    total = joint_weight * joint + (1 - joint_weight) * task
    total = total.expand_as(task)
    return CoupledLoss(total, task, total - task)


ObjectiveLoss = Callable[..., CoupledLoss]
OBJECTIVES: Registry[ObjectiveLoss] = Registry("objective", key="loss.objective")


@OBJECTIVES.register("colearning")
def _colearning(logits: torch.Tensor, target: torch.Tensor, **options: Any) -> CoupledLoss:
    """The paper's Eq. 1 (:func:`coupled_loss`); options: beta, beta_bar, peers,
    kl_reduction, frozen, divergence."""
    return coupled_loss(logits, target, options.get("beta"), beta_bar=options.get("beta_bar"),
                        peers=options.get("peers", "detached"),
                        kl_reduction=options.get("kl_reduction", "batchmean"),
                        frozen=options.get("frozen"),
                        divergence=options.get("divergence", "kl"))


@OBJECTIVES.register("interpolated")
def _interpolated(logits: torch.Tensor, target: torch.Tensor, **options: Any) -> CoupledLoss:
    """lambda * KL(q || p_ens) + (1 - lambda) * KL(q || p_i); option: joint_weight."""
    return interpolated_loss(logits, target, options["joint_weight"])


@OBJECTIVES.register("joint")
def _joint(logits: torch.Tensor, target: torch.Tensor, **options: Any) -> CoupledLoss:
    """KL(q || p_ens): the ensemble's own loss, trained end to end."""
    return interpolated_loss(logits, target, 1.0)


# ensemble=False: meaningful for one network (the others need N >= 2 to mean anything)
@OBJECTIVES.register("distill", ensemble=False)
def _distill(logits: torch.Tensor, target: torch.Tensor, **options: Any) -> CoupledLoss:
    """alpha T^2 KL(p_T || p_i^T) + (1 - alpha) KL(q || p_i) (:func:`distillation_loss`);
    options: soft (the teacher's soft targets), temperature, weight."""
    return distillation_loss(logits, target, options["soft"], options["temperature"],
                             options["weight"])


def distillation_loss(logits: torch.Tensor, target: torch.Tensor, soft: torch.Tensor,
                      temperature: float, weight: float | torch.Tensor) -> CoupledLoss:
    """Knowledge distillation (Hinton et al. 2015) from member logits [N, B, C] ([K, N, B, C]
    for a pack); returns :class:`CoupledLoss` of [N] ([K, N]) tensors.

    For member i with logits z_i, hard labels q and the teacher's softened probabilities
    p_T = ``soft`` (at temperature T = ``temperature``; :func:`softened`):

        total[i] = alpha * T^2 * KL(p_T || softmax(z_i / T)) + (1 - alpha) * KL(q || softmax(z_i))

    batch means, alpha = ``weight`` in [0, 1]; ``task`` is the hard-label term (with its
    1 - alpha), ``coupling`` the soft one (with its alpha T^2). The T^2 keeps the soft
    term's gradient of the size of the hard one's as T grows (its gradient in z scales as
    1 / T^2). alpha = 0 is plain cross-entropy. ``soft``: probabilities [..., B, C], shared
    by the members (or one per member, [..., N, B, C]); ``target`` as in
    :func:`coupled_loss`.

    >>> soft = torch.full((4, 3), 1 / 3)
    >>> parts = distillation_loss(torch.zeros(2, 4, 3), torch.tensor([0, 1, 2, 0]), soft, 4.0, 0.9)
    >>> [round(float(v), 4) for v in parts.total], float(parts.coupling.abs().sum())
    ([0.1099, 0.1099], 0.0)
    """
    if logits.dim() not in (3, 4):
        raise ConfigError(f"logits must be [N, B, C] (member axis first) or [K, N, B, C] (a "
                          f"pack of ensembles), got {list(logits.shape)}")
    if isinstance(temperature, bool) or not temperature > 0:
        raise ConfigError(f"the distillation temperature must be > 0, got {temperature!r}")
    if isinstance(weight, (int, float)) and not 0.0 <= weight <= 1.0:
        raise ConfigError(f"the distillation weight (alpha) must be in [0, 1], got {weight}")
    if not soft.dtype.is_floating_point:
        raise ConfigError(f"soft targets must be probabilities [..., B, C], got {soft.dtype}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    q = _target_distribution(target.to(logits.device), logits, dtype)
    p_teacher = _target_distribution(soft.to(logits.device), logits, dtype)
    z = logits.to(dtype)
    hard = (torch.special.xlogy(q, q) - q * F.log_softmax(z, dim=-1)).sum(-1).mean(-1)
    cold = F.log_softmax(z / temperature, dim=-1)
    soft_kl = (torch.special.xlogy(p_teacher, p_teacher) - p_teacher * cold).sum(-1).mean(-1)
    task = (1 - weight) * hard
    coupling = weight * temperature ** 2 * soft_kl
    return CoupledLoss(task + coupling, task, coupling)


def softened(log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """An ensemble's soft targets [B, C] at temperature T from its member log-probabilities
    [N, B, C]: softmax(log p_ens / T), where p_ens = mean_i p_i (the mean combiner).

    Hinton et al. soften one network's logits; an ensemble's logits are taken to be
    log p_ens (a softmax of them gives p_ens back at T = 1). Computed in float64, returned
    in float32.

    >>> softened(torch.log(torch.tensor([[[0.5, 0.5]], [[0.9, 0.1]]])), 1.0)
    tensor([[0.7000, 0.3000]])
    """
    if log_probs.dim() != 3:
        raise ConfigError(f"member log-probabilities must be [N, B, C], got "
                          f"{list(log_probs.shape)}")
    if isinstance(temperature, bool) or not temperature > 0:
        raise ConfigError(f"the distillation temperature must be > 0, got {temperature!r}")
    wide = log_probs.double()
    log_ens = torch.logsumexp(wide, dim=0) - math.log(wide.shape[0])
    return F.softmax(log_ens / temperature, dim=-1).float()


def objective_loss(objective: str, logits: torch.Tensor, target: torch.Tensor,
                   **options: Any) -> CoupledLoss:
    """The per-member parts of the named objective (see the module docstring); ``options``
    are the objective's own (beta, peers, ... for colearning; joint_weight for
    interpolated). Unknown names list the valid ones.

    >>> objective_loss("joint", torch.zeros(3, 2, 4), torch.tensor([0, 1])).total.shape
    torch.Size([3])
    """
    return OBJECTIVES.get(objective)(logits, target, **options)


class CoupledKLLoss(torch.nn.Module):
    """:func:`coupled_loss` as a loss module: ``loss_fn(logits, target)`` -> a tensor.

    ``reduction``: ``"sum"`` (default) returns the sum over members of each member's loss,
    a scalar whose backward trains every member on its own loss; ``"mean"`` its mean over
    members; ``"none"`` the per-member totals [N]. The parts of the last call are kept in
    ``last`` (a :class:`CoupledLoss`) for logging.

    >>> loss_fn = CoupledKLLoss(beta=-0.2)
    >>> loss = loss_fn(torch.zeros(2, 4, 3, requires_grad=True), torch.tensor([0, 1, 2, 0]))
    >>> loss.shape, loss_fn.last.total.shape
    (torch.Size([]), torch.Size([2]))
    """

    def __init__(self, beta: float | torch.Tensor | np.ndarray | None = None, *,
                 beta_bar: float | None = None, peers: str = "detached",
                 kl_reduction: str = "batchmean", divergence: str = "kl",
                 reduction: str = "sum") -> None:
        super().__init__()
        if reduction not in ("sum", "mean", "none"):
            raise ConfigError(f"unknown reduction {reduction!r}; valid: sum, mean, none")
        if peers not in PEERS:
            raise ConfigError(f"unknown peers mode {peers!r}; valid: {', '.join(PEERS)}")
        if kl_reduction not in KL_REDUCTIONS:
            raise ConfigError(f"unknown kl_reduction {kl_reduction!r}; valid: "
                              f"{', '.join(KL_REDUCTIONS)}")
        DIVERGENCES.get(divergence)  # an unknown name: one line, now
        self.beta, self.beta_bar = beta, beta_bar
        self.peers, self.kl_reduction, self.reduction = peers, kl_reduction, reduction
        self.divergence = divergence
        self.last: CoupledLoss | None = None

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                frozen: torch.Tensor | None = None) -> torch.Tensor:
        self.last = coupled_loss(logits, target, self.beta, beta_bar=self.beta_bar,
                                 peers=self.peers, kl_reduction=self.kl_reduction,
                                 frozen=frozen, divergence=self.divergence)
        total = self.last.total
        return total.sum() if self.reduction == "sum" else (
            total.mean() if self.reduction == "mean" else total)

    def extra_repr(self) -> str:
        coupling = f"beta_bar={self.beta_bar}" if self.beta_bar is not None else \
            f"beta={self.beta}"
        return (f"{coupling}, peers={self.peers!r}, kl_reduction={self.kl_reduction!r}, "
                f"divergence={self.divergence!r}, reduction={self.reduction!r}")
