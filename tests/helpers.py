"""Test helpers: a tiny raw registry, and the question build run in-process (no Ray)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from creason.config import QuestionsConfig
from creason.data.dictionary import DataDictionary
from creason.data.mutual_info import cardinalities, discretize, joint_counts, mi_variables, normalized_mi
from creason.data.prepare import SPLIT, prepare_table, shown_variables
from creason.data.questions import QuestionPlan, build_questions, make_plan
from creason.data.stats import compute_stats


def tiny_registry(n: int, seed: int = 0, id_prefix: str = "P") -> pa.Table:
    """A raw registry for `tiny_dictionary`: lactate_copy duplicates lactate (a planted leak)."""
    rng = np.random.default_rng(seed)
    lactate = np.round(rng.gamma(2.0, 1.2, n), 1)
    onset = np.datetime64("2021-03-04T10:00:00") + rng.integers(0, 10**7, n).astype("timedelta64[s]")
    shock = np.where(lactate > 3, "Yes", "No")
    return pa.table({
        "pid": [f"{id_prefix}{i:07d}" for i in range(n)],
        "onset": pa.array(onset, type=pa.timestamp("s")),
        "admitted": pa.array(onset - rng.integers(0, 10**5, n).astype("timedelta64[s]"), type=pa.timestamp("s")),
        "sex": rng.choice(["Female", "Male"], n),
        "site": rng.choice(["Lung", "Urine", "Abdomen", "Skin", "Other"], n, p=[0.4, 0.3, 0.15, 0.1, 0.05]),
        "lactate": pa.array(lactate, mask=rng.random(n) < 0.1),
        "lactate_copy": lactate,
        "gcs": np.clip(np.round(15 - rng.exponential(2.0, n)), 3, 15),
        "shock": shock,
        "death": np.where(rng.random(n) < 0.1 + 0.3 * (shock == "Yes"), "Yes", "No"),
    })


def plan_in_process(prepared: pa.Table, dictionary: DataDictionary, config: QuestionsConfig, seed: int = 0) -> QuestionPlan:
    """The pipeline's statistics + MI + plan, on one table."""
    shown = shown_variables(dictionary, config.include_free_text)
    train = prepared.filter(pc.equal(prepared.column(SPLIT), "train"))
    stats = compute_stats(train, shown, config.mixture_components, config.mi_bins)
    mi_vars = mi_variables(shown, stats)
    cards = cardinalities(mi_vars, stats)
    nmi = normalized_mi(joint_counts(discretize(train, mi_vars, stats), cards), cards)
    return make_plan(shown, stats, nmi, [v.name for v in mi_vars], config, seed)


def questions_in_process(raw: pa.Table, dictionary: DataDictionary, config: QuestionsConfig, seed: int = 0) -> pa.Table:
    s = config.split
    prepared = prepare_table(raw, dictionary, seed, (s.train, s.validation, s.test), config.include_free_text)
    return build_questions(prepared, plan_in_process(prepared, dictionary, config, seed))


def column(questions: pa.Table, field: str) -> list:
    """A field of `extra_info` (or `ground_truth`) as a Python list."""
    if field == "ground_truth":
        return questions.column("reward_model").combine_chunks().field("ground_truth").to_pylist()
    return questions.column("extra_info").combine_chunks().field(field).to_pylist()


def user_prompts(questions: pa.Table) -> list[str]:
    return [p[1]["content"] for p in questions.column("prompt").to_pylist()]


def even_length_reward(completions: list, ground_truth: list, **kwargs) -> list[float]:
    """Test-only reward with variance for a random model: 1 when the completion has an even
    number of characters. Lets an end-to-end test see non-zero advantages and real updates."""
    return [float(len(c) % 2 == 0) for c in completions]
