"""The synthetic sepsis registry: its dictionary, and the generator checked row by row against the clinical rules."""

import re
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

from creason.data.dictionary import DataDictionary, VariableKind, sepsis_dictionary
from creason.data.synthetic import generate_block

N = 3000
SOFA_PARTS = ("respiration", "coagulation", "liver", "cardiovascular", "cns", "renal")


@pytest.fixture(scope="module")
def full() -> DataDictionary:
    return sepsis_dictionary()


@pytest.fixture(scope="module")
def table(full) -> pa.Table:
    return generate_block(full, N, seed=7, block_index=3, first_patient_number=1001)


@pytest.fixture(scope="module")
def rows(table) -> list[dict]:
    return table.to_pylist()


@pytest.fixture(scope="module")
def large(full) -> pa.Table:
    return generate_block(full, 40_000, seed=11, block_index=0, first_patient_number=0)


def yes(value) -> bool:
    return value == "Yes"


# ---------------------------------------------------------------- dictionary


def test_dictionary_has_full_and_compact_profiles(full):
    described = [v for v in full.variables if v.kind != VariableKind.identifier]
    assert len(described) >= 80
    assert 25 <= len(full.profiles["compact"]) <= 35
    assert full.patient_id == "patient_id" and full.time_zero == "sepsis_onset_datetime"
    assert {v.name for v in full.of_kind(VariableKind.identifier)} == {"patient_id", "hospital_code"}
    key = {"sofa_total", "septic_shock", "lactate", "mean_arterial_pressure", "infection_site", "pathogen",
           "antibiotic_appropriate", "hospital_mortality", "mortality_28d"}  # fmt: skip
    assert key <= set(full.profiles["compact"])


def test_outcomes_are_flagged(full):
    outcomes = {v.name for v in full.variables if v.outcome}
    assert outcomes == {"icu_mortality", "hospital_mortality", "mortality_28d", "hospital_los_days", "icu_los_days",
                        "discharge_status"}  # fmt: skip


def test_binary_variables_are_no_yes(full):
    for v in full.of_kind(VariableKind.categorical):
        if len(v.values) == 2 and "Yes" in v.values:
            assert v.values == ["No", "Yes"], v.name


# ---------------------------------------------------------------- column types and ranges


def test_columns_match_dictionary(full, table):
    assert table.column_names == full.names
    assert table.num_rows == N
    for v in full.variables:
        column = table[v.name]
        values = [x for x in column.to_pylist() if x is not None]
        if v.kind in (VariableKind.categorical, VariableKind.ordinal):
            assert column.type == pa.string(), v.name
            assert set(values) <= set(v.values), (v.name, set(values) - set(v.values))
        elif v.kind in (VariableKind.identifier, VariableKind.free_text):
            assert column.type == pa.string(), v.name
            assert column.null_count == 0 or v.kind == VariableKind.free_text, v.name
        elif v.kind == VariableKind.numeric:
            assert column.type == pa.float64(), v.name
            x = np.array(values)
            assert (x >= v.min).all() and (x <= v.max).all(), v.name
            scaled = x * 10**v.decimals
            assert np.allclose(scaled, np.round(scaled), atol=1e-6), v.name
        else:
            assert column.type == pa.timestamp("s"), v.name
        assert values, f"{v.name} is always missing"


def test_identifiers(rows):
    assert rows[0]["patient_id"] == "P00001001" and rows[-1]["patient_id"] == f"P{1000 + N:08d}"
    assert len({r["patient_id"] for r in rows}) == N
    assert all(re.fullmatch(r"H\d{3}", r["hospital_code"]) for r in rows)


def test_timeline(rows):
    for r in rows:
        assert 2019 <= r["admission_datetime"].year <= 2024
        assert r["admission_datetime"] <= r["sepsis_onset_datetime"] < r["antibiotic_datetime"]
        within = r["antibiotic_datetime"] - r["sepsis_onset_datetime"] <= timedelta(hours=1)
        assert yes(r["antibiotics_within_1h"]) == within
        assert (r["culture_datetime"] is None) == (r["blood_culture_result"] == "Not done")
        if r["culture_datetime"] is not None:
            assert yes(r["blood_culture_before_antibiotics"]) == (r["culture_datetime"] < r["antibiotic_datetime"])
        hospital_onset = r["infection_onset"] == "Hospital-onset"
        assert hospital_onset == (r["sepsis_onset_datetime"] - r["admission_datetime"] >= timedelta(days=2))


# ---------------------------------------------------------------- derived rules, by a slow obvious reference


def band(value, edges, below: bool) -> int:
    """Points: how many of `edges` the value is below (or at least); a missing value scores 0."""
    if value is None:
        return 0
    return sum((value < e) if below else (value >= e) for e in edges)


def reference_sofa(r: dict) -> dict[str, int]:
    respiration = band(r["pao2_fio2"], (400, 300, 200, 100), below=True)
    if not yes(r["mechanical_ventilation"]):
        respiration = min(respiration, 2)
    if yes(r["vasopressors"]):
        cardiovascular = 4 if r["norepinephrine_dose"] > 0.1 else 3
    else:
        cardiovascular = int(r["mean_arterial_pressure"] < 70)
    return {
        "respiration": respiration,
        "coagulation": band(r["platelets"], (150, 100, 50, 20), below=True),
        "liver": band(r["bilirubin"], (1.2, 2.0, 6.0, 12.0), below=False),
        "cardiovascular": cardiovascular,
        "cns": band(r["gcs"], (15, 13, 10, 6), below=True),
        "renal": band(r["creatinine"], (1.2, 2.0, 3.5, 5.0), below=False),
    }


def test_sofa_follows_thresholds_and_sums(rows):
    for r in rows:
        expected = reference_sofa(r)
        recorded = {part: int(r[f"sofa_{part}"]) for part in SOFA_PARTS}
        assert recorded == expected, r["patient_id"]
        assert r["sofa_total"] == sum(recorded.values())


def test_septic_shock_is_vasopressors_and_lactate_above_2(rows):
    for r in rows:
        if not yes(r["vasopressors"]):
            assert r["septic_shock"] == "No" and r["norepinephrine_dose"] is None
        elif r["lactate"] is None:
            assert r["septic_shock"] is None
        else:
            assert r["septic_shock"] == ("Yes" if r["lactate"] > 2 else "No")


def test_qsofa_and_sirs(rows):
    for r in rows:
        qsofa = [r["respiratory_rate"] >= 22, r["systolic_bp"] <= 100, r["gcs"] < 15]
        assert [yes(r[k]) for k in ("qsofa_respiratory_rate", "qsofa_systolic_bp", "qsofa_mentation")] == qsofa
        assert r["qsofa_score"] == sum(qsofa)
        wbc = r["wbc"]
        sirs = [
            r["temperature"] > 38 or r["temperature"] < 36,
            r["heart_rate"] > 90,
            r["respiratory_rate"] > 20,
            wbc is not None and (wbc > 12 or wbc < 4),
        ]
        assert r["sirs_score"] == sum(sirs)


def test_charlson_covers_recorded_conditions_and_age(rows):
    weights = {"myocardial_infarction": 1, "chronic_heart_failure": 1, "cerebrovascular_disease": 1, "dementia": 1,
               "copd": 1, "diabetes": 1, "chronic_kidney_disease": 2, "hematologic_malignancy": 2}  # fmt: skip
    age_points = {"18-39": 0, "40-49": 0, "50-59": 1, "60-69": 2, "70-79": 3, "80-89": 4, "90+": 4}
    extras = []
    for r in rows:
        recorded = sum(w for k, w in weights.items() if yes(r[k])) + age_points[r["age_band"]]
        recorded += {"None": 0, "Mild": 1, "Moderate to severe": 3}[r["liver_disease"]]
        recorded += {"None": 0, "Localized": 2, "Metastatic": 6}[r["solid_malignancy"]]
        extras.append(r["charlson_index"] - recorded)
    assert set(extras) <= {0, 1, 2}  # conditions the registry does not record
    assert 0.5 < extras.count(0) / N < 0.95


def test_missingness_is_coherent(rows):
    for r in rows:
        assert (r["lactate"] is None) == (r["lactate_measured"] == "No")
        assert (r["repeat_lactate"] is None) == (r["lactate_measured"] == "No")
        assert (r["pao2_fio2"] is None) == (r["arterial_ph"] is None)
        if yes(r["mechanical_ventilation"]):
            assert r["pao2_fio2"] is not None
    procalcitonin_missing = sum(r["procalcitonin"] is None for r in rows) / N
    assert 0.2 < procalcitonin_missing < 0.8


def test_mortality_and_stay_are_consistent(rows):
    for r in rows:
        icu = yes(r["icu_admission"])
        assert (r["icu_mortality"] is None) == (not icu) == (r["icu_los_days"] is None)
        if yes(r["icu_mortality"]):
            assert yes(r["hospital_mortality"])
        assert yes(r["hospital_mortality"]) == (r["discharge_status"] == "Death")
        if icu:
            assert r["icu_los_days"] <= r["hospital_los_days"]
        if yes(r["mechanical_ventilation"]) or r["recognition_location"] == "ICU":
            assert icu


GRAM = {"Staphylococcus aureus": "Gram-positive cocci", "Streptococcus pneumoniae": "Gram-positive cocci",
        "Other streptococci": "Gram-positive cocci", "Enterococcus spp.": "Gram-positive cocci",
        "Candida spp.": "Yeast"}  # fmt: skip


def test_cultures_and_pathogen(rows):
    pathogen_fields = ("pathogen", "gram_stain", "resistance", "antibiotic_appropriate")
    for r in rows:
        positive = "Positive" in (r["blood_culture_result"], r["site_culture_result"])
        if not positive:
            assert all(r[k] is None for k in pathogen_fields), r["patient_id"]
            continue
        assert r["pathogen"] is not None and r["resistance"] is not None
        if r["gram_stain"] is not None:
            assert r["gram_stain"] == GRAM.get(r["pathogen"], "Gram-negative bacilli")
        allowed = {"Staphylococcus aureus": {"None", "MRSA"}, "Enterococcus spp.": {"None", "VRE"},
                   "Escherichia coli": {"None", "ESBL", "Carbapenem-resistant"},
                   "Klebsiella pneumoniae": {"None", "ESBL", "Carbapenem-resistant"},
                   "Pseudomonas aeruginosa": {"None", "Carbapenem-resistant"},
                   "Acinetobacter baumannii": {"None", "Carbapenem-resistant"}}  # fmt: skip
        assert r["resistance"] in allowed.get(r["pathogen"], {"None"})


def reference_appropriate(pathogen: str, resistance: str, antibiotic: str, anti_mrsa: bool, antifungal: bool) -> bool:
    everything = {"Third-generation cephalosporin", "Anti-pseudomonal cephalosporin", "Piperacillin-tazobactam",
                  "Carbapenem", "Fluoroquinolone", "Polymyxin-based combination"}  # fmt: skip
    if pathogen == "Candida spp.":
        return antifungal
    gram_positive = pathogen in GRAM
    if gram_positive and anti_mrsa and resistance != "VRE":
        return True
    covering = {
        ("Escherichia coli", "None"): everything,
        ("Klebsiella pneumoniae", "None"): everything,
        ("Other Gram-negative bacilli", "None"): everything,
        ("Escherichia coli", "ESBL"): {"Carbapenem", "Polymyxin-based combination"},
        ("Klebsiella pneumoniae", "ESBL"): {"Carbapenem", "Polymyxin-based combination"},
        ("Pseudomonas aeruginosa", "None"): everything - {"Third-generation cephalosporin"},
        ("Acinetobacter baumannii", "None"): {"Carbapenem", "Polymyxin-based combination"},
        ("Staphylococcus aureus", "None"): everything - {"Fluoroquinolone"},
        ("Streptococcus pneumoniae", "None"): everything,
        ("Other streptococci", "None"): everything,
        ("Enterococcus spp.", "None"): {"Piperacillin-tazobactam"},
    }
    if resistance == "Carbapenem-resistant":
        return antibiotic == "Polymyxin-based combination"
    return antibiotic in covering.get((pathogen, resistance), set())


def test_antibiotic_appropriateness_rule(rows):
    judged = [r for r in rows if r["pathogen"] is not None]
    for r in judged:
        expected = reference_appropriate(
            r["pathogen"], r["resistance"], r["empirical_antibiotic"], yes(r["anti_mrsa_agent"]),
            yes(r["empirical_antifungal"]),
        )  # fmt: skip
        assert yes(r["antibiotic_appropriate"]) == expected, r["patient_id"]
    share = sum(yes(r["antibiotic_appropriate"]) for r in judged) / len(judged)
    assert 0.5 < share < 0.95


def test_hour1_bundle_rule(rows):
    for r in rows:
        lactate = r["lactate"]
        fluids_needed = r["mean_arterial_pressure"] < 65 or (lactate is not None and lactate >= 4)
        complete = (
            yes(r["lactate_measured"]) and yes(r["blood_culture_before_antibiotics"])
            and yes(r["antibiotics_within_1h"]) and (yes(r["fluid_30ml_kg"]) or not fluids_needed)
        )  # fmt: skip
        assert yes(r["hour1_bundle_complete"]) == complete


# ---------------------------------------------------------------- determinism and profiles


def test_same_seed_and_block_give_the_same_table(full, table):
    assert generate_block(full, N, seed=7, block_index=3, first_patient_number=1001).equals(table)


def test_blocks_and_seeds_differ(full, table):
    other_block = generate_block(full, N, seed=7, block_index=4, first_patient_number=1001)
    other_seed = generate_block(full, N, seed=8, block_index=3, first_patient_number=1001)
    for other in (other_block, other_seed):
        assert other["patient_id"].equals(table["patient_id"])
        assert not other["lactate"].equals(table["lactate"])
        assert not other["infection_site"].equals(table["infection_site"])


def test_hospitals_are_shared_by_the_blocks_of_a_seed(full):
    columns = ["hospital_code", "hospital_type", "hospital_region", "icu_beds_category", "sepsis_team"]
    seen = {}
    for block in range(3):
        block_table = generate_block(full, 1000, seed=7, block_index=block, first_patient_number=0)
        for r in block_table.select(columns).to_pylist():
            assert seen.setdefault(r["hospital_code"], r) == r


def test_compact_profile_matches_full_table(table):
    compact = sepsis_dictionary("compact")
    small = generate_block(compact, N, seed=7, block_index=3, first_patient_number=1001)
    assert small.column_names == compact.names
    assert small.equals(table.select(compact.names))


def test_unknown_variable_is_refused(full):
    extra = full["lactate"].model_copy(update={"name": "troponin"})
    dictionary = full.model_copy(update={"variables": [*full.variables, extra]})
    with pytest.raises(ValueError, match="troponin"):
        generate_block(dictionary, 10, seed=0, block_index=0, first_patient_number=0)


# ---------------------------------------------------------------- statistics (fixed seed, large block)


def rate(values: list) -> float:
    return sum(v == "Yes" for v in values) / len(values)


def mortality_by(table: pa.Table, column: str) -> dict:
    groups: dict = {}
    for key, died in zip(table[column].to_pylist(), table["hospital_mortality"].to_pylist()):
        groups.setdefault(key, []).append(died)
    return {key: rate(died) for key, died in groups.items()}


def test_mortality_rates_are_plausible(large):
    assert 0.18 < rate(large["hospital_mortality"].to_pylist()) < 0.32
    assert 0.15 < rate(large["mortality_28d"].to_pylist()) < 0.32
    assert 0.15 < rate(large["septic_shock"].to_pylist()) < 0.32
    by_shock = mortality_by(large, "septic_shock")
    assert by_shock["Yes"] > by_shock["No"] + 0.15
    by_appropriate = mortality_by(large, "antibiotic_appropriate")
    assert by_appropriate["No"] > by_appropriate["Yes"] + 0.03
    by_timing = mortality_by(large, "antibiotics_within_1h")
    assert by_timing["No"] > by_timing["Yes"]


def test_mortality_rises_with_sofa(large):
    sofa = np.array(large["sofa_total"].to_pylist())
    died = np.array(large["hospital_mortality"].to_pylist()) == "Yes"
    low, mid, high = died[sofa <= 2].mean(), died[(sofa >= 5) & (sofa <= 7)].mean(), died[sofa >= 11].mean()
    assert low < mid < high
