"""Hugging Face `generate` as a rollout engine: the fallback when vLLM is not installed or does not
support a model (`rollout.backend: hf`). Same interface and `Completion`s as `VllmEngine`; slower
(no paged KV cache or continuous batching: finished rows keep being computed until the longest
one ends)."""

from __future__ import annotations

import time
from typing import Any, Iterable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

from creason.rollout.engine import DEFAULT_MAX_MODEL_LEN, encode_chat
from creason.rollout.types import ChatPrompt, Completion, GenerationStats, SamplingSpec


class HfEngine:
    """A `transformers` causal LM in this process, sampling all prompts x n in one padded batch.

    Args mirror `VllmEngine` where they apply; `max_model_len` caps prompt + completion.
    """

    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        max_model_len: int = DEFAULT_MAX_MODEL_LEN,
        seed: int = 0,
        num_threads: int | None = None,
        **_ignored: Any,  # vLLM-only options (kv_cache_memory_bytes, ...), so one config fits both
    ) -> None:
        if num_threads:
            torch.set_num_threads(num_threads)
        torch.manual_seed(seed)
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self._tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=getattr(torch, dtype)).eval()
        self.max_model_len = max_model_len
        self.eos_ids = _eos_ids(self.model, self._tokenizer)
        self.last_stats = GenerationStats()

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @torch.no_grad()
    def generate(self, prompts: list[ChatPrompt], spec: SamplingSpec) -> list[list[Completion]]:
        """`spec.n` completions for each prompt: result[i][j] is sample j of prompts[i]."""
        start = time.perf_counter()
        prompt_ids = [encode_chat(self._tokenizer, p) for p in prompts]
        batch = self._tokenizer.pad({"input_ids": prompt_ids}, return_tensors="pt")
        width = batch["input_ids"].shape[1]
        recorder = _SampledLogprobs()
        sequences = self.model.generate(
            **batch,
            **_generate_kwargs(spec, self._tokenizer, self.max_model_len - width),
            logits_processor=LogitsProcessorList([recorder]),
        )
        new_tokens = sequences[:, width:]  # (B * n, T)
        logprobs = recorder.finish(sequences)  # (B * n, T)
        # generate's rows are prompt-major: row r is sample r % n of prompt r // n
        flat = [self._completion(r // spec.n, prompt_ids[r // spec.n], new_tokens[r], logprobs[r], spec.stop)
                for r in range(len(new_tokens))]
        result = [flat[i * spec.n : (i + 1) * spec.n] for i in range(len(prompts))]
        self.last_stats = GenerationStats.of(prompt_ids, result, time.perf_counter() - start)
        return result

    def generate_greedy(self, prompts: list[ChatPrompt], max_tokens: int = 256) -> list[Completion]:
        spec = SamplingSpec(n=1, temperature=0.0, max_tokens=max_tokens)
        return [group[0] for group in self.generate(prompts, spec)]

    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> float:
        """Copy tensors into the parameters of the same (Hugging Face) names; returns seconds."""
        start = time.perf_counter()
        state = self.model.state_dict()  # shares storage with the parameters (tied ones included)
        for name, tensor in named_tensors:
            if name not in state:
                raise KeyError(f"load_weights: {name!r} is not a parameter of {type(self.model).__name__}")
            state[name].copy_(tensor)
        return time.perf_counter() - start

    def _completion(
        self, index: int, prompt_ids: list[int], row: torch.Tensor, logprobs: torch.Tensor, stop: list[str]
    ) -> Completion:
        """Cut a padded row after its first EOS, else after its first stop string."""
        tokens = row.tolist()
        end, reason = _end_of_completion(tokens, self.eos_ids, stop, self._tokenizer)
        tokens = tokens[:end]
        text = self._tokenizer.decode(tokens, skip_special_tokens=True)
        return Completion(index, tokens, prompt_ids, text, logprobs[:end].tolist(), reason)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids]) - {None}
    return ids | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


def _generate_kwargs(spec: SamplingSpec, tokenizer: Any, room: int) -> dict[str, Any]:
    sample = spec.temperature > 0
    kwargs: dict[str, Any] = dict(
        max_new_tokens=max(1, min(spec.max_tokens, room)),
        num_return_sequences=spec.n,
        do_sample=sample,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    if sample:
        kwargs.update(temperature=spec.temperature, top_p=spec.top_p, top_k=0)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if spec.stop:
        kwargs.update(stop_strings=list(spec.stop), tokenizer=tokenizer)
    return kwargs


class _SampledLogprobs(LogitsProcessor):
    """Records log softmax(logits)[sampled token] at every step, from the logits before
    temperature and top-p (custom processors run before those warpers), as vLLM's raw_logprobs.

    The token drawn at step t is only visible at step t + 1 (as the last input id), so one (B, V)
    step is held back; `output_logits=True` would instead keep all T of them, (B, T, V) float32:
    1.6 GB for 64 rows of 128 tokens of a 49k vocabulary."""

    def __init__(self) -> None:
        self.previous: torch.Tensor | None = None  # (B, V) log-probs of the last step
        self.steps: list[torch.Tensor] = []  # T x (B,)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._pick(input_ids[:, -1])
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """(B, T) log-probs of the generated tokens, given generate's output sequences."""
        self._pick(sequences[:, -1])
        self.previous = None
        return torch.stack(self.steps, dim=1)

    def _pick(self, tokens: torch.Tensor) -> None:
        if self.previous is not None:
            self.steps.append(self.previous.gather(-1, tokens[:, None]).squeeze(-1))


def _end_of_completion(tokens: list[int], eos_ids: set[int], stop: list[str], tokenizer: Any) -> tuple[int, str]:
    """(length, finish reason) of a generated row: through its first EOS ("stop"), else through the
    first token that completes a stop string ("stop"), else the whole row ("length")."""
    for t, tok in enumerate(tokens):
        if tok in eos_ids:
            return t + 1, "stop"
    if stop and any(s in tokenizer.decode(tokens) for s in stop):
        lo, hi = 1, len(tokens)  # smallest prefix whose text holds a stop string (monotone in length)
        while lo < hi:
            mid = (lo + hi) // 2
            if any(s in tokenizer.decode(tokens[:mid]) for s in stop):
                hi = mid
            else:
                lo = mid + 1
        return lo, "stop"
    return len(tokens), "length"
