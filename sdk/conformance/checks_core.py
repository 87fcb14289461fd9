"""Core checks: handshake and versions, environments, sessions and steps, frames and errors.

Every server must pass these, whatever capabilities it announces.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import msgpack
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .framework import Context, Skipped, check
from .spec_tables import CAPABILITIES, LIMIT_FIELDS, SUBPROTOCOL_BY_ENCODING
from .wire import ConnectionLost, NoAnswer, RawConnection

NO_SUCH_SESSION = "gymwire-conformance-no-such-session"
# An origin no operator allows (.invalid is reserved, RFC 2606).
FOREIGN_ORIGIN = "http://gymwire-conformance.invalid"


def ended(result: dict[str, Any]) -> bool:
    return bool(result.get("terminated")) or bool(result.get("truncated"))


def comparable(message: dict[str, Any]) -> dict[str, Any]:
    """A message without its request id, to compare a replayed answer with the original."""
    return {k: v for k, v in message.items() if k != "id"}


def same_except_session(error_a: dict[str, Any], error_b: dict[str, Any], session_a: str, session_b: str) -> bool:
    text_a = str(error_a.get("message", "")).replace(session_a, "<session>")
    text_b = str(error_b.get("message", "")).replace(session_b, "<session>")
    return (error_a.get("code"), text_a) == (error_b.get("code"), text_b)


async def play_episode(ctx: Context, conn: RawConnection, session: str, max_turns: int, first_seq: int = 1) -> list[dict[str, Any]]:
    """Step with the probe action until the episode ends; the turn limit must end it in time."""
    results: list[dict[str, Any]] = []
    for turn in range(1, max_turns + 1):
        seq = first_seq + turn - 1
        result = await ctx.step(conn, session, seq)
        ctx.expect_type(result, "step_result", ("GW-SESSION-4",), f"step seq={seq} of a running episode")
        ctx.expect(
            result.get("session") == session and result.get("seq") == seq,
            ("GW-STEP-3",),
            f"step_result must carry session {session!r} and seq {seq}, got session={result.get('session')!r} "
            f"seq={result.get('seq')!r}",
        )
        observation = result.get("observation")
        ctx.expect(
            isinstance(observation, dict) and isinstance(observation.get("text"), str),
            ("GW-STEP-3",),
            f"step_result.observation must be a map with text, got {observation!r:.200}",
        )
        results.append(result)
        if ended(result):
            break
        ctx.expect("metrics" not in result, ("GW-STEP-5",), f"a step that does not end the episode carries metrics: {result.get('metrics')}")
    last = results[-1]
    ctx.expect(
        ended(last),
        ("GW-STEP-4",),
        f"after {max_turns} steps with max_turns={max_turns} the episode neither terminated nor was truncated",
    )
    metrics = last.get("metrics")
    ctx.expect(isinstance(metrics, dict), ("GW-STEP-5",), f"the step that ends the episode must carry metrics, got {metrics!r}")
    ctx.expect(
        isinstance(metrics.get("success"), bool) and isinstance(metrics.get("score"), (int, float)),
        ("GW-STEP-5",),
        f"metrics must carry success (bool) and score (number): {metrics}",
    )
    ctx.expect(
        metrics.get("turns") == len(results),
        ("GW-STEP-5",),
        f"metrics.turns is {metrics.get('turns')!r}, but the episode had {len(results)} step(s)",
    )
    total = sum(float(r.get("reward", 0.0)) for r in results)
    reported = metrics.get("total_reward")
    ctx.expect(
        isinstance(reported, (int, float)) and math.isclose(reported, total, rel_tol=1e-6, abs_tol=1e-9),
        ("GW-STEP-5",),
        f"metrics.total_reward is {reported!r}, the step rewards sum to {total}",
    )
    return results


# ====================================================================== handshake and versions


async def _handshake(ctx: Context, encoding: str) -> None:
    conn = await ctx.connect(encoding, handshake=False)
    expected = SUBPROTOCOL_BY_ENCODING[encoding]
    ctx.expect(
        conn.ws.subprotocol == expected,
        ("GW-VERSION-2",),
        f"offered only {expected!r}; the server selected {conn.ws.subprotocol!r}",
    )
    welcome = await ctx.request(conn, ctx.hello())
    ctx.expect_type(welcome, "welcome", ("GW-HANDSHAKE-3",), "a valid hello")
    ctx.expect(welcome.get("version") == "1.0", ("GW-VERSION-5",), f"hello 1.0 must get version '1.0', got {welcome.get('version')!r}")
    capabilities = welcome.get("capabilities")
    ctx.expect(
        isinstance(capabilities, list) and set(capabilities) <= set(CAPABILITIES),
        ("GW-HANDSHAKE-4", "GW-VERSION-6"),
        f"welcome.capabilities must list only v1.0 capabilities {list(CAPABILITIES)}, got {capabilities!r}",
    )
    limits = welcome.get("limits")
    missing = [name for name in LIMIT_FIELDS if not isinstance((limits or {}).get(name), int)]
    ctx.expect(not missing, ("GW-HANDSHAKE-4", "GW-LIMIT-1"), f"welcome.limits lacks integer {missing}: {limits!r}")
    envs = welcome.get("envs")
    ctx.expect(
        isinstance(envs, list) and envs and all(isinstance(e, str) for e in envs),
        ("GW-HANDSHAKE-4",),
        f"welcome.envs must list the hosted environment names, got {envs!r}",
    )
    server = welcome.get("server")
    ctx.expect(isinstance(server, dict) and isinstance(server.get("name"), str), ("GW-HANDSHAKE-4",), f"welcome.server: {server!r}")
    await ctx.expect_alive(conn, ("GW-FRAME-2",), "the handshake")


@check("handshake-msgpack", area="HANDSHAKE",
       requirements=("GW-FRAME-1", "GW-FRAME-2", "GW-VERSION-2", "GW-VERSION-5", "GW-VERSION-6", "GW-HANDSHAKE-3", "GW-HANDSHAKE-4", "GW-LIMIT-1"))
async def handshake_msgpack(ctx: Context) -> None:
    """hello/welcome over gymwire.v1+msgpack (binary frames)."""
    await _handshake(ctx, "msgpack")


@check("handshake-json", area="HANDSHAKE",
       requirements=("GW-FRAME-1", "GW-FRAME-2", "GW-VERSION-2", "GW-VERSION-5", "GW-HANDSHAKE-3", "GW-HANDSHAKE-4"))
async def handshake_json(ctx: Context) -> None:
    """hello/welcome over gymwire.v1+json (text frames)."""
    await _handshake(ctx, "json")


@check("subprotocol-preference", area="VERSION", requirements=("GW-VERSION-2",))
async def subprotocol_preference(ctx: Context) -> None:
    """The server picks the first subprotocol of the client's list that it speaks."""
    spoken = {SUBPROTOCOL_BY_ENCODING[e] for e in ctx.encodings}
    for offered in (["gymwire.v1+json", "gymwire.v1+msgpack"], ["chat", "gymwire.v2+json", "gymwire.v1+msgpack", "gymwire.v1+json"]):
        wanted = next(p for p in offered if p in spoken)
        conn = await ctx.connect(wanted.rsplit("+", 1)[1], handshake=False, subprotocols=offered)
        ctx.expect(conn.ws.subprotocol == wanted, ("GW-VERSION-2",), f"offered {offered}: must select {wanted!r}, got {conn.ws.subprotocol!r}")
        welcome = await ctx.request(conn, ctx.hello())
        ctx.expect_type(welcome, "welcome", ("GW-VERSION-2",), f"hello in the selected encoding {wanted}")


@check("upgrade-refused", area="VERSION", requirements=("GW-VERSION-3",))
async def upgrade_refused(ctx: Context) -> None:
    """No gymwire subprotocol, or only another major: HTTP 400 naming the supported subprotocols."""
    for offered in ([], ["chat.example"], ["gymwire.v2+msgpack", "gymwire.v99+json"]):
        ctx.transcript.add("->", "upgrade", f"WebSocket upgrade offering {offered}")
        try:
            ws = await connect(ctx.url, subprotocols=offered or None, open_timeout=ctx.timeout, ping_interval=None)  # type: ignore[arg-type]
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = (exc.response.body or b"").decode("utf-8", "replace")
            ctx.transcript.add("<-", "upgrade", f"HTTP {status}: {body[:200]!r}")
            ctx.expect(status == 400, ("GW-VERSION-3",), f"offering {offered}: expected HTTP 400, got {status}")
            ctx.expect(
                "gymwire.v1+msgpack" in body or "gymwire.v1+json" in body,
                ("GW-VERSION-3",),
                f"offering {offered}: the 400 body must name the supported subprotocols, got {body[:200]!r}",
            )
        else:
            ctx.transcript.add("<-", "upgrade", f"upgrade accepted with subprotocol {ws.subprotocol!r}")
            await ws.close()
            ctx.fail(("GW-VERSION-3",), f"offering {offered}: the server accepted the upgrade (subprotocol {ws.subprotocol!r})")


@check("version-negotiation", area="VERSION", requirements=("GW-VERSION-5",))
async def version_negotiation(ctx: Context) -> None:
    """A hello of a later minor version gets the common major and the lower minor."""
    conn = await ctx.connect(handshake=False)
    welcome = await ctx.request(conn, ctx.hello(version="1.999"))
    ctx.expect_type(welcome, "welcome", ("GW-VERSION-5",), "hello with version 1.999")
    version = str(welcome.get("version"))
    major, _, minor = version.partition(".")
    ctx.expect(
        major == "1" and minor.isdigit() and int(minor) <= 999,
        ("GW-VERSION-5",),
        f"hello 1.999 must get version 1.<min(999, server minor)>, got {version!r}",
    )


@check("unsupported-version", area="VERSION", requirements=("GW-VERSION-4", "GW-HANDSHAKE-3"))
async def unsupported_version(ctx: Context) -> None:
    """A hello of another major version: UNSUPPORTED_VERSION, then the connection closes."""
    conn = await ctx.connect(handshake=False)
    hello = ctx.hello(version="2.0")
    answer = await ctx.request(conn, hello)
    ctx.expect_error(answer, "UNSUPPORTED_VERSION", ("GW-VERSION-4",), "hello version 2.0", request_id=hello["id"])
    ctx.expect(await conn.wait_closed(ctx.timeout), ("GW-VERSION-4", "GW-HANDSHAKE-3"), "the connection stayed open after UNSUPPORTED_VERSION")


@check("malformed-version", area="VERSION", requirements=("GW-VERSION-7", "GW-HANDSHAKE-3"))
async def malformed_version(ctx: Context) -> None:
    """A hello whose version is not MAJOR.MINOR: BAD_FRAME, then the connection closes."""
    conn = await ctx.connect(handshake=False)
    hello = ctx.hello(version="one")
    answer = await ctx.request(conn, hello)
    ctx.expect_error(answer, "BAD_FRAME", ("GW-VERSION-7",), "hello version 'one'", request_id=hello["id"])
    ctx.expect(await conn.wait_closed(ctx.timeout), ("GW-VERSION-7",), "the connection stayed open after a malformed hello version")


@check("browser-origin-refused", area="HANDSHAKE", requirements=("GW-HANDSHAKE-8",))
async def browser_origin_refused(ctx: Context) -> None:
    """An upgrade carrying a browser Origin the operator did not allow: HTTP 403, no connection."""
    subprotocol = SUBPROTOCOL_BY_ENCODING[ctx.encodings[0]]
    for origin in (FOREIGN_ORIGIN, "null"):
        ctx.transcript.add("->", "upgrade", f"WebSocket upgrade with Origin: {origin}")
        try:
            ws = await connect(
                ctx.url, subprotocols=[subprotocol], origin=origin, open_timeout=ctx.timeout, ping_interval=None  # type: ignore[list-item,arg-type]
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            ctx.transcript.add("<-", "upgrade", f"HTTP {status}: {(exc.response.body or b'')[:200]!r}")
            ctx.expect(status == 403, ("GW-HANDSHAKE-8",), f"Origin {origin!r}: expected HTTP 403, got {status}")
        else:
            ctx.transcript.add("<-", "upgrade", f"upgrade accepted with subprotocol {ws.subprotocol!r}")
            await ws.close()
            ctx.fail(("GW-HANDSHAKE-8",), f"a handshake with Origin {origin!r} was accepted: any web page could drive this server")


@check("invalid-hello-closed", area="HANDSHAKE", requirements=("GW-HANDSHAKE-9",))
async def invalid_hello_closed(ctx: Context) -> None:
    """A hello that breaks its schema (a token that is a number): BAD_FRAME, then the connection closes."""
    conn = await ctx.connect(handshake=False)
    hello = ctx.hello(token=12345)
    answer = await ctx.request(conn, hello)
    ctx.expect_error(answer, "BAD_FRAME", ("GW-HANDSHAKE-9",), "hello with a numeric token", request_id=hello["id"])
    ctx.expect(await conn.wait_closed(ctx.timeout), ("GW-HANDSHAKE-9",), "the connection stayed open after an invalid hello")


@check("handshake-required", area="HANDSHAKE", requirements=("GW-HANDSHAKE-2",))
async def handshake_required(ctx: Context) -> None:
    """Requests before the welcome: HANDSHAKE_REQUIRED with the request id; then hello still works."""
    conn = await ctx.connect(handshake=False)
    for request in ({"type": "list_envs"}, {"type": "open", "env": ctx.env, "task": ctx.task()}):
        answer = await ctx.request(conn, request)
        ctx.expect_error(answer, "HANDSHAKE_REQUIRED", ("GW-HANDSHAKE-2",), f"{request['type']} before hello", request_id=request["id"])
    welcome = await ctx.request(conn, ctx.hello())
    ctx.expect_type(welcome, "welcome", ("GW-HANDSHAKE-2",), "hello after refused requests")


@check("second-hello", area="HANDSHAKE", requirements=("GW-HANDSHAKE-6",))
async def second_hello(ctx: Context) -> None:
    """A second hello: INVALID_STATE; the connection and its sessions carry on."""
    conn = await ctx.connect()
    opened = await ctx.open_session(conn, max_turns=3)
    hello = ctx.hello()
    answer = await ctx.request(conn, hello)
    ctx.expect_error(answer, "INVALID_STATE", ("GW-HANDSHAKE-6",), "a second hello", request_id=hello["id"])
    result = await ctx.step(conn, opened["session"], 1)
    ctx.expect_type(result, "step_result", ("GW-HANDSHAKE-6",), "a step after the second hello")


@check("ping-pong", area="HEARTBEAT", requirements=("GW-HEARTBEAT-1",))
async def ping_pong(ctx: Context) -> None:
    """A client ping gets a pong with the same id."""
    conn = await ctx.connect()
    for ping_id in (0, 424242, 2**53 - 1):
        pong = await ctx.request(conn, {"type": "ping", "id": ping_id})
        ctx.expect_type(pong, "pong", ("GW-HEARTBEAT-1",), f"ping id={ping_id}")


# ====================================================================== environments


@check("list-envs", area="ENV", requirements=("GW-ENV-1",))
async def list_envs(ctx: Context) -> None:
    """env_list describes every environment the welcome names."""
    conn = await ctx.connect()
    answer = await ctx.request(conn, {"type": "list_envs"})
    ctx.expect_type(answer, "env_list", ("GW-ENV-1",), "list_envs")
    envs = answer.get("envs")
    ctx.expect(isinstance(envs, list), ("GW-ENV-1",), f"env_list.envs must be a list, got {envs!r:.200}")
    names = [e.get("name") for e in envs if isinstance(e, dict)]
    ctx.expect(
        sorted(names) == sorted(ctx.welcome["envs"]),
        ("GW-ENV-1",),
        f"env_list names {sorted(map(str, names))} differ from welcome.envs {sorted(ctx.welcome['envs'])}",
    )
    for env in envs:
        ctx.expect(
            isinstance(env.get("splits", {}), dict) and isinstance(env.get("default_max_turns", 1), int),
            ("GW-ENV-1",),
            f"environment metadata of {env.get('name')!r} is malformed: {env!r:.300}",
        )


@check("describe-env", area="ENV", requirements=("GW-ENV-2", "GW-ERROR-2"))
async def describe_env(ctx: Context) -> None:
    """describe_env answers each hosted environment; an unknown name gets UNKNOWN_ENV."""
    conn = await ctx.connect()
    for name in ctx.welcome["envs"]:
        answer = await ctx.request(conn, {"type": "describe_env", "env": name})
        ctx.expect_type(answer, "env_description", ("GW-ENV-2",), f"describe_env {name!r}")
        ctx.expect(
            isinstance(answer.get("env"), dict) and answer["env"].get("name") == name,
            ("GW-ENV-2",),
            f"env_description for {name!r} describes {answer.get('env')!r:.200}",
        )
    request = {"type": "describe_env", "id": ctx.next_id(), "env": "gymwire-conformance-no-such-env"}
    answer = await ctx.request(conn, request)
    ctx.expect_error(answer, "UNKNOWN_ENV", ("GW-ENV-2",), "describe_env of an unknown name", request_id=request["id"])


# ====================================================================== sessions and steps


async def _episode(ctx: Context, encoding: str) -> None:
    conn = await ctx.connect(encoding)
    opened = await ctx.open_session(conn, max_turns=2)
    session = opened.get("session")
    ctx.expect(isinstance(session, str) and session, ("GW-SESSION-3",), f"opened.session must be a non-empty string: {session!r}")
    ctx.expect(isinstance(opened.get("resume_token"), str), ("GW-SESSION-3",), "opened must carry a resume_token")
    ctx.expect(opened.get("max_turns") == 2, ("GW-SESSION-3",), f"open with max_turns=2 answered max_turns={opened.get('max_turns')!r}")
    observation = opened.get("observation")
    ctx.expect(
        isinstance(observation, dict) and isinstance(observation.get("text"), str),
        ("GW-SESSION-3",),
        f"an open that resets must carry the first observation, got {observation!r:.200}",
    )
    await play_episode(ctx, conn, session, max_turns=2)
    closed = await ctx.request(conn, {"type": "close", "session": session})
    ctx.expect_type(closed, "closed", ("GW-SESSION-9",), "close of a finished session")
    ctx.expect(closed.get("session") == session, ("GW-SESSION-9",), f"closed must name session {session!r}")


EPISODE_REQUIREMENTS = ("GW-SESSION-3", "GW-SESSION-4", "GW-STEP-3", "GW-STEP-4", "GW-STEP-5", "GW-SESSION-9", "GW-REQUEST-2")


@check("episode-msgpack", area="SESSION", requirements=EPISODE_REQUIREMENTS)
async def episode_msgpack(ctx: Context) -> None:
    """open, step with arbitrary text to the end of the episode (max_turns=2), close; msgpack."""
    await _episode(ctx, "msgpack")


@check("episode-json", area="SESSION", requirements=EPISODE_REQUIREMENTS)
async def episode_json(ctx: Context) -> None:
    """The same episode over JSON."""
    await _episode(ctx, "json")


@check("open-without-reset", area="SESSION", requirements=("GW-SESSION-3", "GW-SESSION-7", "GW-SESSION-4"))
async def open_without_reset(ctx: Context) -> None:
    """open reset=false: no observation; step before reset is INVALID_STATE; reset then step work."""
    conn = await ctx.connect()
    opened = await ctx.open_session(conn, max_turns=3, reset=False)
    session = opened["session"]
    ctx.expect("observation" not in opened or opened["observation"] is None, ("GW-SESSION-3",),
               "open with reset=false must not carry an observation")
    step = ctx.step_message(session, 1)
    answer = await ctx.request(conn, step)
    ctx.expect_error(answer, "INVALID_STATE", ("GW-SESSION-7",), "step before any reset", request_id=step["id"], session=session)
    reset = await ctx.request(conn, {"type": "reset", "session": session, "seq": 1})
    ctx.expect_type(reset, "reset_result", ("GW-SESSION-4",), "reset seq=1 of an opened session")
    ctx.expect(reset.get("seq") == 1 and isinstance((reset.get("observation") or {}).get("text"), str), ("GW-SESSION-4",),
               f"reset_result must carry seq 1 and an observation: {reset!r:.300}")
    result = await ctx.step(conn, session, 2)
    ctx.expect_type(result, "step_result", ("GW-SESSION-4",), "step seq=2 after the reset")


@check("new-episode", area="SESSION", requirements=("GW-SESSION-11",))
async def new_episode(ctx: Context) -> None:
    """reset after an episode ends starts a new one: turns and total reward start from 0."""
    conn = await ctx.connect()
    session = (await ctx.open_session(conn, max_turns=1))["session"]
    await play_episode(ctx, conn, session, max_turns=1)
    reset = await ctx.request(conn, {"type": "reset", "session": session, "seq": 2, "task": ctx.task()})
    ctx.expect_type(reset, "reset_result", ("GW-SESSION-11",), "reset of a finished episode")
    result = await ctx.step(conn, session, 3)
    ctx.expect_type(result, "step_result", ("GW-SESSION-11",), "the first step of the new episode")
    metrics = result.get("metrics") or {}
    ctx.expect(
        ended(result) and metrics.get("turns") == 1,
        ("GW-SESSION-11",),
        f"with max_turns=1 the new episode's first step must end it with metrics.turns=1, got {comparable(result)!r:.300}",
    )


@check("unknown-env", area="SESSION", requirements=("GW-SESSION-1",))
async def unknown_env(ctx: Context) -> None:
    """open of an environment the server does not host: UNKNOWN_ENV."""
    conn = await ctx.connect()
    request = {"type": "open", "id": ctx.next_id(), "env": "gymwire-conformance-no-such-env", "task": {}}
    answer = await ctx.request(conn, request)
    ctx.expect_error(answer, "UNKNOWN_ENV", ("GW-SESSION-1",), "open of an unknown environment", request_id=request["id"])


@check("invalid-task", area="SESSION", requirements=("GW-SESSION-2",))
async def invalid_task(ctx: Context) -> None:
    """open/reset with an unknown split or an index out of range: INVALID_TASK; the session is unchanged."""
    splits = ctx.env_info.get("splits") or {}
    if not splits:
        raise Skipped(f"{ctx.env!r} declares no task splits, so no task is invalid by its metadata")
    first, size = next(iter(splits.items()))
    conn = await ctx.connect()
    for task in ({"split": "gymwire-conformance-no-such-split", "index": 0}, {"split": first, "index": int(size)}):
        request = ctx.open_message(task=task)
        answer = await ctx.request(conn, request)
        ctx.expect_error(answer, "INVALID_TASK", ("GW-SESSION-2",), f"open with task {task}", request_id=request["id"])
    session = (await ctx.open_session(conn, max_turns=3))["session"]
    reset = {"type": "reset", "id": ctx.next_id(), "session": session, "seq": 1, "task": {"split": first, "index": int(size)}}
    answer = await ctx.request(conn, reset)
    ctx.expect_error(answer, "INVALID_TASK", ("GW-SESSION-2",), "reset with an index out of range", request_id=reset["id"])
    result = await ctx.step(conn, session, 1)
    ctx.expect_type(result, "step_result", ("GW-SESSION-2",), "step seq=1 after the refused reset (the session must be unchanged)")


@check("replay-last-seq", area="SESSION", requirements=("GW-SESSION-5",))
async def replay_last_seq(ctx: Context) -> None:
    """Re-sending the last answered seq gets the recorded answer (new id), not a second execution."""
    conn = await ctx.connect()
    session = (await ctx.open_session(conn, max_turns=2))["session"]
    first = await ctx.step(conn, session, 1)
    ctx.expect_type(first, "step_result", ("GW-SESSION-5",), "step seq=1")
    for _ in range(2):
        step = ctx.step_message(session, 1)
        again = await ctx.request(conn, step)
        ctx.expect_type(again, "step_result", ("GW-SESSION-5",), "re-sent step seq=1")
        ctx.expect(again.get("id") == step["id"], ("GW-SESSION-5",), f"the replay must carry the new id {step['id']}")
        ctx.expect(
            comparable(again) == comparable(first),
            ("GW-SESSION-5",),
            f"the replay of seq=1 differs from the recorded answer (executed again?): "
            f"first {comparable(first)!r:.250} replay {comparable(again)!r:.250}",
        )
    if not ended(first):
        second = await ctx.step(conn, session, 2)
        ctx.expect(
            ended(second) and (second.get("metrics") or {}).get("turns") == 2,
            ("GW-SESSION-5",),
            f"with max_turns=2, step seq=2 must end the episode at turn 2 (replays must not count): {comparable(second)!r:.300}",
        )
        first = second
    last_seq = first["seq"]
    again = await ctx.step(conn, session, last_seq)
    ctx.expect(comparable(again) == comparable(first), ("GW-SESSION-5",),
               "re-sending the last seq after the episode ended must still get the recorded answer")


@check("bad-sequence", area="SESSION", requirements=("GW-SESSION-6", "GW-ERROR-3", "GW-ERROR-8"))
async def bad_sequence(ctx: Context) -> None:
    """A seq that is neither next nor last: BAD_SEQUENCE naming the expected one; the session is unchanged.
    A 4,000-digit seq (JSON can carry it) is refused without being quoted whole."""
    conn = await ctx.connect()
    session = (await ctx.open_session(conn, max_turns=5))["session"]
    result = await ctx.step(conn, session, 1)
    ctx.expect_type(result, "step_result", ("GW-SESSION-4",), "step seq=1")
    for seq in (3, 0, 1000):
        step = ctx.step_message(session, seq)
        answer = await ctx.request(conn, step)
        ctx.expect_error(answer, "BAD_SEQUENCE", ("GW-SESSION-6",), f"step seq={seq} after seq=1", request_id=step["id"], session=session)
        ctx.expect("2" in str(answer.get("message")), ("GW-SESSION-6",), f"BAD_SEQUENCE must name the expected seq 2: {answer.get('message')!r}")
    result = await ctx.step(conn, session, 2)
    ctx.expect_type(result, "step_result", ("GW-SESSION-6",), "step seq=2 after refused sequence numbers")
    if "json" in ctx.encodings:
        json_conn = await ctx.connect("json")
        json_session = (await ctx.open_session(json_conn, max_turns=5))["session"]
        step = ctx.step_message(json_session, 10**3999)
        answer = await ctx.request(json_conn, step)
        ctx.expect(answer.get("type") == "error" and answer.get("name") in ("BAD_SEQUENCE", "BAD_FRAME"), ("GW-SESSION-6",),
                   f"a 4,000-digit seq must be refused, got {answer.get('type')} {answer.get('name', '')}")
        length = len(str(answer.get("message")))
        ctx.expect(length < 1000, ("GW-ERROR-8",),
                   f"the error for a 4,000-digit seq has {length} characters: it quotes the seq whole")


@check("step-after-end", area="STEP", requirements=("GW-STEP-6", "GW-ERROR-3"))
async def step_after_end(ctx: Context) -> None:
    """A step on a finished episode: EPISODE_FINISHED."""
    conn = await ctx.connect()
    session = (await ctx.open_session(conn, max_turns=1))["session"]
    await play_episode(ctx, conn, session, max_turns=1)
    step = ctx.step_message(session, 2)
    answer = await ctx.request(conn, step)
    ctx.expect_error(answer, "EPISODE_FINISHED", ("GW-STEP-6",), "step after the episode ended", request_id=step["id"], session=session)


@check("closed-session", area="SESSION", requirements=("GW-SESSION-9", "GW-SESSION-8"))
async def closed_session(ctx: Context) -> None:
    """After close, every request on the session is UNKNOWN_SESSION."""
    conn = await ctx.connect()
    session = (await ctx.open_session(conn, max_turns=3))["session"]
    closed = await ctx.request(conn, {"type": "close", "session": session})
    ctx.expect_type(closed, "closed", ("GW-SESSION-9",), "close of a running session")
    for request in (
        ctx.step_message(session, 1),
        {"type": "reset", "id": ctx.next_id(), "session": session, "seq": 1},
        {"type": "close", "id": ctx.next_id(), "session": session},
    ):
        answer = await ctx.request(conn, request)
        ctx.expect_error(answer, "UNKNOWN_SESSION", ("GW-SESSION-9",), f"{request['type']} on a closed session", request_id=request["id"])


@check("unknown-session", area="SESSION", requirements=("GW-SESSION-8",))
async def unknown_session(ctx: Context) -> None:
    """Requests naming a session that never existed: UNKNOWN_SESSION."""
    conn = await ctx.connect()
    for request in (ctx.step_message(NO_SUCH_SESSION, 1), {"type": "close", "id": ctx.next_id(), "session": NO_SUCH_SESSION}):
        answer = await ctx.request(conn, request)
        ctx.expect_error(answer, "UNKNOWN_SESSION", ("GW-SESSION-8",), f"{request['type']} on a made-up session", request_id=request["id"])


@check("foreign-session", area="SESSION", requirements=("GW-SESSION-8", "GW-ERROR-6"))
async def foreign_session(ctx: Context) -> None:
    """Another connection's session looks exactly like a missing one, and is left untouched."""
    owner = await ctx.connect(label="owner")
    other = await ctx.connect(label="other")
    session = (await ctx.open_session(owner, max_turns=3))["session"]
    missing = await ctx.step(other, NO_SUCH_SESSION, 1)
    for request in (
        ctx.step_message(session, 1),
        {"type": "reset", "id": ctx.next_id(), "session": session, "seq": 1},
        {"type": "close", "id": ctx.next_id(), "session": session},
    ):
        answer = await ctx.request(other, request)
        ctx.expect_error(answer, "UNKNOWN_SESSION", ("GW-SESSION-8",), f"{request['type']} on another connection's session",
                         request_id=request["id"])
    foreign = await ctx.step(other, session, 1)
    ctx.expect(
        same_except_session(foreign, missing, session, NO_SUCH_SESSION),
        ("GW-SESSION-8",),
        f"the answer reveals that the session exists elsewhere: {foreign.get('message')!r} vs {missing.get('message')!r}",
    )
    result = await ctx.step(owner, session, 1)
    ctx.expect_type(result, "step_result", ("GW-SESSION-8", "GW-ERROR-6"),
                    "the owner's step seq=1 (another connection's requests must not have touched the session)")


@check("pipelined-requests", area="REQUEST", requirements=("GW-REQUEST-2",))
async def pipelined_requests(ctx: Context) -> None:
    """Many sessions on one connection, requests sent without waiting: each answered exactly once."""
    conn = await ctx.connect()
    opens = [ctx.open_message(max_turns=3) for _ in range(3)]
    for message in opens:
        await conn.send(message)
    sessions = []
    for message in opens:
        opened = await conn.answer(message["id"], ctx.timeout)
        ctx.expect_type(opened, "opened", ("GW-REQUEST-2",), "a pipelined open")
        sessions.append(opened["session"])
    burst = [ctx.step_message(s, 1) for s in sessions] + [{"type": "ping", "id": ctx.next_id()}, {"type": "list_envs", "id": ctx.next_id()}]
    for message in burst:
        await conn.send(message)
    for message in burst:
        await conn.answer(message["id"], ctx.timeout)
    await asyncio.sleep(0.2)  # room for a duplicate answer to show up
    for message in opens + burst:
        count = len(conn.answers_to(message["id"]))
        ctx.expect(count == 1, ("GW-REQUEST-2",), f"request id {message['id']} ({message['type']}) was answered {count} times")


@check("session-order", area="STEP", requirements=("GW-STEP-1",))
async def session_order(ctx: Context) -> None:
    """Steps of one session sent back to back run one at a time in arrival order."""
    conn = await ctx.connect()
    session = (await ctx.open_session(conn, max_turns=10))["session"]
    steps = [ctx.step_message(session, seq) for seq in range(1, 5)]
    for message in steps:
        await conn.send(message)
    for message in steps:
        answer = await conn.answer(message["id"], ctx.timeout)
        ctx.expect(
            answer.get("type") == "step_result" and answer.get("seq") == message["seq"],
            ("GW-STEP-1",),
            f"pipelined step seq={message['seq']} got {answer.get('type')} {answer.get('name', '')} (steps must run in arrival order)",
        )


@check("slow-request-concurrency", area="REQUEST", requirements=("GW-REQUEST-4", "GW-STEP-2", "GW-HEARTBEAT-1"))
async def slow_request_concurrency(ctx: Context) -> None:
    """While one session runs a slow step, another session's step and a ping are answered first."""
    slow = ctx.need_slow_action("answering out of order")
    conn = await ctx.connect()
    busy = (await ctx.open_session(conn, max_turns=5))["session"]
    free = (await ctx.open_session(conn, max_turns=5))["session"]
    slow_step = ctx.step_message(busy, 1, slow)
    await conn.send(slow_step)
    await asyncio.sleep(0.02)
    quick = ctx.step_message(free, 1)
    ping = {"type": "ping", "id": ctx.next_id()}
    await conn.send(quick)
    await conn.send(ping)
    slow_answer = await conn.answer(slow_step["id"], ctx.timeout + ctx.options.slow_ms / 1000)
    quick_answer = await conn.answer(quick["id"], ctx.timeout)
    pong = await conn.answer(ping["id"], ctx.timeout)
    late = []
    if conn.arrival_of(quick_answer) > conn.arrival_of(slow_answer):
        late.append(("GW-REQUEST-4", "another session's step was answered only after the slow step finished (lockstep server?)"))
    if conn.arrival_of(pong) > conn.arrival_of(slow_answer):
        late.append(("GW-HEARTBEAT-1", "the pong came only after the slow step finished"))
    if late:
        ctx.fail(tuple(i for i, _ in late), "; ".join(text for _, text in late))


@check("duplicate-id", area="REQUEST", requirements=("GW-REQUEST-5",))
async def duplicate_id(ctx: Context) -> None:
    """A request reusing the id of one still in flight: INVALID_STATE, and it is not acted on.

    Without --slow-action the first request may be answered before the second arrives; then the
    second is a new request and must simply be served. With it, every kind of request (ping,
    list_envs, describe_env and cancel too) reusing the running step's id is refused: one id, one answer."""
    slow = ctx.options.slow_action
    conn = await ctx.connect()
    busy = (await ctx.open_session(conn, max_turns=5))["session"]
    other = (await ctx.open_session(conn, max_turns=5))["session"]
    first = ctx.step_message(busy, 1, slow or ctx.probe)
    duplicate = dict(ctx.step_message(other, 1), id=first["id"])
    await conn.send(first)
    if slow:
        await asyncio.sleep(0.02)
    await conn.send(duplicate)
    # A cancel reusing the id targets an id never used: acted on, it would be answered cancel_ack.
    control = [
        {"type": "ping", "id": first["id"]},
        {"type": "list_envs", "id": first["id"]},
        {"type": "describe_env", "id": first["id"], "env": ctx.env},
        {"type": "cancel", "id": first["id"], "target": ctx.next_id()},
    ] if slow else []
    for request in control:
        await conn.send(request)
    wait = ctx.timeout + (ctx.options.slow_ms / 1000 if slow else 0)
    answers = [await conn.answer(first["id"], wait) for _ in range(2 + len(control))]
    acted_on = [a.get("type") for a in answers if a.get("type") not in ("error", "step_result")]
    ctx.expect(not acted_on, ("GW-REQUEST-5",),
               f"requests reusing the id {first['id']} of a running step were acted on and answered {acted_on}; "
               "each must get INVALID_STATE")
    refused = [a for a in answers if a.get("type") == "error" and a.get("name") == "INVALID_STATE"]
    served = [a for a in answers if a.get("type") == "step_result"]
    if slow:
        ctx.expect(
            len(refused) == 1 + len(control) and len(served) == 1 and served[0].get("session") == busy,
            ("GW-REQUEST-5",),
            f"a step reusing the id of a running step must get INVALID_STATE while the running one is answered; got "
            f"{[(a.get('type'), a.get('name', a.get('session'))) for a in answers]}",
        )
    ctx.expect(len(refused) + len(served) == 2 + len(control), ("GW-REQUEST-5",),
               f"two requests with id {first['id']} got {[a.get('type') + ' ' + str(a.get('name', '')) for a in answers]}")
    result = await ctx.step(conn, other, 2 if len(served) == 2 else 1)
    ctx.expect(
        result.get("type") == "step_result",
        ("GW-REQUEST-5",),
        f"the next seq of the second session got {result.get('type')} {result.get('name', '')}: "
        "a refused duplicate must not have been acted on",
    )


@check("session-crash", area="SESSION", requirements=("GW-SESSION-10",))
async def session_crash(ctx: Context) -> None:
    """An environment that raises: ENV_CRASHED for that session only; close still works."""
    if not ctx.options.crash_action:
        raise Skipped(f"needs an action that makes {ctx.env!r} raise; pass --crash-action")
    conn = await ctx.connect()
    victim = (await ctx.open_session(conn, max_turns=5))["session"]
    bystander = (await ctx.open_session(conn, max_turns=5))["session"]
    step = ctx.step_message(victim, 1, ctx.options.crash_action)
    answer = await ctx.request(conn, step)
    ctx.expect_error(answer, "ENV_CRASHED", ("GW-SESSION-10",), "the crashing step", request_id=step["id"], session=victim)
    for request in (ctx.step_message(victim, 1), {"type": "reset", "id": ctx.next_id(), "session": victim, "seq": 1}):
        answer = await ctx.request(conn, request)
        ctx.expect_error(answer, "ENV_CRASHED", ("GW-SESSION-10",), f"{request['type']} on a crashed session", request_id=request["id"])
    result = await ctx.step(conn, bystander, 1)
    ctx.expect_type(result, "step_result", ("GW-SESSION-10",), "a step of another session after the crash")
    closed = await ctx.request(conn, {"type": "close", "session": victim})
    ctx.expect_type(closed, "closed", ("GW-SESSION-10",), "close of the crashed session")


# ====================================================================== frames and errors


ANY_ID = object()  # a frame whose id a server may or may not manage to read


async def _expect_bad_frame(ctx: Context, conn: RawConnection, frame: bytes | str | dict[str, Any], what: str,
                            requirements: tuple[str, ...], request_id: Any = ANY_ID) -> None:
    """Send a frame (raw, or a map in the connection's encoding) and expect BAD_FRAME for it.

    `request_id`: the id the error must carry, None when it must carry none, ANY_ID when either is fine."""
    if isinstance(frame, dict):
        await conn.send(frame)
    else:
        await conn.send_frame(frame)
    try:
        answer = await conn.receive(lambda m: m.get("type") == "error", ctx.timeout, f"an error for {what}")
    except (NoAnswer, ConnectionLost) as exc:
        ctx.fail(requirements + ("GW-ERROR-6",), f"{what}: {exc}")
    ctx.expect_error(answer, "BAD_FRAME", requirements, what)
    if request_id is None:
        ctx.expect(answer.get("id") is None, ("GW-ERROR-2",),
                   f"{what}: an error that answers no readable request must not carry an id, got {answer.get('id')!r}")
    elif request_id is not ANY_ID:
        ctx.expect(answer.get("id") == request_id, ("GW-FRAME-5", "GW-ERROR-2"),
                   f"{what}: the error must carry the readable id {request_id}, got {answer.get('id')!r}")


@check("malformed-frames-msgpack", area="FRAME", requirements=("GW-FRAME-3", "GW-FRAME-7", "GW-ERROR-2", "GW-ERROR-6"))
async def malformed_frames_msgpack(ctx: Context) -> None:
    """Undecodable msgpack, text frames, non-maps, extension types, non-string keys: BAD_FRAME; all else carries on."""
    conn = await ctx.connect("msgpack")
    session = (await ctx.open_session(conn, max_turns=3))["session"]
    ping = msgpack.packb({"type": "ping", "id": 7}, use_bin_type=True)
    for frame, what in (
        (b"\xc1", "the never-used msgpack byte 0xc1"),
        (b"\x85\xa4type", "a truncated msgpack map"),
        ("{\"type\": \"ping\", \"id\": 1}", "a text frame on a msgpack connection"),
        (msgpack.packb([1, 2, 3]), "a msgpack array instead of a map"),
    ):
        await _expect_bad_frame(ctx, conn, frame, what, ("GW-FRAME-3",), request_id=None)
    await _expect_bad_frame(ctx, conn, ping + b"\x00", "a valid message followed by trailing bytes", ("GW-FRAME-3",))
    ext = msgpack.packb({"type": "list_envs", "id": 8, "x": msgpack.ExtType(5, b"ab")}, use_bin_type=True)
    await _expect_bad_frame(ctx, conn, ext, "a msgpack extension type", ("GW-FRAME-7",))
    int_key = msgpack.packb({"type": "list_envs", "id": 9, 1: "x"}, use_bin_type=True)
    await _expect_bad_frame(ctx, conn, int_key, "a map with an integer key", ("GW-FRAME-7",))
    bytes_key = msgpack.packb({"type": "list_envs", "id": 10, b"x": "y"}, use_bin_type=True)
    await _expect_bad_frame(ctx, conn, bytes_key, "a map with a binary (bytes) key", ("GW-FRAME-7",))
    await ctx.expect_alive(conn, ("GW-FRAME-3", "GW-ERROR-6"), "malformed frames")
    result = await ctx.step(conn, session, 1)
    ctx.expect_type(result, "step_result", ("GW-ERROR-6",), "a step after malformed frames")


@check("malformed-frames-json", area="FRAME", requirements=("GW-FRAME-3", "GW-FRAME-9", "GW-ERROR-6"))
async def malformed_frames_json(ctx: Context) -> None:
    """Invalid JSON, non-objects, NaN literals, invalid UTF-8: BAD_FRAME; the connection carries on."""
    conn = await ctx.connect("json")
    for frame, what in (
        ("{not json", "invalid JSON"),
        ("[1, 2, 3]", "a JSON array instead of an object"),
        ("\"hello\"", "a JSON string instead of an object"),
        (b"{\"type\": \"ping\", \"id\": 3, \"x\": \"\xff\xfe\"}", "invalid UTF-8"),
    ):
        await _expect_bad_frame(ctx, conn, frame, what, ("GW-FRAME-3",))
    for literal in ("NaN", "Infinity", "-Infinity"):
        frame = f'{{"type": "step", "id": 11, "session": "s", "seq": 1, "action": "a", "deadline_ms": {literal}}}'
        await _expect_bad_frame(ctx, conn, frame, f"a {literal} literal", ("GW-FRAME-9",))
    await ctx.expect_alive(conn, ("GW-FRAME-3", "GW-ERROR-6"), "malformed JSON frames")


@check("schema-violations", area="FRAME", requirements=("GW-FRAME-5", "GW-FRAME-8", "GW-ERROR-2", "GW-ERROR-6"))
async def schema_violations(ctx: Context) -> None:
    """Missing fields, wrong types, coercible look-alikes, out-of-range ids: BAD_FRAME with the id when readable."""
    conn = await ctx.connect()
    session = (await ctx.open_session(conn, max_turns=3))["session"]
    cases: list[tuple[dict[str, Any], str, tuple[str, ...], bool]] = [
        ({"type": "open"}, "open without env", ("GW-FRAME-5",), True),
        ({"type": "step", "session": session, "seq": "1", "action": "a"}, "seq as a string", ("GW-FRAME-8",), True),
        ({"type": "step", "session": session, "seq": 1.0, "action": "a"}, "seq as a float", ("GW-FRAME-8",), True),
        ({"type": "step", "session": session, "seq": 1, "action": 5}, "action as a number", ("GW-FRAME-5",), True),
        ({"type": "open", "env": ctx.env, "task": ctx.task(), "reset": 1}, "reset as the integer 1", ("GW-FRAME-8",), True),
        ({"type": "describe_env", "env": ["x"]}, "env as a list", ("GW-FRAME-5",), True),
        ({"type": "list_envs", "id": -1}, "a negative id", ("GW-FRAME-5",), False),
        ({"type": "list_envs", "id": 2**53}, "an id above 2^53-1", ("GW-FRAME-5",), False),
        ({"type": "list_envs", "id": "12"}, "an id as a string", ("GW-FRAME-8",), False),
    ]
    for body, what, requirements, id_readable in cases:
        message = dict(body)
        if id_readable:
            message["id"] = ctx.next_id()
        await _expect_bad_frame(ctx, conn, message, what, requirements, request_id=message["id"] if id_readable else None)
    result = await ctx.step(conn, session, 1)
    ctx.expect_type(result, "step_result", ("GW-ERROR-6",), "a step after rejected frames (they must not have touched the session)")


@check("unknown-message", area="FRAME", requirements=("GW-FRAME-4", "GW-ERROR-8"))
async def unknown_message(ctx: Context) -> None:
    """An unknown type: UNKNOWN_MESSAGE with the id; the error does not echo huge input."""
    conn = await ctx.connect()
    request = {"type": "gymwire_conformance_frobnicate", "id": ctx.next_id()}
    answer = await ctx.request(conn, request)
    ctx.expect_error(answer, "UNKNOWN_MESSAGE", ("GW-FRAME-4",), "an unknown message type", request_id=request["id"])
    length = max(1000, min(50_000, ctx.limits.get("max_frame_bytes", 0) // 2))  # long, yet within the frame limit
    request = {"type": "x" * length, "id": ctx.next_id()}
    answer = await ctx.request(conn, request)
    ctx.expect_error(answer, "UNKNOWN_MESSAGE", ("GW-FRAME-4",), f"an unknown {length}-character message type", request_id=request["id"])
    length = len(str(answer.get("message")))
    ctx.expect(length < 2000, ("GW-ERROR-8",), f"the error message has {length} characters: it echoes the offending input unbounded")
    await ctx.expect_alive(conn, ("GW-FRAME-4",), "unknown message types")


@check("unknown-fields", area="FRAME", requirements=("GW-FRAME-6",))
async def unknown_fields(ctx: Context) -> None:
    """Fields a receiver does not know are ignored, at the top level and nested."""
    conn = await ctx.connect(handshake=False)
    welcome = await ctx.request(conn, ctx.hello(x_future_field={"nested": [1, 2]}))
    ctx.expect_type(welcome, "welcome", ("GW-FRAME-6",), "hello with an unknown field")
    task = dict(ctx.task(), x_future_task_field=True)
    opened = await ctx.open_session(conn, max_turns=3, task=task, x_future_open_field="ignored")
    result = await ctx.step(conn, opened["session"], 1, x_future_step_field=3.5)
    ctx.expect_type(result, "step_result", ("GW-FRAME-6",), "step with an unknown field")
    pong = await ctx.request(conn, {"type": "ping", "x_future_ping_field": None})
    ctx.expect_type(pong, "pong", ("GW-FRAME-6",), "ping with an unknown field")


@check("error-table", area="ERROR", requirements=("GW-ERROR-1", "GW-ERROR-2", "GW-ERROR-3"))
async def error_table(ctx: Context) -> None:
    """Errors carry code, name, retryable as in the table, a message, the request id and the session."""
    conn = await ctx.connect()
    provoked = [
        ({"type": "open", "id": ctx.next_id(), "env": "gymwire-conformance-no-such-env", "task": {}}, "UNKNOWN_ENV", None),
        (ctx.step_message(NO_SUCH_SESSION, 1), "UNKNOWN_SESSION", NO_SUCH_SESSION),
        ({"type": "gymwire_conformance_frobnicate", "id": ctx.next_id()}, "UNKNOWN_MESSAGE", None),
        ({"type": "open", "id": ctx.next_id()}, "BAD_FRAME", None),
    ]
    for request, name, session in provoked:
        answer = await ctx.request(conn, request)
        ctx.expect_error(answer, name, ("GW-ERROR-1",), f"{request['type']} provoking {name}", request_id=request["id"], session=session)
    # The wire layer checks every error's code, name, retryable flag and message against the table.
