import pytest

from creason.cli import main
from creason.config import ConfigError, CreasonConfig, load_config


def test_shipped_quickstart_loads_and_overrides_apply():
    cfg = load_config("quickstart", ["data.num_patients=5000", "questions.mi_cutoff=0.4", "data.profile=full"])
    assert cfg.data.num_patients == 5000
    assert cfg.questions.mi_cutoff == 0.4
    assert cfg.data.profile == "full"


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"data\.num_patiens: unknown key"):
        load_config("quickstart", ["data.num_patiens=5000"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"data\.num_patients: .*integer"):
        load_config("quickstart", ["data.num_patients=many"])


def test_key_below_a_value_is_named():
    with pytest.raises(ConfigError, match=r"seed: Input should be a valid integer"):
        load_config(None, ["seed.x=1"])
    with pytest.raises(ConfigError, match=r"seed: is a value, cannot set seed\.x"):
        load_config(None, ["seed=1", "seed.x=1"])


def test_override_needs_equals_sign():
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(None, ["data.num_patients"])


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match=r"questions\.split"):
        load_config(None, ["questions.split.train=0.5"])


def test_unknown_key_in_yaml_file_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  num_patients: 10\n  colour: blue\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: data\.colour: unknown key"):
        load_config(path)


def test_cli_reports_bad_override_and_exits_2(capsys):
    assert main(["show-config", "--set", "questions.max_options=9"]) == 2
    err = capsys.readouterr().err
    assert "questions.max_options" in err


def test_cli_show_config_prints_defaults(capsys):
    assert main(["show-config", "--set", "seed=7"]) == 0
    out = capsys.readouterr().out
    assert "seed: 7" in out and "num_patients:" in out


def test_every_field_is_documented():
    def walk(model):
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                yield from walk(annotation)
            else:
                yield f"{model.__name__}.{name}", field.description

    undocumented = [name for name, doc in walk(CreasonConfig) if not doc]
    assert undocumented == []


def test_configuration_doc_is_up_to_date():
    from pathlib import Path

    from creason.configdoc import render

    doc = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert doc.read_text() == render(), "regenerate with: python -m creason.configdoc > docs/configuration.md"


def test_paper_gives_every_stage_gpus():
    """`--config paper` runs on GPUs: every stage's GPU field (each field named `gpus_per_*`, so a
    stage added later is checked too) asks for GPUs, and the engines run in bf16."""
    from pydantic import BaseModel

    def gpu_fields(model, prefix=""):
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                yield from gpu_fields(value, f"{prefix}{name}.")
            elif name.startswith("gpus_per"):
                yield f"{prefix}{name}", value

    cfg = load_config("paper")
    fields = dict(gpu_fields(cfg))
    assert {"rollout.gpus_per_actor", "train.gpus_per_worker", "evaluate.gpus_per_actor", "serve.gpus_per_replica"} <= set(fields)
    assert [name for name, gpus in fields.items() if not gpus > 0] == []
    assert cfg.model.precision == "bf16" and cfg.serve.dtype == "bfloat16" and cfg.evaluate.precision in ("auto", "bf16")


def test_loss_aggregation_old_names_load_as_verl_names():
    assert load_config(None, ["algorithm.loss_aggregation=token_mean"]).algorithm.loss_aggregation == "token-mean"
    old = load_config(None, ["algorithm.loss_aggregation=seq_mean_token_mean"])
    assert old.algorithm.loss_aggregation == "seq-mean-token-mean"
    new = load_config(None, ["algorithm.loss_aggregation=seq-mean-token-sum-norm", "algorithm.loss_norm_tokens=256"])
    assert (new.algorithm.loss_aggregation, new.algorithm.loss_norm_tokens) == ("seq-mean-token-sum-norm", 256)
    with pytest.raises(ConfigError, match=r"algorithm\.loss_aggregation"):
        load_config(None, ["algorithm.loss_aggregation=sum"])


def test_grpo_options_off_by_default_and_validated():
    a = load_config(None).algorithm
    assert (a.clip_ratio_c, a.tis_cap, a.loss_norm_tokens, a.advantage_eps) == (None, None, None, 1e-6)
    with pytest.raises(ConfigError, match=r"algorithm\.clip_ratio_c"):
        load_config(None, ["algorithm.clip_ratio_c=1.0"])  # dual clip needs c > 1
    with pytest.raises(ConfigError, match=r"algorithm\.advantage_eps"):
        load_config(None, ["algorithm.advantage_eps=0"])
