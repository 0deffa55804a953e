"""How many training answers does reading the record take? The record regression
(`creason.evaluate.record_regression`) and the majority answer, each fit on the first n of a seeded
shuffle of the training split's answers, scored on the evaluation's test questions. It bounds
what a warm-up on n answers can show: a learner that cannot beat the majority answer from n
examples of one-hot record values will not find it easier from n prompts of text.

    python ray_jobs/benchmarks/reading_curve.py --questions runs/learning/questions \\
        --sizes 640 1920 4000 8000 16000 --draws 3 --out docs/benchmarks/reading_curve.json

NumPy only: no model, no Ray. A few seconds per fit.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from common import machine_line


def main() -> int:
    from creason.data.questions import record_values
    from creason.data.schema import load_questions
    from creason.evaluate.baselines import majority_letters, majority_texts
    from creason.evaluate.questions import answered_records
    from creason.evaluate.record_regression import RecordRegression
    from creason.evaluate.scoring import correctness
    from creason.evaluate.stats import mcnemar

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", required=True, type=Path, help="a question folder (train and test splits)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[640, 1920, 4000, 8000, 16000])
    parser.add_argument("--draws", type=int, default=3, help="training subsets per size (seeds 0..draws-1)")
    parser.add_argument("--test-questions", type=int, default=500, help="as `evaluate.max_questions`")
    parser.add_argument("--kinds", nargs="+", default=["masked_value", "outcome"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    test = load_questions(args.questions, "test", args.kinds, args.test_questions, 0)
    records = [record_values(q.user_text) for q in test]
    kinds = np.array([q.question_kind for q in test])
    rows = []
    for n in args.sizes:
        for draw in range(args.draws):
            train = answered_records(args.questions, n, seed=draw)
            counts: dict[str, Counter] = defaultdict(Counter)
            for variable, answer, _ in train:
                counts[variable][answer] += 1
            majority = correctness(test, majority_letters(test, majority_texts(counts), draw)[0])
            regression = correctness(test, RecordRegression(train).letters(test, records, draw)[0])
            test_result = mcnemar(regression, majority)
            row = {"train_answers": len(train), "draw": draw, "majority": majority.mean(),
                   "regression": regression.mean(), "gain": regression.mean() - majority.mean(),
                   "p_value": test_result["p_value"],
                   "by_kind": {k: {"majority": majority[kinds == k].mean(), "regression": regression[kinds == k].mean()}
                               for k in sorted(set(kinds))}}
            rows.append(row)
            print(f"{len(train):6d} answers, draw {draw}: majority {row['majority']:.1%}, regression "
                  f"{row['regression']:.1%} ({row['gain']:+.1%}, McNemar p = {row['p_value']:.2g})", flush=True)
    result = {"machine": machine_line(), "questions": str(args.questions), "test_questions": len(test), "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
