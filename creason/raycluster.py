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
    ray.init(address=address, logging_level=logging.WARNING, **kwargs)
