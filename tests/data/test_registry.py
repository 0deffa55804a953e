"""A user's registry files: every problem names file, row, column and what was expected."""

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from creason.data.registry import RegistryError, read_registry_file
from tests.helpers import tiny_registry

HEADER = "pid,onset,admitted,sex,site,lactate,lactate_copy,gcs,shock,death"
GOOD = "P1,2021-01-01T10:00:00,2021-01-01T08:00:00,Male,Lung,2.5,2.5,15,No,No"


def _csv(tmp_path, *rows, header=HEADER):
    path = tmp_path / "registry.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_good_csv_is_typed(tmp_path, tiny_dictionary):
    table, problems = read_registry_file(_csv(tmp_path, GOOD, GOOD.replace("P1", "P2")), tiny_dictionary)
    assert problems == []
    assert table.column("lactate").type == pa.float64()
    assert table.column("onset").type == pa.timestamp("s")


def test_unparsable_number_names_row_line_column_and_value(tmp_path, tiny_dictionary):
    bad = GOOD.replace("P1", "P3").replace(",2.5,2.5,", ",abc,2.5,")
    with pytest.raises(RegistryError) as e:
        read_registry_file(_csv(tmp_path, GOOD, GOOD.replace("P1", "P2"), bad), tiny_dictionary)
    assert "registry.csv: row 3 (line 4), column 'lactate': value 'abc': expected a number in [0.0, 30.0]" in str(e.value)


def test_value_outside_dictionary(tmp_path, tiny_dictionary):
    with pytest.raises(RegistryError, match=r"row 1 \(line 2\), column 'site': value 'Brain': expected one of"):
        read_registry_file(_csv(tmp_path, GOOD.replace("Lung", "Brain")), tiny_dictionary)
    with pytest.raises(RegistryError, match=r"column 'gcs': value '17': expected a number in \[3.0, 15.0\]"):
        read_registry_file(_csv(tmp_path, GOOD.replace(",15,", ",17,")), tiny_dictionary)


def test_bad_date_is_reported_without_echoing_it(tmp_path, tiny_dictionary):
    with pytest.raises(RegistryError) as e:
        read_registry_file(_csv(tmp_path, GOOD.replace("2021-01-01T10:00:00", "yesterday")), tiny_dictionary)
    assert "column 'onset': value <redacted>: expected an ISO 8601 date-time" in str(e.value)
    assert "yesterday" not in str(e.value)


def test_wrong_number_of_fields_names_the_line(tmp_path, tiny_dictionary):
    with pytest.raises(RegistryError, match=r"row 2 \(line 3\), column '-': wrong number of fields: expected 10, got 9"):
        read_registry_file(_csv(tmp_path, GOOD, "P2,2021-01-01T10:00:00,Male"[:0] + ",".join(["x"] * 9)), tiny_dictionary)


def test_missing_and_unknown_columns(tmp_path, tiny_dictionary):
    header = HEADER.replace(",gcs", ",gcs_total")
    with pytest.raises(RegistryError) as e:
        read_registry_file(_csv(tmp_path, GOOD, header=header), tiny_dictionary)
    assert "column 'gcs': column missing" in str(e.value)
    assert "column 'gcs_total': unknown column" in str(e.value)


def test_missing_patient_id_is_a_bad_row(tmp_path, tiny_dictionary):
    with pytest.raises(RegistryError, match=r"column 'pid': value <redacted>: expected a patient identifier"):
        read_registry_file(_csv(tmp_path, GOOD.replace("P1", "")), tiny_dictionary)


def test_reject_policy_drops_bad_rows_and_reports_each(tmp_path, tiny_dictionary):
    rows = [GOOD, GOOD.replace("P1", "P2").replace("Male", "Unknown"), GOOD.replace("P1", "P3"), ",".join(["x"] * 3),
            GOOD.replace("P1", "P4").replace(",15,", ",zz,")]
    table, problems = read_registry_file(_csv(tmp_path, *rows), tiny_dictionary, on_bad_row="reject")
    assert table.column("pid").to_pylist() == ["P1", "P3"]
    assert sorted((p.line, p.column) for p in problems) == [(3, "sex"), (5, "-"), (6, "gcs")]


def test_parquet_registry_round_trip(tmp_path, tiny_dictionary):
    raw = tiny_registry(50)
    pq.write_table(raw, tmp_path / "r.parquet")
    pcsv.write_csv(raw, tmp_path / "r.csv")
    from_parquet, _ = read_registry_file(tmp_path / "r.parquet", tiny_dictionary)
    from_csv, _ = read_registry_file(tmp_path / "r.csv", tiny_dictionary)
    assert from_parquet.column("lactate").equals(raw.column("lactate"))
    assert from_csv.column("onset").equals(raw.column("onset"))
    assert from_csv.column("site").to_pylist() == raw.column("site").to_pylist()


def test_unsupported_suffix(tmp_path, tiny_dictionary):
    path = tmp_path / "r.xlsx"
    path.write_text("")
    with pytest.raises(RegistryError, match=r"r\.xlsx.*expected a \.csv or \.parquet file"):
        read_registry_file(path, tiny_dictionary)
