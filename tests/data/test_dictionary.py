import pytest
import yaml

from creason.data.dictionary import DictionaryError, load_dictionary, sepsis_dictionary


def _write(tmp_path, variables, **top):
    doc = {"name": "r", "patient_id": "pid", "variables": [{"name": "pid", "display_name": "ID", "section": "A/B", "kind": "identifier"}] + variables}
    doc.update(top)
    path = tmp_path / "dict.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_builtin_dictionary_has_full_and_compact_profiles():
    full = sepsis_dictionary()
    compact = sepsis_dictionary("compact")
    assert len([v for v in full.variables if v.kind.value != "identifier"]) >= 80
    assert 25 <= len(compact.variables) <= 40
    assert set(compact.names) <= set(full.names)


def test_unknown_kind_names_variable_and_field(tmp_path):
    path = _write(tmp_path, [{"name": "lactate", "display_name": "Lactate", "section": "Labs/First", "kind": "number"}])
    with pytest.raises(DictionaryError, match=r"dict\.yaml: variables\[1\] \(lactate\)\.kind"):
        load_dictionary(path)


def test_categorical_without_values_is_rejected(tmp_path):
    path = _write(tmp_path, [{"name": "sex", "display_name": "Sex", "section": "Base/Demo", "kind": "categorical"}])
    with pytest.raises(DictionaryError, match=r"\(sex\).*at least 2 allowed `values`"):
        load_dictionary(path)


def test_section_must_be_domain_slash_section(tmp_path):
    path = _write(tmp_path, [{"name": "sex", "display_name": "Sex", "section": "Demographics", "kind": "categorical", "values": ["F", "M"]}])
    with pytest.raises(DictionaryError, match=r"\(sex\)\.section.*Domain/Section"):
        load_dictionary(path)


def test_unknown_field_is_rejected(tmp_path):
    path = _write(tmp_path, [{"name": "age", "display_name": "Age", "section": "Base/Demo", "kind": "numeric", "units": "y"}])
    with pytest.raises(DictionaryError, match=r"\(age\)\.units: Extra inputs"):
        load_dictionary(path)


def test_min_above_max_is_rejected(tmp_path):
    path = _write(tmp_path, [{"name": "age", "display_name": "Age", "section": "Base/Demo", "kind": "numeric", "min": 5, "max": 1}])
    with pytest.raises(DictionaryError, match="greater than `max`"):
        load_dictionary(path)


def test_duplicate_names_and_bad_patient_id(tmp_path):
    var = {"name": "age", "display_name": "Age", "section": "Base/Demo", "kind": "numeric"}
    with pytest.raises(DictionaryError, match=r"duplicate variable names: \['age'\]"):
        load_dictionary(_write(tmp_path, [var, var]))
    with pytest.raises(DictionaryError, match="patient_id 'age' must name an identifier"):
        load_dictionary(_write(tmp_path, [var], patient_id="age"))


def test_profile_with_unknown_variable(tmp_path):
    var = {"name": "age", "display_name": "Age", "section": "Base/Demo", "kind": "numeric"}
    with pytest.raises(DictionaryError, match=r"profile 'small' names unknown variables: \['weight'\]"):
        load_dictionary(_write(tmp_path, [var], profiles={"small": ["weight"]}))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(DictionaryError, match="not found"):
        load_dictionary(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(DictionaryError, match="not valid YAML"):
        load_dictionary(bad)


def test_answers_must_name_values_and_read_differently(tmp_path):
    death = {"name": "death", "display_name": "Died", "section": "Out/Mortality", "kind": "categorical", "values": ["No", "Yes"]}
    with pytest.raises(DictionaryError, match=r"\(death\).*`answers` names \['Maybe'\], which are not among `values`"):
        load_dictionary(_write(tmp_path, [{**death, "answers": {"Maybe": "Unsure"}}]))
    with pytest.raises(DictionaryError, match=r"\(death\).*must read differently for every value"):
        load_dictionary(_write(tmp_path, [{**death, "answers": {"No": "Yes"}}]))
    numeric = {"name": "age", "display_name": "Age", "section": "Base/Demo", "kind": "numeric", "answers": {"1": "one"}}
    with pytest.raises(DictionaryError, match=r"\(age\).*`answers` only apply to categorical or ordinal"):
        load_dictionary(_write(tmp_path, [numeric]))
    ok = load_dictionary(_write(tmp_path, [{**death, "answers": {"Yes": "Died in hospital"}}]))["death"]
    assert ok.answer_texts(["Yes", "No"]) == ["Died in hospital", "No"]  # a value left out reads as itself


def test_builtin_answer_words_differ_across_yes_no_variables():
    """The point of `answers`: no two Yes/No variables of the compact profile share an answer's words."""
    coded = [v for v in sepsis_dictionary("compact").variables if v.values == ["No", "Yes"]]
    texts = [t for v in coded for t in v.answer_texts(v.values)]
    assert len(coded) >= 6 and len(set(texts)) == len(texts) and not {"No", "Yes"} & set(texts)
