"""What the baselines learn from the training split: answer counts (the majority answer) and
records with their answers (the record regression). The questions an evaluation asks are
`creason.contracts.Question`s, read by `creason.data.schema.load_questions`. No Ray."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from creason.data.questions import record_values
from creason.data.schema import split_dir


def answer_counts(questions_dir: str | Path, split: str = "train") -> dict[str, Counter]:
    """How often each answer_text is the answer, per variable, over all questions of `split`."""
    info = pq.read_table(split_dir(questions_dir, split), columns=["extra_info"]).column("extra_info").combine_chunks()
    counts: dict[str, Counter] = defaultdict(Counter)
    for variable, text in zip(info.field("variable").to_pylist(), info.field("answer_text").to_pylist()):
        counts[variable][text] += 1
    return dict(counts)


def answered_records(questions_dir: str | Path, limit: int, seed: int = 0, split: str = "train") -> list[tuple[str, str, dict]]:
    """(variable, answer text, record values) of at most `limit` questions of `split` (a seeded
    random subset when there are more), read from the Parquet columns without building questions."""
    table = pq.read_table(split_dir(questions_dir, split), columns=["prompt", "extra_info"])
    if table.num_rows > limit:
        table = table.take(np.sort(np.random.default_rng(seed).choice(table.num_rows, limit, replace=False)))
    info = table.column("extra_info").combine_chunks()
    users = [next(m["content"] for m in messages if m["role"] == "user") for messages in table.column("prompt").to_pylist()]
    return [(variable, text, record_values(user)) for variable, text, user in
            zip(info.field("variable").to_pylist(), info.field("answer_text").to_pylist(), users)]
