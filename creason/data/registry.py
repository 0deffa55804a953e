"""A user's registry: CSV or Parquet files checked against a data dictionary.

Every problem is reported with file, row, column, the value (never for identifiers or dates)
and what was expected. A bad row either fails the run or is rejected with its reason, by
policy; nothing is dropped silently.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from creason.data.dictionary import CODED_KINDS, DataDictionary, Variable, VariableKind

_REDACTED_KINDS = (VariableKind.identifier, VariableKind.datetime, VariableKind.free_text)
_SHOWN_ERRORS = 10


@dataclass(frozen=True)
class BadCell:
    """One problem in one row. `row` counts data rows from 1; `line` is the CSV line (header = 1)."""

    file: str
    row: int
    column: str
    problem: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"row {self.row}" + (f" (line {self.line})" if self.line else "")
        return f"{self.file}: {where}, column '{self.column}': {self.problem}"


class RegistryError(ValueError):
    """A registry file that breaks its dictionary (policy `fail`)."""

    def __init__(self, problems: list[BadCell], total: int | None = None):
        self.problems = problems
        total = total if total is not None else len(problems)
        shown = "\n  ".join(str(p) for p in problems[:_SHOWN_ERRORS])
        more = f"\n  ... and {total - _SHOWN_ERRORS} more" if total > _SHOWN_ERRORS else ""
        super().__init__(f"{total} problem(s) in the registry:\n  {shown}{more}")


def read_registry_file(path: str | Path, dictionary: DataDictionary, on_bad_row: str = "fail") -> tuple[pa.Table, list[BadCell]]:
    """Read one CSV/Parquet file, check it, and return typed columns plus the rejected rows' problems."""
    path = Path(path)
    skipped: list[BadCell] = []
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        strings = _read_parquet_as_strings(path)
    elif suffix in (".csv", ".txt"):
        strings = _read_csv_as_strings(path, skipped, on_bad_row)
    else:
        raise RegistryError([BadCell(str(path), 0, "-", "expected a .csv or .parquet file")])
    _check_columns(path, strings.column_names, dictionary)
    lines = _csv_lines(len(strings), [p.line for p in skipped]) if suffix != ".parquet" else None
    typed, bad_index, problems = _parse_columns(path, strings, dictionary, lines)
    if problems and on_bad_row == "fail":
        raise RegistryError(problems)
    keep = np.ones(len(typed), dtype=bool)
    keep[bad_index] = False
    return typed.filter(pa.array(keep)), skipped + problems


def _csv_lines(n_rows: int, skipped_lines: list[int]) -> np.ndarray:
    """File line of each parsed row, given the lines the reader skipped (header is line 1)."""
    every = np.arange(2, n_rows + len(skipped_lines) + 2)
    return np.setdiff1d(every, np.asarray(skipped_lines, dtype=every.dtype))


def _read_parquet_as_strings(path: Path) -> pa.Table:
    table = pq.read_table(path)
    return pa.table({name: _to_strings(table.column(name)) for name in table.column_names})


def _to_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_timestamp(column.type):
        return pc.strftime(column, format="%Y-%m-%dT%H:%M:%S")
    return pc.cast(column, pa.string())


def _read_csv_as_strings(path: Path, problems: list[BadCell], on_bad_row: str) -> pa.Table:
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    if not header:
        raise RegistryError([BadCell(str(path), 0, "-", "empty file: expected a header row with the dictionary's columns")])

    def on_invalid(row: pcsv.InvalidRow) -> str:
        line = row.number or 0
        expected = f"wrong number of fields: expected {row.expected_columns}, got {row.actual_columns}"
        problems.append(BadCell(str(path), line - 1, "-", expected, line))
        return "skip" if on_bad_row == "reject" else "error"

    try:
        return pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(use_threads=False),  # row numbers are only known single-threaded
            parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pcsv.ConvertOptions(column_types={name: pa.string() for name in header}, strings_can_be_null=True),
        )
    except pa.ArrowInvalid as e:
        if problems:
            raise RegistryError(problems) from None
        # Arrow's message quotes the offending row: keep only where it is, not what it holds.
        raise RegistryError([BadCell(str(path), 0, "-", f"not a readable CSV file ({str(e).split(':')[0]})")]) from None


def _check_columns(path: Path, columns: list[str], dictionary: DataDictionary) -> None:
    expected = dictionary.names
    missing = [c for c in expected if c not in columns]
    unknown = [c for c in columns if c not in expected]
    problems = [BadCell(str(path), 0, c, "column missing: the dictionary declares it") for c in missing]
    problems += [BadCell(str(path), 0, c, "unknown column: not in the data dictionary") for c in unknown]
    if problems:
        raise RegistryError(problems)


def _parse_columns(path: Path, strings: pa.Table, dictionary: DataDictionary, lines: np.ndarray | None):
    """Typed table, indices of bad rows, and one problem per bad cell."""
    columns, problems, bad_rows = {}, [], set()
    for v in dictionary.variables:
        raw = strings.column(v.name)
        typed, bad, expected = parse_column(raw, v)
        columns[v.name] = typed
        if v.name == dictionary.patient_id:
            bad |= pc.is_null(raw).to_numpy(zero_copy_only=False)
            expected = "a patient identifier (required)"
        for i in np.flatnonzero(bad).tolist():
            shown = "<redacted>" if v.kind in _REDACTED_KINDS else repr(raw[i].as_py())
            line = int(lines[i]) if lines is not None else None
            row = line - 1 if line is not None else i + 1
            problems.append(BadCell(str(path), row, v.name, f"value {shown}: expected {expected}", line))
            bad_rows.add(i)
    return pa.table(columns), sorted(bad_rows), problems


def parse_column(raw: pa.ChunkedArray, v: Variable) -> tuple[pa.Array, np.ndarray, str]:
    """Typed column, mask of unparsable or out-of-dictionary cells, and what was expected."""
    present = pc.is_valid(raw).to_numpy(zero_copy_only=False)
    if v.kind == VariableKind.numeric:
        values = pd.to_numeric(pd.Series(raw.to_numpy(zero_copy_only=False)), errors="coerce").to_numpy(dtype=float)
        bad = present & np.isnan(values)
        lo = -np.inf if v.min is None else v.min
        hi = np.inf if v.max is None else v.max
        with np.errstate(invalid="ignore"):
            bad |= present & ((values < lo) | (values > hi))
        return pa.array(values, mask=np.isnan(values) | bad), bad, f"a number in [{v.min}, {v.max}]"
    if v.kind in CODED_KINDS:
        ok = pc.is_in(raw, value_set=pa.array(v.values)).to_numpy(zero_copy_only=False)
        bad = present & ~ok
        return pc.if_else(pa.array(bad), pa.scalar(None, pa.string()), raw), bad, f"one of {v.values}"
    if v.kind == VariableKind.datetime:
        parsed = pd.to_datetime(pd.Series(raw.to_numpy(zero_copy_only=False)), errors="coerce", format="ISO8601")
        bad = present & parsed.isna().to_numpy()
        return pa.array(parsed.astype("datetime64[s]"), type=pa.timestamp("s")), bad, "an ISO 8601 date-time"
    return raw, np.zeros(len(raw), dtype=bool), "text"


def rejection_records(problems: list[BadCell]) -> list[dict]:
    """Rows for `rejected_rows.jsonl` (no cell values of identifiers or dates)."""
    return [asdict(p) for p in problems]
