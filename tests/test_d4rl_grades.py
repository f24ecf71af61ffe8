"""gapbench.gap_envs.d4rl_grades and ``gapbench datasets compare``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gapbench.benchmark.cli.datasets import app
from gapbench.gap_envs import d4rl_grades as g
from gapbench.gap_envs import normalized_score


def _card(did: str, mean: float, **extra) -> dict:
    return {"id": did, "source": "gapbench", "return_mean": mean, "return_std": 1.0,
            "episodes": 10, "size": 1000, "normalized_score": 0.0, **extra}  # fmt: skip


def test_d4rl_figures_normalize_as_published():
    # D4RL's own normalization of its v2 datasets: halfcheetah-medium ~40.7, expert ~88.1,
    # hopper-expert ~108.5, walker2d-medium ~62.1 (derived from infos.py's reference scores).
    assert normalized_score("halfcheetah", g.D4RL_V2[("halfcheetah", "medium")][0]) == (
        pytest.approx(40.68, abs=0.01)
    )
    assert normalized_score("halfcheetah", g.D4RL_V2[("halfcheetah", "expert")][0]) == (
        pytest.approx(88.09, abs=0.01)
    )
    assert normalized_score("hopper", g.D4RL_V2[("hopper", "expert")][0]) == pytest.approx(
        108.51, abs=0.01
    )
    assert normalized_score("walker2d", g.D4RL_V2[("walker2d", "medium")][0]) == pytest.approx(
        62.09, abs=0.01
    )
    # medium-expert is the episode-weighted mean of medium and expert, between the two
    for task in ("halfcheetah", "hopper", "walker2d"):
        me, _, derived = g.D4RL_V2[(task, "medium-expert")]
        assert derived and g.D4RL_V2[(task, "medium")][0] < me < g.D4RL_V2[(task, "expert")][0]


def test_table_takes_the_newest_nominal_version_and_orders_the_grades():
    cards = [
        _card("gapbench/hopper/expert-v0", 400.0),
        _card("gapbench/hopper/expert-v1", 3000.0),
        _card("gapbench/hopper/random-v1", 20.0),
        _card("gapbench/hopper/medium-v1", 1200.0),
        _card("gapbench/hopper-gravity_2/medium-v1", 9999.0),  # a shifted real system
        {"id": "mujoco/hopper/expert-v0", "source": "minari"},  # not gapbench's
    ]
    rows = g.grade_table(cards)
    assert [(r["task"], r["quality"], r["id"]) for r in rows] == [
        ("hopper", "random", "gapbench/hopper/random-v1"),
        ("hopper", "medium", "gapbench/hopper/medium-v1"),
        ("hopper", "expert", "gapbench/hopper/expert-v1"),
    ]
    assert rows[2]["d4rl_return_mean"] == g.D4RL_V2[("hopper", "expert")][0]
    assert g.ordering_problems(rows) == []
    assert [r["id"] for r in g.grade_table(cards, version=0)] == ["gapbench/hopper/expert-v0"]
    table = g.markdown(rows)
    assert table.count("\n") == 4 and "`gapbench/hopper/expert-v1`" in table


def test_ordering_problems_name_each_broken_pair():
    rows = g.grade_table(
        [
            _card("gapbench/walker2d/random-v1", 5.0),
            _card("gapbench/walker2d/medium-replay-v1", 900.0),
            _card("gapbench/walker2d/medium-v1", 800.0),  # below medium-replay: broken
            _card("gapbench/walker2d/medium-expert-v1", 3000.0),
            _card("gapbench/walker2d/expert-v1", 3000.0),  # a tie with medium-expert is fine
        ]
    )
    assert g.ordering_problems(rows) == [
        "walker2d: medium-replay returns 900.0 on average, not below medium's 800.0"
    ]


def test_cli_compare_on_small_builds(tmp_path):
    runner = CliRunner()
    for quality in ("random", "expert"):
        res = runner.invoke(
            app,
            ["build", "--task", "hopper", "--quality", quality, "--size", "300", "--seed", "1",
             "--data-dir", str(tmp_path), "--no-progress"],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compare", "--json", "--data-dir", str(tmp_path)])
    out = json.loads(res.stdout)
    assert [r["quality"] for r in out["rows"]] == ["random", "expert"]
    # the exit code follows the ordering check: 0 when in order, 2 with the pair named
    assert (res.exit_code == 0) == (out["ordering_problems"] == []), res.output
    res = runner.invoke(app, ["compare", "--markdown", "--data-dir", str(tmp_path)])
    assert "| hopper | expert |" in res.stdout
    res = runner.invoke(app, ["compare", "--version", "7", "--data-dir", str(tmp_path)])
    assert res.exit_code == 2 and "no gapbench datasets of version 7" in res.output
