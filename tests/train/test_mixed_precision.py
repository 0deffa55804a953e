"""`train.mixed_precision: bf16`: the training forward computes in bfloat16 (torch.autocast), the weights,
their gradients and the scored log-probs stay float32; the same through DeepSpeed and `TorchEngine`."""

import math

import pytest
import torch

from creason.config import ConfigError, load_config
from creason.train.engine import (build_deepspeed_engine, cpu_flags, deepspeed_config, effective_mixed_precision,
                                  ensure_single_process_group, full_state_dict)
from creason.train.policy import sequence_logprobs
from creason.train.step import TorchEngine, compute_ref_logprobs, grpo_update
from tests.train import load_tiny, random_batch, weights

KW = dict(eps_low=0.2, eps_high=0.28, beta=0.0, agg="token-mean", kl_estimator="k3", temperature=1.0)


def linear_output_dtypes(model) -> tuple[list[torch.dtype], list]:
    """(the dtypes the model's linear layers return, their hooks): what autocast changes."""
    seen: list[torch.dtype] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return seen, hooks


def test_deepspeed_config_turns_torch_autocast_on_for_bf16_only():
    kw = dict(micro_batch_size=1, grad_accum=1, world_size=1, zero_stage=0, precision="fp32", grad_clip=1.0)
    assert deepspeed_config(**kw, mixed_precision="bf16")["torch_autocast"] == {
        "enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}  # gradients reduced in float32
    assert deepspeed_config(**kw)["torch_autocast"]["enabled"] is False
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        deepspeed_config(**kw, mixed_precision="fp16")


def test_mixed_precision_needs_float32_weights():
    assert load_config("quickstart", ["train.mixed_precision=bf16"]).train.mixed_precision == "bf16"
    assert load_config("quickstart", ["train.mixed_precision=no"]).train.mixed_precision == "no"  # YAML's false
    with pytest.raises(ConfigError, match="train.mixed_precision=bf16 needs model.precision=fp32"):
        load_config("quickstart", ["train.mixed_precision=bf16", "model.precision=bf16"])


def test_warmup_mixed_precision_follows_grpo_unless_set():
    follows = load_config("quickstart", ["train.mixed_precision=bf16"])
    assert follows.warmup.resolved_mixed_precision(follows.train) == "bf16"
    own = load_config("quickstart", ["warmup.mixed_precision=bf16"])
    assert (own.warmup.resolved_mixed_precision(own.train), own.train.mixed_precision) == ("bf16", "no")
    off = load_config("quickstart", ["train.mixed_precision=bf16", "warmup.mixed_precision=no"])
    assert off.warmup.resolved_mixed_precision(off.train) == "no"
    with pytest.raises(ConfigError, match="warmup.mixed_precision=bf16 needs model.precision=fp32"):
        load_config("quickstart", ["warmup.mixed_precision=bf16", "model.precision=bf16"])


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16 fma\nbugs\t\t: spectre\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16", "fma"}
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize("requested, native, precision, used", [
    ("no", True, "fp32", "no"),
    ("auto", True, "fp32", "bf16"),
    ("auto", False, "fp32", "no"),  # an AVX2 CPU: autocast's bf16 would be emulated
    ("auto", True, "bf16", "no"),  # bf16 weights already compute in bf16
    ("bf16", True, "fp32", "bf16"),
])
def test_auto_mixed_precision_is_bf16_only_where_the_device_has_it(requested, native, precision, used):
    assert effective_mixed_precision(requested, precision, native) == used


def test_explicit_bf16_without_native_bf16_runs_with_a_warning():
    with pytest.warns(UserWarning, match="no native bfloat16.*`auto` picks float32"):
        assert effective_mixed_precision("bf16", "fp32", native=False) == "bf16"


def test_learning_recipe_warmup_picks_its_precision_by_the_hardware():
    cfg = load_config("learning")
    assert cfg.warmup.resolved_mixed_precision(cfg.train) == "auto" and cfg.train.mixed_precision == "no"


@pytest.mark.parametrize("zero_stage", [None, 0, 2])  # None: TorchEngine
def test_bf16_forward_float32_weights_and_log_probs(tiny_model_dir, zero_stage):
    """The linear layers compute in bf16 under the engine, the log-probs come back float32 and near
    (not equal to) float32's, and an update moves the float32 weights; no gradient is marked for a
    bf16 reduction."""
    from deepspeed.runtime.torch_autocast import has_comm_dtype

    model = load_tiny(tiny_model_dir)
    batch = random_batch()
    with torch.no_grad():
        fp32_logp, _ = sequence_logprobs(model, batch)
    before = weights(model)
    if zero_stage is None:
        engine = TorchEngine(model, torch.optim.AdamW(model.parameters(), lr=1e-3), grad_clip=1.0, mixed_precision="bf16")
    else:
        ensure_single_process_group()
        engine, _ = build_deepspeed_engine(model, lr=1e-3, total_steps=4, zero_stage=zero_stage, micro_batch_size=2,
                                           mixed_precision="bf16")
    assert not any(has_comm_dtype(p) for p in model.parameters())
    seen, hooks = linear_output_dtypes(model)
    with torch.no_grad():
        logp, _ = sequence_logprobs(engine, batch)
    for h in hooks:
        h.remove()
    assert seen and set(seen) == {torch.bfloat16}
    mask = batch.response_mask.bool()
    assert logp.dtype == torch.float32
    assert not torch.equal(logp[mask], fp32_logp[mask])
    torch.testing.assert_close(logp[mask], fp32_logp[mask], atol=0.1, rtol=0.02)  # bf16 rounding, not another model

    m = grpo_update(engine, batch, mu=1, micro_batch_size=2, **KW)
    after = weights(model) if zero_stage is None else full_state_dict(engine)
    assert math.isfinite(m["loss"]) and m["tokens"] == batch.num_tokens
    assert all(t.dtype == torch.float32 for t in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_reference_log_probs_follow_the_policy_precision(tiny_model_dir):
    """A plain reference module gets the policy's autocast, so the KL starts at float noise."""
    model = load_tiny(tiny_model_dir)
    batch = random_batch()
    fp32 = compute_ref_logprobs(model, batch)
    bf16 = compute_ref_logprobs(model, batch, mixed_precision="bf16")
    policy = TorchEngine(model, torch.optim.SGD(model.parameters(), lr=0.0), mixed_precision="bf16")
    with torch.no_grad():
        policy_logp, _ = sequence_logprobs(policy, batch)
    mask = batch.response_mask.bool()
    assert not torch.equal(fp32[mask], bf16[mask])
    torch.testing.assert_close(bf16, policy_logp)
