"""One GRPO update of the policy on a batch of rollouts, through a DeepSpeed-like engine. No Ray.

The engine is a DeepSpeed engine built by `creason.train.engine.build_deepspeed_engine`, or a
`TorchEngine` (a plain model + optimizer with the same methods, for tests and local runs). Used:
`engine(**inputs)`, `engine.device`, `engine.backward(loss, scale_wrt_gas=False)`, `engine.step()`,
and, when present, `engine.get_global_grad_norm()` and `engine.get_lr()`. Micro-batches move to
the engine's device one at a time; the batch itself may stay on the CPU.

An update is `mu` passes over the batch; each pass accumulates the gradient over micro-batches and
takes ONE optimizer step, so all micro-batches of a pass see the same weights. Each micro-batch
loss is weighted by its share of the batch's loss units (tokens for "token_mean", sequences for
"seq_mean_token_mean"), so the accumulated gradient is that of the loss over the rank's whole
batch, whatever the micro-batch size. Across data-parallel ranks DeepSpeed averages gradients.

old_logp_source:
- "trainer" (default, standard GRPO): the ratio's denominator is the policy's own log-prob before
  the update. It equals the detached log-prob of pass 1 (no step has happened yet within it), so it
  costs no extra forward pass; on pass 1 the ratio is exactly 1 and the gradient is the plain policy
  gradient; passes 2..mu are clipped PPO steps against it.
- "sampler": the sampler's log-probs (vLLM's); the ratio then also corrects for a sampler/trainer
  numerical mismatch (an importance weight), and clipping bites already on pass 1.

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
from torch import Tensor

from creason.algo import clipped_policy_loss
from creason.train.batch import RolloutBatch, micro_batches
from creason.train.policy import sequence_logprobs

OLD_LOGP_SOURCES = ("trainer", "sampler")


class TorchEngine:
    """A torch model + optimizer (+ LR scheduler) with the DeepSpeed engine methods used here.

    step() clips the gradient norm (when grad_clip > 0), steps the optimizer and the scheduler, and
    clears the gradients, like a DeepSpeed engine at an accumulation boundary.
    """

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, lr_scheduler=None,
                 grad_clip: float = 0.0):
        self.module, self.optimizer, self.lr_scheduler, self.grad_clip = module, optimizer, lr_scheduler, grad_clip
        self._grad_norm: float | None = None

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def backward(self, loss: Tensor, scale_wrt_gas: bool = True) -> None:
        loss.backward()  # no gradient-accumulation scaling here: grpo_update weights the losses

    def step(self) -> None:
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        self._grad_norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm))
        self.optimizer.step()
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        self.zero_grad()

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


def loss_weights(chunks: list[RolloutBatch], agg: str) -> list[float]:
    """Each micro-batch's share of the batch's loss units, so that sum_k w_k * agg(chunk_k) = agg(batch).

    "token_mean": share of the response tokens; "seq_mean_token_mean": share of the sequences that
    have at least one response token. All 0 when the batch has no unit.
    """
    if agg == "token_mean":
        units = [float(c.response_mask.sum()) for c in chunks]
    elif agg == "seq_mean_token_mean":
        units = [float((c.response_mask.sum(-1) > 0).sum()) for c in chunks]
    else:
        raise KeyError(f"no micro-batch weighting for aggregation {agg!r}; add it to loss_weights")
    total = sum(units)
    return [u / total if total > 0 else 0.0 for u in units]


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
    eps_high: float = 0.28,
    beta: float = 0.0,
    agg: str = "token_mean",
    kl_estimator: str = "k3",
    temperature: float = 1.0,
    old_logp_source: str = "trainer",
    share_prompts: bool = False,
) -> dict[str, float]:
    """`mu` optimizer steps on `batch` (this rank's shard); returns float metrics.

    share_prompts: run each group's shared prompt once (`creason.train.policy`; not at ZeRO-3).

    Metrics: loss, pg_loss, clip_frac_low, clip_frac_high, ratio_mean (and kl when batch.ref_logp
    is set) as weighted means over micro-batches and passes; entropy (pass 1, nats/token);
    mismatch and mismatch_max (|sampler - trainer| log-prob before the update); grad_norm (mean
    over passes, when the engine reports it); lr (of the first step); tokens; seconds.
    """
    if old_logp_source not in OLD_LOGP_SOURCES:
        raise ValueError(f"old_logp_source must be one of {OLD_LOGP_SOURCES}, got {old_logp_source!r}")
    if mu < 1:
        raise ValueError(f"mu must be >= 1, got {mu}")
    _check_engine(engine)
    t0 = time.perf_counter()
    chunks = [c.to(device_of(engine)) for c in micro_batches(batch, micro_batch_size)]
    weights = loss_weights(chunks, agg)
    old_logps: list[Tensor] = [c.old_logp for c in chunks]  # replaced on pass 1 for "trainer"
    sums: dict[str, float] = {}
    mismatch_sum, mismatch_max, entropy_sum, grad_norms = 0.0, 0.0, 0.0, []
    lr = engine.get_lr()[0] if hasattr(engine, "get_lr") else None
    for i in range(mu):
        for k, (chunk, w) in enumerate(zip(chunks, weights)):
            logp, entropy = sequence_logprobs(engine, chunk, temperature, with_entropy=i == 0, share_prompts=share_prompts)
            if i == 0:  # no step taken yet: logp is the policy before the update
                s, m = _masked_abs_diff(chunk.old_logp, logp.detach(), chunk.response_mask)
                mismatch_sum, mismatch_max = mismatch_sum + s, max(mismatch_max, m)
                entropy_sum += float(entropy.sum())  # already 0 off the response mask
                if old_logp_source == "trainer":
                    old_logps[k] = logp.detach()
            loss, metrics = clipped_policy_loss(
                logp, old_logps[k], chunk.advantages, chunk.response_mask, eps_low, eps_high,
                ref_logp=chunk.ref_logp, beta=beta, agg=agg, kl_estimator=kl_estimator,
            )
            # even when w == 0 (padding rows): ZeRO-2 reduces gradients inside backward, on every rank
            engine.backward(loss * w, scale_wrt_gas=False)
            _add(sums, "loss", w * float(loss.detach()))
            for name, value in metrics.items():
                _add(sums, name, w * float(value))
        engine.step()
        norm = engine.get_global_grad_norm() if hasattr(engine, "get_global_grad_norm") else None
        if norm is not None:
            grad_norms.append(float(norm))
    out = {name: total / mu for name, total in sums.items()}
    tokens = batch.num_tokens
    out.update(entropy=entropy_sum / max(tokens, 1), mismatch=mismatch_sum / max(tokens, 1),
               mismatch_max=mismatch_max, tokens=float(tokens))
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


def _add(sums: dict[str, float], name: str, value: float) -> None:
    sums[name] = sums.get(name, 0.0) + value


@torch.no_grad()
def compute_ref_logprobs(ref_model, batch: RolloutBatch, micro_batch_size: int | None = None,
                         temperature: float = 1.0, share_prompts: bool = False) -> Tensor:
    """Log-probs (B, T) of the batch's tokens under the reference model (for beta > 0), aligned as
    `batch.old_logp`; set them with `dataclasses.replace(batch, ref_logp=...)`."""
    T = batch.input_ids.shape[1]
    parts = []
    for chunk in micro_batches(batch, micro_batch_size or len(batch)):
        logp, _ = sequence_logprobs(ref_model, chunk.to(device_of(ref_model)), temperature, share_prompts=share_prompts)
        parts.append(torch.nn.functional.pad(logp, (0, T - logp.shape[1])).to(batch.input_ids.device))
    return torch.cat(parts)
