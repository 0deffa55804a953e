"""Training prompts (`creason.contracts.Question`s, read by `creason.data.schema.load_questions`)
as a deterministic stream.

The batch of step s is a pure function of (seed, s): positions s*P ... s*P+P-1 of an endless
sequence of shuffled epochs. Resuming at step s therefore draws exactly the batch an
uninterrupted run would have drawn; the "data position" is s*P.
"""

from __future__ import annotations

import hashlib

import numpy as np

from creason.contracts import Question


class PromptStream:
    """Endless, reshuffled-every-epoch batches addressed by step number."""

    def __init__(self, questions: list[Question], batch_size: int, seed: int):
        if not questions:
            raise ValueError("no training questions of the requested kinds")
        self.questions, self.batch_size, self.seed = questions, batch_size, seed

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.questions))

    def position(self, step: int) -> int:
        """Index of the first question of `step` in the endless stream."""
        return step * self.batch_size

    def batch(self, step: int) -> list[Question]:
        n = len(self.questions)
        out = []
        for pos in range(self.position(step), self.position(step) + self.batch_size):
            epoch, offset = divmod(pos, n)
            out.append(self.questions[int(self._epoch_order(epoch)[offset])])
        return out


def batch_fingerprint(batch: list[Question]) -> str:
    """Short hash of a batch's question ids, logged per step (proves a resume redraws the same batch)."""
    return hashlib.sha256("|".join(q.question_id for q in batch).encode()).hexdigest()[:16]
