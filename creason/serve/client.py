"""Deploying the endpoint from a script, and asking it one registry question: the last stage of
`creason quickstart` and `ray_jobs/pipeline.py`."""

from __future__ import annotations

import os
import time
from typing import Callable

import httpx

from creason.config import CreasonConfig

SAMPLE_TARGET = "hospital_mortality"  # an outcome: the transfer task when training used masked values


def deploy(cfg: CreasonConfig) -> str:
    """Start Serve's HTTP proxy on `serve.host:serve.port` and run the application; returns its URL."""
    from ray import serve

    from creason.serve.app import APP_NAME, app_from_config, http_options

    serve.start(http_options=http_options(cfg.serve))
    serve.run(app_from_config(cfg), name=APP_NAME, route_prefix="/")
    host = "127.0.0.1" if cfg.serve.host in ("0.0.0.0", "::") else cfg.serve.host
    return f"http://{host}:{cfg.serve.port}"


def auth_headers(cfg: CreasonConfig) -> dict[str, str]:
    key = cfg.serve.api_key or os.environ.get(cfg.serve.api_key_env)
    return {"Authorization": f"Bearer {key}"} if key else {}


def ask_registry(url: str, cfg: CreasonConfig, record: dict, target: str = SAMPLE_TARGET, timeout: float = 600) -> dict:
    """POST one record to `/v1/registry/predict` (answer forced to a letter); the response body."""
    body = {"record": record, "target": target, "force_answer": True}
    r = httpx.post(f"{url}/v1/registry/predict", json=body, headers=auth_headers(cfg), timeout=timeout)
    r.raise_for_status()
    return r.json()


def deploy_and_ask(cfg: CreasonConfig, keep_serving: bool, log: Callable[[str], None] = print) -> dict:
    """Deploy, ask one sample question, and leave the endpoint up only if `keep_serving` or the
    cluster outlives this process (`ray.address` or RAY_ADDRESS set). Returns what happened."""
    from ray import serve

    from creason.data.export import synthetic_record

    url = deploy(cfg)
    log(f"endpoint up at {url}/v1")
    record = synthetic_record(cfg)
    start = time.perf_counter()
    reply = ask_registry(url, cfg, record)
    seconds = time.perf_counter() - start
    answer = reply["answer"]["value"] if reply["answer"] else None
    log(f"asked {SAMPLE_TARGET} of a new synthetic patient: {answer!r} ({reply['answer_source']}) in {seconds:.1f} s")
    stays = keep_serving or bool(cfg.ray.address or os.environ.get("RAY_ADDRESS"))
    if not stays:
        serve.shutdown()
    return {"url": url, "state": "serving" if stays else "stopped after the sample question",
            "question": SAMPLE_TARGET, "answer": answer, "answer_source": reply["answer_source"],
            "true_value": record.get(SAMPLE_TARGET), "options": [o["value"] for o in reply["options"]],
            "seconds": seconds}
