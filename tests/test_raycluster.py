"""Connecting to Ray: options of a cluster that creason starts itself."""

import re
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ray

_SCRIPT = """
import psutil
from creason.config import RayConfig
from creason.raycluster import connect
connect(RayConfig(num_cpus=1, include_dashboard={flag}))
import ray
names = [p.name() for p in psutil.Process().children(recursive=True)]
print("CPUS", ray.cluster_resources()["CPU"])
print("DASHBOARD", any(n.startswith("ray-dashboard-") for n in names))  # its modules (NodeHead, JobHead, ...)
print("RAYLET", "raylet" in names)
cleaner = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
print("CLEANER_LEVEL", ray.get(ray.remote(lambda: __import__("logging").getLogger(cleaner).level).remote()))
from ray.dashboard.utils import get_address_for_submission_client
own = ray.get_runtime_context().gcs_address  # where this cluster recorded its dashboard
print("STATE_API", ray.get(ray.remote(lambda: get_address_for_submission_client(own)).remote()))
"""


def test_a_local_cluster_without_dashboard_starts_none():
    out = subprocess.run([sys.executable, "-c", _SCRIPT.format(flag=False)], capture_output=True, text=True,
                         timeout=180, env={**__import__("os").environ, "RAY_ADDRESS": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "CPUS 1.0" in out.stdout
    assert "RAYLET True" in out.stdout  # the processes were looked for where they live
    assert "DASHBOARD False" in out.stdout
    # workers quiet Ray Train's placement-group cleaner, which asks the dashboard's State API every second
    assert "CLEANER_LEVEL 40" in out.stdout
    # its workers' State API requests go to a port nothing serves, not to 8265, where another
    # cluster's dashboard would answer that the run's controller does not exist
    url = re.search(r"STATE_API (\S+)", out.stdout).group(1)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    assert port != "8265"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5)
