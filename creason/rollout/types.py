"""Contracts of the rollout side: what is asked (`SamplingSpec`), what comes back (`Completion`,
`GenerationStats`), and the interface every engine backend implements (`RolloutEngine`).

No vLLM, Hugging Face or Ray imports here: these records cross process boundaries (pickled by
Ray) and are read by the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

ChatPrompt = list[dict[str, str]]
"""One prompt as chat messages: `[{"role": "system", "content": ...}, {"role": "user", ...}]`."""


class StaleWeightsError(RuntimeError):
    """A rollout actor was asked to sample with a weight version it does not hold.

    On-policy GRPO needs completions from the weights the trainer just pushed; sampling from older
    ones silently makes the importance ratio wrong, so the actor refuses instead."""


class SamplingSpec(BaseModel):
    """How to sample completions. `temperature=0` is greedy decoding."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(1, ge=1, description="Completions per prompt (the GRPO group size).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature; 0 means greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(256, ge=1, description="Most tokens generated per completion.")
    stop: list[str] = Field(default_factory=list, description="Strings that end a completion (kept in its text).")
    seed: int | None = Field(
        None, description="Seed of the sampler for this call (the engine's process-wide torch RNG): the same weights, "
        "prompts and seed sample the same completions, so a step redone after a failure samples what the lost attempt "
        "did. None: the RNG goes on from where it is. (vLLM's per-request seeds fail on its CPU backend.)"
    )


def step_sampling(spec: SamplingSpec, seed: int, step: int) -> SamplingSpec:
    """`spec` seeded for training step `step` of a run seeded `seed`: a step redone after a
    failure, or replayed by a benchmark, samples the same completions."""
    return spec.model_copy(update={"seed": seed * 1_000_003 + step})


@dataclass
class Completion:
    """One sampled completion of prompt `prompt_index` (its index in the batch given to `generate`).

    `token_ids` are the generated tokens only, ending with the end-of-sequence token when
    `finish_reason == "stop"` by EOS (so training sees the model learn to stop); `text` is their
    decoding without special tokens. `logprobs[t]` is the log-probability of `token_ids[t]` under
    the *raw* model distribution (softmax of the logits at temperature 1, before temperature and
    top-p), which is what the trainer's policy computes, so `trainer - rollout` log-probs measure
    the engine mismatch and nothing else. The token itself was drawn from the temperature/top-p
    distribution."""

    prompt_index: int
    token_ids: list[int]
    prompt_token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: Literal["stop", "length"]


@dataclass
class GenerationStats:
    """Counts and wall time of one `generate` call: `tokens / seconds` is the throughput."""

    prompts: int = 0
    completions: int = 0
    prompt_tokens: int = 0
    tokens: int = 0
    seconds: float = 0.0

    @classmethod
    def of(cls, prompt_ids: list[list[int]], result: list[list[Completion]], seconds: float) -> "GenerationStats":
        """Stats of one `generate` call from its tokenised prompts and its completions."""
        return cls(
            prompts=len(result),
            completions=sum(len(group) for group in result),
            prompt_tokens=sum(len(ids) for ids in prompt_ids),
            tokens=sum(len(c.token_ids) for group in result for c in group),
            seconds=seconds,
        )

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "tokens_per_s": self.tokens_per_s}


class RolloutEngine(Protocol):
    """What the actor needs from a backend (vLLM or Hugging Face)."""

    last_stats: GenerationStats

    @property
    def tokenizer(self) -> Any: ...

    def generate(self, prompts: list[ChatPrompt], spec: SamplingSpec) -> list[list[Completion]]: ...

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> float: ...
