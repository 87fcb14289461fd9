"""Reset and step latency, and memory per session: AgentGym's servers and `gymwire agentgym-serve`
side by side, in one run, through the same HTTP API and the same client.

    python bench/agentgym_speed.py --textcraft http://127.0.0.1:36001 --babyai http://127.0.0.1:36002 \\
        --sciworld http://127.0.0.1:36003 [--resets 400] [--steps 400] [--option profile=agentgym]

For each AgentGym server given, `gymwire agentgym-serve ENV` is started here (a child process, with
`--option`s, e.g. profile=agentgym). One keep-alive HTTP connection per side; requests alternate
between the two sides so that a change in the machine's load touches both alike.

- reset: one session per side, `/reset` over task indices 0, 1, 2, ... (p50, p90 in ms);
- step: `/step` with a cheap action of the environment (TextCraft `inventory`, BabyAI `turn left`,
  SciWorld `look around`), a reset every 20 steps (not timed);
- memory per session: the server process's resident memory (from /proc; AgentGym's process is found
  by its listening port) before and after `--sessions` sessions are created and reset, divided by
  their number. SciWorld sessions are Java processes of their own on both sides (AgentGym's design,
  kept by gymwire's `profile: agentgym`): their memory is the Java children's, counted too.
  `agentgym-serve` is a fresh process; start AgentGym's servers fresh too for this figure (a process
  that has freed sessions before reuses that memory, and its growth understates a session's).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from typing import Any

STEP_ACTIONS = {"textcraft": "inventory", "babyai": "turn left", "sciworld": "look around"}
SESSIONS = {"textcraft": 2000, "babyai": 500, "sciworld": 3}
TASKS = {"textcraft": 544, "babyai": 400, "sciworld": 4639}


class Side:
    """One server, one keep-alive connection."""

    def __init__(self, name: str, url: str, pid: int) -> None:
        self.name, self.pid = name, pid
        self.base_children = len(_children(pid))
        parsed = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)
        self.prefix = parsed.path.rstrip("/")

    def post(self, path: str, body: Any) -> tuple[Any, float]:
        data = json.dumps(body) if body is not None else ""
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                self.conn.request("POST", f"{self.prefix}/{path}", body=data, headers={"content-type": "application/json"})
                answer = json.loads(self.conn.getresponse().read())
                return answer, time.perf_counter() - started
            except (ConnectionError, http.client.HTTPException):
                # uvicorn drops a keep-alive connection idle for 5 s (e.g. while the other side starts
                # a JVM): connect again, and time the request again from there
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def rss_kb(self) -> int:
        """Resident memory of the server process and its children (SciWorld's Java processes)."""
        total = 0
        for pid in [self.pid, *_children(self.pid)]:
            try:
                with open(f"/proc/{pid}/status") as handle:
                    total += next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                pass
        return total


def _children(pid: int) -> list[int]:
    """Every descendant process (a child is listed under the thread that started it)."""
    found = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children") as handle:
                for child in map(int, handle.read().split()):
                    found += [child, *_children(child)]
        except OSError:
            continue
    return found


def _settle(side: Side, seconds: float = 20.0) -> None:
    """Wait until the server has no more child processes than before it served (at most `seconds`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(_children(side.pid)) > side.base_children:
        time.sleep(0.2)
    time.sleep(1.0)


def listening_pid(port: int) -> int:
    """The process listening on a loopback TCP port (read from /proc)."""
    inodes = set()
    with open("/proc/net/tcp") as handle:
        for line in list(handle)[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").removeprefix("socket:[").rstrip("]") in inodes:
                    return int(pid)
        except OSError:
            continue
    raise SystemExit(f"no process listens on port {port}")


def create(side: Side, env: str) -> int:
    body = {"commands": None, "goal": None} if env == "textcraft" else None
    return side.post("create", body)[0]["id"]


def percentiles(times: list[float]) -> str:
    ordered = sorted(times)
    return f"p50 {statistics.median(ordered) * 1000:.2f} ms, p90 {ordered[int(len(ordered) * 0.9)] * 1000:.2f} ms"


def measure(env: str, sides: list[Side], resets: int, steps: int, sessions: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {side.name: {} for side in sides}
    ids = {side.name: create(side, env) for side in sides}
    for side in sides:  # warm up: first loads, imports, JIT
        for index in range(3):
            side.post("reset", {"id": ids[side.name], "data_idx": index})
    reset_times: dict[str, list[float]] = {side.name: [] for side in sides}
    for index in range(resets):
        for side in sides:
            _, seconds = side.post("reset", {"id": ids[side.name], "data_idx": index % TASKS[env]})
            reset_times[side.name].append(seconds)
    step_times: dict[str, list[float]] = {side.name: [] for side in sides}
    for number in range(steps):
        for side in sides:
            if number % 20 == 0:
                side.post("reset", {"id": ids[side.name], "data_idx": number // 20})
            answer, seconds = side.post("step", {"id": ids[side.name], "action": STEP_ACTIONS[env]})
            assert "observation" in answer, answer
            step_times[side.name].append(seconds)
    for side in sides:
        side.post("close", {"id": ids[side.name]})
        out[side.name]["reset"] = percentiles(reset_times[side.name])
        out[side.name]["reset_p50_ms"] = round(statistics.median(reset_times[side.name]) * 1000, 3)
        out[side.name]["step"] = percentiles(step_times[side.name])
    for side in sides:
        _settle(side)  # the sessions closed above (SciWorld's Java processes) have to be gone first
        before = side.rss_kb()
        opened = []
        for index in range(sessions):
            opened.append(create(side, env))
            side.post("reset", {"id": opened[-1], "data_idx": index % TASKS[env]})
        time.sleep(1)
        out[side.name]["memory_per_session_kb"] = round((side.rss_kb() - before) / sessions, 2)
        for session_id in opened:
            side.post("close", {"id": session_id})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for env in STEP_ACTIONS:
        parser.add_argument(f"--{env}", metavar="URL", help=f"AgentGym's {env} server")
    parser.add_argument("--resets", type=int, default=400)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--sessions", type=int, help="sessions for the memory figure (default per environment)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="for agentgym-serve")
    parser.add_argument("--gymwire", default="gymwire", help="the gymwire command")
    args = parser.parse_args(argv)
    results = {}
    for env in STEP_ACTIONS:
        url = getattr(args, env)
        if not url:
            continue
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # The memory figure opens more sessions than the facade's default cap.
        command = [args.gymwire, "agentgym-serve", env, "--port", str(port), "--log-level", "warning", "--max-sessions", "100000"]
        for option in args.option:
            command += ["--option", option]
        server = subprocess.Popen(command)
        try:
            gymwire = Side("gymwire", f"http://127.0.0.1:{port}", server.pid)
            for _ in range(600):
                try:
                    gymwire.conn.request("GET", "/")
                    gymwire.conn.getresponse().read()
                    break
                except OSError:
                    gymwire.conn.close()
                    time.sleep(0.1)
            agentgym = Side("agentgym", url, listening_pid(urllib.parse.urlparse(url).port or 80))
            sessions = args.sessions or SESSIONS[env]
            steps = args.steps if env != "sciworld" else min(args.steps, 100)
            resets = args.resets if env != "sciworld" else min(args.resets, 100)
            results[env] = measure(env, [agentgym, gymwire], resets, steps, sessions)
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(env, json.dumps(results[env]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
