"""DeepSpeed set-up for the policy, and its full weights for weight sync and export. No Ray.

Verified on CPU (gloo, DeepSpeed 0.19.8, torch 2.13): ZeRO stages 0, 1, 2 and 3 initialise and
train with a plain `torch.optim.AdamW` (DeepSpeed's CPU Adam would be JIT-compiled, ~2 min).
Two more choices keep start-up fast and the update explicit:

- `managed_gradient_accumulation: False`: `grpo_update` calls backward once per micro-batch and
  step() once per pass, and step() is the accumulation boundary, whatever the number of
  micro-batches (it may vary from batch to batch).
- On CPU, DeepSpeed JIT-compiles a shared-memory all-reduce op (`deepspeed_shm_comm`, ~70 s, cached
  in ~/.cache/torch_extensions) the first time a process initialises its communication backend.
  `build_deepspeed_engine(cpu_shm_comm=False)` (the default) skips it and all-reduces with gloo.
"""

from __future__ import annotations

import math
import os
import warnings
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from creason.ports import free_port

PRECISIONS = ("fp32", "bf16")
MIXED_PRECISIONS = ("no", "bf16")
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux); empty where `cpuinfo` cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def native_bf16() -> bool:
    """Whether this process's device computes in bfloat16 natively: a GPU that supports it, or a CPU
    with AVX512-BF16 or AMX units. Without them (an AVX2 CPU) autocast's bf16 is emulated: a warm-up
    step took over 8x its float32 time on a 2-core AVX2 machine (docs/benchmarks.md)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(CPU_BF16_FLAGS & cpu_flags())


def effective_mixed_precision(requested: str, precision: str = "fp32", native: bool | None = None) -> str:
    """`train.mixed_precision` as this worker runs it: `auto` is `bf16` where the device computes in
    bfloat16 natively (`native_bf16`) and the weights are float32, else `no`; `bf16` on a device
    without it runs, with a warning."""
    if requested == "no" or (requested == "auto" and precision != "fp32"):
        return "no"
    native = native_bf16() if native is None else native
    if requested == "bf16" and not native:
        warnings.warn("mixed_precision bf16 on a device with no native bfloat16 (a CPU without AVX512-BF16 or AMX): "
                      "its autocast is emulated and many times slower than float32; `auto` picks float32 here",
                      stacklevel=2)
    return "bf16" if requested == "bf16" or native else "no"


def cosine_with_warmup(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """LR multiplier for optimizer step `step` (0-based): linear warm-up, then cosine to min_ratio.

    Warm-up: (step + 1) / warmup for step < warmup, so the first step already learns. Then
    min_ratio + (1 - min_ratio) * (1 + cos(pi * progress)) / 2 with progress = (step - warmup) /
    (total - warmup) clamped to [0, 1]: 1 at step = warmup, min_ratio from step = total on.

    >>> [cosine_with_warmup(s, 2, 10) for s in (0, 1, 2, 6, 10, 11)]
    [0.5, 1.0, 1.0, 0.5, 0.0, 0.0]
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


BUCKET_ELEMENTS = 50_000_000


def deepspeed_config(
    *, micro_batch_size: int, grad_accum: int, world_size: int, zero_stage: int, precision: str, grad_clip: float,
    mixed_precision: str = "no",
) -> dict:
    """The DeepSpeed config dict.

    micro_batch_size * grad_accum * world_size is only DeepSpeed's bookkeeping of samples per step:
    `grpo_update` owns accumulation (managed_gradient_accumulation False) and scales its losses.
    grad_clip <= 0 turns clipping off. precision "bf16" keeps fp32 master weights in the optimizer.
    mixed_precision "bf16": the engine's forward runs under torch.autocast to bfloat16 (DeepSpeed's
    `torch_autocast`), the weights and the gradients' reduction staying in `precision`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISIONS}, got {mixed_precision!r}")
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0..3, got {zero_stage}")
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch_size * grad_accum * world_size,
        "managed_gradient_accumulation": False,
        "gradient_clipping": max(grad_clip, 0.0),
        # DeepSpeed's default buckets (5e8 elements) are 2 GB fp32 buffers per rank: more than a
        # 135M model's weights, gradients and Adam state together. 5e7 keeps them at 200 MB.
        "zero_optimization": {"stage": zero_stage, "reduce_bucket_size": BUCKET_ELEMENTS,
                              "allgather_bucket_size": BUCKET_ELEMENTS, "stage3_prefetch_bucket_size": BUCKET_ELEMENTS},
        "bf16": {"enabled": precision == "bf16"},
        # no module's gradients reduced in bf16 (DeepSpeed's default for linear layers at ZeRO 1-3): the
        # ranks' gradients add up in float32, as without autocast
        "torch_autocast": {"enabled": mixed_precision == "bf16", "dtype": "bfloat16", "lower_precision_safe_modules": []},
        "zero_allow_untested_optimizer": True,  # a plain torch AdamW under ZeRO
        "steps_per_print": None,
        "wall_clock_breakdown": False,
    }


def adamw(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """torch AdamW; weight decay on matrices only (not on norms and biases), as nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas)


def skip_cpu_shm_comm_build() -> None:
    """Make DeepSpeed all-reduce with the torch backend instead of compiling its CPU shm op.

    Takes effect if called before the process's first `deepspeed.initialize`."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":  # GPUs never build it; probing the ops costs ~1 s
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def build_deepspeed_engine(
    model: torch.nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    warmup_steps: int = 0,
    total_steps: int,
    min_lr_ratio: float = 0.0,
    zero_stage: int = 0,
    precision: str = "fp32",
    grad_clip: float = 1.0,
    micro_batch_size: int = 1,
    grad_accum: int = 1,
    world_size: int | None = None,
    cpu_shm_comm: bool = False,
    mixed_precision: str = "no",
):
    """(DeepSpeed engine, LambdaLR scheduler) for `model`; torch.distributed must be initialised
    (Ray Train does it; locally, `ensure_single_process_group()`).

    The optimizer is a plain torch AdamW (no DeepSpeed op compiles); the scheduler follows
    `cosine_with_warmup` per optimizer step and is stepped by the engine at each step().
    world_size None: the process group's.
    """
    import deepspeed
    import torch.distributed as dist

    if not cpu_shm_comm:
        skip_cpu_shm_comm_build()
    optimizer = adamw(model, lr, weight_decay, betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(cosine_with_warmup, warmup=warmup_steps, total=total_steps, min_ratio=min_lr_ratio)
    )
    world_size = dist.get_world_size() if world_size is None else world_size
    config = deepspeed_config(micro_batch_size=micro_batch_size, grad_accum=grad_accum, world_size=world_size,
                              zero_stage=zero_stage, precision=precision, grad_clip=grad_clip,
                              mixed_precision=mixed_precision)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
    return engine, scheduler


def ensure_single_process_group() -> None:
    """Initialise a gloo process group of world size 1 on a free local port, unless one exists."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_port())
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_WORLD_SIZE", "1")):
        os.environ[key] = value
    dist.init_process_group("gloo", rank=0, world_size=1)


def zero_stage_of(engine) -> int:
    """The engine's ZeRO stage (0 for a `TorchEngine`)."""
    stage = getattr(engine, "zero_optimization_stage", None)
    return int(stage()) if stage is not None else 0


@torch.no_grad()
def full_state_dict(engine, keep: bool = True, trainable_only: bool = False) -> dict[str, Tensor]:
    """The full model state dict, on CPU (copies), keyed by Hugging Face names; {} where `keep` is
    False (the ranks that do not send or write the weights: only they skip the CPU copy).
    `trainable_only`: the parameters that train alone (`requires_grad`: every rank agrees on them).

    ZeRO stage <= 2 keeps every parameter whole on every rank: the module's state dict is complete,
    and a rank that does not keep it does nothing. Stage 3 partitions parameters: each is gathered
    in turn with `deepspeed.zero.GatheredParameters`, a collective, so every rank calls this, and
    only the ranks that keep it copy. Tied parameters (embeddings and lm_head) stay one tensor
    under both names (copied once). A LoRA policy gives its merged weights (`merged_weights`).
    """
    from creason.models.lora import is_peft, merged_weights

    if is_peft(engine.module):  # LoRA (ZeRO 0-2 only): the adapters merged, under the base model's names
        return merged_weights(engine.module) if keep else {}
    gather = zero_stage_of(engine) == 3
    if not keep and not gather:
        return {}
    copies: dict[int, Tensor] = {}
    out = {}
    for name, tensor in engine.module.state_dict(keep_vars=True).items():
        if trainable_only and not tensor.requires_grad:
            continue
        key = id(tensor)
        if key not in copies:
            if gather and hasattr(tensor, "ds_id"):
                copies[key] = _gathered_copy(tensor, keep)
            else:
                copies[key] = tensor.detach().cpu().clone() if keep else None
        out[name] = copies[key]
    return out if keep else {}


def rollout_weights(engine, keep: bool, lora_sync: str | None = None, trainable_only: bool = False) -> dict[str, Tensor]:
    """What a weight sync sends the rollout engines ({} where `keep` is False): the adapters alone
    with LoRA synced as adapters (`lora_sync` "adapter", `LoraSettings.resolved_sync`), else the
    full weights (`full_state_dict`: merged ones with LoRA synced merged), or with `trainable_only`
    the weights that train alone (the rest never changes: `train.trainable_layers`)."""
    if lora_sync == "adapter":
        from creason.models.lora import adapter_weights

        return adapter_weights(engine.module) if keep else {}
    return full_state_dict(engine, keep=keep, trainable_only=trainable_only)


def _gathered_copy(param: Tensor, keep: bool = True) -> Tensor | None:
    import deepspeed

    with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
        return param.detach().cpu().clone() if keep else None


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of keeping them
    (Hugging Face's `gradient_checkpointing_enable`, non-reentrant): activation memory of one layer
    instead of all, for about one more forward pass of compute.

    Hugging Face checkpoints only in training mode, so the model is put in it, with dropout off
    (`nn.Dropout` modules and attention dropout at 0, as TRL's `disable_dropout`): log-probs stay
    those of evaluation mode, which the sampler's are compared with. Checkpointed layers ignore a
    KV cache, so a model called with one (`train.share_prompt_forward`) must not use this.
    """
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def build_reference(model: torch.nn.Module, *, zero_stage: int, precision: str, world_size: int,
                    device: torch.device, mixed_precision: str = "no"):
    """The frozen reference model (algorithm.beta > 0), placed as the policy is.

    ZeRO-3 (the policy partitioned over the W ranks): a DeepSpeed engine without an optimizer
    partitions the reference the same way (ZeRO-Inference), P/W weights a rank instead of a full
    copy (Phi-4 in bf16 on 4 GPUs: 7.3 GB instead of 29 GB each); its forward gathers each layer in
    turn, a collective, like the policy's. Below ZeRO-3 every rank holds the whole policy anyway,
    and the reference stays a plain module on the policy's device (`compute_ref_logprobs` applies
    `mixed_precision` to it; the ZeRO-3 engine applies its own).
    """
    model.eval().requires_grad_(False)
    if zero_stage < 3:
        return model.to(device)
    import deepspeed

    skip_cpu_shm_comm_build()
    config = deepspeed_config(micro_batch_size=1, grad_accum=1, world_size=world_size, zero_stage=3,
                              precision=precision, grad_clip=0.0, mixed_precision=mixed_precision)
    engine, _, _, _ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine


def reference_state(reference, keep: bool) -> dict[str, Tensor] | None:
    """The reference's full state dict for a checkpoint (rank 0 keeps it; a collective when the
    reference is partitioned, so every rank calls this); None on the ranks that do not keep it."""
    if zero_stage_of(reference) < 3:
        return reference.state_dict() if keep else None
    state = full_state_dict(reference, keep=keep)
    return state if keep else None


@torch.no_grad()
def load_reference(reference, state: dict[str, Tensor]) -> None:
    """Load a checkpoint's reference state (`reference_state`) into the reference. Partitioned
    (ZeRO-3): each parameter is gathered in turn, rank 0 copies the saved tensor into it and
    DeepSpeed partitions it again from rank 0's copy (a collective: call this on every rank)."""
    if zero_stage_of(reference) < 3:
        reference.load_state_dict(state)
        return
    import deepspeed
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    for name, param in reference.module.state_dict(keep_vars=True).items():
        if hasattr(param, "ds_id"):
            with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
                if rank == 0:
                    param.data.copy_(state[name])
        else:
            param.data.copy_(state[name])


def _module(model) -> torch.nn.Module:
    """The model a DeepSpeed engine wraps, or the model itself."""
    return getattr(model, "module", model)


@torch.no_grad()
def mix_policy_into_reference(reference, engine, alpha: float) -> None:
    """reference <- alpha * policy + (1 - alpha) * reference (`creason.algo.mix_reference`), one
    tensor at a time, on the reference's device.

    ZeRO-3 partitions the policy's parameters (0 elements on each rank). A reference partitioned
    like it (`build_reference`) mixes partition into partition, nothing gathered: both engines cut
    each parameter into the same W pieces. A whole reference gets each policy parameter gathered
    in turn (a collective: call this on every rank), at most one full parameter at a time. Tied
    tensors (embeddings and lm_head) are mixed once.
    """
    from creason.algo import mix_reference

    policy = engine.module.state_dict(keep_vars=True)
    ref_state = _module(reference).state_dict(keep_vars=True)
    if policy.keys() != ref_state.keys():
        raise KeyError(f"reference and policy state dicts differ in keys: {sorted(set(policy) ^ set(ref_state))[:5]}")
    gather = zero_stage_of(engine) == 3
    mixed: set[int] = set()
    for name, tensor in policy.items():
        ref = ref_state[name]
        if id(ref) in mixed:
            continue
        mixed.add(id(ref))
        if hasattr(ref, "ds_tensor") and hasattr(tensor, "ds_tensor"):  # both partitioned: piece by piece
            mix_reference({name: ref.ds_tensor}, {name: tensor.ds_tensor.detach()}, alpha, inplace=True)
        elif gather and hasattr(tensor, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([tensor], modifier_rank=None):
                mix_reference({name: ref}, {name: tensor.detach()}, alpha, inplace=True)
        else:
            mix_reference({name: ref}, {name: tensor.detach()}, alpha, inplace=True)
