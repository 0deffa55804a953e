"""Test helper: a real Ray cluster of `ray start` processes on this machine (a head and, if asked,
worker nodes with their own resources), stopped by signalling those processes only (`ray stop`
would stop every Ray cluster on the machine, the test session's own included)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env() -> dict[str, str]:
    """Environment of a Ray CLI client of a Ray 2.60 cluster: token auth on, this venv first on PATH
    (the jobs' `python` is this interpreter), no address inherited from the test session."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "RAY_AUTH_MODE": "token", "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}


@dataclass
class Cluster:
    gcs_address: str
    dashboard_url: str
    logs: Path

    def job_submit(self, working_dir: Path, entrypoint: list[str], timeout: float) -> subprocess.CompletedProcess:
        """`ray job submit` (blocks until the job ends, streaming its logs)."""
        cmd = [str(BIN / "ray"), "job", "submit", "--address", self.dashboard_url, "--working-dir", str(working_dir),
               "--", *entrypoint]
        for _ in range(30):  # the head's job agent takes a few seconds longer than the node to come up
            done = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=timeout)
            if "No available agent to submit job" not in done.stdout + done.stderr:
                return done
            time.sleep(2)
        return done


def _ray_start(args: list[str], log: Path, temp_dir: Path) -> subprocess.Popen:
    """One node, as a machine of its own would run it: its own temporary folder (nodes sharing one
    also share the unpacked job packages, and one node's clean-up then races another's imports) and
    its own agent port (the fixed default, 52365, is taken by any other Ray node here)."""
    own = [f"--temp-dir={temp_dir}", f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]
    return subprocess.Popen([str(BIN / "ray"), "start", "--block", *own, *args], env=cli_env(), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_nodes(gcs: str, n: int, timeout: float = 120) -> None:
    probe = f"import ray; ray.init(address={gcs!r}, logging_level='ERROR'); print(sum(x['Alive'] for x in ray.nodes()))"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", probe], env=cli_env(), capture_output=True, text=True, timeout=60)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(2)
    raise TimeoutError(f"the Ray cluster at {gcs} did not reach {n} nodes in {timeout:.0f} s")


@contextmanager
def ray_cluster(tmp: Path, head_cpus: int, head_resources: dict, workers: list[tuple[int, dict]] = ()):
    """A head (`head_cpus`, `head_resources`) and worker nodes ((cpus, resources), ...), each a
    `ray start --block` process; yields a `Cluster`, then stops them (SIGTERM, then SIGKILL)."""
    port, dash = free_port(), free_port()
    temp_dirs = [Path(tempfile.mkdtemp(prefix="ray", dir="/tmp")) for _ in range(1 + len(workers))]  # short: socket paths
    procs = [_ray_start(["--head", f"--port={port}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
                         f"--num-cpus={head_cpus}", f"--resources={json.dumps(head_resources)}"], tmp / "head.log",
                        temp_dirs[0])]
    gcs = f"127.0.0.1:{port}"
    try:
        _wait_for_nodes(gcs, 1)
        for i, (cpus, resources) in enumerate(workers):
            procs.append(_ray_start([f"--address={gcs}", f"--num-cpus={cpus}", f"--resources={json.dumps(resources)}"],
                                    tmp / f"worker{i}.log", temp_dirs[i + 1]))
        _wait_for_nodes(gcs, 1 + len(workers))
        yield Cluster(gcs, f"http://127.0.0.1:{dash}", tmp)
    finally:
        _stop(procs)
        for d in temp_dirs:
            shutil.rmtree(d, ignore_errors=True)
        _forget(gcs)


def _forget(gcs: str) -> None:
    """Remove Ray's record of this head as the machine's current cluster (`ray stop` would), so
    that nothing later tries to join the stopped cluster."""
    record = Path("/tmp/ray/ray_current_cluster")
    port = gcs.rsplit(":", 1)[1]
    if record.is_file() and record.read_text().strip().endswith(f":{port}"):
        record.unlink(missing_ok=True)


def _stop(procs: list[subprocess.Popen], grace_s: float = 10) -> None:
    """SIGTERM every node at once, then SIGKILL those still up after `grace_s` (a head with Serve
    running can take longer than that to stop gracefully; a test's cluster need not)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        if all(proc.poll() is not None for proc in procs):
            return


@contextmanager
def another_cluster_with_a_dashboard(timeout: float = 120):
    """A second local Ray cluster on this machine with its dashboard (at Ray's default port 8265
    when that is free), as a user's notebook or another `creason` command would start. Yields the
    time its dashboard first answered; stopped (`ray.shutdown`) when the block ends."""
    import httpx

    script = ("import sys, ray; c = ray.init(address='local', num_cpus=1, include_dashboard=True, logging_level='ERROR'); "
              "print('UP', c.dashboard_url, flush=True); sys.stdin.read(); ray.shutdown()")
    proc = subprocess.Popen([sys.executable, "-c", script], env=cli_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line[:1] == ["UP"], f"the second cluster did not start (exit code {proc.poll()})"
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(f"http://{line[1]}/api/version", timeout=5)  # any answer (token auth: 401)
                break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the second cluster's dashboard at {line[1]} never answered"
            time.sleep(0.5)
        yield time.time()
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
