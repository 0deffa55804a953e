"""GPU check of the training path that runs without Ray or vLLM, on one GPU, in a few minutes.

    python ray_jobs/gpu_check.py                 # one GPU: bf16, NCCL, a ~125M-parameter Llama
    python ray_jobs/gpu_check.py --device cpu    # the same checks on CPU: fp32, gloo, a tiny Llama

Each check prints PASS, FAIL (with the error) or SKIP (with the reason), its time and the peak GPU
memory; a summary follows, and the exit status is 1 if a check failed.

- collectives    `mean_across_ranks` on this device's process group (NCCL on a GPU: one rank), and
                 what a CPU tensor on NCCL does (the bug it fixed)
- grpo_update    two GRPO passes (`grpo_update`, `TorchEngine`, torch AdamW) with a reference model
                 and the k3 KL, in bf16; the shared-prompt forward (KV cache) against the plain one
- weight_sync    `full_state_dict` (what the trainer pushes): CPU copies in Hugging Face names,
                 `lm_head.weight` sent, equal to the model's weights; other ranks copy nothing;
                 with the lower blocks frozen, a later sync's trainable weights alone
- zero3_refresh  DeepSpeed ZeRO-3 (bf16, torch AdamW, `build_deepspeed_engine`): one GRPO update,
                 the gathered weights, and the reference refresh (`mix_policy_into_reference`);
                 SKIP when DeepSpeed does not import

Needs only torch and transformers (DeepSpeed optional); creason is imported from this checkout,
and only its modules that import neither Ray, vLLM nor pydantic. Models are built here from a
`LlamaConfig` with random weights: no hub access.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # creason from this checkout, installed or not

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from creason.train.batch import RolloutBatch, collate  # noqa: E402
from creason.train.collectives import mean_across_ranks  # noqa: E402
from creason.train.engine import free_port, full_state_dict, rollout_weights  # noqa: E402
from creason.train.freeze import train_top_blocks  # noqa: E402
from creason.train.policy import sequence_logprobs  # noqa: E402
from creason.train.step import TorchEngine, compute_ref_logprobs, grpo_update  # noqa: E402

SIZES = {
    # ~125M parameters: a few seconds an update on a GPU, big enough for real kernels.
    "small": dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                  num_attention_heads=16, num_key_value_heads=4),
    "tiny": dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=1, num_key_value_heads=1),
}
# (groups, completions per group, prompt tokens, completion tokens) of the rollout batch.
BATCHES = {"small": (4, 4, 256, 256), "tiny": (2, 4, 8, 8)}
BETA, ALPHA = 0.04, 0.9
CHECKS = ("collectives", "grpo_update", "weight_sync", "zero3_refresh")


class Skip(Exception):
    """A check that cannot run here; the message says why."""


class Setup:
    def __init__(self, device: str, size: str):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.dtype = torch.bfloat16 if self.cuda else torch.float32  # bf16 matmuls are slow on most CPUs
        self.size = size

    def model(self, seed: int = 0) -> torch.nn.Module:
        """A Llama with random weights (tied embeddings, as SmolLM2), in eval mode as from_pretrained."""
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(seed)
        config = LlamaConfig(**SIZES[self.size], max_position_embeddings=2048, tie_word_embeddings=True)
        return LlamaForCausalLM(config).to(device=self.device, dtype=self.dtype).eval()

    def batch(self) -> RolloutBatch:
        """Groups of completions sharing a prompt, ragged lengths, advantages of both signs."""
        groups, g, prompt_len, response_len = BATCHES[self.size]
        vocab = SIZES[self.size]["vocab_size"]
        gen = torch.Generator().manual_seed(0)
        prompts, responses, advantages = [], [], []
        for _ in range(groups):
            prompt = torch.randint(5, vocab, (prompt_len,), generator=gen).tolist()
            for j in range(g):
                n = response_len - j * response_len // (2 * g)
                prompts.append(prompt)
                responses.append(torch.randint(5, vocab, (n,), generator=gen).tolist())
                advantages.append((j - (g - 1) / 2) / g)
        return collate(prompts, responses, [[-1.0] * len(r) for r in responses], advantages, pad_id=0)

    def memory(self) -> str:
        return f"peak {torch.cuda.max_memory_allocated(self.device) / 2**30:.2f} GiB" if self.cuda else "peak -"


# ---- the checks -------------------------------------------------------------------------------


def check_collectives(s: Setup) -> str:
    metrics = {"loss": 1.5, "tokens": 3, "note": "kept"}
    out = mean_across_ranks(metrics, s.device)  # a one-rank group: the mean is the value itself
    assert out == {"loss": 1.5, "tokens": 3.0, "note": "kept"}, out
    backend = dist.get_backend()
    if backend != "nccl":
        return f"{backend}: metrics all-reduced on the CPU"
    try:
        dist.all_reduce(torch.zeros(1))
        cpu = "a CPU tensor went through too"
    except Exception as e:  # what _mean_across_ranks did before
        cpu = f"a CPU tensor fails as expected ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
    return f"nccl: metrics all-reduced on {s.device}; {cpu}"


def check_grpo_update(s: Setup) -> str:
    model = s.model()
    reference = copy.deepcopy(model).requires_grad_(False)
    batch = s.batch()
    with torch.no_grad():
        plain, _ = sequence_logprobs(model, batch.to(s.device))
        shared, _ = sequence_logprobs(model, batch.to(s.device), share_prompts=True)
    mask = batch.response_mask.to(s.device).bool()
    gap = float((plain - shared).abs()[mask].max())
    tolerance = 0.15 if s.dtype == torch.bfloat16 else 1e-3
    assert gap < tolerance, f"shared-prompt log-probs differ from the plain forward by {gap:.3g} nats (> {tolerance})"
    batch.ref_logp = compute_ref_logprobs(reference, batch, micro_batch_size=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # lr 1e-3: AdamW on bf16 weights (no fp32 master copy here) would round a 1e-6 step away
    engine = TorchEngine(model, torch.optim.AdamW(model.parameters(), lr=1e-3), grad_clip=1.0)
    t0 = time.perf_counter()
    metrics = grpo_update(engine, batch, mu=2, micro_batch_size=4, beta=BETA, share_prompts=True)
    if s.cuda:
        torch.cuda.synchronize(s.device)
    seconds = time.perf_counter() - t0
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    assert not bad, f"metrics not finite: {bad}"
    changed = sum(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert changed == len(before), f"{len(before) - changed} of {len(before)} parameters did not change"
    assert all(p.dtype == s.dtype for p in model.parameters())
    tokens = 2 * int(batch.attention_mask.sum())
    return (f"{s.dtype}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, loss {metrics['loss']:.4f}, "
            f"kl {metrics.get('kl', float('nan')):.2e}, grad_norm {metrics.get('grad_norm', float('nan')):.3g}; "
            f"{tokens / seconds:,.0f} tokens/s over 2 passes; shared-prompt forward within {gap:.2g} nats")


def check_weight_sync(s: Setup) -> str:
    model = s.model()
    engine = TorchEngine(model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    assert full_state_dict(engine, keep=False) == {}  # another rank's share: nothing copied
    t0 = time.perf_counter()
    pairs = list(full_state_dict(engine).items())
    seconds = time.perf_counter() - t0
    names = [n for n, _ in pairs]
    assert "lm_head.weight" in names and len(set(names)) == len(names), names[-3:]
    own = model.state_dict()
    for name, tensor in pairs:
        assert tensor.device.type == "cpu" and tensor.dtype == s.dtype, (name, tensor.device, tensor.dtype)
        assert torch.equal(tensor, own[name].cpu()), name
    unique = {id(t): t for _, t in pairs}.values()
    gib = sum(t.numel() * t.element_size() for t in unique) / 2**30
    train_top_blocks(model, 1)  # a later sync with the lower blocks frozen: the top block and the norm alone
    top = rollout_weights(engine, keep=True, trainable_only=True)
    last = len(model.model.layers) - 1
    assert top and all(n.startswith(f"model.layers.{last}.") or n == "model.norm.weight" for n in top), list(top)[:3]
    assert all(torch.equal(t, own[n].cpu()) for n, t in top.items())
    return (f"{len(pairs)} tensors, {gib:.2f} GiB to CPU in {seconds:.2f} s ({gib / seconds:.1f} GiB/s), lm_head sent; "
            f"trainable alone: {len(top)} tensors")


def check_zero3_refresh(s: Setup) -> str:
    try:
        import deepspeed
    except Exception as e:  # absent, or present but broken on this machine
        raise Skip(f"DeepSpeed does not import: {type(e).__name__}: {str(e).splitlines()[0][:120]}") from None
    from creason.train.engine import build_deepspeed_engine, mix_policy_into_reference

    model = s.model()
    reference = copy.deepcopy(model).requires_grad_(False)
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    precision = "bf16" if s.dtype == torch.bfloat16 else "fp32"
    engine, _ = build_deepspeed_engine(model, lr=1e-3, total_steps=4, zero_stage=3, precision=precision,
                                       micro_batch_size=4, world_size=1)
    assert engine.module.model.norm.weight.numel() == 0, "parameters are not partitioned"
    batch = s.batch()
    batch.ref_logp = compute_ref_logprobs(reference, batch, micro_batch_size=4)
    metrics = grpo_update(engine, batch, mu=1, micro_batch_size=4, beta=BETA)  # no prompt sharing at ZeRO-3
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    policy = full_state_dict(engine)
    changed = sum(not torch.equal(policy[k], before[k].cpu()) for k in before)
    assert changed > 0, "the update changed no weight"
    mix_policy_into_reference(reference, engine, ALPHA)
    after = reference.state_dict()
    for k in before:  # tied tensors mixed once
        want = before[k].float().lerp(policy[k].to(before[k].device).float(), ALPHA).to(before[k].dtype)
        torch.testing.assert_close(after[k], want, msg=k)
    return f"DeepSpeed {deepspeed.__version__}, {precision}: loss {metrics['loss']:.4f}, {changed}/{len(before)} tensors " \
           f"changed, reference = {ALPHA} policy + {1 - ALPHA:.1f} reference after the refresh"


# ---- running them -----------------------------------------------------------------------------


def init_process_group(s: Setup) -> None:
    """One rank: NCCL on a GPU (as Ray Train sets up for GPU workers), gloo on CPU."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0",
                      WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    if s.cuda:
        torch.cuda.set_device(s.device)
    dist.init_process_group("nccl" if s.cuda else "gloo", rank=0, world_size=1)


def run(name: str, s: Setup) -> tuple[str, float, str, str]:
    if s.cuda:
        torch.cuda.synchronize(s.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(s.device)
    t0 = time.perf_counter()
    try:
        status, detail = "PASS", globals()[f"check_{name}"](s)
    except Skip as e:
        status, detail = "SKIP", str(e)
    except Exception as e:
        traceback.print_exc()
        status, detail = "FAIL", f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - t0
    print(f"{status} {name} ({seconds:.1f} s, {s.memory()}): {detail}", flush=True)
    return status, seconds, s.memory(), detail


def environment(s: Setup) -> str:
    import transformers

    try:
        import deepspeed

        ds = deepspeed.__version__
    except Exception:
        ds = "not importable"
    where = torch.cuda.get_device_name(s.device) + f", CUDA {torch.version.cuda}" if s.cuda else platform.processor() or "CPU"
    return (f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
            f"deepspeed {ds}; {where}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda (default when a GPU is visible) or cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="model size (default: small on a GPU, tiny on CPU)")
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {','.join(CHECKS)}")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    s = Setup(device, args.size or ("small" if device.startswith("cuda") else "tiny"))
    names = [n for n in args.checks.split(",") if n]
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        parser.error(f"unknown checks {unknown}; known: {', '.join(CHECKS)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("FAIL setup: --device cuda but torch sees no GPU", flush=True)
        return 1
    torch.manual_seed(0)
    start = time.perf_counter()
    print(f"gpu_check on {s.device} ({s.size} model): {environment(s)}", flush=True)
    init_process_group(s)
    results = {name: run(name, s) for name in names}
    dist.destroy_process_group()
    total = time.perf_counter() - start
    print("\nsummary")
    for name, (status, seconds, memory, _) in results.items():
        print(f"  {status:4} {name:14} {seconds:6.1f} s  {memory}")
    counts = {k: sum(r[0] == k for r in results.values()) for k in ("PASS", "FAIL", "SKIP")}
    print(f"gpu_check: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped in {total:.0f} s", flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
