"""LoRA synced as adapters (`model.lora.sync: adapter`): the vLLM engine started with LoRA loads
the trainer's adapter tensors and samples with them; log-probs equal the PEFT model's, and a later
sync replaces the adapters in place."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from creason.config import LoraSettings
from creason.models.lora import adapter_weights, add_lora
from creason.rollout.engine import VllmEngine
from creason.rollout.types import SamplingSpec

PROMPT = [{"role": "user", "content": "Lactate 4.5, MAP 58. Septic shock? A) Yes B) No"}]
SETTINGS = LoraSettings(rank=8, alpha=16)


def teacher_forced(model, prompt_ids: list[int], token_ids: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1]
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(token_ids)[:, None]).squeeze(-1)


def set_lora_b(model, std: float, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture(scope="module")
def lora_engine(tiny_model_dir):
    threads = torch.get_num_threads()
    eng = VllmEngine(str(tiny_model_dir), max_model_len=512, kv_cache_memory_bytes=64 * 1024**2, num_threads=1,
                     lora=SETTINGS.model_dump())
    yield eng
    eng.close()
    torch.set_num_threads(threads)


def test_engine_samples_with_the_synced_adapters(lora_engine, tiny_model_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    policy = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), SETTINGS).eval()
    set_lora_b(policy, 0.05)
    assert lora_engine.load_weights(list(adapter_weights(policy).items())) > 0
    c = lora_engine.generate([PROMPT], SamplingSpec(n=1, temperature=1.0, max_tokens=16))[0][0]
    vllm = torch.tensor(c.logprobs)
    assert (vllm - teacher_forced(policy, c.prompt_token_ids, c.token_ids)).abs().mean() < 1e-3
    assert (vllm - teacher_forced(base, c.prompt_token_ids, c.token_ids)).abs().mean() > 1e-2  # the check can tell

    set_lora_b(policy, 0.0)  # the next sync: adapters that change nothing, loaded in place of the last
    lora_engine.load_weights(list(adapter_weights(policy).items()))
    c = lora_engine.generate([PROMPT], SamplingSpec(n=1, temperature=1.0, max_tokens=16))[0][0]
    assert (torch.tensor(c.logprobs) - teacher_forced(base, c.prompt_token_ids, c.token_ids)).abs().mean() < 1e-3
