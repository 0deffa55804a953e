"""Serving under faults, against the real deployment with a tiny model on the session's local Ray
cluster (loopback only): overload, a per-request deadline, a replica killed under load, and a
replica whose engine core dies. First the pure parts: deadlines and the options given to Serve."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace

import httpx
import pytest

from creason import faults
from creason.config import ServeConfig, load_config

BOUND_S = 30.0  # the proxy's request timeout here: no request may wait longer
CLIENTS = 4


# ---- pure: deadlines and options -----------------------------------------------------------------


async def _events(n: int, every_s: float, log: list[str]):
    """A generation that yields `n` events `every_s` apart and records how it ended."""
    try:
        for i in range(n):
            await asyncio.sleep(every_s)
            yield f"data: {i}\n\n"
        log.append("finished")
    except asyncio.CancelledError:
        log.append("cancelled")  # where vLLM aborts the request
        raise
    finally:
        log.append("closed")


def test_bounded_stream_passes_events_then_ends_at_the_deadline():
    from creason.serve.app import bounded_stream

    async def collect(n, every_s, seconds):
        log, out = [], []
        async for e in bounded_stream(_events(n, every_s, log), seconds):
            out.append(e)
        return out, log

    out, log = asyncio.run(collect(3, 0.01, 5.0))
    assert out == [f"data: {i}\n\n" for i in range(3)] and log == ["finished", "closed"]
    out, log = asyncio.run(collect(3, 0.01, None))
    assert len(out) == 3
    start = time.monotonic()
    out, log = asyncio.run(collect(1000, 0.05, 0.3))
    assert time.monotonic() - start < 2 and 1 <= len(out) - 2 <= 7
    assert '"code":504' in out[-2] and '"type":"timeout_error"' in out[-2] and out[-1] == "data: [DONE]\n\n"
    assert log == ["cancelled", "closed"]


def test_bounded_stream_closed_by_the_client_closes_the_generation():
    from creason.serve.app import bounded_stream

    async def first_only():
        log = []
        stream = bounded_stream(_events(1000, 0.01, log), 10.0)
        await anext(stream)
        await stream.aclose()
        return log

    assert asyncio.run(first_only()) == ["closed"]


def test_routes_answer_504_past_the_deadline_and_503_when_the_engine_died():
    from vllm.v1.engine.exceptions import EngineDeadError

    from creason.serve.app import CreasonServer, EngineUnavailable, _error
    from creason.serve.protocol import ApiError

    server = SimpleNamespace(cfg=ServeConfig(retry_after_s=2.5, limits={"request_timeout_s": 0.2}))  # `_answer` needs no engine
    answer = CreasonServer.func_or_class._answer
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def dead():
        raise EngineDeadError()

    async def own_timeout():
        raise TimeoutError("not the deadline")

    with pytest.raises(ApiError) as late:
        asyncio.run(answer(server, slow()))
    assert late.value.status == 504 and cancelled == [True]
    with pytest.raises(TimeoutError, match="not the deadline"):
        asyncio.run(answer(server, own_timeout()))
    with pytest.raises(EngineUnavailable) as gone:
        asyncio.run(answer(server, dead()))
    response = _error(gone.value)
    assert response.status_code == 503 and response.headers["retry-after"] == "3"


def test_serve_gets_the_timeouts_and_backpressure_of_the_config():
    from creason.serve.app import deployment_options, http_options

    s = ServeConfig(request_timeout_s=45, retry_after_s=7, max_queued_requests=3, limits={"request_timeout_s": 40})
    assert http_options(s) == {"host": "127.0.0.1", "port": 8000, "request_timeout_s": 45}
    options = deployment_options(s)
    assert options["max_queued_requests"] == 3
    assert options["backpressure_config"] == {"status_code": 503, "retry_after_s": 7}


# ---- the real deployment ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def proxy(ray_local):
    """Serve's proxy with this file's request timeout; yields its base URL."""
    from ray import serve

    from creason.serve.app import http_options

    port = _free_port()
    serve.start(http_options=http_options(ServeConfig(port=port, request_timeout_s=BOUND_S)))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def _deploy(proxy: str, model: str, out, app: str, *overrides: str) -> str:
    """Run creason's app `app` alone (one app at a time fits a 2-core machine); its base URL."""
    from ray import serve

    from creason.serve.app import app_from_config

    for other in serve.status().applications:
        serve.delete(other)
    cfg = load_config("quickstart", [f"output_dir={out}", f"serve.model_path={model}", "serve.kv_cache_gib=0.0625",
                                     "serve.max_model_len=1024", "serve.cpus_per_replica=0.5",
                                     f"serve.request_timeout_s={BOUND_S}", *overrides])
    serve.run(app_from_config(cfg), name=app, route_prefix=f"/{app}")
    return f"{proxy}/{app}"


def _chat(max_tokens: int = 8, **kw) -> dict:
    return {"model": "creason", "messages": [{"role": "user", "content": "Lactate 4.5: septic shock?"}],
            "max_tokens": max_tokens, "temperature": 0.0, **kw}


def _replicas(app: str) -> list[faults.ProcessInfo]:
    return [p for p in faults.find_processes("replica") if p.class_name == f"ServeReplica:{app}:CreasonServer"]


def _running(app: str) -> int:
    from ray import serve

    return serve.status().applications[app].deployments["CreasonServer"].replica_states.get("RUNNING", 0)


def _wait(condition, timeout_s: float, every_s: float = 0.25) -> float:
    """Poll until `condition()`; returns the time (monotonic) it became true, fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(every_s)
    pytest.fail(f"not true after {timeout_s} s: {condition.__doc__}")


@dataclass
class Result:
    sent: float  # monotonic
    seconds: float
    status: int | str  # HTTP status, or the client's exception (a hang would be ReadTimeout)
    retry_after: str | None


class Load:
    """`CLIENTS` threads sending chat requests back to back until the block ends."""

    def __init__(self, url: str):
        self.url, self.results, self._stop = f"{url}/v1/chat/completions", [], threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(CLIENTS)]

    def _client(self) -> None:
        with httpx.Client(timeout=BOUND_S + 15) as client:  # past the proxy's bound: a hang shows as ReadTimeout
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    r = client.post(self.url, json=_chat())
                    status, retry_after = r.status_code, r.headers.get("retry-after")
                except httpx.HTTPError as e:
                    status, retry_after = type(e).__name__, None
                self.results.append(Result(start, time.monotonic() - start, status, retry_after))

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def errors(self) -> list[Result]:
        return [r for r in self.results if r.status != 200]

    def ok_between(self, start: float, end: float) -> int:
        return sum(1 for r in self.results if r.status == 200 and start <= r.sent and r.sent + r.seconds <= end)


# ---- overload and deadlines (1 replica) ----------------------------------------------------------


@pytest.fixture(scope="module")
def small_replica(proxy, tiny_model_dir, tmp_path_factory):
    """1 replica that works on 2 requests and queues 2 more; 2 s per request at most (greedy, the tiny
    model took 8 s for 2,000 tokens and 0.3 s for 64 at load 1.8, 0.7 s for the burst's at load 12)."""
    return _deploy(proxy, tiny_model_dir, tmp_path_factory.mktemp("overload"), "creason-overload",
                   "serve.min_replicas=1", "serve.max_replicas=1", "serve.max_ongoing_requests=2",
                   "serve.max_queued_requests=2", "serve.retry_after_s=7", "serve.limits.request_timeout_s=2",
                   "serve.max_model_len=2048", "serve.limits.max_tokens=2000")


async def _burst(url: str, n: int, max_tokens: int) -> list[tuple[int, float, str | None]]:
    """`n` requests at once: (status, seconds, Retry-After) each."""
    async def one(client):
        start = time.monotonic()
        r = await client.post(f"{url}/v1/chat/completions", json=_chat(max_tokens))
        return r.status_code, time.monotonic() - start, r.headers.get("retry-after")

    async with httpx.AsyncClient(timeout=BOUND_S + 15, limits=httpx.Limits(max_connections=n)) as client:
        return await asyncio.gather(*(one(client) for _ in range(n)))


@pytest.mark.ray
@pytest.mark.slow
def test_overload_gets_503_with_retry_after_not_a_backlog(small_replica):
    results = asyncio.run(_burst(small_replica, 16, max_tokens=64))
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    refused = [(s, ra) for s, seconds, ra in results if s == 503]
    assert len(refused) >= 8, statuses  # 2 working + 2 queued of 16 sent at once
    assert all(ra == "7" for _, ra in refused)
    assert max(seconds for s, seconds, _ in results if s == 503) < 5  # refused at once, not queued
    assert statuses.count(200) >= 2
    assert httpx.post(f"{small_replica}/v1/chat/completions", json=_chat(), timeout=BOUND_S).status_code == 200


@pytest.mark.ray
@pytest.mark.slow
def test_a_request_past_the_deadline_is_stopped_and_the_replica_goes_on(small_replica):
    url = f"{small_replica}/v1/chat/completions"
    start = time.monotonic()
    r = httpx.post(url, json=_chat(2000), timeout=BOUND_S)  # greedy: the tiny model repeats itself, no EOS
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error", r.text[:300]
    assert 2 <= time.monotonic() - start < 2 + 5
    start = time.monotonic()
    with httpx.stream("POST", url, json=_chat(2000, stream=True), timeout=BOUND_S) as s:
        assert s.status_code == 200
        events = [line for line in s.iter_lines() if line.startswith("data: ")]
    assert 2 <= time.monotonic() - start < 2 + 5
    assert '"code":504' in events[-2] and events[-1] == "data: [DONE]"
    r = httpx.post(url, json=_chat(), timeout=BOUND_S)
    assert r.status_code == 200 and r.elapsed.total_seconds() < 2


# ---- faults (2 replicas) ------------------------------------------------------------------------


APP = "creason-faults"


@pytest.fixture(scope="module")
def two_replicas(proxy, tiny_model_dir, tmp_path_factory):
    return _deploy(proxy, tiny_model_dir, tmp_path_factory.mktemp("faults"), APP, "serve.min_replicas=2", "serve.max_replicas=2")


def _recovered(victim: faults.ProcessInfo):
    def back() -> bool:
        """2 replicas running again, the victim not among them"""
        live = _replicas(APP)
        return _running(APP) == 2 and len(live) == 2 and victim.actor_id not in {p.actor_id for p in live}
    return back


def _check_after_fault(load: Load, fault_at: float, clean_after: float, recovered_at: float, url: str) -> None:
    statuses = {r.status for r in load.results}
    assert statuses <= {200, 500, 503}, statuses  # no client timeout, no cut connection
    assert max(r.seconds for r in load.results) < BOUND_S
    errors = load.errors()
    assert all(fault_at - BOUND_S < r.sent < clean_after for r in errors), [(r.sent - fault_at, r.status) for r in errors]
    assert load.ok_between(clean_after, recovered_at) >= 10  # the surviving replica answers meanwhile
    assert load.ok_between(recovered_at, float("inf")) >= 1
    assert httpx.post(f"{url}/v1/chat/completions", json=_chat(), timeout=BOUND_S).status_code == 200


@pytest.mark.ray
@pytest.mark.slow
def test_replica_killed_under_load_fails_only_its_requests_and_is_replaced(two_replicas):
    assert len(_replicas(APP)) == 2
    with Load(two_replicas) as load:
        time.sleep(5)
        victim = _replicas(APP)[0]
        faults.kill_process(victim)
        killed_at = time.monotonic()
        recovered_at = _wait(_recovered(victim), timeout_s=300)
        time.sleep(3)
    errors = load.errors()
    assert len(errors) <= CLIENTS, errors  # at most the requests it was working on
    assert all(r.status == 500 for r in errors)  # the proxy's answer for a replica that died mid-request
    _check_after_fault(load, killed_at, killed_at + 5, recovered_at, two_replicas)


@pytest.mark.ray
@pytest.mark.slow
def test_replica_whose_engine_core_dies_leaves_and_is_replaced(two_replicas):
    import psutil

    _wait(lambda: _running(APP) == 2 and len(_replicas(APP)) == 2, timeout_s=300)
    victim = _replicas(APP)[0]
    cores = [p for p in psutil.Process(victim.pid).children(recursive=True) if "EngineCore" in p.name()]
    assert len(cores) == 1
    with Load(two_replicas) as load:
        time.sleep(5)
        cores[0].kill()
        killed_at = time.monotonic()

        def gone() -> bool:
            """the replica whose engine died has exited"""
            return victim.actor_id not in {p.actor_id for p in _replicas(APP)}

        gone_at = _wait(gone, timeout_s=20)
        recovered_at = _wait(_recovered(victim), timeout_s=300)
        time.sleep(3)
    assert gone_at - killed_at < 5  # its watchdog, not 3 failed health checks (30 s)
    assert all(r.retry_after == "5" for r in load.errors() if r.status == 503)
    _check_after_fault(load, killed_at, gone_at + 2, recovered_at, two_replicas)
