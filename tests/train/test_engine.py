"""DeepSpeed set-up on CPU (gloo, world size 1): schedule and config by hand, one real update."""

import math

import pytest
import torch

from creason.train.engine import (
    adamw,
    build_deepspeed_engine,
    cosine_with_warmup,
    deepspeed_config,
    ensure_single_process_group,
    full_state_dict,
)
from creason.train.step import grpo_update
from tests.train import load_tiny, random_batch, weights

KW = dict(eps_low=0.2, eps_high=0.28, beta=0.0, agg="token-mean", kl_estimator="k3", temperature=1.0)


@pytest.fixture(scope="module")
def process_group():
    ensure_single_process_group()


def test_cosine_with_warmup_by_hand():
    # warm-up 4: (s + 1) / 4; then cos over steps 4..12: (1 + cos(pi * (s - 4) / 8)) / 2
    assert [cosine_with_warmup(s, 4, 12) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine_with_warmup(4, 4, 12) == 1.0
    assert cosine_with_warmup(6, 4, 12) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)  # 0.8536
    assert cosine_with_warmup(8, 4, 12) == pytest.approx(0.5)
    assert cosine_with_warmup(12, 4, 12) == pytest.approx(0.0)
    assert cosine_with_warmup(99, 4, 12) == pytest.approx(0.0)  # held at the floor past the end
    assert cosine_with_warmup(8, 4, 12, min_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cosine_with_warmup(0, 0, 10) == 1.0  # no warm-up


def test_deepspeed_config_by_hand():
    cfg = deepspeed_config(micro_batch_size=2, grad_accum=3, world_size=4, zero_stage=2, precision="bf16",
                           grad_clip=1.0)
    assert cfg["train_batch_size"] == 24 and cfg["train_micro_batch_size_per_gpu"] == 2
    assert cfg["gradient_accumulation_steps"] == 3 and cfg["managed_gradient_accumulation"] is False
    assert cfg["zero_optimization"]["stage"] == 2 and cfg["bf16"] == {"enabled": True}
    assert cfg["zero_optimization"]["reduce_bucket_size"] == 50_000_000  # not DeepSpeed's 2 GB default
    assert cfg["gradient_clipping"] == 1.0
    off = deepspeed_config(micro_batch_size=1, grad_accum=1, world_size=1, zero_stage=0, precision="fp32", grad_clip=0)
    assert off["bf16"] == {"enabled": False} and off["gradient_clipping"] == 0.0
    with pytest.raises(ValueError):
        deepspeed_config(micro_batch_size=1, grad_accum=1, world_size=1, zero_stage=0, precision="fp16", grad_clip=0)


def test_adamw_decays_matrices_only(tiny_model_dir):
    model = load_tiny(tiny_model_dir)
    decay, no_decay = adamw(model, 1e-3, 0.1, (0.9, 0.95)).param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_deepspeed_update_changes_weights(tiny_model_dir, process_group, zero_stage):
    model = load_tiny(tiny_model_dir)
    before = weights(model)
    engine, scheduler = build_deepspeed_engine(
        model, lr=1e-3, total_steps=10, warmup_steps=2, zero_stage=zero_stage, precision="fp32", grad_clip=1.0,
        micro_batch_size=2,
    )
    assert isinstance(engine.optimizer, torch.optim.AdamW) == (zero_stage == 0)  # no DeepSpeed CPU Adam
    m = grpo_update(engine, random_batch(), mu=2, micro_batch_size=2, **KW)
    assert math.isfinite(m["loss"]) and m["lr"] == pytest.approx(0.5e-3)  # first warm-up step
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-3)  # two optimizer steps taken
    after = full_state_dict(engine)
    assert after.keys() == before.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert after["lm_head.weight"] is after["model.embed_tokens.weight"]  # tied: one copy


def test_full_state_dict_gathers_zero3(tiny_model_dir, process_group):
    model = load_tiny(tiny_model_dir)
    before = weights(model)
    engine, _ = build_deepspeed_engine(model, lr=1e-3, total_steps=10, zero_stage=3)
    assert engine.module.model.norm.weight.numel() == 0  # partitioned away
    after = full_state_dict(engine)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_docstring_examples():
    import doctest

    from creason.train import engine

    assert doctest.testmod(engine).failed == 0
