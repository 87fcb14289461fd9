"""Environment code as authors write it: crashes are logged on the server with a traceback, and
classes mixing `def` and `async def` methods work in every isolation."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sdk_fault_envs import FaultyEnv

from gymwire.protocol import ErrorCode, ProtocolError
from gymwire.sdk import Environment, StepOutcome, Task
from gymwire.sdk.client import GymClient


class InlineFaultyEnv(FaultyEnv):
    """The same faults on the server's hot path (sync steps run on the event loop)."""

    name = "inline-faulty"
    inline = True


class ResetCrashEnv(Environment):
    name = "reset-crash"
    splits = {"test": 3}

    def reset(self, task: Task) -> str:
        raise KeyError(f"no board for task {task.index}")

    def step(self, action: str) -> StepOutcome:
        return StepOutcome("unreachable")


class SyncResetAsyncStep(Environment):
    """A sync reset, an async step and an async close: the mix the docs allow."""

    name = "mixed"
    closed = 0

    def reset(self, task: Task) -> str:
        self.count = 0
        return f"ready {task.seed}"

    async def step(self, action: str) -> StepOutcome:
        await asyncio.sleep(0)
        self.count += 1
        return StepOutcome(f"{action} #{self.count}", reward=1.0, terminated=action == "stop")

    async def close(self) -> None:
        type(self).closed += 1


class AsyncResetSyncStep(Environment):
    name = "mixed-other-way"

    async def reset(self, task: Task) -> str:
        await asyncio.sleep(0)
        return "async ready"

    def step(self, action: str) -> StepOutcome:
        return StepOutcome(action.upper(), terminated=True)


def _crash_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gymwire.server" and r.levelno >= logging.ERROR]


@pytest.mark.parametrize("env_class", [FaultyEnv, InlineFaultyEnv], ids=["thread", "inline"])
async def test_a_crashing_step_is_logged_with_traceback_session_and_task(make_server, caplog, env_class):
    caplog.set_level(logging.INFO, logger="gymwire")
    async with make_server(envs=[env_class]) as server, GymClient(server.url) as client:
        session = await client.open(env_class.name, seed=42)
        with pytest.raises(ProtocolError) as info:
            await session.step("raise")
        assert info.value.code is ErrorCode.ENV_CRASHED
    records = _crash_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in caplog.records]
    text = caplog.text
    assert session.id in records[0].getMessage() and "seed=42" in records[0].getMessage()
    assert "Traceback" in text and "RuntimeError: environment bug" in text and "sdk_fault_envs.py" in text


async def test_a_crashing_reset_is_logged_with_its_task(make_server, caplog):
    caplog.set_level(logging.INFO, logger="gymwire")
    async with make_server(envs=[ResetCrashEnv]) as server, GymClient(server.url) as client:
        with pytest.raises(ProtocolError) as info:
            await client.open("reset-crash", split="test", index=2)
        assert info.value.code is ErrorCode.ENV_CRASHED
    records = _crash_records(caplog)
    assert len(records) == 1 and "split=test index=2" in records[0].getMessage()
    assert "KeyError" in caplog.text and "Traceback" in caplog.text


async def test_a_crash_in_a_session_process_is_logged(make_server, caplog):
    caplog.set_level(logging.INFO, logger="gymwire")
    async with make_server(envs=[FaultyEnv], isolation="process") as server, GymClient(server.url) as client:
        session = await client.open("faulty", seed=1)
        with pytest.raises(ProtocolError):
            await session.step("raise")
    records = _crash_records(caplog)
    assert len(records) == 1 and session.id in records[0].getMessage()
    assert "RuntimeError: environment bug" in caplog.text and "Traceback" in caplog.text


@pytest.mark.parametrize("isolation", ["thread", "process"])
async def test_sync_and_async_methods_mix(make_server, isolation):
    SyncResetAsyncStep.closed = 0
    async with make_server(envs=[SyncResetAsyncStep, AsyncResetSyncStep], isolation=isolation) as server:
        async with GymClient(server.url) as client:
            session = await client.open("mixed", seed=7)
            assert session.observation.text == "ready 7"
            assert (await session.step("go")).observation.text == "go #1"
            result = await session.step("stop")
            assert result.observation.text == "stop #2" and result.terminated
            await session.close()
            other = await client.open("mixed-other-way", seed=0)
            assert other.observation.text == "async ready"
            assert (await other.step("shout")).observation.text == "SHOUT"
    if isolation == "thread":
        assert SyncResetAsyncStep.closed == 1
