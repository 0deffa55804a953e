"""`creason plan`: the memory formulas by hand, the refusal, and the CPU quickstart against its
measured per-process peaks (docs/benchmarks/grpo_step*.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from creason.cli import main
from creason.config import load_config
from creason.models.fetch import default_model_path
from creason.plan import (GIB, KNOWN_ARCHITECTURES, Architecture, Offer, engine_process, load_architecture,
                          offer_from_cluster, plan_run, training_worker)

DOCS = Path(__file__).resolve().parents[1] / "docs"
SMOL = KNOWN_ARCHITECTURES["HuggingFaceTB/SmolLM2-135M-Instruct"]
PHI4 = KNOWN_ARCHITECTURES["microsoft/phi-4"]
# 2 layers, h 8, i 16, V 10, 2 heads of 4 (q 8), 1 kv head (kv 4), untied head.
TOY = Architecture(layers=2, hidden=8, intermediate=16, vocab=10, heads=2, kv_heads=1, tied=False)
OFFER_8X80 = Offer(gpus=8, gpu_gib=80, host_gib=1000, source="test")


def test_parameter_counts():
    assert SMOL.params() == 134_515_008  # what transformers counts for the converted model (STACK.md)
    # Phi-4: per block 2*5120*5120 (q, o) + 2*5120*1280 (k, v) + 3*5120*17920 (MLP) + 2*5120 (norms)
    block = 52_428_800 + 13_107_200 + 275_251_200 + 10_240
    assert PHI4.layer_params() == block
    assert PHI4.params() == 2 * 100_352 * 5120 + 40 * block + 5120  # untied head: two V*h matrices
    # TOY: 8*8*2 + 8*4*2 + 3*8*16 + 2*8 = 128 + 64 + 384 + 16 = 592 a block
    assert TOY.params() == 2 * 80 + 2 * 592 + 8


def test_smollm_folder_matches_the_table():
    if not (default_model_path() / "config.json").exists():
        pytest.skip("SmolLM2 not fetched (creason fetch-model)")
    arch, source = load_architecture(default_model_path())
    assert arch == SMOL and source.endswith("config.json")


def test_known_architecture_when_not_a_folder():
    assert load_architecture("microsoft/phi-4") == (PHI4, "known architecture microsoft/phi-4")
    with pytest.raises(FileNotFoundError, match="not a known architecture"):
        load_architecture("someone/unknown-7b")


def _states(precision: str, stage: int, world: int, arch: Architecture = SMOL, trainable_layers=None) -> dict:
    return training_worker(arch, precision=precision, zero_stage=stage, world=world, micro_batch=1, prompt_tokens=0,
                           completion_tokens=0, group_size=1, share_prompt=False, gradient_checkpointing=False,
                           trainable_layers=trainable_layers, reference=False, gpu=True)


@pytest.mark.parametrize("precision, stage, world, bytes_per_param", [
    ("fp32", 0, 1, 4 + 4 + 8),          # Adam: weights, gradients, two moments = 16 bytes
    ("bf16", 0, 1, 2 + 2 + 12),         # mixed precision: + fp32 master and moments (K = 12): 16
    ("fp32", 1, 4, 4 + 4 + 8 / 4),      # ZeRO-1 shards the optimizer state
    ("fp32", 2, 4, 4 + 4 / 4 + 8 / 4),  # ZeRO-2 the gradients too
    ("fp32", 3, 4, 16 / 4),             # ZeRO-3 everything
    ("bf16", 3, 8, 16 / 8),
])
def test_zero_paper_bytes_per_parameter(precision, stage, world, bytes_per_param):
    t = _states(precision, stage, world)
    assert t["weights"] + t["gradients"] + t["optimizer"] == pytest.approx(bytes_per_param * SMOL.params())


def test_deepspeed_buffers():
    P = SMOL.params()
    assert _states("fp32", 0, 1)["DeepSpeed buffers"] == 0
    assert _states("bf16", 0, 1)["DeepSpeed buffers"] == 4 * P  # BF16_Optimizer's fp32 gradients
    # ZeRO-2 fp32 at 2 ranks: fp32 copy of the half partition + 2 buckets of 5e7 fp32 elements
    assert _states("fp32", 2, 2)["DeepSpeed buffers"] == 4 * P / 2 + 2 * 50_000_000 * 4
    # ZeRO-3 bf16, Phi-4 over 4: one 1e9-element fp32 gradient sub-group, the prefetch bucket and
    # the largest module gathered whole (the 100352 x 5120 embeddings)
    phi = _states("bf16", 3, 4, PHI4)["DeepSpeed buffers"]
    assert phi == 1e9 * 4 + (50_000_000 + 100_352 * 5120) * 2


def test_trainable_layers_shrink_gradients_optimizer_and_activations():
    block = SMOL.layer_params()
    assert SMOL.trainable_params(2) == 2 * block + 576  # tied: embeddings and head stay frozen
    assert PHI4.trainable_params(2) == 2 * PHI4.layer_params() + 5120 + 100_352 * 5120  # untied head trains
    assert SMOL.trainable_params(30) == SMOL.trainable_params(None) == SMOL.params()
    t = _states("fp32", 0, 1, trainable_layers=2)
    assert t["weights"] == 4 * SMOL.params()  # every weight is still held
    assert t["gradients"] == 4 * SMOL.trainable_params(2) and t["optimizer"] == 8 * SMOL.trainable_params(2)


def _activations(**kw) -> dict:
    args = dict(precision="fp32", zero_stage=0, world=1, micro_batch=4, prompt_tokens=10, completion_tokens=5,
                group_size=4, share_prompt=False, gradient_checkpointing=False, trainable_layers=None,
                reference=False, gpu=True)
    return training_worker(TOY, **{**args, **kw})


def test_activations_by_hand():
    # per token and block: 4h + 2q + 2kv + 4i = 32 + 16 + 8 + 64 = 120 elements
    assert TOY.activation_elements() == 120
    assert _activations()["activations"] == 4 * (10 + 5) * 2 * 120 * 4            # 60 tokens, 2 blocks, fp32
    assert _activations(share_prompt=True)["activations"] == (10 + 4 * 5) * 2 * 120 * 4  # prompt once: 30 tokens
    assert _activations(gradient_checkpointing=True)["activations"] == 60 * (2 * 8 + 120) * 4  # inputs + 1 block
    assert _activations(trainable_layers=1)["activations"] == 60 * 1 * 120 * 4     # frozen block not in the graph
    assert _activations(precision="bf16")["activations"] == 60 * 2 * 120 * 2
    assert _activations()["logits"] == 4 * 5 * 10 * 12                             # response tokens x V x 12 B
    assert _activations(reference=True)["reference"] == 4 * TOY.params()
    assert "weights for sync" in _activations(gpu=False) and "weights for sync" not in _activations()


def test_engine_terms():
    t = engine_process(PHI4, dtype="bf16", kv_cache_gib=20, gpu=True)
    assert t["weights"] == 2 * PHI4.params() and t["KV cache"] == 20 * GIB
    assert t["activations"] == 8192 * (2 * 17920 + 4 * 5120) * 2 + 256 * 100_352 * 4
    assert engine_process(PHI4, dtype="bf16", kv_cache_gib=20, tensor_parallel=2, gpu=True)["weights"] == PHI4.params()
    assert engine_process(SMOL, dtype="fp32", kv_cache_gib=0.5, gpu=False)["oneDNN packed weights"] == 4 * SMOL.params()


def test_paper_fits_8x80_with_the_reference_sharded_and_refuses_micro_batch_2():
    plan = plan_run(load_config("paper"), PHI4, OFFER_8X80, model="phi-4")
    assert plan.fits, plan.problems
    worker = next(n for n in plan.needs if n.role == "training worker")
    assert worker.terms["reference"] == pytest.approx(worker.terms["weights"])  # P b / W, as the policy's weights
    wider = plan_run(load_config("paper", ["train.micro_batch_size=2"]), PHI4, OFFER_8X80, model="phi-4")
    assert not wider.fits
    (problem,) = wider.problems
    assert problem.startswith("training worker: needs")
    assert "train.num_workers" in problem and "algorithm.beta" in problem
    rollout = next(n for n in wider.needs if n.role == "rollout actor")
    assert rollout.total < 80 and wider.phases["training"][0] == 8
    # the cluster files' two nodes (8 rollout + 8 training GPUs) fit
    two_nodes = plan_run(load_config("paper", ["train.num_workers=8", "rollout.num_actors=8", "train.micro_batch_size=2"]),
                         PHI4, Offer(16, 80, 1000, "test"), model="phi-4")
    assert two_nodes.fits, two_nodes.problems


def test_refusals_name_role_and_knob():
    kv = plan_run(load_config("paper", ["algorithm.beta=0", "rollout.kv_cache_gib=60"]), PHI4, OFFER_8X80, model="phi-4")
    (problem,) = kv.problems
    assert problem.startswith("rollout actor:") and "rollout.kv_cache_gib" in problem and "of KV cache fits" in problem
    few = plan_run(load_config("paper", ["algorithm.beta=0"]), PHI4, Offer(6, 80, 1000, "test"), model="phi-4")
    assert any(p.startswith("training: needs 8 GPUs") and "rollout.num_actors" in p for p in few.problems)
    small_host = plan_run(load_config("quickstart"), SMOL, Offer(0, 0, 8, "test"), model="smol", prompt_tokens=450)
    assert any(p.startswith("training: CPU processes need") and "train.num_workers" in p for p in small_host.problems)


def test_cli_exit_status_and_message(capsys):
    args = ["plan", "--config", "paper", "--gpus", "8", "--gpu-gib", "80", "--host-gib", "1000",
            "--set", "train.micro_batch_size=2"]
    assert main(args) == 1
    out = capsys.readouterr()
    assert "DOES NOT FIT" in out.out
    assert "creason plan: does not fit: training worker" in out.err and "train.num_workers" in out.err
    assert main(args + ["--set", "algorithm.beta=0"]) == 0
    assert "verdict: every role fits" in capsys.readouterr().out


def test_offer_from_cluster():
    nodes = [24 * GIB, 500 * GIB]
    offer = offer_from_cluster({"CPU": 96, "GPU": 8, "accelerator_type:H100": 1}, nodes, None, None)
    assert (offer.gpus, offer.gpu_gib, offer.host_gib) == (8, 80, 500)
    with pytest.raises(ValueError, match="--gpu-gib"):
        offer_from_cluster({"GPU": 8, "accelerator_type:A100": 1}, nodes, None, None)  # 40 or 80 GB
    assert offer_from_cluster({"GPU": 8, "accelerator_type:A100": 1}, nodes, 80, 64).gpu_gib == 80
    assert offer_from_cluster({"CPU": 2}, nodes, None, None).gpus == 0


def _measured() -> list[dict[str, float]]:
    """Per-process PSS at the peak of `creason train --config quickstart` (GiB): the two runs of
    docs/benchmarks/grpo_step*.json, and the run of 2026-12-02 12:22 UTC quoted in
    docs/benchmarks.md (its JSON was replaced by the later run)."""
    runs = [{"worker": 6.66, "actor": 2.76, "total": 11.11}]
    for name in ("grpo_step.json", "grpo_step_frozen.json"):
        data = json.loads((DOCS / "benchmarks" / name).read_text())
        by = data["peak_pss_gib_by_process"]
        runs.append({"worker": by["ray::RayTrainWorker"], "actor": by["ray::RolloutWorker"],
                     "total": data["peak_pss_gib"]})
    return runs


def test_cpu_quickstart_within_15_percent_of_measured_peaks():
    # The measured runs trained on ~450-token registry prompts (docs/benchmarks.md, creason/train/policy.py).
    plan = plan_run(load_config("quickstart"), SMOL, Offer(0, 0, 24, "test"), model="smol", prompt_tokens=450)
    worker, actor = (next(n for n in plan.needs if n.role == role) for role in ("training worker", "rollout actor"))
    for run in _measured():
        assert worker.total == pytest.approx(run["worker"], rel=0.15)
        assert actor.total == pytest.approx(run["actor"], rel=0.15)
        assert plan.phases["training"][1] == pytest.approx(run["total"], rel=0.15)


def test_plan_module_imports_no_ray_or_torch():
    code = "import sys, creason.plan; print(sorted({'ray', 'torch', 'vllm'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
