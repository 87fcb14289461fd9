"""Full-level checks: batches, resume, cancel, deadlines, heartbeat, auth, limits, images.

Each one needs the capability it tests to be announced in the welcome; checks that wait for the
server's timers (heartbeat, resume grace) skip when those are longer than --max-wait.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from typing import Any

from .checks_core import NO_SUCH_SESSION, comparable, same_except_session
from .framework import Context, Skipped, check
from .spec_tables import MIN_CLIENT_FRAME_BYTES
from .wire import ConnectionLost, RawConnection, encode


def _outcome(answer: dict[str, Any]) -> str:
    return answer.get("name", "?") if answer.get("type") == "error" else str(answer.get("type"))


async def _quiet(ctx: Context, conn: RawConnection, request_id: int, seconds: float, requirements: tuple[str, ...]) -> None:
    """Wait, then fail if `request_id` was answered more than once meanwhile."""
    await asyncio.sleep(seconds)
    answers = conn.answers_to(request_id)
    ctx.expect(len(answers) <= 1, requirements, f"request id {request_id} was answered {len(answers)} times: "
               f"{[_outcome(a) for a in answers]}")


# ====================================================================== batches


@check("batch", area="BATCH", level="full", needs=("batch",), requirements=("GW-BATCH-1", "GW-BATCH-2", "GW-BATCH-3"))
async def batch(ctx: Context) -> None:
    """step_batch over two sessions: one entry per step, in order, each handled like a single step."""
    conn = await ctx.connect()
    first = (await ctx.open_session(conn, max_turns=5))["session"]
    second = (await ctx.open_session(conn, max_turns=5))["session"]
    entries = [
        {"session": first, "seq": 1, "action": ctx.probe},
        {"session": second, "seq": 1, "action": ctx.probe},
        {"session": first, "seq": 2, "action": ctx.probe},
        {"session": NO_SUCH_SESSION, "seq": 1, "action": ctx.probe},
        {"session": second, "seq": 7, "action": ctx.probe},
    ]
    request = {"type": "step_batch", "id": ctx.next_id(), "steps": entries}
    answer = await ctx.request(conn, request)
    ctx.expect_type(answer, "step_batch_result", ("GW-BATCH-1",), "a step_batch of 5 entries")
    results = answer.get("results")
    ctx.expect(isinstance(results, list) and len(results) == len(entries), ("GW-BATCH-1",),
               f"step_batch_result must hold {len(entries)} entries, got {results!r:.300}")
    for entry, result in zip(entries, results):
        ctx.expect(result.get("id") == request["id"], ("GW-BATCH-1",), f"entry {entry} carries id {result.get('id')!r}, not the batch's")
    for index in (0, 1, 2):
        entry, result = entries[index], results[index]
        ctx.expect(
            result.get("type") == "step_result" and result.get("session") == entry["session"] and result.get("seq") == entry["seq"],
            ("GW-BATCH-2", "GW-BATCH-3") if index == 2 else ("GW-BATCH-2",),
            f"entry {index} (session {entry['session']}, seq {entry['seq']}) got {_outcome(result)}: {comparable(result)!r:.200}",
        )
    ctx.expect_error(results[3], "UNKNOWN_SESSION", ("GW-BATCH-2",), "a batch entry on a made-up session")
    ctx.expect_error(results[4], "BAD_SEQUENCE", ("GW-BATCH-2",), "a batch entry with seq 7 instead of 2")
    result = await ctx.step(conn, second, 2)
    ctx.expect_type(result, "step_result", ("GW-BATCH-2",), "step seq=2 on the second session after the batch")


@check("batch-too-large", area="BATCH", level="full", needs=("batch",), requirements=("GW-BATCH-5",))
async def batch_too_large(ctx: Context) -> None:
    """A batch over max_batch: one INVALID_ACTION error and none of its steps executed."""
    max_batch = ctx.limits.get("max_batch", 0)
    if not 0 < max_batch <= 10_000:
        raise Skipped(f"max_batch={max_batch} is too large to exceed cheaply")
    conn = await ctx.connect()
    session = (await ctx.open_session(conn, max_turns=max_batch + 5))["session"]
    request = {
        "type": "step_batch",
        "id": ctx.next_id(),
        "steps": [{"session": session, "seq": seq, "action": ctx.probe} for seq in range(1, max_batch + 2)],
    }
    answer = await ctx.request(conn, request)
    ctx.expect_error(answer, "INVALID_ACTION", ("GW-BATCH-5",), f"a batch of max_batch+1={max_batch + 1} steps", request_id=request["id"])
    result = await ctx.step(conn, session, 1)
    ctx.expect(result.get("type") == "step_result" and result.get("seq") == 1, ("GW-BATCH-5",),
               f"step seq=1 after the refused batch got {_outcome(result)} (were some of its steps executed?)")


# ====================================================================== resume


async def _resume(ctx: Context, conn: RawConnection, opened: dict[str, Any]) -> dict[str, Any]:
    return await ctx.request(conn, {"type": "resume", "session": opened["session"], "resume_token": opened["resume_token"]})


@check("resume-after-drop", area="RESUME", level="full", needs=("resume",),
       requirements=("GW-RESUME-2", "GW-RESUME-4", "GW-SESSION-5"))
async def resume_after_drop(ctx: Context) -> None:
    """Drop the connection with a step in flight, resume, re-send it: answered once, executed once."""
    first = await ctx.connect(label="dropped")
    opened = await ctx.open_session(first, max_turns=4)
    session = opened["session"]
    result = await ctx.step(first, session, 1)
    ctx.expect_type(result, "step_result", ("GW-SESSION-4",), "step seq=1")
    in_flight = ctx.options.slow_action or ctx.probe
    await first.send(ctx.step_message(session, 2, in_flight))
    first.abort()
    await first.wait_closed(ctx.timeout)

    second = await ctx.connect(label="resumed")
    resumed = await _resume(ctx, second, opened)
    ctx.expect_type(resumed, "resumed", ("GW-RESUME-2",), "resume with the session's token after a dropped connection")
    ctx.expect(
        resumed.get("session") == session and resumed.get("state") in ("running", "finished") and resumed.get("max_turns") == 4
        and resumed.get("last_seq") in (1, 2) and resumed.get("turns") == resumed.get("last_seq"),
        ("GW-RESUME-2",),
        f"resumed must describe the session (state running/finished, last_seq 1 or 2, turns = last_seq, max_turns 4): {resumed!r:.300}",
    )
    timeout = ctx.timeout + (ctx.options.slow_ms / 1000 if ctx.options.slow_action else 0)
    again = await ctx.request(second, ctx.step_message(session, 2, in_flight), timeout=timeout)
    ctx.expect(
        again.get("type") == "step_result" and again.get("seq") == 2,
        ("GW-RESUME-4", "GW-SESSION-5"),
        f"re-sending seq=2 after resume got {_outcome(again)}: {comparable(again)!r:.200}",
    )
    replay = await ctx.request(second, ctx.step_message(session, 2, in_flight), timeout=timeout)
    ctx.expect(comparable(replay) == comparable(again), ("GW-SESSION-5",), "a second re-send of seq=2 differs from the first")
    await second.close()

    third = await ctx.connect(label="audit")
    audit = await _resume(ctx, third, opened)
    ctx.expect_type(audit, "resumed", ("GW-RESUME-2",), "a second resume from a third connection")
    ctx.expect(
        audit.get("last_seq") == 2 and audit.get("turns") == 2,
        ("GW-RESUME-4", "GW-SESSION-5"),
        f"after steps 1 and 2 (2 re-sent twice) the session must show last_seq=2 turns=2, got "
        f"last_seq={audit.get('last_seq')!r} turns={audit.get('turns')!r}: a re-sent step was executed again",
    )


@check("resume-refused", area="RESUME", level="full", needs=("resume",), requirements=("GW-RESUME-3",))
async def resume_refused(ctx: Context) -> None:
    """resume with a wrong token or an unknown session: UNKNOWN_SESSION, the same answer in both cases."""
    owner = await ctx.connect(label="owner")
    opened = await ctx.open_session(owner, max_turns=3)
    intruder = await ctx.connect(label="intruder")
    wrong = {"type": "resume", "id": ctx.next_id(), "session": opened["session"], "resume_token": "gymwire-conformance-wrong-token"}
    answer_wrong = await ctx.request(intruder, wrong)
    ctx.expect_error(answer_wrong, "UNKNOWN_SESSION", ("GW-RESUME-3",), "resume with a wrong token", request_id=wrong["id"])
    unknown = {"type": "resume", "id": ctx.next_id(), "session": NO_SUCH_SESSION, "resume_token": "gymwire-conformance-wrong-token"}
    answer_unknown = await ctx.request(intruder, unknown)
    ctx.expect_error(answer_unknown, "UNKNOWN_SESSION", ("GW-RESUME-3",), "resume of an unknown session", request_id=unknown["id"])
    ctx.expect(same_except_session(answer_wrong, answer_unknown, opened["session"], NO_SUCH_SESSION), ("GW-RESUME-3",),
               "a wrong token and an unknown session must get the same answer")
    result = await ctx.step(owner, opened["session"], 1)
    ctx.expect_type(result, "step_result", ("GW-RESUME-3",), "the owner's step after refused resumes")


@check("resume-grace", area="RESUME", level="full", needs=("resume",), requirements=("GW-RESUME-1",))
async def resume_grace(ctx: Context) -> None:
    """A detached session can be resumed, and is reaped once resume_grace_ms has passed."""
    grace = ctx.limits.get("resume_grace_ms", 0) / 1000
    wait = grace + max(0.5, grace / 2)
    if wait > ctx.options.max_wait:
        raise Skipped(f"resume_grace_ms={grace * 1000:.0f} needs a {wait:.1f}s wait, over --max-wait={ctx.options.max_wait:g}s")
    first = await ctx.connect(label="first")
    opened = await ctx.open_session(first, max_turns=3)
    await first.close()
    second = await ctx.connect(label="second")
    resumed = await _resume(ctx, second, opened)
    ctx.expect_type(resumed, "resumed", ("GW-RESUME-1",), "resume right after the connection closed")
    await second.close()
    await asyncio.sleep(wait)
    third = await ctx.connect(label="late")
    late = {"type": "resume", "id": ctx.next_id(), "session": opened["session"], "resume_token": opened["resume_token"]}
    answer = await ctx.request(third, late)
    ctx.expect_error(answer, "UNKNOWN_SESSION", ("GW-RESUME-1",), f"resume {wait:.1f}s after detaching (resume_grace_ms={grace * 1000:.0f})",
                     request_id=late["id"])


@check("resume-takeover", area="RESUME", level="full", needs=("resume",), requirements=("GW-RESUME-5",))
async def resume_takeover(ctx: Context) -> None:
    """resume of a session still attached elsewhere moves it to the resuming connection."""
    old = await ctx.connect(label="old")
    opened = await ctx.open_session(old, max_turns=3)
    new = await ctx.connect(label="new")
    resumed = await _resume(ctx, new, opened)
    ctx.expect_type(resumed, "resumed", ("GW-RESUME-5",), "resume of a session attached to another live connection")
    result = await ctx.step(new, opened["session"], 1)
    ctx.expect_type(result, "step_result", ("GW-RESUME-5",), "step on the new connection")
    answer = await ctx.step(old, opened["session"], 2)
    ctx.expect_error(answer, "UNKNOWN_SESSION", ("GW-RESUME-5",), "step on the old connection after the takeover")


# ====================================================================== cancel


@check("cancel-unknown", area="CANCEL", level="full", needs=("cancel",), requirements=("GW-CANCEL-1",))
async def cancel_unknown(ctx: Context) -> None:
    """cancel of a request that is not in flight: cancel_ack with found=false."""
    conn = await ctx.connect()
    done = await ctx.request(conn, {"type": "list_envs"})
    for target in (987_654_321, done["id"]):
        request = {"type": "cancel", "id": ctx.next_id(), "target": target}
        ack = await ctx.request(conn, request)
        ctx.expect_type(ack, "cancel_ack", ("GW-CANCEL-1",), f"cancel of target {target}")
        ctx.expect(ack.get("target") == target and ack.get("found") is False, ("GW-CANCEL-1",),
                   f"cancel of a request not in flight must ack target={target} found=false: {ack!r}")


@check("cancel-in-flight", area="CANCEL", level="full", needs=("cancel",), requirements=("GW-CANCEL-1", "GW-CANCEL-2", "GW-CANCEL-3"))
async def cancel_in_flight(ctx: Context) -> None:
    """Cancel a running step and a queued one: each is answered CANCELLED once, and the session stays consistent.

    Without --slow-action the step may finish before the cancel arrives; then the check verifies only
    that the ack and the answer agree (found=false and a normal result, or found=true and CANCELLED)."""
    slow = ctx.options.slow_action
    slow_s = ctx.options.slow_ms / 1000 if slow else 0.0
    conn = await ctx.connect()
    session = (await ctx.open_session(conn, max_turns=10))["session"]
    steps = [ctx.step_message(session, 1, slow or ctx.probe)]
    if slow:
        steps.append(ctx.step_message(session, 2))
    for message in steps:
        await conn.send(message)
    if slow:
        await asyncio.sleep(0.05)  # let the slow step start, so one cancel hits a running step and one a queued step
    acks = {}
    for target in reversed(steps):
        request = {"type": "cancel", "id": ctx.next_id(), "target": target["id"]}
        ack = await ctx.request(conn, request)
        ctx.expect_type(ack, "cancel_ack", ("GW-CANCEL-1",), f"cancel of step seq={target['seq']}")
        ctx.expect(ack.get("target") == target["id"], ("GW-CANCEL-1",), f"cancel_ack names target {ack.get('target')!r}, not {target['id']}")
        if slow:
            ctx.expect(ack.get("found") is True, ("GW-CANCEL-1",),
                       f"step seq={target['seq']} was in flight (the slow action runs) but cancel_ack says found={ack.get('found')!r}")
        acks[target["id"]] = ack
    cancelled = []
    for target in steps:
        answer = await conn.answer(target["id"], ctx.timeout + slow_s)
        if acks[target["id"]].get("found"):
            ctx.expect_error(answer, "CANCELLED", ("GW-CANCEL-2",), f"the cancelled step seq={target['seq']}", request_id=target["id"])
            cancelled.append(target["seq"])
        else:
            ctx.expect(_outcome(answer) != "CANCELLED", ("GW-CANCEL-1",), "found=false, yet the target was answered CANCELLED")
    await asyncio.sleep(slow_s + 0.2)  # room for a late second answer
    for target in steps:
        count = len(conn.answers_to(target["id"]))
        ctx.expect(count == 1, ("GW-CANCEL-2",), f"the cancelled step seq={target['seq']} was answered {count} times")
    # Re-sending a cancelled seq gets a step result: recorded if it ran, executed now if it had not.
    for seq in cancelled:
        answer = await ctx.request(conn, ctx.step_message(session, seq), timeout=ctx.timeout + slow_s)
        if _outcome(answer) == "ENV_CRASHED":
            break
        ctx.expect(
            answer.get("type") == "step_result" and answer.get("seq") == seq,
            ("GW-CANCEL-3",),
            f"after cancelling, re-sending seq={seq} got {_outcome(answer)}: the session must be as if the step never ran, "
            "or have recorded it, or be crashed",
        )


# ====================================================================== deadlines


async def _slow_deadline(ctx: Context, conn: RawConnection, slow: str) -> None:
    slow_s = ctx.options.slow_ms / 1000
    deadline_ms = max(20, ctx.options.slow_ms // 5)
    session = (await ctx.open_session(conn, max_turns=10))["session"]
    # A running step whose deadline passes.
    step = ctx.step_message(session, 1, slow, deadline_ms=deadline_ms)
    sent = time.monotonic()
    answer = await ctx.request(conn, step, timeout=ctx.timeout + slow_s)
    elapsed = time.monotonic() - sent
    ctx.expect_error(answer, "TIMEOUT", ("GW-DEADLINE-1",), f"a step of {ctx.options.slow_ms} ms with deadline_ms={deadline_ms}",
                     request_id=step["id"], session=session)
    ctx.expect(elapsed < slow_s, ("GW-DEADLINE-1",),
               f"TIMEOUT came {elapsed * 1000:.0f} ms after sending: not when the {deadline_ms} ms deadline passed")
    await _quiet(ctx, conn, step["id"], slow_s + 0.2, ("GW-DEADLINE-2",))
    again = await ctx.request(conn, ctx.step_message(session, 1), timeout=ctx.timeout + slow_s)
    ctx.expect(
        (again.get("type") == "step_result" and again.get("seq") == 1) or _outcome(again) == "ENV_CRASHED",
        ("GW-DEADLINE-3",),
        f"re-sending the timed-out seq=1 got {_outcome(again)}: it must get the recorded result or ENV_CRASHED",
    )
    if _outcome(again) == "ENV_CRASHED":
        return
    # A queued step whose deadline passes before it starts: afterwards it is as if it never ran.
    busy = ctx.step_message(session, 2, slow)
    queued = ctx.step_message(session, 3, deadline_ms=deadline_ms)
    await conn.send(busy)
    await conn.send(queued)
    answer = await conn.answer(queued["id"], ctx.timeout + slow_s)
    ctx.expect_error(answer, "TIMEOUT", ("GW-DEADLINE-1",), f"a step queued behind a {ctx.options.slow_ms} ms step with deadline_ms={deadline_ms}",
                     request_id=queued["id"])
    busy_answer = await conn.answer(busy["id"], ctx.timeout + slow_s)
    ctx.expect_type(busy_answer, "step_result", ("GW-DEADLINE-3",), "the slow step seq=2 without deadline")
    await _quiet(ctx, conn, queued["id"], 0.1, ("GW-DEADLINE-2",))
    again = await ctx.step(conn, session, 3)
    ctx.expect(again.get("type") == "step_result" and again.get("seq") == 3, ("GW-DEADLINE-3",),
               f"re-sending the queued, timed-out seq=3 got {_outcome(again)}: it never started, so it must run now")


async def _queued_deadline(ctx: Context, conn: RawConnection) -> None:
    """Without a slow action: a 1 ms deadline on a step queued behind others of the same session."""
    depth = max(1, min(64, ctx.limits.get("max_inflight", 64) - 2))
    session = (await ctx.open_session(conn, max_turns=depth + 10))["session"]
    ahead = [ctx.step_message(session, seq) for seq in range(1, depth + 1)]
    last = ctx.step_message(session, depth + 1, deadline_ms=1)
    for message in ahead + [last]:
        await conn.send(message)
    answer = await conn.answer(last["id"], ctx.timeout)
    for message in ahead:
        await conn.answer(message["id"], ctx.timeout)
    if _outcome(answer) != "TIMEOUT":
        ctx.expect(answer.get("type") == "step_result", ("GW-DEADLINE-1",), f"a step with deadline_ms=1 got {_outcome(answer)}")
        raise Skipped(
            "inconclusive: the server finished the step within its 1 ms deadline, so no TIMEOUT could be provoked; "
            "pass --slow-action to test deadlines on a running step"
        )
    await _quiet(ctx, conn, last["id"], 0.3, ("GW-DEADLINE-2",))
    again = await ctx.step(conn, session, depth + 1)
    ctx.expect(
        (again.get("type") == "step_result" and again.get("seq") == depth + 1) or _outcome(again) == "ENV_CRASHED",
        ("GW-DEADLINE-3",),
        f"re-sending the timed-out seq={depth + 1} got {_outcome(again)}",
    )


@check("deadline", area="DEADLINE", level="full", needs=("deadlines",), requirements=("GW-DEADLINE-1", "GW-DEADLINE-2", "GW-DEADLINE-3"))
async def deadline(ctx: Context) -> None:
    """A step past its deadline: TIMEOUT when it passes, never a second answer, and the session stays consistent."""
    conn = await ctx.connect()
    if ctx.options.slow_action:
        await _slow_deadline(ctx, conn, ctx.options.slow_action)
    else:
        await _queued_deadline(ctx, conn)


@check("batch-deadline", area="DEADLINE", level="full", needs=("deadlines", "batch"), requirements=("GW-DEADLINE-2", "GW-DEADLINE-4"))
async def batch_deadline(ctx: Context) -> None:
    """A batch past its deadline: one TIMEOUT; each of its steps then re-sends cleanly."""
    slow = ctx.need_slow_action("timing out a batch")
    slow_s = ctx.options.slow_ms / 1000
    conn = await ctx.connect()
    sessions = [(await ctx.open_session(conn, max_turns=5))["session"] for _ in range(2)]
    request = {
        "type": "step_batch",
        "id": ctx.next_id(),
        "steps": [{"session": sessions[0], "seq": 1, "action": slow}, {"session": sessions[1], "seq": 1, "action": ctx.probe}],
        "deadline_ms": max(20, ctx.options.slow_ms // 5),
    }
    answer = await ctx.request(conn, request, timeout=ctx.timeout + slow_s)
    ctx.expect_error(answer, "TIMEOUT", ("GW-DEADLINE-4",), "a batch holding a slow step, with a short deadline", request_id=request["id"])
    await _quiet(ctx, conn, request["id"], slow_s + 0.2, ("GW-DEADLINE-2",))
    for session in sessions:
        again = await ctx.step(conn, session, 1)
        ctx.expect(
            (again.get("type") == "step_result" and again.get("seq") == 1) or _outcome(again) == "ENV_CRASHED",
            ("GW-DEADLINE-4",),
            f"re-sending seq=1 of a timed-out batch entry got {_outcome(again)}",
        )


# ====================================================================== heartbeat


@check("server-ping", area="HEARTBEAT", level="full", needs=("heartbeat",), requirements=("GW-HEARTBEAT-2", "GW-REQUEST-1"))
async def server_ping(ctx: Context) -> None:
    """A silent client gets a ping (with a valid id) after about heartbeat_interval_ms."""
    interval = ctx.limits.get("heartbeat_interval_ms", 0) / 1000
    wait = 2 * interval + 0.5
    if wait > ctx.options.max_wait:
        raise Skipped(f"heartbeat_interval_ms={interval * 1000:.0f} needs a {wait:.1f}s wait, over --max-wait={ctx.options.max_wait:g}s")
    conn = await ctx.connect()
    ping = await conn.receive(lambda m: m.get("type") == "ping", wait, "a ping from the server")
    ping_id = ping.get("id")
    ctx.expect(isinstance(ping_id, int) and 0 <= ping_id <= 2**53 - 1, ("GW-REQUEST-1",), f"the server's ping has id {ping_id!r}")


@check("half-open-reaped", area="HEARTBEAT", level="full", needs=("heartbeat",), requirements=("GW-HEARTBEAT-3",))
async def half_open_reaped(ctx: Context) -> None:
    """A connection that stops answering is closed within about three intervals; its sessions are detached."""
    interval = ctx.limits.get("heartbeat_interval_ms", 0) / 1000
    budget = 4 * interval + 1.0
    if budget > ctx.options.max_wait:
        raise Skipped(f"heartbeat_interval_ms={interval * 1000:.0f} needs a {budget:.1f}s wait, over --max-wait={ctx.options.max_wait:g}s")
    silent = await ctx.connect(label="silent", answer_pings=False)
    opened = await ctx.open_session(silent, max_turns=3)
    quiet_since = time.monotonic()
    closed = await silent.wait_closed(budget)
    ctx.expect(closed, ("GW-HEARTBEAT-3",),
               f"a connection that answered no ping for {budget:.1f}s (heartbeat_interval_ms={interval * 1000:.0f}) is still open")
    ctx.transcript.add("--", "silent", f"closed by the server {time.monotonic() - quiet_since:.2f}s after the client fell silent")
    if "resume" in ctx.capabilities:
        conn = await ctx.connect(label="back")
        resumed = await _resume(ctx, conn, opened)
        ctx.expect_type(resumed, "resumed", ("GW-HEARTBEAT-3",), "resume of a session of the reaped connection (it must be detached, not closed)")


@check("no-hello-closed", area="HANDSHAKE", level="full", requirements=("GW-HANDSHAKE-7",))
async def no_hello_closed(ctx: Context) -> None:
    """A connection that sends no hello is closed after about heartbeat_interval_ms."""
    interval = ctx.limits.get("heartbeat_interval_ms", 0) / 1000
    budget = 3 * interval + 1.0
    if budget > ctx.options.max_wait:
        raise Skipped(f"heartbeat_interval_ms={interval * 1000:.0f} needs a {budget:.1f}s wait, over --max-wait={ctx.options.max_wait:g}s")
    mute = await ctx.connect(handshake=False, answer_pings=False, label="mute")
    ctx.expect(await mute.wait_closed(budget), ("GW-HANDSHAKE-7",), f"a connection that sent no hello for {budget:.1f}s is still open")


PRE_WELCOME_FRAME_BYTES = 65_536  # GW-HANDSHAKE-10


@check("large-frame-before-welcome", area="HANDSHAKE", level="full", requirements=("GW-HANDSHAKE-10",))
async def large_frame_before_welcome(ctx: Context) -> None:
    """Before its welcome a connection has shown no token: a frame over 65,536 bytes closes it (1009)."""
    size = PRE_WELCOME_FRAME_BYTES + 1024
    conn = await ctx.connect(handshake=False, label="unwelcomed")
    try:
        await conn.send_frame(_padded_ping(conn.encoding, ctx.next_id(), size))
    except ConnectionLost:
        pass  # closed while the frame was still being sent: as asked
    closed = await conn.wait_closed(ctx.timeout)
    ctx.expect(
        closed and conn.close_code == 1009,
        ("GW-HANDSHAKE-10",),
        f"a {size}-byte frame before the welcome: the connection {'closed with ' + str(conn.close_code) if closed else 'stayed open'}, expected close 1009",
    )


# ====================================================================== auth


@check("auth", area="AUTH", level="full", needs=("auth",), requirements=("GW-AUTH-1", "GW-HANDSHAKE-3"))
async def auth(ctx: Context) -> None:
    """A hello with a missing or wrong token: UNAUTHORIZED, then the connection closes."""
    if ctx.options.token is None:
        raise Skipped("the server announces auth; pass --token to check that it refuses wrong ones")
    for what, token in (("no token", None), ("a wrong token", ctx.options.token + "-wrong"), ("an empty token", "")):
        conn = await ctx.connect(handshake=False, label=what.replace(" ", "-"))
        hello = ctx.hello()
        hello.pop("token", None)
        if token is not None:
            hello["token"] = token
        answer = await ctx.request(conn, hello)
        ctx.expect_error(answer, "UNAUTHORIZED", ("GW-AUTH-1",), f"hello with {what}", request_id=hello["id"])
        ctx.expect(await conn.wait_closed(ctx.timeout), ("GW-AUTH-1",), f"the connection stayed open after UNAUTHORIZED ({what})")


@check("auth-not-required", area="AUTH", level="full", requirements=("GW-HANDSHAKE-4",))
async def auth_not_required(ctx: Context) -> None:
    """A server that does not announce auth welcomes a hello without a token."""
    if "auth" in ctx.capabilities:
        raise Skipped("the server announces auth (see the auth check)")
    conn = await ctx.connect(handshake=False)
    hello = ctx.hello()
    hello.pop("token", None)
    welcome = await ctx.request(conn, hello)
    ctx.expect_type(welcome, "welcome", ("GW-HANDSHAKE-4",), "hello without a token to a server that does not announce auth")


# ====================================================================== limits


@check("frame-too-large", area="LIMIT", level="full", requirements=("GW-LIMIT-2", "GW-ERROR-6"))
async def frame_too_large(ctx: Context) -> None:
    """A frame over max_frame_bytes: FRAME_TOO_LARGE (or close 1009); other connections carry on."""
    max_frame = ctx.limits.get("max_frame_bytes", 0)
    if not 0 < max_frame <= 64 * 1024 * 1024:
        raise Skipped(f"max_frame_bytes={max_frame} is too large to exceed cheaply")
    bystander = await ctx.connect(label="bystander")
    session = (await ctx.open_session(bystander, max_turns=3))["session"]
    conn = await ctx.connect(label="big")
    request_id = ctx.next_id()
    await conn.send_frame(_padded_ping(conn.encoding, request_id, max_frame + 1))
    try:
        answer = await conn.receive(lambda m: m.get("type") == "error", ctx.timeout, "FRAME_TOO_LARGE")
    except Exception as exc:  # closing with 1009 instead of answering is allowed
        ctx.expect(conn.close_code == 1009, ("GW-LIMIT-2",), f"no FRAME_TOO_LARGE and no close 1009 for a {max_frame + 1}-byte frame: {exc}")
    else:
        ctx.expect_error(answer, "FRAME_TOO_LARGE", ("GW-LIMIT-2",), f"a frame of max_frame_bytes+1={max_frame + 1} bytes")
    result = await ctx.step(bystander, session, 1)
    ctx.expect_type(result, "step_result", ("GW-ERROR-6",), "another connection's step after the oversized frame")


def _padded_ping(encoding: str, request_id: int, size: int) -> bytes | str:
    """A ping padded with an unknown field to exactly `size` bytes."""
    base = len(encode(encoding, {"type": "ping", "id": request_id, "pad": ""}))
    pad = size - base
    for _ in range(4):  # msgpack's string header grows with the length; settle it
        frame = encode(encoding, {"type": "ping", "id": request_id, "pad": "x" * max(0, pad)})
        frame_size = len(frame.encode() if isinstance(frame, str) else frame)
        if frame_size == size:
            return frame
        pad += size - frame_size
    return frame


@check("answer-too-large", area="LIMIT", level="full", requirements=("GW-LIMIT-7", "GW-ERROR-2"))
async def answer_too_large(ctx: Context) -> None:
    """A client that takes small frames gets ANSWER_TOO_LARGE for a larger answer, and carries on."""
    probe = await ctx.connect(label="measure")
    envs = await ctx.request(probe, {"type": "list_envs"})
    ctx.expect_type(envs, "env_list", ("GW-LIMIT-7",), "list_envs")
    welcome_size = len(_frame_bytes(probe.encoding, ctx.welcome))
    envs_size = len(_frame_bytes(probe.encoding, envs))
    limit = max(MIN_CLIENT_FRAME_BYTES, welcome_size + 256)
    if envs_size <= limit:
        raise Skipped(f"the env_list answer ({envs_size} bytes) fits in the smallest limit a hello may set here ({limit} bytes)")
    conn = await ctx.connect(label="small-frames", max_frame_bytes=limit)
    request = {"type": "list_envs", "id": ctx.next_id()}
    answer = await ctx.request(conn, request)
    ctx.expect_error(
        answer, "ANSWER_TOO_LARGE", ("GW-LIMIT-7",), f"an env_list of {envs_size} bytes to a client taking {limit}", request_id=request["id"]
    )
    await ctx.expect_alive(conn, ("GW-LIMIT-7",), "ANSWER_TOO_LARGE")


def _frame_bytes(encoding: str, message: dict[str, Any]) -> bytes:
    frame = encode(encoding, message)
    return frame.encode() if isinstance(frame, str) else frame


@check("action-too-large", area="LIMIT", level="full", requirements=("GW-LIMIT-5", "GW-ERROR-3"))
async def action_too_large(ctx: Context) -> None:
    """An action over max_action_bytes: INVALID_ACTION; the session is unchanged."""
    max_action = ctx.limits.get("max_action_bytes", 0)
    if not 0 < max_action <= ctx.limits.get("max_frame_bytes", 0) - 1024:
        raise Skipped(f"max_action_bytes={max_action} cannot be exceeded within max_frame_bytes")
    conn = await ctx.connect()
    session = (await ctx.open_session(conn, max_turns=3))["session"]
    step = ctx.step_message(session, 1, "\u00e9" * (max_action // 2 + 1))  # two UTF-8 bytes each: bytes count, not characters
    answer = await ctx.request(conn, step)
    ctx.expect_error(answer, "INVALID_ACTION", ("GW-LIMIT-5",), f"an action of {max_action + 2} UTF-8 bytes", request_id=step["id"], session=session)
    result = await ctx.step(conn, session, 1)
    ctx.expect_type(result, "step_result", ("GW-LIMIT-5",), "step seq=1 after the refused action (the session must be unchanged)")


@check("session-cap", area="LIMIT", level="full", requirements=("GW-LIMIT-3", "GW-ERROR-4"))
async def session_cap(ctx: Context) -> None:
    """An open beyond max_sessions_per_connection: CAPACITY with retry_after_ms.

    The per-connection cap is the one a client can reach alone; max_sessions counts every client's sessions."""
    cap = ctx.limits.get("max_sessions_per_connection", 0)
    if not 0 < cap <= 64:
        raise Skipped(f"max_sessions_per_connection={cap} is too large to reach cheaply")
    if ctx.limits.get("max_sessions", 0) <= cap:
        raise Skipped("max_sessions is not above max_sessions_per_connection; the global cap depends on other clients' sessions")
    conn = await ctx.connect()
    sessions = []
    try:
        for _ in range(cap):
            sessions.append((await ctx.open_session(conn, max_turns=1, reset=False))["session"])
        request = ctx.open_message(reset=False)
        answer = await ctx.request(conn, request)
        ctx.expect_error(answer, "CAPACITY", ("GW-LIMIT-3",), f"open number {cap + 1} with a cap of {cap}", request_id=request["id"])
        ctx.expect(isinstance(answer.get("retry_after_ms"), int), ("GW-ERROR-4",), "CAPACITY must carry retry_after_ms")
    finally:
        for session in sessions:
            await ctx.request(conn, {"type": "close", "session": session})


@check("inflight-cap", area="LIMIT", level="full", requirements=("GW-LIMIT-4", "GW-ERROR-4"))
async def inflight_cap(ctx: Context) -> None:
    """A request beyond max_inflight: CAPACITY with retry_after_ms, not executed."""
    cap = ctx.limits.get("max_inflight", 0)
    if not 0 < cap <= 256:
        raise Skipped(f"max_inflight={cap} is too large to reach cheaply")
    slow = ctx.need_slow_action("filling max_inflight")
    slow_s = ctx.options.slow_ms / 1000
    conn = await ctx.connect()
    session = (await ctx.open_session(conn, max_turns=cap + 10))["session"]
    held = [ctx.step_message(session, 1, slow)] + [ctx.step_message(session, seq) for seq in range(2, cap + 1)]
    extra = ctx.step_message(session, cap + 1)
    for message in held + [extra]:
        await conn.send(message)
    answer = await conn.answer(extra["id"], ctx.timeout + slow_s)
    ctx.expect_error(answer, "CAPACITY", ("GW-LIMIT-4",), f"request number {cap + 1} in flight with max_inflight={cap}", request_id=extra["id"])
    ctx.expect(isinstance(answer.get("retry_after_ms"), int), ("GW-ERROR-4",), "CAPACITY must carry retry_after_ms")
    for message in held:
        reply = await conn.answer(message["id"], ctx.timeout + slow_s)
        ctx.expect_type(reply, "step_result", ("GW-LIMIT-4",), f"held step seq={message['seq']}")
    again = await ctx.step(conn, session, cap + 1)
    ctx.expect(again.get("type") == "step_result" and again.get("seq") == cap + 1, ("GW-LIMIT-4",),
               f"re-sending the refused seq={cap + 1} got {_outcome(again)}: the refused request must not have run")


# ====================================================================== images


@check("images", area="FRAME", level="full", needs=("images",), requirements=("GW-FRAME-10", "GW-STEP-8"))
async def images(ctx: Context) -> None:
    """Images travel as bin in msgpack and base64 in JSON, and only to clients that listed `images`."""
    if not ctx.env_info.get("images"):
        raise Skipped(f"{ctx.env!r} does not declare image observations")
    seen = 0
    for encoding in ctx.encodings:
        conn = await ctx.connect(encoding)
        opened = await ctx.open_session(conn, max_turns=2)
        for image in (opened.get("observation") or {}).get("images") or []:
            seen += 1
            data = image.get("data")
            if encoding == "msgpack":
                ctx.expect(isinstance(data, bytes), ("GW-FRAME-10",), f"image data in a msgpack frame must be bin, got {type(data).__name__}")
            else:
                try:
                    base64.b64decode(data, validate=True)
                except (binascii.Error, TypeError, ValueError):
                    ctx.fail(("GW-FRAME-10",), f"image data in a JSON frame must be base64 text, got {str(data)[:60]!r}")
    if not seen:
        raise Skipped(f"the first observation of {ctx.env!r} carried no image")
    plain = await ctx.connect(label="no-images", capabilities=[c for c in ctx.capabilities if c != "images"])
    opened = await ctx.open_session(plain, max_turns=2)
    ctx.expect(not (opened.get("observation") or {}).get("images"), ("GW-STEP-8",),
               "a client that did not list `images` got images in its observation")



# ====================================================================== drain


@check("drain", area="DRAIN", level="full", final=True,
       requirements=("GW-DRAIN-1", "GW-DRAIN-2", "GW-DRAIN-3", "GW-DRAIN-4", "GW-ERROR-5"))
async def drain(ctx: Context) -> None:
    """Graceful shutdown: drain notice, DRAINING for opens, in-flight steps answered, goodbye, close 1001."""
    if ctx.options.shutdown is None:
        raise Skipped("needs a way to shut the server down: from Python, pass shutdown= (check_environment does)")
    slow = ctx.options.slow_action
    wait = ctx.timeout + (ctx.options.slow_ms / 1000 if slow else 0)
    conn = await ctx.connect()
    session = (await ctx.open_session(conn, max_turns=5))["session"]
    step = ctx.step_message(session, 1, slow or ctx.probe)
    await conn.send(step)
    if slow:
        await asyncio.sleep(0.05)  # the step is running when the shutdown starts
    shutdown = asyncio.ensure_future(ctx.options.shutdown())
    try:
        notice = await conn.receive(lambda m: m.get("type") == "notice", wait, "a notice after the shutdown began")
        ctx.expect(notice.get("kind") == "drain" and isinstance(notice.get("retry_after_ms"), int), ("GW-DRAIN-1",),
                   f"the first notice of a shutdown must be kind=drain with retry_after_ms, got {notice!r:.200}")
        if slow:  # the running step holds the drain open, so the server still reads requests
            refused = await ctx.request(conn, ctx.open_message(), timeout=wait)
            ctx.expect_error(refused, "DRAINING", ("GW-DRAIN-2",), "an open while the server drains")
            ctx.expect(isinstance(refused.get("retry_after_ms"), int), ("GW-ERROR-5",), "DRAINING should carry retry_after_ms")
        answer = await conn.answer(step["id"], wait)
        ctx.expect_type(answer, "step_result", ("GW-DRAIN-3",), "the step in flight when the shutdown began")
        goodbye = await conn.receive(lambda m: m.get("type") == "notice", wait, "the goodbye notice")
        ctx.expect(goodbye.get("kind") == "goodbye", ("GW-DRAIN-4",), f"after drain, expected a goodbye notice, got {goodbye!r:.200}")
        ctx.expect(await conn.wait_closed(wait), ("GW-DRAIN-4",), "the connection stayed open after goodbye")
        ctx.expect(conn.close_code == 1001, ("GW-DRAIN-4",), f"the server closed with code {conn.close_code}, not 1001 (going away)")
    finally:
        await shutdown
