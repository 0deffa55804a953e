"""Request and response models of the endpoint: OpenAI's chat completions, and registry prediction.

Requests are parsed with `parse_request(Model, body, limits)`: strict types, no unknown fields, and
the limits of `ServeLimitsConfig` checked field by field, so every error names its field
(`messages.3.content`, `max_tokens`). Request models convert themselves to engine types
(`to_sampling_params`), as in vLLM's `entrypoints/openai`. No Ray, no FastAPI here.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from creason.config import ServeLimitsConfig

MAX_STOP_CHARS = 64
_Req = TypeVar("_Req", bound="_Request")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _limits(info: ValidationInfo) -> ServeLimitsConfig:
    """The limits passed as validation context (the defaults when none is)."""
    return (info.context or {}).get("limits") or ServeLimitsConfig()


def parse_request(model: type[_Req], body: bytes, limits: ServeLimitsConfig) -> _Req:
    """`model` from a JSON body, checked against `limits`; raises pydantic's ValidationError."""
    return model.model_validate_json(body, context={"limits": limits})


def _check_max_tokens(v: int | None, info: ValidationInfo) -> int | None:
    most = _limits(info).max_tokens
    if v is not None and v > most:
        raise ValueError(f"at most {most} tokens may be asked for, got {v}")
    return v


def _record_value(v: Any) -> Any:
    if v is None or isinstance(v, str) or (isinstance(v, (int, float)) and not isinstance(v, bool)):
        return v
    raise ValueError(f"must be a string, a number or null, got {type(v).__name__}")


def _stop_value(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return v
    raise ValueError("must be a string or a list of strings")


RecordValue = Annotated[Any, AfterValidator(_record_value)]
StopStrings = Annotated[Any, AfterValidator(_stop_value)]


# ---- chat completions (OpenAI) ------------------------------------------------------------------


class ChatMessage(_Request):
    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = Field(None, max_length=64, description="Accepted for compatibility; not shown to the model.")


class StreamOptions(_Request):
    include_usage: bool = False


class ChatCompletionRequest(_Request):
    """`POST /v1/chat/completions`: the OpenAI fields this endpoint honours (others: 400)."""

    model: str = Field(max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="Completion tokens at most (or `max_completion_tokens`).")
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: StopStrings = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    user: str | None = Field(None, max_length=256)

    _check_tokens = field_validator("max_tokens", "max_completion_tokens")(_check_max_tokens)

    @field_validator("messages")
    @classmethod
    def _within_limits(cls, messages: list[ChatMessage], info: ValidationInfo) -> list[ChatMessage]:
        limits = _limits(info)
        if len(messages) > limits.max_messages:
            raise ValueError(f"at most {limits.max_messages} messages, got {len(messages)}")
        chars = sum(len(m.content) for m in messages)
        if chars > limits.max_prompt_chars:
            raise ValueError(f"at most {limits.max_prompt_chars} characters of content in all, got {chars}")
        return messages

    @field_validator("n")
    @classmethod
    def _n_within_limit(cls, n: int, info: ValidationInfo) -> int:
        if n > _limits(info).max_n:
            raise ValueError(f"at most {_limits(info).max_n} completions per request, got {n}")
        if n > 1 and info.data.get("temperature") == 0:  # temperature is validated before n
            raise ValueError("n > 1 needs temperature > 0 (greedy decoding gives one answer)")
        return n

    @field_validator("stop")
    @classmethod
    def _stop_within_limits(cls, stops: list[str], info: ValidationInfo) -> list[str]:
        if len(stops) > _limits(info).max_stop:
            raise ValueError(f"at most {_limits(info).max_stop} stop strings, got {len(stops)}")
        if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"stop strings must have 1 to {MAX_STOP_CHARS} characters")
        return stops

    def requested_max_tokens(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default

    def to_sampling_params(self, max_tokens: int, stream: bool = False):
        """The vLLM `SamplingParams` of this request (DELTA outputs when streaming)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p if self.temperature > 0 else 1.0,
            max_tokens=max_tokens,
            stop=self.stop or None,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
        )

    def messages_as_dicts(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]


class UsageInfo(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> "UsageInfo":
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageInfo | None = None

    def sse(self) -> str:
        """One server-sent event (`usage` only where set, as OpenAI sends it)."""
        return f"data: {self.model_dump_json(exclude_none=self.usage is None)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "creason"
    root: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


# ---- registry prediction ------------------------------------------------------------------------


class RegistryPredictRequest(_Request):
    """`POST /v1/registry/predict`: one patient record and the variable or outcome to predict."""

    record: dict[str, RecordValue] = Field(
        description="Values by variable name, as in a registry file: strings for categorical and ordinal "
        "variables, numbers for numeric ones, ISO 8601 strings for datetimes; null or absent when missing."
    )
    target: str = Field(max_length=128, description="The variable or outcome to predict.")
    kind: Literal["masked_value", "outcome"] | None = Field(
        None, description="Question kind; None: `outcome` for outcome targets, else `masked_value`."
    )
    max_tokens: int | None = Field(None, ge=1, description="Reasoning tokens at most (default: limits.registry_max_tokens).")
    temperature: float = Field(0.0, ge=0, le=2, description="0: greedy, as evaluation.")
    force_answer: bool = Field(
        False, description="When the reasoning holds no valid \\boxed{X}, ask once more for one letter only."
    )

    _check_tokens = field_validator("max_tokens")(_check_max_tokens)

    @field_validator("record")
    @classmethod
    def _record_within_limits(cls, record: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        limits = _limits(info)
        if len(record) > limits.max_record_values:
            raise ValueError(f"at most {limits.max_record_values} variables, got {len(record)}")
        long = sorted(k for k, v in record.items() if isinstance(v, str) and len(v) > limits.max_value_chars)
        if long:
            raise ValueError(f"values of {long} are longer than {limits.max_value_chars} characters")
        return record

    def to_sampling_params(self, max_tokens: int):
        from vllm import SamplingParams

        return SamplingParams(n=1, temperature=self.temperature, max_tokens=max_tokens)


class RegistryOption(BaseModel):
    letter: str
    value: str


class RegistryPredictResponse(BaseModel):
    id: str
    model: str
    target: str
    kind: Literal["masked_value", "outcome"]
    unit: str | None = Field(description="Unit of the target's values, if any.")
    question: str = Field(description="The question as the model read it (record, question, options).")
    options: list[RegistryOption]
    answer: RegistryOption | None = Field(description="The chosen option; null when the model chose none.")
    answer_source: Literal["boxed", "forced"] | None = Field(
        description="`boxed`: the first \\boxed{X} of the reasoning; `forced`: the one-letter follow-up."
    )
    reasoning: str = Field(description="The model's completion.")
    finish_reason: str | None
    ignored_variables: list[str] = Field(description="Record variables never shown to the model (identifiers, ...).")
    usage: UsageInfo


# ---- errors -------------------------------------------------------------------------------------


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    error: ErrorInfo

    @classmethod
    def of(cls, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error") -> "ErrorResponse":
        return cls(error=ErrorInfo(message=message, type=kind, param=param, code=status))


class ApiError(Exception):
    """A request the endpoint refuses: HTTP `status`, OpenAI-style error body naming `param`."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def response(self) -> ErrorResponse:
        return ErrorResponse.of(self.status, self.message, self.param, self.kind)


def validation_error(errors: list[dict[str, Any]]) -> ApiError:
    """400 for pydantic errors, naming the first field (`messages.0.content`, `body` for bad JSON)."""
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or "body"
    if first.get("type") == "json_invalid":
        return ApiError(400, f"malformed JSON: {first.get('msg')}", "body")
    if first.get("type") == "extra_forbidden":
        return ApiError(400, f"{param}: unknown field", param)
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return ApiError(400, f"{param}: {message}{more}", param)
