"""The clipped GRPO/PPO policy loss with clip-higher, an optional KL penalty, and loss aggregation.

Per token, with ratio = exp(logp - old_logp) and the sequence's advantage A broadcast to its tokens:

    loss_t = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) + beta * kl_t

(Schulman et al. 2017, PPO; Shao et al. 2024, GRPO; separate bounds: Yu et al. 2025, DAPO
"clip-higher", where eps_high = 0.28 lets unlikely tokens grow). kl_t is a per-token estimator of
KL(policy || ref) from `creason.algo.kl` (k3 by default). Per-token values are reduced with an
aggregation registered by name in `AGGREGATIONS`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from creason.algo.kl import kl_estimate

AggFn = Callable[[Tensor, Tensor], Tensor]

#: Loss aggregations by name: fn(values (B, T), mask (B, T)) -> scalar.
AGGREGATIONS: dict[str, AggFn] = {}


def register_aggregation(name: str) -> Callable[[AggFn], AggFn]:
    """Decorator adding an aggregation to `AGGREGATIONS`; a duplicate name is an error."""

    def deco(fn: AggFn) -> AggFn:
        if name in AGGREGATIONS:
            raise ValueError(f"aggregation {name!r} is already registered")
        AGGREGATIONS[name] = fn
        return fn

    return deco


@register_aggregation("token_mean")
def token_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Sum over all unmasked tokens of the batch / their number (DAPO). (B, T), (B, T) -> scalar.

    >>> token_mean(torch.tensor([[1.0, 1.0], [4.0, 0.0]]), torch.tensor([[1, 1], [1, 0]]))
    tensor(2.)
    """
    m = mask.bool()
    return torch.where(m, values, 0.0).sum() / m.sum().clamp(min=1)


@register_aggregation("seq_mean_token_mean")
def seq_mean_token_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the tokens of each sequence, then over sequences (original GRPO). -> scalar.

    Sequences with no unmasked token are left out of the mean over sequences.

    >>> seq_mean_token_mean(torch.tensor([[1.0, 1.0], [4.0, 0.0]]), torch.tensor([[1, 1], [1, 0]]))
    tensor(2.5000)
    """
    m = mask.bool()
    count = m.sum(-1)  # (B,)
    per_seq = torch.where(m, values, 0.0).sum(-1) / count.clamp(min=1)
    return per_seq.sum() / (count > 0).sum().clamp(min=1)


def aggregate(values: Tensor, mask: Tensor, mode: str = "token_mean") -> Tensor:
    """Reduce per-token values (B, T) under mask (B, T) to a scalar with the aggregation `mode`."""
    if mode not in AGGREGATIONS:
        raise KeyError(f"unknown loss aggregation {mode!r}; known: {sorted(AGGREGATIONS)}")
    return AGGREGATIONS[mode](values, mask)


def clipped_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    agg: str = "token_mean",
    kl_estimator: str = "k3",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped policy loss (scalar) and detached scalar metrics.

    logp, old_logp, ref_logp: (B, T) log-probs of the sampled tokens under the current, sampling
    and reference policies; advantages: (B,) per sequence (broadcast to tokens) or (B, T);
    mask: (B, T), 1 on response tokens. The log-ratio is clamped to [-20, 20] before exp.
    With beta == 0 no reference is needed; with ref_logp given, the KL is reported either way.

    Metrics (token means over the mask): "pg_loss", "clip_frac_low" (ratio < 1 - eps_low, A < 0),
    "clip_frac_high" (ratio > 1 + eps_high, A > 0), "ratio_mean", and "kl" when ref_logp is given.

    >>> loss, m = clipped_policy_loss(torch.tensor([[0.0]]), torch.tensor([[0.0]]),
    ...                               torch.tensor([2.0]), torch.tensor([[1]]))
    >>> loss, m["ratio_mean"]
    (tensor(-2.), tensor(1.))
    """
    if beta != 0.0 and ref_logp is None:
        raise ValueError("beta != 0 needs ref_logp")
    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages  # (B, 1) or (B, T)
    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))  # (B, T)
    clipped_ratio = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    per_token = -torch.min(ratio * adv, clipped_ratio * adv)  # (B, T)
    pg_loss = aggregate(per_token, mask, agg)
    loss = pg_loss
    with torch.no_grad():
        metrics = {
            "pg_loss": pg_loss.detach(),
            "clip_frac_low": token_mean(((ratio < 1.0 - eps_low) & (adv < 0)).float(), mask),
            "clip_frac_high": token_mean(((ratio > 1.0 + eps_high) & (adv > 0)).float(), mask),
            "ratio_mean": token_mean(ratio, mask),
        }
    if ref_logp is not None:
        kl = aggregate(kl_estimate(logp, ref_logp, kl_estimator), mask, agg)
        metrics["kl"] = kl.detach()
        if beta != 0.0:
            loss = loss + beta * kl
    return loss, metrics


def _truncation_none(rewards: Tensor, mask: Tensor, truncated: Tensor, penalty: float) -> tuple[Tensor, Tensor]:
    return rewards, mask


def _truncation_mask(rewards: Tensor, mask: Tensor, truncated: Tensor, penalty: float) -> tuple[Tensor, Tensor]:
    return rewards, torch.where(truncated.unsqueeze(-1), torch.zeros_like(mask), mask)


def _truncation_penalty(rewards: Tensor, mask: Tensor, truncated: Tensor, penalty: float) -> tuple[Tensor, Tensor]:
    return torch.where(truncated, torch.full_like(rewards, penalty), rewards), mask


#: How completions cut at the length limit are handled, by name.
TRUNCATION_MODES = {"none": _truncation_none, "mask": _truncation_mask, "penalty": _truncation_penalty}


def apply_truncation(
    rewards: Tensor, mask: Tensor, truncated: Tensor, mode: str = "mask", penalty: float = 0.0
) -> tuple[Tensor, Tensor]:
    """New (rewards (B,), mask (B, T)) for completions cut at the length limit (truncated (B,) bool).

    "mask": their tokens get mask 0, so they leave the loss (DAPO overlong filtering); their
    rewards still count in group statistics. "penalty": their reward becomes `penalty`; apply it
    before computing advantages. "none": unchanged. Inputs are not modified.

    >>> apply_truncation(torch.tensor([1.0, 1.0]), torch.ones(2, 2), torch.tensor([False, True]), "penalty", -1.0)
    (tensor([ 1., -1.]), tensor([[1., 1.],
            [1., 1.]]))
    """
    if mode not in TRUNCATION_MODES:
        raise KeyError(f"unknown truncation mode {mode!r}; known: {sorted(TRUNCATION_MODES)}")
    return TRUNCATION_MODES[mode](rewards, mask, truncated.bool(), penalty)
