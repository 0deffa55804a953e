"""The vLLM engine in this process, on tiny random Llamas: sampling contract, greedy determinism,
in-place weight reload, and log-probs equal to a Hugging Face forward pass (the foundation of the
trainer/rollout mismatch metric). One engine start for the module."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from creason.rollout.engine import VllmEngine, encode_chat
from creason.rollout.types import SamplingSpec
from tests.tiny_model import build_tiny_model, top_block_weights

PROMPTS = [
    [{"role": "system", "content": "You are a clinician."}, {"role": "user", "content": "Lactate 4.5, MAP 58. Septic shock? A) Yes B) No"}],
    [{"role": "user", "content": "GCS 9 after a fall. Which option? A) CT B) Discharge C) Wait"}],
]


@pytest.fixture(scope="module")
def tiny_pair(tiny_model_dir, smollm2_dir, tmp_path_factory):
    """The tiny Llama and a twin that differs only in its random weights (seed 1)."""
    other = build_tiny_model(tmp_path_factory.mktemp("rollout-models") / "tiny-1", smollm2_dir, seed=1)
    return [tiny_model_dir, other]


@pytest.fixture(scope="module")
def engine(tiny_pair):
    threads = torch.get_num_threads()
    eng = VllmEngine(str(tiny_pair[0]), max_model_len=512, kv_cache_memory_bytes=64 * 1024**2, num_threads=1)
    yield eng
    eng.close()
    torch.set_num_threads(threads)


def hf_logprobs(model_dir, prompt_ids: list[int], token_ids: list[int], temperature: float = 1.0,
                replaced: dict | None = None) -> torch.Tensor:
    """log p(token_ids[t] | prompt, token_ids[:t]) from one teacher-forced Hugging Face forward pass
    (of the model in `model_dir` with the weights `replaced` put in)."""
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    if replaced:
        model.load_state_dict(replaced, strict=False)
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1] / temperature  # (T, V)
    return torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(token_ids)[:, None]).squeeze(-1)


def test_sampling_contract(engine):
    spec = SamplingSpec(n=3, temperature=0.9, top_p=0.95, max_tokens=12)
    groups = engine.generate(PROMPTS, spec)
    assert [len(g) for g in groups] == [3, 3]
    for i, group in enumerate(groups):
        for c in group:
            assert c.prompt_index == i
            assert c.prompt_token_ids == encode_chat(engine.tokenizer, PROMPTS[i])
            assert 1 <= len(c.token_ids) <= 12 and len(c.logprobs) == len(c.token_ids)
            assert all(math.isfinite(x) and x <= 0 for x in c.logprobs)
            assert c.text == engine.tokenizer.decode(c.token_ids, skip_special_tokens=True)
            assert c.finish_reason == ("length" if len(c.token_ids) == 12 else "stop")
    assert engine.last_stats.tokens == sum(len(c.token_ids) for g in groups for c in g)
    assert engine.last_stats.completions == 6 and engine.last_stats.seconds > 0


def test_greedy_is_repeatable(engine):
    first = engine.generate_greedy(PROMPTS, max_tokens=16)
    second = engine.generate_greedy(PROMPTS, max_tokens=16)
    assert [c.token_ids for c in first] == [c.token_ids for c in second]


def test_logprobs_are_raw_model_logprobs(engine, tiny_pair):
    """Sampled at temperature 0.9 / top-p 0.95, yet the log-probs are those of the model itself."""
    c = engine.generate(PROMPTS[:1], SamplingSpec(n=1, temperature=0.9, top_p=0.95, max_tokens=24))[0][0]
    rollout = torch.tensor(c.logprobs)
    assert (rollout - hf_logprobs(tiny_pair[0], c.prompt_token_ids, c.token_ids)).abs().mean() < 1e-3
    # and the check can tell: temperature-scaled log-probs are measurably different
    scaled = hf_logprobs(tiny_pair[0], c.prompt_token_ids, c.token_ids, temperature=0.9)
    assert (rollout - scaled).abs().mean() > 1e-2


def test_load_weights_changes_and_restores(engine, tiny_pair):
    original, other = (list(load_file(str(d / "model.safetensors")).items()) for d in tiny_pair)
    before = engine.generate_greedy(PROMPTS, max_tokens=16)
    try:
        assert engine.load_weights(other) > 0
        changed = engine.generate_greedy(PROMPTS, max_tokens=16)
        # random tied-embedding Llamas both greedily repeat the prompt's last token: compare log-probs
        assert [c.logprobs for c in changed] != [c.logprobs for c in before]
        c = changed[0]  # the new weights are the ones sampled from, the tied output head included
        assert (torch.tensor(c.logprobs) - hf_logprobs(tiny_pair[1], c.prompt_token_ids, c.token_ids)).abs().mean() < 1e-3
    finally:  # back, with the head under its own name too, as the trainer's state dict has it
        engine.load_weights(original + [("lm_head.weight", dict(original)["model.embed_tokens.weight"])])
    after = engine.generate_greedy(PROMPTS, max_tokens=16)
    assert [c.token_ids for c in after] == [c.token_ids for c in before]
    assert [c.logprobs for c in after] == [c.logprobs for c in before]


def test_loading_some_weights_replaces_those_alone_and_quietly(engine, tiny_pair):
    """A sync of the trainable weights: the top block and the final norm of the other model. The
    engine then samples from the first model with those replaced, no more and no less, and vLLM's
    per-layer warnings about the layers left out are not logged."""
    original, sent = load_file(str(tiny_pair[0] / "model.safetensors")), top_block_weights(tiny_pair[1])
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    layerwise = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    layerwise.addHandler(handler)
    try:
        engine.load_weights(iter(sent.items()))
        c = engine.generate_greedy(PROMPTS[:1], max_tokens=16)[0]
        mixed = hf_logprobs(tiny_pair[0], c.prompt_token_ids, c.token_ids, replaced=sent)
        assert (torch.tensor(c.logprobs) - mixed).abs().mean() < 1e-3
        unchanged = hf_logprobs(tiny_pair[0], c.prompt_token_ids, c.token_ids)
        assert (torch.tensor(c.logprobs) - unchanged).abs().mean() > 1e-2
        assert not [r for r in seen if "Failed to load weights" in r.getMessage()]
    finally:
        layerwise.removeHandler(handler)
        engine.load_weights(iter(original.items()))


def test_hf_engine_logprobs_and_cut(tiny_pair):
    """The fallback reports the same raw log-probs, and cuts rows at EOS or a stop string."""
    from creason.rollout.hf_engine import HfEngine, _end_of_completion

    hf = HfEngine(str(tiny_pair[0]))
    groups = hf.generate(PROMPTS, SamplingSpec(n=2, temperature=0.9, top_p=0.95, max_tokens=10))
    assert len({len(g[0].prompt_token_ids) for g in groups}) == 2  # one prompt is left-padded
    for c in (groups[0][1], groups[1][0]):
        assert len(c.token_ids) == len(c.logprobs) == 10 and c.finish_reason == "length"
        assert (torch.tensor(c.logprobs) - hf_logprobs(tiny_pair[0], c.prompt_token_ids, c.token_ids)).abs().max() < 1e-4

    tok = hf.tokenizer
    eos = tok.eos_token_id
    assert _end_of_completion([5, 6, eos, eos], {eos}, [], tok) == (3, "stop")
    ids = tok.encode("The answer is B. Then more", add_special_tokens=False)
    n, reason = _end_of_completion(ids, {eos}, ["B."], tok)
    assert reason == "stop" and tok.decode(ids[:n]).endswith("B.")
    assert _end_of_completion(ids, {eos}, ["Z."], tok) == (len(ids), "length")
