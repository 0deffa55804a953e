"""Shared fixtures: a local Ray cluster sized for a 2-core machine, and a tiny dictionary."""

from __future__ import annotations

from pathlib import Path

import pytest

from creason.data.dictionary import DataDictionary


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster for the whole session (starting one costs ~10 s)."""
    import ray

    from creason.raycluster import local_cluster_options

    if not ray.is_initialized():
        # Workers import test-only helpers (e.g. a reward by dotted path) from the repository root.
        root = str(Path(__file__).resolve().parents[1])
        options = local_cluster_options(include_dashboard=False, num_cpus=2)
        options["runtime_env"]["env_vars"] = {"PYTHONPATH": root}
        # address="local": a new cluster, never one that `ray start` left running on this machine
        ray.init(address="local", logging_level="ERROR", **options)
    yield ray
    ray.shutdown()


TINY_VARIABLES = [
    dict(name="pid", display_name="Patient", section="Admin/Identity", kind="identifier"),
    dict(name="onset", display_name="Sepsis onset", section="Timeline/Events", kind="datetime"),
    dict(name="admitted", display_name="Admission", section="Timeline/Events", kind="datetime"),
    dict(name="sex", display_name="Sex", section="Baseline/Demographics", kind="categorical", values=["Female", "Male"]),
    dict(name="site", display_name="Infection site", section="Infection/Site", kind="categorical",
         values=["Lung", "Urine", "Abdomen", "Skin", "Other", "CNS"]),
    dict(name="lactate", display_name="Lactate", unit="mmol/L", section="Labs/First", kind="numeric", min=0, max=30, decimals=1),
    dict(name="lactate_copy", display_name="Lactate (point of care)", unit="mmol/L", section="Labs/First", kind="numeric",
         min=0, max=30, decimals=1),
    dict(name="gcs", display_name="GCS", section="Vitals/First", kind="numeric", min=3, max=15, decimals=0),
    dict(name="shock", display_name="Septic shock", section="Severity/Shock", kind="categorical", values=["No", "Yes"]),
    dict(name="death", display_name="Hospital mortality", section="Outcomes/Mortality", kind="categorical",
         values=["No", "Yes"], outcome=True, question="Did the patient die in hospital?"),
]


@pytest.fixture
def tiny_dictionary() -> DataDictionary:
    return DataDictionary.model_validate(dict(name="tiny", patient_id="pid", time_zero="onset", variables=TINY_VARIABLES))


@pytest.fixture(scope="session")
def smollm2_dir():
    """The converted SmolLM2-135M-Instruct folder (`creason fetch-model`, done by `make setup`)."""
    from creason.models.fetch import fetch_default_model

    return fetch_default_model()


@pytest.fixture(scope="session")
def tiny_model_dir(smollm2_dir, tmp_path_factory):
    """A random 2-layer Llama with the SmolLM2 tokenizer (and chat template)."""
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", smollm2_dir)


@pytest.fixture(scope="session")
def small_question_set(ray_local, tmp_path_factory) -> Path:
    """The question folder of a 400-patient synthetic registry (the quickstart's settings otherwise),
    built once for the tests that train, warm up, evaluate or serve on it (`*.questions_dir`)."""
    from creason.config import load_config
    from creason.data.pipeline import build_question_set

    out = tmp_path_factory.mktemp("small-question-set")
    build_question_set(load_config("quickstart", [f"output_dir={out}", "data.num_patients=400", "data.block_size=200"]))
    return out / "questions"


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto in server mode, a real HTTP endpoint) and the environment
    that points S3 clients (pyarrow's among them) at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, tmp_path):
    """A new bucket on the local S3 server, this process pointed at it, and working copies kept
    under tmp_path; yields the bucket's URI."""
    import uuid

    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CREASON_WORKDIR", str(tmp_path / "working-copies"))
    return create_bucket(f"creason-{uuid.uuid4().hex[:10]}")


def create_bucket(name: str) -> str:
    """Create a bucket on the S3 server the environment names; returns its URI."""
    import os

    import pyarrow.fs as pafs

    pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], allow_bucket_creation=True).create_dir(name)
    return f"s3://{name}"
