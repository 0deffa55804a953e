"""Pure-torch RL math (no Ray): advantages, policy losses, KL, and per-token log-probs."""

from creason.algo.advantages import (
    ADVANTAGE_ESTIMATORS,
    compute_advantages,
    dynamic_sampling_mask,
    zero_variance_groups,
)
from creason.algo.kl import KL_ESTIMATORS, kl_estimate, mix_reference, should_refresh_reference
from creason.algo.logprobs import entropy_from_logits, token_logprobs
from creason.algo.losses import AGGREGATIONS, TRUNCATION_MODES, aggregate, apply_truncation, clipped_policy_loss

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "TRUNCATION_MODES",
    "aggregate",
    "apply_truncation",
    "clipped_policy_loss",
    "compute_advantages",
    "dynamic_sampling_mask",
    "entropy_from_logits",
    "kl_estimate",
    "mix_reference",
    "should_refresh_reference",
    "token_logprobs",
    "zero_variance_groups",
]
