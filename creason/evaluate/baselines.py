"""Baselines asked the same questions as the models: chance, and the training split's majority
answer per variable. Pure functions of the questions (and train counts)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from creason.contracts import Question


def chance_levels(questions: list[Question]) -> np.ndarray:
    """1 / number of options per question (n,): a uniform guess's probability of being right.
    Its mean is the expected accuracy of random guessing."""
    return np.array([1.0 / len(q.options) for q in questions])


def random_letters(questions: list[Question], seed: int) -> list[str]:
    """One seeded uniform draw among each question's valid letters."""
    rng = np.random.default_rng(seed)
    return [q.letters[int(rng.integers(len(q.letters)))] for q in questions]


def majority_texts(train_counts: dict[str, Counter]) -> dict[str, str]:
    """The most frequent answer text per variable (ties: the text that sorts first).

    >>> majority_texts({"sex": Counter({"Male": 3, "Female": 3}), "shock": Counter({"No": 5, "Yes": 2})})
    {'sex': 'Female', 'shock': 'No'}
    """
    return {var: min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0] for var, counts in train_counts.items()}


def majority_letters(questions: list[Question], majority: dict[str, str], seed: int) -> tuple[list[str], np.ndarray]:
    """Per question: the letter of its variable's training majority answer when that text is an
    option, else a seeded random valid letter. Also returns which questions had it as an option
    (bool, (n,)), so a reader knows how often the baseline fell back to chance."""
    rng = np.random.default_rng(seed)
    letters, hit = [], []
    for q in questions:
        text = majority.get(q.variable)
        if text is not None and text in q.options:
            letters.append(q.letters[q.options.index(text)])
            hit.append(True)
        else:
            letters.append(q.letters[int(rng.integers(len(q.letters)))])
            hit.append(False)
    return letters, np.array(hit, dtype=bool)
