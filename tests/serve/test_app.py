"""The Serve application end to end: a tiny model behind the real deployment on the session's
local Ray cluster, called over HTTP with the official `openai` client and with raw requests."""

from __future__ import annotations

import socket

import httpx
import openai
import pytest

from creason.config import load_config
from creason.data.pipeline import load_registry_dictionary
from creason.data.synthetic import generate_block

pytestmark = [pytest.mark.ray, pytest.mark.slow]

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMITS = ["serve.limits.max_tokens=64", "serve.limits.default_max_tokens=16", "serve.limits.registry_max_tokens=24",
          "serve.limits.max_prompt_chars=4000", "serve.limits.max_messages=8", "serve.limits.max_n=2",
          "serve.limits.max_body_bytes=65536"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint(tiny_model_dir, small_question_set, tmp_path_factory):
    """The app, started once for this file: (base URL, config)."""
    from ray import serve

    from creason.serve.app import app_from_config

    out = tmp_path_factory.mktemp("serve")
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = load_config("quickstart", [f"output_dir={out}", f"serve.questions_dir={small_question_set}",
                                     f"serve.model_path={tiny_model_dir}", f"serve.api_key={KEY}",
                                     "serve.kv_cache_gib=0.0625", "serve.max_model_len=1024", "serve.cpus_per_replica=1",
                                     "serve.min_replicas=1", "serve.max_replicas=1", *LIMITS])
    try:
        serve.run(app_from_config(cfg), name="creason-test", route_prefix="/")
        yield f"http://127.0.0.1:{port}", cfg
    finally:
        serve.shutdown()


@pytest.fixture
def client(endpoint):
    return openai.OpenAI(base_url=f"{endpoint[0]}/v1", api_key=KEY, max_retries=0, timeout=60)


def _chat(**kw) -> dict:
    return {"model": "creason", "messages": [{"role": "user", "content": "Lactate 4.5: septic shock?"}], **kw}


def test_openai_client_completion_stream_and_models(client):
    full = client.chat.completions.create(**_chat(max_tokens=8, temperature=0.0))
    assert full.choices[0].finish_reason in ("stop", "length") and full.usage.completion_tokens <= 8
    pieces, finish, usage = [], None, None
    for chunk in client.chat.completions.create(**_chat(max_tokens=8, temperature=0.0), stream=True,
                                                stream_options={"include_usage": True}):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == full.choices[0].message.content  # greedy: the stream is the same text
    assert finish == full.choices[0].finish_reason and usage.completion_tokens == full.usage.completion_tokens
    assert [m.id for m in client.models.list().data] == ["creason"]


def _record(cfg) -> dict:
    """A synthetic patient as a client would send it, identifiers and absolute dates included."""
    row = generate_block(load_registry_dictionary(cfg), 1, seed=7, block_index=3, first_patient_number=900_000).to_pylist()[0]
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}


def test_registry_predict_answers_with_an_offered_option_or_null(endpoint):
    url, cfg = endpoint
    record = _record(cfg)
    for force in (False, True):
        r = httpx.post(f"{url}/v1/registry/predict", headers=AUTH, timeout=60,
                       json={"record": record, "target": "hospital_mortality", "force_answer": force})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["kind"] == "outcome" and [o["value"] for o in body["options"]] == ["No", "Yes"]
        assert isinstance(body["reasoning"], str) and record["patient_id"] not in body["question"]
        assert {"patient_id", "hospital_code"} <= set(body["ignored_variables"])
        if body["answer"] is None:
            assert not force and body["answer_source"] is None
        else:
            assert body["answer"] in body["options"] and body["answer_source"] in ("boxed", "forced")
    assert body["answer"] is not None  # forced: always a letter


def test_wrong_or_missing_api_key_is_401(endpoint):
    url, _ = endpoint
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).chat.completions.create(**_chat())
    r = httpx.post(f"{url}/v1/chat/completions", json=_chat())
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{url}/healthz").status_code == 200  # probes need no key
    assert httpx.get(f"{url}/readyz").json()["status"] == "ready"


BAD_REQUESTS = [
    ("chat", b'{"model": "creason", "messages": [', 400, "body"),
    ("chat", b"[1, 2, 3]", 400, "body"),
    ("chat", _chat(temperature=0.5, colour="blue"), 400, "colour"),
    ("chat", _chat(max_tokens=65), 400, "max_tokens"),
    ("chat", _chat(max_tokens="8"), 400, "max_tokens"),
    ("chat", _chat(n=3), 400, "n"),
    ("chat", {"model": "creason", "messages": [{"role": "user", "content": "x" * 4001}]}, 400, "messages"),
    ("chat", {"model": "creason", "messages": [{"role": "user", "content": "x"}] * 9}, 400, "messages"),
    ("chat", {"model": "creason", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
    ("chat", _chat(model="gpt-4"), 404, "model"),
    ("chat", b"{" + b" " * 70_000 + b"}", 413, "body"),
    ("registry", {"record": {"lactate": 400.0}, "target": "septic_shock"}, 400, "record.lactate"),
    ("registry", {"record": {"shoe_size": 44}, "target": "septic_shock"}, 400, "record.shoe_size"),
    ("registry", {"record": {"lactate": True}, "target": "septic_shock"}, 400, "record.lactate"),
    ("registry", {"record": {}, "target": "patient_id"}, 400, "target"),
    ("registry", {"record": {}, "target": "septic_shock", "max_tokens": 1000}, 400, "max_tokens"),
]


@pytest.mark.parametrize("route, body, status, param", BAD_REQUESTS)
def test_bad_request_gets_4xx_naming_the_field(endpoint, route, body, status, param):
    url, _ = endpoint
    path = {"chat": "/v1/chat/completions", "registry": "/v1/registry/predict"}[route]
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(f"{url}{path}", headers=AUTH, timeout=30, **kw)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["code"] == status


def test_endpoint_still_answers_after_bad_requests(client, endpoint):
    from ray import serve

    deployment = serve.status().applications["creason-test"].deployments["CreasonServer"]
    assert deployment.status == "HEALTHY" and deployment.replica_states == {"RUNNING": 1}
    assert client.chat.completions.create(**_chat(max_tokens=4)).usage.completion_tokens <= 4
