r"""Format warm-up: teach the policy the study's answer format before GRPO, not the answers.

Why: SmolLM2-135M-Instruct names an option ("B. ...") but almost never writes `\boxed{B}` (0 of
200 test questions), so the study's reward is 0 for nearly every sample and GRPO has nothing to
compare. The warm-up fine-tunes the model on its own answers written in the format: for each of
`warmup.questions` training questions, the letter the model itself gives under the evaluation
protocol (its reasoning of at most `warmup.reasoning_tokens`, then the letter forced) becomes the
completion `<its reasoning> \boxed{X}`. With `warmup.answers: own` no ground truth is read: X is
drawn from the model's own probabilities over the question's letters at the forced step, so the
fine-tuning teaches the format while the letters it boxes keep the model's own distribution (in
expectation the cross-entropy of samples of a distribution has no gradient at that distribution),
and GRPO still has different answers to compare within a group. Its argmax would not do: this
model puts "D" first on 64% of questions, and learning that collapses every group to one answer.
`random` boxes one of the question's options drawn uniformly: no answer is taught and none of the
model's is kept, so every answer is GRPO's to learn. `ground_truth` boxes the right letter instead,
which is supervised fine-tuning: report it as its own row (with `reasoning_tokens: 0` neither asks the
model anything, so no engine starts).
`state_answer` names the option's text before the box, so that the record's signal is one target
whatever the option order. `restate_answer` also teaches the sentence the protocol's forced step
continues after the box, so that the forced letter is the one the model boxed (run 4 of
docs/results.md: they disagreed on half of the outcome questions, and the forced letter lost 17
points of their accuracy).

    examples = warmup_examples(...)        pure: token ids of prompts and target completions
    run_warmup(cfg)                        the stage: answers (vLLM actors), then Ray Train + DeepSpeed

The loss is the mean negative log-likelihood of the completion tokens over the whole batch of
every rank (the token count is summed across ranks, and DeepSpeed averages the gradients), so
N workers take the step one worker would on the same batch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from creason.atomic import write_text_atomic
from creason.storage import local_dir, push_run
from creason.config import CreasonConfig, WarmupConfig
from creason.contracts import LETTERS
from creason.evaluate.protocol import FORCE_SUFFIX

#: The completion's answer (X: the letter), as the study's reward parses it
#: (`creason.rewards.extract_boxed_letter`).
ANSWER_FORMAT = "\\boxed{X}"


@dataclass(frozen=True)
class WarmupExample:
    """One supervised example: the chat prompt's tokens and the target completion's tokens."""

    prompt_ids: list[int]
    completion_ids: list[int]
    letter: str


def target_completion(reasoning: str, letter: str, restate: bool = False, answer_text: str | None = None) -> str:
    r"""The completion the model is taught: its own reasoning (if any), then (`answer_text`) the text of
    the option it answers, then the boxed letter, then (`restate`) the letter again in the words the
    evaluation protocol's forced step continues.

    >>> target_completion("", "B"), target_completion("Lactate is high.\n", "D")
    ('\\boxed{B}', 'Lactate is high. \\boxed{D}')
    >>> target_completion("", "A", restate=True), target_completion("", "B", answer_text="Yes")
    ('\\boxed{A} Therefore, the answer is A.', 'Yes \\boxed{B}')
    """
    reasoning = reasoning.rstrip()
    answer = ANSWER_FORMAT.replace("X", letter) + (f"{FORCE_SUFFIX} {letter}." if restate else "")
    if answer_text is not None:
        answer = f"{answer_text} {answer}"
    return f"{reasoning} {answer}" if reasoning else answer


def own_letter(letter_logprobs: dict[str, float | None], u: float) -> str:
    """A letter drawn from the model's own probabilities of the question's letters (renormalised;
    a letter outside the engine's top log-probs, None, counts as 0) by the inverse CDF at u in [0, 1).

    >>> lp = {"A": math.log(0.2), "B": math.log(0.6), "C": None}
    >>> own_letter(lp, 0.1), own_letter(lp, 0.3), own_letter(lp, 0.99)
    ('A', 'B', 'B')
    """
    known = {x: v for x, v in letter_logprobs.items() if v is not None}
    if not known:
        raise ValueError(f"no log-prob for any letter of {sorted(letter_logprobs)}")
    top = max(known.values())
    weights = {x: math.exp(v - top) for x, v in known.items()}
    total, cumulative = sum(weights.values()), 0.0
    for x, w in weights.items():
        cumulative += w / total
        if u < cumulative:
            return x
    return x  # u within float error of 1


def warmup_examples(prompt_ids: list[list[int]], reasonings: list[str], letters: list[str], tokenizer: Any,
                    end_ids: list[int], restate: bool = False, answer_texts: list[str] | None = None
                    ) -> list[WarmupExample]:
    """Examples from each question's prompt tokens, the model's reasoning text and the letter to box
    (`target_completion`; `answer_texts`: the boxed options' texts, stated first); `end_ids` (the
    end-of-turn token) close every completion, so the model learns to stop."""
    texts = answer_texts if answer_texts is not None else [None] * len(letters)
    return [WarmupExample(list(p), tokenizer.encode(target_completion(r, x, restate, t), add_special_tokens=False)
                          + list(end_ids), x) for p, r, x, t in zip(prompt_ids, reasonings, letters, texts)]


def nll_loss(logp: Tensor, mask: Tensor, total_tokens: float) -> Tensor:
    """Summed negative log-likelihood of the masked tokens divided by `total_tokens` (the tokens of
    the whole batch, across ranks and micro-batches): micro-batch losses then add up to the batch's
    token mean.

    >>> nll_loss(torch.tensor([[-1.0, -2.0], [-4.0, 0.0]]), torch.tensor([[1, 1], [1, 0]]), 3.0)
    tensor(2.3333)
    """
    return -(logp * mask).sum() / total_tokens


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The examples' order in one epoch: a permutation that depends on (seed, epoch) only."""
    return np.random.default_rng([seed, epoch, 7]).permutation(n)


# ---- the worker loop (Ray Train) ------------------------------------------------------------


def warmup_loop_per_worker(loop_config: dict) -> None:
    """Entry point given to `TorchTrainer`: epochs of NLL steps, then rank 0 writes the model."""
    import ray.train
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from creason.train.batch import collate, micro_batches
    from creason.train.engine import build_deepspeed_engine, effective_mixed_precision, full_state_dict
    from creason.train.freeze import train_top_blocks
    from creason.train.metrics import say
    from creason.train.policy import sequence_logprobs

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = CreasonConfig.model_validate(loop_config["config"])
    w, t = cfg.warmup, cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(t.threads_per_worker)
    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(loop_config["model_path"])
    dtype = torch.bfloat16 if cfg.model.precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(loop_config["model_path"], dtype=dtype)
    train_top_blocks(model, t.trainable_layers)
    requested = w.resolved_mixed_precision(t)
    mixed_precision = effective_mixed_precision(requested, cfg.model.precision)
    if rank == 0:
        say(f"warm-up: mixed precision {requested} -> {mixed_precision}")
    examples = [WarmupExample(**e) for e in loop_config["examples"]]
    steps_per_epoch = math.ceil(len(examples) / w.batch_size)
    engine, scheduler = build_deepspeed_engine(
        model, lr=w.lr, warmup_steps=0, total_steps=w.epochs * steps_per_epoch, min_lr_ratio=1.0, zero_stage=t.zero_stage,
        precision=cfg.model.precision, grad_clip=t.grad_clip, micro_batch_size=w.micro_batch_size, world_size=world,
        mixed_precision=mixed_precision)
    pad = tokenizer.pad_token_id or 0
    losses: list[float] = []
    start = time.perf_counter()
    for epoch in range(w.epochs):
        order = epoch_order(len(examples), cfg.seed, epoch)
        for s in range(steps_per_epoch):
            batch = [examples[i] for i in order[s * w.batch_size:(s + 1) * w.batch_size]]
            total = float(sum(len(e.completion_ids) for e in batch))
            mine = batch[rank::world]
            rows = collate([e.prompt_ids for e in mine], [e.completion_ids for e in mine],
                           [[0.0] * len(e.completion_ids) for e in mine], [1.0] * len(mine), pad)
            summed = 0.0
            for chunk in micro_batches(rows, w.micro_batch_size):
                chunk = chunk.to(engine.device)
                logp, _ = sequence_logprobs(engine, chunk)
                loss = nll_loss(logp, chunk.response_mask, total) * world  # DeepSpeed averages over ranks
                engine.backward(loss, scale_wrt_gas=False)
                summed += float(loss.detach()) / world
            engine.step()
            step_loss = torch.tensor(summed, device=engine.device)
            if dist.is_initialized() and world > 1:
                dist.all_reduce(step_loss)
            losses.append(float(step_loss))
            if rank == 0:
                say(f"warm-up epoch {epoch + 1}/{w.epochs} step {s + 1}/{steps_per_epoch} | loss {losses[-1]:.4f}")
    state = full_state_dict(engine)  # collective at ZeRO-3: every rank takes part
    if rank == 0:
        save_model(Path(loop_config["model_out"]), engine.module, state, tokenizer)
        write_text_atomic(Path(loop_config["model_out"]).parent / "losses.json",
                          json.dumps({"loss": losses, "train_seconds": time.perf_counter() - start,
                                      "mixed_precision": mixed_precision}))
        push_run(cfg.output_dir, under="warmup")  # from the node that wrote it


def save_model(folder: Path, module: torch.nn.Module, state: dict, tokenizer: Any) -> Path:
    """A Hugging Face folder written beside `folder` and renamed into place (complete or absent)."""
    tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    module.save_pretrained(tmp, state_dict=state)
    tokenizer.save_pretrained(tmp)
    old = folder.with_name(f".old-{folder.name}-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


# ---- the stage (driver) ---------------------------------------------------------------------


def warmup_dir(cfg: CreasonConfig) -> Path:
    """`<output_dir>/warmup`: the warmed-up model (`model/`), `summary.json`, `losses.json`."""
    return local_dir(cfg.output_dir) / "warmup"


def run_warmup(cfg: CreasonConfig, answerer: Callable | None = None, log: Callable[[str], None] = print) -> dict:
    """The warm-up stage: the model's own letters on training questions (vLLM actors, the evaluation
    protocol; skipped when `needs_model_answers` says nothing of them is used), then NLL fine-tuning on them in the answer format (Ray Train + DeepSpeed with the
    `train.*` workers). Returns the summary (also in `<output_dir>/warmup/summary.json`); the model
    is in `<output_dir>/warmup/model`."""
    from ray.train.torch import TorchTrainer
    from transformers import AutoTokenizer

    from creason.data.schema import load_questions
    from creason.evaluate.run import default_answerer
    from creason.raycluster import connect
    from creason.rollout.engine import encode_chat
    from creason.paths import absolute_output_dir, checkpoint_root, resolve_model_path
    from creason.train.run import resolve_questions_dir, worker_run_config, worker_scaling

    connect(cfg.ray)
    cfg = cfg.model_copy(update={"output_dir": absolute_output_dir(cfg.output_dir)})  # workers run elsewhere
    w, t = cfg.warmup, cfg.train
    if w.batch_size < t.num_workers:
        raise ValueError(f"warmup.batch_size ({w.batch_size}) must be at least train.num_workers ({t.num_workers})")
    model_path, out = resolve_model_path(cfg), warmup_dir(cfg)
    started = time.perf_counter()
    questions = load_questions(resolve_questions_dir(cfg), "train", t.question_kinds, w.questions, cfg.seed)
    answers = []
    if needs_model_answers(w):
        log(f"warm-up: the model's own letters on {len(questions)} training questions "
            f"(reasoning of at most {w.reasoning_tokens} tokens, then the letter forced)")
        own = _with_evaluate(cfg, max_new_tokens=w.reasoning_tokens)
        answers, _ = (answerer or default_answerer(own, log))(model_path, questions)
    answered = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    letters = warmup_letters(w.answers, questions, answers, cfg.seed)
    end_ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    reasonings = ([tokenizer.decode(a.reasoning_token_ids, skip_special_tokens=True) for a in answers] if answers
                  else [""] * len(questions))
    texts = [q.option_text(x) for q, x in zip(questions, letters)] if w.state_answer else None
    examples = warmup_examples([encode_chat(tokenizer, q.prompt) for q in questions], reasonings, letters, tokenizer,
                               end_ids, w.restate_answer, texts)
    log(f"warm-up: {len(examples)} examples ({w.answers} letters), {w.epochs} epoch(s) of batches of {w.batch_size}")
    trainer = TorchTrainer(
        warmup_loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "model_path": model_path,
                           "examples": [e.__dict__ for e in examples], "model_out": str(out / "model")},
        **worker_scaling(t),
        run_config=worker_run_config(t, name="warmup", storage_path=str(checkpoint_root(out))),
    )
    trainer.fit()
    losses = json.loads((out / "losses.json").read_text())
    right = sum(x == q.ground_truth for x, q in zip(letters, questions))
    summary = {"model": str(out / "model"), "base_model": model_path, "answers": w.answers,
               "questions": len(questions), "question_ids": [q.question_id for q in questions], "letters": dict(sorted(Counter(letters).items())),
               "letters_right": right / len(letters), "first_completion": tokenizer.decode(examples[0].completion_ids),
               "forced_letters": dict(sorted(Counter(a.forced for a in answers).items())), "reasoning_tokens": w.reasoning_tokens,
               "mixed_precision": losses["mixed_precision"], "loss_first": losses["loss"][0], "loss_last": losses["loss"][-1], "steps": len(losses["loss"]),
               "answer_seconds": answered - started, "train_seconds": losses["train_seconds"],
               "seconds": time.perf_counter() - started}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    log(f"warm-up: loss {summary['loss_first']:.3f} -> {summary['loss_last']:.3f} in {summary['steps']} steps; "
        f"model: {summary['model']}")
    return summary


def warmup_letters(kind: str, questions: list, answers: list, seed: int) -> list[str]:
    """The letter each example boxes (`warmup.answers`): `own` draws from the model's own forced-letter
    probabilities, `random` one of the question's options uniformly (the format and the copy from the
    option's text to its letter, and no answer: every answer is left for GRPO to learn), `ground_truth`
    the right letter (supervised fine-tuning)."""
    rng = np.random.default_rng([seed, 11])
    if kind == "own":
        return [own_letter(a.letter_logprobs, u) for a, u in zip(answers, rng.random(len(answers)))]
    if kind == "random":
        return [LETTERS[int(rng.integers(len(q.options)))] for q in questions]
    return [q.ground_truth for q in questions]


def needs_model_answers(w: WarmupConfig) -> bool:
    """Whether the examples need the model's answers: its letters (`own`) or its reasoning. Boxing
    a drawn or the right letter with no reasoning (`random`, `ground_truth`, `reasoning_tokens: 0`) needs
    no engine.

    >>> [needs_model_answers(WarmupConfig(answers=a)) for a in ("own", "random", "ground_truth")]
    [True, False, False]
    """
    return w.answers == "own" or w.reasoning_tokens > 0


def _with_evaluate(cfg: CreasonConfig, **fields: Any) -> CreasonConfig:
    return cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update=fields)})
