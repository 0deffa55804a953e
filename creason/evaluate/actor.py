"""Evaluation on Ray: actors that each own a vLLM engine and run the protocol on batches of
questions, fed dynamically so a large test split scales with the number of actors."""

from __future__ import annotations

import time
from typing import Any, Callable

import ray

from creason.contracts import Question
from creason.evaluate.protocol import ModelAnswer, answer_questions


class EvalWorker:
    """Owns one `VllmEngine` of one model; made a Ray actor by `create_eval_actors`."""

    def __init__(self, model_path: str, engine_kwargs: dict, num_threads: int = 1):
        import torch

        from creason.rollout.engine import DEFAULT_MAX_MODEL_LEN, VllmEngine, resolve_dtype

        torch.set_num_threads(num_threads)  # before the engine: vLLM's CPU worker makes it a no-op after
        self.dtype = resolve_dtype(engine_kwargs.get("dtype", "float32"))  # "auto": decided on this actor's node
        self.engine = VllmEngine(model_path, num_threads=num_threads, **{**engine_kwargs, "dtype": self.dtype})
        self.max_model_len = engine_kwargs.get("max_model_len", DEFAULT_MAX_MODEL_LEN)

    def ready(self) -> str:
        """Returns once the engine has started: its dtype."""
        return self.dtype

    def answer(self, questions: list[Question], max_new_tokens: int) -> tuple[list[ModelAnswer], dict]:
        """The protocol's answers to `questions`, and {"questions", "tokens", "seconds", "reasoning_s", "forced_s"}."""
        start, timings = time.perf_counter(), {}
        answers = answer_questions(self.engine.llm, self.engine.tokenizer, questions, max_new_tokens, self.max_model_len,
                                   timings)
        tokens = sum(a.reasoning_tokens for a in answers)
        return answers, {"questions": len(answers), "tokens": tokens, "seconds": time.perf_counter() - start, **timings}


def create_eval_actors(n: int, model_path: str, engine_kwargs: dict, num_cpus: float = 1, num_gpus: float = 0) -> list:
    """Start `n` `EvalWorker`s (their engines load in the background: `ray.get(a.ready.remote())`)."""
    cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(EvalWorker)
    return [cls.remote(str(model_path), engine_kwargs, max(1, int(num_cpus))) for _ in range(n)]


def answer_on_actors(actors: list, questions: list[Question], max_new_tokens: int, batch_size: int = 16,
                     progress: Callable[[int, int, float], None] | None = None) -> tuple[list[ModelAnswer], dict]:
    """Answers in question order. Batches go to whichever actor is free (two queued per actor, so
    none idles between batches); `progress(done, total, seconds)` is called after each batch."""
    batches = [questions[i : i + batch_size] for i in range(0, len(questions), batch_size)]
    results: list[Any] = [None] * len(batches)
    pending: dict[Any, tuple[int, Any]] = {}
    start, done, next_batch = time.perf_counter(), 0, 0

    def submit(actor) -> None:
        nonlocal next_batch
        if next_batch < len(batches):
            pending[actor.answer.remote(batches[next_batch], max_new_tokens)] = (next_batch, actor)
            next_batch += 1

    for actor in actors:
        for _ in range(2):
            submit(actor)
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        index, actor = pending.pop(ref)
        results[index] = ray.get(ref)
        done += len(batches[index])
        submit(actor)
        if progress:
            progress(done, len(questions), time.perf_counter() - start)
    answers = [a for batch_answers, _ in results for a in batch_answers]
    seconds = time.perf_counter() - start
    summed = {k: sum(stats[k] for _, stats in results) for k in ("tokens", "reasoning_s", "forced_s")}
    return answers, {"questions": len(answers), "seconds": seconds, **summed,
                     "questions_per_s": len(answers) / seconds if seconds > 0 else 0.0}


def _wait_ready(actors: list, timeout_s: float) -> list[str]:
    """Block until every actor's engine has started (returns their dtypes); a clear error, not a hang, when some cannot
    be placed (their resources are held by something else) or start."""
    try:
        return ray.get([a.ready.remote() for a in actors], timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise TimeoutError(f"{len(actors)} evaluation actor(s) not ready after {timeout_s:.0f} s; free resources now: "
                           f"{ray.available_resources()} (another stage's actors may still hold them)") from None


class ActorAnswerer:
    """`answerer(path, questions) -> (answers, stats)` on fresh actors of that model, stopped after.

    Args:
        num_actors, num_cpus, num_gpus: actors and the resources each reserves.
        engine_kwargs: `VllmEngine` arguments (dtype, which may be "auto": see `resolve_dtype`;
            max_model_len, kv_cache_memory_bytes, seed).
        max_new_tokens, batch_size: see `EvalConfig`.
        log: where progress lines go.
    """

    def __init__(self, num_actors: int, engine_kwargs: dict, max_new_tokens: int, batch_size: int = 16,
                 num_cpus: float = 1, num_gpus: float = 0, log: Callable[[str], None] = print):
        self.num_actors, self.engine_kwargs = num_actors, engine_kwargs
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.num_cpus, self.num_gpus, self.log = num_cpus, num_gpus, log
        self.ready_timeout_s = 900.0  # a 14B model's engine on a GPU takes minutes; CPUs never do

    def __call__(self, model_path: str, questions: list[Question]) -> tuple[list[ModelAnswer], dict]:
        start = time.perf_counter()
        actors = create_eval_actors(self.num_actors, model_path, self.engine_kwargs, self.num_cpus, self.num_gpus)
        try:
            dtypes = sorted(set(_wait_ready(actors, self.ready_timeout_s)))
            start_s = time.perf_counter() - start
            self.log(f"  {len(actors)} actor(s) ready in {start_s:.0f} s ({', '.join(dtypes)})")

            def progress(done: int, total: int, seconds: float) -> None:
                eta = seconds / done * (total - done)
                self.log(f"  {done}/{total} questions | {done / seconds:.2f} q/s | ETA {eta:.0f} s")

            answers, stats = answer_on_actors(actors, questions, self.max_new_tokens, self.batch_size, progress)
        finally:
            for a in actors:
                ray.kill(a)
        return answers, {**stats, "start_seconds": start_s, "num_actors": self.num_actors, "dtype": ",".join(dtypes)}
