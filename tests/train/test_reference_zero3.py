"""ZeRO-3 training with a reference refresh on 2 CPU workers (gloo): the policy's parameters are
partitioned (0 elements on each rank), so the refresh must gather them before mixing. Both ranks
take part in gathering the full weights; only rank 0 keeps a copy."""

import copy

import pytest
import torch

from tests.ranks import spawn_gloo_ranks

ALPHA = 0.9


def tiny_llama():
    """A 2-layer Llama built here (no tokenizer, no files): ~60k parameters, tied embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=64,
                         tie_word_embeddings=True)
    torch.manual_seed(0)  # the same weights on every rank
    return LlamaForCausalLM(config)


def _refresh_after_a_zero3_step(rank: int, world: int) -> None:
    from creason.algo import mix_reference
    from creason.train.engine import build_deepspeed_engine, full_state_dict, mix_policy_into_reference

    model = tiny_llama()
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    engine, _ = build_deepspeed_engine(model, lr=1e-2, total_steps=4, zero_stage=3, micro_batch_size=2,
                                       world_size=world)
    assert engine.module.model.norm.weight.numel() == 0  # partitioned away

    tokens = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(rank))
    engine.backward(engine(input_ids=tokens, labels=tokens).loss)
    engine.step()
    sent = full_state_dict(engine, keep=rank == 0)  # both ranks gather; rank 0 alone copies
    assert (sent == {}) if rank else (sent.keys() == before.keys() and sent["model.norm.weight"].numel() == 64)
    policy = full_state_dict(engine)
    assert any(not torch.equal(policy[k], before[k]) for k in before)  # the step changed the policy

    with pytest.raises(ValueError, match="shape"):  # what the loop did before: mix the partitioned state
        mix_reference(copy.deepcopy(reference).state_dict(), engine.module.state_dict(), ALPHA)
    mix_policy_into_reference(reference, engine, ALPHA)
    after = reference.state_dict()
    for k in before:
        torch.testing.assert_close(after[k], before[k].lerp(policy[k], ALPHA), msg=k)  # tied ones mixed once


@pytest.mark.slow
def test_reference_refresh_under_zero3_on_two_workers():
    spawn_gloo_ranks(_refresh_after_a_zero3_step, 2)


def _sharded_reference(rank: int, world: int) -> None:
    from creason.train.batch import collate
    from creason.train.engine import (build_deepspeed_engine, build_reference, full_state_dict, load_reference,
                                      mix_policy_into_reference, reference_state)
    from creason.train.step import compute_ref_logprobs

    model = tiny_llama()
    whole = copy.deepcopy(model).eval().requires_grad_(False)
    before = {k: v.clone() for k, v in whole.state_dict().items()}
    reference = build_reference(copy.deepcopy(model), zero_stage=3, precision="fp32", world_size=world,
                                device=torch.device("cpu"))
    assert reference.module.model.norm.weight.numel() == 0  # partitioned like the policy, not a full copy
    engine, _ = build_deepspeed_engine(model, lr=1e-2, total_steps=4, zero_stage=3, micro_batch_size=2,
                                       world_size=world)

    g = torch.Generator().manual_seed(7)  # the same batch on both ranks
    prompts = [torch.randint(0, 256, (n,), generator=g).tolist() for n in (5, 3)]
    responses = [torch.randint(0, 256, (n,), generator=g).tolist() for n in (4, 2)]
    batch = collate(prompts, responses, [[0.0] * len(r) for r in responses], [1.0, -1.0], pad_id=0)
    torch.testing.assert_close(compute_ref_logprobs(reference, batch), compute_ref_logprobs(whole, batch))

    tokens = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(rank))
    engine.backward(engine(input_ids=tokens, labels=tokens).loss)
    engine.step()
    policy = full_state_dict(engine)
    mix_policy_into_reference(reference, engine, ALPHA)  # partition into partition
    mixed = reference_state(reference, keep=True)
    for k in before:
        torch.testing.assert_close(mixed[k], before[k].lerp(policy[k], ALPHA), msg=k)
    assert reference_state(reference, keep=False) is None

    load_reference(reference, before)  # a checkpoint's reference, back into the partitions
    restored = reference_state(reference, keep=True)
    for k in before:
        torch.testing.assert_close(restored[k], before[k], msg=k)


@pytest.mark.slow
def test_reference_sharded_like_the_policy_under_zero3():
    spawn_gloo_ranks(_sharded_reference, 2)
