"""The training split's answer counts that the majority baseline needs. The questions an evaluation
asks are `creason.contracts.Question`s, read by `creason.data.schema.load_questions`. No Ray."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from creason.data.schema import split_dir


def answer_counts(questions_dir: str | Path, split: str = "train") -> dict[str, Counter]:
    """How often each answer_text is the answer, per variable, over all questions of `split`."""
    info = pq.read_table(split_dir(questions_dir, split), columns=["extra_info"]).column("extra_info").combine_chunks()
    counts: dict[str, Counter] = defaultdict(Counter)
    for variable, text in zip(info.field("variable").to_pylist(), info.field("answer_text").to_pylist()):
        counts[variable][text] += 1
    return dict(counts)
