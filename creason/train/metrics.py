"""Per-step metrics: a JSONL file (one record per step), the trackers of `train.loggers`
(`creason.train.trackers`), and a progress line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from creason.atomic import write_text_atomic
from creason.train.trackers import numeric


def say(line: str) -> None:
    """One line to the console from inside a Ray Train worker. Not `print`: Ray Train patches it
    to log as well as print, and the driver then shows every line twice."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class MetricsLog:
    """`metrics.jsonl` keeps one record per step: a re-done step (after a restart) replaces the old one."""

    def __init__(self, folder: Path, total_steps: int | None = None, trackers: list | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "metrics.jsonl"
        self.total_steps = total_steps
        self._started = time.perf_counter()
        self._first_step: int | None = None
        self.trackers = trackers or []

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate(self, from_step: int) -> None:
        """Drop records of steps after `from_step` (they will be redone), atomically."""
        kept = [r for r in self.records() if r["step"] <= from_step]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, step: int, metrics: dict) -> None:
        """Append the step's record; `time` is when it was written (Unix seconds)."""
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics, "time": time.time()}) + "\n")
        values = numeric(metrics)
        for tracker in self.trackers:
            tracker.log(step, values)
        self._progress(step, metrics)

    def _progress(self, step: int, metrics: dict) -> None:
        val = f" | val accuracy {metrics['val_accuracy']:.3f}" if "val_accuracy" in metrics else ""
        if "reward_mean" not in metrics:  # a validation-only record (the initial weights): no step taken
            say(f"step {step}{val}")
            return
        if self._first_step is None:  # steps before a resume do not count towards the rate
            self._first_step = step - 1
        per_step = (time.perf_counter() - self._started) / max(1, step - self._first_step)
        eta = f" | ETA {per_step * (self.total_steps - step) / 60:.1f} min" if self.total_steps else ""
        total = f"/{self.total_steps}" if self.total_steps else ""
        say(f"step {step}{total} | reward {metrics.get('reward_mean', float('nan')):.3f} | "
            f"accuracy {metrics.get('accuracy', float('nan')):.3f}{val} | {per_step:.1f} s/step{eta}")

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []

