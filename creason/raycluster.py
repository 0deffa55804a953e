"""Connecting to Ray: a local cluster on a laptop, the job's cluster under `ray job submit`."""

from __future__ import annotations

import logging
import os

import ray

from creason.config import RayConfig


def connect(cfg: RayConfig) -> None:
    """Join the cluster named by `cfg.address` or `RAY_ADDRESS` ("auto": the one `ray start` runs on
    this machine), else start a local one. Not Ray's own default for no address, which joins the
    last cluster `ray start` recorded on this machine and hangs when that one is gone."""
    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs = {}
    if address == "local":  # options of a cluster that this call starts
        kwargs = {"include_dashboard": cfg.include_dashboard, **({"num_cpus": cfg.num_cpus} if cfg.num_cpus else {})}
        if not cfg.include_dashboard:
            kwargs["runtime_env"] = {"worker_process_setup_hook": "creason.raycluster.quiet_state_api_warnings"}
    ray.init(address=address, logging_level=logging.WARNING, **kwargs)


# Ray Train's placement-group cleaner asks the State API, which the dashboard serves, whether the
# controller lives; without a dashboard it logs a warning every second of a run (~1,000 lines in 20
# steps). It only matters if the controller dies, and a local cluster dies with its driver anyway.
_STATE_API_POLLERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_state_api_warnings() -> None:
    """Worker-process setup hook of a local cluster without dashboard: State API pollers log errors only."""
    for name in _STATE_API_POLLERS:
        logging.getLogger(name).setLevel(logging.ERROR)
