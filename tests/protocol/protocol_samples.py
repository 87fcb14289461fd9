"""One fully populated instance of every protocol message (every optional field set), for the
round-trip and fuzz tests. Image bytes are not valid UTF-8, so a codec that treats them as text fails."""

from __future__ import annotations

from gymwire.protocol import messages as m

PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\xff\xfe" + bytes(range(256))
OBSERVATION = m.Observation(
    text="You are in a kitchen. There is a fridge.\nWhat do you do?",
    data={"inventory": ["apple", "key"], "position": [3, 4], "hp": 9.5, "ok": True, "none": None},
    images=[m.Image(mime="image/png", width=2, height=3, data=PNG_BYTES), m.Image(data=b"")],
)
ENV_INFO = m.EnvInfo(
    name="guess", version="1.0.0", description="d", action_format="text", instructions="i",
    splits={"train": 10, "test": 2}, default_max_turns=7, observation_fields=["text", "images"],
    seedable=False, images=True, metadata={"k": [1, {"x": "y"}]},
)
METRICS = m.EpisodeMetrics(success=True, score=0.75, turns=3, total_reward=1.5)
SESSION = "s-5f0c9a1e2b7d4c83"
TOKEN = "Xo3r9V0q2m8Zk4nB7c1dYw5eLp6tHs0aJf2uQi9gRb4"


def _step_result(request_id: int) -> m.StepResult:
    return m.StepResult(
        id=request_id, session=SESSION, seq=3, observation=OBSERVATION, reward=-0.25, terminated=True,
        truncated=False, info={"unicode": "h\u00e9llo \u2603 \U0001f600", "nested": {"a": [1, 2.5]}}, metrics=METRICS,
    )


def _error(request_id: int | None) -> m.Error:
    return m.Error(
        id=request_id, code=20, name="CAPACITY", message="too many sessions; retry", retryable=True,
        retry_after_ms=250, session=SESSION,
    )


SAMPLES: dict[str, m.Message] = {
    "hello": m.Hello(
        id=1, version="1.0", client=m.PeerInfo(name="c", version="0.1"), capabilities=["batch", "resume"],
        token="secret",
    ),
    "welcome": m.Welcome(
        id=1, version="1.0", server=m.PeerInfo(name="s", version="0.1"), capabilities=["batch"],
        limits=m.Limits(max_frame_bytes=1 << 20, max_sessions=5, max_batch=8), envs=["guess", "babyai"],
    ),
    "list_envs": m.ListEnvs(id=2),
    "env_list": m.EnvList(id=2, envs=[ENV_INFO, m.EnvInfo(name="other")]),
    "describe_env": m.DescribeEnv(id=3, env="guess"),
    "env_description": m.EnvDescription(id=3, env=ENV_INFO),
    "open": m.Open(
        id=4, env="guess", task=m.TaskRef(split="train", index=7), options={"low": 1, "high": 100},
        max_turns=9, reset=False, deadline_ms=1500,
    ),
    "opened": m.Opened(
        id=4, session=SESSION, resume_token=TOKEN, env="guess", max_turns=9, observation=OBSERVATION,
        info={"split": "train"},
    ),
    "reset": m.Reset(id=5, session=SESSION, seq=1, task=m.TaskRef(seed=-42), deadline_ms=10),
    "reset_result": m.ResetResult(id=5, session=SESSION, seq=1, observation=OBSERVATION, info={"i": 1}),
    "step": m.Step(id=6, session=SESSION, seq=2, action="Thought: \u00fcber.\nAction: 50", deadline_ms=86_400_000),
    "step_result": _step_result(6),
    "step_batch": m.StepBatch(
        id=7, steps=[m.BatchStep(session=SESSION, seq=2, action="a"), m.BatchStep(session="s2", seq=5, action="")],
        deadline_ms=99,
    ),
    "step_batch_result": m.StepBatchResult(id=7, results=[_step_result(7), _error(7)]),
    "close": m.Close(id=8, session=SESSION),
    "closed": m.Closed(id=8, session=SESSION),
    "cancel": m.Cancel(id=9, target=6),
    "cancel_ack": m.CancelAck(id=9, target=6, found=True),
    "ping": m.Ping(id=2**53 - 1),
    "pong": m.Pong(id=0),
    "resume": m.Resume(id=10, session=SESSION, resume_token=TOKEN),
    "resumed": m.Resumed(id=10, session=SESSION, state="running", last_seq=2, turns=2, max_turns=9),
    "notice": m.Notice(kind="drain", message="restarting", retry_after_ms=5000),
    "error": _error(None),
}
