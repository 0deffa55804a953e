"""The Ray Serve application: an autoscaling deployment whose replicas each own a vLLM async
engine, behind FastAPI routes.

    creason serve --config quickstart --set serve.model_path=runs/x/ray_train/.../step_00000016
    serve run serve_configs/local_cpu.yaml          (or `serve deploy` it to a running cluster)

Routes: `POST /v1/chat/completions` (OpenAI, streaming or not), `GET /v1/models`,
`POST /v1/registry/predict`, `GET /healthz` (the replica is up), `GET /readyz` (its engine has
answered a request). `/v1/*` needs `Authorization: Bearer <key>` when a key is configured: Ray's
own token does not cover the Serve HTTP port. Every refused request gets a 4xx with an
OpenAI-style JSON error naming the field; nothing a client sends can crash a replica.

Nothing waits forever: the proxy ends a request after `serve.request_timeout_s` (408), a replica
stops working on one after `serve.limits.request_timeout_s` (504, the engine aborts it), requests
past `serve.max_queued_requests` get 503 with `Retry-After`, and so do requests to a replica whose
engine core died, which then exits so that Serve replaces it. docs/reliability.md says what
clients see when a replica dies.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import logging
import math
import os
import time
from pathlib import Path
from typing import AsyncIterator, Awaitable, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException
from vllm.exceptions import VLLMClientError
from vllm.v1.engine.exceptions import EngineDeadError

from creason.config import CreasonConfig, ServeConfig, load_config
from creason.serve import handlers
from creason.serve.engine import ServeEngine, resolve_model_folder
from creason.serve.protocol import (
    SSE_DONE,
    ApiError,
    ChatCompletionRequest,
    ModelCard,
    ModelList,
    RegistryPredictRequest,
    parse_request,
    validation_error,
)
from creason.serve.registry_predict import MANIFEST_FILE, RegistryContext

APP_NAME = "creason"
DEPLOYMENT_NAME = "CreasonServer"
logger = logging.getLogger("ray.serve")
T = TypeVar("T")
ENGINE_WATCH_S = 0.5  # how often a replica checks that its engine core is alive


# ---- what a replica is built from -----------------------------------------------------------------


class BuildArgs(BaseModel):
    """`args:` of an application in a Serve config file (`import_path: creason.serve.app:build_app`)."""

    model_config = ConfigDict(extra="forbid")

    config: str | None = Field("quickstart", description="creason config: a YAML path or a shipped config name.")
    overrides: list[str] = Field(default_factory=list, description="`key.path=value` overrides, as `--set`.")
    model_path: str | None = Field(None, description="Shortcut for the override `serve.model_path=...`.")
    questions_dir: str | None = Field(None, description="Shortcut for the override `serve.questions_dir=...`.")


class ServerSettings(BaseModel):
    """The init arguments of a replica: everything resolved where the app is built."""

    serve: ServeConfig
    model_path: str
    registry: RegistryContext | None


def server_settings(cfg: CreasonConfig) -> ServerSettings:
    """Resolve the model folder (a checkpoint's `policy/`) and load the question plan, if any."""
    from creason.paths import questions_dir, resolve_model_path

    model = resolve_model_folder(cfg.serve.model_path or resolve_model_path(cfg))
    questions = Path(questions_dir(cfg, cfg.serve.questions_dir))  # a local folder
    registry = RegistryContext.load(questions) if (questions / MANIFEST_FILE).is_file() else None
    if registry is None:
        logger.warning("no question build at %s: /v1/registry/predict will answer 404", questions)
    return ServerSettings(serve=cfg.serve, model_path=str(model.resolve()), registry=registry)


def deployment_options(s: ServeConfig) -> dict:
    """Replica resources, autoscaling and queue limits of the deployment, from `serve:`."""
    actor = {"num_cpus": s.cpus_per_replica, "num_gpus": s.gpus_per_replica}
    if s.replica_env:
        actor["runtime_env"] = {"env_vars": dict(s.replica_env)}
    return dict(
        ray_actor_options=actor,
        autoscaling_config={
            "min_replicas": s.min_replicas,
            "initial_replicas": max(1, s.min_replicas),
            "max_replicas": s.max_replicas,
            "target_ongoing_requests": s.target_ongoing_requests,
            "upscale_delay_s": s.upscale_delay_s,
            "downscale_delay_s": s.downscale_delay_s,
        },
        max_ongoing_requests=s.max_ongoing_requests,
        max_queued_requests=s.max_queued_requests,
        backpressure_config={"status_code": 503, "retry_after_s": s.retry_after_s},  # past max_queued_requests
        max_surge_percent=s.max_surge_percent,
        health_check_period_s=10,
        health_check_timeout_s=30,
    )


def http_options(s: ServeConfig) -> dict:
    """`serve.start(http_options=...)` of the proxy: address, and the end-to-end request timeout."""
    return {"host": s.host, "port": s.port, "request_timeout_s": s.request_timeout_s}


def app_from_config(cfg: CreasonConfig):
    """The bound Serve application for a creason config."""
    return CreasonServer.options(**deployment_options(cfg.serve)).bind(server_settings(cfg))


def build_app(args: dict):
    """Serve's application builder: `import_path: creason.serve.app:build_app` in a config file,
    `args` as in `BuildArgs`. Re-deploying the file with another `model_path` rolls the replicas
    over to that model."""
    args = args if isinstance(args, BuildArgs) else BuildArgs.model_validate(args or {})
    overrides = list(args.overrides)
    overrides += [f"serve.model_path={args.model_path}"] if args.model_path else []
    overrides += [f"serve.questions_dir={args.questions_dir}"] if args.questions_dir else []
    return app_from_config(load_config(args.config, overrides))


# ---- HTTP: errors and request bodies ------------------------------------------------------------

api = FastAPI(title="creason", description="Clinical reasoning model: OpenAI-compatible chat and registry prediction.",
              docs_url=None, redoc_url=None)


class EngineUnavailable(ApiError):
    """503 with `Retry-After`: this replica's engine died. The request did not finish, so a retry
    is safe; the replica exits (`_leave_when_engine_dies`) and other replicas answer the retry."""

    def __init__(self, retry_after_s: float):
        super().__init__(503, "the model engine of this replica stopped; retry: Serve is replacing the replica", None,
                         "server_error")
        self.retry_after_s = retry_after_s


def deadline_error(seconds: float) -> ApiError:
    return ApiError(504, f"generation took longer than serve.limits.request_timeout_s ({seconds:g} s) and was stopped; "
                         "ask for fewer tokens", None, "timeout_error")


def _error(e: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    if isinstance(e, EngineUnavailable):
        headers = {"Retry-After": str(math.ceil(e.retry_after_s))}
    return JSONResponse(e.response().model_dump(), status_code=e.status, headers=headers)


@api.exception_handler(ApiError)
async def _api_error(request: Request, e: ApiError) -> JSONResponse:
    return _error(e)


@api.exception_handler(RequestValidationError)
async def _request_validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
    return _error(validation_error(list(e.errors())))


@api.exception_handler(ValidationError)
async def _pydantic_error(request: Request, e: ValidationError) -> JSONResponse:
    return _error(validation_error(e.errors()))


@api.exception_handler(VLLMClientError)
async def _engine_rejected(request: Request, e: VLLMClientError) -> JSONResponse:
    param = getattr(e, "parameter", None)
    return _error(ApiError(400, f"{param or 'request'}: {e}", param))


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
    kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
    return _error(ApiError(e.status_code, str(e.detail), None, kind))


@api.exception_handler(Exception)
async def _unexpected(request: Request, e: Exception) -> JSONResponse:
    logger.exception("request failed: %s %s", request.method, request.url.path)
    return _error(ApiError(500, f"internal error ({type(e).__name__})", None, "server_error"))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes (before reading it all when declared)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is larger than {limit} bytes", "body")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise ApiError(413, f"request body is larger than {limit} bytes", "body")
    return bytes(body)


async def bounded_stream(events: AsyncIterator[str], seconds: float | None) -> AsyncIterator[str]:
    """The events of a stream until `seconds` have passed; then the generation is cancelled (vLLM
    aborts the request) and the stream ends with a 504 error event and `[DONE]` (headers are sent).
    Closing this stream (a client that went away) closes `events`, which aborts the request too."""
    loop = asyncio.get_running_loop()
    deadline = None if seconds is None else loop.time() + seconds
    try:
        while True:
            try:
                event = await asyncio.wait_for(anext(events), None if deadline is None else deadline - loop.time())
            except StopAsyncIteration:
                return
            except TimeoutError:
                error = deadline_error(seconds)
                yield f"data: {error.response().model_dump_json()}\n\n"
                yield SSE_DONE
                return
            yield event
    finally:
        await events.aclose()


def key_digest(settings: ServeConfig) -> bytes | None:
    """SHA-256 of the configured API key (config, else its environment variable), or None."""
    key = settings.api_key or os.environ.get(settings.api_key_env)
    if not key and settings.require_api_key:
        raise RuntimeError(f"serve.require_api_key is set but neither serve.api_key nor ${settings.api_key_env} holds a key")
    return hashlib.sha256(key.encode()).digest() if key else None


# ---- the deployment -----------------------------------------------------------------------------


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(api)
class CreasonServer:
    """One replica: a vLLM async engine, warmed up before the replica takes traffic."""

    async def __init__(self, settings: ServerSettings):
        self.settings, self.cfg = settings, settings.serve
        self._key = key_digest(self.cfg)
        if self._key is None:
            logger.warning("no API key configured: /v1 is open to anyone who can reach the port")
        self.engine = ServeEngine(settings.model_path, self.cfg.dtype, self.cfg.max_model_len, int(self.cfg.kv_cache_gib * 1024**3),
                                  inline_worker=self.cfg.cpu_inline_worker and self.cfg.gpus_per_replica == 0,
                                  enforce_eager=self.cfg.enforce_eager)
        await self.engine.warm_up()  # readiness: the engine has answered a request
        self.created = int(time.time())
        self._stopping = False
        self._watchdog = asyncio.create_task(self._leave_when_engine_dies())  # held: the loop keeps weak references

    async def _leave_when_engine_dies(self) -> None:
        """Exit the replica process once its engine core is dead. Serve marks a replica unhealthy
        only after 3 failed health checks in a row (30 s at a 10 s period) and meanwhile keeps
        routing requests here, which fail fast (503) and so attract more (measured with 4 clients:
        1,782 failed requests in 35 s). A replica process that dies is routed around and replaced
        at once."""
        while not self.engine.errored:
            await asyncio.sleep(ENGINE_WATCH_S)
        if not self._stopping:  # a shutdown stops the engine too
            logger.error("the engine core of this replica died: exiting so that Serve replaces the replica")
            os._exit(1)

    def _authorize(self, request: Request) -> None:
        if self._key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = hashlib.sha256(token.strip().encode()).digest()  # equal lengths: compare_digest is constant time
        if not (hmac.compare_digest(given, self._key) and scheme.lower() == "bearer"):
            raise ApiError(401, "missing or wrong API key: send `Authorization: Bearer <key>`", None, "authentication_error")

    async def _answer(self, work: Awaitable[T]) -> T:
        """A route's work within `serve.limits.request_timeout_s` (past it the work is cancelled, which
        aborts the engine request: 504); a dead engine is a 503 the client may retry."""
        seconds = self.cfg.limits.request_timeout_s
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                return await work
        except TimeoutError:
            if not deadline.expired():
                raise
            raise deadline_error(seconds) from None
        except EngineDeadError:
            raise EngineUnavailable(self.cfg.retry_after_s) from None

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        ready = self.engine.warm_up_seconds is not None and not self.engine.errored
        body = {"status": "ready" if ready else "not ready", "model": self.cfg.model_name, "warm_up_s": self.engine.warm_up_seconds}
        return JSONResponse(body, status_code=200 if ready else 503)

    @api.get("/v1/models")
    async def models(self, request: Request) -> ModelList:
        self._authorize(request)
        card = ModelCard(id=self.cfg.model_name, created=self.created, root=self.settings.model_path, max_model_len=self.cfg.max_model_len)
        return ModelList(data=[card])

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        self._authorize(request)
        req = parse_request(ChatCompletionRequest, await read_body(request, self.cfg.limits.max_body_bytes), self.cfg.limits)
        if req.stream:
            events = bounded_stream(handlers.chat_completion_stream(self.engine, req, self.cfg), self.cfg.limits.request_timeout_s)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return await self._answer(handlers.chat_completion(self.engine, req, self.cfg))

    @api.post("/v1/registry/predict")
    async def registry_predict(self, request: Request):
        self._authorize(request)
        req = parse_request(RegistryPredictRequest, await read_body(request, self.cfg.limits.max_body_bytes), self.cfg.limits)
        return await self._answer(handlers.registry_predict(self.engine, self.settings.registry, req, self.cfg))

    async def check_health(self) -> None:
        """Serve's health probe: fails when the engine core is dead (the replica also exits then)."""
        await self.engine.check_health()

    def __del__(self):
        self._stopping = True
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


# ---- `creason serve` --------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """Start (or join) Ray, run the application, print its URL and block until Ctrl-C."""
    from creason.raycluster import connect

    cfg = load_config(args.config, args.overrides)
    if getattr(args, "model", None):
        cfg.serve.model_path = args.model
    connect(cfg.ray)
    serve.start(http_options=http_options(cfg.serve))
    serve.run(app_from_config(cfg), name=APP_NAME, route_prefix="/")
    url = f"http://{cfg.serve.host}:{cfg.serve.port}"
    print(f"serving `{cfg.serve.model_name}` at {url}/v1 (OpenAI-compatible; registry: {url}/v1/registry/predict)")
    print("Ctrl-C stops it.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0
