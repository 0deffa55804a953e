"""Rollout engines as Ray actors: one engine per actor, weights stamped with a version.

The version is the trainer's step count of the weights an actor holds. `generate` takes the
version the caller expects and refuses (`StaleWeightsError`) when the actor holds another, so a
missed or late weight push can never produce off-policy samples silently.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import ray
from ray.exceptions import RayActorError

from creason.rollout.types import ChatPrompt, Completion, RolloutEngine, SamplingSpec, StaleWeightsError

BACKENDS = ("vllm", "hf")


def make_engine(backend: str, model_path: str, **engine_kwargs: Any) -> RolloutEngine:
    """The engine of `rollout.backend`: "vllm" (default) or "hf" (Hugging Face generate)."""
    if backend == "vllm":
        from creason.rollout.engine import VllmEngine

        return VllmEngine(model_path, **engine_kwargs)
    if backend == "hf":
        from creason.rollout.hf_engine import HfEngine

        return HfEngine(model_path, **engine_kwargs)
    raise ValueError(f"unknown rollout backend {backend!r}; choose one of {BACKENDS}")


class RolloutWorker:
    """Owns one engine; made a Ray actor by `create_rollout_actors`. Version 0 = the weights
    read from `model_path`."""

    def __init__(self, model_path: str, backend: str = "vllm", engine_kwargs: dict | None = None, num_threads: int = 1):
        import torch

        # Before the engine: vLLM's CPU worker turns torch.set_num_threads into a no-op.
        torch.set_num_threads(num_threads)
        self.engine = make_engine(backend, model_path, **{**(engine_kwargs or {}), "num_threads": num_threads})
        self.version = 0
        self.receivers: dict[str, Any] = {}  # transport name -> this actor's end of it

    def generate(
        self, prompts: list[ChatPrompt], spec: SamplingSpec, expected_version: int
    ) -> tuple[list[list[Completion]], dict]:
        """Completions and stats (tokens, seconds, tokens_per_s, weight_version, ...)."""
        if expected_version != self.version:
            raise StaleWeightsError(f"rollout actor holds weights v{self.version}, caller expects v{expected_version}")
        if spec.seed is not None:
            import torch

            torch.manual_seed(spec.seed)  # both engines sample in this process, from torch's default generator
        completions = self.engine.generate(prompts, spec)
        return completions, {**self.engine.last_stats.as_dict(), "weight_version": self.version}

    def answer(self, questions: list, max_new_tokens: int, max_model_len: int, expected_version: int) -> list:
        """The evaluation protocol's answers (`creason.evaluate.protocol`: greedy reasoning, then the
        letter forced) to `questions` (`creason.contracts.Question`s), with the weights of `expected_version`."""
        if expected_version != self.version:
            raise StaleWeightsError(f"rollout actor holds weights v{self.version}, caller expects v{expected_version}")
        from creason.evaluate.protocol import answer_questions

        llm = getattr(self.engine, "llm", None)
        if llm is None:
            raise ValueError("the evaluation protocol needs a vLLM engine: set rollout.backend=vllm or train.eval_every=0")
        return answer_questions(llm, self.engine.tokenizer, questions, max_new_tokens, max_model_len,
                                lora_request=getattr(self.engine, "lora_request", None))

    def connect_weight_sync(self, transport: str, **options: Any) -> None:
        """Open this actor's end of the weight transport `transport` (`creason.rollout.sync`) with
        what its sender passes: the broadcast joins its process group here; the object store needs
        no call (`receive_weights` opens it)."""
        from creason.rollout.sync import make_receiver

        self.receivers[transport] = make_receiver(transport, **options)

    def receive_weights(self, transport: str, payload: Any, version: int) -> float:
        """Load the weights that a push by `transport` sent (`payload`: the object store's arrays,
        the broadcast's layout) and take `version`; returns seconds."""
        if transport not in self.receivers:
            self.connect_weight_sync(transport)
        seconds = self.engine.load_weights(self.receivers[transport].receive(payload))
        self.version = version
        return seconds

    def weight_version(self) -> int:
        """The version held; also a readiness probe (returns once the engine has started)."""
        return self.version

    def node_id(self) -> str:
        """The Ray node this actor runs on."""
        return ray.get_runtime_context().get_node_id()


def create_rollout_actors(
    n: int,
    model_path: str,
    backend: str = "vllm",
    engine_kwargs: dict | None = None,
    num_cpus_per_actor: float = 1,
    num_gpus_per_actor: float = 0,
    resources: dict[str, float] | None = None,
    max_restarts: int = 0,
    num_threads: int | None = None,
) -> list[Any]:
    """Start `n` `RolloutWorker` actors (they load their engines in the background: call
    `weight_version` on them to wait). `resources`: custom Ray resources each reserves (to keep
    them on a pool of nodes); `max_restarts`: times Ray restarts a dead one (it comes back holding
    the base weights, version 0, until `WeightSync.catch_up`). `num_threads` (torch threads per
    actor) defaults to the whole CPUs of `num_cpus_per_actor`."""
    threads = num_threads or max(1, int(num_cpus_per_actor))
    actor_cls = ray.remote(num_cpus=num_cpus_per_actor, num_gpus=num_gpus_per_actor, resources=resources or None,
                           max_restarts=max_restarts)(RolloutWorker)
    return [actor_cls.remote(str(model_path), backend, engine_kwargs, threads) for _ in range(n)]


def generate_on_actors(
    actors: list[Any], prompts: list[ChatPrompt], spec: SamplingSpec, version: int,
    recover: Callable[[Any], Any] | None = None, max_attempts: int = 3,
) -> tuple[list[list[Completion]], dict]:
    """Split `prompts` into contiguous chunks, one per actor, and gather the completions in prompt
    order (`prompt_index` renumbered to index `prompts`). Stats: summed tokens, the wall seconds of
    the whole call, each actor's own stats under "actors", and "actor_restarts".

    An actor that dies while it holds a chunk fails that chunk only: with `recover` (called with the
    actor; it must wait for the restarted actor and load the current weights into it), the chunk is
    sampled again on it, up to `max_attempts` times in all; its lost completions are never used, so
    every prompt is sampled exactly once in the result. A restarted actor that refuses the chunk
    (`StaleWeightsError`: it came back with the base weights after the last push) is recovered the
    same way; one that still holds other weights after recovery fails the call, as it should.
    Without `recover`, the error propagates.
    """
    start = time.perf_counter()
    busy = [(a, lo, hi) for a, (lo, hi) in zip(actors, _contiguous_chunks(len(prompts), len(actors))) if hi > lo]
    pending = {a.generate.remote(prompts[lo:hi], spec, version): (a, lo, hi, 1) for a, lo, hi in busy}
    results: dict[int, tuple] = {}
    restarts = 0
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        actor, lo, hi, attempt = pending.pop(ref)
        try:
            results[lo] = ray.get(ref)
        except (RayActorError, StaleWeightsError):  # Ray's task error is an instance of StaleWeightsError too
            if recover is None or attempt >= max_attempts:
                raise
            restarts += 1
            recover(actor)
            pending[actor.generate.remote(prompts[lo:hi], spec, version)] = (actor, lo, hi, attempt + 1)
    completions = []
    for lo in sorted(results):
        completions.extend([_shifted(c, lo) for c in group] for group in results[lo][0])
    per_actor = [results[lo][1] for lo in sorted(results)]
    seconds = time.perf_counter() - start
    tokens = sum(s["tokens"] for s in per_actor)
    summary = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "weight_version": version,
               "actor_restarts": restarts}
    return completions, {**summary, "actors": per_actor}


def answer_on_actors(actors: list[Any], questions: list, max_new_tokens: int, max_model_len: int, version: int) -> list:
    """`RolloutWorker.answer` of `questions` split into one contiguous chunk per actor, in question order."""
    bounds = [(lo, hi) for lo, hi in _contiguous_chunks(len(questions), len(actors)) if hi > lo]
    refs = [a.answer.remote(questions[lo:hi], max_new_tokens, max_model_len, version) for a, (lo, hi) in zip(actors, bounds)]
    return [answer for chunk in ray.get(refs) for answer in chunk]


def _contiguous_chunks(n_items: int, n_parts: int) -> list[tuple[int, int]]:
    """[lo, hi) bounds of `n_parts` contiguous chunks whose sizes differ by at most one.

    >>> _contiguous_chunks(5, 2)
    [(0, 3), (3, 5)]
    """
    size, extra = divmod(n_items, n_parts)
    bounds, lo = [], 0
    for part in range(n_parts):
        hi = lo + size + (1 if part < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def _shifted(c: Completion, offset: int) -> Completion:
    """`c` with `prompt_index` made relative to the whole batch (it arrives relative to a chunk)."""
    c.prompt_index += offset
    return c


def wait_ready(actors: Iterable[Any]) -> list[int]:
    """Block until every actor has built its engine; returns their weight versions."""
    return ray.get([a.weight_version.remote() for a in actors])
