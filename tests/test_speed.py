"""The FLOP accounting behind ``gapbench bench``: FlopCounterMode's count of one update
equals the hand count of the published method's matrix products, so no update does a
redundant pass (e.g. H2O's w and u come from one classifier call)."""

from __future__ import annotations

from gapbench.benchmark.speed import update_flops

# MACs per row (halfcheetah: obs 17, act 6; 256-256 hidden layers).
CRITIC = 23 * 256 + 256 * 256 + 256  # one Q member
PAIR = 2 * CRITIC
ACTOR = 17 * 256 + 256 * 256 + 256 * 12  # mean and log-std heads
D_SA = 23 * 256 + 256 * 256 + 256 * 2
D_SAS = 40 * 256 + 256 * 256 + 256 * 2

# Forward = 1x; backward = 1x for weight gradients + 1x for input gradients, except the
# first layer's input gradient when the input is data.
SAC_PER_ROW = (
    (3 * ACTOR - 17 * 256)  # actor on s, differentiated
    + 2 * PAIR  # critics on (s, pi(s)) with detached parameters: input gradient only
    + ACTOR  # actor on s' for the target (no grad)
    + PAIR  # target critics
    + (3 * PAIR - 2 * 23 * 256)  # critics on the batch (s, a)
)


def test_sac_update_flops_match_the_hand_count():
    assert update_flops("sac") == 2 * 256 * SAC_PER_ROW


def test_h2o_update_flops_match_the_hand_count():
    classifier_step = 512 * ((3 * D_SA - 23 * 256) + (3 * D_SAS - 40 * 256))  # 256 + 256
    dynamics = 128 * 11 * D_SAS  # one d_sas pass: 128 sim rows + 10 perturbed copies each
    assert update_flops("h2o") == 2 * (256 * SAC_PER_ROW + classifier_step + dynamics)


# BC and TD3+BC: a deterministic actor (one tanh head), the TD3+BC actor step through Q_1
# alone. ``update_flops`` counts the second update, TD3+BC's first with an actor step.
DET_ACTOR = 17 * 256 + 256 * 256 + 256 * 6


def test_bc_update_flops_match_the_hand_count():
    assert update_flops("bc") == 2 * 256 * (3 * DET_ACTOR - 17 * 256)


def test_td3bc_update_flops_match_the_hand_count():
    critic_step = (
        DET_ACTOR  # target actor on s' (no grad)
        + PAIR  # target critics
        + (3 * PAIR - 2 * 23 * 256)  # critics on the batch (s, a)
    )
    actor_step = (
        (3 * DET_ACTOR - 17 * 256)  # actor on s, differentiated
        + 2 * CRITIC  # Q_1 alone on (s, pi(s)), detached parameters: input gradient only
    )
    assert update_flops("td3bc") == 2 * 256 * (critic_step + actor_step)
