"""The clipped GRPO/PPO policy loss with clip-higher and dual-clip, an optional KL penalty,
truncated importance sampling, and loss aggregation over the global batch.

Per token, with ratio = exp(logp - old_logp) and the sequence's advantage A broadcast to its tokens:

    pg_t   = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)
    pg_t   = min(pg_t, -c * A)              where A < 0, with dual-clip (clip_ratio_c = c > 1)
    loss_t = w_t * pg_t + beta * kl_t       w_t: truncated importance weight (1 without it)

(Schulman et al. 2017, PPO; Shao et al. 2024, GRPO; separate bounds: Yu et al. 2025, DAPO
"clip-higher", where eps_high = 0.28 lets unlikely tokens grow; dual-clip: Ye et al. 2020,
arXiv:1912.09729, verl's `clip_ratio_c`; truncated importance sampling: Yao et al. 2025, "Your
efficient RL framework secretly brings you off-policy RL training"). kl_t is a per-token
estimator of KL(policy || ref) from `creason.algo.kl` (k3 by default).

Aggregation (`AGGREGATIONS`, verl's `agg_loss` mode names) reduces per-token values over the
*global* batch: every micro-batch of every data-parallel rank divides by the same global counts
(`LossUnits`), so the partial losses add up to the loss of the whole batch, whatever its split.
With l_it the value of token t of sequence i, n_i its loss tokens, N = sum_i n_i, S the number of
sequences with n_i > 0, and L a constant (the maximum completion length):

| mode                      | loss                          | verl `agg_loss` | TRL `loss_type`          |
|---------------------------|-------------------------------|-----------------|--------------------------|
| `token-mean`              | sum_it l_it / N               | same name       | "dapo" ("bnpo" on 1 GPU) |
| `seq-mean-token-mean`     | sum_i (sum_t l_it / n_i) / S  | same name       | "grpo"                   |
| `seq-mean-token-sum`      | sum_it l_it / S               | same name       | (none)                   |
| `seq-mean-token-sum-norm` | sum_it l_it / (S * L)         | same name (*)   | "dr_grpo"                |

(*) verl divides the sum by L only and leaves the 1/S to its mini-batch loss scale; TRL's
"dr_grpo" divides by (rows * max_completion_length) and counts rows that have no loss token, which
we leave out of S as verl's sequence modes do (they have nothing to add to the sum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from creason.algo.kl import kl_estimate


@dataclass(frozen=True)
class LossUnits:
    """The denominators of an aggregated loss: counts over the global batch (all micro-batches of all
    data-parallel ranks), so each part divides by the same numbers and the parts add up."""

    tokens: float  # loss tokens (response tokens with mask 1)
    sequences: float  # sequences with at least one loss token
    norm_tokens: float  # Dr. GRPO's constant L (the maximum completion length) for `seq-mean-token-sum-norm`

    @classmethod
    def of(cls, mask: Tensor, norm_tokens: float | None = None) -> LossUnits:
        """The units of one (B, T) mask; norm_tokens None: T (verl's fallback when no constant is set).

        >>> LossUnits.of(torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]]))
        LossUnits(tokens=3.0, sequences=2.0, norm_tokens=3.0)
        """
        m = mask.bool()
        norm = float(mask.shape[-1] if norm_tokens is None else norm_tokens)
        return cls(float(m.sum()), float((m.sum(-1) > 0).sum()), norm)


AggFn = Callable[[Tensor, Tensor, LossUnits], Tensor]

#: Loss aggregations by name: fn(values (B, T), mask (B, T) bool, units) -> scalar, these rows' share of the loss.
AGGREGATIONS: dict[str, AggFn] = {}


def register_aggregation(name: str) -> Callable[[AggFn], AggFn]:
    """Decorator adding an aggregation to `AGGREGATIONS`; a duplicate name is an error."""

    def deco(fn: AggFn) -> AggFn:
        if name in AGGREGATIONS:
            raise ValueError(f"aggregation {name!r} is already registered")
        AGGREGATIONS[name] = fn
        return fn

    return deco


def _masked_row_sums(values: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, values, 0.0).sum(-1)  # (B,); where(), not *, so padding garbage (inf) stays out


@register_aggregation("token-mean")
def token_mean(values: Tensor, mask: Tensor, units: LossUnits) -> Tensor:
    """sum of l_it / N: every token weighs the same (DAPO; TRL "dapo"). (B, T), (B, T) -> scalar.

    >>> m = torch.tensor([[True, True], [True, False]])
    >>> token_mean(torch.tensor([[1.0, 1.0], [4.0, 0.0]]), m, LossUnits.of(m))  # 6 / 3
    tensor(2.)
    """
    return _masked_row_sums(values, mask).sum() / max(units.tokens, 1.0)


@register_aggregation("seq-mean-token-mean")
def seq_mean_token_mean(values: Tensor, mask: Tensor, units: LossUnits) -> Tensor:
    """Mean over each sequence's tokens, then over the S sequences (original GRPO; TRL "grpo"). -> scalar.

    >>> m = torch.tensor([[True, True], [True, False]])
    >>> seq_mean_token_mean(torch.tensor([[1.0, 1.0], [4.0, 0.0]]), m, LossUnits.of(m))  # (1 + 4) / 2
    tensor(2.5000)
    """
    per_seq = _masked_row_sums(values, mask) / mask.sum(-1).clamp(min=1)
    return per_seq.sum() / max(units.sequences, 1.0)


@register_aggregation("seq-mean-token-sum")
def seq_mean_token_sum(values: Tensor, mask: Tensor, units: LossUnits) -> Tensor:
    """Sum over each sequence's tokens, then the mean over the S sequences. -> scalar.

    >>> m = torch.tensor([[True, True], [True, False]])
    >>> seq_mean_token_sum(torch.tensor([[1.0, 1.0], [4.0, 0.0]]), m, LossUnits.of(m))  # (2 + 4) / 2
    tensor(3.)
    """
    return _masked_row_sums(values, mask).sum() / max(units.sequences, 1.0)


@register_aggregation("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(values: Tensor, mask: Tensor, units: LossUnits) -> Tensor:
    """Sum over each sequence's tokens / the constant L, then the mean over the S sequences (Liu et al.
    2025, Dr. GRPO: no length bias; TRL "dr_grpo"). -> scalar.

    >>> m = torch.tensor([[True, True], [True, False]])
    >>> seq_mean_token_sum_norm(torch.tensor([[1.0, 1.0], [4.0, 0.0]]), m, LossUnits.of(m, 4))  # 6 / (2 * 4)
    tensor(0.7500)
    """
    return _masked_row_sums(values, mask).sum() / (max(units.sequences, 1.0) * units.norm_tokens)


def aggregate(values: Tensor, mask: Tensor, mode: str = "token-mean", units: LossUnits | None = None) -> Tensor:
    """Reduce per-token values (B, T) under mask (B, T) to a scalar with the aggregation `mode`.

    units: the global batch's counts when these rows are one part of it; None: this batch's own
    (`LossUnits.of(mask)`), so the result is the loss of this batch alone.
    """
    if mode not in AGGREGATIONS:
        raise KeyError(f"unknown loss aggregation {mode!r}; known: {sorted(AGGREGATIONS)}")
    return AGGREGATIONS[mode](values, mask.bool(), LossUnits.of(mask) if units is None else units)


def truncated_is_weights(logp: Tensor, sampler_logp: Tensor, cap: float) -> tuple[Tensor, Tensor]:
    """Truncated importance weights min(pi_trainer / pi_sampler, cap) per token, detached, and where
    the cap bit. (B, T), (B, T) -> (B, T) float, (B, T) bool.

    logp: the trainer's log-probs before the update; sampler_logp: the sampler's (vLLM's) of the same
    tokens. The weight corrects the policy gradient for sampling with a slightly different policy
    (Yao et al. 2025; verl's token-level `rollout_is`, TRL's `vllm_importance_sampling_mode="token_truncate"`).

    >>> w, cut = truncated_is_weights(torch.tensor([[0.0, 0.0]]), torch.tensor([[-1.0, math.log(2.0)]]), 2.0)
    >>> w, cut  # exp(1) = 2.718 -> 2; exp(-ln 2) = 0.5
    (tensor([[2.0000, 0.5000]]), tensor([[ True, False]]))
    """
    if not cap > 0:
        raise ValueError(f"the importance-weight cap must be > 0, got {cap}")
    log_w = (logp - sampler_logp).detach()
    log_cap = math.log(cap)
    return torch.exp(log_w.clamp(max=log_cap)), log_w > log_cap


def clipped_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    agg: str = "token-mean",
    kl_estimator: str = "k3",
    units: LossUnits | None = None,
    clip_ratio_c: float | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped policy loss (scalar) and detached scalar metrics.

    logp, old_logp, ref_logp: (B, T) log-probs of the sampled tokens under the current, sampling
    and reference policies; advantages: (B,) per sequence (broadcast to tokens) or (B, T);
    mask: (B, T), 1 on response tokens. The log-ratio is clamped to [-20, 20] before exp.
    With beta == 0 no reference is needed; with ref_logp given, the KL is reported either way.
    units: the global batch's counts when this batch is one part of it (see `aggregate`); the loss
    and every metric are then this part's share, and the parts' values add up to the whole's.
    clip_ratio_c: dual-clip bound (> 1) for tokens with A < 0, None: off (verl's `compute_policy_loss`
    applies it always, with 3.0). is_weights: (B, T) detached weights on the policy-gradient term
    (`truncated_is_weights`), not on the KL term.

    Metrics: "pg_loss" and "kl" (the two terms, aggregated like the loss), and token means over the
    mask: "clip_frac_low" (ratio < 1 - eps_low, A < 0), "clip_frac_high" (ratio > 1 + eps_high,
    A > 0), "clip_frac_dual" (A < 0 and the dual-clip bound bites; with clip_ratio_c), "ratio_mean".

    >>> loss, m = clipped_policy_loss(torch.tensor([[0.0]]), torch.tensor([[0.0]]),
    ...                               torch.tensor([2.0]), torch.tensor([[1]]))
    >>> loss, m["ratio_mean"]
    (tensor(-2.), tensor(1.))
    """
    if beta != 0.0 and ref_logp is None:
        raise ValueError("beta != 0 needs ref_logp")
    if clip_ratio_c is not None and not clip_ratio_c > 1.0:
        raise ValueError(f"clip_ratio_c must be > 1, got {clip_ratio_c}")
    units = LossUnits.of(mask) if units is None else units
    adv = advantages.unsqueeze(-1) if advantages.dim() == 1 else advantages  # (B, 1) or (B, T)
    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))  # (B, T)
    clipped_ratio = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    per_token = torch.max(-ratio * adv, -clipped_ratio * adv)  # (B, T) = -min(ratio * A, clipped * A)
    if clip_ratio_c is not None:
        dual = torch.min(per_token, -clip_ratio_c * adv)  # caps the loss at c * |A| where A < 0
        dual_bites = (adv < 0) & (per_token > -clip_ratio_c * adv)
        per_token = torch.where(adv < 0, dual, per_token)
    if is_weights is not None:
        per_token = per_token * is_weights.detach()
    pg_loss = aggregate(per_token, mask, agg, units)
    loss = pg_loss
    with torch.no_grad():
        def mean(x: Tensor) -> Tensor:  # token mean over the global batch (this part's share)
            return token_mean(x.float().expand_as(mask), mask.bool(), units)

        metrics = {
            "pg_loss": pg_loss.detach(),
            "clip_frac_low": mean((ratio < 1.0 - eps_low) & (adv < 0)),
            "clip_frac_high": mean((ratio > 1.0 + eps_high) & (adv > 0)),
            "ratio_mean": mean(ratio),
        }
        if clip_ratio_c is not None:
            metrics["clip_frac_dual"] = mean(dual_bites)
    if ref_logp is not None:
        kl = aggregate(kl_estimate(logp, ref_logp, kl_estimator), mask, agg, units)
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
