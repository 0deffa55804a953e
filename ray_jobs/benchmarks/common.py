"""Shared by the benchmarks: a subprocess whose whole process tree's memory is sampled, and the
machine/date line every result carries."""

from __future__ import annotations

import platform
import subprocess
import threading
import time
from datetime import datetime, timezone

import psutil


def tree_pss(root: psutil.Process) -> int:
    """Summed PSS (shared pages split fairly) of a process and all its descendants, in bytes."""
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_monitored(cmd: list[str], log_path: str | None = None, every_s: float = 0.5) -> tuple[int, float, int]:
    """Run `cmd`; returns (exit code, wall seconds, peak PSS of its process tree in bytes)."""
    start = time.perf_counter()
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        peak, ps, stop = 0, psutil.Process(proc.pid), threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, tree_pss(ps))
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


def machine_line() -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    return f"{platform.node()} ({psutil.cpu_count()} cores {cpu}, {psutil.virtual_memory().total / 2**30:.0f} GiB, no GPU), {when}"
