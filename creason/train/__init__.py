"""Training side of GRPO, no Ray: rollout batches, per-token log-probs, one update, DeepSpeed, checkpoints.

`batch` and `policy` and `step` are pure torch; `engine` and `checkpoint` import DeepSpeed lazily.
"""

from creason.train.batch import RolloutBatch, collate, micro_batches, shard
from creason.train.policy import sequence_logprobs
from creason.train.step import TorchEngine, compute_ref_logprobs, grpo_update

__all__ = [
    "RolloutBatch",
    "TorchEngine",
    "collate",
    "compute_ref_logprobs",
    "grpo_update",
    "micro_batches",
    "sequence_logprobs",
    "shard",
]
