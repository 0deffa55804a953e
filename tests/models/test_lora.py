"""LoRA through PEFT on the tiny model: only the adapters train, the merged weights are PEFT's own
merge under the base model's names, adapter folders merge into plain folders that evaluation and
serving load, and a checkpoint holds both."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from creason.config import ConfigError, LoraSettings, load_config
from creason.models.lora import add_lora, is_adapter_folder, merged_weights, plain_model_folder, save_adapter

TOKENS = torch.tensor([[5, 17, 300, 42, 9, 1000]])


@pytest.fixture()
def lora_model(tiny_model_dir):
    model = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraSettings(rank=4, alpha=8))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # zero at initialisation: give the adapters an update to merge
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def logits(model, tokens=TOKENS):
    with torch.no_grad():
        return model(input_ids=tokens).logits


def test_only_the_adapters_train(lora_model):
    trainable = [n for n, p in lora_model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert any("q_proj" in n for n in trainable) and any("down_proj" in n for n in trainable)


def test_merged_weights_are_peft_s_merge_under_the_base_names(lora_model, tiny_model_dir):
    merged = merged_weights(lora_model)
    expected = copy.deepcopy(lora_model).merge_and_unload().state_dict()
    assert merged.keys() == expected.keys() == AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict().keys()
    for name in expected:
        torch.testing.assert_close(merged[name], expected[name], msg=name)
    assert merged["lm_head.weight"] is merged["model.embed_tokens.weight"]  # tied: one tensor
    assert any(".lora_" in n for n, _ in lora_model.named_parameters())  # the model itself is not merged
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain.load_state_dict(merged)
    torch.testing.assert_close(logits(plain), logits(lora_model), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits(plain), logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir)))


def test_adapter_folder_merges_into_a_plain_folder(lora_model, tmp_path):
    from creason.cli import main
    from creason.serve.engine import resolve_model_folder

    adapter = tmp_path / "adapter"
    save_adapter(lora_model, adapter)
    assert is_adapter_folder(adapter) and not (adapter / "config.json").exists()
    out = tmp_path / "merged"
    assert main(["merge", str(adapter), "--out", str(out)]) == 0
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(out)), logits(lora_model), atol=1e-5, rtol=1e-5)
    assert (out / "tokenizer_config.json").is_file()
    beside = plain_model_folder(adapter)  # what evaluation and serving load for an adapter folder
    assert beside == tmp_path / "adapter-merged" and (beside / "config.json").is_file()
    assert resolve_model_folder(adapter) == beside
    assert plain_model_folder(out) == out


def test_checkpoint_holds_the_merged_policy_and_the_adapter(lora_model, tmp_path):
    from creason.train.checkpoint import save_checkpoint
    from creason.train.step import TorchEngine

    engine = TorchEngine(lora_model, torch.optim.SGD([p for p in lora_model.parameters() if p.requires_grad], lr=0.1))
    path = save_checkpoint(tmp_path, engine, step=3)
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(path / "policy")), logits(lora_model),
                               atol=1e-5, rtol=1e-5)
    assert is_adapter_folder(path / "adapter")


def test_auto_sync_sends_adapters_to_gpu_engines_and_merged_weights_to_cpu_ones():
    from creason.models.lora import lora_sync

    assert lora_sync(load_config("quickstart")) is None
    assert lora_sync(load_config("quickstart", ["model.lora.rank=8"])) == "merged"
    assert lora_sync(load_config("quickstart", ["model.lora.rank=8", "rollout.gpus_per_actor=1"])) == "adapter"
    assert lora_sync(load_config("quickstart", ["model.lora.rank=8", "model.lora.sync=adapter"])) == "adapter"


@pytest.mark.parametrize("overrides, message", [
    (["model.lora.rank=8", "model.lora.sync=adapter", "rollout.backend=hf"], "needs rollout.backend=vllm"),
    (["model.lora.rank=8", "train.zero_stage=3"], "not supported at train.zero_stage=3"),
])
def test_lora_config_conflicts_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("quickstart", overrides)
