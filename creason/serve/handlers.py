"""What each route does, between a parsed request and a response: no Ray, no HTTP framework.

`chat_completion` and `chat_completion_stream` follow OpenAI's chat completions (a response, or
server-sent events ending with `data: [DONE]`); `registry_predict` turns a record into the
training prompt, asks the model, and reads the option it chose.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import AsyncIterator

from creason.config import ServeConfig
from creason.serve.engine import ServeEngine
from creason.serve.protocol import (
    SSE_DONE,
    ApiError,
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChunkChoice,
    DeltaMessage,
    ErrorResponse,
    RegistryOption,
    RegistryPredictRequest,
    RegistryPredictResponse,
    UsageInfo,
    new_id,
)
from creason.serve.registry_predict import RecordError, RegistryContext, answer_letter, build_prediction_prompt


def check_model(requested: str, served: str) -> None:
    if requested != served:
        raise ApiError(404, f"The model `{requested}` does not exist; this endpoint serves `{served}`.", "model", "not_found_error")


def check_length(prompt_tokens: int, max_tokens: int, max_model_len: int, param: str) -> None:
    if prompt_tokens + max_tokens > max_model_len:
        raise ApiError(400, f"{param}: the prompt is {prompt_tokens} tokens; with max_tokens {max_tokens} that is more "
                            f"than the model's {max_model_len}-token context", param)


def _prepare_chat(engine: ServeEngine, req: ChatCompletionRequest, cfg: ServeConfig, stream: bool = False):
    """Prompt token ids and sampling parameters, or the error that refuses the request."""
    check_model(req.model, cfg.model_name)
    try:
        ids = engine.encode(req.messages_as_dicts())
    except Exception as e:  # noqa: BLE001 - a chat template may refuse an order of roles
        raise ApiError(400, f"messages: the model's chat template refused them ({type(e).__name__}: {e})", "messages") from None
    max_tokens = req.requested_max_tokens(cfg.limits.default_max_tokens)
    check_length(len(ids), max_tokens, engine.max_model_len, "messages")
    return ids, req.to_sampling_params(max_tokens, stream=stream)


async def chat_completion(engine: ServeEngine, req: ChatCompletionRequest, cfg: ServeConfig) -> ChatCompletionResponse:
    ids, params = _prepare_chat(engine, req, cfg)
    out = await engine.complete(ids, params)
    choices = [ChatChoice(index=o.index, message=AssistantMessage(content=o.text), finish_reason=o.finish_reason)
               for o in sorted(out.outputs, key=lambda o: o.index)]
    usage = UsageInfo.of(len(ids), sum(len(o.token_ids) for o in out.outputs))
    return ChatCompletionResponse(id=new_id("chatcmpl"), model=cfg.model_name, choices=choices, usage=usage)


def chat_completion_stream(engine: ServeEngine, req: ChatCompletionRequest, cfg: ServeConfig) -> AsyncIterator[str]:
    """Server-sent events of a streamed completion. The request is checked before the first
    event, so a bad request still gets a plain 4xx response."""
    ids, params = _prepare_chat(engine, req, cfg, stream=True)
    rid, created = new_id("chatcmpl"), int(time.time())

    def chunk(choices: list[ChunkChoice], usage: UsageInfo | None = None) -> str:
        return ChatCompletionChunk(id=rid, created=created, model=cfg.model_name, choices=choices, usage=usage).sse()

    async def events() -> AsyncIterator[str]:
        tokens: dict[int, int] = defaultdict(int)
        try:
            yield chunk([ChunkChoice(index=i, delta=DeltaMessage(role="assistant", content="")) for i in range(req.n)])
            async for out in engine.generate(ids, params, rid):
                for o in out.outputs:
                    tokens[o.index] += len(o.token_ids)
                    if o.text or o.finish_reason:
                        yield chunk([ChunkChoice(index=o.index, delta=DeltaMessage(content=o.text), finish_reason=o.finish_reason)])
            if req.stream_options and req.stream_options.include_usage:
                yield chunk([], UsageInfo.of(len(ids), sum(tokens.values())))
        except Exception as e:  # noqa: BLE001 - headers are sent: report in-band, then end the stream
            yield f"data: {ErrorResponse.of(500, f'generation failed: {type(e).__name__}', kind='server_error').model_dump_json()}\n\n"
        yield SSE_DONE

    return events()


async def registry_predict(engine: ServeEngine, ctx: RegistryContext | None, req: RegistryPredictRequest, cfg: ServeConfig) -> RegistryPredictResponse:
    """Record -> training prompt -> the model's reasoning -> the option it chose (or None)."""
    if ctx is None:
        raise ApiError(404, "registry prediction is not configured: serve.questions_dir names no question build "
                            "(plan.json and manifest.json)", None, "not_found_error")
    try:
        prompt = build_prediction_prompt(ctx, req.record, req.target, req.kind, cfg.identifiers)
    except RecordError as e:
        raise ApiError(400, str(e), e.param) from None
    ids = engine.encode(prompt.messages)
    max_tokens = req.max_tokens or cfg.limits.registry_max_tokens
    check_length(len(ids), max_tokens, engine.max_model_len, "record")
    out = (await engine.complete(ids, req.to_sampling_params(max_tokens))).outputs[0]
    k = len(prompt.options)
    letter, source = answer_letter(out.text, k), "boxed"
    if letter is None and req.force_answer:
        letter, source = await engine.force_letter(ids, list(out.token_ids), k), "forced"
    options = [RegistryOption(letter="ABCDE"[i], value=v) for i, v in enumerate(prompt.options)]
    return RegistryPredictResponse(
        id=new_id("regpred"), model=cfg.model_name, target=req.target, kind=prompt.kind,
        unit=ctx.plan.variable(req.target).unit, question=prompt.messages[1]["content"], options=options,
        answer=options["ABCDE".index(letter)] if letter else None, answer_source=source if letter else None,
        reasoning=out.text, finish_reason=out.finish_reason, ignored_variables=prompt.ignored_variables,
        usage=UsageInfo.of(len(ids), len(out.token_ids)),
    )
