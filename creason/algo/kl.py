"""KL estimators between the policy and a reference model, and reference-model refreshing.

The estimators follow Schulman, "Approximating KL Divergence" (2020): with tokens sampled from the
policy, and log_ratio = ref_logp - logp per token, each is a per-token estimate of KL(policy || ref):

- k1 = -log_ratio                      unbiased, high variance, can be negative
- k2 = log_ratio ** 2 / 2               biased, low variance, >= 0
- k3 = exp(log_ratio) - log_ratio - 1   unbiased, low variance, >= 0 (GRPO's choice)

k3 is clamped as verl's `kl_penalty("low_var_kl")` clamps it: the log-ratio to [-20, 20] before
exp (exp(20) = 4.9e8, no overflow), the estimate to [-10, 10] (its gradient is 0 beyond).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor

KLFn = Callable[[Tensor, Tensor], Tensor]

#: KL estimators by name: fn(logp (B, T), ref_logp (B, T)) -> per-token KL (B, T).
KL_ESTIMATORS: dict[str, KLFn] = {}


def register_kl(name: str) -> Callable[[KLFn], KLFn]:
    """Decorator adding an estimator to `KL_ESTIMATORS`; a duplicate name is an error."""

    def deco(fn: KLFn) -> KLFn:
        if name in KL_ESTIMATORS:
            raise ValueError(f"KL estimator {name!r} is already registered")
        KL_ESTIMATORS[name] = fn
        return fn

    return deco


@register_kl("k1")
def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """logp - ref_logp per token. (B, T), (B, T) -> (B, T)."""
    return logp - ref_logp


@register_kl("k2")
def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """(logp - ref_logp) ** 2 / 2 per token. (B, T), (B, T) -> (B, T)."""
    return 0.5 * (logp - ref_logp) ** 2


K3_LOG_RATIO_CLAMP = 20.0  # verl's bound on ref - logp before exp
K3_CLAMP = 10.0  # verl's bound on the estimate


@register_kl("k3")
def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """exp(ref - logp) - (ref - logp) - 1 per token, clamped as verl's. (B, T), (B, T) -> (B, T).

    >>> kl_k3(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 30.0]))  # exp(20) - 20 - 1 -> 10
    tensor([ 0., 10.])
    """
    log_ratio = (ref_logp - logp).clamp(-K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP)
    return (torch.exp(log_ratio) - log_ratio - 1).clamp(-K3_CLAMP, K3_CLAMP)


def kl_estimate(logp: Tensor, ref_logp: Tensor, name: str = "k3") -> Tensor:
    """Per-token KL (B, T) with the estimator `name` ("k1", "k2", "k3")."""
    if name not in KL_ESTIMATORS:
        raise KeyError(f"unknown KL estimator {name!r}; known: {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[name](logp, ref_logp)


@torch.no_grad()
def mix_reference(
    ref_state: Mapping[str, Tensor], policy_state: Mapping[str, Tensor], alpha: float, inplace: bool = False
) -> dict[str, Tensor]:
    """ref <- alpha * policy + (1 - alpha) * ref for each floating tensor (TR-DPO style soft update).

    alpha = 1 copies the policy, alpha = 0 keeps the reference. Non-floating tensors (integer
    buffers) are kept from `ref_state`. With `inplace`, the tensors of `ref_state` are updated and
    returned in a new dict; otherwise `ref_state` is untouched.

    >>> mix_reference({"w": torch.tensor([0.0, 4.0])}, {"w": torch.tensor([2.0, 0.0])}, 0.25)
    {'w': tensor([0.5000, 3.0000])}
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if ref_state.keys() != policy_state.keys():
        diff = sorted(set(ref_state) ^ set(policy_state))
        raise KeyError(f"reference and policy state dicts differ in keys: {diff[:5]}")
    out = {}
    for key, ref in ref_state.items():
        pol = policy_state[key]
        if pol.shape != ref.shape:
            raise ValueError(f"{key}: reference shape {tuple(ref.shape)} != policy shape {tuple(pol.shape)}")
        if not ref.is_floating_point():
            out[key] = ref
            continue
        target = ref if inplace else ref.clone()
        out[key] = target.lerp_(pol.to(device=ref.device, dtype=ref.dtype), alpha)
    return out


def should_refresh_reference(step: int, every: int) -> bool:
    """True when the reference should be mixed/refreshed after `step` completed optimizer steps.

    Every `every` steps (step > 0 and step % every == 0); `every` <= 0 means never.

    >>> [s for s in range(7) if should_refresh_reference(s, 3)]
    [3, 6]
    """
    return every > 0 and step > 0 and step % every == 0
