"""Frame limits of both ends (GW-LIMIT-7, GW-LIMIT-8), browser origins (GW-HANDSHAKE-8) and invalid
hellos (GW-HANDSHAKE-9), as rules of the sans-I/O connection objects: no sockets."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgpack
import pydantic
import pytest

from gymwire.protocol import (
    ClientConnection,
    ClientSessionMachine,
    Codec,
    EnvInfo,
    ErrorCode,
    Hello,
    Limits,
    Observation,
    PeerInfo,
    ServerConnection,
    origin_refusal,
    server_capabilities,
)
from gymwire.protocol.connection import CLOSE_BAD_HELLO
from gymwire.protocol.messages import Error, Opened, Ping, Pong, StepBatchResult, StepResult, TaskRef, Welcome

LIMITS = Limits(max_frame_bytes=1 << 20)
ENVS = {"guess": EnvInfo(name="guess")}


def server(encoding: str = "msgpack") -> ServerConnection:
    return ServerConnection(
        Codec(encoding, max_frame_bytes=LIMITS.max_frame_bytes),
        now=0.0,
        limits=LIMITS,
        capabilities=server_capabilities(auth=False),
        server=PeerInfo(name="test"),
        envs=ENVS,
    )


def welcomed(encoding: str = "msgpack", **hello: object) -> ServerConnection:
    conn = server(encoding)
    assert conn.receive_frame(conn.codec.encode(Hello(id=1, **hello)), 0.0) is None
    (frame,) = conn.frames_to_send()
    assert isinstance(conn.codec.decode(frame), Welcome)
    return conn


def step_result(text: str, session: str = "s1", request_id: int = 7) -> StepResult:
    return StepResult(id=request_id, session=session, seq=1, observation=Observation(text=text))


# ----------------------------------------------------------------------------- server: GW-LIMIT-7


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
def test_an_answer_over_the_clients_limit_becomes_answer_too_large_with_id_and_session(encoding):
    conn = welcomed(encoding, max_frame_bytes=4096)
    small = conn.codec.decode(conn.encode(step_result("x" * 1000)))
    assert isinstance(small, StepResult)
    refused = conn.codec.decode(conn.encode(step_result("x" * 5000)))
    assert isinstance(refused, Error)
    assert (refused.name, refused.id, refused.session) == ("ANSWER_TOO_LARGE", 7, "s1")
    assert "max_frame_bytes=4096" in refused.message and "resume" in refused.message


def test_json_text_is_measured_in_utf8_bytes_not_characters():
    conn = welcomed("json", max_frame_bytes=4096)
    # 1,500 characters of 3 UTF-8 bytes each: 4,500 bytes, over the limit though 1,500 characters are not.
    refused = conn.codec.decode(conn.encode(step_result("€" * 1500)))
    assert isinstance(refused, Error) and refused.name == "ANSWER_TOO_LARGE"


def test_without_a_limit_in_hello_the_server_assumes_its_own():
    conn = welcomed()
    assert conn.peer_max_frame_bytes == LIMITS.max_frame_bytes
    refused = conn.codec.decode(conn.encode(step_result("x" * (LIMITS.max_frame_bytes + 1))))
    assert isinstance(refused, Error) and refused.name == "ANSWER_TOO_LARGE"


def test_a_hello_limit_below_the_minimum_is_bad_frame():
    conn = server()
    frame = conn.codec.encode_object({"type": "hello", "id": 1, "version": "1.0", "max_frame_bytes": 100})
    assert conn.receive_frame(frame, 0.0) is None
    (answer,) = [conn.codec.decode(f) for f in conn.frames_to_send()]
    assert isinstance(answer, Error) and answer.name == "BAD_FRAME"


def test_a_batch_answer_loses_only_its_largest_results():
    conn = welcomed(max_frame_bytes=8192)
    results = [step_result("a" * 3000, "s1", 9), step_result("b" * 6000, "s2", 9), step_result("c" * 100, "s3", 9)]
    answer = conn.codec.decode(conn.encode(StepBatchResult(id=9, results=results)))
    assert isinstance(answer, StepBatchResult)
    first, second, third = answer.results
    assert isinstance(first, StepResult) and first.observation.text == "a" * 3000
    assert isinstance(second, Error) and (second.name, second.session, second.id) == ("ANSWER_TOO_LARGE", "s2", 9)
    assert isinstance(third, StepResult) and third.observation.text == "c" * 100


def test_an_opened_too_large_says_the_session_is_closed_and_names_none():
    conn = welcomed(max_frame_bytes=1024)
    opened = Opened(id=3, session="s9", resume_token="t", env="guess", max_turns=5, observation=Observation(text="x" * 4000))
    assert conn.oversize(opened) is not None
    error = conn.answer_too_large(opened, 4100)
    assert error.session is None and "closed" in error.message
    assert conn.oversize(opened.model_copy(update={"observation": Observation(text="ok")})) is None


# ----------------------------------------------------------------------------- client: GW-LIMIT-8


def client(max_frame_bytes: int, encoding: str = "msgpack") -> ClientConnection:
    conn: ClientConnection = ClientConnection(Codec(encoding, max_frame_bytes=max_frame_bytes), name="t", url="ws://x")
    conn.welcome = Welcome(id=1, version="1.0", server=PeerInfo(name="s"), capabilities=["heartbeat"], limits=Limits())
    return conn


def test_the_client_tells_its_limit_in_hello():
    conn = client(2048)
    hello = conn.codec.decode(conn.hello())
    assert isinstance(hello, Hello) and hello.max_frame_bytes == 2048


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
def test_a_frame_too_large_for_the_client_fails_the_request_it_answers(encoding):
    conn = client(4096, encoding)
    conn.pending[7] = "the step"
    conn.pending[8] = "another"
    big = Codec(encoding).encode(step_result("x" * 10_000))
    handle, answer = conn.receive_frame(big, 0.0)
    assert handle == "the step"
    assert answer.code is ErrorCode.ANSWER_TOO_LARGE and answer.request_id == 7
    assert list(conn.pending) == [8], "the other request still waits"


def test_the_id_is_read_wherever_it_sits_in_the_top_map():
    conn = client(1024)
    conn.pending[42] = "h"
    # `id` after a large value, and an `id` nested inside a value that must not be taken for it.
    frame = msgpack.packb({"type": "step_result", "observation": {"text": "x" * 5000, "data": {"id": 1}}, "id": 42})
    handle, answer = conn.receive_frame(frame, 0.0)
    assert handle == "h" and answer.code is ErrorCode.ANSWER_TOO_LARGE


def test_an_oversized_frame_without_a_readable_id_is_logged_not_matched():
    conn = client(1024)
    conn.pending[1] = "h"
    assert conn.receive_frame(msgpack.packb({"type": "notice", "message": "x" * 5000}), 0.0) is None
    assert conn.receive_frame(b"\x81" + b"\xff" * 5000, 0.0) is None  # garbage: no id to read
    assert list(conn.pending) == [1]
    assert all(m.name == "ANSWER_TOO_LARGE" for m in conn.unmatched)


def test_answer_too_large_leaves_the_session_uncertain_until_resumed():
    machine = ClientSessionMachine()
    machine.take_seq()
    machine.refused(ErrorCode.ANSWER_TOO_LARGE)
    assert machine.uncertain, "the step ran: the next request must learn where the session stands"


# ----------------------------------------------------------------------------- origins, hellos, tasks


@pytest.mark.parametrize(
    ("origins", "allowed", "refused"),
    [
        ([], [], False),  # not a browser
        (["http://127.0.0.1:9000"], [], True),
        (["null"], [], True),  # sandboxed iframes and file:// pages
        (["https://lab.example"], ["https://lab.example"], False),
        (["https://lab.example:8443"], ["https://lab.example"], True),  # another port is another origin
        (["https://lab.example", "https://evil.example"], ["https://lab.example"], True),  # two Origin headers
        (["https://anything.example"], ["*"], False),
    ],
)
def test_origin_refusal(origins, allowed, refused):
    reason = origin_refusal(origins, allowed)
    assert (reason is not None) == refused
    if refused:
        assert reason.startswith("FORBIDDEN_ORIGIN") and "--allow-origin" in reason


@pytest.mark.parametrize("token", [12345, ["a"], {"t": 1}, True])
def test_a_hello_with_a_token_that_is_not_text_is_bad_frame_and_closes(token):
    conn = server()
    assert conn.receive_frame(conn.codec.encode_object({"type": "hello", "id": 4, "version": "1.0", "token": token}), 0.0) is None
    (answer,) = [conn.codec.decode(f) for f in conn.frames_to_send()]
    assert isinstance(answer, Error) and (answer.name, answer.id) == ("BAD_FRAME", 4)
    assert conn.close_with == CLOSE_BAD_HELLO and not conn.welcomed


def test_other_bad_frames_before_hello_keep_the_connection():
    conn = server()
    conn.receive_frame(conn.codec.encode_object({"type": "ping", "id": "x"}), 0.0)
    conn.receive_frame(b"\xc1", 0.0)
    assert conn.close_with is None
    conn.receive_frame(conn.codec.encode(Ping(id=2)), 0.0)
    answers = [conn.codec.decode(f) for f in conn.frames_to_send()]
    assert [a.name for a in answers] == ["BAD_FRAME", "BAD_FRAME", "HANDSHAKE_REQUIRED"]
    assert not any(isinstance(a, Pong) for a in answers)


@pytest.mark.parametrize("task", [{"split": "test"}, {"index": 3}, {"split": "test", "index": None}])
def test_split_and_index_go_together_in_model_and_server(task):
    with pytest.raises(pydantic.ValidationError):
        TaskRef.model_validate(task)
    conn = welcomed()
    conn.receive_frame(conn.codec.encode_object({"type": "open", "id": 5, "env": "guess", "task": task}), 0.0)
    (answer,) = [conn.codec.decode(f) for f in conn.frames_to_send()]
    assert isinstance(answer, Error) and answer.name == "BAD_FRAME"
    schema = json.loads((Path(__file__).resolve().parents[2] / "spec" / "schemas" / "open.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert not validator.is_valid({"type": "open", "id": 5, "env": "guess", "task": task})
    assert validator.is_valid({"type": "open", "id": 5, "env": "guess", "task": {"split": "test", "index": 0}})
    assert validator.is_valid({"type": "open", "id": 5, "env": "guess", "task": {"seed": 3}})
