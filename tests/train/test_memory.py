"""Memory knobs of the policy: gradient checkpointing (same gradients, less kept), and full weights
copied only on the rank that sends them."""

import pytest
import torch

from creason.config import TrainConfig
from creason.train.engine import (build_deepspeed_engine, enable_gradient_checkpointing, ensure_single_process_group,
                                  full_state_dict, rollout_weights)
from creason.train.freeze import train_top_blocks


def tiny_llama(attention_dropout: float = 0.0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=64,
                         tie_word_embeddings=True, attention_dropout=attention_dropout)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()  # as from_pretrained leaves it


def gradients(model, tokens):
    """Gradients of the LM loss, and how many times the first layer started a forward pass."""
    calls = []
    hook = model.model.layers[0].register_forward_pre_hook(lambda *a: calls.append(1))
    model.zero_grad(set_to_none=True)
    model(input_ids=tokens, labels=tokens).loss.backward()
    hook.remove()
    return {n: p.grad.clone() for n, p in model.named_parameters()}, len(calls)


def test_gradient_checkpointing_gives_the_same_gradients():
    tokens = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    plain, plain_calls = gradients(tiny_llama(), tokens)
    # attention dropout in the config: training mode would apply it unless the knob turns it off
    model = tiny_llama(attention_dropout=0.5)
    enable_gradient_checkpointing(model)
    checkpointed, checkpointed_calls = gradients(model, tokens)
    assert (plain_calls, checkpointed_calls) == (1, 2)  # the layer ran again in the backward pass
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_gradient_checkpointing_turns_prompt_sharing_off():
    from creason.train.loop import shares_prompt_forward

    assert shares_prompt_forward(TrainConfig(zero_stage=2))
    assert not shares_prompt_forward(TrainConfig(zero_stage=2, gradient_checkpointing=True))
    assert not shares_prompt_forward(TrainConfig(zero_stage=3))


@pytest.mark.parametrize("zero_stage", [0, 3])
def test_full_state_dict_is_copied_only_where_kept(zero_stage):
    ensure_single_process_group()
    engine, _ = build_deepspeed_engine(tiny_llama(), lr=1e-3, total_steps=2, zero_stage=zero_stage)
    assert full_state_dict(engine, keep=False) == {}
    kept = full_state_dict(engine)
    assert kept["model.norm.weight"].shape == (64,) and kept["lm_head.weight"] is kept["model.embed_tokens.weight"]


@pytest.mark.parametrize("zero_stage", [0, 3])
def test_rollout_weights_can_be_the_trainable_ones_alone(zero_stage):
    """A sync after the first sends what trains: the top block and the final norm, not the frozen
    block below nor the tied embedding; values equal the full state dict's."""
    ensure_single_process_group()
    model = tiny_llama()
    train_top_blocks(model, 1)
    engine, _ = build_deepspeed_engine(model, lr=1e-3, total_steps=2, zero_stage=zero_stage)
    full = full_state_dict(engine)
    sent = rollout_weights(engine, keep=True, trainable_only=True)
    assert sent and all(k.startswith("model.layers.1.") or k == "model.norm.weight" for k in sent)
    assert "model.layers.1.mlp.down_proj.weight" in sent and "model.norm.weight" in sent
    assert all(torch.equal(t, full[k]) for k, t in sent.items())
    assert rollout_weights(engine, keep=False, trainable_only=True) == {}
