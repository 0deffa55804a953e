"""Counter-based random numbers keyed by patient.

Every random choice about a patient (split, question target, options, letter) is a pure
function of (seed, patient id, purpose), so results do not depend on how Ray Data cuts the
registry into blocks or how many workers run.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _hash_key(seed: int, purpose: str) -> str:
    """The 16-character key pandas' SipHash wants, derived from seed and purpose."""
    return hashlib.sha256(f"{seed}:{purpose}".encode()).hexdigest()[:16]


def patient_keys(ids: np.ndarray, seed: int) -> np.ndarray:
    """Keyed (SipHash) 64-bit pseudonyms of patient ids, shape (n,) uint64.

    Without the seed they cannot be linked back to an id; they are never shown in a prompt.
    """
    return pd.util.hash_array(np.asarray(ids, dtype=object), hash_key=_hash_key(seed, "patient"), categorize=False)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser: a bijective, well-mixed map of uint64 arrays."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def uniform(keys: np.ndarray, stream: int, m: int = 1) -> np.ndarray:
    """Uniform floats in [0, 1), shape (n, m): column j is draw j of `stream` for each key."""
    with np.errstate(over="ignore"):
        base = splitmix64(keys.astype(np.uint64) ^ splitmix64(np.uint64(stream) * _GOLDEN))
        counters = base[:, None] + np.arange(1, m + 1, dtype=np.uint64)[None, :] * _GOLDEN
    return (splitmix64(counters) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
