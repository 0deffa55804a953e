"""Raw registry rows -> privacy-safe rows that questions are built from.

Identifiers are dropped, absolute datetimes become hours relative to time zero, free text is
dropped unless asked for, and every patient gets a keyed pseudonym (`_key`) and a split
(`_split`). Nothing downstream ever sees an identifier or an absolute date.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from creason.data.dictionary import DataDictionary, Variable, VariableKind
from creason.data.rand import patient_keys, uniform

KEY = "_key"
SPLIT = "_split"
SPLITS = ("train", "validation", "test")
_SPLIT_STREAM = 1


def shown_variables(dictionary: DataDictionary, include_free_text: bool = False) -> list[Variable]:
    """Variables that may appear in a prompt, in dictionary order."""
    hidden = {VariableKind.identifier} | (set() if include_free_text else {VariableKind.free_text})
    return [v for v in dictionary.variables if v.kind not in hidden and v.name != dictionary.time_zero]


def assign_splits(keys: np.ndarray, fractions: tuple[float, float, float]) -> np.ndarray:
    """Split name per patient, from its key alone (so a patient is always in one split)."""
    u = uniform(keys, _SPLIT_STREAM)[:, 0]
    edges = np.cumsum(fractions)[:-1]
    return np.asarray(SPLITS, dtype=object)[np.searchsorted(edges, u, side="right")]


def hours_since(column: pa.ChunkedArray | pa.Array, zero: pa.ChunkedArray | pa.Array) -> pa.Array:
    """(t - t0) in hours, rounded to 0.1 h; null where either is missing."""
    t = pc.cast(column, pa.timestamp("s")).to_numpy(zero_copy_only=False).astype("datetime64[s]")
    t0 = pc.cast(zero, pa.timestamp("s")).to_numpy(zero_copy_only=False).astype("datetime64[s]")
    hours = (t - t0).astype("timedelta64[s]").astype(np.float64) / 3600.0
    missing = np.isnat(t) | np.isnat(t0)
    return pa.array(np.round(hours, 1), mask=missing, type=pa.float64())


def prepare_table(
    raw: pa.Table,
    dictionary: DataDictionary,
    seed: int,
    fractions: tuple[float, float, float],
    include_free_text: bool = False,
) -> pa.Table:
    """Strip identifiers and absolute dates; add `_key` and `_split`."""
    keys = patient_keys(raw.column(dictionary.patient_id).to_numpy(zero_copy_only=False), seed)
    columns: dict[str, pa.Array] = {KEY: pa.array(keys, type=pa.uint64())}
    columns[SPLIT] = pa.array(assign_splits(keys, fractions), type=pa.string())
    zero = raw.column(dictionary.time_zero) if dictionary.time_zero else None
    for v in shown_variables(dictionary, include_free_text):
        col = raw.column(v.name)
        if v.kind == VariableKind.datetime:
            columns[v.name] = hours_since(col, zero) if zero is not None else pa.nulls(len(raw), pa.float64())
        elif v.kind == VariableKind.numeric:
            columns[v.name] = pc.cast(col, pa.float64())
        else:
            columns[v.name] = pc.cast(col, pa.string())
    return pa.table(columns)
