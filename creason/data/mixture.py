"""A one-dimensional Gaussian mixture fitted by EM (pure numpy).

Numeric distractors are spaced by the standard deviation of the mixture component that the
true value belongs to, so a bimodal lab (normal vs septic lactate) gets sensible spacing.
"""

from __future__ import annotations

import numpy as np

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def fit_gmm_1d(x: np.ndarray, k: int = 3, iters: int = 60, min_std: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit weights, means, stds (each shape (k',), k' <= k) to samples x of shape (n,).

    Means start at evenly spaced quantiles; stds are floored at `min_std` so integer-valued
    data (where a component can collapse onto one value) stays well defined.
    """
    x = np.asarray(x, dtype=np.float64)
    k = max(1, min(k, len(np.unique(x))))
    means = np.quantile(x, (np.arange(k) + 0.5) / k)
    stds = np.full(k, max(x.std() / k, min_std))
    weights = np.full(k, 1.0 / k)
    for _ in range(iters):
        resp = responsibilities(x, weights, means, stds)  # (n, k)
        nk = resp.sum(axis=0) + 1e-12
        weights = nk / len(x)
        means = (resp * x[:, None]).sum(axis=0) / nk
        stds = np.sqrt((resp * (x[:, None] - means) ** 2).sum(axis=0) / nk)
        stds = np.maximum(stds, min_std)
    order = np.argsort(means)
    return weights[order], means[order], stds[order]


def log_component_density(x: np.ndarray, weights: np.ndarray, means: np.ndarray, stds: np.ndarray) -> np.ndarray:
    """log(w_k N(x | mu_k, sd_k)), shape (n, k)."""
    z = (x[:, None] - means[None, :]) / stds[None, :]
    return np.log(weights[None, :] + 1e-300) - np.log(stds[None, :]) - _LOG_SQRT_2PI - 0.5 * z**2


def responsibilities(x: np.ndarray, weights: np.ndarray, means: np.ndarray, stds: np.ndarray) -> np.ndarray:
    """Posterior probability of each component for each sample, shape (n, k)."""
    logp = log_component_density(x, weights, means, stds)
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def component_std(x: np.ndarray, weights: np.ndarray, means: np.ndarray, stds: np.ndarray) -> np.ndarray:
    """SD of the most likely component for each value, shape (n,)."""
    return stds[np.argmax(log_component_density(x, weights, means, stds), axis=1)]
