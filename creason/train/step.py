"""One GRPO update of the policy on a batch of rollouts, through a DeepSpeed-like engine. No Ray.

The engine is a DeepSpeed engine built by `creason.train.engine.build_deepspeed_engine`, or a
`TorchEngine` (a plain model + optimizer with the same methods; tests and ray_jobs/gpu_check.py). Used:
`engine(**inputs)`, `engine.device`, `engine.backward(loss, scale_wrt_gas=False)`, `engine.step()`,
and, when present, `engine.get_global_grad_norm()` and `engine.get_lr()`. Micro-batches move to
the engine's device one at a time; the batch itself may stay on the CPU.

An update is `mu` passes over the batch; each pass accumulates the gradient over micro-batches and
takes ONE optimizer step, so all micro-batches of a pass see the same weights.

The loss is that of the *global* batch (all ranks' shards), whatever the number of ranks and the
micro-batch size: one all-reduce per update sums the loss units (tokens, and sequences with a
loss token) over the ranks (`global_loss_units`); each micro-batch loss divides by those global
counts (`creason.algo.aggregate`), so the parts of all ranks add up to the global loss. DeepSpeed
averages gradients over the N ranks, so each rank backpropagates N times its part: the averaged
gradient is the gradient of the global loss, as verl's `agg_loss(..., dp_size=N)`.

The ratio's denominator (standard GRPO) is the policy's own log-prob before the update. It equals
the detached log-prob of pass 1 (no step has happened yet within it), so it costs no extra forward
pass; on pass 1 the ratio is exactly 1 and the gradient is the plain policy gradient; passes 2..mu
are clipped PPO steps against it. The sampler's log-probs (vLLM's) enter only through `tis_cap`.

Truncated importance sampling (`tis_cap` = C): the policy-gradient term of each token is weighted
by min(exp(trainer logp - sampler logp), C), detached, with the trainer's log-prob before the
update: the gradient is then that of the sampler's distribution, the one the rollouts came from,
with the weight truncated at C to bound its variance (metric `tis_truncated_frac`: share of tokens
whose weight was cut to C).

The `mismatch` metric, mean |sampler logp - trainer logp| over response tokens before any update,
should be near 0 (float noise): a large value means the sampler does not run the trainer's
weights (broken weight sync) or a different temperature.

Dropout should be off (Hugging Face models load in eval mode; Llama's attention dropout is 0):
otherwise the trainer's log-probs are noisy and the ratio is not 1 on pass 1.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from creason.algo import LossUnits, clipped_policy_loss, truncated_is_weights
from creason.train.batch import RolloutBatch, micro_batches
from creason.train.collectives import collective_device
from creason.train.policy import sequence_logprobs

class TorchEngine:
    """A torch model + optimizer (+ LR scheduler) with the DeepSpeed engine methods used here.

    step() averages the gradients over the ranks of the default process group (when there is one
    of 2+ ranks), clips the gradient norm (when grad_clip > 0), steps the optimizer and the
    scheduler, and clears the gradients, like a DeepSpeed engine at an accumulation boundary.
    """

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, lr_scheduler=None,
                 grad_clip: float = 0.0, mixed_precision: str = "no"):
        self.module, self.optimizer, self.lr_scheduler, self.grad_clip = module, optimizer, lr_scheduler, grad_clip
        self.mixed_precision = mixed_precision
        self._grad_norm: float | None = None

    def __call__(self, *args, **kwargs):
        with mixed_precision_autocast(self.device, self.mixed_precision):  # as DeepSpeed's `torch_autocast`
            return self.module(*args, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def backward(self, loss: Tensor, scale_wrt_gas: bool = True) -> None:
        loss.backward()  # no gradient-accumulation scaling here: grpo_update weights the losses

    def step(self) -> None:
        self._average_gradients()
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        self._grad_norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm))
        self.optimizer.step()
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        self.zero_grad()

    def _average_gradients(self) -> None:
        world = world_size()
        if world == 1:
            return
        for p in (p for p in self.module.parameters() if p.requires_grad):
            if p.grad is None:  # a rank whose batch left a parameter out still takes part
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad.div_(world)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def get_global_grad_norm(self) -> float | None:
        return self._grad_norm

    def get_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def save_checkpoint(self, save_dir, tag: str, client_state: dict | None = None, save_latest: bool = False) -> None:
        """Like DeepSpeed's: model, optimizer and scheduler states in save_dir/tag/."""
        path = Path(save_dir) / tag
        path.mkdir(parents=True, exist_ok=True)
        state = {"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "lr_scheduler": None if self.lr_scheduler is None else self.lr_scheduler.state_dict(),
                 "client_state": client_state or {}}
        torch.save(state, path / "engine_state.pt")

    def load_checkpoint(self, load_dir, tag: str, load_optimizer_states: bool = True,
                        load_lr_scheduler_states: bool = True):
        """Like DeepSpeed's: returns (path, client_state)."""
        path = Path(load_dir) / tag
        state = torch.load(path / "engine_state.pt", weights_only=False)
        self.module.load_state_dict(state["module"])
        if load_optimizer_states:
            self.optimizer.load_state_dict(state["optimizer"])
        if load_lr_scheduler_states and self.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        return str(path), state["client_state"]


def world_size() -> int:
    """Data-parallel ranks: the default process group's size, 1 without one."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def global_loss_units(mask: Tensor, norm_tokens: float | None, device: torch.device | str = "cpu") -> LossUnits:
    """The loss units of every rank's shard together: one all-reduce (sum) of this rank's token and
    sequence counts of `mask` (B, T). device: the engine's (the collective runs there for NCCL, on
    the CPU for gloo: `collective_device`). Without a process group: this rank's own counts."""
    local = LossUnits.of(mask, norm_tokens)
    if world_size() == 1:
        return local
    counts = torch.tensor([local.tokens, local.sequences], dtype=torch.float64, device=collective_device(device))
    dist.all_reduce(counts)
    tokens, sequences = counts.tolist()
    return LossUnits(tokens, sequences, local.norm_tokens)


def _masked_abs_diff(a: Tensor, b: Tensor, mask: Tensor) -> tuple[float, float]:
    """(sum, max) of |a - b| over mask."""
    diff = (a - b).abs().masked_fill(~mask.bool(), 0.0)
    return float(diff.sum()), float(diff.max()) if diff.numel() else 0.0


def _check_engine(engine) -> None:
    managed = getattr(engine, "managed_gradient_accumulation", None)
    if managed is not None and managed() and engine.gradient_accumulation_steps() != 1:
        raise ValueError("grpo_update owns gradient accumulation: build the DeepSpeed engine with "
                         "deepspeed_config() (managed_gradient_accumulation=False)")


def grpo_update(
    engine,
    batch: RolloutBatch,
    *,
    mu: int = 1,
    micro_batch_size: int,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    agg: str = "token-mean",
    kl_estimator: str = "k3",
    temperature: float = 1.0,
    share_prompts: bool = False,
    clip_ratio_c: float | None = None,
    tis_cap: float | None = None,
    loss_norm_tokens: float | None = None,
) -> dict[str, float]:
    """`mu` optimizer steps on `batch` (this rank's shard); returns float metrics.

    Every rank of the process group must call it (one all-reduce of the loss units). agg: a mode
    of `creason.algo.AGGREGATIONS`; loss_norm_tokens: its constant for "seq-mean-token-sum-norm"
    (the maximum completion length; required by that mode). clip_ratio_c: dual-clip bound for
    A < 0 (None: off). tis_cap: truncated importance sampling cap (None: off).
    share_prompts: run each group's shared prompt once (`creason.train.policy`; not at ZeRO-3).

    Metrics: loss, pg_loss, clip_frac_low, clip_frac_high, ratio_mean (and kl when batch.ref_logp
    is set, clip_frac_dual with clip_ratio_c, tis_truncated_frac with tis_cap): this rank's part of
    the global value times the world size, averaged over passes, so that their mean over the ranks
    is the global batch's; entropy (pass 1, nats/token); mismatch and mismatch_max (|sampler -
    trainer| log-prob before the update); grad_norm (mean over passes, when the engine reports it);
    lr (of the first step); tokens; seconds.
    """
    if mu < 1:
        raise ValueError(f"mu must be >= 1, got {mu}")
    if agg == "seq-mean-token-sum-norm" and loss_norm_tokens is None:
        raise ValueError("seq-mean-token-sum-norm needs loss_norm_tokens (Dr. GRPO's constant, the max completion length)")
    if not torch.isfinite(batch.advantages).all():
        raise ValueError("non-finite advantages: score non-finite rewards 0 first (creason.algo.finite_rewards)")
    _check_engine(engine)
    t0 = time.perf_counter()
    device = device_of(engine)
    world = world_size()
    units = global_loss_units(batch.response_mask, loss_norm_tokens, device)  # the one all-reduce
    chunks = [c.to(device) for c in micro_batches(batch, micro_batch_size)]
    old_logps: list[Tensor | None] = [None] * len(chunks)  # the policy's before the update: set on pass 1
    is_weights: list[Tensor | None] = [None] * len(chunks)  # set on pass 1 with tis_cap
    sums: dict[str, float] = {}
    mismatch_sum, mismatch_max, entropy_sum, tis_truncated, grad_norms = 0.0, 0.0, 0.0, 0.0, []
    lr = engine.get_lr()[0] if hasattr(engine, "get_lr") else None
    for i in range(mu):
        for k, chunk in enumerate(chunks):
            logp, entropy = sequence_logprobs(engine, chunk, temperature, with_entropy=i == 0, share_prompts=share_prompts)
            if i == 0:  # no step taken yet: logp is the policy before the update
                s, m = _masked_abs_diff(chunk.old_logp, logp.detach(), chunk.response_mask)
                mismatch_sum, mismatch_max = mismatch_sum + s, max(mismatch_max, m)
                entropy_sum += float(entropy.sum())  # already 0 off the response mask
                if tis_cap is not None:
                    is_weights[k], cut = truncated_is_weights(logp, chunk.old_logp, tis_cap)
                    tis_truncated += float((cut & chunk.response_mask.bool()).sum())
                old_logps[k] = logp.detach()
            loss, metrics = clipped_policy_loss(
                logp, old_logps[k], chunk.advantages, chunk.response_mask, eps_low, eps_high,
                ref_logp=chunk.ref_logp, beta=beta, agg=agg, kl_estimator=kl_estimator, units=units,
                clip_ratio_c=clip_ratio_c, is_weights=is_weights[k],
            )
            # every chunk, even one of padding rows only (its loss is 0): ZeRO-2 reduces gradients
            # inside backward, on every rank; x world: DeepSpeed averages the ranks' gradients
            engine.backward(loss * world, scale_wrt_gas=False)
            _add(sums, "loss", world * float(loss.detach()))
            for name, value in metrics.items():
                _add(sums, name, world * float(value))
        engine.step()
        norm = engine.get_global_grad_norm() if hasattr(engine, "get_global_grad_norm") else None
        if norm is not None:
            grad_norms.append(float(norm))
    out = {name: total / mu for name, total in sums.items()}
    tokens = batch.num_tokens
    out.update(entropy=entropy_sum / max(tokens, 1), mismatch=mismatch_sum / max(tokens, 1),
               mismatch_max=mismatch_max, tokens=float(tokens))
    if tis_cap is not None:
        out["tis_truncated_frac"] = world * tis_truncated / max(units.tokens, 1.0)
    if grad_norms:
        out["grad_norm"] = sum(grad_norms) / len(grad_norms)
    if lr is not None:
        out["lr"] = float(lr)
    out["seconds"] = time.perf_counter() - t0
    return out


def device_of(model) -> torch.device:
    """Where `model` (an HF model, a DeepSpeed engine, a TorchEngine, any nn.Module) computes."""
    device = getattr(model, "device", None)
    return device if device is not None else next(model.parameters()).device


def mixed_precision_autocast(device: torch.device, mixed_precision: str):
    """torch.autocast to bfloat16 on `device` for `train.mixed_precision` "bf16"; disabled for "no"."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")


def _add(sums: dict[str, float], name: str, value: float) -> None:
    sums[name] = sums.get(name, 0.0) + value


@torch.no_grad()
def compute_ref_logprobs(ref_model, batch: RolloutBatch, micro_batch_size: int | None = None,
                         temperature: float = 1.0, share_prompts: bool = False, mixed_precision: str = "no") -> Tensor:
    """Log-probs (B, T) of the batch's tokens under the reference model (for beta > 0), aligned as
    `batch.old_logp`; set them with `dataclasses.replace(batch, ref_logp=...)`. `mixed_precision`:
    as the policy's forward (`train.mixed_precision`), so the KL starts at float noise."""
    T = batch.input_ids.shape[1]
    parts = []
    for chunk in micro_batches(batch, micro_batch_size or len(batch)):
        with mixed_precision_autocast(device_of(ref_model), mixed_precision):
            logp, _ = sequence_logprobs(ref_model, chunk.to(device_of(ref_model)), temperature, share_prompts=share_prompts)
        parts.append(torch.nn.functional.pad(logp, (0, T - logp.shape[1])).to(batch.input_ids.device))
    return torch.cat(parts)
