import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gymwire.trainers.train.horizon import (
    FixedHorizon,
    HorizonConfigError,
    LinearHorizon,
    StagedHorizon,
    horizon_from_config,
)

# ScalingInter-RL schedules from AgentGym-RL's scripts: (stages, stage length, fixed baseline).
PAPER_SCHEDULES = {
    "webarena": ([8, 12, 15], 80, 15),
    "deepsearch": ([5, 8, 10], 100, 5),
    "textcraft": ([10, 20, 30], 100, 30),
    "babyai": ([6, 13, 20], 100, 20),
    "sciworld": ([10, 20, 30], 100, 20),
}


@pytest.mark.parametrize("step, turns", [(1, 6), (99, 6), (100, 6), (101, 13), (200, 13), (201, 20), (10_000, 20)])
def test_staged_boundaries(step, turns):
    assert StagedHorizon([6, 13, 20], 100).turns_at(step) == turns


@pytest.mark.parametrize("env", sorted(PAPER_SCHEDULES))
def test_paper_schedules_stage_k_covers_k_s_plus_1_to_k_plus_1_s(env):
    stages, stage_steps, fixed = PAPER_SCHEDULES[env]
    horizon = horizon_from_config(f"staged:{','.join(map(str, stages))}@{stage_steps}")
    for k, turns in enumerate(stages):
        assert horizon.turns_at(k * stage_steps + 1) == turns
        assert horizon.turns_at((k + 1) * stage_steps) == turns
    assert horizon.turns_at(len(stages) * stage_steps + 1) == stages[-1]
    assert horizon.max_turns == max(stages)
    assert horizon_from_config(fixed).turns_at(1) == horizon_from_config(f"fixed:{fixed}").turns_at(500) == fixed


def test_resume_at_stage_boundary_continues_in_next_stage():
    horizon = StagedHorizon([6, 13, 20], 100)
    uninterrupted = [horizon.turns_at(step) for step in range(1, 301)]

    # Train steps 1..100, checkpoint, then rebuild everything from the checkpoint.
    seen = [horizon.turns_at(step) for step in range(1, 101)]
    checkpoint = json.dumps({"step": 100, "horizon": horizon.to_config()})
    state = json.loads(checkpoint)
    restored = horizon_from_config(state["horizon"])
    seen += [restored.turns_at(step) for step in range(state["step"] + 1, 301)]

    assert restored.turns_at(state["step"] + 1) == 13  # step 101 is stage 1
    assert seen == uninterrupted


@pytest.mark.parametrize("step, turns", [(1, 5), (2, 5), (21, 6), (151, 12), (300, 19), (301, 20), (5000, 20)])
def test_linear_ramp_in_integers(step, turns):
    # 5 + 15 * (step - 1) // 300
    assert LinearHorizon(5, 20, 300).turns_at(step) == turns


def test_linear_may_shrink_and_max_turns_is_the_largest():
    horizon = LinearHorizon(20, 10, 10)
    assert [horizon.turns_at(s) for s in (1, 6, 11, 12)] == [20, 15, 10, 10]
    assert horizon.max_turns == 20


@pytest.mark.parametrize(
    "config, expected",
    [
        (20, FixedHorizon(20)),
        ("20", FixedHorizon(20)),
        ("fixed:20", FixedHorizon(20)),
        ({"kind": "fixed", "turns": 20}, FixedHorizon(20)),
        ("staged:6,13,20@100", StagedHorizon([6, 13, 20], 100)),
        (" Staged: 6, 13, 20 @ 100 ", StagedHorizon([6, 13, 20], 100)),
        ({"kind": "staged", "stages": [6, 13, 20], "stage_steps": 100}, StagedHorizon([6, 13, 20], 100)),
        ({"kind": "staged", "stages": [8, 12, 15], "stage_steps": 80}, StagedHorizon([8, 12, 15], 80)),
        ("linear:5-20@300", LinearHorizon(5, 20, 300)),
        ({"kind": "linear", "start": 5, "end": 20, "ramp_steps": 300}, LinearHorizon(5, 20, 300)),
    ],
)
def test_config_forms(config, expected):
    built = horizon_from_config(config)
    assert type(built) is type(expected)
    assert built.to_config() == expected.to_config()


@pytest.mark.parametrize(
    "horizon", [FixedHorizon(7), StagedHorizon([10, 20, 30], 100), LinearHorizon(5, 20, 300)]
)
def test_round_trips_through_config_and_short_string(horizon):
    assert horizon_from_config(json.loads(json.dumps(horizon.to_config()))) == horizon
    assert horizon_from_config(str(horizon)) == horizon
    assert horizon_from_config(horizon) is horizon


@pytest.mark.parametrize(
    "config, fragment",
    [
        ("staged:6,13,20", "staged:6,13,20@100"),  # missing stage length
        ("banana", "linear:5-20@300"),
        ({"kind": "cosine"}, "'cosine'"),
        ({"turns": 20}, "kind None"),
        ({"kind": "fixed"}, "turns"),
        ({"kind": "fixed", "turns": 20, "stage_steps": 3}, "stage_steps"),
        ({"kind": "staged", "stages": [], "stage_steps": 100}, "non-empty"),
        ({"kind": "staged", "stages": "6,13", "stage_steps": 100}, "non-empty list"),
        ({"kind": "staged", "stages": [6, 0], "stage_steps": 100}, "stages[1]"),
        ("fixed:0", ">= 1"),
        (0, ">= 1"),
        (True, "bool"),
        (2.5, "float"),
        ("linear:5-20@0", "ramp_steps"),
    ],
)
def test_bad_configs_name_the_problem(config, fragment):
    with pytest.raises(HorizonConfigError) as info:
        horizon_from_config(config)
    assert fragment in str(info.value)


@pytest.mark.parametrize("horizon", [FixedHorizon(3), StagedHorizon([1, 2], 5), LinearHorizon(1, 4, 3)])
def test_steps_are_one_based(horizon):
    with pytest.raises(ValueError, match="1-based"):
        horizon.turns_at(0)
    with pytest.raises(TypeError):
        horizon.turns_at(1.0)


@given(
    stages=st.lists(st.integers(1, 50), min_size=1, max_size=6),
    stage_steps=st.integers(1, 200),
    step=st.integers(1, 2000),
)
def test_staged_matches_definition(stages, stage_steps, step):
    horizon = StagedHorizon(stages, stage_steps)
    k = next((k for k in range(len(stages)) if k * stage_steps + 1 <= step <= (k + 1) * stage_steps), len(stages) - 1)
    assert horizon.turns_at(step) == stages[k]
    assert horizon.turns_at(step) <= horizon.max_turns


@given(start=st.integers(1, 60), end=st.integers(1, 60), ramp=st.integers(1, 500), step=st.integers(1, 1000))
def test_linear_stays_between_ends_and_is_monotone(start, end, ramp, step):
    horizon = LinearHorizon(start, end, ramp)
    now, later = horizon.turns_at(step), horizon.turns_at(step + 1)
    assert min(start, end) <= now <= horizon.max_turns
    assert (later - now) * (end - start) >= 0  # never moves against the ramp's direction
    assert horizon.turns_at(ramp + 1) == end
