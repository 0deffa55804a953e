"""Re-score finished evaluations for "Does it read the record?" (`creason.evaluate.concentration`),
for runs evaluated before the report had that table: every system of the given `answers.jsonl`
files (the same test questions), beside the right answers.

    python ray_jobs/benchmarks/concentration.py --questions runs/learn1920/questions \\
        runs/learn1920/eval/answers.jsonl runs/t15/eval/answers.jsonl --out docs/benchmarks/x.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import machine_line


def main() -> int:
    from creason.data.schema import load_questions
    from creason.evaluate.concentration import answer_concentration, truth_concentration
    from creason.evaluate.report import concentration_section
    from creason.evaluate.scoring import DRAW, MAJORITY, RECORD

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("answers", nargs="+", type=Path, help="answers.jsonl of evaluations on the same questions")
    parser.add_argument("--questions", required=True, type=Path, help="the question folder they were asked from")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    letters: dict[str, dict[str, str | None]] = {}  # system -> question id -> letter
    for path in args.answers:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            for system, answer in row["answers"].items():
                letters.setdefault(system, {})[row["question_id"]] = answer["letter"]
    ids = sorted(set.intersection(*(set(by_id) for by_id in letters.values())))
    by_id = {q.question_id: q for q in load_questions(args.questions, args.split)}
    questions = [by_id[i] for i in ids]
    systems = [{"name": name, "kind": "baseline" if name in (DRAW, MAJORITY, RECORD) else "model",
                "concentration": answer_concentration(questions, [by_id_letters[i] for i in ids])}
               for name, by_id_letters in letters.items()]
    result = {"machine": machine_line(), "questions": len(ids), "answers": [str(p) for p in args.answers],
              "truth_concentration": truth_concentration(questions), "systems": systems}
    print(concentration_section(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
