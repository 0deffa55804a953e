"""Shared by the benchmarks: a subprocess whose whole process tree's memory is sampled, and the
machine/date line every result carries."""

from __future__ import annotations

import platform
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil


def tree_pss(root: psutil.Process) -> tuple[int, dict[str, int]]:
    """Summed PSS (shared pages split fairly) of a process and all its descendants, in bytes, and
    the PSS by process name (Ray's workers are named `ray::<Class>`)."""
    total, by_name = 0, {}
    for p in [root, *root.children(recursive=True)]:
        try:
            pss, name = p.memory_full_info().pss, p.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += pss
        by_name[name] = by_name.get(name, 0) + pss
    return total, by_name


def set_args(overrides: list[str]) -> list[str]:
    """Config overrides as `creason` command-line arguments: ["a=1", "b=2"] -> ["--set", "a=1", "--set", "b=2"]."""
    return [arg for o in overrides for arg in ("--set", o)]


def gib_by_process(pss_by_name: dict[str, int]) -> dict[str, float]:
    """`at_peak` of `run_monitored` in GiB, largest first, for a results file."""
    return {k: round(v / 2**30, 2) for k, v in sorted(pss_by_name.items(), key=lambda kv: -kv[1])}


def run_monitored(cmd: list[str], log_path: str | None = None, every_s: float = 0.5,
                  at_peak: dict | None = None, **popen) -> tuple[int, float, int]:
    """Run `cmd` (`popen`: more `subprocess.Popen` arguments, e.g. env, cwd); returns (exit code,
    wall seconds, peak PSS of its process tree in bytes). `at_peak`, if given, is filled with the
    PSS by process name at the peak."""
    start = time.perf_counter()
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **popen)
        peak, ps, stop = 0, psutil.Process(proc.pid), threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                total, by_name = tree_pss(ps)
                if total > peak:
                    peak = total
                    if at_peak is not None:
                        at_peak.clear()
                        at_peak.update(by_name)
                time.sleep(every_s)

        monitor = threading.Thread(target=sample, daemon=True)
        monitor.start()
        rc = proc.wait()
        stop.set()
        monitor.join()
    finally:
        if log_path:
            out.close()
    return rc, time.perf_counter() - start, peak


def run_or_exit(cmd: list[str], log_path: Path, what: str, **popen) -> tuple[float, int, dict[str, int]]:
    """`run_monitored` (sampled every second; `popen` passed on) of a step that must succeed: (wall
    seconds, peak PSS in bytes, PSS by process name at the peak); on failure the log's tail is
    printed and the benchmark exits."""
    at_peak: dict[str, int] = {}
    rc, wall, peak = run_monitored(cmd, log_path=str(log_path), every_s=1.0, at_peak=at_peak, **popen)
    if rc != 0:
        print(log_path.read_text()[-5000:])
        raise SystemExit(f"{what} failed ({rc})")
    return wall, peak, at_peak


def step_quarters(steps: list[dict]) -> list[list[dict]]:
    """Per-step records in at most 4 consecutive parts of equal size (the last may be shorter), every step in one."""
    size = max(1, -(-len(steps) // 4))
    return [steps[i:i + size] for i in range(0, len(steps), size)]


def machine_line() -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    return f"{platform.node()} ({psutil.cpu_count()} cores {cpu}, {psutil.virtual_memory().total / 2**30:.0f} GiB, no GPU), {when}"


def timed(fn, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of `fn`."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds
