"""`report.md`: the results as Markdown a clinician can read, tables first, explanations beside
them. Pure string building from the results dict (plus the questions and models' answers for
the examples)."""

from __future__ import annotations

import math

import numpy as np

from creason.contracts import Question
from creason.evaluate.concentration import constant_groups
from creason.evaluate.scoring import CHANCE, DRAW, System

BREAKDOWN_TITLES = {"question_kind": "By question kind", "section": "By record section",
                    "variable_kind": "By kind of variable asked about", "num_options": "By number of options"}
GROUP_NAMES = {"masked_value": "masked value (a removed finding)", "outcome": "outcome (withheld from the record)"}
MAX_REASONING_CHARS = 1500


def pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def ci(row: dict) -> str:
    return f"{pct(row['ci_low'])} to {pct(row['ci_high'])}"


def p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def pick_examples(questions: list[Question], systems: list[System], k: int, seed: int) -> list[int]:
    """Indices of `k` example questions, seeded: first where the models' answers differ, then
    where they are split between right and wrong, then any."""
    models = [s for s in systems if s.kind == "model"]
    if k <= 0 or not questions:
        return []
    rng = np.random.default_rng(seed)
    letters = np.array([s.letters for s in models]) if models else np.empty((0, len(questions)))
    right = np.array([s.correct for s in models]) if models else np.empty((0, len(questions)))
    differ = [i for i in range(len(questions)) if len(set(letters[:, i])) > 1] if models else []
    mixed = [i for i in range(len(questions)) if i not in differ and models and 0 < right[:, i].sum() < len(models)]
    rest = [i for i in range(len(questions)) if i not in differ and i not in mixed]
    chosen: list[int] = []
    for pool in (differ, mixed, rest):
        take = min(k - len(chosen), len(pool))
        chosen += sorted(rng.choice(pool, take, replace=False).tolist()) if take else []
    return chosen


def render_report(results: dict, questions: list[Question], systems: list[System], examples: list[int],
                  plots: dict[str, str]) -> str:
    """The whole report. `plots`: name -> file name next to the report ("overall", "section", "training")."""
    meta, conf = results["meta"], results["bootstrap"]["confidence"]
    parts = [_header(results, meta, conf), _overall(results, plots, conf), _comparisons(results, conf)]
    parts += [_breakdown(results, name, plots, conf) for name in BREAKDOWN_TITLES]
    parts += [concentration_section(results), _format_table(results)]
    if "training" in plots:
        parts.append(f"## Training curve\n\nPer training step: mean reward, training accuracy and the KL "
                     f"divergence to the reference model.\n\n![training curve]({plots['training']})\n")
    parts.append(_examples(questions, systems, examples))
    parts.append("## Files\n\n" + "\n".join(f"- `{f}`" for f in meta["files"]) + "\n")
    return "\n".join(parts)


def _header(results: dict, meta: dict, conf: float) -> str:
    models = "\n".join(f"- **{s['name']}**: `{s['path']}`" for s in results["systems"] if s["kind"] == "model")
    kinds = ", ".join(f"{GROUP_NAMES.get(g, g)}: {n}" for g, n in results["question_counts"]["question_kind"].items())
    return f"""# Evaluation report

{meta['created']} · {results['n_questions']} questions from the `{meta['split']}` split of `{meta['questions_dir']}`
({kinds}).

Models:
{models}

## How to read this report

- Every question shows one patient's registry record with one finding removed (*masked value*) or
  without its outcome (*outcome*), and 2 to 5 options of which exactly one is right.
- Each model first reasons step by step (greedy decoding, at most {meta['max_new_tokens']} tokens); it is then
  prompted with "Therefore, the answer is" and its most likely **option letter** is its answer.
  Every question thus gets a valid answer, even when the model's own text gives none.
- **Accuracy** is the share of questions answered correctly. The **{conf:.0%} interval** is the range the
  accuracy would likely fall in on another set of similar patients (percentile bootstrap,
  {results['bootstrap']['n_samples']} resamples): wide intervals mean few questions.
- **Baselines** answer without reading the record: random guessing, and always giving the answer most
  common in the training data for that finding. A model is only useful if it clearly beats them.
- **p-value** (McNemar's test, on the questions where exactly one of two systems is right): how
  surprising the difference would be if both were equally accurate; below 0.05 is the usual threshold.
"""


def _overall(results: dict, plots: dict, conf: float) -> str:
    lines = ["## Overall accuracy", "", f"| | correct | accuracy | {conf:.0%} interval |", "|---|---|---|---|"]
    for s in results["systems"]:
        o = s["overall"]
        correct = f"{o['correct']:.1f} expected" if s["name"] == CHANCE else f"{o['correct']:.0f}"
        lines.append(f"| {s['name']} | {correct} / {o['n']} | **{pct(o['accuracy'])}** | {ci(o)} |")
    notes = [f"- *{s['name']}*: {s['note']}" for s in results["systems"] if s["note"]]
    figure = f"\n![overall accuracy]({plots['overall']})\n" if "overall" in plots else ""
    return "\n".join(lines + [""] + notes) + "\n" + figure


def _comparisons(results: dict, conf: float) -> str:
    comps = results["comparisons"]
    if not comps:
        return ""
    lines = ["## Are the differences real?", "",
             f"| A vs B | difference (A - B) | {conf:.0%} interval | only A right | only B right | p-value | test |",
             "|---|---|---|---|---|---|---|"]
    for c in comps:
        lines.append(f"| {c['a']} vs {c['b']} | {100 * c['difference']:+.1f} points | "
                     f"{100 * c['difference_ci_low']:+.1f} to {100 * c['difference_ci_high']:+.1f} | {c['a_only']} | "
                     f"{c['b_only']} | {p_text(c['p_value'])} | {c['method']} |")
    return "\n".join(lines + ["", _verdict(comps[0]), ""])


def _verdict(c: dict) -> str:
    """The first comparison in one sentence."""
    if c["a_only"] == c["b_only"]:
        return f"{c['a']} and {c['b']} answered equally many questions correctly (p = {p_text(c['p_value'])})."
    verdict = "a difference this large is unlikely to be chance" if c["p_value"] < 0.05 else \
        "this difference could well be chance"
    return (f"{c['a']} answered {abs(100 * c['difference']):.1f} percentage points "
            f"{'more' if c['difference'] > 0 else 'fewer'} questions correctly than {c['b']} "
            f"(p = {p_text(c['p_value'])}): {verdict}.")


def _breakdown(results: dict, name: str, plots: dict, conf: float) -> str:
    """One table: a row per group; baselines as accuracies, models with their intervals."""
    shown = [s for s in results["systems"] if s["name"] != DRAW]
    counts = results["question_counts"][name]
    lines = [f"### {BREAKDOWN_TITLES[name]}", "", "| group | n | " + " | ".join(s["name"] for s in shown) + " |",
             "|---|---|" + "---|" * len(shown)]
    for group, n in counts.items():
        cells = [f"{pct(s['breakdowns'][name][group]['accuracy'])}" + (
                 f" ({ci(s['breakdowns'][name][group])})" if s["kind"] == "model" else "") for s in shown]
        lines.append(f"| {GROUP_NAMES.get(group, group)} | {n} | " + " | ".join(cells) + " |")
    head = (f"## Breakdowns\n\nAccuracy per group; for models with its {conf:.0%} interval. Groups with few "
            "questions have wide intervals: compare them with care.\n\n") if name == "question_kind" else ""
    figure = f"\n![accuracy by section]({plots['section']})\n" if name == "section" and "section" in plots else ""
    return head + "\n".join(lines) + "\n" + figure


#: A model that gives one answer to at least this share of a group of questions is flagged.
CONSTANT_SHARE = 0.9


def concentration_section(results: dict) -> str:
    """Does each system answer from the record, or the same whatever it says? (`concentration`)."""
    truth = results.get("truth_concentration")
    rows = [("Right answers", truth)] + [(s["name"], s["concentration"]) for s in results["systems"] if "concentration" in s]
    if truth is None or len(rows) == 1:
        return ""
    sizes = list(truth["letter_by_options"])
    lines = ["## Does it read the record?", "",
             "Share of questions given the most common letter (per number of options) and the most common answer "
             "text of their variable. Options are shuffled, so the right answers spread over the letters; a system "
             "that answers the same whatever the record says comes near 100%, and its accuracy is then how often "
             "that one answer happens to be right.", "",
             "| | " + " | ".join(f"one letter, {k} options" for k in sizes) + " | one answer per variable |",
             "|---|" + "---|" * (len(sizes) + 1)]
    for name, c in rows:
        cells = [pct(c["letter_by_options"].get(k, float("nan"))) for k in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {pct(c['text'])} |")
    models = [s for s in results["systems"] if s["kind"] == "model" and "concentration" in s]
    notes = [f"- **{s['name']} answers the same whatever the record says** ({', '.join(groups)}: one answer to at "
             f"least {CONSTANT_SHARE:.0%} of the questions, where the right answers vary): its accuracy there is how "
             "often that answer happens to be right." for s in models
             if (groups := constant_groups(s["concentration"], truth, CONSTANT_SHARE))]
    return "\n".join(lines + [""] + notes + [""])


def _format_table(results: dict) -> str:
    models = [s for s in results["systems"] if s["kind"] == "model"]
    if not models:
        return ""
    lines = ["## How the models answered", "",
             "| model | accuracy of its own `\\boxed{}` answer | no `\\boxed{}` letter | boxed = forced letter | "
             "reasoning cut at the limit | mean reasoning tokens | a letter was its own top next token | questions/s |",
             "|---|---|---|---|---|---|---|---|"]
    for s in models:
        rate = s.get("run", {}).get("questions_per_s")
        lines.append(f"| {s['name']} | {pct(s['boxed']['accuracy'])} | {pct(s['box_missing_rate'])} | "
                     f"{pct(s['boxed_forced_agreement'])} | {pct(s['truncated_rate'])} | "
                     f"{s['mean_reasoning_tokens']:.0f} | {pct(s['letter_top_rate'])} | "
                     f"{'n/a' if rate is None else f'{rate:.2f}'} |")
    lines += ["", "The training reward reads the letter in the first `\\boxed{}`; a missing box counts as wrong "
              "there. The forced letter (the accuracy above) needs no box.", ""]
    return "\n".join(lines)


def _examples(questions: list[Question], systems: list[System], examples: list[int]) -> str:
    if not examples:
        return ""
    models = [s for s in systems if s.kind == "model"]
    out = ["## Example questions", ""]
    for k, i in enumerate(examples, 1):
        q = questions[i]
        truth = f"{q.ground_truth} ({q.option_text(q.ground_truth)})"
        out += [f"### Example {k}: {q.display_name} ({GROUP_NAMES.get(q.question_kind, q.question_kind)})", "",
                "<details><summary>Record and question as the model saw them</summary>", "", "```text",
                q.user_text.replace("```", "'''"), "```", "", "</details>", "", f"Correct answer: **{truth}**", ""]
        for s in models:
            a = s.answers[i]
            mark = "right" if a.forced == q.ground_truth else "wrong"
            reasoning = a.reasoning.strip() or "(no text)"
            if len(reasoning) > MAX_REASONING_CHARS:
                reasoning = reasoning[:MAX_REASONING_CHARS] + " [...]"
            quoted = "\n".join("> " + line.replace("<", "&lt;") for line in reasoning.splitlines())
            out += [f"**{s.name}** answered **{a.forced} ({q.option_text(a.forced)})**: {mark} "
                    f"(boxed: {a.boxed or 'none'})", "", quoted, ""]
    return "\n".join(out)
