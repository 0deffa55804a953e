"""A baseline that reads the record: per variable, a softmax regression on the values the question's
record shows, fit on the training split, answering with the best-scoring of the question's options.

The majority answer uses the answer priors alone; this regression adds the record. The gap between
the two is what the records tell about the answers (on the synthetic registry, about 8 points:
docs/results.md), and so how far a model can rise above the majority answer by using the record.
Pure numpy: no Ray, no files.

Features are one-hot: a categorical line's value, or a numeric line's training quantile bin (a line
whose training values all parse as numbers and take more than `bins` distinct values); a missing
line is all zeros. Each variable's weights are fit by full-batch gradient descent on the
L2-regularised cross-entropy of its training answers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from creason.contracts import Question

Record = dict[str, str]  # line label -> value text, as `creason.data.questions.record_values` reads it


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass
class OneHot:
    """The feature columns learnt from training records: `label=value` or `label#bin`, plus a bias."""

    edges: dict[str, np.ndarray]  # numeric label -> inner quantile edges
    columns: dict[str, int]

    @classmethod
    def fit(cls, records: list[Record], bins: int = 5) -> OneHot:
        values: dict[str, list[str]] = defaultdict(list)
        for r in records:
            for label, text in r.items():
                values[label].append(text)
        edges = {}
        for label, texts in values.items():
            numbers = [_number(t) for t in texts]
            if None not in numbers and len(set(numbers)) > bins:
                edges[label] = np.quantile(np.array(numbers), np.linspace(0, 1, bins + 1)[1:-1])
        keys = sorted({key for r in records for key in cls._keys(edges, r)})
        return cls(edges, {k: i for i, k in enumerate(keys)})

    @staticmethod
    def _keys(edges: dict[str, np.ndarray], record: Record) -> list[str]:
        keys = []
        for label, text in record.items():
            number = _number(text) if label in edges else None
            keys.append(f"{label}#{int(np.searchsorted(edges[label], number))}" if number is not None else f"{label}={text}")
        return keys

    def matrix(self, records: list[Record]) -> np.ndarray:
        """(n, columns + 1) 0/1 features; the last column is the bias. Unseen values have no column."""
        x = np.zeros((len(records), len(self.columns) + 1), dtype=np.float32)
        x[:, -1] = 1.0
        for i, r in enumerate(records):
            cols = [c for k in self._keys(self.edges, r) if (c := self.columns.get(k)) is not None]
            x[i, cols] = 1.0
        return x


def fit_softmax(x: np.ndarray, y: np.ndarray, n_classes: int, steps: int = 300, lr: float = 0.5,
                l2: float = 1e-3) -> np.ndarray:
    """Weights (features, classes) of a softmax regression by full-batch gradient descent on the mean
    cross-entropy of labels `y` plus `l2 / 2 * |W|^2`."""
    w = np.zeros((x.shape[1], n_classes), dtype=np.float32)
    target = np.eye(n_classes, dtype=np.float32)[y]
    for _ in range(steps):
        z = x @ w
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        w -= lr * (x.T @ (p - target) / len(y) + l2 * w)
    return w


class RecordRegression:
    """One softmax regression per variable over its training answer texts."""

    def __init__(self, train: list[tuple[str, str, Record]], steps: int = 300):
        """`train`: (variable, answer text, record) of each training question."""
        self.features = OneHot.fit([r for _, _, r in train])
        by_variable: dict[str, list[tuple[str, Record]]] = defaultdict(list)
        for variable, answer, record in train:
            by_variable[variable].append((answer, record))
        self.models: dict[str, tuple[np.ndarray, dict[str, int]]] = {}
        for variable, rows in by_variable.items():
            classes = {text: i for i, text in enumerate(sorted({a for a, _ in rows}))}
            y = np.array([classes[a] for a, _ in rows])
            w = fit_softmax(self.features.matrix([r for _, r in rows]), y, len(classes), steps)
            self.models[variable] = (w, classes)

    def letters(self, questions: list[Question], records: list[Record], seed: int) -> tuple[list[str], np.ndarray]:
        """Per question the letter of its best-scoring option; a seeded random valid letter where the
        variable or all of its options went unseen in training. Also which questions had a prediction
        (bool, (n,)), as `majority_letters` returns."""
        rng = np.random.default_rng(seed)
        scores = {}
        for variable, idx in _indices_by_variable(questions).items():
            if variable in self.models:
                w, _ = self.models[variable]
                scores.update(zip(idx, self.features.matrix([records[i] for i in idx]) @ w))
        letters, hit = [], []
        for i, q in enumerate(questions):
            classes = self.models.get(q.variable, (None, {}))[1]
            known = [(scores[i][classes[o]], j) for j, o in enumerate(q.options) if o in classes]
            hit.append(bool(known))
            j = max(known)[1] if known else int(rng.integers(len(q.letters)))
            letters.append(q.letters[j])
        return letters, np.array(hit, dtype=bool)


def _indices_by_variable(questions: list[Question]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(questions):
        out[q.variable].append(i)
    return out
