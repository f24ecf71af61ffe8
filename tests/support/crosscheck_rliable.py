"""Cross-check ``analysis/stats.py`` against rliable 1.2.0 (Agarwal et al., 2021).

Run it with ``nox -s crosscheck``: the session builds an isolated env with rliable and versions
of numpy/pandas/scipy that rliable imports with, and this script loads ``analysis/stats.py`` by
path, so neither torch nor the rest of gapbench is needed. Not collected by pytest (no
``test_`` prefix).

Checks:

* point estimates, exactly (rtol 1e-12): mean, median, IQM and optimality gap (gamma = 100),
  probability of improvement (with and without ties), performance-profile values;
* interval estimates within bootstrap noise on synthetic scores in [0, 100], 10k
  stratified-bootstrap resamples on both sides: |ours - rliable| < 2 points for the aggregate
  metrics and < 1.5 score steps (1 / n_scores) for performance profiles; for probability of
  improvement < 0.03 with 2k resamples on rliable's side (its per-task scipy Mann-Whitney test
  costs ~1 ms a call, so 10k resamples of 8 tasks would take minutes per pair).

Exits with status 1 when a check fails; prints the largest difference of every check.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
from rliable import library as rly
from rliable import metrics as rm

ROOT = Path(__file__).resolve().parents[2]
RTOL = 1e-12
REPS = 10_000
POI_REPS = 2_000  # rliable's side of the probability-of-improvement intervals (slow)


def load_stats():
    """``analysis/stats.py`` as a stand-alone module (the package would import torch)."""
    spec = importlib.util.spec_from_file_location("gapbench_stats", ROOT / "analysis" / "stats.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


stats = load_stats()
failures: list[str] = []


def report(name: str, diff: float, tol: float, kind: str = "abs") -> None:
    ok = diff <= tol
    print(
        f"  {'ok  ' if ok else 'FAIL'} {name:<44} max {kind} diff {diff:.3g} (tol {tol:g})",
        flush=True,
    )
    if not ok:
        failures.append(name)


def rel_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = np.maximum(np.abs(b), 1e-300)
    return float(np.max(np.where(a == b, 0.0, np.abs(a - b) / scale)))


def synthetic(seed: int) -> dict[str, np.ndarray]:
    """Score matrices (runs x tasks) of varied shapes and shapes of distribution."""
    rng = np.random.default_rng(seed)
    return {
        "uniform": rng.uniform(0, 100, size=(10, 8)),
        "beta": 100 * rng.beta(2.0, 5.0, size=(5, 8)),
        "skewed": np.clip(rng.normal(70, 25, size=(7, 8)), 0, 100),
        "few_runs": rng.uniform(20, 90, size=(3, 8)),
    }


def check_points() -> None:
    print("point estimates (rtol 1e-12)")
    worst = dict.fromkeys(["mean", "median", "iqm", "optimality_gap"], 0.0)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        shape = (int(rng.integers(1, 12)), int(rng.integers(1, 15)))
        # Scores beyond 100 exercise the optimality gap's clipping.
        x = rng.uniform(-10, 130, size=shape)
        ours = stats.aggregate_metrics(x)
        theirs = {
            "mean": rm.aggregate_mean(x),
            "median": rm.aggregate_median(x),
            "iqm": rm.aggregate_iqm(x),
            "optimality_gap": rm.aggregate_optimality_gap(x, gamma=100),
        }
        for k in worst:
            worst[k] = max(worst[k], rel_diff(ours[k], theirs[k]))
    for k, d in worst.items():
        report(k, d, RTOL, "rel")

    poi = 0.0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        n_tasks = int(rng.integers(1, 8))
        x = rng.uniform(0, 100, size=(int(rng.integers(1, 10)), n_tasks))
        y = rng.uniform(0, 100, size=(int(rng.integers(1, 10)), n_tasks))
        if seed % 2:  # coarse scores: many ties, counted 1/2 by both
            x, y = np.round(x / 20), np.round(y / 20)
        poi = max(
            poi,
            rel_diff(stats.probability_of_improvement(x, y), rm.probability_of_improvement(x, y)),
        )
        same = stats.probability_of_improvement(x, x)
        poi = max(poi, rel_diff(same, rm.probability_of_improvement(x, x)))
    report("probability_of_improvement", poi, RTOL, "rel")

    taus = np.linspace(0, 100, 41)
    prof = 0.0
    for name, x in synthetic(7).items():
        ours = stats.performance_profile(x, taus)
        theirs = rly.score_distributions(x, taus)
        prof = max(prof, rel_diff(ours, theirs) if np.any(theirs) else float(np.max(ours)))
        del name
    report("performance_profile", prof, RTOL, "rel")


def check_intervals() -> None:
    print(f"interval estimates ({REPS} stratified-bootstrap resamples each)")
    scores = synthetic(2021)

    def rl_metrics(x: np.ndarray) -> np.ndarray:
        return np.array(
            [
                rm.aggregate_mean(x),
                rm.aggregate_median(x),
                rm.aggregate_iqm(x),
                rm.aggregate_optimality_gap(x, gamma=100),
            ]
        )

    np.random.seed(0)  # rliable's StratifiedBootstrap draws from numpy's global RNG
    rl_points, rl_cis = rly.get_interval_estimates(scores, rl_metrics, reps=REPS)
    ours = stats.interval_estimates(scores, reps=REPS, seed=0)
    worst: dict[str, float] = {}
    for i, metric in enumerate(stats.METRICS):
        for name in scores:
            row = ours[(ours.algorithm == name) & (ours.metric == metric)].iloc[0]
            pd_ = abs(row.point - rl_points[name][i])
            if pd_ > RTOL * max(1.0, abs(rl_points[name][i])):
                failures.append(f"{metric} point via interval_estimates ({name})")
            d = max(abs(row.lower - rl_cis[name][0, i]), abs(row.upper - rl_cis[name][1, i]))
            worst[metric] = max(worst.get(metric, 0.0), d)
            print(
                f"    {metric:<15} {name:<9} ours [{row.lower:6.2f}, {row.upper:6.2f}]"
                f"  rliable [{rl_cis[name][0, i]:6.2f}, {rl_cis[name][1, i]:6.2f}]",
                flush=True,
            )
    for metric, d in worst.items():
        report(f"{metric} CI bounds (points)", d, 2.0)

    # Probability of improvement: the two score sets are resampled independently.
    # Four tasks each keep rliable's side to ~1 minute.
    pairs = {
        "uniform>skewed": (scores["uniform"][:, :4], scores["skewed"][:, :4]),
        "few_runs>beta": (scores["few_runs"][:, 4:], scores["beta"][:, 4:]),
    }
    np.random.seed(1)
    rl_poi, rl_poi_ci = rly.get_interval_estimates(
        pairs, lambda x, y: np.array([rm.probability_of_improvement(x, y)]), reps=POI_REPS
    )
    poi_diff = 0.0
    for k, (x, y) in pairs.items():
        point, lo, hi = stats.probability_of_improvement_ci(x, y, reps=REPS, seed=1)
        if abs(point - rl_poi[k][0]) > RTOL * abs(rl_poi[k][0]):
            failures.append(f"poi point via _ci ({k})")
        d = max(abs(lo - rl_poi_ci[k][0, 0]), abs(hi - rl_poi_ci[k][1, 0]))
        poi_diff = max(poi_diff, d)
        print(
            f"    P({k:<15}) ours {point:.3f} [{lo:.3f}, {hi:.3f}]  rliable "
            f"{rl_poi[k][0]:.3f} [{rl_poi_ci[k][0, 0]:.3f}, {rl_poi_ci[k][1, 0]:.3f}]"
        )
    report("probability_of_improvement CI bounds", poi_diff, 0.03)

    taus = np.linspace(0, 100, 41)
    np.random.seed(2)
    rl_prof, rl_prof_ci = rly.create_performance_profile(scores, taus, reps=REPS)
    prof_point, prof_ci = 0.0, 0.0
    for name, x in scores.items():
        point, lo, hi = stats.performance_profile_ci(x, taus, reps=REPS, seed=2)
        prof_point = max(prof_point, float(np.max(np.abs(point - rl_prof[name]))))
        d = max(np.max(np.abs(lo - rl_prof_ci[name][0])), np.max(np.abs(hi - rl_prof_ci[name][1])))
        # Profiles move in steps of 1 / (runs x tasks): allow 1.5 steps of bootstrap noise.
        prof_ci = max(prof_ci, float(d) * x.size)
    report("performance_profile point (via _ci)", prof_point, RTOL)
    report("performance_profile CI bounds (score steps)", prof_ci, 1.5)


def main() -> int:
    versions = ", ".join(
        f"{p} {version(p)}" for p in ("rliable", "arch", "numpy", "scipy", "pandas")
    )
    print(f"python {sys.version.split()[0]}; {versions}")
    check_points()
    check_intervals()
    if failures:
        print(f"FAILED: {', '.join(failures)}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
