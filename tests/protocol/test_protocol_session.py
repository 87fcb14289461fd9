"""The per-session state machine: every illegal transition gives its error code and changes nothing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gymwire.protocol import Decision, ErrorCode, ProtocolError, SessionMachine, SessionState

REPLY = object()  # what the runtime would record as the answer


def machine_in(state: str, max_turns: int = 3) -> SessionMachine:
    """A machine driven to `state` the way a server drives it. Its last answered seq is 0 when
    opened, else 1 (the reset) or 2 (the step that finished the episode)."""
    machine = SessionMachine("s-1", max_turns)
    if state == "opened":
        return machine
    machine.reset_done(1, REPLY)
    if state == "finished":
        assert machine.check_step(2) is Decision.EXECUTE
        machine.step_done(1.0, terminated=True, truncated=False)
        machine.record(2, REPLY)
    elif state == "crashed":
        machine.crashed()
    elif state == "closed":
        machine.check_close()
        machine.closed()
    assert machine.state.value == state
    return machine


def seq_for(machine: SessionMachine, which: str) -> int:
    return {"next": machine.last_seq + 1, "last": machine.last_seq, "ahead": machine.last_seq + 2,
            "behind": machine.last_seq - 1, "far": machine.last_seq + 1000}[which]


def attempt(machine: SessionMachine, request: str, seq: int) -> object:
    if request == "reset":
        return machine.check_reset(seq)
    if request == "step":
        return machine.check_step(seq)
    return machine.check_close()


ILLEGAL = [
    # state, request, which seq, expected error
    ("opened", "step", "next", ErrorCode.INVALID_STATE),
    ("opened", "step", "last", ErrorCode.BAD_SEQUENCE),  # seq 0 is the open: nothing to replay
    ("opened", "reset", "last", ErrorCode.BAD_SEQUENCE),
    ("opened", "reset", "ahead", ErrorCode.BAD_SEQUENCE),
    ("opened", "step", "ahead", ErrorCode.BAD_SEQUENCE),
    ("running", "step", "ahead", ErrorCode.BAD_SEQUENCE),
    ("running", "step", "behind", ErrorCode.BAD_SEQUENCE),
    ("running", "step", "far", ErrorCode.BAD_SEQUENCE),
    ("running", "reset", "ahead", ErrorCode.BAD_SEQUENCE),
    ("running", "reset", "behind", ErrorCode.BAD_SEQUENCE),
    ("finished", "step", "next", ErrorCode.EPISODE_FINISHED),
    ("finished", "step", "ahead", ErrorCode.BAD_SEQUENCE),
    ("finished", "step", "behind", ErrorCode.BAD_SEQUENCE),
    ("finished", "reset", "ahead", ErrorCode.BAD_SEQUENCE),
    ("crashed", "step", "next", ErrorCode.ENV_CRASHED),
    ("crashed", "step", "last", ErrorCode.ENV_CRASHED),
    ("crashed", "reset", "next", ErrorCode.ENV_CRASHED),
    ("crashed", "reset", "last", ErrorCode.ENV_CRASHED),
    ("closed", "step", "next", ErrorCode.UNKNOWN_SESSION),
    ("closed", "step", "last", ErrorCode.UNKNOWN_SESSION),
    ("closed", "reset", "next", ErrorCode.UNKNOWN_SESSION),
    ("closed", "close", "next", ErrorCode.UNKNOWN_SESSION),
]


@pytest.mark.parametrize(("state", "kind", "which", "code"), ILLEGAL, ids=lambda v: getattr(v, "name", str(v)))
def test_illegal_transitions_give_their_error_code_and_change_nothing(state, kind, which, code):
    machine = machine_in(state)
    before = (machine.state, machine.last_seq, machine.turns, machine.total_reward, machine.last_reply)
    seq = seq_for(machine, which)
    with pytest.raises(ProtocolError) as caught:
        attempt(machine, kind, seq)
    assert caught.value.code is code
    assert caught.value.session == "s-1"
    assert (machine.state, machine.last_seq, machine.turns, machine.total_reward, machine.last_reply) == before
    if code is ErrorCode.BAD_SEQUENCE:
        assert f"send {machine.last_seq + 1}" in caught.value.message


LEGAL = [
    ("opened", "reset", "next", Decision.EXECUTE),
    ("running", "reset", "next", Decision.EXECUTE),
    ("running", "reset", "last", Decision.REPLAY),
    ("running", "step", "next", Decision.EXECUTE),
    ("running", "step", "last", Decision.REPLAY),
    ("finished", "step", "last", Decision.REPLAY),  # the final step, re-sent after a reconnect
    ("finished", "reset", "last", Decision.REPLAY),
    ("finished", "reset", "next", Decision.EXECUTE),
]


@pytest.mark.parametrize(("state", "kind", "which", "decision"), LEGAL, ids=str)
def test_legal_requests_are_executed_or_replayed(state, kind, which, decision):
    machine = machine_in(state)
    assert attempt(machine, kind, seq_for(machine, which)) is decision


@pytest.mark.parametrize("state", ["opened", "running", "finished", "crashed"])
def test_close_is_legal_in_every_live_state_and_forgets_the_record(state):
    machine = machine_in(state)
    machine.check_close()
    machine.closed()
    assert machine.state is SessionState.CLOSED and machine.last_reply is None


def test_open_with_reset_starts_running_and_without_stays_opened():
    with_reset, without = SessionMachine("a", 3), SessionMachine("b", 3)
    with_reset.opened(did_reset=True)
    without.opened(did_reset=False)
    assert with_reset.state is SessionState.RUNNING and without.state is SessionState.OPENED
    assert with_reset.check_step(1) is Decision.EXECUTE


def test_the_turn_limit_truncates_the_episode():
    machine = machine_in("running", max_turns=3)
    results = []
    for seq in (2, 3, 4):
        assert machine.check_step(seq) is Decision.EXECUTE
        results.append(machine.step_done(0.5, terminated=False, truncated=False))
        machine.record(seq, REPLY)
    assert results == [False, False, True]
    assert machine.state is SessionState.FINISHED and machine.turns == 3 and machine.total_reward == 1.5


def test_termination_on_the_last_allowed_turn_is_not_truncation():
    machine = machine_in("running", max_turns=1)
    assert machine.step_done(1.0, terminated=True, truncated=False) is False
    assert machine.state is SessionState.FINISHED


def test_environment_truncation_before_the_limit_finishes_the_episode():
    machine = machine_in("running", max_turns=10)
    assert machine.step_done(0.0, terminated=False, truncated=True) is True
    assert machine.state is SessionState.FINISHED


def test_reset_starts_a_new_episode_from_zero():
    machine = machine_in("finished")
    assert machine.check_reset(3) is Decision.EXECUTE
    machine.reset_done(3, REPLY)
    assert (machine.state, machine.turns, machine.total_reward, machine.last_seq) == (SessionState.RUNNING, 0, 0.0, 3)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=2**53), st.sampled_from(["reset", "step"]))
def test_any_seq_but_the_next_or_the_last_is_bad_sequence(seq, kind):
    machine = machine_in("running")
    if seq in (machine.last_seq, machine.last_seq + 1):
        assert attempt(machine, kind, seq) in (Decision.EXECUTE, Decision.REPLAY)
    else:
        with pytest.raises(ProtocolError) as caught:
            attempt(machine, kind, seq)
        assert caught.value.code is ErrorCode.BAD_SEQUENCE


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["reset", "step"]), st.sampled_from(["next", "last", "ahead"]),
                          st.booleans()), max_size=30))
def test_random_request_sequences_never_execute_a_seq_twice(requests):
    machine = machine_in("running", max_turns=4)
    executed = [1]
    for request, which, ends in requests:
        seq = seq_for(machine, which)
        try:
            decision = attempt(machine, request, seq)
        except ProtocolError as error:
            assert error.code in (ErrorCode.BAD_SEQUENCE, ErrorCode.EPISODE_FINISHED)
            continue
        if decision is Decision.REPLAY:
            assert seq == executed[-1]
            continue
        executed.append(seq)
        if request == "reset":
            machine.reset_done(seq, REPLY)
        else:
            machine.step_done(0.0, terminated=ends, truncated=False)
            machine.record(seq, REPLY)
    assert executed == list(range(1, len(executed) + 1))
    assert machine.turns <= machine.max_turns


def test_bad_sequence_does_not_quote_a_huge_seq_whole():
    """GW-ERROR-8: JSON carries integers of thousands of digits; the error names the seq briefly."""
    machine = SessionMachine("s", max_turns=5)
    machine.opened(did_reset=True)
    with pytest.raises(ProtocolError) as info:
        machine.check_step(10**3999)
    assert info.value.code is ErrorCode.BAD_SEQUENCE
    assert len(info.value.message) < 120 and "4000 digits" in info.value.message and "send 1" in info.value.message
