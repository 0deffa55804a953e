"""`creason evaluate`: the command's arguments and handler (registered in `creason/cli.py`).

    creason evaluate --config quickstart [--model base=/models/a --model grpo=/runs/x/policy] [--set evaluate.max_questions=200]
"""

from __future__ import annotations

import argparse

from creason.config import load_config


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `evaluate` beyond `--config` / `--set`."""
    p.add_argument("--model", dest="models", action="append", default=[], metavar="[LABEL=]FOLDER",
                   help="a model to evaluate (repeatable; replaces evaluate.models); default: the base model and "
                        "the latest training checkpoint")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from creason.evaluate.report import pct
    from creason.evaluate.run import evaluate
    from creason.storage import synced_output

    overrides = list(args.overrides)
    if getattr(args, "models", None):
        overrides.append("evaluate.models=[" + ", ".join(f'"{m}"' for m in args.models) + "]")
    cfg = load_config(args.config, overrides)
    with synced_output(cfg.output_dir, log=print):
        results = evaluate(cfg, log=lambda m: print(m, flush=True))
    conf = results["bootstrap"]["confidence"]
    print(f"\n{'system':<32} {'accuracy':>9}  {conf:.0%} interval")
    for s in results["systems"]:
        o = s["overall"]
        print(f"{s['name']:<32} {pct(o['accuracy']):>9}  {pct(o['ci_low'])} to {pct(o['ci_high'])}")
    for c in results["comparisons"]:
        print(f"{c['a']} vs {c['b']}: {100 * c['difference']:+.1f} points, McNemar p = {c['p_value']:.3g}")
    print(f"\nresults: {results['meta']['output_dir']}/results.json and report.md")
    return 0
