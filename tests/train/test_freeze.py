"""train.trainable_layers: only the top blocks learn, with exactly the gradients full training gives
them, and nothing below them is recorded by autograd."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from creason.train.freeze import train_top_blocks


def _model(tied: bool = True, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=50, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=1,
                         num_key_value_heads=1, tie_word_embeddings=tied)
    return LlamaForCausalLM(config)


def _loss(model) -> torch.Tensor:
    ids = torch.tensor([[3, 7, 11, 2, 9, 4]])
    return model(input_ids=ids, labels=ids).loss


def test_top_blocks_get_the_full_models_gradients_and_the_rest_none():
    full, part = _model(), _model()
    counts = train_top_blocks(part, 2)
    _loss(full).backward()
    _loss(part).backward()
    trainable = {n for n, p in part.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in part.named_parameters() if n.startswith(("model.layers.2.", "model.layers.3.", "model.norm."))}
    assert counts["trainable"] == sum(p.numel() for n, p in part.named_parameters() if n in trainable) < counts["total"]
    full_grads = dict(full.named_parameters())
    for name, p in part.named_parameters():
        if name in trainable:
            torch.testing.assert_close(p.grad, full_grads[name].grad, rtol=0, atol=1e-6)
        else:
            assert p.grad is None, name


def test_blocks_below_run_without_autograd():
    model = _model()
    train_top_blocks(model, 1)
    seen = {}
    for i, block in enumerate(model.model.layers):
        block.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(i, (out[0] if isinstance(out, tuple) else out).requires_grad))
    _loss(model)
    assert seen == {0: False, 1: False, 2: False, 3: True}


def test_an_untied_head_stays_trainable():
    model = _model(tied=False)
    train_top_blocks(model, 1)
    assert model.lm_head.weight.requires_grad and not model.model.embed_tokens.weight.requires_grad


@pytest.mark.parametrize("k", [None, 4, 9])
def test_none_or_all_blocks_leave_everything_trainable(k):
    model = _model()
    counts = train_top_blocks(model, k)
    assert counts["trainable"] == counts["total"]
    assert all(p.requires_grad for p in model.parameters())


def test_zero_blocks_is_refused():
    with pytest.raises(ValueError, match="trainable_layers"):
        train_top_blocks(_model(), 0)


def test_with_lora_only_the_top_blocks_adapters_train():
    from creason.config import LoraSettings
    from creason.models.lora import add_lora

    model = add_lora(_model(tied=False), LoraSettings(rank=2, alpha=4))
    counts = train_top_blocks(model, 1)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".layers.3." in n and ".lora_" in n for n in trainable)  # no base weight, norm or head
    assert counts["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
