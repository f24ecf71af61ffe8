"""gapbench.analysis.stats: aggregate metrics, stratified bootstrap, Student-t intervals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gapbench.analysis import stats

try:  # scipy is optional: cross-check against it only when present.
    import scipy.stats as sps
except ImportError:  # pragma: no cover - depends on the environment
    sps = None


# ---------------------------------------------------------------------------------------------
# point metrics
# ---------------------------------------------------------------------------------------------


def test_iqm_known_values():
    # int(0.25 * 8) = 2 cut from each end -> mean of [2, 3, 4, 5].
    assert stats.iqm(np.arange(8)) == pytest.approx(3.5)
    # n = 10: int(2.5) = 2 cut per end -> mean of sorted[2:8] (order of input irrelevant).
    x = np.array([9.0, 0.0, 100.0, 3.0, 4.0, -50.0, 6.0, 5.0, 7.0, 8.0])
    assert stats.iqm(x) == pytest.approx(np.mean([3.0, 4.0, 5.0, 6.0, 7.0, 8.0]))
    # n = 3: int(0.75) = 0, nothing is trimmed.
    assert stats.iqm([1.0, 2.0, 10.0]) == pytest.approx(13.0 / 3.0)
    # axis=None pools a 2-D array; an explicit axis trims each slice separately.
    m = np.arange(8.0).reshape(2, 4)
    assert stats.iqm(m) == pytest.approx(3.5)
    np.testing.assert_allclose(stats.iqm(m, axis=1), [1.5, 5.5])
    np.testing.assert_allclose(stats.iqm(m.T, axis=0), [1.5, 5.5])


@pytest.mark.skipif(sps is None, reason="scipy not installed")
def test_iqm_matches_scipy_trim_mean():  # pragma: no cover - depends on the environment
    rng = np.random.default_rng(3)
    for n in (4, 7, 13, 50):
        x = rng.normal(size=(n, 3))
        assert stats.iqm(x) == pytest.approx(sps.trim_mean(x, 0.25, axis=None))
        np.testing.assert_allclose(stats.iqm(x, axis=0), sps.trim_mean(x, 0.25, axis=0))


def test_optimality_gap_known_values():
    x = np.array([[50.0, 120.0], [100.0, 90.0]])
    # Shortfalls below 100: 50, 0, 0, 10 -> mean 15.
    assert stats.optimality_gap(x) == pytest.approx(15.0)
    assert stats.optimality_gap(x, gamma=60.0) == pytest.approx(10.0 / 4)


def test_aggregate_metrics():
    x = np.array([[0.0, 10.0, 20.0, 30.0], [40.0, 50.0, 60.0, 200.0]])
    out = stats.aggregate_metrics(x)
    assert set(out) == {"mean", "median", "iqm", "optimality_gap"}
    assert out["mean"] == pytest.approx(410.0 / 8)
    # rliable's median: the median over tasks of per-task means (20, 30, 40, 115) -> 35.
    assert out["median"] == pytest.approx(35.0)
    assert out["iqm"] == pytest.approx(np.mean([20.0, 30.0, 40.0, 50.0]))
    assert out["optimality_gap"] == pytest.approx((100 + 90 + 80 + 70 + 60 + 50 + 40 + 0) / 8)


def test_median_is_median_of_task_means():
    # The pooled median would be 9; per-task means are 3, 3, 100 -> rliable's median is 3.
    x = np.array([[0.0, 0.0, 100.0], [0.0, 0.0, 100.0], [9.0, 9.0, 100.0]])
    assert np.median(x) == 9.0
    assert stats.aggregate_metrics(x)["median"] == pytest.approx(3.0)
    rng = np.random.default_rng(1)
    y = rng.uniform(0, 100, size=(5, 4))
    assert stats.aggregate_metrics(y)["median"] == np.median(np.mean(y, axis=0))


# ---------------------------------------------------------------------------------------------
# probability of improvement
# ---------------------------------------------------------------------------------------------


def test_probability_of_improvement_extremes():
    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 1, size=(5, 3))
    hi = rng.uniform(2, 3, size=(7, 3))
    assert stats.probability_of_improvement(hi, lo) == 1.0
    assert stats.probability_of_improvement(lo, hi) == 0.0
    assert stats.probability_of_improvement(lo, lo) == pytest.approx(0.5)


def test_probability_of_improvement_by_hand():
    x = np.array([[1.0, 5.0], [3.0, 6.0]])
    y = np.array([[2.0, 5.0]])
    # Task 0: x = {1, 3} vs y = {2}: 1 > 2 no (0), 3 > 2 yes (1) -> 0.5.
    # Task 1: x = {5, 6} vs y = {5}: tie (0.5), 6 > 5 (1) -> 0.75. Mean over tasks: 0.625.
    assert stats.probability_of_improvement(x, y) == pytest.approx(0.625)
    assert stats.probability_of_improvement(y, x) == pytest.approx(1 - 0.625)


def test_probability_of_improvement_ci():
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 1.0, size=(10, 4))
    y = rng.normal(0.0, 1.0, size=(8, 4))
    point, lower, upper = stats.probability_of_improvement_ci(x, y, reps=2000, seed=0)
    assert point == pytest.approx(stats.probability_of_improvement(x, y))
    assert 0.0 <= lower <= point <= upper <= 1.0
    assert upper - lower > 0.01
    assert stats.probability_of_improvement_ci(x, y, reps=2000, seed=0) == (point, lower, upper)


# ---------------------------------------------------------------------------------------------
# performance profiles
# ---------------------------------------------------------------------------------------------


def test_performance_profile_known_values():
    x = np.array([[0.0, 10.0], [20.0, 30.0]])
    taus = np.array([-1.0, 0.0, 15.0, 30.0])
    # Strictly greater than tau: 4, 3, 2, 0 of 4 runs.
    np.testing.assert_allclose(stats.performance_profile(x, taus), [1.0, 0.75, 0.5, 0.0])


def test_performance_profile_ci():
    rng = np.random.default_rng(2)
    x = rng.normal(50.0, 20.0, size=(10, 5))
    taus = np.linspace(0.0, 100.0, 11)
    profile, lower, upper = stats.performance_profile_ci(x, taus, reps=1000, seed=0)
    assert profile.shape == lower.shape == upper.shape == (11,)
    np.testing.assert_allclose(profile, stats.performance_profile(x, taus))
    assert np.all(lower <= profile + 1e-12) and np.all(profile <= upper + 1e-12)
    assert np.all(np.diff(profile) <= 0)  # a survival function is non-increasing


# ---------------------------------------------------------------------------------------------
# stratified bootstrap
# ---------------------------------------------------------------------------------------------


def test_bootstrap_is_stratified_by_task():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4))
    x[:, 2] = 7.0  # a constant task column
    x[:, 3] = np.arange(6) + 100.0  # values unique to task 3

    samples = stats.stratified_bootstrap(x, lambda b: b, reps=300, seed=0)
    assert samples.shape == (300, 6, 4)
    # A constant column can only be resampled into itself.
    assert np.all(samples[:, :, 2] == 7.0)
    # Every resampled value of task j comes from task j's own runs.
    for j in range(4):
        assert np.isin(samples[:, :, j], x[:, j]).all()
    # ...and runs really are resampled with replacement (duplicates appear).
    assert any(len(np.unique(s[:, 3])) < 6 for s in samples)

    col_mean = stats.stratified_bootstrap(x, lambda b: b[:, :, 2].mean(axis=1), reps=300)
    assert np.all(col_mean == 7.0)


@pytest.mark.parametrize("metric", ["mean", "median", "iqm", "optimality_gap"])
def test_batched_metrics_match_scalar_versions(metric):
    # The vectorized kernels must agree with the public scalar functions on each resample:
    # same seed and shape -> same draws, so compare against the resampled arrays themselves.
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 150, size=(7, 3))
    samples = stats.stratified_bootstrap(x, lambda b: b, reps=50, seed=11)
    batched = stats.stratified_bootstrap(x, metric, reps=50, seed=11)
    expected = [stats.aggregate_metrics(s)[metric] for s in samples]
    np.testing.assert_allclose(batched, expected)


def test_bootstrap_chunking_is_seamless(monkeypatch):
    x = np.random.default_rng(0).normal(size=(5, 4))
    full = stats.stratified_bootstrap(x, "iqm", reps=101, seed=3)
    monkeypatch.setattr(stats, "_CHUNK_ELEMS", 7 * x.size)  # force 15 chunks
    chunked = stats.stratified_bootstrap(x, "iqm", reps=101, seed=3)
    # numpy's Generator draws the same stream however the requests are split (the bit
    # generator keeps any leftover 32-bit half), so chunking must not change the result.
    np.testing.assert_array_equal(chunked, full)


def test_bootstrap_ci_coverage_of_mean():
    # 200 synthetic experiments: 10 seeds x 5 tasks, task j ~ N(mu_j, 1), target = mean(mu_j).
    # With n = 10 runs per stratum the bootstrap variance uses ddof=0, i.e. it is (n-1)/n = 0.9
    # of the unbiased one, so the 95% percentile interval is ~5% too narrow and its expected
    # coverage is ~P(|Z| < 1.96 * sqrt(0.9)) ~ 0.937; 500-resample percentile noise lowers it a
    # little more (9000 offline trials gave 0.927). The Monte-Carlo SE with 200 trials is ~0.018,
    # so [0.88, 0.99] is about -2.6/+3.5 SE around that expectation (this seed gives 0.90).
    rng = np.random.default_rng(2021)
    mu = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    target = mu.mean()
    trials, hits = 200, 0
    for t in range(trials):
        x = rng.normal(mu, 1.0, size=(10, 5))
        dist = stats.stratified_bootstrap(x, "mean", reps=500, seed=t)
        lower, upper = np.percentile(dist, [2.5, 97.5])
        hits += lower <= target <= upper
    coverage = hits / trials
    assert 0.88 <= coverage <= 0.99, coverage


# ---------------------------------------------------------------------------------------------
# interval estimates
# ---------------------------------------------------------------------------------------------


def _toy_scores() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "sac": rng.normal(60.0, 15.0, size=(10, 6)),
        "h2o": rng.normal(80.0, 15.0, size=(8, 6)),
    }


def test_interval_estimates_frame():
    scores = _toy_scores()
    df = stats.interval_estimates(scores, reps=1000, seed=0)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["algorithm", "metric", "point", "lower", "upper"]
    assert len(df) == 2 * 4
    assert list(df["metric"][:4]) == ["mean", "median", "iqm", "optimality_gap"]
    for _, row in df.iterrows():
        assert row.lower <= row.point <= row.upper
        assert row.point == pytest.approx(
            stats.aggregate_metrics(scores[row.algorithm])[row.metric]
        )
    sub = stats.interval_estimates(scores, metrics=["iqm"], reps=200, confidence=0.5)
    assert list(sub["metric"]) == ["iqm", "iqm"]


def test_interval_estimates_deterministic():
    scores = _toy_scores()
    a = stats.interval_estimates(scores, reps=500, seed=4)
    b = stats.interval_estimates(scores, reps=500, seed=4)
    pd.testing.assert_frame_equal(a, b)
    c = stats.interval_estimates(scores, reps=500, seed=5)
    assert not np.allclose(a["lower"], c["lower"])
    # An algorithm's interval does not depend on which other algorithms are in the dict.
    solo = stats.interval_estimates({"h2o": scores["h2o"]}, reps=500, seed=4)
    pd.testing.assert_frame_equal(solo, a[a.algorithm == "h2o"].reset_index(drop=True))
    # Deterministic bootstrap distributions and profile CIs as well.
    x = scores["sac"]
    np.testing.assert_array_equal(
        stats.stratified_bootstrap(x, "iqm", reps=300, seed=9),
        stats.stratified_bootstrap(x, "iqm", reps=300, seed=9),
    )
    p1 = stats.performance_profile_ci(x, [50.0, 70.0], reps=300, seed=9)
    p2 = stats.performance_profile_ci(x, [50.0, 70.0], reps=300, seed=9)
    for u, v in zip(p1, p2, strict=True):
        np.testing.assert_array_equal(u, v)


# ---------------------------------------------------------------------------------------------
# per-cell seed statistics
# ---------------------------------------------------------------------------------------------


def test_student_t_ppf_known_quantiles():
    assert stats.student_t_ppf(0.975, 4) == pytest.approx(2.7764451, abs=1e-7)
    assert stats.student_t_ppf(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-10)
    assert stats.student_t_ppf(0.975, 30) == pytest.approx(2.0422724563, rel=1e-9)
    assert stats.student_t_ppf(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)
    assert stats.student_t_ppf(0.025, 4) == pytest.approx(-2.7764451, abs=1e-7)
    assert stats.student_t_ppf(0.5, 3) == 0.0


def test_seed_stats_known_values():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    out = stats.seed_stats(values)
    std = math.sqrt(2.5)  # sum of squared deviations 10, ddof=1 -> 10 / 4
    sem = std / math.sqrt(5)
    assert out["n"] == 5
    assert out["mean"] == pytest.approx(3.0)
    assert out["std"] == pytest.approx(std)
    assert out["sem"] == pytest.approx(sem)
    assert out["ci_low"] == pytest.approx(3.0 - 2.7764451 * sem, abs=1e-6)
    assert out["ci_high"] == pytest.approx(3.0 + 2.7764451 * sem, abs=1e-6)

    one = stats.seed_stats(np.array([42.0]))
    assert one == {"n": 1, "mean": 42.0, "std": 0.0, "sem": 0.0, "ci_low": 42.0, "ci_high": 42.0}


# ---------------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------------


def test_bad_input_raises():
    good = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 2\)"):
        stats.probability_of_improvement(good, np.ones((4, 2)))
    with pytest.raises(ValueError, match="task count"):
        stats.probability_of_improvement_ci(good, np.ones((2, 5)), reps=10)
    with pytest.raises(ValueError, match="task count"):
        stats.interval_estimates({"a": good, "b": np.ones((4, 2))}, reps=10)
    nan = good.copy()
    nan[1, 1] = np.nan
    for call in (
        lambda: stats.iqm(nan),
        lambda: stats.optimality_gap(nan),
        lambda: stats.aggregate_metrics(nan),
        lambda: stats.stratified_bootstrap(nan, "mean", reps=10),
        lambda: stats.interval_estimates({"a": nan}, reps=10),
        lambda: stats.probability_of_improvement(good, nan),
        lambda: stats.performance_profile(nan, [1.0]),
        lambda: stats.performance_profile_ci(good, [np.nan], reps=10),
        lambda: stats.seed_stats(np.array([1.0, np.nan])),
    ):
        with pytest.raises(ValueError, match="NaN"):
            call()
    with pytest.raises(ValueError, match="shape"):
        stats.aggregate_metrics(np.ones(5))
    with pytest.raises(ValueError, match="shape"):
        stats.stratified_bootstrap(np.ones((2, 2, 2)), "mean", reps=10)
    with pytest.raises(ValueError, match="unknown metric"):
        stats.interval_estimates({"a": good}, metrics=["max"], reps=10)
    with pytest.raises(ValueError, match="empty"):
        stats.interval_estimates({}, reps=10)
    with pytest.raises(ValueError, match="empty"):
        stats.seed_stats(np.array([]))
    with pytest.raises(ValueError, match="confidence"):
        stats.interval_estimates({"a": good}, reps=10, confidence=1.5)
    with pytest.raises(ValueError, match="reps"):
        stats.stratified_bootstrap(good, "mean", reps=0)
    with pytest.raises(ValueError, match="leading axis"):
        stats.stratified_bootstrap(good, lambda b: b.mean(), reps=10)
