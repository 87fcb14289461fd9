import math

import pytest
import torch

from gymwire.trainers.train.losses import (
    AGGREGATIONS,
    KL_KINDS,
    LossConfigError,
    aggregate,
    apply_kl_to_rewards,
    entropy_from_logits,
    kl_loss,
    kl_penalty,
    masked_mean,
    policy_loss,
    token_logprobs,
    value_loss,
)

MASK = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def close(actual, expected) -> bool:
    return torch.allclose(torch.as_tensor(actual, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64), atol=1e-6)


def leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


# ---------------------------------------------------------------- reduction


def test_masked_mean():
    x = torch.tensor([[1.0, 2.0, 100.0, 3.0], [4.0, float("nan"), float("inf"), 0.0], [9.0, 9.0, 9.0, 9.0]])
    assert close(masked_mean(x, MASK), 10 / 4)
    assert close(masked_mean(x, MASK, dim=1), [2.0, 4.0, 0.0])  # a row with no token gives 0
    assert close(masked_mean(x, MASK, dim=0), [2.5, 2.0, 0.0, 3.0])


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token-mean", (1 + 2 + 3 + 4) / 4),
        ("seq-mean-token-mean", (2 + 4) / 2),  # the empty third sequence is left out
        ("seq-mean-token-sum", (6 + 4) / 2),
    ],
)
def test_aggregate_modes_by_hand(mode, expected):
    x = torch.tensor([[1.0, 2.0, 50.0, 3.0], [4.0, 50.0, 50.0, 50.0], [50.0] * 4])
    assert close(aggregate(x, MASK, mode), expected)


def test_unknown_aggregation_lists_the_valid_ones():
    with pytest.raises(LossConfigError, match="seq-mean-token-sum"):
        aggregate(torch.ones(1, 2), torch.ones(1, 2), "sum")


# ---------------------------------------------------------------- policy loss


def test_policy_loss_by_hand_with_clip_higher():
    # ratios e^0.5=1.649 (A=+1, clipped at 1.28), e^-0.5=0.607 (A=-1, clipped at 0.8),
    # e^0.1=1.105 (A=+2, inside), masked token ignored.
    logprobs = leaf([[0.5, -0.5, 0.1, 7.0]])
    old = torch.zeros(1, 4, dtype=torch.float64)
    advantages = torch.tensor([[1.0, -1.0, 2.0, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, stats = policy_loss(logprobs, old, advantages, mask, clip_low=0.2, clip_high=0.28)
    r = [math.exp(0.5), math.exp(-0.5), math.exp(0.1)]
    per_token = [-1.28, max(r[1], 0.8), -2 * r[2]]  # max(-A*r, -A*clip(r))
    assert close(loss, sum(per_token) / 3)
    assert stats["clipfrac"] == pytest.approx(2 / 3)
    assert stats["ratio_mean"] == pytest.approx(sum(r) / 3)
    assert stats["approx_kl"] == pytest.approx(sum(x - 1 - math.log(x) for x in r) / 3)

    loss.backward()
    # clipped tokens and the masked token get no gradient; the inside one gets -A*r/3
    assert close(logprobs.grad, [[0.0, 0.0, -2 * r[2] / 3, 0.0]])


def test_policy_loss_equals_minus_advantage_when_on_policy():
    logprobs = leaf([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]])
    advantages = torch.tensor([[1.0, 2.0, 3.0], [-1.0, -1.0, -1.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    loss, stats = policy_loss(logprobs, logprobs.detach(), advantages, mask)
    assert close(loss, -(1 + 2 + 3 - 1) / 4)
    assert stats == {"clipfrac": 0.0, "approx_kl": 0.0, "ratio_mean": 1.0}
    loss.backward()
    # d/dlogp of -A*exp(logp - old) at ratio 1 is -A; token-mean divides by 4
    assert close(logprobs.grad, [[-0.25, -0.5, -0.75], [0.25, 0.0, 0.0]])


@pytest.mark.parametrize("agg", AGGREGATIONS)
def test_policy_loss_masked_positions_get_zero_gradient_even_when_not_finite(agg):
    logprobs = leaf([[-1.0, float("-inf"), -2.0], [float("nan"), -0.3, float("-inf")]])
    old = torch.tensor([[-1.1, float("-inf"), -1.9], [-1.0, -0.2, float("-inf")]], dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1], [0, 1, 0]])
    advantages = torch.tensor([[0.5, float("nan"), -1.0], [9.0, 2.0, float("inf")]], dtype=torch.float64)
    loss, stats = policy_loss(logprobs, old, advantages, mask, agg=agg)
    loss.backward()
    assert torch.isfinite(loss) and all(math.isfinite(v) for v in stats.values())
    assert torch.all(logprobs.grad[mask == 0] == 0)
    assert torch.all(logprobs.grad[mask == 1] != 0)


def test_policy_loss_rejects_bad_clip():
    with pytest.raises(LossConfigError, match="clip_low"):
        policy_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), clip_low=1.0)


# ---------------------------------------------------------------- KL


def test_kl_kinds_by_hand():
    logprobs = torch.tensor([[math.log(0.5), math.log(0.2)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.4)]])
    d = [math.log(2), math.log(0.5)]  # log p - log q
    assert close(kl_penalty(logprobs, ref, "k1"), [d])
    assert close(kl_penalty(logprobs, ref, "k2"), [[0.5 * x * x for x in d]])
    k3 = [0.5 - 1 - math.log(0.5), 2 - 1 - math.log(2)]  # q/p - 1 - log(q/p)
    assert close(kl_penalty(logprobs, ref, "k3"), [k3])
    assert close(kl_penalty(logprobs, ref, "low_var_kl"), [k3])


def test_low_var_kl_is_bounded_and_k3_is_not():
    logprobs, ref = torch.tensor([[-15.0]]), torch.tensor([[0.0]])
    assert kl_penalty(logprobs, ref, "low_var_kl").item() == 10.0
    assert kl_penalty(logprobs, ref, "k3").item() > 1e5


def test_unknown_kl_kind():
    with pytest.raises(LossConfigError, match="k1, k2, k3, low_var_kl"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "forward")


def test_kl_as_reward_shaping_only_touches_action_tokens_and_has_no_gradient():
    logprobs = leaf([[-1.0, -1.0, -2.0]])
    ref = torch.tensor([[-1.5, -9.0, -1.0]], dtype=torch.float64)
    rewards = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    shaped = apply_kl_to_rewards(rewards, kl_penalty(logprobs, ref, "k1"), torch.tensor([[1, 0, 1]]), beta=0.1)
    assert close(shaped, [[-0.05, 0.0, 1.1]])
    assert not shaped.requires_grad


@pytest.mark.parametrize("kind", KL_KINDS)
def test_kl_loss_gradient_flows_to_action_tokens_only(kind):
    logprobs = leaf([[-1.0, -1.0, -2.0, float("-inf")]])
    ref = torch.tensor([[-1.5, -9.0, -1.0, -1.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1, 0]])
    loss = kl_loss(logprobs, ref, mask, kind=kind)
    assert close(loss, kl_penalty(logprobs, ref, kind)[0, [0, 2]].mean())
    loss.backward()
    assert torch.all(logprobs.grad[0, [1, 3]] == 0) and torch.all(logprobs.grad[0, [0, 2]] != 0)


# ---------------------------------------------------------------- value loss


def test_value_loss_by_hand():
    values = leaf([[1.0, 0.0, 0.5, 3.0]])
    old = torch.tensor([[0.5, 0.5, 0.5, 0.0]], dtype=torch.float64)
    returns = torch.tensor([[2.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = value_loss(values, old, returns, mask, clip=0.2)
    # token 0: v 1.0 -> clipped 0.7: max(1.0, 1.69) = 1.69 (clipped term active)
    # token 1: v 0.0 -> clipped 0.3: max(1.0, 0.49) = 1.0
    # token 2: v 0.5 = old: 0.25
    assert close(loss, 0.5 * (1.69 + 1.0 + 0.25) / 3)
    assert stats["vf_clipfrac"] == pytest.approx(1 / 3)
    loss.backward()
    # token 0 is clipped -> no gradient; token 1: 0.5*2*(0-1)/3; token 2: 0.5*2*0.5/3; masked: 0
    assert close(values.grad, [[0.0, -1 / 3, 1 / 6, 0.0]])


def test_value_loss_without_clip_is_half_squared_error():
    values = leaf([[1.0, 4.0]])
    loss, stats = value_loss(values, torch.zeros(1, 2), torch.tensor([[0.0, 0.0]]), torch.tensor([[1, 0]]), clip=None)
    assert close(loss, 0.5) and stats["vf_clipfrac"] == 0.0


# ---------------------------------------------------------------- logits


def test_token_logprobs_matches_log_softmax_and_its_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (2, 5))
    labels[1, 3] = -100
    ours = token_logprobs(logits, labels)
    reference = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    reference = torch.where(labels >= 0, reference, 0.0)
    assert ours.shape == (2, 5) and close(ours, reference)
    (grad_ours,) = torch.autograd.grad(ours.sum(), logits)
    (grad_reference,) = torch.autograd.grad(reference.sum(), logits)
    assert close(grad_ours, grad_reference)
    assert torch.all(grad_ours[1, 3] == 0)  # the -100 position contributes nothing


def test_token_logprobs_upcasts_half_precision():
    logits = torch.tensor([[[0.0, math.log(3.0)]]], dtype=torch.bfloat16)
    out = token_logprobs(logits, torch.tensor([[1]]))
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(math.log(0.75), abs=1e-2)


def test_entropy_by_hand_and_gradient():
    logits = torch.tensor(
        [[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]], [[math.log(3.0), 0.0, -1e4, -1e4], [0.0, 0.0, 0.0, 0.0]]],
        requires_grad=True,
    )
    entropy = entropy_from_logits(logits)
    three_quarters = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert close(entropy, [[math.log(4), 0.0], [three_quarters, math.log(4)]])
    masked_mean(entropy, torch.tensor([[0, 0], [1, 0]])).backward()
    assert torch.all(logits.grad[0] == 0) and torch.all(logits.grad[1, 1] == 0)
    assert torch.any(logits.grad[1, 0] != 0)


@pytest.mark.parametrize("clip", [0.2, None])
def test_value_loss_masked_positions_get_zero_gradient_even_when_not_finite(clip):
    values = leaf([[0.3, float("nan")], [float("inf"), -0.4]])
    old = torch.tensor([[0.2, float("nan")], [0.0, -0.5]], dtype=torch.float64)
    returns = torch.tensor([[1.0, float("-inf")], [0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 0], [0, 1]])
    loss, stats = value_loss(values, old, returns, mask, clip=clip)
    loss.backward()
    assert torch.isfinite(loss) and math.isfinite(stats["vf_clipfrac"])
    assert torch.all(values.grad[mask == 0] == 0) and torch.all(values.grad[mask == 1] != 0)


def test_kl_penalty_with_mask_is_zero_outside_it():
    logprobs = torch.tensor([[-1.0, float("-inf")]])
    ref = torch.tensor([[-2.0, -1.0]])
    for kind in KL_KINDS:
        out = kl_penalty(logprobs, ref, kind, mask=torch.tensor([[1, 0]]))
        assert out[0, 1] == 0 and out[0, 0] != 0
