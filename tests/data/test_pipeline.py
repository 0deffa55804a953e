"""The whole build on a local Ray cluster: synthetic and user files, outputs and failures."""

import csv
import json
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from creason.config import load_config
from creason.contracts import Question
from creason.data.export import write_synthetic_registry
from creason.data.pipeline import build_question_set, run_tasks
from creason.data.questions import QuestionPlan
from creason.data.registry import RegistryError

pytestmark = pytest.mark.ray


def _record_task(batch: dict, log_dir: str) -> dict:
    """Test helper run as a Ray Data task: sleeps per item and records when the task ran."""
    import time

    start = time.time()
    time.sleep(0.4 * len(batch["i"]))
    items = batch["i"].tolist()
    (Path(log_dir) / f"task-{items[0]}.json").write_text(json.dumps({"items": items, "start": start, "end": time.time()}))
    return {"i": batch["i"]}


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = best = 0
    for _, step in edges:
        running += step
        best = max(best, running)
    return best


@pytest.mark.parametrize("concurrency", [1, 2])
def test_run_tasks_caps_the_whole_phase_at_its_concurrency(ray_local, tmp_path, concurrency):
    """Each item once, in at most `concurrency` tasks at a time (and really 2 at once when allowed)."""
    out = run_tasks([{"i": i} for i in range(12)], _record_task, concurrency, log_dir=str(tmp_path)).to_pandas()
    assert sorted(out["i"]) == list(range(12))
    tasks = [json.loads(p.read_text()) for p in tmp_path.glob("task-*.json")]
    assert sorted(i for t in tasks for i in t["items"]) == list(range(12))
    assert len(tasks) <= 4 * concurrency
    assert _max_overlap([(t["start"], t["end"]) for t in tasks]) == concurrency


def _read(out: Path, split: str):
    return pq.read_table(sorted((out / "questions" / split).glob("*.parquet"))).to_pylist()


@pytest.fixture(scope="module")
def built(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    cfg = load_config("quickstart", [f"output_dir={out}", "data.num_patients=3000", "data.block_size=500", "data.profile=full"])
    return out, build_question_set(cfg)


def test_outputs_match_manifest_and_contract(built):
    out, manifest = built
    assert json.loads((out / "questions" / "manifest.json").read_text())["total_questions"] == manifest["total_questions"]
    total = 0
    for split in ("train", "validation", "test"):
        rows = _read(out, split)
        assert len(rows) == sum(manifest["counts"][split].values())
        assert {r["extra_info"]["split"] for r in rows} == {split}
        total += len(rows)
        for row in rows[:50]:
            Question.from_row(row)
    assert total == manifest["total_questions"] == 6000
    assert set(manifest["seconds"]) == {"ingest", "statistics", "mutual_information", "questions"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind
    assert not (out / "questions" / "_prepared").exists()
    plan = QuestionPlan.model_validate_json((out / "questions" / "plan.json").read_text())
    assert plan.masked_targets == manifest["masked_targets"]


def test_no_patient_in_two_splits(built):
    out, _ = built
    seen = {}
    for split in ("train", "validation", "test"):
        for row in _read(out, split):
            assert seen.setdefault(row["extra_info"]["patient"], split) == split


def test_same_questions_with_other_blocks_and_workers(built, ray_local, tmp_path):
    out, _ = built
    cfg = load_config("quickstart", [f"output_dir={tmp_path}", "data.num_patients=3000", "data.block_size=500",
                                     "data.profile=full", "ray.data_concurrency=1"])
    build_question_set(cfg)
    by_id = lambda rows: {r["extra_info"]["question_id"]: r for r in rows}  # noqa: E731
    for split in ("train", "test"):
        assert by_id(_read(tmp_path, split)) == by_id(_read(out, split))


def test_user_csv_registry_with_canaries(ray_local, tmp_path):
    cfg = load_config("quickstart", [f"output_dir={tmp_path / 'run'}", "data.num_patients=1200", "data.block_size=400"])
    csv_path = write_synthetic_registry(cfg, tmp_path / "registry.csv")
    table = pcsv.read_csv(csv_path)
    ids = table.column("patient_id").to_pylist()
    cfg = load_config("quickstart", [f"output_dir={tmp_path / 'run'}", "data.source=files", f"data.paths=[{csv_path}]"])
    manifest = build_question_set(cfg)
    assert manifest["total_questions"] == 2400
    text = (tmp_path / "run" / "questions").glob("*/*.parquet")
    prompts = " ".join(str(r["prompt"]) for p in text for r in pq.read_table(p).to_pylist())
    assert not any(i in prompts for i in ids[:200])
    assert "T0" not in prompts and "2019-" not in prompts and "2024-" not in prompts


def test_bad_user_file_fails_naming_row_and_column_and_writes_nothing(ray_local, tmp_path):
    cfg = load_config("quickstart", [f"output_dir={tmp_path / 'run'}", "data.num_patients=300", "data.block_size=300"])
    csv_path = write_synthetic_registry(cfg, tmp_path / "registry.csv")
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    rows[5][rows[0].index("lactate")] = "high"  # data row 5, file line 6
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    cfg = load_config("quickstart", [f"output_dir={tmp_path / 'run'}", "data.source=files", f"data.paths=[{csv_path}]"])
    with pytest.raises(RegistryError, match=r"row 5 \(line 6\), column 'lactate': value 'high'"):
        build_question_set(cfg)
    assert not (tmp_path / "run" / "questions").exists()

    cfg = load_config("quickstart", [f"output_dir={tmp_path / 'run'}", "data.source=files", f"data.paths=[{csv_path}]",
                                     "data.on_bad_row=reject"])
    manifest = build_question_set(cfg)
    rejected = [json.loads(line) for line in (tmp_path / "run" / "questions" / "rejected_rows.jsonl").read_text().splitlines()]
    assert [(r["row"], r["column"]) for r in rejected] == [(5, "lactate")]
    assert manifest["statistics_sample"]["rows"] == 299


def test_a_registry_whose_every_row_is_rejected_fails_clearly(ray_local, tmp_path):
    cfg = load_config("quickstart", [f"output_dir={tmp_path / 'run'}", "data.num_patients=50", "data.block_size=100"])
    csv_path = write_synthetic_registry(cfg, tmp_path / "registry.csv")
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    for row in rows[1:]:
        row[rows[0].index("lactate")] = "high"
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    cfg = load_config("quickstart", [f"output_dir={tmp_path / 'run'}", "data.source=files", f"data.paths=[{csv_path}]",
                                     "data.on_bad_row=reject"])
    with pytest.raises(ValueError, match=r"no registry rows to build questions from \(50 rows rejected\)"):
        build_question_set(cfg)
    assert not (tmp_path / "run" / "questions").exists()
