"""Wall-clock time per named phase."""

from __future__ import annotations

import time
from contextlib import contextmanager


class PhaseTimer:
    """`with timer("generate"): ...` accumulates seconds per phase, in first-seen order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    @property
    def total(self) -> float:
        return sum(self.seconds.values())
