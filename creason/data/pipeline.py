"""Registry -> question Parquet, on Ray Data.

Phases (each timed):
1. ingest: generate synthetic blocks, or read and check the user's files; strip identifiers
   and absolute dates; assign splits. Written once to `_prepared/` inside the staging folder.
2. statistics: a keyed sample of training rows -> vocabularies, mixtures, MI bins.
3. mutual information: joint counts per shard of the sample, summed on the driver.
4. questions: each worker builds questions for its blocks and writes its own Parquet shards.
The output folder appears only when complete (staging folder, then rename).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from creason.atomic import write_text_atomic
from creason.config import CreasonConfig
from creason.data.dictionary import DataDictionary, load_dictionary, sepsis_dictionary
from creason.data.mutual_info import cardinalities, discretize, joint_counts, mi_variables, normalized_mi
from creason.data.prepare import KEY, SPLIT, SPLITS, prepare_table, shown_variables
from creason.data.questions import QuestionPlan, build_questions, make_plan
from creason.data.rand import uniform
from creason.data.registry import BadCell, RegistryError, read_registry_file, rejection_records
from creason.data.stats import compute_stats
from creason.paths import question_build_dir
from creason.raycluster import connect
from creason.timing import PhaseTimer

_SAMPLE_STREAM = 2
_TASKS_PER_WORKER = 4  # batches of items per Ray Data worker in a phase: fewer gaps, still balanced
PLAN_FILE = "plan.json"  # the QuestionPlan (statistics, MI removals, targets) of this build
_COUNTS_SCHEMA = pa.schema([("split", pa.string()), ("kind", pa.string()), ("count", pa.int64())])


def load_registry_dictionary(cfg: CreasonConfig) -> DataDictionary:
    if cfg.data.dictionary:
        return load_dictionary(cfg.data.dictionary).select(cfg.data.profile)
    return sepsis_dictionary(cfg.data.profile)


def one_arrow_thread(fn):
    """Run `fn` (a Ray Data task, which reserves one CPU) with Arrow's thread pool at one thread.
    Arrow's compute kernels and Parquet writer otherwise use every core inside a single task, so
    that 2 tasks ran no faster than 1 (1.07x, 2026-11-25); pinned, `ray.data_concurrency` is the
    parallelism."""

    @functools.wraps(fn)
    def pinned(*args, **kwargs):
        pa.set_cpu_count(1)
        return fn(*args, **kwargs)

    return pinned


def run_tasks(items: list[dict], fn, concurrency: int, **fn_kwargs) -> ray.data.Dataset:
    """`fn` over `items` as one Ray Data operator of at most `concurrency` one-CPU tasks, each
    given a batch of consecutive items (`fn` handles them one at a time, so memory stays that of
    one item).

    Each phase does all of its work (read, compute, write) inside `fn`, so that `concurrency` caps
    all of it: chained operators (a Parquet read, then a map, then a write) each get tasks of
    their own, and a "1 worker" build then ran on both cores (1 -> 2 workers: 1.16x,
    2026-12-02). A few batches per worker, not one per item: between two tasks a worker waited
    ~0.17 s for Ray Data to start the next one once both cores were busy.
    """
    tasks = max(1, min(len(items), _TASKS_PER_WORKER * concurrency))
    ds = ray.data.from_items(items, override_num_blocks=tasks)
    return ds.map_batches(one_arrow_thread(fn), batch_size=None, num_cpus=1,
                          compute=ray.data.TaskPoolStrategy(size=min(concurrency, tasks)), fn_kwargs=fn_kwargs)


def _paths(batch: dict) -> list[str]:
    return batch["path"].tolist()


# ---- phase 1: ingest ------------------------------------------------------------------------


def _generate_prepare_write(batch: dict, dictionary: DataDictionary, cfg: CreasonConfig, out_dir: str) -> pa.Table:
    from creason.data.synthetic import generate_block

    written = []
    for block in batch["block"].tolist():
        first = block * cfg.data.block_size
        n = min(cfg.data.block_size, cfg.data.num_patients - first)
        raw = generate_block(dictionary, n, cfg.seed, block, first)
        written += _write_blocks(_prepare(raw, dictionary, cfg), Path(out_dir), f"block-{block:06d}", cfg.data.block_size)
    return _written_table(written)


def _read_prepare_write(batch: dict, dictionary: DataDictionary, cfg: CreasonConfig, out_dir: str, rejected_dir: str) -> pa.Table:
    """Check every row (bad ones are recorded, not raised, so one run reports all files' problems)."""
    written = []
    for index, path in zip(batch["index"].tolist(), _paths(batch)):
        typed, problems = read_registry_file(path, dictionary, on_bad_row="reject")
        if problems:
            name = hashlib.sha256(path.encode()).hexdigest()[:16] + ".jsonl"
            write_text_atomic(Path(rejected_dir) / name, "".join(json.dumps(r) + "\n" for r in rejection_records(problems)))
        written += _write_blocks(_prepare(typed, dictionary, cfg), Path(out_dir), f"file-{index:06d}", cfg.data.block_size)
    return _written_table(written)


def _prepare(raw: pa.Table, dictionary: DataDictionary, cfg: CreasonConfig) -> pa.Table:
    s = cfg.questions.split
    return prepare_table(raw, dictionary, cfg.seed, (s.train, s.validation, s.test), cfg.questions.include_free_text)


def _write_blocks(table: pa.Table, out_dir: Path, stem: str, block_size: int) -> list[tuple[str, int]]:
    """Prepared rows as files of at most `block_size` rows (one question task each); (path, rows)."""
    written = []
    for k, start in enumerate(range(0, max(1, len(table)), block_size)):
        part = table.slice(start, block_size)
        if len(part):
            path = out_dir / f"{stem}-{k:04d}.parquet"
            _write_parquet_atomic(part, path)
            written.append((str(path), len(part)))
    return written


def _written_table(written: list[tuple[str, int]]) -> pa.Table:
    return pa.table({"path": pa.array([p for p, _ in written], pa.string()), "rows": pa.array([n for _, n in written], pa.int64())})


def ingest(cfg: CreasonConfig, dictionary: DataDictionary, staging: Path) -> tuple[list[str], int]:
    """Prepared rows (no identifiers, relative times, `_key`, `_split`) written under staging:
    their files and their number."""
    out_dir = str(staging / "_prepared")
    if cfg.data.source == "synthetic":
        blocks = -(-cfg.data.num_patients // cfg.data.block_size)
        written = run_tasks([{"block": b} for b in range(blocks)], _generate_prepare_write, cfg.ray.data_concurrency,
                            dictionary=dictionary, cfg=cfg, out_dir=out_dir)
    else:
        missing = [p for p in cfg.data.paths if not Path(p).exists()]
        if not cfg.data.paths or missing:
            raise FileNotFoundError(f"data.paths: registry files not found: {missing or 'none given'}")
        items = [{"index": i, "path": str(Path(p).resolve())} for i, p in enumerate(cfg.data.paths)]
        written = run_tasks(items, _read_prepare_write, cfg.ray.data_concurrency, dictionary=dictionary, cfg=cfg,
                            out_dir=out_dir, rejected_dir=str(staging / "_rejected"))
    files = written.to_pandas()
    problems = _recorded_problems(staging)
    if problems and cfg.data.on_bad_row == "fail":
        raise RegistryError(problems)
    if files.empty:
        raise ValueError(f"no registry rows to build questions from ({len({(p.file, p.row) for p in problems})} rows rejected)")
    files = files.sort_values("path")
    return files["path"].tolist(), int(files["rows"].sum())


# ---- phases 2 and 3: statistics and mutual information ----------------------------------------


def _sample_train_rows(batch: dict, rate: float) -> pa.Table:
    return pa.concat_tables([_sample_file(pq.read_table(p), rate) for p in _paths(batch)])


def _sample_file(table: pa.Table, rate: float) -> pa.Table:
    keys = table.column(KEY).to_numpy(zero_copy_only=False).astype(np.uint64)
    keep = (uniform(keys, _SAMPLE_STREAM)[:, 0] < rate) & pc.equal(table.column(SPLIT), "train").to_numpy(zero_copy_only=False)
    return table.filter(pa.array(keep))


@one_arrow_thread
def _count_pairs(batch: pa.Table, variables, stats) -> dict:
    cards = cardinalities(variables, stats)
    return {"counts": [joint_counts(discretize(batch, variables, stats), cards)]}


def plan_questions(cfg: CreasonConfig, dictionary: DataDictionary, files: list[str], rows: int, timer: PhaseTimer) -> tuple[QuestionPlan, dict]:
    shown = shown_variables(dictionary, cfg.questions.include_free_text)
    concurrency = cfg.ray.data_concurrency
    with timer("statistics"):
        rate = min(1.0, cfg.questions.stats_sample_rows / max(1.0, rows * cfg.questions.split.train))
        sample = run_tasks([{"path": f} for f in files], _sample_train_rows, concurrency, rate=rate).materialize()
        # Sorted by the keyed pseudonym: a random order that does not depend on block order.
        sample_table = pa.concat_tables([ray.get(r) for r in sample.to_arrow_refs()]).sort_by(KEY)
        if len(sample_table) == 0:
            raise ValueError("no training rows: the registry is empty or questions.split.train is 0")
        stats = compute_stats(sample_table, shown, cfg.questions.mixture_components, cfg.questions.mi_bins)
    with timer("mutual_information"):
        mi_vars = mi_variables(shown, stats)
        counts = sample.map_batches(_count_pairs, batch_format="pyarrow", num_cpus=1,
                                    compute=ray.data.TaskPoolStrategy(size=concurrency),
                                    fn_kwargs={"variables": mi_vars, "stats": stats})
        total = sum(np.asarray(c) for c in counts.to_pandas()["counts"])
        nmi = normalized_mi(total, cardinalities(mi_vars, stats))
    plan = make_plan(shown, stats, nmi, [v.name for v in mi_vars], cfg.questions, cfg.seed)
    info = {"rows": rows, "train_sample_rows": len(sample_table), "sample_rate": rate}
    return plan, info


# ---- phase 4: questions -----------------------------------------------------------------------


def write_question_shards(batch: dict, plan: QuestionPlan, out_dir: str) -> pa.Table:
    """Questions of each prepared file in the batch, written as one Parquet shard per split; counts."""
    return pa.concat_tables([_write_file_questions(pq.read_table(p), plan, out_dir) for p in _paths(batch)])


def _write_file_questions(table: pa.Table, plan: QuestionPlan, out_dir: str) -> pa.Table:
    questions = build_questions(table, plan)
    info = questions.column("extra_info").combine_chunks()
    split, kind = info.field("split"), info.field("question_kind")
    counts = []
    for name in SPLITS:
        in_split = pc.equal(split, name)
        part = questions.filter(in_split)
        if len(part) == 0:
            continue
        shard = f"part-{info.field('question_id')[0].as_py()}.parquet"  # stable name: first question of the block
        _write_parquet_atomic(part, Path(out_dir) / name / shard)
        counts += [{"split": name, "kind": c["values"], "count": c["counts"]} for c in pc.value_counts(pc.filter(kind, in_split)).to_pylist()]
    return pa.Table.from_pylist(counts, schema=_COUNTS_SCHEMA)


def write_questions(cfg: CreasonConfig, plan: QuestionPlan, files: list[str], out_dir: Path) -> dict:
    counts = run_tasks([{"path": f} for f in files], write_question_shards, cfg.ray.data_concurrency,
                       plan=plan, out_dir=str(out_dir)).to_pandas()
    summary: dict = {s: {} for s in SPLITS}
    for row in counts.itertuples():
        summary[row.split][row.kind] = summary[row.split].get(row.kind, 0) + int(row.count)
    return summary


# ---- the whole build --------------------------------------------------------------------------


def build_question_set(cfg: CreasonConfig) -> dict:
    """Run all phases; returns the manifest (also written as `manifest.json`)."""
    out = question_build_dir(cfg.output_dir)
    staging = out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    dictionary = load_registry_dictionary(cfg)
    connect(cfg.ray)
    timer = PhaseTimer()
    try:
        with timer("ingest"):
            files, rows = ingest(cfg, dictionary, staging)
        plan, sample_info = plan_questions(cfg, dictionary, files, rows, timer)
        with timer("questions"):
            counts = write_questions(cfg, plan, files, staging)
        manifest = _manifest(cfg, dictionary, plan, counts, sample_info, timer)
        _collect_rejections(staging)
        shutil.rmtree(staging / "_prepared")
        write_text_atomic(staging / "manifest.json", json.dumps(manifest, indent=2))
        write_text_atomic(staging / PLAN_FILE, plan.model_dump_json())  # serving builds prompts with it
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _manifest(cfg, dictionary, plan: QuestionPlan, counts, sample_info, timer: PhaseTimer) -> dict:
    total = sum(sum(kinds.values()) for kinds in counts.values())
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": cfg.seed,
        "dictionary": dictionary.name,
        "profile": cfg.data.profile,
        "source": cfg.data.source,
        "counts": counts,
        "total_questions": total,
        "variables_shown": [v.name for v in plan.variables],
        "masked_targets": plan.masked_targets,
        "outcome_targets": plan.outcome_targets,
        "removed_by_mutual_information": {t: r for t, r in plan.removed.items() if r},
        "statistics_sample": sample_info,
        "seconds": {k: round(v, 3) for k, v in timer.seconds.items()},
        "config": json.loads(json.dumps(cfg.model_dump(mode="json"))),
    }


def _recorded_problems(staging: Path) -> list[BadCell]:
    files = sorted((staging / "_rejected").glob("*.jsonl")) if (staging / "_rejected").exists() else []
    return [BadCell(**json.loads(line)) for f in files for line in f.read_text().splitlines()]


def _collect_rejections(staging: Path) -> None:
    parts = sorted((staging / "_rejected").glob("*.jsonl")) if (staging / "_rejected").exists() else []
    if parts:
        write_text_atomic(staging / "rejected_rows.jsonl", "".join(p.read_text() for p in parts))
        shutil.rmtree(staging / "_rejected")


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _replace_dir(staging: Path, out: Path) -> None:
    """Swap the finished staging folder into place; an older output is removed only afterwards."""
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)

