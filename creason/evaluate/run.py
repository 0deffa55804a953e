"""The evaluation, top to bottom: questions -> baselines -> each model's answers (vLLM actors)
-> numbers with intervals and tests -> results.json, answers.jsonl, report.md, plots.

    creason evaluate --config quickstart --set evaluate.max_questions=200
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Callable

from creason.config import CreasonConfig, EvalConfig
from creason.contracts import Question
from creason.data.schema import load_questions
from creason.evaluate.outputs import question_records, read_metrics, to_json, write_atomic, write_jsonl
from creason.evaluate.questions import answer_counts, answered_records
from creason.evaluate.record_regression import RecordRegression
from creason.evaluate.report import pct, pick_examples, render_report
from creason.evaluate.scoring import System, baseline_systems, model_system, score_systems
from creason.paths import latest_policy, questions_dir, resolve_model_path, train_metrics_path
from creason.storage import local_dir

#: `answerer(model_path, questions) -> (answers in question order, run stats)`.
Answerer = Callable[[str, list[Question]], tuple[list, dict]]


def _label(entry: str) -> tuple[str, str]:
    """`label=folder` or a folder (labelled by its name; `.../step_N/policy` by `step_N`)."""
    label, sep, path = entry.partition("=")
    if sep and "/" not in label:
        return label.strip(), path.strip()
    folder = Path(entry.rstrip("/"))
    return (folder.parent.name if folder.name == "policy" else folder.name), entry


def resolve_models(cfg: CreasonConfig) -> list[tuple[str, str]]:
    """(label, folder) of each model to evaluate, labels made unique; a LoRA adapter folder is
    evaluated as its merged model (`creason.models.lora.plain_model_folder`)."""
    from creason.models.lora import plain_model_folder

    if cfg.evaluate.models:
        models = [_label(m) for m in cfg.evaluate.models]
    else:
        models = [("base model", resolve_model_path(cfg))]
        if (found := latest_policy(cfg.output_dir)) is not None:
            models.append((f"trained (step {found[0]})", str(found[1])))
    seen: dict[str, int] = {}
    unique = []
    for label, path in models:
        seen[label] = seen.get(label, 0) + 1
        unique.append((label if seen[label] == 1 else f"{label} ({seen[label]})", str(plain_model_folder(path))))
    return unique


def metrics_path(cfg: CreasonConfig) -> Path | None:
    path = Path(cfg.evaluate.metrics_path or train_metrics_path(cfg.output_dir))
    return path if path.is_file() else None


def default_answerer(cfg: CreasonConfig, log: Callable[[str], None]) -> Answerer:
    """vLLM actors on the configured Ray cluster; fails fast if they cannot all be placed."""
    import ray

    from creason.evaluate.actor import ActorAnswerer
    from creason.raycluster import connect
    from creason.rollout.engine import ENGINE_DTYPES

    e = cfg.evaluate
    connect(cfg.ray)
    cpus = ray.cluster_resources().get("CPU", 0)
    if e.num_actors * e.cpus_per_actor > cpus:
        raise ValueError(f"evaluate.num_actors={e.num_actors} x cpus_per_actor={e.cpus_per_actor} exceeds the "
                         f"cluster's {cpus:g} CPUs: the actors would never start")
    engine_kwargs = {"dtype": ENGINE_DTYPES[e.precision],
                     "max_model_len": e.max_model_len, "kv_cache_memory_bytes": int(e.kv_cache_gib * 2**30),
                     "seed": e.seed, "enforce_eager": e.enforce_eager}
    return ActorAnswerer(e.num_actors, engine_kwargs, e.max_new_tokens, e.batch_size, e.cpus_per_actor,
                         e.gpus_per_actor, log)


def record_regression(qdir: Path, e: EvalConfig, log: Callable[[str], None]) -> RecordRegression | None:
    """The record-regression baseline fit on up to `e.record_baseline_questions` training questions."""
    if e.record_baseline_questions == 0:
        return None
    start = time.perf_counter()
    regression = RecordRegression(answered_records(qdir, e.record_baseline_questions, e.seed))
    log(f"record regression fit on the train split in {time.perf_counter() - start:.1f} s")
    return regression


def evaluate(cfg: CreasonConfig, answerer: Answerer | None = None, log: Callable[[str], None] = print) -> dict:
    """Run the evaluation of `cfg.evaluate`; returns the results (also in results.json)."""
    e = cfg.evaluate
    qdir = questions_dir(cfg, cfg.evaluate.questions_dir)
    questions = load_questions(qdir, e.split, e.question_kinds, e.max_questions, e.seed)
    if not questions:
        raise ValueError(f"no {'/'.join(e.question_kinds)} questions in the {e.split} split of {qdir}")
    models = resolve_models(cfg)
    log(f"evaluating {len(models)} model(s) on {len(questions)} {e.split} questions from {qdir}")
    answerer = answerer or default_answerer(cfg, log)
    try:
        train_counts = answer_counts(qdir, "train")
    except FileNotFoundError:
        log(f"no train split in {qdir}: the majority baseline guesses at random")
        train_counts = {}
    systems = baseline_systems(questions, train_counts, e.seed, record_regression(qdir, e, log) if train_counts else None)
    for k, (label, path) in enumerate(models, 1):
        log(f"[{k}/{len(models)}] {label}: {path}")
        answers, run = answerer(path, questions)
        systems.append(model_system(label, path, questions, answers, run))
        log(f"  {label}: accuracy {pct(systems[-1].correct.mean())}")
    results = score_systems(questions, systems, e.bootstrap_samples, e.confidence, e.seed)
    out = local_dir(cfg.output_dir) / e.output_subdir
    results["meta"] = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       "questions_dir": str(qdir), "split": e.split, "max_new_tokens": e.max_new_tokens,
                       "config": e.model_dump(mode="json"), "output_dir": str(out)}
    write_outputs(out, results, questions, systems, read_metrics(metrics_path(cfg)), e.examples, e.seed)
    log(f"report: {out / 'report.md'}")
    return results


def write_outputs(out: Path, results: dict, questions: list[Question], systems: list[System],
                  training: list[dict], n_examples: int, seed: int) -> dict[str, Path]:
    """Plots, answers.jsonl, report.md and results.json (last: its presence means all are there)."""
    from creason.evaluate.plots import plot_by_section, plot_overall, plot_training_curve

    out.mkdir(parents=True, exist_ok=True)
    plots = {"overall": plot_overall(results, out / "accuracy_overall.png"),
             "section": plot_by_section(results, out / "accuracy_by_section.png")}
    if training:
        plots["training"] = plot_training_curve(training, out / "training_curve.png")
    files = {**plots, "answers": write_jsonl(out / "answers.jsonl", question_records(questions, systems))}
    results["meta"]["files"] = sorted([p.name for p in files.values()] + ["report.md", "results.json"])
    report = render_report(results, questions, systems, pick_examples(questions, systems, n_examples, seed),
                           {k: p.name for k, p in plots.items()})
    files["report"] = write_atomic(out / "report.md", report)
    files["results"] = write_atomic(out / "results.json", to_json(results))
    return files
