"""From answers to numbers: per-question correctness of every system (models and baselines),
accuracies with bootstrap intervals overall and per breakdown, and paired comparisons.
Pure: no Ray, no vLLM, no files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from typing import Callable

import numpy as np

from creason.contracts import Question
from creason.data.questions import record_values
from creason.evaluate.baselines import chance_levels, majority_letters, majority_texts, random_letters
from creason.evaluate.concentration import answer_concentration, truth_concentration
from creason.evaluate.protocol import ModelAnswer
from creason.evaluate.record_regression import RecordRegression
from creason.evaluate.stats import bootstrap_ci, mcnemar

#: Breakdowns reported beside the overall accuracy: name -> the group of a question.
BREAKDOWNS: dict[str, Callable[[Question], str]] = {
    "question_kind": lambda q: q.question_kind,
    "section": lambda q: q.section,
    "variable_kind": lambda q: q.variable_kind,
    "num_options": lambda q: str(len(q.options)),
}


CHANCE, DRAW, MAJORITY = "Random guess (expected)", "Random guess (one draw)", "Majority answer (train)"
RECORD = "Record regression (train)"


@dataclass
class System:
    """Something that answered the questions. `correct[i]` is 1.0 / 0.0 for question i, or, for
    the expected-chance row, the probability of being right (then `letters` is None)."""

    name: str
    kind: str  # "model" | "baseline"
    correct: np.ndarray  # (n,)
    letters: list[str] | None = None
    answers: list[ModelAnswer] | None = None  # models only
    path: str | None = None
    note: str = ""
    run: dict = field(default_factory=dict)  # timing of a model's run


def correctness(questions: list[Question], letters: list[str | None]) -> np.ndarray:
    """1.0 where the letter is the question's ground truth (None is wrong), (n,)."""
    return np.array([float(x == q.ground_truth) for q, x in zip(questions, letters)])


def baseline_systems(questions: list[Question], train_counts: dict[str, Counter], seed: int,
                     regression: RecordRegression | None = None) -> list[System]:
    """Expected chance, one seeded random draw, the training majority answer per variable, and (given
    a fitted `regression`) the record regression's answers."""
    draw = random_letters(questions, seed)
    majority, hit = majority_letters(questions, majority_texts(train_counts), seed + 1)
    systems = [
        System(CHANCE, "baseline", chance_levels(questions),
               note="mean of 1 / number of options: what uniform guessing scores on average"),
        System(DRAW, "baseline", correctness(questions, draw), letters=draw,
               note=f"one uniform draw per question, seed {seed}"),
        System(MAJORITY, "baseline", correctness(questions, majority), letters=majority,
               note=f"most frequent training answer of the variable; it was an option in {hit.mean():.0%} "
                    "of questions, a random letter otherwise"),
    ]
    if regression is not None:
        letters, known = regression.letters(questions, [record_values(q.user_text) for q in questions], seed + 2)
        systems.append(System(RECORD, "baseline", correctness(questions, letters), letters=letters,
                              note=f"a softmax regression per variable on the record's values, fit on the training "
                                   f"split; it had a prediction for {known.mean():.0%} of questions, a random letter "
                                   "otherwise"))
    return systems


def model_system(name: str, path: str, questions: list[Question], answers: list[ModelAnswer],
                 run: dict | None = None) -> System:
    """A model scored by its forced letters (the protocol's answer)."""
    got = [a.question_id for a in answers]
    if got != [q.question_id for q in questions]:
        raise ValueError(f"{name}: answers are not in question order ({len(got)} for {len(questions)} questions)")
    letters = [a.forced for a in answers]
    return System(name, "model", correctness(questions, letters), letters=letters, answers=answers, path=path,
                  run=run or {})


def summary(correct: np.ndarray, n_samples: int, confidence: float, seed: int) -> dict:
    """{"n", "correct", "accuracy", "ci_low", "ci_high"} of a correctness vector."""
    n = int(correct.size)
    low, high = bootstrap_ci(correct, n_samples, confidence, seed)
    return {"n": n, "correct": float(correct.sum()), "accuracy": float(correct.mean()) if n else float("nan"),
            "ci_low": low, "ci_high": high}


def groups(questions: list[Question], key: Callable[[Question], str]) -> dict[str, np.ndarray]:
    """Question indices per group, groups sorted by name."""
    out: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        out.setdefault(key(q), []).append(i)
    return {g: np.array(out[g]) for g in sorted(out)}


def model_diagnostics(questions: list[Question], answers: list[ModelAnswer], boot: dict) -> dict:
    """The `\\boxed{}` parse next to the forced letter, and how the reasoning ended."""
    boxed = [a.boxed for a in answers]
    present = [b is not None for b in boxed]
    agree = [a.boxed == a.forced for a in answers if a.boxed is not None]
    return {
        "boxed": summary(correctness(questions, boxed), **boot),
        "box_missing_rate": 1.0 - float(np.mean(present)),
        "boxed_forced_agreement": float(np.mean(agree)) if agree else float("nan"),
        "truncated_rate": float(np.mean([a.finish_reason == "length" for a in answers])),
        "mean_reasoning_tokens": float(np.mean([a.reasoning_tokens for a in answers])),
        "letter_top_rate": float(np.mean([a.top_token.strip() in q.letters for q, a in zip(questions, answers)])),
    }


def score_system(questions: list[Question], system: System, boot: dict) -> dict:
    """All numbers of one system: overall, per breakdown, and (models) diagnostics."""
    out = {"name": system.name, "kind": system.kind, "path": system.path, "note": system.note,
           "overall": summary(system.correct, **boot), "breakdowns": {}}
    for name, key in BREAKDOWNS.items():
        out["breakdowns"][name] = {g: summary(system.correct[idx], **boot) for g, idx in groups(questions, key).items()}
    if system.letters is not None:
        out["concentration"] = answer_concentration(questions, system.letters)
    if system.answers is not None:
        out.update(model_diagnostics(questions, system.answers, boot), run=system.run)
    return out


def comparison_pairs(systems: list[System]) -> list[tuple[System, System]]:
    """Pairs worth testing: every two models, then each model against each drawn baseline."""
    models = [s for s in systems if s.kind == "model"]
    drawn = [s for s in systems if s.kind == "baseline" and s.letters is not None]
    return list(combinations(models, 2)) + [(m, b) for m in models for b in drawn]


def compare(a: System, b: System, boot: dict) -> dict:
    """McNemar's test and the accuracy difference a - b with its paired bootstrap interval."""
    low, high = bootstrap_ci(a.correct - b.correct, boot["n_samples"], boot["confidence"], boot["seed"])
    return {"a": a.name, "b": b.name, **mcnemar(a.correct, b.correct),
            "difference": float(np.mean(a.correct - b.correct)), "difference_ci_low": low, "difference_ci_high": high}


def score_systems(questions: list[Question], systems: list[System], n_samples: int = 1000,
                  confidence: float = 0.95, seed: int = 0) -> dict:
    """The results of an evaluation (without file paths): systems, comparisons, question counts."""
    boot = {"n_samples": n_samples, "confidence": confidence, "seed": seed}
    return {
        "n_questions": len(questions),
        "question_counts": {name: {g: int(idx.size) for g, idx in groups(questions, key).items()}
                            for name, key in BREAKDOWNS.items()},
        "bootstrap": boot,
        "systems": [score_system(questions, s, boot) for s in systems],
        "truth_concentration": truth_concentration(questions),
        "comparisons": [compare(a, b, boot) for a, b in comparison_pairs(systems)],
    }
