"""Every message of gymwire protocol v1, as pydantic models.

A frame holds exactly one message: a map whose `type` field names the model. Requests carry an
`id` chosen by the sender; the answer to a request carries the same `id` (responses may come out
of order). Receivers ignore fields they do not know, so a minor version may add optional fields.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, ClassVar, Literal, Union

__all__ = [
    "CAPABILITIES", "MIN_FRAME_BYTES", "MESSAGE_TYPES", "CLIENT_MESSAGES", "SERVER_MESSAGES", "Message", "PeerInfo", "Limits", "Image",
    "Observation", "EpisodeMetrics", "TaskRef", "EnvInfo", "Hello", "Welcome", "ListEnvs", "EnvList",
    "DescribeEnv", "EnvDescription", "Open", "Opened", "Reset", "ResetResult", "Step", "StepResult", "BatchStep",
    "StepBatch", "StepBatchResult", "Error", "Close", "Closed", "Cancel", "CancelAck", "Ping", "Pong", "Resume",
    "Resumed", "Notice",
]

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializationInfo,
    WithJsonSchema,
    model_validator,
)

from .version import PROTOCOL_VERSION

# Ids must survive a JSON round trip through peers whose numbers are doubles.
MAX_ID = 2**53 - 1
RequestId = Annotated[int, Field(ge=0, le=MAX_ID)]
MAX_SESSION_CHARS = 128
SessionId = Annotated[str, Field(min_length=1, max_length=MAX_SESSION_CHARS)]
Name = Annotated[str, Field(min_length=1, max_length=128)]
# The smallest max_frame_bytes a peer may ask for: a frame must hold a hello or a welcome.
MIN_FRAME_BYTES = 512
Deadline = Annotated[int, Field(gt=0, le=86_400_000, description="Milliseconds from receipt.")]
JsonMap = dict[str, Any]

CAPABILITIES = ("batch", "resume", "cancel", "deadlines", "images", "auth", "heartbeat")


def _bytes_from_wire(value: Any) -> Any:
    # msgpack carries raw bytes; JSON carries base64 text.
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except ValueError as exc:
            raise ValueError("image data must be base64 in JSON frames") from exc
    return value


def _bytes_to_wire(value: bytes, info: SerializationInfo) -> Any:
    return base64.b64encode(value).decode("ascii") if info.mode == "json" else value


# The JSON Schemas describe JSON frames, where bytes travel as base64 text.
WireBytes = Annotated[
    bytes,
    BeforeValidator(_bytes_from_wire),
    PlainSerializer(_bytes_to_wire),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=False)


# ----------------------------------------------------------------------------- shared parts


class PeerInfo(Model):
    name: Name
    version: Annotated[str, Field(max_length=64)] = "0"


class Limits(Model):
    """What the server enforces; announced in the welcome."""

    max_frame_bytes: int = 4 * 1024 * 1024
    max_sessions: int = 10_000
    max_sessions_per_connection: int = 10_000
    max_inflight: int = 1024
    max_batch: int = 1024
    max_action_bytes: int = 64 * 1024
    heartbeat_interval_ms: int = 15_000
    idle_timeout_ms: int = 600_000
    resume_grace_ms: int = 60_000


class Image(Model):
    mime: Annotated[str, Field(max_length=64)] = "image/png"
    width: int | None = None
    height: int | None = None
    data: WireBytes


class Observation(Model):
    text: str
    data: JsonMap | None = None
    images: list[Image] | None = None


class EpisodeMetrics(Model):
    success: bool
    score: float
    turns: int
    total_reward: float


class TaskRef(Model):
    """Which task an episode plays: a split and an index in it, or a seed, or neither (env's choice)."""

    # The schema says what the validator below enforces: a split needs an index and an index a split
    # (null counts as absent, as everywhere in these models).
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {"if": {"required": [a], "properties": {a: {"not": {"type": "null"}}}},
                 "then": {"required": [b], "properties": {b: {"not": {"type": "null"}}}}}
                for a, b in (("split", "index"), ("index", "split"))
            ]
        }
    )  # fmt: skip

    split: Name | None = None
    index: Annotated[int, Field(ge=0)] | None = None
    seed: int | None = None

    @model_validator(mode="after")
    def _split_with_index(self) -> "TaskRef":
        if (self.split is None) != (self.index is None):
            raise ValueError("split and index go together: give both or neither")
        return self


class EnvInfo(Model):
    name: Name
    version: str = "0"
    description: str = ""
    action_format: str = "text"
    instructions: str = ""
    splits: dict[str, int] = Field(default_factory=dict)
    default_max_turns: int = 20
    observation_fields: list[str] = Field(default_factory=lambda: ["text"])
    seedable: bool = True
    images: bool = False
    metadata: JsonMap = Field(default_factory=dict)


# ----------------------------------------------------------------------------- messages


class Message(Model):
    TYPE: ClassVar[str]
    type: str


class Hello(Message):
    TYPE: ClassVar[str] = "hello"
    type: Literal["hello"] = "hello"
    id: RequestId
    version: str = PROTOCOL_VERSION
    client: PeerInfo = PeerInfo(name="anonymous")
    capabilities: list[str] = Field(default_factory=list)
    token: Annotated[str, Field(max_length=4096)] | None = None
    # The largest frame the client takes (GW-LIMIT-7); absent: the server's own max_frame_bytes.
    max_frame_bytes: Annotated[int, Field(ge=MIN_FRAME_BYTES)] | None = None


class Welcome(Message):
    TYPE: ClassVar[str] = "welcome"
    type: Literal["welcome"] = "welcome"
    id: RequestId
    version: str
    server: PeerInfo
    capabilities: list[str]
    limits: Limits
    envs: list[Name] = Field(default_factory=list)


class ListEnvs(Message):
    TYPE: ClassVar[str] = "list_envs"
    type: Literal["list_envs"] = "list_envs"
    id: RequestId


class EnvList(Message):
    TYPE: ClassVar[str] = "env_list"
    type: Literal["env_list"] = "env_list"
    id: RequestId
    envs: list[EnvInfo]


class DescribeEnv(Message):
    TYPE: ClassVar[str] = "describe_env"
    type: Literal["describe_env"] = "describe_env"
    id: RequestId
    env: Name


class EnvDescription(Message):
    TYPE: ClassVar[str] = "env_description"
    type: Literal["env_description"] = "env_description"
    id: RequestId
    env: EnvInfo


class Open(Message):
    TYPE: ClassVar[str] = "open"
    type: Literal["open"] = "open"
    id: RequestId
    env: Name
    task: TaskRef = TaskRef()
    options: JsonMap = Field(default_factory=dict)
    max_turns: Annotated[int, Field(gt=0)] | None = None
    reset: bool = True
    deadline_ms: Deadline | None = None


class Opened(Message):
    TYPE: ClassVar[str] = "opened"
    type: Literal["opened"] = "opened"
    id: RequestId
    session: SessionId
    resume_token: Annotated[str, Field(max_length=256)]
    env: Name
    max_turns: int
    observation: Observation | None = None
    info: JsonMap = Field(default_factory=dict)


class Reset(Message):
    TYPE: ClassVar[str] = "reset"
    type: Literal["reset"] = "reset"
    id: RequestId
    session: SessionId
    seq: Annotated[int, Field(ge=0)]
    task: TaskRef | None = None
    deadline_ms: Deadline | None = None


class ResetResult(Message):
    TYPE: ClassVar[str] = "reset_result"
    type: Literal["reset_result"] = "reset_result"
    id: RequestId
    session: SessionId
    seq: int
    observation: Observation
    info: JsonMap = Field(default_factory=dict)


class Step(Message):
    TYPE: ClassVar[str] = "step"
    type: Literal["step"] = "step"
    id: RequestId
    session: SessionId
    seq: Annotated[int, Field(ge=0)]
    action: str
    deadline_ms: Deadline | None = None


class StepResult(Message):
    TYPE: ClassVar[str] = "step_result"
    type: Literal["step_result"] = "step_result"
    id: RequestId
    session: SessionId
    seq: int
    observation: Observation
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: JsonMap = Field(default_factory=dict)
    metrics: EpisodeMetrics | None = None


class BatchStep(Model):
    session: SessionId
    seq: Annotated[int, Field(ge=0)]
    action: str


class StepBatch(Message):
    TYPE: ClassVar[str] = "step_batch"
    type: Literal["step_batch"] = "step_batch"
    id: RequestId
    steps: Annotated[list[BatchStep], Field(min_length=1)]
    deadline_ms: Deadline | None = None


class Error(Message):
    TYPE: ClassVar[str] = "error"
    type: Literal["error"] = "error"
    id: RequestId | None = None
    code: int
    name: str
    message: str
    retryable: bool
    retry_after_ms: int | None = None
    session: SessionId | None = None


class StepBatchResult(Message):
    """One entry per step of the batch, in the batch's order: a step_result or an error."""

    TYPE: ClassVar[str] = "step_batch_result"
    type: Literal["step_batch_result"] = "step_batch_result"
    id: RequestId
    results: list[Annotated[Union[StepResult, Error], Field(discriminator="type")]]


class Close(Message):
    TYPE: ClassVar[str] = "close"
    type: Literal["close"] = "close"
    id: RequestId
    session: SessionId


class Closed(Message):
    TYPE: ClassVar[str] = "closed"
    type: Literal["closed"] = "closed"
    id: RequestId
    session: SessionId


class Cancel(Message):
    TYPE: ClassVar[str] = "cancel"
    type: Literal["cancel"] = "cancel"
    id: RequestId
    target: RequestId


class CancelAck(Message):
    TYPE: ClassVar[str] = "cancel_ack"
    type: Literal["cancel_ack"] = "cancel_ack"
    id: RequestId
    target: RequestId
    found: bool


class Ping(Message):
    TYPE: ClassVar[str] = "ping"
    type: Literal["ping"] = "ping"
    id: RequestId


class Pong(Message):
    TYPE: ClassVar[str] = "pong"
    type: Literal["pong"] = "pong"
    id: RequestId


class Resume(Message):
    TYPE: ClassVar[str] = "resume"
    type: Literal["resume"] = "resume"
    id: RequestId
    session: SessionId
    resume_token: Annotated[str, Field(max_length=256)]


class Resumed(Message):
    TYPE: ClassVar[str] = "resumed"
    type: Literal["resumed"] = "resumed"
    id: RequestId
    session: SessionId
    state: str
    last_seq: int
    turns: int
    max_turns: int


class Notice(Message):
    """Unsolicited server news. `drain`: finish up and move; `goodbye`: the connection closes now."""

    TYPE: ClassVar[str] = "notice"
    type: Literal["notice"] = "notice"
    kind: Literal["drain", "goodbye"]
    message: str = ""
    retry_after_ms: int | None = None


CLIENT_MESSAGES: tuple[type[Message], ...] = (
    Hello, ListEnvs, DescribeEnv, Open, Reset, Step, StepBatch, Close, Cancel, Ping, Pong, Resume,
)
SERVER_MESSAGES: tuple[type[Message], ...] = (
    Welcome, EnvList, EnvDescription, Opened, ResetResult, StepResult, StepBatchResult, Closed,
    CancelAck, Ping, Pong, Resumed, Notice, Error,
)
MESSAGE_TYPES: dict[str, type[Message]] = {cls.TYPE: cls for cls in CLIENT_MESSAGES + SERVER_MESSAGES}
