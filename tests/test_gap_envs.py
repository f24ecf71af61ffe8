"""The shifted simulators really change the physics, and only as asked."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from gapbench import gap_envs
from gapbench.gap_envs import GapSpec, GapSpecError, UnknownTaskError


def rollout(env, actions, seed=0):
    obs, _ = env.reset(seed=seed)
    trajectory = [obs]
    for a in actions:
        obs, *_ = env.step(a)
        trajectory.append(obs)
    return np.array(trajectory)


def fixed_actions(n, act_dim, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, act_dim))


# -- specs -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "gravity=2.0",
        "gravity=2.0,friction=0.3",
        "mass=1.5,mass.torso=2.0,joint_noise=0.1",
        "joint_noise=1.0,noise_ctrl_cost=noisy",
        "",
    ],
)
def test_spec_prints_back_to_the_same_string(text):
    assert str(GapSpec.parse(text)) == text
    assert GapSpec.parse(str(GapSpec.parse(text))) == GapSpec.parse(text)


def test_spec_from_dict_and_yaml_agree_with_string():
    s = GapSpec.parse("gravity=2.0,mass.torso=2.0")
    assert GapSpec.parse({"gravity": 2, "mass": {"torso": 2}}) == s
    assert GapSpec.parse("gravity: 2.0\nmass.torso: 2.0") == s
    assert GapSpec.parse("friction=0.3,gravity=2.0") == GapSpec.parse("gravity=2.0,friction=0.3")
    assert GapSpec.parse(None).is_nominal and str(GapSpec()) == ""


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("gravty=2.0", "unknown gap key 'gravty'"),
        ("gravity=0", "must be > 0"),
        ("friction=-1", "must be > 0"),
        ("mass=nan", "must be finite"),
        ("gravity=inf", "must be finite"),
        ("joint_noise=-0.1", "must be >= 0"),
        ("joint_noise=1.0,noise_ctrl_cost=raw", "must be one of clipped, noisy, got 'raw'"),
        ("noise_ctrl_cost=noisy", "needs joint_noise > 0"),
        ("gravity=abc", "needs a number"),
        ("gravity", "expected 'key=value,...'"),
        ("gravity=2.0,friction", "not 'key=value'"),
    ],
)
def test_bad_spec_names_the_value_and_valid_choices(text, fragment):
    with pytest.raises(GapSpecError, match=fragment) as info:
        GapSpec.parse(text)
    if "unknown" in fragment:
        assert "gravity, mass, mass.<body>, friction, joint_noise" in str(info.value)


def test_unknown_task_and_body_errors():
    with pytest.raises(UnknownTaskError, match="'halfchetah'.*halfcheetah, hopper, walker2d"):
        gap_envs.make("halfchetah")
    with pytest.raises(GapSpecError, match="unknown body 'tail'.*torso"):
        gap_envs.make("hopper", "mass.tail=2.0")


# -- physics -----------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["halfcheetah", "hopper", "walker2d"])
def test_nominal_is_identical_to_plain_gymnasium(task):
    t = gap_envs.get_task(task)
    actions = fixed_actions(50, t.act_dim)
    ours = rollout(gap_envs.make(task, ""), actions, seed=3)
    plain = rollout(gym.make(t.gym_id), actions, seed=3)
    np.testing.assert_array_equal(ours, plain)


def free_fall_acceleration(gap: str) -> float:
    """Vertical acceleration of the hopper's root in its first steps with zero action
    (it starts in the air, so it is in free fall)."""
    env = gap_envs.make("hopper", gap)
    env.reset(seed=0)
    data = env.unwrapped.data
    dt = env.unwrapped.dt
    v0 = data.qvel[1]
    env.step(np.zeros(3))
    return (data.qvel[1] - v0) / dt


def test_gravity_doubles_free_fall():
    nominal = free_fall_acceleration("")
    doubled = free_fall_acceleration("gravity=2.0")
    assert nominal == pytest.approx(-9.81, rel=0.05)
    assert doubled / nominal == pytest.approx(2.0, rel=0.02)


def test_mass_scales_total_and_single_bodies():
    nominal = gap_envs.describe("walker2d")
    heavy = gap_envs.describe("walker2d", "mass=1.5")
    assert heavy["total_mass"] == pytest.approx(1.5 * nominal["total_mass"])
    torso = gap_envs.describe("walker2d", "mass.torso=2.0")
    for body, mass in torso["body_mass"].items():
        expected = nominal["body_mass"][body] * (2.0 if body == "torso" else 1.0)
        assert mass == pytest.approx(expected)
    env = gap_envs.make("walker2d", "mass.torso=2.0")
    base = gym.make("Walker2d-v5").unwrapped.model
    i = env.unwrapped.model.body("torso").id
    np.testing.assert_allclose(env.unwrapped.model.body_inertia[i], 2.0 * base.body_inertia[i])
    actions = fixed_actions(30, 6)
    assert not np.allclose(rollout(env, actions), rollout(gap_envs.make("walker2d"), actions))


def test_friction_scales_every_geom_including_floor():
    info = gap_envs.describe("halfcheetah", "friction=0.3")
    np.testing.assert_allclose(info["friction"], 0.3 * np.array(info["nominal_friction"]))
    assert "floor" in info["geoms"]
    actions = fixed_actions(200, 6)
    shifted = rollout(gap_envs.make("halfcheetah", "friction=0.3"), actions)
    nominal = rollout(gap_envs.make("halfcheetah"), actions)
    assert np.abs(shifted - nominal).max() > 0.1


def test_shifts_compose_and_describe_reports_them():
    info = gap_envs.describe("halfcheetah", "gravity=2.0,friction=0.3")
    assert info["gap"] == "gravity=2.0,friction=0.3"
    assert info["gravity"] == pytest.approx([0.0, 0.0, -19.62])
    np.testing.assert_allclose(info["friction"], 0.3 * np.array(info["nominal_friction"]))
    assert info["total_mass"] == pytest.approx(info["nominal_total_mass"])


def test_joint_noise_is_seeded_and_keeps_the_clean_action():
    actions = fixed_actions(40, 6)
    a = rollout(gap_envs.make("halfcheetah", "joint_noise=0.5"), actions, seed=1)
    b = rollout(gap_envs.make("halfcheetah", "joint_noise=0.5"), actions, seed=1)
    c = rollout(gap_envs.make("halfcheetah", "joint_noise=0.5"), actions, seed=2)
    clean = rollout(gap_envs.make("halfcheetah"), actions, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[1:], c[1:])
    assert not np.allclose(a[1:], clean[1:])
    zero = rollout(gap_envs.make("halfcheetah", "joint_noise=0.0"), actions, seed=1)
    np.testing.assert_array_equal(zero, clean)


def test_joint_noise_executes_a_noisy_action_but_the_learner_sees_the_clean_one():
    env = gap_envs.make("halfcheetah", "joint_noise=0.3", seed=0)
    action = np.full(6, 0.2)
    executed = []
    inner = env.env
    while not isinstance(inner, gap_envs.JointNoise):
        inner = inner.env
    original = inner.env.step
    inner.env.step = lambda a: (executed.append(np.array(a)), original(a))[1]
    env.step(action)
    assert not np.allclose(executed[0], action)
    np.testing.assert_array_equal(action, np.full(6, 0.2))  # the caller's action is untouched


def test_noise_ctrl_cost_noisy_is_the_authors_reward_with_the_same_dynamics():
    """noise_ctrl_cost=noisy: the env is stepped with the unclipped noisy action (the H2O
    authors' sampler), so halfcheetah's control cost is 0.1 |a + n|^2 (0.6 per step for
    a = 0, n ~ N(0, 1)) instead of 0.1 |clip(a + n)|^2 (0.31); MuJoCo clamps the control,
    so observations are the same step by step."""
    runs = {}
    for mode in ("clipped", "noisy"):
        env = gap_envs.make("halfcheetah", f"joint_noise=1.0,noise_ctrl_cost={mode}", seed=3)
        inner = env.env
        while not isinstance(inner, gap_envs.JointNoise):
            inner = inner.env
        executed, costs, observations = [], [], []
        original = inner.env.step
        inner.env.step = lambda a, original=original, executed=executed: (
            executed.append(np.array(a)),
            original(a),
        )[1]
        for _ in range(1000):
            obs, _, _, _, info = env.step(np.zeros(6))  # one episode (halfcheetah never ends)
            costs.append(-info["reward_ctrl"])
            observations.append(obs)
        runs[mode] = np.array(executed), np.array(costs), np.array(observations)
    (clipped_a, clipped_cost, clipped_obs), (noisy_a, noisy_cost, noisy_obs) = runs.values()
    np.testing.assert_array_equal(clipped_a, np.clip(noisy_a, -1, 1))  # the same noise
    assert np.abs(noisy_a).max() > 2.0
    np.testing.assert_allclose(noisy_cost, 0.1 * np.square(noisy_a).sum(1), rtol=1e-12)
    np.testing.assert_allclose(clipped_cost, 0.1 * np.square(clipped_a).sum(1), rtol=1e-12)
    assert noisy_cost.mean() == pytest.approx(0.600, abs=0.03)
    assert clipped_cost.mean() == pytest.approx(0.310, abs=0.02)
    np.testing.assert_array_equal(noisy_obs, clipped_obs)
    assert gap_envs.describe("halfcheetah", "joint_noise=1.0")["noise_ctrl_cost"] == "clipped"
    assert str(GapSpec.parse("joint_noise=1.0,noise_ctrl_cost=clipped")) == "joint_noise=1.0"


def test_gymnasium_registration_and_vector_envs():
    env = gym.make("gapbench/HalfCheetah-v5", gap="gravity=2.0")
    assert env.unwrapped.model.opt.gravity[2] == pytest.approx(-19.62)
    venv = gap_envs.make_vector("hopper", "gravity=2.0", num_envs=3, seed=0)
    obs, *_ = venv.step(np.zeros((3, 3)))
    assert obs.shape == (3, 11)
    assert venv.envs[0].unwrapped.model.opt.gravity[2] == pytest.approx(-19.62)


def test_envs_do_not_share_models():
    a = gap_envs.make("hopper", "gravity=2.0")
    b = gap_envs.make("hopper")
    assert a.unwrapped.model.opt.gravity[2] != b.unwrapped.model.opt.gravity[2]


def test_normalized_score_uses_d4rl_references():
    assert gap_envs.normalized_score("hopper", 3234.3) == pytest.approx(100.0)
    assert gap_envs.normalized_score("hopper", -20.272305) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "task, gap, threads",
    [
        ("halfcheetah", "mass=1.3", 2),
        ("hopper", "", 1),
        ("walker2d", "friction=0.5", 3),  # one copy per thread
        ("hopper", "gravity=1.5,joint_noise=0.1", 2),
        ("hopper", "joint_noise=1.0,noise_ctrl_cost=noisy", 2),
        ("halfcheetah", "joint_noise=1.0,noise_ctrl_cost=noisy", 1),
        ("ant", "", 1),  # no vectorised formula: steps the unwrapped env
    ],
)
def test_eval_episodes_match_gymnasium_step_by_step(task, gap, threads):
    from gapbench.gap_envs.batched import EvalEpisodes

    n = 3
    batched = EvalEpisodes(task, gap, n, threads=threads)
    reference = [gap_envs.make(task, gap) for _ in range(n)]
    obs, _ = batched.reset(seed=5)
    expected = np.stack([env.reset(seed=5 + i)[0] for i, env in enumerate(reference)])
    np.testing.assert_array_equal(obs, expected)
    rng = np.random.default_rng(0)
    done = np.zeros(n, dtype=bool)
    for _ in range(200):  # hopper/walker2d fall within 200 random steps; the rest do not
        act = rng.uniform(-1, 1, (n, batched.task.act_dim)).astype(np.float32)
        obs, rew, term, trunc, _ = batched.step(act)
        for i, env in enumerate(reference):
            if done[i]:  # a finished copy is frozen: no reward, flags stay set
                assert rew[i] == 0.0 and (term[i] or trunc[i])
                continue
            o, r, te, tr, _ = env.step(act[i])
            np.testing.assert_array_equal(obs[i], o)
            assert rew[i] == r and term[i] == te and trunc[i] == tr
            done[i] = te or tr
    assert done.all() == (task in ("hopper", "walker2d"))


def test_eval_episodes_truncate_at_the_time_limit_and_check_shapes():
    from gapbench.gap_envs.batched import EvalEpisodes

    env = EvalEpisodes("halfcheetah", "", 2)
    env.reset(seed=0)
    for step in range(1, 1001):
        _, _, term, trunc, _ = env.step(np.zeros((2, 6), np.float32))
        assert not term.any() and trunc.all() == (step == 1000)
    with pytest.raises(ValueError, match=r"shape \(2, 6\)"):
        env.step(np.zeros((3, 6)))
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        EvalEpisodes("halfcheetah", "", 2, threads=0)


def test_eval_episodes_physics_threads_end_on_close():
    import threading

    from gapbench.gap_envs.batched import EvalEpisodes

    before = set(threading.enumerate())
    env = EvalEpisodes("hopper", "", 4, threads=3)
    helpers = set(threading.enumerate()) - before
    assert len(helpers) == 2
    env.reset(seed=0)
    env.step(np.zeros((4, 3), np.float32))
    env.close()
    for t in helpers:
        t.join(timeout=5)
        assert not t.is_alive()
