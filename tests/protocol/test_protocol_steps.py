"""The step as plain data (protocol/steps.py) against the model way it stands in for.

`plain_step` takes exactly the steps without a deadline the `Step` model takes, with the same
fields; a step's answer built as its wire map encodes to the same bytes as its `StepResult` model,
in both codecs, and the server's rules hand the same requests on either way.
"""

from __future__ import annotations

import dataclasses
import math

import pydantic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gymwire.protocol import (
    Codec,
    EpisodeMetrics,
    Hello,
    Image,
    Limits,
    Observation,
    PeerInfo,
    ServerConnection,
    Step,
    StepResult,
)
from gymwire.protocol.steps import observation_map, plain_step, step_message, step_result_map

fuzz = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ids = st.one_of(st.integers(-3, 2**53 + 3), st.booleans(), st.floats(allow_nan=False), st.text(max_size=3), st.none())
sessions = st.one_of(st.text(min_size=0, max_size=130), st.integers(), st.none(), st.binary(max_size=3))
seqs = st.one_of(st.integers(-3, 2**70), st.booleans(), st.floats(allow_nan=False), st.none())
actions = st.one_of(st.text(max_size=20), st.integers(), st.none(), st.lists(st.text(max_size=2), max_size=2))
deadlines = st.one_of(st.none(), st.integers(-1, 90_000_000), st.booleans())


@st.composite
def step_maps(draw: st.DrawFn) -> dict:
    candidate = {"type": draw(st.sampled_from(["step", "step", "step", "reset", "stepx"]))}
    for key, values in (("id", ids), ("session", sessions), ("seq", seqs), ("action", actions), ("deadline_ms", deadlines)):
        if draw(st.integers(0, 9)):  # mostly present
            candidate[key] = draw(values)
    if draw(st.booleans()):
        candidate["extra"] = draw(st.integers())  # receivers ignore fields they do not know
    return candidate


@fuzz
@given(step_maps())
def test_plain_step_takes_what_the_model_takes_without_a_deadline(candidate: dict) -> None:
    try:
        model = Step.__pydantic_validator__.validate_python(candidate)
    except pydantic.ValidationError:
        model = None
    plain = plain_step(candidate)
    if model is None or model.deadline_ms is not None:
        assert plain is None
    else:
        assert plain == (model.id, model.session, model.seq, model.action)
        assert step_message(plain) == model


observations = st.one_of(
    st.text(max_size=30),
    st.builds(
        Observation,
        text=st.text(max_size=10),
        data=st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats()), max_size=3)),
        images=st.one_of(
            st.none(),
            st.lists(st.builds(Image, data=st.binary(max_size=8), width=st.one_of(st.none(), st.integers(1, 9))), max_size=2),
        ),
    ),
)
@dataclasses.dataclass
class _Position:
    x: int
    y: int


class _Place(pydantic.BaseModel):
    """A model in info: its serializer drops its None fields (exclude_none), in JSON as in msgpack."""

    x: int = 1
    label: str | None = None


infos = st.dictionaries(
    st.text(max_size=4),
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=4),
        st.lists(st.integers(-(2**63), 2**64 - 1), max_size=2),
        st.builds(_Place, x=st.integers(0, 9), label=st.one_of(st.none(), st.text(max_size=3))),
        st.builds(lambda x, y: _Position(x, y), st.integers(0, 9), st.integers(0, 9)),
    ),
    max_size=4,
)
metrics = st.one_of(
    st.none(),
    st.builds(
        lambda success, score, turns, total: {"success": success, "score": score, "turns": turns, "total_reward": total},
        st.booleans(), st.floats(allow_nan=False, allow_infinity=False), st.integers(0, 10**6), st.floats(allow_nan=False, allow_infinity=False),
    ),
)


@fuzz
@given(
    st.integers(0, 2**53 - 1), st.text(min_size=1, max_size=128), st.integers(0, 2**63), observations,
    st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.booleans(), infos, metrics, st.booleans(),
)  # fmt: skip
def test_a_step_answer_as_its_map_encodes_as_its_model(
    request_id: int, session: str, seq: int, observation: Observation | str, reward: float,
    terminated: bool, truncated: bool, info: dict, episode: dict | None, wants_images: bool,
) -> None:  # fmt: skip
    answer = step_result_map(request_id, session, seq, observation_map(observation), reward, terminated, truncated, info, episode)
    model = StepResult(
        id=request_id, session=session, seq=seq,
        observation=observation if isinstance(observation, Observation) else Observation(text=observation),
        reward=reward, terminated=terminated, truncated=truncated, info=info,
        metrics=None if episode is None else EpisodeMetrics(**episode),
    )  # fmt: skip
    for encoding in ("msgpack", "json"):
        rules = ServerConnection(Codec(encoding), now=0.0, limits=Limits(), capabilities=["images"], server=PeerInfo(name="t"), envs={})
        rules.wants_images = wants_images
        assert rules.encode(answer) == rules.encode(model)
        decoded = Codec(encoding).decode(rules.encode(answer))
        assert isinstance(decoded, StepResult) and decoded.id == request_id
        assert bool(decoded.observation.images) == bool(wants_images and model.observation.images)


def test_an_answer_only_the_models_serializer_can_write_goes_the_model_way() -> None:
    """msgpack cannot pack a dataclass, pydantic writes it as a map: the answer takes the model's way."""
    answer = step_result_map(1, "s", 1, {"text": "x"}, 0.0, False, False, {"at": _Position(1, 2), "nan": math.nan}, None)
    model = StepResult(id=1, session="s", seq=1, observation=Observation(text="x"), info={"at": _Position(1, 2), "nan": math.nan})
    for encoding in ("msgpack", "json"):
        assert Codec(encoding).encode(answer) == Codec(encoding).encode(model)
    assert Codec("msgpack").decode(Codec("msgpack").encode(answer)).info["at"] == {"x": 1, "y": 2}
    assert '"nan":null' in Codec("json").encode(answer)  # JSON carries no NaN (GW-FRAME-9)


def _welcomed_rules(encoding: str) -> ServerConnection:
    rules = ServerConnection(Codec(encoding), now=0.0, limits=Limits(), capabilities=["deadlines"], server=PeerInfo(name="t"), envs={})
    rules.receive_frame(rules.codec.encode(Hello(id=1)), 0.0)
    rules.frames_to_send()
    return rules


def test_the_rules_read_a_well_formed_step_as_its_fields_and_anything_else_as_before() -> None:
    for encoding in ("msgpack", "json"):
        rules = _welcomed_rules(encoding)
        step = Step(id=5, session="s", seq=2, action="go")
        assert rules.read(rules.codec.encode(step), 0.0) == (5, "s", 2, "go")
        assert rules.receive_frame(rules.codec.encode(step), 0.0) == step
        with_deadline = Step(id=6, session="s", seq=2, action="go", deadline_ms=50)
        assert rules.read(rules.codec.encode(with_deadline), 0.0) == with_deadline
        rules.inflight[7] = object()  # an id in flight: refused, as a model would be
        assert rules.read(rules.codec.encode(Step(id=7, session="s", seq=2, action="go")), 0.0) is None
        assert [rules.codec.decode(frame).name for frame in rules.frames_to_send()] == ["INVALID_STATE"]
        assert rules.read(rules.codec.encode_object({"type": "step", "id": 8, "session": "", "seq": 1, "action": "a"}), 0.0) is None
        (refusal,) = [rules.codec.decode(frame) for frame in rules.frames_to_send()]
        assert (refusal.name, refusal.id) == ("BAD_FRAME", 8) and "session" in refusal.message


def test_before_the_welcome_a_step_is_refused_as_before() -> None:
    rules = ServerConnection(Codec("msgpack"), now=0.0, limits=Limits(), capabilities=[], server=PeerInfo(name="t"), envs={})
    assert rules.read(rules.codec.encode(Step(id=5, session="s", seq=1, action="go")), 0.0) is None
    (refusal,) = [rules.codec.decode(frame) for frame in rules.frames_to_send()]
    assert (refusal.name, refusal.id) == ("HANDSHAKE_REQUIRED", 5)
