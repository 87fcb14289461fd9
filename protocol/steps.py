"""The step, gymwire's hot path, as plain data.

A step request is read straight from its decoded map, and a step's answer is built as the map it is
sent as: no message model is made on the way. (Validating a `Step`, building a `StepResult` and its
`Observation` and serializing them took half of a step's protocol CPU; BENCHMARKS.md, #30.) What the
plain reading does not take, a `deadline_ms` or anything malformed, goes the model way, whose
validation names what is wrong. Tests hold both ways to the same answers and the same bytes.
"""

from __future__ import annotations

from typing import Any

from .messages import MAX_ID, MAX_SESSION_CHARS, Observation, Step, StepResult

# (id, session, seq, action) of a step request.
StepFields = tuple[int, str, int, str]

_observation_to_python = Observation.__pydantic_serializer__.to_python


def plain_step(obj: Any) -> StepFields | None:
    """The fields of a decoded map that is a step the `Step` model takes as it is (strict: an int is
    no bool) and that has no deadline; None for anything else, which then goes the model way."""
    if type(obj) is not dict or obj.get("type") != Step.TYPE or obj.get("deadline_ms") is not None:
        return None
    request_id = obj.get("id")
    session = obj.get("session")
    seq = obj.get("seq")
    action = obj.get("action")
    if (
        type(request_id) is int and 0 <= request_id <= MAX_ID
        and type(session) is str and 0 < len(session) <= MAX_SESSION_CHARS
        and type(seq) is int and seq >= 0
        and type(action) is str
    ):  # fmt: skip
        return request_id, session, seq, action
    return None


def step_map(request_id: int, session: str, seq: int, action: str) -> dict[str, Any]:
    """A step without a deadline as the map its model would serialize to (the client's request)."""
    return {"type": Step.TYPE, "id": request_id, "session": session, "seq": seq, "action": action}


def step_message(step: StepFields) -> Step:
    """The `Step` model of a plain step (for the model way: a step that waits its turn in a task)."""
    request_id, session, seq, action = step
    return Step(id=request_id, session=session, seq=seq, action=action)


def observation_map(observation: Observation | str) -> dict[str, Any]:
    """An observation as the map it is sent as (images as raw bytes, as msgpack carries them)."""
    if type(observation) is str:
        return {"text": observation}
    if isinstance(observation, Observation):
        if observation.data is None and observation.images is None:
            return {"text": observation.text}
        return _observation_to_python(observation, exclude_none=True)  # type: ignore[no-any-return]
    if isinstance(observation, str):  # a str subclass (numpy's str_, say)
        return {"text": str(observation)}
    raise TypeError(f"an environment must return str or Observation, got {type(observation).__name__}")


def step_result_map(
    request_id: int,
    session: str,
    seq: int,
    observation: dict[str, Any],
    reward: float,
    terminated: bool,
    truncated: bool,
    info: dict[str, Any],
    metrics: dict[str, Any] | None,
) -> dict[str, Any]:
    """A `step_result` as the map its model would serialize to: fields in the model's order, no
    None fields. `metrics`: the `EpisodeMetrics` fields, on the answer that ends the episode."""
    answer = {
        "type": StepResult.TYPE,
        "id": request_id,
        "session": session,
        "seq": seq,
        "observation": observation,
        "reward": reward,
        "terminated": terminated,
        "truncated": truncated,
        "info": info,
    }
    if metrics is not None:
        answer["metrics"] = metrics
    return answer
