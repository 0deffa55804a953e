"""vLLM's async engine for the endpoint: many requests at once, token by token. No Ray, no HTTP.

`AsyncLLM` runs its engine core in a child process and batches every request in flight
(continuous batching); `generate` is an async iterator of partial outputs, which is what
streaming needs. Prompts are chat messages encoded with the model's chat template exactly as
training encodes them (`creason.rollout.engine.encode_chat`).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

from creason.rollout.engine import encode_chat, resolve_enforce_eager

FORCE_SUFFIX = "\n\nFinal answer: \\boxed{"  # what the forced one-letter follow-up continues from


def resolve_model_folder(path: str | Path) -> Path:
    """The Hugging Face folder to serve for `path`: the folder itself; for a training checkpoint
    (`step_N/`), its `policy/`; for a checkpoint root, the `policy/` of its latest complete one; for
    a LoRA adapter folder, the merged model (`creason.models.lora.plain_model_folder`)."""
    from creason.models.lora import plain_model_folder

    path = plain_model_folder(path)
    if (path / "config.json").is_file():
        return path
    if (path / "policy" / "config.json").is_file():
        return path / "policy"
    from creason.train.checkpoint import latest_checkpoint

    latest = latest_checkpoint(path)
    if latest is not None and (latest / "policy" / "config.json").is_file():
        return latest / "policy"
    raise FileNotFoundError(f"serve.model_path: {path} is neither a model folder nor a training checkpoint (root)")


class ServeEngine:
    """One `AsyncLLM` and its tokenizer.

    Args:
        model_path: Hugging Face folder.
        dtype: "float32" on CPUs, "bfloat16" on GPUs.
        max_model_len: prompt + completion tokens per request.
        kv_cache_bytes: KV cache size, explicit (the CPU backend's default reserves a fraction of
            all host memory).
        inline_worker: run the model worker inside the engine-core process (`uni` executor). On
            CPUs vLLM otherwise always starts a third process (it sets thread placement there),
            which costs 15-40 s of start-up on 2 cores; it allows `uni` only with
            VLLM_ENABLE_V1_MULTIPROCESSING=0, which `AsyncLLM` ignores (its engine core is a
            child process either way). Set in this process: a replica owns its process.
        enforce_eager: no CUDA graphs / torch.compile; None: on for CPUs, off on GPUs
            (`resolve_enforce_eager`).
    """

    def __init__(self, model_path: str, dtype: str = "float32", max_model_len: int = 2048, kv_cache_bytes: int = 256 * 1024**2,
                 inline_worker: bool = False, enforce_eager: bool | None = None):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        if inline_worker:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        self.model_path, self.max_model_len = str(model_path), max_model_len
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(
            model=self.model_path, dtype=dtype, max_model_len=max_model_len,
            enforce_eager=resolve_enforce_eager(enforce_eager),
            kv_cache_memory_bytes=kv_cache_bytes, disable_log_stats=True,
            distributed_executor_backend="uni" if inline_worker else None,
        ))
        self.tokenizer = self.engine.get_tokenizer()
        self.warm_up_seconds: float | None = None

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        return encode_chat(self.tokenizer, messages)

    async def generate(self, prompt_ids: list[int], params: Any, request_id: str | None = None) -> AsyncIterator[Any]:
        """vLLM `RequestOutput`s of one request (partial ones with DELTA output kind). Closing the
        iterator early (a client that went away) aborts the request inside vLLM."""
        async for out in self.engine.generate({"prompt_token_ids": prompt_ids}, params, request_id or uuid.uuid4().hex):
            yield out

    async def complete(self, prompt_ids: list[int], params: Any) -> Any:
        """The final `RequestOutput` of one request."""
        final = None
        async for out in self.generate(prompt_ids, params):
            final = out
        return final

    async def warm_up(self) -> float:
        """Answer a one-token request (the first one pays start-up costs); returns seconds."""
        from vllm import SamplingParams

        start = time.perf_counter()
        await self.complete(self.encode([{"role": "user", "content": "Hi"}]), SamplingParams(max_tokens=1, temperature=0.0))
        self.warm_up_seconds = time.perf_counter() - start
        return self.warm_up_seconds

    def letter_token_ids(self, n: int) -> list[int] | None:
        """Token ids of the letters A.. (n of them), or None if one is not a single token."""
        ids = [self.tokenizer.encode(letter, add_special_tokens=False) for letter in "ABCDE"[:n]]
        return [i[0] for i in ids] if all(len(i) == 1 for i in ids) else None

    async def force_letter(self, prompt_ids: list[int], completion_ids: list[int], n_options: int) -> str | None:
        """The letter the model puts in `\\boxed{` after its completion, one token among the n
        option letters (greedy); None when the letters are not single tokens or there is no room."""
        from vllm import SamplingParams

        allowed = self.letter_token_ids(n_options)
        eos = self.tokenizer.eos_token_id
        body = list(completion_ids[:-1] if completion_ids and completion_ids[-1] == eos else completion_ids)
        ids = prompt_ids + body + self.tokenizer.encode(FORCE_SUFFIX, add_special_tokens=False)
        if allowed is None or len(ids) + 1 > self.max_model_len:
            return None
        out = await self.complete(ids, SamplingParams(max_tokens=1, temperature=0.0, allowed_token_ids=allowed))
        return "ABCDE"[allowed.index(out.outputs[0].token_ids[0])]

    @property
    def errored(self) -> bool:
        return bool(self.engine.errored)

    async def check_health(self) -> None:
        """Raises when the engine core is dead."""
        await self.engine.check_health()

    def shutdown(self) -> None:
        self.engine.shutdown()
