"""PNG figures of an evaluation (matplotlib, no display needed): overall accuracy, accuracy by
section, and the training curve. Each function writes one file atomically and returns its path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from creason.evaluate.scoring import CHANCE, MAJORITY, RECORD

BASELINE_GRAYS = {MAJORITY: "0.75", RECORD: "0.45"}  # the baselines shown per section


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _pyplot().close(fig)
    os.replace(tmp, path)
    return path


def _errors(rows: list[dict]) -> np.ndarray:
    """(2, n) distances from each accuracy to its interval's ends, for `errorbar`/`bar`."""
    acc = np.array([r["accuracy"] for r in rows])
    low = np.nan_to_num(np.array([r["ci_low"] for r in rows]), nan=0.0)
    high = np.nan_to_num(np.array([r["ci_high"] for r in rows]), nan=0.0)
    return np.clip(np.stack([acc - low, high - acc]), 0, None)


def plot_overall(results: dict, path: Path) -> Path:
    """One bar per system: accuracy with its bootstrap interval."""
    plt = _pyplot()
    systems = results["systems"]
    rows = [s["overall"] for s in systems]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(systems) + 1.5))
    y = np.arange(len(systems))
    colors = ["tab:blue" if s["kind"] == "model" else "tab:gray" for s in systems]
    ax.barh(y, [r["accuracy"] for r in rows], xerr=_errors(rows), color=colors, capsize=3)
    ax.set_yticks(y, [s["name"] for s in systems])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"accuracy ({results['bootstrap']['confidence']:.0%} bootstrap interval)")
    ax.set_title(f"Accuracy on {results['n_questions']} questions")
    return _save(fig, path)


def plot_by_section(results: dict, path: Path) -> Path:
    """Grouped horizontal bars: one group per record section, one bar per model, the majority answer
    and the record regression, with bootstrap intervals; the expected chance level of each section as a black tick."""
    plt = _pyplot()
    sections = list(results["question_counts"]["section"])
    shown = [s for s in results["systems"] if s["kind"] == "model" or s["name"] in BASELINE_GRAYS]
    chance = next((s for s in results["systems"] if s["name"] == CHANCE), None)
    height = 0.8 / max(1, len(shown))
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(sections) * max(2, len(shown)) + 1.5))
    y = np.arange(len(sections))
    palette = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for k, s in enumerate(shown):
        rows = [s["breakdowns"]["section"][sec] for sec in sections]
        ax.barh(y + k * height, [r["accuracy"] for r in rows], height, xerr=_errors(rows), label=s["name"],
                color=BASELINE_GRAYS[s["name"]] if s["kind"] == "baseline" else next(palette),
                error_kw={"ecolor": "0.35", "elinewidth": 0.8, "capsize": 2})
    if chance is not None:
        levels = [chance["breakdowns"]["section"][sec]["accuracy"] for sec in sections]
        ax.scatter(levels, y + 0.4 - height / 2, marker="|", s=400, color="black", label="chance (expected)", zorder=3)
    counts = results["question_counts"]["section"]
    ax.set_yticks(y + 0.4 - height / 2, [f"{sec} (n={counts[sec]})" for sec in sections])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.set_title("Accuracy by record section")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return _save(fig, path)


CURVE_PANELS = (("reward_mean", "mean reward"), ("accuracy", "training accuracy"), ("kl", "KL to reference"))


def plot_training_curve(records: list[dict], path: Path) -> Path:
    """Reward, accuracy (and validation accuracy when logged) and KL per step of a training run's
    `metrics.jsonl` records; a panel whose metric was never logged says so."""
    plt = _pyplot()
    steps = np.array([r["step"] for r in records])
    fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(12, 3.2))
    for ax, (key, title) in zip(axes, CURVE_PANELS):
        _curve(ax, steps, records, key, key)
        if key == "accuracy":
            _curve(ax, steps, records, "val_accuracy", "validation accuracy")
        if not ax.lines:
            ax.text(0.5, 0.5, f"{key} not logged" + (" (beta = 0)" if key == "kl" else ""), ha="center",
                    transform=ax.transAxes)
            ax.set_xticks([]), ax.set_yticks([])
        elif len(ax.lines) > 1:
            ax.legend(fontsize="small")
        ax.set_title(title)
        ax.set_xlabel("step")
    return _save(fig, path)


def _curve(ax, steps: np.ndarray, records: list[dict], key: str, label: str) -> None:
    keep = [i for i, r in enumerate(records) if isinstance(r.get(key), (int, float))]
    if keep:
        ax.plot(steps[keep], [records[i][key] for i in keep], marker="." if len(keep) < 50 else None, label=label)
