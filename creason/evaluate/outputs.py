"""Files of an evaluation, each written atomically (a temporary file renamed into place), so a
reader never sees half a file: results.json, answers.jsonl, report.md and the PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

from creason.atomic import write_text_atomic as write_atomic

from creason.contracts import Question
from creason.evaluate.scoring import System


def _finite(value):
    """JSON has no NaN: None instead, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(value) -> str:
    return json.dumps(_finite(value), indent=2, allow_nan=False) + "\n"


def question_records(questions: list[Question], systems: list[System]) -> list[dict]:
    """One record per question: what was asked, the right answer, and every system's answer
    (models with their reasoning, forced letter, boxed letter and letter log-probs)."""
    records = []
    for i, q in enumerate(questions):
        answers = {}
        for s in systems:
            if s.letters is None:
                continue
            entry = {"letter": s.letters[i], "correct": bool(s.correct[i])}
            if s.answers is not None:
                a = s.answers[i]
                entry.update(boxed=a.boxed, reasoning=a.reasoning, reasoning_tokens=a.reasoning_tokens,
                             finish_reason=a.finish_reason, letter_logprobs=a.letter_logprobs, top_token=a.top_token)
            answers[s.name] = entry
        records.append({"question_id": q.question_id, "question_kind": q.question_kind, "section": q.section,
                        "variable": q.variable, "variable_kind": q.variable_kind, "options": q.options,
                        "ground_truth": q.ground_truth, "answer_text": q.answer_text, "answers": answers})
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    return write_atomic(path, "".join(json.dumps(_finite(r), allow_nan=False) + "\n" for r in records))


def read_metrics(path: Path | None) -> list[dict]:
    """Records of a training `metrics.jsonl` (blank and unreadable lines skipped), by step."""
    if path is None or not Path(path).is_file():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # e.g. a line being written right now
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return sorted(records, key=lambda r: r["step"])
