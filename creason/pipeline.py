"""Every stage in order, on one Ray cluster: questions -> evaluate the base model -> (format
warm-up, when `warmup.enabled`) -> GRPO -> evaluate again (base, warm-up and trained, with
intervals and McNemar) -> serve the checkpoint and ask it.

    creason quickstart                                   (the shipped quickstart config, locally)
    ray job submit --working-dir . -- python ray_jobs/pipeline.py --config paper

Each stage is the same code path as its own command (`build-questions`, `evaluate`, `train`,
`serve`). The base model answers once: greedy decoding is deterministic, so its answers from the
first evaluation are reused in the second. A summary (`summary.json`) records the time of every
stage and where each output is.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from creason.config import CreasonConfig
from creason.contracts import Question
from creason.evaluate.report import pct
from creason.paths import checkpoint_root, train_metrics_path
from creason.storage import exists, local_dir, push_run

STAGES = ("questions", "evaluate_base", "warmup", "train", "evaluate_trained", "serve")
BASE_LABEL = "base model"
WARMUP_LABEL = "warm-up"


def stages(cfg: CreasonConfig) -> list[str]:
    """The stages `cfg` runs: all of STAGES, less the warm-up unless `warmup.enabled`."""
    return [s for s in STAGES if s != "warmup" or cfg.warmup.enabled]


class CachedAnswerer:
    """An evaluation answerer that answers each (model, questions) pair once per process."""

    def __init__(self, answerer: Callable):
        self.answerer, self.cache = answerer, {}

    def __call__(self, model_path: str, questions: list[Question]):
        key = (str(model_path), tuple(q.question_id for q in questions))
        if key not in self.cache:
            self.cache[key] = self.answerer(model_path, questions)
        return self.cache[key]


@dataclass
class PipelineRun:
    """What the stages produced; `summary()` is what `summary.json` holds."""

    output_dir: Path
    seconds: dict[str, float] = field(default_factory=dict)
    manifest: dict | None = None
    base_results: dict | None = None
    results: dict | None = None
    checkpoint: str | None = None
    training: dict = field(default_factory=dict)
    warmup: dict = field(default_factory=dict)
    endpoint: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"output_dir": str(self.output_dir), "seconds": self.seconds, "total_seconds": sum(self.seconds.values()),
                "accuracy": accuracy_table(self.results or self.base_results), "comparisons": comparisons(self.results),
                "training": self.training, "warmup": self.warmup, "checkpoint": self.checkpoint, "endpoint": self.endpoint,
                "report": str(self.output_dir / "eval" / "report.md") if self.results else None}


def run_pipeline(cfg: CreasonConfig, keep_serving: bool = False, log: Callable[[str], None] = print) -> PipelineRun:
    """Run every stage of `cfg`; `keep_serving` leaves the endpoint up (on a cluster it always stays)."""
    from creason.evaluate.run import default_answerer
    from creason.raycluster import connect

    out = local_dir(cfg.output_dir)
    if exists(checkpoint_root(cfg.output_dir)):
        raise FileExistsError(f"{cfg.output_dir} holds an earlier run: remove it (`creason quickstart --fresh`) or choose "
                              "another output_dir with --set output_dir=...")
    connect(cfg.ray)
    run = PipelineRun(out)
    answerer = CachedAnswerer(default_answerer(cfg, log))
    todo = stages(cfg)
    for k, stage in enumerate(todo, 1):
        log(f"\n=== [{k}/{len(todo)}] {stage.replace('_', ' ')} ===")
        start = time.perf_counter()
        STAGE_FUNCTIONS[stage](cfg, run, answerer, keep_serving, log)
        run.seconds[stage] = time.perf_counter() - start
        log(f"=== {stage.replace('_', ' ')}: {run.seconds[stage]:.0f} s ===")
        write_summary(run)
        push_run(cfg.output_dir)  # each stage's outputs reach object storage as it ends
    return run


def _questions(cfg, run, answerer, keep_serving, log) -> None:
    from creason.data.pipeline import build_question_set

    run.manifest = build_question_set(cfg)


def _evaluate_base(cfg, run, answerer, keep_serving, log) -> None:
    from creason.evaluate.run import evaluate
    from creason.paths import resolve_model_path

    base = _with(cfg, evaluate={"models": [f"{BASE_LABEL}={resolve_model_path(cfg)}"], "output_subdir": "eval_base"})
    run.base_results = evaluate(base, answerer, log)


def _warmup(cfg, run, answerer, keep_serving, log) -> None:
    from creason.train.warmup import run_warmup

    run.warmup = run_warmup(cfg, log=log)


def _train(cfg, run, answerer, keep_serving, log) -> None:
    from creason.train.run import train

    result = train(cfg)
    run.checkpoint = str(result.checkpoint.path) if result.checkpoint else None
    run.training = learning_curve(out_records(cfg))


def _evaluate_trained(cfg, run, answerer, keep_serving, log) -> None:
    from creason.evaluate.run import evaluate
    from creason.paths import latest_policy, resolve_model_path

    found = latest_policy(cfg.output_dir)
    if found is None:
        raise FileNotFoundError(f"{checkpoint_root(cfg.output_dir)}: no complete training checkpoint to evaluate")
    step, policy = found
    warmed = [f"{WARMUP_LABEL}={run.warmup['model']}"] if run.warmup else []
    models = [f"{BASE_LABEL}={resolve_model_path(cfg)}", *warmed, f"trained (step {step})={policy}"]
    run.checkpoint = str(policy)
    run.results = evaluate(_with(cfg, evaluate={"models": models, "output_subdir": "eval"}), answerer, log)


def _serve(cfg, run, answerer, keep_serving, log) -> None:
    from creason.serve.client import deploy_and_ask

    cfg = _with(cfg, serve={"model_path": run.checkpoint or cfg.serve.model_path})
    run.endpoint = deploy_and_ask(cfg, keep_serving, log)


STAGE_FUNCTIONS = {"questions": _questions, "evaluate_base": _evaluate_base, "warmup": _warmup, "train": _train,
                   "evaluate_trained": _evaluate_trained, "serve": _serve}


def _with(cfg: CreasonConfig, **sections: dict) -> CreasonConfig:
    """A copy of `cfg` with some fields of some sections replaced (validated)."""
    data = cfg.model_dump(mode="json")
    for name, fields in sections.items():
        data[name] = {**data[name], **fields}
    return CreasonConfig.model_validate(data)


def out_records(cfg: CreasonConfig) -> list[dict]:
    path = train_metrics_path(cfg.output_dir)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def learning_curve(records: list[dict]) -> dict:
    """Mean reward and rollout accuracy of the first and the last quarter of the steps, and the
    validation accuracy (forced letter) at each check, when `train.eval_every` made any."""
    steps = [r for r in records if "reward_mean" in r]
    if not steps:
        return {}
    q = max(1, len(steps) // 4)
    first, last = steps[:q], steps[-q:]
    curve = {"steps": len(steps), "quarter_steps": q,
             "reward_first_quarter": _mean(first, "reward_mean"), "reward_last_quarter": _mean(last, "reward_mean"),
             "accuracy_first_quarter": _mean(first, "accuracy"), "accuracy_last_quarter": _mean(last, "accuracy")}
    checks = [(r["step"], r["val_accuracy"]) for r in records if "val_accuracy" in r]
    return {**curve, "val_accuracy": checks} if checks else curve


def _mean(records: list[dict], key: str) -> float:
    return sum(r.get(key, 0.0) for r in records) / len(records)


def accuracy_table(results: dict | None) -> list[dict]:
    if not results:
        return []
    return [{"system": s["name"], "accuracy": s["overall"]["accuracy"], "ci_low": s["overall"]["ci_low"],
             "ci_high": s["overall"]["ci_high"]} for s in results["systems"]]


def comparisons(results: dict | None) -> list[dict]:
    """The paired comparisons of the last model (the trained one, else the base) with every other
    system, as that model minus the other."""
    if not results:
        return []
    models = [s["name"] for s in results["systems"] if s["kind"] == "model"]
    focus, out = models[-1], []
    for c in results["comparisons"]:
        if focus not in (c["a"], c["b"]):
            continue
        sign = 1 if c["a"] == focus else -1
        low, high = sorted((sign * c["difference_ci_low"], sign * c["difference_ci_high"]))
        out.append({"a": focus, "b": c["b"] if sign == 1 else c["a"], "difference": sign * c["difference"],
                    "difference_ci_low": low, "difference_ci_high": high, "p_value": c["p_value"]})
    return out


def write_summary(run: PipelineRun) -> Path:
    from creason.evaluate.outputs import write_atomic

    return write_atomic(run.output_dir / "summary.json", json.dumps(run.summary(), indent=2, default=str))


def render_summary(run: PipelineRun) -> str:
    """The summary a person reads at the end."""
    s = run.summary()
    lines = ["", "=" * 72, "creason pipeline summary", "=" * 72, "time per stage:"]
    lines += [f"  {name.replace('_', ' '):<18} {sec:7.0f} s" for name, sec in s["seconds"].items()]
    lines.append(f"  {'total':<18} {s['total_seconds']:7.0f} s ({s['total_seconds'] / 60:.1f} min)")
    results = run.results or run.base_results
    if results:
        conf = results["bootstrap"]["confidence"]
        lines.append(f"accuracy on {results['n_questions']} {results['meta']['split']} questions "
                     f"(the study's protocol, {conf:.0%} bootstrap intervals):")
        lines += [f"  {a['system']:<30} {pct(a['accuracy']):>7}  ({pct(a['ci_low'])} to {pct(a['ci_high'])})"
                  for a in s["accuracy"]]
        lines += [f"  {c['a']} vs {c['b']}: {100 * c['difference']:+.1f} points "
                  f"({100 * c['difference_ci_low']:+.1f} to {100 * c['difference_ci_high']:+.1f}), McNemar p = {c['p_value']:.3g}"
                  for c in s["comparisons"]]
    if t := s["training"]:
        lines.append(f"training: {t['steps']} steps; mean reward {t['reward_first_quarter']:.3f} (first {t['quarter_steps']}) "
                     f"-> {t['reward_last_quarter']:.3f} (last {t['quarter_steps']}); rollout accuracy "
                     f"{pct(t['accuracy_first_quarter'])} -> {pct(t['accuracy_last_quarter'])}")
        if "val_accuracy" in t:
            lines.append("validation accuracy (forced letter) by step: "
                         + ", ".join(f"{step}: {pct(acc)}" for step, acc in t["val_accuracy"]))
    lines.append(f"checkpoint: {s['checkpoint']}")
    if s["report"]:
        lines.append(f"report and plots: {Path(s['report']).parent}/ (report.md, accuracy_*.png, training_curve.png)")
    if e := s["endpoint"]:
        lines.append(f"endpoint: {e['url']}/v1 ({e['state']}); sample registry question: {e['question']}")
        lines.append(f"  answered {e['answer']!r} in {e['seconds']:.1f} s (the record's true value: {e['true_value']!r})")
    lines.append(f"summary: {run.output_dir / 'summary.json'}")
    return "\n".join(lines)
