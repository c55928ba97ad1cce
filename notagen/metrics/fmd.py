"""Fréchet Music Distance between two sets of per-piece embeddings.

FMD = ‖μr − μt‖² + Tr(Σr + Σt − 2(Σr Σt)^½). With few pieces for the dimension (N ≲ d) the sample covariance is
singular and noisy, so `shrinkage` and `oas` estimators are offered; every result carries N, d and the estimator,
and values from different encoders are not comparable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy import linalg

from notagen.errors import MetricError

Estimator = Literal["mle", "shrinkage", "oas"]


@dataclass
class FMDResult:
    value: float
    estimator: str
    n_reference: int
    n_test: int
    dim: int

    def to_dict(self) -> dict:
        return asdict(self)


def covariance(x: np.ndarray, estimator: Estimator = "mle", shrinkage: float = 0.1) -> np.ndarray:
    """Covariance of rows of x: `mle` = unbiased sample covariance (as the FMD package's np.cov), `shrinkage` =
    (1−α)·S + α·tr(S)/d·I on the biased S, `oas` = Chen et al.'s oracle-approximating shrinkage of S."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if n < 2:
        raise MetricError("a covariance needs at least two pieces")
    if estimator == "mle":
        return np.cov(x, rowvar=False)
    centred = x - x.mean(0)
    s = centred.T @ centred / n
    mu = np.trace(s) / d
    if estimator == "shrinkage":
        alpha = shrinkage
    elif estimator == "oas":
        alpha_num = np.mean(s ** 2)  # tr(S²)/d²
        num = alpha_num + mu ** 2
        den = (n + 1.0) * (alpha_num - mu ** 2 / d)
        alpha = 1.0 if den == 0 else min(num / den, 1.0)
    else:
        raise MetricError(f"unknown covariance estimator {estimator!r}")
    out = (1.0 - alpha) * s
    out.flat[:: d + 1] += alpha * mu
    return out


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½), retrying with a small ridge when the square root is not finite."""
    diff = mu1 - mu2
    root, _ = linalg.sqrtm(sigma1 @ sigma2, disp=False)
    if not np.isfinite(root).all():
        ridge = np.eye(sigma1.shape[0]) * 1e-6
        root, _ = linalg.sqrtm((sigma1 + ridge) @ (sigma2 + ridge), disp=False)
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise MetricError(f"imaginary component {np.max(np.abs(root.imag)):.3g} in the covariance square root")
        root = root.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(root))


def fmd(reference: np.ndarray, test: np.ndarray, estimator: Estimator = "mle") -> FMDResult:
    """FMD between a reference and a test set of embeddings [N, d]."""
    reference, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    if reference.ndim != 2 or test.ndim != 2 or reference.shape[1] != test.shape[1]:
        raise MetricError(f"embedding shapes {reference.shape} and {test.shape} do not match")
    value = frechet_distance(reference.mean(0), covariance(reference, estimator),
                             test.mean(0), covariance(test, estimator))
    return FMDResult(max(value, 0.0), estimator, len(reference), len(test), reference.shape[1])


@dataclass
class FMDInfResult:
    value: float  # the intercept: FMD extrapolated to an infinite test set
    slope: float
    r2: float
    sizes: list[int]
    n_reference: int
    n_test: int


def fmd_inf(reference: np.ndarray, test: np.ndarray, steps: int = 25, min_n: int = 500,
            seed: int = 0) -> FMDInfResult:
    """FMD-∞: MLE FMD on test subsets (drawn with replacement) of `steps` sizes from min_n to N, fitted linearly
    against 1/n; the intercept is the estimate. `min_n` is capped at N // 2 so small sets still give a line."""
    rng = np.random.default_rng(seed)
    n = len(test)
    low = min(min_n, max(2, n // 2))
    sizes = sorted({int(s) for s in np.linspace(low, n, steps)})
    mu_r, sigma_r = reference.mean(0), covariance(reference)
    values = []
    for size in sizes:
        sample = test[rng.integers(0, n, size)]
        values.append(frechet_distance(mu_r, sigma_r, sample.mean(0), covariance(sample)))
    x = 1.0 / np.asarray(sizes, dtype=np.float64)
    y = np.asarray(values)
    slope, intercept = np.polyfit(x, y, 1)
    fitted = slope * x + intercept
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - fitted) ** 2).sum()) / total if total > 0 else 1.0
    return FMDInfResult(float(intercept), float(slope), r2, sizes, len(reference), n)
