import math
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gymwire.trainers.train.advantages import (
    ESTIMATORS,
    GROUP_ESTIMATORS,
    AdvantageInputError,
    compute_advantages,
    last_action_index,
    masked_whiten,
    move_rewards_to_actions,
    place_rewards,
    terminal_token_rewards,
)


def mask_of(*rows: str) -> torch.Tensor:
    """'AAE.' -> [1, 1, 0, 0]: A = action token, E = environment token, . = padding."""
    return torch.tensor([[1.0 if c == "A" else 0.0 for c in row] for row in rows])


def close(actual: torch.Tensor, expected) -> bool:
    return torch.allclose(actual, torch.as_tensor(expected, dtype=actual.dtype), atol=1e-5)


# ---------------------------------------------------------------- reward placement


def test_place_rewards_on_last_action_token_of_each_turn():
    mask = mask_of("AAEEAAE.", "AEAAEE..")
    rewards = place_rewards([[1, 5], [0, 3]], [[0.5, 1.0], [-1.0, 2.0]], 8, action_mask=mask)
    expected = torch.zeros(2, 8)
    expected[0, 1], expected[0, 5], expected[1, 0], expected[1, 3] = 0.5, 1.0, -1.0, 2.0
    assert torch.equal(rewards, expected)


def test_place_rewards_adds_rewards_sharing_an_index():
    assert place_rewards([[2, 2]], [[0.25, 0.5]], 3)[0].tolist() == [0.0, 0.0, 0.75]


@pytest.mark.parametrize(
    "ends, rewards, fragment",
    [
        ([[1]], [[1.0, 2.0]], "1 turn ends but 2 turn rewards"),
        ([[1], [2]], [[1.0]], "2 trajectories"),
        ([[4]], [[1.0]], "outside the response [0, 4)"),
        ([[-1]], [[1.0]], "outside"),
        ([[2]], [[1.0]], "not an action token"),
    ],
)
def test_place_rewards_rejects_bad_turns(ends, rewards, fragment):
    mask = mask_of("AAEE", "AAEE")[: len(ends)]
    with pytest.raises(AdvantageInputError) as info:
        place_rewards(ends, rewards, 4, action_mask=mask if len(ends) == len(rewards) else None)
    assert fragment in str(info.value)


def test_terminal_reward_goes_on_last_action_token_not_last_token():
    mask = mask_of("AAEAEE", "AAAAAA", "EEEEEE")
    rewards = terminal_token_rewards(torch.tensor([1.0, 2.0, 3.0]), mask)
    assert rewards[0].tolist() == [0, 0, 0, 1, 0, 0]
    assert rewards[1].tolist() == [0, 0, 0, 0, 0, 2]
    # No action token: the reward stays in the row (its score) on the final position.
    assert rewards[2].tolist() == [0, 0, 0, 0, 0, 3]
    assert last_action_index(mask).tolist() == [3, 5, -1]


def test_move_rewards_to_actions():
    mask = mask_of("EAAEEAE", "AAAEEEE", "EEEEEEE")
    rewards = torch.tensor(
        [
            [0.5, 0, 0, 1, 0, 0, 2],  # before first action -> first action; env -> preceding action
            [0, 0, 0, 0, 0, 0, 3],
            [0, 1, 0, 0, 0, 0, 0],  # no action token at all: left as is
        ]
    )
    moved = move_rewards_to_actions(rewards, mask)
    assert moved.tolist() == [
        [0, 0.5, 1, 0, 0, 2, 0],
        [0, 0, 3, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0, 0],
    ]


@given(
    data=st.integers(1, 12).flatmap(
        lambda width: st.lists(
            st.lists(st.tuples(st.booleans(), st.floats(-5, 5)), min_size=width, max_size=width), min_size=1, max_size=5
        )
    )
)
def test_moving_rewards_keeps_row_sums_and_leaves_only_action_positions(data):
    mask = torch.tensor([[m for m, _ in row] for row in data])
    rewards = torch.tensor([[r for _, r in row] for row in data], dtype=torch.float64)
    moved = move_rewards_to_actions(rewards, mask)
    assert torch.allclose(moved.sum(1), rewards.sum(1))
    has_action = mask.any(1, keepdim=True)
    assert torch.all(moved[~mask & has_action.expand_as(mask)] == 0)


# ---------------------------------------------------------------- terminal reward on env tokens


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_reward_on_final_env_token_reaches_action_tokens(estimator):
    # Every trajectory ends with environment tokens and the reward sits on the final (masked)
    # token, as in AgentGym-RL's batches. Two groups: a success and a failure in each.
    mask = mask_of("AAEEAAEE", "AEEAAAEE", "AAAEEAEE", "AEAEAEEE")
    scores = torch.tensor([1.0, -1.0, 1.0, -1.0])
    token_rewards = torch.zeros(4, 8)
    token_rewards[:, -1] = scores
    advantages, _ = compute_advantages(
        estimator,
        token_rewards,
        mask,
        group_ids=[0, 0, 1, 1],
        values=torch.zeros(4, 8) if estimator == "gae" else None,
        gamma=0.99,
        lam=0.95,
    )
    actions = mask.bool()
    assert torch.all(advantages[~actions] == 0)
    for row, score in enumerate(scores):
        on_actions = advantages[row][actions[row]]
        assert torch.all(on_actions != 0), (estimator, row, advantages[row])
        assert torch.all(torch.sign(on_actions) == torch.sign(score)), (estimator, row, advantages[row])


# ---------------------------------------------------------------- hand-computed cases


def test_grpo_by_hand():
    # One group with scores 1, 0, 0, 0: mean 0.25, unbiased std 0.5 -> 1.5, -0.5, -0.5, -0.5.
    mask = mask_of("AAE", "AE.", "AAA", "EAE")
    rewards = terminal_token_rewards(torch.tensor([1.0, 0.0, 0.0, 0.0]), mask)
    advantages, returns = compute_advantages("grpo", rewards, mask, group_ids=torch.tensor([7, 7, 7, 7]), norm_eps=0.0)
    assert close(advantages, [[1.5, 1.5, 0], [-0.5, 0, 0], [-0.5, -0.5, -0.5], [0, -0.5, 0]])
    assert close(returns, [[1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])


def test_grpo_score_is_sum_of_turn_rewards_and_groups_are_separate():
    mask = mask_of("AEAE", "AEAE", "AEAE", "AEAE")
    rewards = place_rewards([[0, 2]] * 4, [[1, 1], [0, 0], [0.5, 0], [0.5, 1.5]], 4)
    advantages, _ = compute_advantages("grpo", rewards, mask, group_ids=["a", "a", "b", "b"], norm_eps=0.0)
    # group a: scores 2, 0 -> mean 1, std sqrt(2); group b: 0.5, 2 -> mean 1.25, std 0.75*sqrt(2)
    root2 = math.sqrt(2)
    expected = [1 / root2, -1 / root2, -1 / root2, 1 / root2]
    assert close(advantages[:, 0], expected) and close(advantages[:, 2], expected)


def test_rloo_by_hand():
    mask = mask_of("AE", "AE", "AE", "AE", "AA", "AA")
    rewards = terminal_token_rewards(torch.tensor([1.0, 0.0, 0.0, 0.0, 3.0, 1.0]), mask)
    advantages, _ = compute_advantages("rloo", rewards, mask, group_ids=[0, 0, 0, 0, 1, 1])
    # group 0: baselines 0, 1/3, 1/3, 1/3; group 1: baselines 1 and 3
    assert close(advantages, [[1, 0], [-1 / 3, 0], [-1 / 3, 0], [-1 / 3, 0], [2, 2], [-2, -2]])


def test_reinforce_pp_by_hand():
    # gamma 0.5 over action tokens only: the reward on row 0's final env token moves to index 3;
    # index 1 is one action step earlier than index 3, index 0 two steps.
    mask = mask_of("AAEAE", "AAAE.")
    rewards = torch.zeros(2, 5)
    rewards[0, 4] = 1.0
    rewards[1, 1] = -1.0
    advantages, returns = compute_advantages("reinforce_pp", rewards, mask, gamma=0.5, norm_eps=0.0)
    assert close(returns, [[0.25, 0.5, 0, 1, 0], [-0.5, -1, 0, 0, 0]])
    flat = [0.25, 0.5, 1.0, -0.5, -1.0, 0.0]
    mean, std = statistics.mean(flat), statistics.stdev(flat)
    whitened = [(x - mean) / std for x in flat]
    assert close(advantages, [[*whitened[:2], 0, whitened[2], 0], [*whitened[3:], 0, 0]])


def test_reinforce_pp_baseline_by_hand():
    # group scores 1 and 0 -> mean 0.5; returns become +0.5 / -0.5 on every action token;
    # whitened over [.5, .5, -.5, -.5]: mean 0, unbiased std sqrt(1/3).
    mask = mask_of("AAE", "EAA")
    rewards = torch.tensor([[0, 0, 1.0], [0, 0, 0]])
    advantages, returns = compute_advantages("reinforce_pp_baseline", rewards, mask, group_ids=[3, 3], norm_eps=0.0)
    a = 0.5 / math.sqrt(1 / 3)
    assert close(advantages, [[a, a, 0], [0, -a, -a]])
    assert close(returns, [[1, 1, 0], [0, 0, 0]])


def test_reinforce_pp_baseline_is_discounted_like_the_reward():
    mask = mask_of("AAE", "AAE")
    rewards = torch.tensor([[0, 0, 1.0], [0, 0, 0]])
    one, _ = compute_advantages("reinforce_pp_baseline", rewards, mask, group_ids=[0, 0], gamma=0.5, norm_eps=0.0)
    # pre-whitening: row 0 [0.25, 0.5], row 1 [-0.25, -0.5]
    flat = [0.25, 0.5, -0.25, -0.5]
    std = statistics.stdev(flat)
    assert close(one, [[0.25 / std, 0.5 / std, 0], [-0.25 / std, -0.5 / std, 0]])


def test_gae_by_hand():
    # mask A E A, values 0.5 and 0.2 on the actions, reward 1 after the last action:
    # t=2: delta = 1 + 0 - 0.2 = 0.8 -> A = 0.8
    # t=0: delta = 0 + 0.9*0.2 - 0.5 = -0.32 -> A = -0.32 + 0.9*0.8*0.8 = 0.256
    mask = mask_of("AEAE")
    rewards = torch.tensor([[0, 0, 0, 1.0]])
    values = torch.tensor([[0.5, 99.0, 0.2, 99.0]])  # values on env tokens are ignored
    advantages, returns = compute_advantages("gae", rewards, mask, values=values, gamma=0.9, lam=0.8)
    assert close(advantages, [[0.256, 0, 0.8, 0]])
    assert close(returns, [[0.756, 0, 1.0, 0]])


def test_gae_with_lambda_one_and_zero_values_is_return_to_go():
    mask = mask_of("AAEAA.")
    rewards = torch.tensor([[0.0, 1.0, 0.0, 0.0, 2.0, 0.0]])
    advantages, returns = compute_advantages("gae", rewards, mask, values=torch.zeros(1, 6), gamma=0.5)
    # over action indexes 0, 1, 3, 4: G4 = 2, G3 = 0.5*2, G1 = 1 + 0.5*1, G0 = 0.5*1.5
    assert close(advantages, [[0.75, 1.5, 0, 1.0, 2.0, 0]])
    assert close(returns, advantages)


# ---------------------------------------------------------------- groups and errors


@pytest.mark.parametrize("estimator", sorted(GROUP_ESTIMATORS))
def test_group_estimators_need_group_ids(estimator):
    with pytest.raises(AdvantageInputError, match="pass group_ids"):
        compute_advantages(estimator, torch.ones(2, 3), torch.ones(2, 3))


def test_rloo_refuses_a_group_of_one():
    with pytest.raises(AdvantageInputError, match=r"at least 2 samples per group; trajectories \[2\]"):
        compute_advantages("rloo", torch.ones(3, 2), torch.ones(3, 2), group_ids=[0, 0, 1])


def test_group_of_one_gets_zero_advantage_from_grpo_and_baseline():
    mask = torch.ones(3, 2)
    rewards = terminal_token_rewards(torch.tensor([1.0, 0.0, 5.0]), mask)
    grpo, _ = compute_advantages("grpo", rewards, mask, group_ids=[0, 0, 1])
    assert torch.all(grpo[2] == 0) and torch.all(grpo[0] > 0)
    baseline, _ = compute_advantages("reinforce_pp_baseline", rewards, mask, group_ids=[0, 0, 1])
    # row 2's baselined return is 0 before whitening; whitening shifts it to -mean = 0 as the others cancel
    assert close(baseline[2], [0, 0]) and torch.all(baseline[0] > 0) and torch.all(baseline[1] < 0)


def test_gae_needs_values():
    with pytest.raises(AdvantageInputError, match="values"):
        compute_advantages("gae", torch.ones(1, 2), torch.ones(1, 2))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(estimator="ppo"), "choose one of grpo, rloo"),
        (dict(action_mask=torch.ones(2, 4)), "action_mask has shape (2, 4)"),
        (dict(token_rewards=torch.ones(6)), "(B, T) tensor"),
        (dict(group_ids=[0, 0, 1]), "expected one per trajectory (2)"),
        (dict(group_ids=torch.tensor([[0, 0]])), "group_ids has shape"),
        (dict(gamma=0.0), "gamma=0.0"),
        (dict(lam=1.5), "lam=1.5"),
    ],
)
def test_bad_inputs_are_named(kwargs, fragment):
    arguments = dict(estimator="grpo", token_rewards=torch.ones(2, 3), action_mask=torch.ones(2, 3), group_ids=[0, 0])
    arguments.update(kwargs)
    estimator = arguments.pop("estimator")
    with pytest.raises(AdvantageInputError) as info:
        compute_advantages(estimator, **arguments)
    assert fragment in str(info.value)


def test_grpo_ignores_a_constant_added_to_a_group():
    mask = mask_of("AAE", "AEA", "AAA")
    rewards = terminal_token_rewards(torch.tensor([0.2, 0.9, 0.4]), mask)
    base, _ = compute_advantages("grpo", rewards, mask, group_ids=[0, 0, 0])
    shifted, _ = compute_advantages("grpo", rewards + 10 * terminal_token_rewards(torch.ones(3), mask), mask, group_ids=[0, 0, 0])
    assert close(shifted, base)


def test_advantages_carry_no_graph_and_keep_float64():
    values = torch.zeros(1, 3, requires_grad=True)
    rewards = torch.tensor([[0, 0, 1.0]], dtype=torch.float64)
    advantages, returns = compute_advantages("gae", rewards, torch.ones(1, 3), values=values)
    assert not advantages.requires_grad and not returns.requires_grad
    assert advantages.dtype == torch.float64


def test_masked_whiten():
    values = torch.tensor([[1.0, 100.0, 3.0], [5.0, 7.0, -100.0]])
    mask = torch.tensor([[1, 0, 1], [1, 1, 0]])
    out = masked_whiten(values, mask, eps=0.0)
    std = statistics.stdev([1, 3, 5, 7])
    assert close(out, [[-3 / std, 0, -1 / std], [1 / std, 3 / std, 0]])
    assert torch.equal(masked_whiten(values, torch.zeros(2, 3)), torch.zeros(2, 3))


@settings(max_examples=40, deadline=None)
@given(
    estimator=st.sampled_from(ESTIMATORS),
    rows=st.lists(st.tuples(st.text("AE.", min_size=6, max_size=6), st.floats(-3, 3)), min_size=2, max_size=6),
)
def test_masked_positions_are_always_zero(estimator, rows):
    mask = mask_of(*(r for r, _ in rows))
    rewards = torch.zeros(mask.shape)
    rewards[:, -1] = torch.tensor([s for _, s in rows])
    group_ids = [i // 2 for i in range(len(rows))]
    if estimator == "rloo" and len(rows) % 2:
        group_ids[-1] = group_ids[-2]
    advantages, returns = compute_advantages(
        estimator, rewards, mask, group_ids=group_ids, values=torch.randn(mask.shape), gamma=0.9, lam=0.9
    )
    assert torch.all(advantages[mask == 0] == 0) and torch.all(returns[mask == 0] == 0)
    assert torch.isfinite(advantages).all()
