"""vLLM as a rollout engine, in-process: chat prompts in, sampled completions with log-probs out,
and weights reloaded in place between GRPO steps. No Ray here (see `actor.py`).

The engine runs in the calling process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): that is what lets
`load_weights` hand tensors to the model directly (the multi-process engine cannot pickle them),
and it keeps one process per rollout actor on a small CPU machine.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

from creason.models.lora import is_adapter_tensors, write_adapter
from creason.rollout.types import ChatPrompt, Completion, GenerationStats, SamplingSpec

DEFAULT_KV_CACHE_BYTES = 256 * 1024**2
DEFAULT_MAX_MODEL_LEN = 2048  # as rollout.max_model_len and evaluate.max_model_len in creason.config

#: vLLM `dtype` of each creason precision (`model.precision`, `evaluate.precision`).
ENGINE_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "auto": "auto"}


def resolve_dtype(dtype: str) -> str:
    """`dtype`, with "auto" made concrete for the hardware of this process: bfloat16 on a GPU or
    on a CPU with AMX matrix units (Intel Xeon since Sapphire Rapids: 2.4x the evaluation
    throughput of float32 there, docs/evaluation.md), float32 on other CPUs, where bfloat16
    decodes several times slower."""
    if dtype != "auto":
        return dtype
    import torch

    return "bfloat16" if torch.cuda.is_available() or cpu_has_amx() else "float32"


def resolve_enforce_eager(enforce_eager: bool | None) -> bool:
    """`enforce_eager`, with None made concrete for the hardware of this process: on for CPUs (no
    graph capture or torch.compile: the engine starts in seconds), off on a GPU, where vLLM captures
    CUDA graphs at start-up (a minute or so) and decodes faster with them."""
    if enforce_eager is not None:
        return enforce_eager
    import torch

    return not torch.cuda.is_available()


def cpu_has_amx(cpuinfo: str | None = None) -> bool:
    """Whether the CPU (`/proc/cpuinfo`, or the text given) has AMX bfloat16 matrix units."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    return any(line.startswith("flags") and "amx_bf16" in line.split() for line in cpuinfo.splitlines())


def encode_chat(tokenizer: Any, messages: ChatPrompt) -> list[int]:
    """Token ids of `messages` under the model's chat template, ending with the assistant header
    (`add_generation_prompt=True`), so the completion is the assistant's turn."""
    rendered = tokenizer.apply_chat_template(
        [dict(m) for m in messages], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(rendered["input_ids"])


class VllmEngine:
    """One `vllm.LLM` in this process.

    Args:
        model_path: Hugging Face folder of the policy.
        dtype: "float32" on CPUs (bf16 matmuls are ~8x slower there); "bfloat16" on GPUs.
        max_model_len: prompt + completion tokens, at most.
        kv_cache_memory_bytes: KV cache size. Set explicitly: the fraction-of-memory default
            reserves several GiB of host RAM per engine on the CPU backend.
        seed: the engine's sampling seed (per-request seeds fail on the CPU backend).
        enforce_eager: no graph capture / torch.compile (start-up in seconds, not minutes);
            None: `resolve_enforce_eager` (on for CPUs, off on GPUs).
        gpu_memory_utilization: only read when `kv_cache_memory_bytes` is None (GPU builds).
        num_threads: torch threads for this engine. vLLM otherwise drops the process to 1 thread
            unless OMP_NUM_THREADS is set.
        lora: `model.lora` settings (a dict) when the policy's LoRA adapters are synced as adapters
            (`sync: adapter`): vLLM starts with LoRA enabled (one adapter, its rank), and
            `load_weights` given adapter tensors loads them as that adapter, which every
            generation then uses.
        **llm_kwargs: passed to `vllm.LLM` as they are.
    """

    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        max_model_len: int = DEFAULT_MAX_MODEL_LEN,
        kv_cache_memory_bytes: int | None = DEFAULT_KV_CACHE_BYTES,
        seed: int = 0,
        enforce_eager: bool | None = None,
        gpu_memory_utilization: float = 0.5,
        num_threads: int | None = None,
        lora: dict | None = None,
        **llm_kwargs: Any,
    ) -> None:
        if lora is not None:
            llm_kwargs = {**llm_kwargs, "enable_lora": True, "max_loras": 1, "max_lora_rank": lora_rank_slot(lora["rank"])}
        self.model_path, self.lora, self.lora_request = str(model_path), lora, None
        self._adapter_dir: str | None = None  # the PEFT folder the synced adapters are written to (first sync)
        with _in_process_vllm(num_threads) as LLM:
            self.llm = LLM(
                model=str(model_path),
                dtype=dtype,
                max_model_len=max_model_len,
                kv_cache_memory_bytes=kv_cache_memory_bytes,
                gpu_memory_utilization=gpu_memory_utilization,
                seed=seed,
                enforce_eager=resolve_enforce_eager(enforce_eager),
                logprobs_mode="raw_logprobs",  # model log-probs at temperature 1: see `Completion`
                **llm_kwargs,
            )
        self._tokenizer = self.llm.get_tokenizer()
        self.last_stats = GenerationStats()

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def generate(self, prompts: list[ChatPrompt], spec: SamplingSpec) -> list[list[Completion]]:
        """`spec.n` completions for each prompt: result[i][j] is sample j of prompts[i]."""
        start = time.perf_counter()
        prompt_ids = [encode_chat(self._tokenizer, p) for p in prompts]
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in prompt_ids], _sampling_params(spec), use_tqdm=False,
            lora_request=self.lora_request,
        )
        result = [[_completion(i, ids, o) for o in out.outputs] for i, (ids, out) in enumerate(zip(prompt_ids, outputs))]
        self.last_stats = GenerationStats.of(prompt_ids, result, time.perf_counter() - start)
        return result

    def generate_greedy(self, prompts: list[ChatPrompt], max_tokens: int = 256) -> list[Completion]:
        """One greedy completion per prompt (evaluation)."""
        spec = SamplingSpec(n=1, temperature=0.0, max_tokens=max_tokens)
        return [group[0] for group in self.generate(prompts, spec)]

    def close(self) -> None:
        """Stop the engine and undo vLLM's process-wide state (its single-rank torch.distributed
        group), so a trainer or another engine can start in this process."""
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        cleanup_dist_env_and_memory()

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> float:
        """Copy new weights (Hugging Face names, any float dtype) into the model in place; returns
        seconds. The prefix cache is cleared after: its KV blocks were computed by the old weights.
        The tensors are read once, one at a time (vLLM iterates them as it loads), so a streaming
        source (the bucketed broadcast) holds one bucket at a time, not the whole model. Some of
        the weights (a sync of the trainable ones) replace those alone: vLLM puts every layer that
        got none back as it was (and would warn once per such layer each time: `_quiet_partial_reload`)."""
        start = time.perf_counter()
        if self.lora is not None:  # the policy's LoRA adapters (`sync: adapter`): small, read at once
            named_tensors = list(named_tensors)
            if is_adapter_tensors([name for name, _ in named_tensors]):
                self._load_adapter(dict(named_tensors))
                return time.perf_counter() - start
        with _quiet_partial_reload():
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(named_tensors)})
        self.llm.apply_model(_repack_cpu_lm_head)
        self.llm.reset_prefix_cache()
        return time.perf_counter() - start

    def _load_adapter(self, tensors: dict) -> None:
        """Write the adapters as a PEFT folder of this engine and load them in place of the last
        ones (one adapter id, `load_inplace`); the prefix cache is cleared (its KV blocks came from
        the old adapters)."""
        import tempfile

        from vllm.lora.request import LoRARequest

        if self._adapter_dir is None:
            self._adapter_dir = tempfile.mkdtemp(prefix="creason-adapter-")
        write_adapter(Path(self._adapter_dir), tensors, self.lora, self.model_path)
        self.lora_request = LoRARequest("policy", 1, self._adapter_dir, load_inplace=True)
        self.llm.llm_engine.add_lora(self.lora_request)
        self.llm.reset_prefix_cache()


#: What vLLM's in-place reload logs for a layer, or a weight, that a load did not include.
PARTIAL_RELOAD_MESSAGES = ("Failed to load weights", "were not loaded from checkpoint")


@contextmanager
def _quiet_partial_reload():
    """Drop vLLM's warnings about layers and weights a reload did not include while it runs: a
    sync of the trainable weights leaves out every frozen layer on purpose (~130 lines a step for
    SmolLM2), and a full one the tied output head (loaded once, as the embedding)."""

    def keep(record: logging.LogRecord) -> bool:
        return not any(m in record.getMessage() for m in PARTIAL_RELOAD_MESSAGES)

    loggers = [logging.getLogger(f"vllm.model_executor.model_loader.reload.{m}") for m in ("layerwise", "inplace")]
    for lg in loggers:
        lg.addFilter(keep)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(keep)


@contextmanager
def _in_process_vllm(num_threads: int | None):
    """Yield `vllm.LLM` set up for an in-process engine with `num_threads` torch threads, and undo
    what vLLM start-up does to the process beyond the engine itself.

    - VLLM_ENABLE_V1_MULTIPROCESSING=0 keeps the engine in this process (read at construction).
    - vLLM drops torch to 1 thread unless OMP_NUM_THREADS is set: set it while the engine starts,
      then restore it, so processes started later from here (a Ray cluster) do not inherit it.
    - vLLM's CPU worker replaces torch.set_num_threads with a no-op for the whole process: put it
      back, so other code here (a trainer, the next test) still controls its threads.
    """
    import torch

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    # vLLM's CPU backend binds an engine's threads to the cores of NUMA node 0 less a reserved
    # one: on a 2-core machine every engine of every actor lands on the same core. Let the OS
    # place them (set the variable to "auto" or a core list to bind on purpose).
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    omp_before, set_num_threads = os.environ.get("OMP_NUM_THREADS"), torch.set_num_threads
    if num_threads:
        os.environ["OMP_NUM_THREADS"] = str(num_threads)
        torch.set_num_threads(num_threads)
    from vllm import LLM

    try:
        yield LLM
    finally:
        torch.set_num_threads = set_num_threads
        if omp_before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp_before


def lora_rank_slot(rank: int) -> int:
    """The smallest rank vLLM accepts as `max_lora_rank` that holds `rank`.

    >>> lora_rank_slot(4), lora_rank_slot(16), lora_rank_slot(20)
    (8, 16, 32)
    """
    return next(slot for slot in (8, 16, 32, 64, 128, 256, 320, 512) if slot >= rank)


def _repack_cpu_lm_head(model: Any) -> None:
    """Rebuild the packed copy of the output projection that vLLM's CPU backend keeps: the one
    place that handles tied embeddings (the trainer sends its state dict as it is).

    With tied embeddings (SmolLM2) the output head's parameter is the embedding's. vLLM 0.32 loads
    that tensor once, as `model.embed_tokens.weight`, and skips `lm_head.weight` as its alias
    whether it is sent or not (`AutoWeightsLoader._filter_skipped`), so the head's layer loads
    nothing ("ParallelLMHead: Failed to load weights") and is not processed again. On GPUs that is
    harmless: the shared weight is already new. On CPUs, `process_weights_after_loading` packs
    each matmul weight for oneDNN and the matmul reads only that packed copy, so logits would keep
    coming from the *old* embedding: sampling would silently use a mix of new and old weights.
    Re-packing the head from its (shared, updated) weight fixes it; a no-op where the head has no
    packed copy. Checked by tests/rollout/test_engine.py (log-probs equal Hugging Face's after a
    reload from a checkpoint without `lm_head.weight`)."""
    head = getattr(model, "lm_head", None)
    if head is not None and hasattr(head, "cpu_linear"):
        head.quant_method.process_weights_after_loading(head)


def _sampling_params(spec: SamplingSpec):
    from vllm import SamplingParams

    return SamplingParams(
        n=spec.n,
        temperature=spec.temperature,
        top_p=spec.top_p if spec.temperature > 0 else 1.0,
        max_tokens=spec.max_tokens,
        stop=list(spec.stop) or None,
        include_stop_str_in_output=True,  # text then matches token_ids, which do include it
        logprobs=0,  # only the sampled token's log-prob
    )


def _completion(prompt_index: int, prompt_ids: list[int], out: Any) -> Completion:
    """A vLLM `CompletionOutput` as a `Completion`; `out.logprobs[t]` maps token id -> Logprob."""
    token_ids = list(out.token_ids)
    if out.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM finished a completion with {out.finish_reason!r}")
    logprobs = [step[tok].logprob for tok, step in zip(token_ids, out.logprobs)]
    return Completion(prompt_index, token_ids, prompt_ids, out.text, logprobs, out.finish_reason)

