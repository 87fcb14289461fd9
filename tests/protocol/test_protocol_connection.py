"""The per-connection rules of both ends, without sockets: frames and a clock in, frames and events out."""

from __future__ import annotations

import msgpack
import pytest

from gymwire.protocol import (
    ClientConnection,
    ClientSessionMachine,
    Codec,
    EnvInfo,
    ErrorCode,
    Heartbeat,
    Hello,
    Image,
    Limits,
    Liveness,
    MissingCapability,
    Observation,
    PeerInfo,
    ProtocolError,
    Resumed,
    ServerConnection,
    ServerTimer,
    server_capabilities,
)
from gymwire.protocol.messages import (
    BatchStep,
    Cancel,
    DescribeEnv,
    Error,
    ListEnvs,
    Notice,
    Ping,
    Pong,
    Step,
    StepBatch,
    StepResult,
    Welcome,
)

CODEC = Codec("msgpack")
LIMITS = Limits(heartbeat_interval_ms=1000, max_inflight=2, max_frame_bytes=600)
ENVS = {"guess": EnvInfo(name="guess")}


def server(capabilities: list[str] | None = None, token: str | None = None, now: float = 0.0) -> ServerConnection:
    return ServerConnection(
        CODEC,
        now=now,
        limits=LIMITS,
        capabilities=server_capabilities(auth=token is not None) if capabilities is None else capabilities,
        server=PeerInfo(name="test"),
        envs=ENVS,
        token=token,
    )


def answers(conn: ServerConnection | ClientConnection) -> list[object]:
    return [CODEC.decode(frame) for frame in conn.frames_to_send()]


def welcomed_server(**kwargs: object) -> ServerConnection:
    conn = server(**kwargs)  # type: ignore[arg-type]
    assert conn.receive_frame(CODEC.encode(Hello(id=1, capabilities=["heartbeat"])), 0.0) is None
    (welcome,) = answers(conn)
    assert isinstance(welcome, Welcome)
    return conn


def error_of(conn: ServerConnection) -> Error:
    (error,) = answers(conn)
    assert isinstance(error, Error), error
    return error


# ----------------------------------------------------------------------------- server: handshake


def test_requests_before_the_welcome_are_refused_and_not_passed_on():
    conn = server()
    assert conn.receive_frame(CODEC.encode(ListEnvs(id=7)), 0.0) is None
    error = error_of(conn)
    assert (error.name, error.id) == ("HANDSHAKE_REQUIRED", 7)
    assert conn.receive_frame(CODEC.encode(Step(id=8, session="s", seq=1, action="a")), 0.0) is None
    assert error_of(conn).name == "HANDSHAKE_REQUIRED"
    assert conn.receive_frame(CODEC.encode(Pong(id=3)), 0.0) is None and answers(conn) == []


def test_hello_is_answered_with_the_welcome_once():
    conn = server()
    conn.receive_frame(CODEC.encode(Hello(id=1, version="1.7")), 0.0)
    (welcome,) = answers(conn)
    assert isinstance(welcome, Welcome) and welcome.id == 1 and welcome.version == "1.0"
    assert welcome.envs == ["guess"] and welcome.limits == LIMITS and "auth" not in welcome.capabilities
    conn.receive_frame(CODEC.encode(Hello(id=2)), 0.0)
    assert error_of(conn).name == "INVALID_STATE" and conn.close_with is None


@pytest.mark.parametrize(
    "hello, token, code, close",
    [
        (Hello(id=1, version="2.0"), None, "UNSUPPORTED_VERSION", 1002),
        (Hello(id=1, token="wrong"), "right", "UNAUTHORIZED", 1008),
        (Hello(id=1), "right", "UNAUTHORIZED", 1008),
    ],
)
def test_a_failed_handshake_is_answered_then_closed(hello, token, code, close):
    conn = server(token=token)
    conn.receive_frame(CODEC.encode(hello), 0.0)
    error = error_of(conn)
    assert (error.name, error.id) == (code, 1) and conn.close_with[0] == close and not conn.welcomed


def test_the_right_token_is_welcomed_and_auth_is_announced():
    conn = server(token="right")
    conn.receive_frame(CODEC.encode(Hello(id=1, token="right")), 0.0)
    (welcome,) = answers(conn)
    assert isinstance(welcome, Welcome) and "auth" in welcome.capabilities


# ----------------------------------------------------------------------------- server: requests


def test_what_the_connection_answers_itself_and_what_it_passes_on():
    conn = welcomed_server()
    assert conn.receive_frame(CODEC.encode(Ping(id=5)), 0.0) is None
    assert answers(conn) == [Pong(id=5)]
    conn.receive_frame(CODEC.encode(ListEnvs(id=6)), 0.0)
    assert [env.name for env in answers(conn)[0].envs] == ["guess"]  # type: ignore[attr-defined]
    conn.receive_frame(CODEC.encode(DescribeEnv(id=7, env="nope")), 0.0)
    assert (error := error_of(conn)).name == "UNKNOWN_ENV" and error.id == 7
    step = Step(id=9, session="s", seq=1, action="go")
    assert conn.receive_frame(CODEC.encode(step), 0.0) == step and answers(conn) == []
    conn.receive_frame(CODEC.encode(Welcome(id=10, version="1.0", server=PeerInfo(name="x"), capabilities=[], limits=LIMITS)), 0.0)
    assert error_of(conn).name == "UNKNOWN_MESSAGE"


def test_undecodable_frames_are_bad_frame():
    conn = welcomed_server()
    assert conn.receive_frame(b"\xc1", 0.0) is None
    assert error_of(conn).name == "BAD_FRAME"
    assert conn.receive_frame(msgpack.packb({"type": "step", "id": 4}), 0.0) is None
    assert (error := error_of(conn)).name == "BAD_FRAME" and error.id == 4


def test_one_id_one_answer_and_max_inflight():
    conn = welcomed_server()
    conn.track(1, "first")
    conn.receive_frame(CODEC.encode(Ping(id=1)), 0.0)  # any request reusing an id in flight
    assert (error := error_of(conn)).name == "INVALID_STATE" and error.id == 1
    conn.track(2, "second")
    with pytest.raises(ProtocolError) as full:
        conn.track(3, "third")
    assert full.value.code is ErrorCode.CAPACITY and full.value.retry_after_ms
    assert not conn.untrack(1, "another") and conn.untrack(1, "first") and 1 not in conn.inflight


def test_a_server_refuses_requests_of_capabilities_it_does_not_offer():
    conn = welcomed_server(capabilities=["resume", "heartbeat"])
    batch = StepBatch(id=3, steps=[BatchStep(session="s", seq=1, action="a")])
    for message in (batch, Cancel(id=4, target=3), Step(id=5, session="s", seq=1, action="a", deadline_ms=10)):
        assert conn.receive_frame(CODEC.encode(message), 0.0) is None
        assert error_of(conn).name == "UNKNOWN_MESSAGE"


def test_images_go_only_to_clients_that_asked():
    observation = Observation(text="x", images=[Image(data=b"png")])
    result = StepResult(id=1, session="s", seq=1, observation=observation)
    plain = welcomed_server()
    assert CODEC.decode(plain.encode(result)).observation.images is None  # type: ignore[attr-defined]
    asking = server()
    asking.receive_frame(CODEC.encode(Hello(id=1, capabilities=["images"])), 0.0)
    assert CODEC.decode(asking.encode(result)).observation.images[0].data == b"png"  # type: ignore[attr-defined]


def test_an_unencodable_answer_becomes_internal():
    conn = welcomed_server()
    reply = CODEC.decode(conn.encode(StepResult(id=4, session="s", seq=1, observation=Observation(text="x"), info={"f": object()})))
    assert isinstance(reply, Error) and (reply.name, reply.id, reply.session) == ("INTERNAL", 4, "s")


def test_errors_sent_are_reported_for_metrics():
    names: list[str] = []
    conn = ServerConnection(CODEC, now=0.0, limits=LIMITS, capabilities=[], server=PeerInfo(name="t"), envs=ENVS, on_error=names.append)
    conn.receive_frame(CODEC.encode(ListEnvs(id=1)), 0.0)
    conn.receive_frame(b"junk", 0.0)
    assert names == ["HANDSHAKE_REQUIRED", "BAD_FRAME"]


# ----------------------------------------------------------------------------- timers


def test_no_hello_within_an_interval_closes():
    conn = server()
    assert conn.check_timers(0.9) is ServerTimer.NOTHING
    assert conn.check_timers(1.1) is ServerTimer.NO_HELLO


def test_server_heartbeat_pings_after_an_interval_and_drops_after_three():
    conn = welcomed_server()
    assert conn.check_every == 0.5
    assert conn.check_timers(0.9) is ServerTimer.NOTHING
    assert conn.check_timers(1.1) is ServerTimer.PING
    assert isinstance(ping := CODEC.decode(conn.ping()), Ping) and ping.id > 2**52  # counts down from 2^53-1
    conn.receive_frame(CODEC.encode(Pong(id=ping.id)), 1.2)  # anything heard resets the silence
    assert conn.check_timers(2.1) is ServerTimer.NOTHING
    assert conn.check_timers(4.3) is ServerTimer.HALF_OPEN


def test_without_heartbeat_silence_is_no_sign_of_death():
    conn = welcomed_server(capabilities=["batch"])
    assert conn.check_timers(100.0) is ServerTimer.NOTHING


def test_both_ends_follow_one_heartbeat_policy():
    client = ClientConnection(CODEC, name="c", url="ws://x")
    welcome = Welcome(id=1, version="1.0", server=PeerInfo(name="s"), capabilities=["heartbeat"], limits=LIMITS)
    client.welcomed(CODEC.encode(welcome), 0.0)
    policy = Heartbeat(LIMITS.heartbeat_interval_ms, 0.0)
    for now in (0.4, 1.01, 2.9, 3.01):
        assert client.check_timers(now) is policy.check(now)
    assert [policy.check(t) for t in (0.4, 1.01, 3.01)] == [Liveness.ALIVE, Liveness.PING, Liveness.HALF_OPEN]


# ----------------------------------------------------------------------------- client


def welcomed_client(capabilities: list[str]) -> ClientConnection:
    client: ClientConnection[str] = ClientConnection(CODEC, name="c", url="ws://x")
    hello = CODEC.decode(client.hello())
    assert isinstance(hello, Hello) and {"batch", "resume", "heartbeat"} <= set(hello.capabilities)
    welcome = Welcome(id=hello.id, version="1.0", server=PeerInfo(name="s"), capabilities=capabilities, limits=LIMITS)
    client.welcomed(CODEC.encode(welcome), 0.0)
    return client


def test_a_client_refuses_a_failed_handshake():
    client = ClientConnection(CODEC, name="c", url="ws://x")
    client.hello()
    error = Error(id=1, code=30, name="UNAUTHORIZED", message="no", retryable=False)
    with pytest.raises(ProtocolError) as info:
        client.welcomed(CODEC.encode(error), 0.0)
    assert info.value.code is ErrorCode.UNAUTHORIZED and client.welcome is None
    with pytest.raises(ProtocolError, match="expected welcome"):
        client.welcomed(CODEC.encode(Pong(id=1)), 0.0)


def test_a_client_uses_only_what_the_welcome_lists():
    client = welcomed_client(["resume"])
    with pytest.raises(MissingCapability) as info:
        client.request_frame(StepBatch(id=2, steps=[BatchStep(session="s", seq=1, action="a")]))
    assert info.value.capability == "batch" and "one by one" in str(info.value)
    with pytest.raises(MissingCapability, match="without deadline_ms"):
        client.request_frame(Step(id=3, session="s", seq=1, action="a", deadline_ms=5))
    assert client.request_frame(Step(id=4, session="s", seq=1, action="a"))
    assert client.check_timers(1000.0) is Liveness.ALIVE  # no heartbeat in the welcome: nothing to watch


def test_a_client_refuses_a_frame_the_server_would_refuse():
    client = welcomed_client([])
    with pytest.raises(ProtocolError) as info:
        client.request_frame(Step(id=5, session="s", seq=1, action="x" * 700))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE and info.value.request_id == 5


def test_a_client_matches_answers_by_id():
    client = welcomed_client(["heartbeat"])
    client.pending.update({1: "one", 2: "two", 3: "three"})
    result = StepResult(id=2, session="s", seq=1, observation=Observation(text="x"))
    assert client.receive_frame(CODEC.encode(result), 0.0) == ("two", result)
    error = Error(id=1, code=21, name="TIMEOUT", message="late", retryable=True, session="s")
    handle, answer = client.receive_frame(CODEC.encode(error), 0.0)  # type: ignore[misc]
    assert handle == "one" and isinstance(answer, ProtocolError) and answer.code is ErrorCode.TIMEOUT
    handle, answer = client.receive_frame(msgpack.packb({"type": "step_result", "id": 3}), 0.0)  # type: ignore[misc]
    assert handle == "three" and answer.code is ErrorCode.BAD_FRAME  # type: ignore[union-attr]
    assert client.pending == {} and client.receive_frame(CODEC.encode(result), 0.0) is None


def test_a_client_answers_pings_and_notes_a_drain():
    client = welcomed_client(["heartbeat"])
    assert client.receive_frame(CODEC.encode(Ping(id=99)), 5.0) is None
    assert answers(client) == [Pong(id=99)]
    assert client.check_timers(5.9) is Liveness.ALIVE  # the ping was heard
    client.receive_frame(CODEC.encode(Notice(kind="drain")), 6.0)
    assert client.draining and isinstance(client.unmatched[-1], Notice)


def test_at_goodbye_what_is_pending_fails_draining_at_once():
    client = welcomed_client(["heartbeat"])
    client.pending.update({4: "four", 5: "five"})
    assert client.receive_frame(CODEC.encode(Notice(kind="goodbye")), 0.0) is None
    assert client.said_goodbye
    failed = client.unanswered_at_goodbye()
    assert [(handle, error.code, error.request_id) for handle, error in failed] == [
        ("four", ErrorCode.DRAINING, 4), ("five", ErrorCode.DRAINING, 5)
    ]
    assert client.pending == {} and not client.said_goodbye


# ----------------------------------------------------------------------------- client sessions


def test_a_refused_request_gives_its_seq_back_and_an_uncertain_one_waits_for_resume():
    machine = ClientSessionMachine()
    assert (machine.take_seq(), machine.take_seq()) == (1, 2)
    machine.step_answered(StepResult(id=1, session="s", seq=1, observation=Observation(text="x")))
    machine.refused(ErrorCode.EPISODE_FINISHED)
    assert (machine.seq, machine.turns, machine.uncertain) == (1, 1, False)
    assert machine.take_seq() == 2
    machine.refused(ErrorCode.TIMEOUT)
    assert machine.uncertain and machine.seq == 2
    machine.resumed(Resumed(id=3, session="s", state="finished", last_seq=2, turns=2, max_turns=2))
    assert (machine.seq, machine.turns, machine.done, machine.uncertain) == (2, 2, True, False)
    assert machine.take_seq() == 3
    machine.reset_answered(3)
    assert (machine.seq, machine.turns, machine.done) == (3, 0, False)
