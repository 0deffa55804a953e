"""One step's rollouts: prompts -> completions -> rewards -> advantages (on the trainer's rank 0).

No Ray here: the `generate` callable hides where completions come from (vLLM actors in the
loop, anything in tests).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from creason.algo import (
    apply_truncation,
    compute_advantages,
    dynamic_sampling_mask,
    finite_rewards,
    zero_variance_groups,
)
from creason.config import AlgorithmConfig
from creason.data.questions import LETTERS
from creason.rewards import boxed_letter_reward, extract_boxed_letter, load_reward, score_completions
from creason.rollout.types import Completion
from creason.contracts import Question


@dataclass
class ScoredRollouts:
    """Flat lists over kept completions (prompt-major), ready to collate into a training batch."""

    prompt_token_ids: list[list[int]]
    response_token_ids: list[list[int]]
    sampling_logprobs: list[list[float]]
    advantages: list[float]
    loss_mask_off: list[bool]  # completions left out of the loss (truncated, with truncation=mask)
    metrics: dict = field(default_factory=dict)


def load_rewards(cfg: AlgorithmConfig) -> list[tuple[Callable, float]]:
    return [(load_reward(term.path), term.weight) for term in cfg.rewards]


def letter_shares(texts: list[str]) -> dict[str, float]:
    """Share of completions whose first `\\boxed{}` holds each letter (`letter_A` ...) or none
    (`letter_none`): where the policy's answers go, step by step.

    >>> letter_shares(["\\\\boxed{A}", "\\\\boxed{A}", "B", "\\\\boxed{C}"])
    {'letter_A': 0.5, 'letter_B': 0.0, 'letter_C': 0.25, 'letter_D': 0.0, 'letter_E': 0.0, 'letter_none': 0.25}
    """
    found = [extract_boxed_letter(t) for t in texts]
    return {f"letter_{x or 'none'}": sum(f == x for f in found) / len(found) for x in [*LETTERS, None]}


def score_rollouts(
    questions: list[Question],
    completions: list[list[Completion]],
    rewards: list[tuple[Callable, float]],
    cfg: AlgorithmConfig,
) -> ScoredRollouts:
    """Rewards, truncation handling, group-relative advantages and zero-variance filtering."""
    start = time.perf_counter()
    group = len(completions[0])
    flat = [c for per_prompt in completions for c in per_prompt]
    truth = [q.ground_truth for q in questions for _ in range(group)]
    scores, errors = score_completions(rewards, [c.text for c in flat], truth)
    scores, nonfinite = finite_rewards(torch.tensor(scores, dtype=torch.float32))  # NaN/inf scored 0
    truncated = torch.tensor([c.finish_reason == "length" for c in flat])
    r, keep_mask = apply_truncation(scores, torch.ones(len(flat), 1), truncated,
                                    cfg.truncation, cfg.truncation_penalty)  # (B,), (B, 1): one mask per completion
    r = r.view(len(questions), group)
    advantages = compute_advantages(r, cfg.advantage, eps=cfg.advantage_eps)  # (P, G)
    zero_var = zero_variance_groups(r)
    keep_groups = dynamic_sampling_mask(r) if cfg.filter_zero_variance else torch.ones(len(questions), dtype=torch.bool)
    kept = [i for i in range(len(flat)) if keep_groups[i // group]]
    correct = torch.tensor(boxed_letter_reward([c.text for c in flat], truth))  # the study's accuracy, whatever the rewards
    lengths = torch.tensor([len(c.token_ids) for c in flat], dtype=torch.float32)
    metrics = {
        "reward_mean": r.mean().item(),
        "reward_std": r.std().item() if r.numel() > 1 else 0.0,
        "accuracy": correct.mean().item(),
        "zero_variance_fraction": zero_var.float().mean().item(),
        "truncated_fraction": truncated.float().mean().item(),
        "completion_length": lengths.mean().item(),
        "reward_errors": len(errors),
        "nonfinite_rewards": int(nonfinite.sum()),
        **letter_shares([c.text for c in flat]),
        "score_seconds": time.perf_counter() - start,
    }
    return ScoredRollouts(
        prompt_token_ids=[flat[i].prompt_token_ids for i in kept],
        response_token_ids=[flat[i].token_ids for i in kept],
        sampling_logprobs=[flat[i].logprobs for i in kept],
        advantages=[advantages.view(-1)[i].item() for i in kept],
        loss_mask_off=[bool(keep_mask.view(-1)[i] == 0) for i in kept],
        metrics=metrics,
    )
