"""Column-wise rendering of records as prompt text.

A record is shown section by section:

    [Labs/First results]
    Lactate (mmol/L): 4.5
    Platelets (10^3/uL): 88

Each variable's lines are built once per block as an Arrow string column (null when the value
is missing, so the line is left out); a record is then a concatenation of columns, never a
per-row Python loop.

(pyarrow 26 drops rows whose inputs are all null in `binary_join_element_wise` with
`null_handling="skip"`, so lines carry their own newline and nulls are replaced by "".)
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from creason.data.dictionary import Variable, VariableKind

RELATIVE_TIME_UNIT = "hours from time zero"
_NULL = pa.scalar(None, pa.string())


def line_label(v: Variable) -> str:
    """`Display name (unit)`; relative times carry their own unit."""
    if v.kind == VariableKind.datetime:
        return f"{v.display_name} ({RELATIVE_TIME_UNIT})"
    return v.label


def format_numbers(x: np.ndarray | pa.Array, decimals: int) -> pa.Array:
    """Numbers rounded to `decimals` as strings (`2`, `4.5`); null stays null."""
    arr = x if isinstance(x, (pa.Array, pa.ChunkedArray)) else pa.array(x, from_pandas=True)
    rounded = pc.add(pc.round(arr, decimals), 0.0)  # + 0.0 turns -0.0 into 0.0
    if decimals == 0:
        rounded = pc.cast(rounded, pa.int64())
    return pc.cast(rounded, pa.string())


def concat(*parts, null_as: str | None = "") -> pa.Array:
    """Element-wise string concatenation; parts may be arrays or plain strings."""
    if null_as is None:
        return pc.binary_join_element_wise(*parts, "")
    return pc.binary_join_element_wise(*parts, "", null_handling="replace", null_replacement=null_as)


def variable_lines(table: pa.Table, variables: list[Variable], decimals: dict[str, int]) -> dict[str, pa.Array]:
    """`Label: value\\n` per row for each variable (null where the value is missing)."""
    lines = {}
    for v in variables:
        col = table.column(v.name).combine_chunks()
        if v.kind in (VariableKind.numeric, VariableKind.datetime):
            col = format_numbers(col, decimals.get(v.name, 1))
        lines[v.name] = concat(f"{line_label(v)}: ", col, "\n", null_as=None)
    return lines


def sections_of(variables: list[Variable]) -> list[tuple[str, list[str]]]:
    """(section, variable names) in order of first appearance."""
    order: dict[str, list[str]] = {}
    for v in variables:
        order.setdefault(v.section, []).append(v.name)
    return list(order.items())


def section_text(lines: dict[str, pa.Array], section: str, names: list[str], rows: pa.Array | None = None) -> pa.Array:
    """`[Section]\\n` plus its present lines, or "" when none is present."""
    parts = [lines[n] if rows is None else lines[n].take(rows) for n in names]
    body = concat(*parts) if len(parts) > 1 else pc.fill_null(parts[0], "")
    return pc.if_else(pc.equal(body, ""), "", concat(f"[{section}]\n", body, "\n"))


class RecordRenderer:
    """Renders records of one block, reusing each untouched section's text across targets."""

    def __init__(self, table: pa.Table, variables: list[Variable], decimals: dict[str, int]):
        self.sections = sections_of(variables)
        self.lines = variable_lines(table, variables, decimals)
        self.full = {s: section_text(self.lines, s, names) for s, names in self.sections}

    def render(self, rows: np.ndarray, exclude: set[str]) -> pa.Array:
        """Record text of `rows` without the variables in `exclude`."""
        take = pa.array(rows, type=pa.int64())
        parts = []
        for section, names in self.sections:
            kept = [n for n in names if n not in exclude]
            if len(kept) == len(names):
                parts.append(self.full[section].take(take))
            elif kept:
                parts.append(section_text(self.lines, section, kept, take))
        return pc.utf8_rtrim(concat(*parts) if len(parts) > 1 else parts[0], characters="\n")


def parse_record(text: str) -> dict[str, str]:
    """A rendered record back as {line label: value text}: the inverse of `RecordRenderer.render`
    (section headers and blank lines skipped)."""
    values = {}
    for line in text.splitlines():
        label, sep, value = line.partition(": ")
        if sep and not line.startswith("["):
            values[label] = value
    return values
