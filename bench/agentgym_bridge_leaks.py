"""Does the bridge (`gymwire serve agentgym:FAMILY=URL`) close every AgentGym session it opens?

    python bench/agentgym_bridge_leaks.py --babyai http://127.0.0.1:36002 --textcraft http://127.0.0.1:36001

For each AgentGym server given, a gymwire server bridging it runs in this process (short idle and
resume-grace limits) and is driven along every path by which a session ends: N open/reset/step/close
cycles; clients killed (SIGKILL, in child processes) with their sessions open, then reaped; sessions
open when the server drains and stops. Then every AgentGym session id handed out meanwhile is
probed (`GET /observation`: AgentGym answers an error for a closed session) and the ones still
open are counted. AgentGym's servers have no way to list their sessions; ids count up from 0, so
the ids handed out lie between two /create calls made by this script (which it closes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

KILLED_CLIENT = """
import asyncio, sys
from gymwire.sdk.client import GymClient
async def main():
    client = await GymClient(sys.argv[1], reconnect_attempts=0).connect()
    await client.open(sys.argv[2], split="all", index=int(sys.argv[3]))
    print("open", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def _call(url: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
    if query is not None:
        request = urllib.request.Request(f"{url}/{path}?{urllib.parse.urlencode(query)}")
    else:
        data = json.dumps(body).encode() if body is not None else b""
        request = urllib.request.Request(f"{url}/{path}", data=data, headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def _marker(url: str, family: str) -> int:
    """A fresh AgentGym session id (the session is closed again at once)."""
    body = {"commands": None, "goal": None} if family == "textcraft" else None
    created = _call(url, "create", body)
    if family == "sciworld":  # a created SciWorld session has nothing to observe before its reset
        _call(url, "reset", {"id": created["id"], "data_idx": 0})
    _call(url, "close", {"id": created["id"]})
    return int(created["id"])


def _open_ids(url: str, ids: range) -> list[int]:
    """The ids among `ids` AgentGym still serves (its /observation answers no error)."""
    still = []
    for session_id in ids:
        answer = _call(url, "observation", query={"id": session_id})
        error = str(answer.get("error", "")) if isinstance(answer, dict) else ""
        if not error or "finished" in error:  # "... has finished": done, but still held
            still.append(session_id)
    return still


async def _run(family: str, url: str, cycles: int, killed: int, at_drain: int) -> dict[str, Any]:
    from gymwire.protocol.messages import Limits
    from gymwire.sdk.client import GymClient
    from gymwire.sdk.server import GymServer
    from gymwire.servers.agentgym import bridge_spec

    env = bridge_spec(f"{family}={url},timeout=120")
    limits = Limits(idle_timeout_ms=60_000, resume_grace_ms=1_000)
    report: dict[str, Any] = {}
    first = _marker(url, family)

    server = await GymServer([env], port=0, limits=limits).start()
    started = time.monotonic()
    client = await GymClient(server.url).connect()
    for index in range(cycles):
        session = await client.open(family, split="all", index=index)
        await session.step("Thought: try.\nAction: check available actions")
        await session.close()
    await client.close()
    report["cycles"] = cycles
    report["cycles_s"] = round(time.monotonic() - started, 1)

    children = [subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, server.url, family, str(i)], stdout=subprocess.PIPE, text=True)
                for i in range(killed)]
    for child in children:  # (the server runs on this loop: wait for the children without blocking it)
        line = await asyncio.to_thread(child.stdout.readline) if child.stdout else ""
        assert line.strip() == "open", "a client could not open its session"
    for child in children:
        child.send_signal(signal.SIGKILL)
        await asyncio.to_thread(child.wait)
    deadline = time.monotonic() + 60
    while server.registry.sessions and time.monotonic() < deadline:  # the reaper closes them after the grace
        await asyncio.sleep(0.2)
    report["killed"] = killed
    report["left_in_gymwire_after_killed"] = len(server.registry.sessions)

    client = await GymClient(server.url, reconnect_attempts=0).connect()
    for index in range(at_drain):
        await client.open(family, split="all", index=index)
    await server.stop(drain_timeout=1)
    await client.close()
    report["open_at_drain"] = at_drain

    last = _marker(url, family)
    report["agentgym_sessions_handed_out"] = last - first - 1
    report["agentgym_sessions_left_open"] = _open_ids(url, range(first + 1, last))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for family in ("textcraft", "babyai", "sciworld"):
        parser.add_argument(f"--{family}", metavar="URL", help=f"AgentGym's {family} server")
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--killed", type=int, default=5)
    parser.add_argument("--at-drain", type=int, default=5)
    args = parser.parse_args(argv)
    failed = False
    for family in ("textcraft", "babyai", "sciworld"):
        url = getattr(args, family)
        if url:
            report = asyncio.run(_run(family, url.rstrip("/"), args.cycles, args.killed, args.at_drain))
            print(family, json.dumps(report))
            failed |= bool(report["agentgym_sessions_left_open"]) or report["left_in_gymwire_after_killed"] > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
