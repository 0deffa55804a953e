"""Training prompts from the question Parquet, as a deterministic stream.

The batch of step s is a pure function of (seed, s): positions s*P ... s*P+P-1 of an endless
sequence of shuffled epochs. Resuming at step s therefore draws exactly the batch an
uninterrupted run would have drawn; the "data position" is s*P.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel


class TrainQuestion(BaseModel):
    question_id: str
    messages: list[dict]
    ground_truth: str
    num_options: int


def load_questions(questions_dir: str | Path, split: str, kinds: list[str]) -> list[TrainQuestion]:
    """Questions of one split and the given kinds, in a stable order (by question id)."""
    files = sorted((Path(questions_dir) / split).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{questions_dir}/{split}: no question shards; run `creason build-questions` first")
    table = pq.read_table(files, columns=["prompt", "reward_model", "extra_info"])
    info = table.column("extra_info").combine_chunks()
    table = table.filter(pc.is_in(info.field("question_kind"), value_set=pa.array(kinds)))
    info = table.column("extra_info").combine_chunks()
    order = np.argsort(np.asarray(info.field("question_id").to_pylist()), kind="stable")
    rows = table.take(order).to_pylist()
    return [
        TrainQuestion(question_id=r["extra_info"]["question_id"], messages=r["prompt"],
                      ground_truth=r["reward_model"]["ground_truth"], num_options=len(r["extra_info"]["options"]))
        for r in rows
    ]


class PromptStream:
    """Endless, reshuffled-every-epoch batches addressed by step number."""

    def __init__(self, questions: list[TrainQuestion], batch_size: int, seed: int):
        if not questions:
            raise ValueError("no training questions of the requested kinds")
        self.questions, self.batch_size, self.seed = questions, batch_size, seed

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.questions))

    def position(self, step: int) -> int:
        """Index of the first question of `step` in the endless stream."""
        return step * self.batch_size

    def batch(self, step: int) -> list[TrainQuestion]:
        n = len(self.questions)
        out = []
        for pos in range(self.position(step), self.position(step) + self.batch_size):
            epoch, offset = divmod(pos, n)
            out.append(self.questions[int(self._epoch_order(epoch)[offset])])
        return out


def batch_fingerprint(batch: list[TrainQuestion]) -> str:
    """Short hash of a batch's question ids, logged per step (proves a resume redraws the same batch)."""
    return hashlib.sha256("|".join(q.question_id for q in batch).encode()).hexdigest()[:16]
