"""Connecting to Ray: a local cluster on a laptop, the job's cluster under `ray job submit`."""

from __future__ import annotations

import logging
import os

import ray

from creason.config import RayConfig


def connect(cfg: RayConfig) -> None:
    """Join the cluster named by `cfg.address` or `RAY_ADDRESS`, else start a local one."""
    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    kwargs = {"num_cpus": cfg.num_cpus} if address is None and cfg.num_cpus else {}
    ray.init(address=address, logging_level=logging.WARNING, **kwargs)
