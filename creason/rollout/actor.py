"""Rollout engines as Ray actors: one engine per actor, weights stamped with a version.

The version is the trainer's step count of the weights an actor holds. `generate` takes the
version the caller expects and refuses (`StaleWeightsError`) when the actor holds another, so a
missed or late weight push can never produce off-policy samples silently.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

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

    def generate(
        self, prompts: list[ChatPrompt], spec: SamplingSpec, expected_version: int
    ) -> tuple[list[list[Completion]], dict]:
        """Completions and stats (tokens, seconds, tokens_per_s, weight_version, ...)."""
        if expected_version != self.version:
            raise StaleWeightsError(f"rollout actor holds weights v{self.version}, caller expects v{expected_version}")
        completions = self.engine.generate(prompts, spec)
        return completions, {**self.engine.last_stats.as_dict(), "weight_version": self.version}

    def update_weights(self, named_tensors: Any, version: int) -> float:
        """Load `[(name, tensor), ...]` (or an ObjectRef of it) and take `version`; returns seconds."""
        if isinstance(named_tensors, ray.ObjectRef):
            named_tensors = ray.get(named_tensors)
        seconds = self.engine.load_weights(named_tensors)
        self.version = version
        return seconds

    def weight_version(self) -> int:
        """The version held; also a readiness probe (returns once the engine has started)."""
        return self.version


def create_rollout_actors(
    n: int,
    model_path: str,
    backend: str = "vllm",
    engine_kwargs: dict | None = None,
    num_cpus_per_actor: float = 1,
    placement_group: Any = None,
    num_threads: int | None = None,
    num_gpus_per_actor: float = 0,
) -> list[Any]:
    """Start `n` `RolloutWorker` actors (they load their engines in the background: call
    `weight_version` on them to wait). With a placement group, actor i goes to bundle i.
    `num_threads` (torch threads per actor) defaults to the whole CPUs of `num_cpus_per_actor`."""
    threads = num_threads or max(1, int(num_cpus_per_actor))
    actor_cls = ray.remote(num_cpus=num_cpus_per_actor, num_gpus=num_gpus_per_actor)(RolloutWorker)
    actors = []
    for i in range(n):
        options = {}
        if placement_group is not None:
            strategy = PlacementGroupSchedulingStrategy(placement_group, placement_group_bundle_index=i)
            options["scheduling_strategy"] = strategy
        actors.append(actor_cls.options(**options).remote(str(model_path), backend, engine_kwargs, threads))
    return actors


def generate_on_actors(
    actors: list[Any], prompts: list[ChatPrompt], spec: SamplingSpec, version: int
) -> tuple[list[list[Completion]], dict]:
    """Split `prompts` into contiguous chunks, one per actor, and gather the completions in prompt
    order (`prompt_index` renumbered to index `prompts`). Stats: summed tokens, the wall seconds of
    the whole call, and each actor's own stats under "actors"."""
    start = time.perf_counter()
    busy = [(a, lo, hi) for a, (lo, hi) in zip(actors, _contiguous_chunks(len(prompts), len(actors))) if hi > lo]
    results = ray.get([a.generate.remote(prompts[lo:hi], spec, version) for a, lo, hi in busy])
    completions = []
    for (_, lo, _), (groups, _) in zip(busy, results):
        completions.extend([_shifted(c, lo) for c in group] for group in groups)
    per_actor = [stats for _, stats in results]
    seconds = time.perf_counter() - start
    tokens = sum(s["tokens"] for s in per_actor)
    summary = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "weight_version": version}
    return completions, {**summary, "actors": per_actor}


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
