"""Pure-torch RL math (no Ray): advantages, policy losses, KL, and per-token log-probs."""

from creason.algo.advantages import (
    ADVANTAGE_ESTIMATORS,
    balanced_answer_weights,
    compute_advantages,
    dynamic_sampling_mask,
    finite_rewards,
    zero_variance_groups,
)
from creason.algo.kl import KL_ESTIMATORS, kl_estimate, mix_reference, should_refresh_reference
from creason.algo.logprobs import entropy_from_logits, token_logprobs
from creason.algo.losses import (
    AGGREGATIONS,
    TRUNCATION_MODES,
    LossUnits,
    aggregate,
    apply_truncation,
    clipped_policy_loss,
    truncated_is_weights,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "LossUnits",
    "TRUNCATION_MODES",
    "aggregate",
    "apply_truncation",
    "balanced_answer_weights",
    "clipped_policy_loss",
    "compute_advantages",
    "dynamic_sampling_mask",
    "entropy_from_logits",
    "finite_rewards",
    "kl_estimate",
    "mix_reference",
    "should_refresh_reference",
    "token_logprobs",
    "truncated_is_weights",
    "zero_variance_groups",
]
