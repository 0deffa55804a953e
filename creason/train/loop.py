"""The GRPO loop, run by every Ray Train worker.

Rank 0 is the conductor: it draws the step's prompts, has the rollout actors sample them,
scores the completions and broadcasts the batch. Every rank trains on its shard (DeepSpeed
all-reduces the gradients); rank 0 then pushes the new weights to the actors.

    for step in range(start, steps):
        prompts  -> rollouts (vLLM actors, weights of version `step`)
        rewards  -> advantages                       (rank 0, pure functions)
        update   -> mu passes of the clipped loss    (all ranks, DeepSpeed)
        sync     -> actors load weights `step + 1`
        eval / checkpoint / metrics

With `train.async_rollouts`, rank 0 samples step + 1's groups in a thread (weights `step`) while
the ranks train on step's, and waits for them before the sync: one step off policy.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import ray
import ray.train
import torch
import torch.distributed as dist

from creason.algo import balanced_answer_weights, should_refresh_reference
from creason.atomic import write_text_atomic
from creason.config import CreasonConfig, TrainConfig
from creason.rollout.actor import answer_on_actors, generate_on_actors, wait_ready
from creason.rollout.types import SamplingSpec, step_sampling
from creason.rollout.sync import make_weight_sync
from creason.models.lora import add_lora, lora_sync
from creason.train.batch import collate, shard
from creason.train.checkpoint import load_checkpoint, save_checkpoint
from creason.train.collectives import mean_across_ranks
from creason.data.schema import load_questions
from creason.train.data import PromptStream, batch_fingerprint
from creason.train.engine import (build_deepspeed_engine, build_reference, effective_mixed_precision,
                                  enable_gradient_checkpointing, load_reference, mix_policy_into_reference,
                                  reference_state, rollout_weights)
from creason.train.freeze import train_top_blocks
from creason.train.metrics import MetricsLog, say
from creason.train.rollouts import group_prompts, load_rewards, regroup, score_rollouts
from creason.train.step import compute_ref_logprobs, grpo_update
from creason.train.trackers import make_trackers
from creason.storage import local_dir, pull_run, push_run


def _broadcast(obj, rank: int):
    """Send a picklable object from rank 0 to every rank."""
    box = [obj if rank == 0 else None]
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def shares_prompt_forward(t: TrainConfig) -> bool:
    """Whether the policy runs a group's shared prompt once (`train.share_prompt_forward`): not at
    ZeRO-3, where model calls must match across ranks, nor with gradient checkpointing, whose
    layers drop the KV cache the completions would read."""
    return t.share_prompt_forward and t.zero_stage < 3 and not t.gradient_checkpointing


def rollout_sampling(cfg: CreasonConfig) -> SamplingSpec:
    """How a training step samples its groups (before `step_sampling` seeds it for the step)."""
    r = cfg.rollout
    return SamplingSpec(n=r.group_size, temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens)


class GrpoTrainer:
    """State of one worker: the policy engine, the optional reference, data and actors."""

    def __init__(self, cfg: CreasonConfig, model_path: str, questions_dir: str, actors: list):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg, self.actors = cfg, actors
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        torch.set_num_threads(cfg.train.threads_per_worker)
        torch.manual_seed(cfg.seed)
        dtype = torch.bfloat16 if cfg.model.precision == "bf16" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        if cfg.train.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        t = cfg.train
        if cfg.model.lora is not None:  # the adapters train (rollouts get them or the merged weights: model.lora.sync)
            model = add_lora(model, cfg.model.lora)
        self.trainable = train_top_blocks(model, t.trainable_layers)
        self.mixed_precision = effective_mixed_precision(t.mixed_precision, cfg.model.precision)
        if self.rank == 0:
            say(f"mixed precision {t.mixed_precision} -> {self.mixed_precision}")
        self.engine, self.scheduler = build_deepspeed_engine(
            model, lr=t.lr, weight_decay=t.weight_decay, betas=(0.9, 0.999), warmup_steps=int(t.warmup_ratio * t.steps),
            total_steps=t.steps, zero_stage=t.zero_stage, precision=cfg.model.precision, grad_clip=t.grad_clip,
            micro_batch_size=t.micro_batch_size, grad_accum=1, world_size=self.world, mixed_precision=self.mixed_precision,
        )
        self.ref = None
        if cfg.algorithm.beta > 0:  # computes where the policy does, partitioned like it at ZeRO-3
            self.ref = build_reference(AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype),
                                       zero_stage=t.zero_stage, precision=cfg.model.precision, world_size=self.world,
                                       device=self.engine.device, mixed_precision=self.mixed_precision)
        self.stream = PromptStream(load_questions(questions_dir, "train", t.question_kinds), t.prompts_per_step, cfg.seed)
        self.val = load_questions(questions_dir, "validation", cfg.evaluate.question_kinds, t.eval_questions,
                                       cfg.evaluate.seed) if t.eval_every else []
        self.rewards = load_rewards(cfg.algorithm)
        self.answer_weights = (balanced_answer_weights([(q.variable, q.answer_text) for q in self.stream.questions])
                               if cfg.algorithm.answer_balance else None)
        self.share_prompts = shares_prompt_forward(t)
        self.sync = make_weight_sync(cfg.rollout.weight_sync, actors) if self.rank == 0 else None
        folder = local_dir(cfg.output_dir) / "train"
        if self.rank == 0:  # resume appends to the run's metrics, wherever this worker runs
            pull_run(cfg.output_dir, under="train")
        self.log = (MetricsLog(folder, t.steps, make_trackers(folder, t, cfg.model_dump(mode="json")))
                    if self.rank == 0 else None)
        self.spec = rollout_sampling(cfg)
        self.ahead_pool = (ThreadPoolExecutor(1, thread_name_prefix="rollouts-ahead")
                           if t.async_rollouts and self.rank == 0 else None)

    # ---- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        start = self.restore()
        if self.rank == 0:
            wait_ready(self.actors)  # their engines start beside these workers (`creason.train.run.train`)
        self.record_placement()
        if self.rank == 0:
            self.log.truncate(from_step=start)  # a re-done step replaces its earlier record
        self.push_weights(version=start, complete=True)  # actors start from the base model; resume needs ours
        resumed = {"resumed_from": start} if start else {}  # marks the first record after a restart
        if start == 0 and self.rank == 0 and self.val:  # the learning curve starts at the initial weights
            timings: dict[str, float] = {}
            self.log.write(0, {**self.evaluate(0, timings), **_timed(timings)})
        ready = None  # step's rollouts when they were sampled during the step before (`train.async_rollouts`)
        for step in range(start, self.cfg.train.steps):
            timings: dict[str, float] = {}
            batch = (ready or self.rollout(step, step, timings)) if self.rank == 0 else None
            batch, rollout_metrics = _broadcast(batch, self.rank)
            ahead = self.sample_ahead(step + 1)
            metrics = self.update(batch, timings)
            ready = self.wait_ahead(ahead, timings)  # before the sync: actors change weights between calls only
            self.push_weights(version=step + 1, timings=timings)
            self.refresh_reference(step + 1)
            metrics = {**rollout_metrics, **metrics, **self.evaluate(step + 1, timings), **_timed(timings), **resumed}
            self.report(step + 1, metrics)
            resumed = {}
        if self.rank == 0:
            self.log.close()
        if self.ahead_pool is not None:
            self.ahead_pool.shutdown()

    def sample_ahead(self, step: int) -> Future | None:
        """Rank 0 with `train.async_rollouts`: start sampling step `step`'s groups in a thread with the
        weights the actors hold now (version `step - 1`), to overlap the update of step `step - 1`."""
        if self.ahead_pool is None or step >= self.cfg.train.steps:
            return None
        return self.ahead_pool.submit(self.rollout, step, step - 1, {})

    @staticmethod
    def wait_ahead(ahead: Future | None, timings: dict):
        """The rollouts `sample_ahead` started; the wait for them is timed as `generate`: the part
        of their generation that the update did not hide."""
        if ahead is None:
            return None
        t0 = time.perf_counter()
        rollouts = ahead.result()
        timings["generate"] = time.perf_counter() - t0
        return rollouts

    def rollout(self, step: int, version: int, timings: dict):
        """Step `step`'s groups sampled by actors holding weights `version` (`step`, or `step - 1`
        with `train.async_rollouts`), scored, with their metrics."""
        questions = self.stream.batch(step)
        prompts, n = group_prompts(questions, self.spec.n, self.cfg.rollout.rotate_options)
        t0 = time.perf_counter()
        sampled, gen = generate_on_actors(self.actors, [q.messages for q in prompts],
                                          step_sampling(self.spec.model_copy(update={"n": n}), self.cfg.seed, step),
                                          version=version, recover=self.sync.catch_up)
        timings["generate"] = time.perf_counter() - t0
        completions, shown = regroup(prompts, sampled, self.spec.n)
        scored = score_rollouts(shown, completions, self.rewards, self.cfg.algorithm, self.answer_weights)
        timings["score"] = scored.metrics.pop("score_seconds")
        scored.metrics["generate_tokens_per_s"] = gen["tokens_per_s"]
        scored.metrics["generate_tokens"] = gen["tokens"]
        scored.metrics["generate_seconds"] = gen["seconds"]  # the call's own, overlapped with training or not
        scored.metrics["actor_restarts"] = gen["actor_restarts"]
        scored.metrics["completions"] = sum(len(group) for group in completions)
        scored.metrics["data_position"] = self.stream.position(step + 1)
        scored.metrics["batch"] = batch_fingerprint(questions)
        scored.metrics["weight_version"] = version
        scored.metrics["policy_lag"] = step - version  # optimizer steps between the sampling weights and the update's
        return scored, scored.metrics

    def update(self, scored, timings: dict) -> dict:
        if not scored.advantages:  # dynamic sampling left no group with a learning signal
            self.scheduler.step()  # the schedule follows the step number, updated or not
            return {"skipped_update": 1.0, "lr": self.scheduler.get_last_lr()[0]}
        batch = collate(scored.prompt_token_ids, scored.response_token_ids, scored.sampling_logprobs, scored.advantages,
                        pad_id=self.tokenizer.pad_token_id or 0, truncated_mask_out=scored.loss_mask_off,
                        group_ids=scored.group_ids)
        local = shard(batch, self.rank, self.world)
        a = self.cfg.algorithm
        if self.ref is not None:
            t0 = time.perf_counter()
            local.ref_logp = compute_ref_logprobs(self.ref, local, self.cfg.train.micro_batch_size,
                                                  share_prompts=self.share_prompts,
                                                  mixed_precision=self.mixed_precision)
            timings["reference"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics = grpo_update(self.engine, local, mu=a.mu, micro_batch_size=self.cfg.train.micro_batch_size,
                              eps_low=a.eps_low, eps_high=a.eps_high, beta=a.beta, agg=a.loss_aggregation,
                              kl_estimator=a.kl_estimator, temperature=1.0, share_prompts=self.share_prompts,
                              clip_ratio_c=a.clip_ratio_c, tis_cap=a.tis_cap,
                              loss_norm_tokens=a.loss_norm_tokens or self.cfg.rollout.max_new_tokens)
        timings["train"] = time.perf_counter() - t0
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        return {**mean_across_ranks(metrics, self.engine.device), "skipped_update": 0.0}

    def push_weights(self, version: int, timings: dict | None = None, complete: bool = False) -> None:
        """All ranks take part in gathering (ZeRO-3); rank 0 alone copies the weights and sends them:
        all of them where `complete` (a run's first sync) or `rollout.sync_frozen_weights`, else
        the trainable ones alone."""
        t0 = time.perf_counter()
        complete = complete or self.cfg.rollout.sync_frozen_weights
        state = rollout_weights(self.engine, keep=self.rank == 0, lora_sync=lora_sync(self.cfg), trainable_only=not complete)
        gathered = time.perf_counter()
        pushed = self.sync.push(list(state.items()), version, complete=complete) if self.rank == 0 else {}
        if timings is not None:
            timings["sync"] = time.perf_counter() - t0  # gather + put + every actor's reload
            timings["sync_gather"] = gathered - t0
            timings["sync_engine_load"] = pushed.get("load_seconds_max", 0.0)  # the slowest actor's engine reload

    def refresh_reference(self, step: int) -> None:
        a = self.cfg.algorithm
        if self.ref is not None and should_refresh_reference(step, a.ref_refresh_every):
            mix_policy_into_reference(self.ref, self.engine, a.ref_refresh_alpha)  # gathers under ZeRO-3

    def evaluate(self, step: int, timings: dict) -> dict:
        """Validation accuracy under the evaluation protocol (greedy reasoning of at most
        `evaluate.max_new_tokens`, then the letter forced) on `train.eval_questions` validation
        questions of `evaluate.question_kinds`, every `eval_every` steps and before the first, by
        the rollout actors with this step's weights (timed as phase `eval`)."""
        every = self.cfg.train.eval_every
        if self.rank != 0 or not every or step % every or not self.val:
            return {}
        t0 = time.perf_counter()
        answers = answer_on_actors(self.actors, self.val, self.cfg.evaluate.max_new_tokens, self.cfg.rollout.max_model_len,
                                   version=step)
        timings["eval"] = time.perf_counter() - t0
        return validation_metrics(self.val, answers)

    # ---- checkpoints and metrics -----------------------------------------------------------

    def restore(self) -> int:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return 0
        with checkpoint.as_directory() as d:
            state = load_checkpoint(Path(d), self.engine, self.scheduler)
        if self.ref is not None and state.get("reference") is not None:
            load_reference(self.ref, state["reference"])
        return int(state["step"])

    def record_placement(self) -> None:
        """Write `train/placement.json`: the Ray node of every rollout actor and training worker."""
        nodes = [None] * self.world if self.world > 1 else None
        mine = ray.get_runtime_context().get_node_id()
        if nodes is None:
            nodes = [mine]
        else:
            dist.all_gather_object(nodes, mine)
        if self.rank == 0:
            placement = {"train_workers": nodes, "rollout_actors": ray.get([a.node_id.remote() for a in self.actors])}
            write_text_atomic(self.log.folder / "placement.json", json.dumps(placement, indent=2))
            say(f"placement: rollout actors on nodes {sorted(set(placement['rollout_actors']))}, "
                f"training workers on nodes {sorted(set(nodes))}")

    def report(self, step: int, metrics: dict) -> None:
        """metrics.jsonl gets every metric; Ray Train (which logs each report of each rank) the step."""
        if self.rank == 0:
            self.log.write(step, {**metrics, "step": step})
        summary = {"step": step, **{k: metrics[k] for k in ("reward_mean", "accuracy") if k in metrics}}
        if step % self.cfg.train.checkpoint_every and step != self.cfg.train.steps:
            ray.train.report(summary)
            return
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(Path(d), self.engine, self.scheduler, self.tokenizer, step=step,
                            data_position=self.stream.position(step), config=self.cfg.model_dump(mode="json"),
                            reference=reference_state(self.ref, keep=self.rank == 0) if self.ref is not None else None)
            ray.train.report(summary, checkpoint=ray.train.Checkpoint.from_directory(d))
        if self.rank == 0:  # the metrics up to this checkpoint reach object storage with it
            push_run(self.cfg.output_dir, under="train")


def validation_metrics(questions: list, answers: list) -> dict:
    """val_accuracy (forced letter, the evaluation protocol's), the same per question kind,
    val_boxed_accuracy (first \\boxed{} letter right: the study's reward), val_reasoning_tokens."""
    right = [a.forced == q.ground_truth for q, a in zip(questions, answers)]
    out = {"val_accuracy": sum(right) / len(right), "val_questions": len(right),
           "val_boxed_accuracy": sum(a.boxed == q.ground_truth for q, a in zip(questions, answers)) / len(right),
           "val_reasoning_tokens": sum(a.reasoning_tokens for a in answers) / len(answers)}
    for kind in sorted({q.question_kind for q in questions}):
        hits = [r for r, q in zip(right, questions) if q.question_kind == kind]
        out[f"val_accuracy_{kind}"] = sum(hits) / len(hits)
    return out


def _timed(timings: dict) -> dict:
    return {f"time_{k}_s": v for k, v in timings.items()}


def train_loop_per_worker(loop_config: dict) -> None:
    """Entry point given to `TorchTrainer`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_ray_train_reports()
    cfg = CreasonConfig.model_validate(loop_config["config"])
    GrpoTrainer(cfg, loop_config["model_path"], loop_config["questions_dir"], loop_config["actors"]).run()


def _quiet_ray_train_reports() -> None:
    """Ray Train 2.60 logs every `report` of every rank at INFO (one long line each); the progress
    line and metrics.jsonl already say it. Its logger is named after its file."""
    import logging

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray: leave its logging as it is
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)
