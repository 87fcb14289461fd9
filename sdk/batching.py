"""Many steps at once: one batch frame per server (`step_batch`), and sessions spread over the
servers of a pool (`step_sessions`), where a lost server fails only its own entries."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Sequence

from gymwire.protocol import BatchStep, Error, ErrorCode, ProtocolError, Step, StepBatch, StepResult, error_from_message

from .session import ClientSession, require_text_action

if TYPE_CHECKING:
    from .client import Disconnected, GymClient

__all__ = ["step_batch", "step_sessions"]


async def step_batch(
client: "GymClient", steps: Sequence[tuple["ClientSession", str]], deadline_ms: int | None = None
) -> list[StepResult | ProtocolError]:
    """Step many sessions in one frame. Each entry is the step's result or its typed error.

    `deadline_ms` is the batch's, but it applies to each step: when the batch is answered
    TIMEOUT, each step's own result is asked for (its seq re-sent, same deadline), so only the
    steps still running get TIMEOUT. Against a server without `batch` the steps go one by one,
    with the same results."""
    if deadline_ms is not None:
        client.require("deadlines")
    for session, action in steps:
        require_text_action(action)
    for session, _ in steps:
        await session.settle()  # all of them before any seq is taken
    if not client.supports("batch"):
        return await _step_one_by_one(steps, deadline_ms)
    items = [
        BatchStep(session=session.id, seq=session.machine.take_seq(), action=action) for session, action in steps
    ]
    try:
        reply = await client.request(StepBatch(id=client.next_id(), steps=items, deadline_ms=deadline_ms))
    except ProtocolError as exc:
        for session, _ in steps:
            session.machine.refused(exc.code)
        if exc.code is ErrorCode.TIMEOUT and deadline_ms is not None:
            return await _results_after_timeout(client, steps, items, deadline_ms)
        raise
    except (asyncio.TimeoutError, asyncio.CancelledError):
        for session, _ in steps:
            session.machine.gave_up()  # given up here, but the server may run the steps
        raise
    out: list[StepResult | ProtocolError] = []
    for (session, _), result in zip(steps, reply.results):  # type: ignore[attr-defined]
        if isinstance(result, Error):
            error = error_from_message(result)
            session.machine.refused(error.code)
            out.append(error)
        else:
            session.step_answered(result)
            out.append(result)
    return out

async def _results_after_timeout(
    client: "GymClient", steps: Sequence[tuple["ClientSession", str]], items: list[BatchStep], deadline_ms: int
) -> list[StepResult | ProtocolError]:
    # What the server started runs on, and a re-sent seq gets its recorded answer (GW-DEADLINE-4);
    # a step never started runs now, once.
    out: list[Any] = [None] * len(steps)
    positions: dict[ClientSession, list[int]] = {}
    for position, (session, _) in enumerate(steps):
        positions.setdefault(session, []).append(position)

    async def ask(session: ClientSession, its_positions: list[int]) -> None:
        for position in its_positions:
            item = items[position]
            step = Step(
                id=client.next_id(), session=session.id, seq=item.seq, action=item.action, deadline_ms=deadline_ms
            )
            try:
                result = await session.request(step)
            except ProtocolError as exc:
                out[position] = exc
                continue
            session.machine.uncertain = False  # this seq's answer settles what the server did
            session.step_answered(result)  # type: ignore[arg-type]
            out[position] = result

    await asyncio.gather(*(ask(session, its) for session, its in positions.items()))
    return out

async def _step_one_by_one(
    steps: Sequence[tuple["ClientSession", str]], deadline_ms: int | None
) -> list[StepResult | ProtocolError]:
    # As a batch would (GW-BATCH-3/4): in order within a session, concurrently across sessions.
    out: list[Any] = [None] * len(steps)
    positions: dict[ClientSession, list[int]] = {}
    for position, (session, _) in enumerate(steps):
        positions.setdefault(session, []).append(position)

    async def step_session(session: ClientSession, its_positions: list[int]) -> None:
        for position in its_positions:
            try:
                out[position] = await session.step(steps[position][1], deadline_ms)
            except ProtocolError as exc:
                out[position] = exc

    await asyncio.gather(*(step_session(session, its) for session, its in positions.items()))
    return out


async def step_sessions(
    steps: Sequence[tuple[ClientSession, str]], deadline_ms: int | None = None
) -> list[StepResult | ProtocolError | Disconnected]:
    """Step sessions that may live on different servers, all at once: per server, batch frames of
    at most its max_batch steps. Each entry is the step's result or its error; a server lost
    (ServerLost) fails only the entries of its own sessions."""
    from .client import Disconnected  # (here: the client module imports this one)

    out: list[Any] = [None] * len(steps)
    by_client: dict[GymClient, list[int]] = {}
    for position, (session, _) in enumerate(steps):
        by_client.setdefault(session.client, []).append(position)

    async def step_chunk(client: GymClient, positions: list[int]) -> None:
        try:
            results: Sequence[Any] = await client.step_batch([steps[p] for p in positions], deadline_ms=deadline_ms)
        except Disconnected as exc:
            results = [exc] * len(positions)
        for position, result in zip(positions, results):
            out[position] = result

    chunks = []
    for client, positions in by_client.items():
        size = client.limits.max_batch if client.usable else len(positions)
        chunks += [step_chunk(client, positions[i : i + size]) for i in range(0, len(positions), size)]
    await asyncio.gather(*chunks)
    return out
