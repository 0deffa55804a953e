"""The questions an evaluation asks, read from the question Parquet shards, and the training
split's answer counts that the majority baseline needs. No Ray."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

LETTERS = "ABCDE"


@dataclass(frozen=True)
class EvalQuestion:
    """One multiple-choice question; option i has letter LETTERS[i]."""

    question_id: str
    prompt: list[dict] = field(repr=False)  # chat messages: system + user
    ground_truth: str  # "A".."E"
    question_kind: str  # "masked_value" | "outcome"
    variable: str
    display_name: str
    section: str
    variable_kind: str  # "categorical" | "ordinal" | "numeric"
    options: list[str]
    answer_text: str

    @property
    def letters(self) -> str:
        """The valid letters of this question: "AB" for two options."""
        return LETTERS[: len(self.options)]

    @property
    def user_text(self) -> str:
        return next((m["content"] for m in self.prompt if m["role"] == "user"), "")


def _split_dir(questions_dir: str | Path, split: str) -> Path:
    folder = Path(questions_dir) / split
    if not folder.is_dir() or not any(folder.glob("*.parquet")):
        raise FileNotFoundError(f"no question shards in {folder}: run `creason build-questions` first")
    return folder


def load_questions(questions_dir: str | Path, split: str = "test", kinds=("masked_value", "outcome"),
                   max_questions: int | None = None, seed: int = 0) -> list[EvalQuestion]:
    """Questions of `split` of the given kinds, ordered by question_id (shard order does not
    matter); with `max_questions`, a seeded random subset of that size, kept in that order."""
    table = pq.read_table(_split_dir(questions_dir, split), columns=["prompt", "reward_model", "extra_info"])
    info = table.column("extra_info").combine_chunks()
    table = table.filter(pc.is_in(info.field("question_kind"), value_set=pa.array(list(kinds), type=pa.string())))
    rows = sorted(table.to_pylist(), key=lambda r: r["extra_info"]["question_id"])
    if max_questions is not None and max_questions < len(rows):
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_questions, replace=False))
        rows = [rows[i] for i in keep]
    return [_question(r) for r in rows]


def _question(row: dict) -> EvalQuestion:
    x = row["extra_info"]
    return EvalQuestion(
        question_id=x["question_id"], prompt=[dict(m) for m in row["prompt"]],
        ground_truth=row["reward_model"]["ground_truth"], question_kind=x["question_kind"], variable=x["variable"],
        display_name=x["display_name"], section=x["section"], variable_kind=x["variable_kind"],
        options=list(x["options"]), answer_text=x["answer_text"],
    )


def answer_counts(questions_dir: str | Path, split: str = "train") -> dict[str, Counter]:
    """How often each answer_text is the answer, per variable, over all questions of `split`."""
    info = pq.read_table(_split_dir(questions_dir, split), columns=["extra_info"]).column("extra_info").combine_chunks()
    counts: dict[str, Counter] = defaultdict(Counter)
    for variable, text in zip(info.field("variable").to_pylist(), info.field("answer_text").to_pylist()):
        counts[variable][text] += 1
    return dict(counts)
