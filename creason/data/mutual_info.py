"""Pairwise mutual information between registry variables, from joint counts.

Each variable is discretised (categories; quantile bins for numbers; "missing" is a category of
its own, because missingness leaks too). One one-hot matrix product per block gives every
pairwise contingency table at once; blocks are summed, so this runs over shards.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from creason.data.dictionary import CODED_KINDS, Variable
from creason.data.stats import RegistryStats


def mi_variables(variables: list[Variable], stats: RegistryStats) -> list[Variable]:
    """Variables that take part in MI: those with statistics (coded, numeric, relative times)."""
    return [v for v in variables if v.name in stats.coded or v.name in stats.numeric]


def cardinalities(variables: list[Variable], stats: RegistryStats) -> np.ndarray:
    """Number of discrete codes per variable, missing included, shape (V,)."""
    cards = []
    for v in variables:
        inner = len(v.values) if v.kind in CODED_KINDS else len(stats.numeric[v.name].quantile_edges) + 1
        cards.append(inner + 1)
    return np.asarray(cards, dtype=np.int64)


def discretize(table: pa.Table, variables: list[Variable], stats: RegistryStats) -> np.ndarray:
    """Codes of shape (n, V): category or bin index, with the last code meaning missing."""
    cards = cardinalities(variables, stats)
    codes = np.empty((len(table), len(variables)), dtype=np.int64)
    for j, v in enumerate(variables):
        col = table.column(v.name)
        if v.kind in CODED_KINDS:
            idx = pc.index_in(col, value_set=pa.array(v.values)).to_numpy(zero_copy_only=False)
            codes[:, j] = np.where(np.isnan(idx.astype(float)), cards[j] - 1, np.nan_to_num(idx)).astype(np.int64)
        else:
            x = col.to_numpy(zero_copy_only=False).astype(np.float64)
            binned = np.searchsorted(np.asarray(stats.numeric[v.name].quantile_edges), x, side="right")
            codes[:, j] = np.where(np.isnan(x), cards[j] - 1, binned)
    return codes


def joint_counts(codes: np.ndarray, cards: np.ndarray) -> np.ndarray:
    """All pairwise contingency tables as one (sum(cards), sum(cards)) count matrix."""
    offsets = np.concatenate([[0], np.cumsum(cards)[:-1]])
    onehot = np.zeros((codes.shape[0], int(cards.sum())), dtype=np.float32)
    rows = np.arange(codes.shape[0])[:, None]
    onehot[rows, codes + offsets[None, :]] = 1.0
    return (onehot.T @ onehot).astype(np.float64)  # exact: a block is far below 2**24 rows


def normalized_mi(counts: np.ndarray, cards: np.ndarray) -> np.ndarray:
    """I(X;Y) / min(H(X), H(Y)) for every pair, shape (V, V); 0 where a variable is constant.

    The min-normalisation reads "how much of the less uncertain variable the other one
    explains": 1 means one determines the other.
    """
    n = counts[: cards[0], : cards[0]].trace()  # every row has exactly one code of the first variable
    p = counts / n
    marginal = p.diagonal().copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / np.outer(marginal, marginal)), 0.0)
        ent_terms = np.where(marginal > 0, -marginal * np.log(marginal), 0.0)
    starts = np.concatenate([[0], np.cumsum(cards)[:-1]])
    mi = np.add.reduceat(np.add.reduceat(terms, starts, axis=0), starts, axis=1)
    entropy = np.add.reduceat(ent_terms, starts)
    denom = np.minimum.outer(entropy, entropy)
    with np.errstate(divide="ignore", invalid="ignore"):
        nmi = np.where(denom > 1e-12, mi / denom, 0.0)
    return np.clip(nmi, 0.0, 1.0)
