"""Rollout actors on a local Ray cluster: the stale-weight guard, weight pushes through the object
store, prompt order across actors, and the Hugging Face fallback behind the same interface.
One vLLM engine start (in the actor); the Hugging Face actors are cheap."""

from __future__ import annotations

import pytest
import ray
from safetensors.torch import load_file

from creason.models.tiny import build_tiny_model
from creason.rollout.actor import _contiguous_chunks, create_rollout_actors, generate_on_actors, wait_ready
from creason.rollout.hf_engine import HfEngine
from creason.rollout.types import SamplingSpec, StaleWeightsError
from creason.rollout.weight_sync import ObjectStoreSync, make_weight_sync

PROMPTS = [[{"role": "user", "content": f"Patient {i}: lactate {i + 1}.5 mmol/L. Septic shock? A) Yes B) No"}] for i in range(3)]
GREEDY = SamplingSpec(n=1, temperature=0.0, max_tokens=8)


@pytest.fixture(scope="module")
def tiny_pair(tiny_model_dir, smollm2_dir, tmp_path_factory):
    """The tiny Llama and a twin that differs only in its random weights (seed 1)."""
    other = build_tiny_model(tmp_path_factory.mktemp("rollout-actor-models") / "tiny-1", smollm2_dir, seed=1)
    return [tiny_model_dir, other]


@pytest.fixture(scope="module")
def vllm_actor(ray_local, tiny_pair):
    kwargs = {"max_model_len": 512, "kv_cache_memory_bytes": 64 * 1024**2}
    actors = create_rollout_actors(1, str(tiny_pair[0]), "vllm", kwargs, num_cpus_per_actor=1)
    wait_ready(actors)
    yield actors[0]
    ray.kill(actors[0])


def weights(model_dir) -> list:
    return list(load_file(str(model_dir / "model.safetensors")).items())


def test_contiguous_chunks():
    assert _contiguous_chunks(5, 2) == [(0, 3), (3, 5)]
    assert _contiguous_chunks(2, 3) == [(0, 1), (1, 2), (2, 2)]


@pytest.mark.ray
def test_stale_guard_and_object_store_push(vllm_actor, tiny_pair):
    before, stats = ray.get(vllm_actor.generate.remote(PROMPTS, GREEDY, 0))
    assert stats["weight_version"] == 0 and stats["tokens"] == sum(len(g[0].token_ids) for g in before)

    pushed = ObjectStoreSync([vllm_actor]).push(weights(tiny_pair[1]), version=1)
    assert pushed["bytes"] > 0 and pushed["seconds"] > 0
    assert ray.get(vllm_actor.weight_version.remote()) == 1
    with pytest.raises(StaleWeightsError):
        ray.get(vllm_actor.generate.remote(PROMPTS, GREEDY, 0))

    after, stats = generate_on_actors([vllm_actor], PROMPTS, GREEDY, version=1)
    assert stats["weight_version"] == 1 and [g[0].prompt_index for g in after] == [0, 1, 2]
    assert [g[0].logprobs for g in after] != [g[0].logprobs for g in before]


@pytest.mark.ray
def test_hf_fallback_same_interface_and_order(ray_local, tiny_pair):
    """Two Hugging Face actors split 3 prompts 2 + 1 and give back what one engine gives, in order."""
    actors = create_rollout_actors(2, str(tiny_pair[0]), "hf", num_cpus_per_actor=0.25)
    try:
        spread, stats = generate_on_actors(actors, PROMPTS, GREEDY, version=0)
        assert len(stats["actors"]) == 2 and stats["tokens"] > 0
        local = HfEngine(str(tiny_pair[0])).generate(PROMPTS, GREEDY)
        assert [g[0].prompt_index for g in spread] == [0, 1, 2]
        assert [g[0].token_ids for g in spread] == [g[0].token_ids for g in local]
        assert [g[0].prompt_token_ids for g in spread] == [g[0].prompt_token_ids for g in local]

        sampled, _ = generate_on_actors(actors, PROMPTS, SamplingSpec(n=2, temperature=0.9, max_tokens=6), version=0)
        assert [len(g) for g in sampled] == [2, 2, 2]
        assert all(len(c.logprobs) == len(c.token_ids) and all(x <= 0 for x in c.logprobs) for g in sampled for c in g)

        make_weight_sync("object_store", actors).push(weights(tiny_pair[1]), version=3)
        with pytest.raises(StaleWeightsError):
            generate_on_actors(actors, PROMPTS, GREEDY, version=0)
        changed, _ = generate_on_actors(actors, PROMPTS, GREEDY, version=3)
        assert [g[0].logprobs for g in changed] != [g[0].logprobs for g in spread]
    finally:
        for a in actors:
            ray.kill(a)


def test_weight_sync_registry():
    with pytest.raises(NotImplementedError, match="GPU"):
        make_weight_sync("nccl", [])
    with pytest.raises(ValueError, match="object_store"):
        make_weight_sync("carrier-pigeon", [])
