"""Load on the Serve endpoint, compared with vLLM's own OpenAI server on the same model and cores.

    python ray_jobs/benchmarks/serve_load.py --out docs/benchmarks/serve.json

Loopback only (127.0.0.1), bounded: at each concurrency level a fixed number of chat requests
(non-streaming, greedy, `--max-tokens` each), then it stops by itself. Phases:
1. the Serve app from `serve_configs/local_cpu.yaml` (through `build_app`, API key from
   $CREASON_API_KEY) under load: requests/s, output tokens/s, p50/p99 latency, errors, and
   replicas before, during (most seen) and after (once the autoscaler has scaled back down);
2. malformed requests (bad JSON, wrong types, oversize fields, unknown fields, bad keys, bad
   records): only 4xx expected, no 5xx, and a normal request answered afterwards;
3. Ray's own LLM serving (`ray.serve.llm`: vLLM's OpenAI serving classes in a Ray Serve
   deployment) with the same engine settings and autoscaling, under the same load and the same
   malformed requests;
4. `python -m vllm.entrypoints.openai.api_server` on the same model, engine settings, thread
   binding and load.

    python ray_jobs/benchmarks/serve_load.py --kill-replica --out docs/benchmarks/serve_kill.json

instead runs 2 replicas under a steady load (`--clients` clients sending requests back to back),
kills one with `creason.faults` (`--fault replica`: the replica process; `engine_core`: its vLLM
engine-core child), and reports the failed requests by status, the time from the kill until
requests stop failing and until 2 replicas run again, and p50/p99 latency before, during and
after the outage. It stops `--after` seconds after the recovery, or `--recovery-timeout` after the
kill.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMPT = ("A 68-year-old with pneumonia has MAP 58 mmHg on noradrenaline and lactate 4.5 mmol/L. "
          "Is this septic shock? Answer briefly.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- load ---------------------------------------------------------------------------------------


async def one_request(client: httpx.AsyncClient, url: str, headers: dict, max_tokens: int) -> tuple[float, int, int]:
    """(seconds, HTTP status, completion tokens) of one chat completion."""
    body = {"model": "creason", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens, "temperature": 0.0}
    start = time.perf_counter()
    try:
        r = await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
        tokens = r.json()["usage"]["completion_tokens"] if r.status_code == 200 else 0
        return time.perf_counter() - start, r.status_code, tokens
    except (httpx.HTTPError, ValueError, KeyError):
        return time.perf_counter() - start, 0, 0


async def run_level(url: str, headers: dict, concurrency: int, requests: int, max_tokens: int, replicas=None) -> dict:
    """`requests` requests, at most `concurrency` in flight; samples the replica count meanwhile."""
    gate, seen, done = asyncio.Semaphore(concurrency), [], asyncio.Event()

    async def sample_replicas():
        while not done.is_set():
            seen.append(await asyncio.to_thread(replicas))
            await asyncio.sleep(0.5)

    async def gated(client):
        async with gate:
            return await one_request(client, url, headers, max_tokens)

    sampler = asyncio.create_task(sample_replicas()) if replicas else None
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(gated(client) for _ in range(requests)))
        wall = time.perf_counter() - start
    done.set()
    if sampler:
        await sampler
    ok = [(s, t) for s, code, t in results if code == 200]
    latencies = np.array([s for s, _ in ok]) if ok else np.array([np.nan])
    return {
        "concurrency": concurrency, "requests": requests, "seconds": round(wall, 2),
        "requests_per_s": round(len(ok) / wall, 2), "output_tokens_per_s": round(sum(t for _, t in ok) / wall, 1),
        "p50_latency_s": round(float(np.percentile(latencies, 50)), 3), "p99_latency_s": round(float(np.percentile(latencies, 99)), 3),
        "errors": requests - len(ok), "statuses": dict(Counter(str(code) for _, code, _ in results)),
        **({"replicas_during_max": max(r["running"] + r["starting"] for r in seen),
            "replicas_running_max": max(r["running"] for r in seen)} if seen else {}),
    }


async def run_levels(url, headers, levels, counts, max_tokens, replicas=None) -> list[dict]:
    async with httpx.AsyncClient(timeout=600) as client:
        await one_request(client, url, headers, 4)  # not measured: the first request pays the warm-up
    out = []
    for c, n in zip(levels, counts):
        out.append(await run_level(url, headers, c, n, max_tokens, replicas))
        print(json.dumps(out[-1]), flush=True)
    return out


# ---- malformed requests -------------------------------------------------------------------------


def bad_requests(key: str, max_chars: int) -> list[tuple[str, dict, bytes]]:
    """(path, headers, body) of requests that must all be refused with a 4xx."""
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    msg = [{"role": "user", "content": "hi"}]

    def chat(**kw):
        return json.dumps({"model": "creason", "messages": msg, **kw}).encode()

    def record(**kw):
        return json.dumps({"record": {"lactate": 4.5}, "target": "septic_shock", **kw}).encode()

    chat_path, reg = "/v1/chat/completions", "/v1/registry/predict"
    return [
        (chat_path, auth, b'{"model": "creason", "messages": ['),                       # truncated JSON
        (chat_path, auth, b"\xff\xfe not json"),                                       # not even UTF-8
        (chat_path, auth, b"[]"),                                                      # not an object
        (chat_path, auth, chat(max_tokens="16")),                                      # wrong type
        (chat_path, auth, chat(temperature="hot")),
        (chat_path, auth, json.dumps({"model": "creason", "messages": "hi"}).encode()),
        (chat_path, auth, chat(max_tokens=10**9)),                                     # over the limit
        (chat_path, auth, chat(n=1000, temperature=1.0)),
        (chat_path, auth, json.dumps({"model": "creason", "messages": msg * 1000}).encode()),
        (chat_path, auth, json.dumps({"model": "creason", "messages": [{"role": "user", "content": "x" * (max_chars + 1)}]}).encode()),
        (chat_path, auth, chat(logit_bias={"1": 100})),                                # unknown field
        (chat_path, auth, chat(model="gpt-5")),                                        # unknown model
        (chat_path, auth, json.dumps({"model": "creason", "messages": [{"role": "tool", "content": "x"}]}).encode()),
        (chat_path, {"Authorization": "Bearer wrong-key"}, chat()),                    # bad key
        (chat_path, {}, chat()),                                                       # no key
        (chat_path, {"Authorization": key}, chat()),                                   # no scheme
        (reg, auth, json.dumps({"record": {"shoe_size": 44}, "target": "septic_shock"}).encode()),
        (reg, auth, json.dumps({"record": {"lactate": -3}, "target": "septic_shock"}).encode()),
        (reg, auth, json.dumps({"record": {"lactate": {"value": 4}}, "target": "septic_shock"}).encode()),
        (reg, auth, record(target="patient_id")),
        (reg, auth, record(kind="masked_value", target="hospital_mortality")),
        (reg, auth, record(max_tokens=-1)),
        (reg, auth, json.dumps({"record": {f"v{i}": 1 for i in range(1000)}, "target": "septic_shock"}).encode()),
    ]


async def malformed_phase(url: str, key: str, total: int, max_chars: int, concurrency: int = 32) -> dict:
    cases = bad_requests(key, max_chars)
    gate = asyncio.Semaphore(concurrency)

    async def send(client, i):
        path, headers, body = cases[i % len(cases)]
        async with gate:
            try:
                return (await client.post(f"{url}{path}", content=body, headers=headers)).status_code
            except httpx.HTTPError:
                return 0

    async with httpx.AsyncClient(timeout=120) as client:
        start = time.perf_counter()
        codes = await asyncio.gather(*(send(client, i) for i in range(total)))
        # One oversize body (2 MB): refused from its declared length.
        codes.append((await client.post(f"{url}{cases[0][0]}", content=b"{" + b" " * 2_000_000 + b"}",
                                         headers=cases[0][1])).status_code)
        wall = time.perf_counter() - start
        after = await one_request(client, url, {"Authorization": f"Bearer {key}"}, 8)
    counts = Counter(codes)
    return {"requests": len(codes), "seconds": round(wall, 2), "statuses": {str(k): v for k, v in sorted(counts.items())},
            "4xx": sum(v for k, v in counts.items() if 400 <= k < 500), "5xx": sum(v for k, v in counts.items() if k >= 500),
            "other": sum(v for k, v in counts.items() if not 400 <= k < 600),
            "normal_request_after": {"status": after[1], "seconds": round(after[0], 3), "tokens": after[2]}}


# ---- the two servers ----------------------------------------------------------------------------


def replica_counter(app: str):
    from ray import serve

    def count() -> dict:
        states = serve.status().applications[app].deployments["CreasonServer"].replica_states
        return {"running": int(states.get("RUNNING", 0)), "starting": int(states.get("STARTING", 0))}
    return count


def registry_example(url: str, headers: dict, cfg) -> dict:
    """One registry prediction for a synthetic patient (identifiers included, to be dropped)."""
    from creason.data.pipeline import load_registry_dictionary
    from creason.data.synthetic import generate_block

    row = generate_block(load_registry_dictionary(cfg), 1, seed=11, block_index=5, first_patient_number=700_000).to_pylist()[0]
    record = {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}
    start = time.perf_counter()
    r = httpx.post(f"{url}/v1/registry/predict", headers=headers, timeout=600,
                   json={"record": record, "target": "septic_shock", "max_tokens": 256, "force_answer": True})
    body = r.json()
    return {"status": r.status_code, "seconds": round(time.perf_counter() - start, 2), "truth": record["septic_shock"],
            **{k: body.get(k) for k in ("kind", "options", "answer", "answer_source", "finish_reason", "ignored_variables", "usage")},
            "reasoning_head": (body.get("reasoning") or "")[:300]}


def serve_phase(args, key: str, serve_args: dict) -> dict:
    from ray import serve

    from creason.config import load_config
    from creason.serve.app import build_app

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    start = time.perf_counter()
    serve.run(build_app(serve_args), name="creason", route_prefix="/")
    started = time.perf_counter() - start
    print(f"serve: ready in {started:.0f} s at {url}", flush=True)
    headers, count = {"Authorization": f"Bearer {key}"}, replica_counter("creason")
    before = count()
    levels = asyncio.run(run_levels(url, headers, args.levels, args.requests, args.max_tokens, count))
    cfg = load_config(serve_args["config"], serve_args["overrides"])
    registry = registry_example(url, headers, cfg)
    print(json.dumps(registry), flush=True)
    limits = cfg.serve.limits
    bad = asyncio.run(malformed_phase(url, key, args.bad, limits.max_prompt_chars))
    print(json.dumps(bad), flush=True)
    waited, after = 0.0, count()
    while after["running"] + after["starting"] > before["running"] and waited < args.downscale_wait:
        time.sleep(2)
        waited += 2
        after = count()
    status = serve.status().applications["creason"].deployments["CreasonServer"].status
    serve.shutdown()
    return {"startup_s": round(started, 1), "replicas_before": before, "levels": levels, "registry_example": registry, "malformed": bad,
            "replicas_after": after, "waited_for_downscale_s": waited, "deployment_status_after": str(status)}


def ray_serve_llm_phase(args, model: str, env: dict, serve_cfg, max_chars: int) -> dict:
    """`ray.serve.llm` with the replica's engine settings, threads and autoscaling. It has no API
    key, so the malformed phase's bad-key requests count as answered, not refused."""
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    llm = LLMConfig(
        model_loading_config={"model_id": "creason", "model_source": model},
        engine_kwargs={"dtype": "float32", "max_model_len": args.max_model_len, "enforce_eager": True,
                       "kv_cache_memory_bytes": int(args.kv_cache_gib * 1024**3)},
        placement_group_config={"bundles": [{"CPU": serve_cfg.cpus_per_replica}]},
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", **env}},
        deployment_config={"ray_actor_options": {"num_cpus": 0}, "max_ongoing_requests": serve_cfg.max_ongoing_requests,
                           "max_queued_requests": serve_cfg.max_queued_requests,
                           "autoscaling_config": {"min_replicas": serve_cfg.min_replicas, "max_replicas": args.max_replicas,
                                                  "target_ongoing_requests": serve_cfg.target_ongoing_requests,
                                                  "upscale_delay_s": 2, "downscale_delay_s": args.downscale_delay}},
    )
    start = time.perf_counter()
    try:
        serve.run(build_openai_app({"llm_configs": [llm]}), name="ray-serve-llm", route_prefix="/")
        started = time.perf_counter() - start
        print(f"ray.serve.llm: ready in {started:.0f} s at {url}", flush=True)
        levels = asyncio.run(run_levels(url, {}, args.levels, args.requests, args.max_tokens))
        bad = asyncio.run(malformed_phase(url, "no-key", args.bad, max_chars))
        print(json.dumps(bad), flush=True)
        return {"startup_s": round(started, 1), "levels": levels, "malformed": bad}
    finally:
        serve.shutdown()


def vllm_phase(args, model: str, env: dict, inline_worker: bool) -> dict:
    """vLLM's server with the replica's engine settings, process layout and threads."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", "creason",
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", str(args.max_model_len),
           "--kv-cache-memory-bytes", str(int(args.kv_cache_gib * 1024**3)), "--enforce-eager", "--disable-log-stats"]
    if inline_worker:
        cmd += ["--distributed-executor-backend", "uni"]
        env = {**env, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    log = open(Path(tempfile.gettempdir()) / "serve_load_vllm.log", "w")
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < args.startup_timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {proc.returncode}; see {log.name}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            raise TimeoutError(f"vLLM server not up after {args.startup_timeout} s; see {log.name}")
        started = time.perf_counter() - start
        print(f"vllm: ready in {started:.0f} s at {url}", flush=True)
        levels = asyncio.run(run_levels(url, {}, args.levels, args.requests, args.max_tokens))
        return {"startup_s": round(started, 1), "levels": levels}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its engine core (its own process group)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


# ---- a replica killed under load ------------------------------------------------------------------


async def steady_load(url: str, headers: dict, clients: int, max_tokens: int, stop: asyncio.Event, timeout_s: float) -> list[dict]:
    """`clients` clients sending requests back to back until `stop`: {sent, done, status} each
    (monotonic seconds; status 0: the connection failed or the client timed out)."""
    results = []

    async def client(http):
        while not stop.is_set():
            sent = time.monotonic()
            seconds, status, _ = await one_request(http, url, headers, max_tokens)
            results.append({"sent": sent, "done": sent + seconds, "status": status})

    async with httpx.AsyncClient(timeout=timeout_s, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return results


def inject(fault: str):
    """Kill replica #0 (`replica`) or its vLLM engine core (`engine_core`); returns its ProcessInfo."""
    import psutil

    from creason import faults

    if fault == "replica":
        return faults.kill("replica")
    victim = faults.find_processes("replica")[0]
    core = next(p for p in psutil.Process(victim.pid).children(recursive=True) if "EngineCore" in p.name())
    core.kill()
    return victim


def window(results: list[dict]) -> dict:
    ok = np.array([r["done"] - r["sent"] for r in results if r["status"] == 200] or [np.nan])
    return {"requests": len(results), "ok": int(np.isfinite(ok).sum()),
            "errors": dict(Counter(str(r["status"]) for r in results if r["status"] != 200)),
            "p50_latency_s": round(float(np.percentile(ok, 50)), 3), "p99_latency_s": round(float(np.percentile(ok, 99)), 3)}


def outage_report(results: list[dict], killed: float, recovered: float | None, timeline: list) -> dict:
    """Requests by when they finished: before the kill, during the outage (until 2 replicas run
    again), after it."""
    end = recovered or float("inf")
    errors = [r for r in results if r["status"] != 200]
    return {
        "errors_by_status": dict(Counter(str(r["status"]) for r in errors)),
        "error_free_after_s": round(max(r["done"] for r in errors) - killed, 2) if errors else 0.0,
        "replicas_back_after_s": round(recovered - killed, 1) if recovered else None,
        "before": window([r for r in results if r["done"] < killed]),
        "during": window([r for r in results if killed <= r["done"] < end]),
        "after": window([r for r in results if r["done"] >= end]),
        "replica_states": [{"t_s": round(t - killed, 1), **states} for t, states in timeline],
    }


async def kill_under_load(url: str, headers: dict, args, count) -> dict:
    from creason import faults

    stop = asyncio.Event()
    load = asyncio.create_task(steady_load(url, headers, args.clients, args.max_tokens, stop, args.request_timeout + 30))
    await asyncio.sleep(args.before)
    victim = await asyncio.to_thread(inject, args.fault)
    killed, recovered, timeline = time.monotonic(), None, []
    print(f"killed {args.fault} of {victim.name} (pid {victim.pid})", flush=True)
    while recovered is None and time.monotonic() - killed < args.recovery_timeout:
        states, live = await asyncio.to_thread(count), await asyncio.to_thread(faults.find_processes, "replica")
        if not timeline or timeline[-1][1] != states:
            timeline.append((time.monotonic(), states))
        if states["running"] == 2 and len(live) == 2 and victim.actor_id not in {p.actor_id for p in live}:
            recovered = time.monotonic()
        await asyncio.sleep(0.5)
    await asyncio.sleep(args.after)
    stop.set()
    report = outage_report(await load, killed, recovered, timeline)
    return {"fault": args.fault, "victim": victim.name, "clients": args.clients, "max_tokens": args.max_tokens, **report}


def kill_phase(args, key: str, serve_args: dict) -> dict:
    from ray import serve

    from creason.config import load_config
    from creason.serve.app import build_app, http_options

    cfg = load_config(serve_args["config"], serve_args["overrides"])
    port = free_port()
    serve.start(http_options={**http_options(cfg.serve), "host": "127.0.0.1", "port": port})
    start = time.perf_counter()
    serve.run(build_app(serve_args), name="creason", route_prefix="/")
    print(f"serve: 2 replicas ready in {time.perf_counter() - start:.0f} s", flush=True)
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
    asyncio.run(run_levels(url, headers, [2], [4], args.max_tokens))  # both replicas warm
    result = asyncio.run(kill_under_load(url, headers, args, replica_counter("creason")))
    serve.shutdown()
    return {"request_timeout_s": cfg.serve.request_timeout_s, "replica_deadline_s": cfg.serve.limits.request_timeout_s, **result}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: SmolLM2-135M-Instruct from `creason fetch-model`)")
    p.add_argument("--serve-config", default=str(ROOT / "serve_configs" / "local_cpu.yaml"))
    p.add_argument("--levels", type=int, nargs="+", default=[1, 8, 64], help="concurrency levels")
    p.add_argument("--requests", type=int, nargs="+", default=[24, 32, 128], help="requests per level")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--bad", type=int, default=1000, help="malformed requests")
    p.add_argument("--max-replicas", type=int, default=2)
    p.add_argument("--downscale-delay", type=float, default=10.0)
    p.add_argument("--downscale-wait", type=float, default=60.0, help="at most this long waiting for the scale-down")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--kv-cache-gib", type=float, default=0.25)
    p.add_argument("--startup-timeout", type=float, default=400.0)
    p.add_argument("--skip-vllm", action="store_true")
    p.add_argument("--skip-ray-serve-llm", action="store_true")
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--kill-replica", action="store_true", help="instead: 2 replicas, kill one under load, measure the outage")
    p.add_argument("--fault", choices=["replica", "engine_core"], default="replica", help="--kill-replica: what to kill")
    p.add_argument("--clients", type=int, default=8, help="--kill-replica: clients sending requests back to back")
    p.add_argument("--before", type=float, default=20.0, help="--kill-replica: seconds of load before the kill")
    p.add_argument("--after", type=float, default=20.0, help="--kill-replica: seconds of load after the recovery")
    p.add_argument("--recovery-timeout", type=float, default=300.0, help="--kill-replica: stop waiting after this long")
    p.add_argument("--request-timeout", type=float, default=60.0, help="--kill-replica: serve.request_timeout_s")
    args = p.parse_args()
    if len(args.requests) != len(args.levels):
        p.error("--requests needs one count per level")

    import ray

    from creason.config import load_config
    from creason.data.pipeline import build_question_set
    from creason.models.fetch import fetch_default_model

    model = str(args.model or fetch_default_model())
    key = os.environ.setdefault("CREASON_API_KEY", "bench-" + os.urandom(8).hex())  # before Ray: replicas inherit it
    app = yaml.safe_load(Path(args.serve_config).read_text())["applications"][0]["args"]
    if args.kill_replica:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")  # its own cluster, not one `ray start` left
        overrides = [*app.get("overrides", []), "serve.min_replicas=2", "serve.max_replicas=2", f"serve.kv_cache_gib={args.kv_cache_gib}",
                     f"serve.max_model_len={args.max_model_len}", f"serve.request_timeout_s={args.request_timeout}",
                     f"serve.limits.request_timeout_s={args.request_timeout - 10}", "serve.require_api_key=true"]
        result = {"model": model, "cores": os.cpu_count(), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "load_average_before": os.getloadavg(),
                  "serve": kill_phase(args, key, {**app, "model_path": model, "questions_dir": None, "overrides": overrides}),
                  "load_average_after": os.getloadavg()}
        ray.shutdown()
        print(json.dumps(result, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return
    with tempfile.TemporaryDirectory() as tmp:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")  # its own cluster, not one `ray start` left
        build_question_set(load_config("quickstart", [f"output_dir={tmp}", "data.num_patients=300", "data.block_size=300"]))
        overrides = [*app.get("overrides", []), f"serve.max_replicas={args.max_replicas}", f"serve.downscale_delay_s={args.downscale_delay}",
                     "serve.upscale_delay_s=2", f"serve.kv_cache_gib={args.kv_cache_gib}", f"serve.max_model_len={args.max_model_len}",
                     "serve.require_api_key=true"]
        serve_args = {**app, "model_path": model, "questions_dir": f"{tmp}/questions", "overrides": overrides}
        serve_cfg = load_config(serve_args["config"], overrides).serve
        env, inline = serve_cfg.replica_env, serve_cfg.cpu_inline_worker
        result = {"model": model, "cores": os.cpu_count(), "max_tokens": args.max_tokens, "replica_env": env, "inline_worker": inline,
                  "serve": serve_phase(args, key, serve_args)}
        if not args.skip_ray_serve_llm:
            result["ray_serve_llm"] = ray_serve_llm_phase(args, model, env, serve_cfg, serve_cfg.limits.max_prompt_chars)
        ray.shutdown()
    if not args.skip_vllm:  # OMP: as a 1-CPU replica gets
        result["vllm"] = vllm_phase(args, model, {"OMP_NUM_THREADS": "1", **env}, inline)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
