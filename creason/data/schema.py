"""The Parquet schema of question rows (mirrors `creason.contracts.Question`) and its assembly
from column arrays."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from creason.data.render import concat

if TYPE_CHECKING:
    from creason.data.dictionary import Variable
    from creason.data.questions import QuestionPlan

ABILITY = "clinical_reasoning"
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
EXTRA_INFO = pa.struct(
    [
        ("question_id", pa.string()),
        ("patient", pa.string()),
        ("split", pa.string()),
        ("question_kind", pa.string()),
        ("variable", pa.string()),
        ("display_name", pa.string()),
        ("section", pa.string()),
        ("variable_kind", pa.string()),
        ("options", pa.list_(pa.string())),
        ("answer_text", pa.string()),
        ("answer_value", pa.float64()),
    ]
)
QUESTION_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(MESSAGE)),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", EXTRA_INFO),
    ]
)
_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


def hex64(keys: np.ndarray) -> np.ndarray:
    """uint64 -> 16-character lowercase hex strings, vectorised."""
    as_bytes = keys.astype(">u8").view(np.uint8).reshape(-1, 8)
    return _HEX[as_bytes].view("S16").ravel().astype(str)


def chat_prompts(system: str, user: pa.Array) -> pa.ListArray:
    """[{system}, {user}] per row."""
    n = len(user)
    contents = pa.concat_arrays([pa.array([system]), user]).take(pa.array(np.stack([np.zeros(n, np.int64), np.arange(1, n + 1)], 1).ravel()))
    roles = pa.array(np.tile(np.array(["system", "user"], dtype=object), n), type=pa.string())
    messages = pa.StructArray.from_arrays([roles, contents], fields=list(MESSAGE))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), messages)


def assemble_questions(*, plan: "QuestionPlan", kind: str, variable: "Variable", keys: np.ndarray, ks: np.ndarray, split, user, options, letters, answer_text, answer_value) -> pa.Table:
    """One table of questions in `QUESTION_SCHEMA` from per-row columns."""
    n = len(keys)
    patient = pa.array(hex64(keys))
    qid = concat(patient, f"-{kind[0]}", pa.array(ks.astype(str)))

    def const(value: str) -> pa.Array:
        return pa.array(np.full(n, value, dtype=object), type=pa.string())

    extra = pa.StructArray.from_arrays(
        [qid, patient, split, const(kind), const(variable.name),
         const(variable.display_name), const(variable.section), const(variable.kind.value), options,
         answer_text, answer_value],
        fields=list(EXTRA_INFO),
    )
    reward = pa.StructArray.from_arrays([const("rule"), pa.array(letters, type=pa.string())], names=["style", "ground_truth"])
    return pa.Table.from_arrays(
        [const(plan.config.data_source), chat_prompts(plan.config.system_prompt, user), const(ABILITY), reward, extra],
        schema=QUESTION_SCHEMA,
    )
