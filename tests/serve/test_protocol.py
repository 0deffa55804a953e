"""Request models, error bodies and deployment options, without Ray or a model."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from creason.config import ConfigError, ServeLimitsConfig, load_config
from creason.serve.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    DeltaMessage,
    RegistryPredictRequest,
    parse_request,
    validation_error,
)

LIMITS = ServeLimitsConfig(max_tokens=64, max_prompt_chars=100, max_messages=3, max_n=2, max_stop=1)


def chat(**kw) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}).encode()


def error_of(model, body: bytes):
    with pytest.raises(ValidationError) as e:
        parse_request(model, body, LIMITS)
    return validation_error(e.value.errors())


def test_a_good_request_converts_to_sampling_params():
    req = parse_request(ChatCompletionRequest, chat(max_completion_tokens=7, temperature=0.5, stop="\n", n=2), LIMITS)
    params = req.to_sampling_params(req.requested_max_tokens(16), stream=True)
    assert (params.max_tokens, params.n, params.stop, params.temperature) == (7, 2, ["\n"], 0.5)
    assert parse_request(ChatCompletionRequest, chat(), LIMITS).requested_max_tokens(16) == 16


@pytest.mark.parametrize(
    "body, param, words",
    [
        (b"{nope", "body", "malformed JSON"),
        (b'"a string"', "body", "object"),
        (chat(max_tokens=65), "max_tokens", "at most 64"),
        (chat(max_completion_tokens=0), "max_completion_tokens", "greater than or equal"),
        (chat(max_tokens=True), "max_tokens", "integer"),
        (chat(n=3), "n", "at most 2"),
        (chat(n=2, temperature=0), "n", "temperature > 0"),
        (chat(stop=["a", "b"]), "stop", "at most 1"),
        (chat(stop=7), "stop", "string"),
        (chat(temperature=3), "temperature", "less than or equal"),
        (chat(seed=1), "seed", "unknown field"),
        (json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 101}]}).encode(), "messages", "characters"),
        (json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}] * 4}).encode(), "messages", "at most 3"),
        (json.dumps({"model": "m", "messages": [{"role": "user", "content": 5}]}).encode(), "messages.0.content", "string"),
        (json.dumps({"model": "m", "messages": [{"role": "user", "content": "x", "x": 1}]}).encode(), "messages.0.x", "unknown"),
    ],
)
def test_bad_chat_requests_name_the_field(body, param, words):
    e = error_of(ChatCompletionRequest, body)
    assert (e.status, e.param) == (400, param) and words in e.message


@pytest.mark.parametrize(
    "payload, param",
    [
        ({"record": {"a": [1]}, "target": "t"}, "record.a"),
        ({"record": {"a": False}, "target": "t"}, "record.a"),
        ({"record": {"a": "x" * 3000}, "target": "t"}, "record"),
        ({"record": {}, "target": "t", "kind": "guess"}, "kind"),
        ({"record": {}}, "target"),
    ],
)
def test_bad_registry_requests_name_the_field(payload, param):
    assert error_of(RegistryPredictRequest, json.dumps(payload).encode()).param == param


def test_stream_chunks_are_openai_events():
    chunk = ChatCompletionChunk(id="c", created=1, model="m", choices=[ChunkChoice(index=0, delta=DeltaMessage(content="x"))])
    event = chunk.sse()
    assert event.startswith("data: ") and event.endswith("\n\n")
    assert json.loads(event[6:]) == {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                     "choices": [{"index": 0, "delta": {"content": "x"}}]}


def test_deployment_options_come_from_config():
    from creason.serve.app import deployment_options

    cfg = load_config("quickstart", ["serve.min_replicas=0", "serve.max_replicas=3", "serve.cpus_per_replica=0.5",
                                     "serve.replica_env={VLLM_CPU_OMP_THREADS_BIND: nobind}"])
    options = deployment_options(cfg.serve)
    assert options["autoscaling_config"]["min_replicas"] == 0 and options["autoscaling_config"]["initial_replicas"] == 1
    assert options["autoscaling_config"]["max_replicas"] == 3
    assert options["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.0,
                                            "runtime_env": {"env_vars": {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}}}
    with pytest.raises(ConfigError, match="min_replicas"):
        load_config("quickstart", ["serve.min_replicas=3", "serve.max_replicas=2"])


def test_checkpoints_resolve_to_their_policy_folder(tmp_path):
    from creason.serve.engine import resolve_model_folder
    from creason.train.checkpoint import mark_complete

    for step in (8, 16):
        (tmp_path / "ckpt" / f"step_{step:08d}" / "policy").mkdir(parents=True)
        (tmp_path / "ckpt" / f"step_{step:08d}" / "policy" / "config.json").write_text("{}")
    mark_complete(tmp_path / "ckpt" / "step_00000008")
    assert resolve_model_folder(tmp_path / "ckpt") == tmp_path / "ckpt" / "step_00000008" / "policy"  # 16 is incomplete
    assert resolve_model_folder(tmp_path / "ckpt" / "step_00000016") == tmp_path / "ckpt" / "step_00000016" / "policy"
    assert resolve_model_folder(tmp_path / "ckpt" / "step_00000008" / "policy").name == "policy"
    with pytest.raises(FileNotFoundError, match="serve.model_path"):
        resolve_model_folder(tmp_path / "nothing")


def test_api_key_from_environment(monkeypatch):
    from creason.serve.app import key_digest

    cfg = load_config(None, ["serve.require_api_key=true"]).serve
    monkeypatch.delenv("CREASON_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="CREASON_API_KEY"):
        key_digest(cfg)
    monkeypatch.setenv("CREASON_API_KEY", "s3cret")
    assert key_digest(cfg) is not None and key_digest(load_config(None, []).serve) is not None
    monkeypatch.delenv("CREASON_API_KEY")
    assert key_digest(load_config(None, []).serve) is None
