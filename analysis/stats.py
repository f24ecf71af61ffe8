"""Aggregate statistics for few-seed RL evaluation (Agarwal et al., NeurIPS 2021).

Implements, natively in vectorized numpy, the interval estimates recommended in
"Deep Reinforcement Learning at the Edge of the Statistical Precipice": mean, median,
interquartile mean (IQM) and optimality gap with stratified-bootstrap confidence intervals,
probability of improvement, and performance profiles (run-score distributions).
rliable itself does not import under pandas 3, so it is not used here.

Conventions (same as rliable): ``scores`` maps an algorithm name to an array of shape
``(n_runs, n_tasks)`` of normalized scores (runs = seeds, tasks = benchmark cells). The
stratified bootstrap resamples runs with replacement independently within each task column,
so every resample keeps exactly ``n_runs`` scores for every task.

Scores are normalized D4RL-style, in percent, so the optimality-gap threshold defaults to 100.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "METRICS",
    "aggregate_metrics",
    "interval_estimates",
    "iqm",
    "optimality_gap",
    "performance_profile",
    "performance_profile_ci",
    "probability_of_improvement",
    "probability_of_improvement_ci",
    "seed_stats",
    "stratified_bootstrap",
    "student_t_ppf",
]

# Bound on the number of float elements gathered per bootstrap chunk. 2**21 float64 values are
# 16 MiB; with the index array and the sort copy used by IQM a chunk stays well under 100 MiB,
# while (10 runs x 20 tasks) x 10k resamples still runs in a single chunk.
_CHUNK_ELEMS = 2**21

Seed = int | np.random.SeedSequence | np.random.Generator | None


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _as_finite(x: np.ndarray, name: str) -> np.ndarray:
    """Return ``x`` as a float array, rejecting empty input and NaN/inf values."""
    arr = np.asarray(x, dtype=float)
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        # A NaN silently poisons every aggregate (or is silently sorted to the end by IQM),
        # so failed runs must be handled explicitly by the caller.
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_scores(x: np.ndarray, name: str = "scores") -> np.ndarray:
    """Validate a ``(n_runs, n_tasks)`` score matrix."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n_runs, n_tasks), got shape {arr.shape}")
    return _as_finite(arr, name)


def _same_tasks(x: np.ndarray, y: np.ndarray, xname: str = "x", yname: str = "y") -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"task count mismatch: {xname} has shape {x.shape}, {yname} has shape {y.shape} "
            "(arrays must be (n_runs, n_tasks) with the same n_tasks)"
        )


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _check_reps(reps: int) -> None:
    if int(reps) != reps or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps}")


def _percentile_interval(dist: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval along axis 0 (rliable's default 'percentile' method)."""
    alpha = 100.0 * (1.0 - confidence) / 2.0
    lower, upper = np.percentile(dist, [alpha, 100.0 - alpha], axis=0)
    return lower, upper


# --------------------------------------------------------------------------------------------
# point metrics (the _batched_* kernels operate on the last axis of a (..., m) array, except
# _batched_median, which needs the task axis: (..., n_runs, n_tasks))
# --------------------------------------------------------------------------------------------


def _trim_mean_last(a: np.ndarray, proportiontocut: float) -> np.ndarray:
    """Trimmed mean along the last axis: sort, drop ``int(p * m)`` values at each end, mean."""
    m = a.shape[-1]
    cut = int(proportiontocut * m)
    if 2 * cut >= m:
        raise ValueError(f"proportiontocut={proportiontocut} leaves no data for {m} values")
    # A full sort (not partition) keeps the kernel identical for 1 and 10k rows at once.
    return np.sort(a, axis=-1)[..., cut : m - cut].mean(axis=-1)


def _batched_mean(a: np.ndarray) -> np.ndarray:
    return a.mean(axis=-1)


def _batched_median(a: np.ndarray) -> np.ndarray:
    """Median over tasks of the per-task mean scores: (..., n_runs, n_tasks) -> (...).

    This is rliable's ``aggregate_median`` (``np.median(np.mean(scores, axis=0))``), not the
    median of the pooled runs.
    """
    return np.median(a.mean(axis=-2), axis=-1)


def _batched_iqm(a: np.ndarray) -> np.ndarray:
    return _trim_mean_last(a, 0.25)


def _batched_optimality_gap(a: np.ndarray, gamma: float = 100.0) -> np.ndarray:
    return np.maximum(gamma - a, 0.0).mean(axis=-1)


def _pooled(kernel: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Apply a last-axis kernel to all runs of all tasks pooled: (..., n_runs, n_tasks)."""

    def fn(a: np.ndarray) -> np.ndarray:
        return kernel(a.reshape(*a.shape[:-2], -1))

    return fn


# Name -> kernel on score arrays of shape (..., n_runs, n_tasks). The mean of the pooled scores
# equals rliable's mean of per-task means, because every task has the same number of runs.
_METRIC_KERNELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": _pooled(_batched_mean),
    "median": _batched_median,
    "iqm": _pooled(_batched_iqm),
    "optimality_gap": _pooled(_batched_optimality_gap),
}
METRICS: tuple[str, ...] = tuple(_METRIC_KERNELS)


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not metrics:
        raise ValueError("metrics must not be empty")
    unknown = [m for m in metrics if m not in _METRIC_KERNELS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    return metrics


def iqm(x: np.ndarray, axis: int | None = None) -> float | np.ndarray:
    """Interquartile mean: the mean of the middle 50% of the scores.

    Matches ``scipy.stats.trim_mean(x, 0.25, axis=axis)`` exactly: sort, cut ``int(0.25 * n)``
    values from each end, average the rest. With ``axis=None`` (the default, as in rliable's
    ``aggregate_iqm``) the array is flattened, so all runs of all tasks are pooled.
    """
    arr = _as_finite(x, "x")
    if axis is None:
        return float(_batched_iqm(arr.ravel()))
    return _batched_iqm(np.moveaxis(arr, axis, -1))


def optimality_gap(x: np.ndarray, gamma: float = 100.0) -> float:
    """Mean shortfall below the target ``gamma``: ``mean(max(gamma - x, 0))``.

    Scores above ``gamma`` count as zero shortfall, so, unlike the mean, the metric does not
    reward overshooting the target on a few tasks. Scores are in percent, hence gamma=100.
    """
    arr = _as_finite(x, "x")
    return float(_batched_optimality_gap(arr.ravel(), gamma))


def aggregate_metrics(x: np.ndarray) -> dict[str, float]:
    """Mean, median, IQM and optimality gap of a ``(n_runs, n_tasks)`` score matrix.

    As in rliable: the mean, IQM and optimality gap pool every run of every task; the median
    is the median over tasks of the per-task mean scores (rliable's ``aggregate_median``,
    ``np.median(np.mean(x, axis=0))``), so it is robust to outlier tasks rather than runs.
    """
    arr = _as_scores(x)
    return {name: float(kernel(arr)) for name, kernel in _METRIC_KERNELS.items()}


# --------------------------------------------------------------------------------------------
# stratified bootstrap
# --------------------------------------------------------------------------------------------


def _chunks(reps: int, elems_per_rep: int) -> Iterator[int]:
    """Split ``reps`` into chunk sizes so one chunk holds at most ~_CHUNK_ELEMS elements.

    Chunk sizes depend only on the shapes, so a given seed always yields the same draws.
    """
    size = max(1, _CHUNK_ELEMS // max(1, elems_per_rep))
    done = 0
    while done < reps:
        n = min(size, reps - done)
        yield n
        done += n


def _resample(x: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` stratified resamples of ``x``, shape ``(n, n_runs, n_tasks)``.

    Row indices are drawn independently for every (resample, run slot, task) so each task
    column is resampled only from its own runs: the bootstrap is stratified by task.
    """
    n_runs, n_tasks = x.shape
    rows = rng.integers(0, n_runs, size=(n, n_runs, n_tasks))
    return x[rows, np.arange(n_tasks)]


def stratified_bootstrap(
    x: np.ndarray,
    stat: str | Callable[[np.ndarray], np.ndarray],
    reps: int = 10_000,
    seed: Seed = 0,
) -> np.ndarray:
    """Bootstrap distribution of ``stat`` under task-stratified resampling of runs.

    Args:
        x: scores of shape ``(n_runs, n_tasks)``.
        stat: a metric name from :data:`METRICS`, or a *vectorized* callable that takes a
            batch of resampled arrays of shape ``(batch, n_runs, n_tasks)`` and returns an
            array whose first axis is ``batch`` (e.g. ``(batch,)`` or ``(batch, k)``).
        reps: number of bootstrap resamples.
        seed: anything ``np.random.default_rng`` accepts.

    Returns:
        Array of shape ``(reps, ...)``: one value of ``stat`` per resample.
    """
    arr = _as_scores(x)
    _check_reps(reps)
    if isinstance(stat, str):
        kernel = _METRIC_KERNELS[_check_metrics(stat)[0]]

        def fn(batch: np.ndarray) -> np.ndarray:
            return kernel(batch)
    else:
        fn = stat
    rng = np.random.default_rng(seed)
    out = []
    for n in _chunks(reps, arr.size):
        vals = np.asarray(fn(_resample(arr, rng, n)))
        if vals.ndim == 0 or vals.shape[0] != n:
            raise ValueError(
                f"stat must return an array with leading axis {n} (one value per resample), "
                f"got shape {vals.shape}"
            )
        out.append(vals)
    return np.concatenate(out, axis=0)


def _algorithm_seed(seed: Seed, name: str) -> Seed:
    """Per-algorithm stream derived from (seed, name).

    Keying on the name (crc32 is stable across processes, unlike ``hash``) keeps each
    algorithm's interval independent of which other algorithms are in the dict and of their
    order, and decorrelates algorithms that share a shape.
    """
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    key = zlib.crc32(name.encode())
    if isinstance(seed, np.random.SeedSequence):
        return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, key))
    return np.random.SeedSequence(seed, spawn_key=(key,))


def interval_estimates(
    scores: dict[str, np.ndarray],
    metrics: Sequence[str] = METRICS,
    reps: int = 10_000,
    confidence: float = 0.95,
    seed: Seed = 0,
) -> pd.DataFrame:
    """Point estimates and percentile-bootstrap CIs of aggregate metrics per algorithm.

    All metrics of one algorithm are evaluated on the same ``reps`` stratified resamples.

    Returns:
        DataFrame with columns ``algorithm, metric, point, lower, upper``, one row per
        (algorithm, metric), algorithms in dict order and metrics in the given order.
    """
    if not scores:
        raise ValueError("scores is empty")
    metrics = _check_metrics(metrics)
    _check_confidence(confidence)
    _check_reps(reps)
    arrays = {name: _as_scores(x, f"scores[{name!r}]") for name, x in scores.items()}
    first_name, first = next(iter(arrays.items()))
    for name, arr in arrays.items():
        # Aggregates over different task sets are not comparable; runs may differ.
        _same_tasks(first, arr, f"scores[{first_name!r}]", f"scores[{name!r}]")
    kernels = [_METRIC_KERNELS[m] for m in metrics]

    def all_metrics(batch: np.ndarray) -> np.ndarray:
        return np.stack([k(batch) for k in kernels], axis=-1)

    rows = []
    for name, arr in arrays.items():
        point = all_metrics(arr[None])[0]
        dist = stratified_bootstrap(arr, all_metrics, reps, _algorithm_seed(seed, name))
        lower, upper = _percentile_interval(dist, confidence)
        for i, metric in enumerate(metrics):
            rows.append((name, metric, float(point[i]), float(lower[i]), float(upper[i])))
    return pd.DataFrame(rows, columns=["algorithm", "metric", "point", "lower", "upper"])


# --------------------------------------------------------------------------------------------
# probability of improvement
# --------------------------------------------------------------------------------------------


def _batched_poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) for batches ``x``: (B, n_x, T), ``y``: (B, n_y, T) -> (B,).

    Per task this is the Mann-Whitney U statistic divided by n_x * n_y (ties count 1/2);
    the result is the average over tasks.
    """
    xe, ye = x[:, :, None, :], y[:, None, :, :]
    per_task = (xe > ye).mean(axis=(1, 2)) + 0.5 * (xe == ye).mean(axis=(1, 2))
    return per_task.mean(axis=-1)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """Probability that a run of X beats a run of Y on a random task.

    For each task j: mean over all pairs (i, k) of ``[x[i,j] > y[k,j]] + 0.5 [x[i,j] == y[k,j]]``,
    then averaged over tasks. ``x``: (n_runs_x, n_tasks), ``y``: (n_runs_y, n_tasks).
    """
    xa, ya = _as_scores(x, "x"), _as_scores(y, "y")
    _same_tasks(xa, ya)
    return float(_batched_poi(xa[None], ya[None])[0])


def probability_of_improvement_ci(
    x: np.ndarray,
    y: np.ndarray,
    reps: int = 10_000,
    confidence: float = 0.95,
    seed: Seed = 0,
) -> tuple[float, float, float]:
    """Probability of improvement with a percentile CI from stratified bootstrap.

    ``x`` and ``y`` are resampled independently (each stratified by task), as in rliable.

    Returns:
        ``(point, lower, upper)``.
    """
    xa, ya = _as_scores(x, "x"), _as_scores(y, "y")
    _same_tasks(xa, ya)
    _check_confidence(confidence)
    _check_reps(reps)
    rng = np.random.default_rng(seed)
    # The pairwise comparison materializes (chunk, n_x, n_y, n_tasks) booleans: budget on that.
    per_rep = xa.shape[0] * ya.shape[0] * xa.shape[1]
    dist = np.concatenate(
        [_batched_poi(_resample(xa, rng, n), _resample(ya, rng, n)) for n in _chunks(reps, per_rep)]
    )
    lower, upper = _percentile_interval(dist, confidence)
    return probability_of_improvement(xa, ya), float(lower), float(upper)


# --------------------------------------------------------------------------------------------
# performance profiles
# --------------------------------------------------------------------------------------------


def _as_taus(taus: np.ndarray) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(taus, dtype=float))
    if arr.ndim != 1:
        raise ValueError(f"taus must be 1-D, got shape {arr.shape}")
    return _as_finite(arr, "taus")


def _batched_profile(flat: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of scores > tau: ``flat`` (B, m) -> (B, len(taus)).

    One vectorized comparison per tau keeps memory at O(B * m) whatever the number of taus.
    """
    return np.stack([(flat > t).mean(axis=-1) for t in taus], axis=-1)


def performance_profile(x: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Run-score distribution: fraction of all runs (all tasks pooled) with score > tau.

    Returns an array with one value per entry of ``taus``.
    """
    flat = _as_scores(x).reshape(1, -1)
    return _batched_profile(flat, _as_taus(taus))[0]


def performance_profile_ci(
    x: np.ndarray,
    taus: np.ndarray,
    reps: int = 10_000,
    confidence: float = 0.95,
    seed: Seed = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Performance profile with pointwise percentile CIs from stratified bootstrap.

    Returns:
        ``(profile, lower, upper)``, each with one value per entry of ``taus``.
    """
    arr = _as_scores(x)
    tau_arr = _as_taus(taus)
    _check_confidence(confidence)
    _check_reps(reps)
    dist = stratified_bootstrap(
        arr, lambda b: _batched_profile(b.reshape(b.shape[0], -1), tau_arr), reps, seed
    )
    lower, upper = _percentile_interval(dist, confidence)
    return performance_profile(arr, tau_arr), lower, upper


# --------------------------------------------------------------------------------------------
# per-cell statistics across seeds (Student-t)
# --------------------------------------------------------------------------------------------


def _betainc_cf(a: float, b: float, x: float) -> float:
    """Continued fraction for the regularized incomplete beta, evaluated by modified Lentz.

    Converges quickly for ``x < (a + 1) / (a + b + 2)``; the caller uses the symmetry
    I_x(a, b) = 1 - I_{1-x}(b, a) otherwise.
    """
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        # Even step d_{2m}, then odd step d_{2m+1} of the continued fraction.
        for coef in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + coef * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + coef / c
            c = c if abs(c) > tiny else tiny
            delta = c * d
            h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betainc_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betainc_cf(b, a, 1.0 - x) / b


def _student_t_cdf(t: float, df: float) -> float:
    # P(|T| > |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2).
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t distribution (scipy is not a dependency).

    Bisection on the CDF, which is computed from the regularized incomplete beta function;
    accurate to ~1e-12 relative, ample for confidence intervals.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must lie in (0, 1), got {q}")
    if not df > 0:
        raise ValueError(f"df must be positive, got {df}")
    if q < 0.5:
        return -student_t_ppf(1.0 - q, df)
    if q == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while _student_t_cdf(hi, df) < q:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-13 * hi:
        mid = 0.5 * (lo + hi)
        if _student_t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def seed_stats(values: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Statistics of one benchmark cell across seeds, with a Student-t confidence interval.

    Returns ``n, mean, std`` (ddof=1; 0 when n == 1), ``sem`` (std / sqrt(n)) and
    ``ci_low, ci_high`` = mean -/+ t_{(1+confidence)/2, n-1} * sem. With a single seed the
    spread is unknown and the interval collapses to (mean, mean).
    """
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"values must be 1-D (one value per seed), got shape {arr.shape}")
    arr = _as_finite(arr, "values")
    _check_confidence(confidence)
    n = arr.size
    mean = float(arr.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": 0.0, "sem": 0.0, "ci_low": mean, "ci_high": mean}
    std = float(arr.std(ddof=1))
    sem = std / math.sqrt(n)
    half = student_t_ppf(0.5 + confidence / 2.0, n - 1) * sem
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "sem": sem,
        "ci_low": mean - half,
        "ci_high": mean + half,
    }
