"""Rollout actors on a local Ray cluster: the stale-weight guard, weight pushes through the object
store, prompt order across actors, and the Hugging Face fallback behind the same interface.
One vLLM engine start (in the actor); the Hugging Face actors are cheap."""

from __future__ import annotations

import time

import pytest
import ray
from safetensors.torch import load_file

from creason.rollout.actor import _contiguous_chunks, create_rollout_actors, generate_on_actors, wait_ready
from creason.rollout.hf_engine import HfEngine
from creason.rollout.sync import make_weight_sync, retry_while_restarting
from creason.rollout.sync.object_store import ObjectStoreSync
from creason.rollout.types import SamplingSpec, StaleWeightsError
from tests.tiny_model import build_tiny_model, top_block_weights

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


@pytest.mark.ray
def test_broadcast_sync_equals_the_object_store_and_survives_a_restart(ray_local, tiny_pair):
    """The broadcast transport (gloo here, NCCL on GPUs) loads the same weights as the object
    store; a restarted actor is let back into the group and caught up."""
    spec = SamplingSpec(n=2, temperature=1.0, max_tokens=6, seed=5)
    actors = create_rollout_actors(2, str(tiny_pair[0]), "hf", num_cpus_per_actor=0.25, max_restarts=1)
    try:
        make_weight_sync("object_store", actors).push(weights(tiny_pair[1]), version=1)
        by_store, _ = generate_on_actors(actors, PROMPTS, spec, version=1)
        sync = make_weight_sync("broadcast", actors)
        assert sync.backend == "gloo"
        make_weight_sync("object_store", actors).push(weights(tiny_pair[0]), version=2)  # back to the first weights
        pushed = sync.push(weights(tiny_pair[1]), version=3)
        assert pushed["bytes"] == sum(t.numel() * t.element_size() for _, t in weights(tiny_pair[1]))
        by_broadcast, _ = generate_on_actors(actors, PROMPTS, spec, version=3)
        assert _tokens(by_broadcast) == _tokens(by_store)
        ray.kill(actors[0], no_restart=False)
        wait_until_restarted(actors[0])
        after, stats = generate_on_actors(actors, PROMPTS, spec, version=3, recover=sync.catch_up)
        assert stats["actor_restarts"] == 1 and _tokens(after) == _tokens(by_store)
    finally:
        for a in actors:
            ray.kill(a)


@pytest.mark.ray
@pytest.mark.parametrize("transport", ["object_store", "broadcast"])
def test_a_restarted_actor_gets_the_complete_push_then_the_partial_one(ray_local, tiny_pair, transport):
    """After a complete push (the other model) and a partial one (the first model's top block), an
    actor that Ray restarted is caught up with both, in order: it samples what the actor that never
    restarted samples. The partial push alone, on the base weights it came back with, would not."""
    actors = create_rollout_actors(2, str(tiny_pair[0]), "hf", num_cpus_per_actor=0.25, max_restarts=1)
    spec = SamplingSpec(n=2, temperature=1.0, max_tokens=6, seed=3)
    try:
        sync = make_weight_sync(transport, actors)
        sync.push(weights(tiny_pair[1]), version=1)
        sync.push(list(top_block_weights(tiny_pair[0]).items()), version=2, complete=False)
        expected, _ = generate_on_actors(actors, PROMPTS, spec, version=2)
        ray.kill(actors[1], no_restart=False)
        wait_until_restarted(actors[1])
        got, stats = generate_on_actors(actors, PROMPTS, spec, version=2, recover=sync.catch_up)
        assert stats["actor_restarts"] == 1 and _tokens(got) == _tokens(expected)
        assert _logprobs(got) == pytest.approx(_logprobs(expected), abs=1e-5)
    finally:
        for a in actors:
            ray.kill(a)


@pytest.mark.ray
def test_seeded_sampling_repeats(vllm_actor):
    """A redone step resamples what the lost attempt sampled: same weights, prompts and seed."""
    spec = SamplingSpec(n=2, temperature=1.0, max_tokens=12, seed=7)
    version = ray.get(vllm_actor.weight_version.remote())
    first, _ = generate_on_actors([vllm_actor], PROMPTS, spec, version)
    again, _ = generate_on_actors([vllm_actor], PROMPTS, spec, version)
    other, _ = generate_on_actors([vllm_actor], PROMPTS, spec.model_copy(update={"seed": 8}), version)
    assert _tokens(first) == _tokens(again) and _tokens(first) != _tokens(other)


def wait_until_restarted(actor, timeout: float = 120) -> None:
    """`ray.kill(..., no_restart=False)` returns at once: wait for the new process (version 0)."""
    deadline = time.monotonic() + timeout
    while retry_while_restarting(lambda: ray.get(actor.weight_version.remote())) != 0:
        assert time.monotonic() < deadline, "the actor did not restart"
        time.sleep(0.2)


def _tokens(completions) -> list:
    return [[c.token_ids for c in group] for group in completions]


def _logprobs(completions) -> list[float]:
    return [x for group in completions for c in group for x in c.logprobs]


@pytest.mark.ray
def test_a_restarted_actor_catches_up_and_its_prompts_are_resampled(ray_local, tiny_pair):
    """An actor that Ray restarts comes back with the base weights: the guard refuses its chunk,
    recovery sends it the latest push, and the chunk is sampled again, once, in order."""
    actors = create_rollout_actors(2, str(tiny_pair[0]), "hf", num_cpus_per_actor=0.25, max_restarts=2)
    spec = SamplingSpec(n=2, temperature=1.0, max_tokens=6, seed=3)
    try:
        sync = make_weight_sync("object_store", actors)
        sync.push(weights(tiny_pair[1]), version=3)
        expected, stats = generate_on_actors(actors, PROMPTS, spec, version=3, recover=sync.catch_up)
        assert stats["actor_restarts"] == 0
        ray.kill(actors[1], no_restart=False)  # Ray restarts it: version 0 again
        wait_until_restarted(actors[1])
        with pytest.raises(StaleWeightsError):
            generate_on_actors(actors, PROMPTS, spec, version=3)
        ray.kill(actors[1], no_restart=False)
        wait_until_restarted(actors[1])
        got, stats = generate_on_actors(actors, PROMPTS, spec, version=3, recover=sync.catch_up)
        assert stats["actor_restarts"] == 1 and ray.get(actors[1].weight_version.remote()) == 3
        assert _tokens(got) == _tokens(expected)
        assert [g[0].prompt_index for g in got] == [0, 1, 2]
    finally:
        for a in actors:
            ray.kill(a)
