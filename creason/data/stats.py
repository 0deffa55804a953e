"""Column statistics of the training split: vocabularies with frequencies for coded variables,
Gaussian mixtures and value flags for numeric ones. Used for distractors and for MI bins."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from creason.data.dictionary import CODED_KINDS, Variable, VariableKind
from creason.data.mixture import fit_gmm_1d

_MAX_FIT_VALUES = 20_000  # EM cost is linear in samples; 20k pins 3 components down well


class CodedStats(BaseModel):
    values: list[str]
    counts: list[int]  # aligned with `values` (the dictionary's allowed values)


class NumericStats(BaseModel):
    count: int
    weights: list[float]
    means: list[float]
    stds: list[float]
    integer: bool
    nonnegative: bool
    decimals: int
    quantile_edges: list[float]  # inner edges of the MI bins


class RegistryStats(BaseModel):
    rows: int
    coded: dict[str, CodedStats]
    numeric: dict[str, NumericStats]


def infer_decimals(x: np.ndarray, most: int = 4) -> int:
    """Fewest decimals that represent every value exactly (up to `most`)."""
    for d in range(most + 1):
        if np.all(np.abs(np.round(x, d) - x) < 1e-9):
            return d
    return most


def coded_stats(column: pa.ChunkedArray, v: Variable) -> CodedStats:
    counts = pc.value_counts(pc.drop_null(column)).to_pylist()
    by_value = {c["values"]: c["counts"] for c in counts}
    return CodedStats(values=list(v.values), counts=[int(by_value.get(x, 0)) for x in v.values])


def numeric_stats(column: pa.ChunkedArray, v: Variable, components: int, bins: int) -> NumericStats | None:
    x = pc.drop_null(column).to_numpy(zero_copy_only=False).astype(np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return None
    decimals = v.decimals if v.decimals is not None else infer_decimals(x)
    # Rows come in a random order (sorted by keyed pseudonym): the first ones are a random subsample.
    weights, means, stds = fit_gmm_1d(x[:_MAX_FIT_VALUES], components, min_std=max(10.0**-decimals, 1e-6))
    edges = np.unique(np.quantile(x, np.arange(1, bins) / bins))
    return NumericStats(
        count=len(x),
        weights=weights.tolist(),
        means=means.tolist(),
        stds=stds.tolist(),
        integer=bool(np.all(x == np.round(x))),
        nonnegative=bool(np.all(x >= 0)),
        decimals=decimals,
        quantile_edges=edges.tolist(),
    )


def compute_stats(table: pa.Table, variables: list[Variable], components: int = 3, bins: int = 10) -> RegistryStats:
    """Statistics of the given (training-split) rows for the shown variables."""
    coded, numeric = {}, {}
    for v in variables:
        if v.kind in CODED_KINDS:
            coded[v.name] = coded_stats(table.column(v.name), v)
        elif v.kind in (VariableKind.numeric, VariableKind.datetime):
            s = numeric_stats(table.column(v.name), v, components, bins)
            if s is not None:
                numeric[v.name] = s
    return RegistryStats(rows=len(table), coded=coded, numeric=numeric)
