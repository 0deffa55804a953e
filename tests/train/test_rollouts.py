"""Scoring a step's rollouts: non-finite rewards are scored 0 and counted, never a NaN advantage."""

import math

import pytest

from creason.config import AlgorithmConfig
from creason.contracts import Question
from creason.rollout.types import Completion
from creason.train.rollouts import score_rollouts


def shaky_reward(completions, **kwargs):
    """1 for "good", NaN for "nan", inf for "inf", else 0."""
    return [{"good": 1.0, "nan": math.nan, "inf": math.inf}.get(c, 0.0) for c in completions]


def question(question_id: str) -> Question:
    return Question(question_id=question_id, patient="0" * 16, split="train", question_kind="outcome", variable="death",
                    display_name="Death", section="Outcomes", variable_kind="categorical", options=["W", "X", "Y", "Z"],
                    answer_text="W", answer_value=None, messages=[], ground_truth="A", data_source="test")


def completion(i: int, text: str) -> Completion:
    return Completion(prompt_index=i, token_ids=[7, 8], prompt_token_ids=[1, 2], text=text, logprobs=[-0.5, -0.5],
                      finish_reason="stop")


def test_non_finite_rewards_scored_zero_and_counted():
    questions = [question(f"q{i}") for i in range(2)]
    # group 0: [1, NaN -> 0, 0, 1]: mean 0.5, unbiased std 0.577350 -> +-0.866025 (eps 1e-6: 0.866024)
    # group 1: [inf -> 0, 0, 0, 0]: all equal -> 0
    texts = [["good", "nan", "bad", "good"], ["inf", "bad", "bad", "bad"]]
    completions = [[completion(i, t) for t in group] for i, group in enumerate(texts)]
    scored = score_rollouts(questions, completions, [(shaky_reward, 1.0)], AlgorithmConfig())
    assert scored.metrics["nonfinite_rewards"] == 2
    assert scored.metrics["reward_mean"] == pytest.approx(2 / 8)
    assert scored.advantages == pytest.approx([0.866024, -0.866024, -0.866024, 0.866024, 0, 0, 0, 0], abs=1e-6)


def test_advantage_eps_is_read_from_the_config():
    questions = [question("q")]
    completions = [[completion(0, t) for t in ["good", "bad", "bad", "good"]]]
    # 0.5 / (0.577350 + 0.0001) = 0.865875
    scored = score_rollouts(questions, completions, [(shaky_reward, 1.0)], AlgorithmConfig(advantage_eps=1e-4))
    assert scored.advantages[0] == pytest.approx(0.865875, abs=1e-6)
