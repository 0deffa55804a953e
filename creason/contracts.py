"""Records that cross process and file boundaries, as pydantic models.

A question row follows the schema that verl and other RL trainers read from Parquet
(`data_source`, `prompt`, `ability`, `reward_model`, `extra_info`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class RewardSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    style: Literal["rule"] = "rule"
    ground_truth: str = Field(description="The correct option letter, A-E.", pattern="^[A-E]$")


class QuestionInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question_id: str = Field(description="`<patient pseudonym>-<m|o><k>`: stable across rebuilds with the same seed.")
    patient: str = Field(description="Keyed 64-bit pseudonym of the patient (hex), never the registry identifier.")
    split: Literal["train", "validation", "test"]
    question_kind: Literal["masked_value", "outcome"]
    variable: str
    display_name: str
    section: str
    variable_kind: Literal["categorical", "ordinal", "numeric"]
    options: list[str] = Field(min_length=2, max_length=5)
    answer_text: str
    answer_value: float | None = Field(description="Numeric value of the answer (numeric variables only).")


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_source: str
    prompt: list[ChatMessage]
    ability: str
    reward_model: RewardSpec
    extra_info: QuestionInfo
