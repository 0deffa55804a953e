"""Connecting to Ray: a local cluster on a laptop, the job's cluster under `ray job submit`."""

from __future__ import annotations

import logging
import os

import ray

from creason.config import RayConfig
from creason.ports import free_port


def connect(cfg: RayConfig) -> None:
    """Join the cluster named by `cfg.address` or `RAY_ADDRESS` ("auto": the one `ray start` runs on
    this machine), else start a local one. Not Ray's own default for no address, which joins the
    last cluster `ray start` recorded on this machine and hangs when that one is gone."""
    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs = local_cluster_options(cfg.include_dashboard, cfg.num_cpus) if address == "local" else {}
    ray.init(address=address, logging_level=logging.WARNING, **kwargs)


def local_cluster_options(include_dashboard: bool, num_cpus: int | None = None) -> dict:
    """`ray.init` options of a local cluster. Without a dashboard, its port is still where the
    cluster's workers send State API requests: Ray Train's placement-group cleaner asks every second
    whether the run's controller lives, and at the default port (8265) the dashboard of any other
    cluster started later on this machine answers "no such actor", so the cleaner removes the
    training workers' placement group and kills them (seen 2026-12-07: a run lost 26 steps). So the
    port is one that nothing serves."""
    options: dict = {"include_dashboard": include_dashboard, **({"num_cpus": num_cpus} if num_cpus else {})}
    if not include_dashboard:
        options["dashboard_port"] = free_port()
        options["runtime_env"] = {"worker_process_setup_hook": "creason.raycluster.quiet_state_api_warnings"}
    return options


# Ray Train's placement-group cleaner asks the State API, which the dashboard serves, whether the
# controller lives; without a dashboard it logs a warning every second of a run (~1,000 lines in 20
# steps). It only matters if the controller dies, and a local cluster dies with its driver anyway
# (`local_cluster_options` keeps it from asking another cluster's dashboard instead).
_STATE_API_POLLERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_state_api_warnings() -> None:
    """Worker-process setup hook of a local cluster without dashboard: State API pollers log errors only."""
    for name in _STATE_API_POLLERS:
        logging.getLogger(name).setLevel(logging.ERROR)
