r"""Where a model that states its answer's text before the box (`warmup.state_answer`) loses it: per
model of an evaluation's `answers.jsonl`, how often the stated text is the right answer, how often
the boxed letter is the stated text's letter, how often the box is right, and how often the
protocol's forced letter is; by question kind, with McNemar's test of the stated text against the
majority answer on the same questions.

    python ray_jobs/benchmarks/stated_answers.py runs/x/eval/answers.jsonl --out docs/benchmarks/x.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import machine_line

from creason.contracts import LETTERS
from creason.evaluate.scoring import MAJORITY
from creason.evaluate.stats import mcnemar
from creason.rewards import stated_option


def stated_rows(rows: list[dict], model: str) -> list[dict]:
    """Per question: whether the stated text, the box, the box's agreement with the text, the forced
    letter and the majority answer are right."""
    out = []
    for r in rows:
        answer = r["answers"][model]
        text = stated_option(answer.get("reasoning", ""))
        text_letter = LETTERS[r["options"].index(text)] if text in r["options"] else None
        out.append({"kind": r["question_kind"], "stated_right": text == r["answer_text"],
                    "stated_is_option": text_letter is not None,
                    "box_is_stated": text_letter is not None and answer.get("boxed") == text_letter,
                    "boxed_right": answer.get("boxed") == r["ground_truth"], "forced_right": bool(answer["correct"]),
                    "majority_right": bool(r["answers"][MAJORITY]["correct"])})
    return out


def shares(rows: list[dict]) -> dict:
    """The share of each measure over `rows`, and the stated text against the majority answer."""
    n = len(rows)
    out = {"questions": n}
    for key in ("stated_right", "stated_is_option", "box_is_stated", "boxed_right", "forced_right", "majority_right"):
        out[key] = sum(r[key] for r in rows) / n if n else float("nan")
    test = mcnemar([r["stated_right"] for r in rows], [r["majority_right"] for r in rows])
    out["stated_vs_majority"] = {k: test[k] for k in ("a_only", "b_only", "p_value")}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("answers", type=Path, help="an evaluation's answers.jsonl")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.answers.read_text().splitlines()]
    models = [name for name, a in rows[0]["answers"].items() if "reasoning" in a]
    result = {"machine": machine_line(), "answers": str(args.answers), "models": {}}
    for model in models:
        per_question = stated_rows(rows, model)
        kinds = sorted({r["kind"] for r in per_question})
        result["models"][model] = {"all": shares(per_question),
                                   **{k: shares([r for r in per_question if r["kind"] == k]) for k in kinds}}
        for group, s in result["models"][model].items():
            print(f"{model} | {group}: stated text right {s['stated_right']:.1%} (majority answer "
                  f"{s['majority_right']:.1%}, p = {s['stated_vs_majority']['p_value']:.2g}), box = stated "
                  f"{s['box_is_stated']:.1%}, box right {s['boxed_right']:.1%}, forced letter right {s['forced_right']:.1%}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
