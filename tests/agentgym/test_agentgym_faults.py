"""What goes wrong at either end: a dead or slow AgentGym server, AgentGym sessions left behind by
clients that vanish, and bad requests to the facade. Everything on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request

import pytest
from agentgym_fakes import ScriptedAgentGymServer, scripted_server

from gymwire.protocol import ErrorCode, Limits, ProtocolError
from gymwire.sdk.cli import main
from gymwire.sdk.client import GymClient
from gymwire.sdk.registry import resolve_env
from gymwire.sdk.server import GymServer
from gymwire.servers.agentgym import bridge_spec
from gymwire.servers.agentgym.serve import AFTER_END, AgentGymFacade
from gymwire.servers.guess import GuessEnv

MAZE_RESET = {"observation": "The goal is at position 8, 6.", "reward": 0, "done": False}
MAZE_STEP = {"observation": "There is a wall above you.", "reward": 0, "done": False}


def maze_server(**kwargs) -> ScriptedAgentGymServer:
    """A maze server answering any number of sessions (create always answers id 0)."""
    return ScriptedAgentGymServer(
        answer_any={"create": {"id": 0}, "reset": MAZE_RESET, "step": MAZE_STEP, "close": {"closed": True}}, **kwargs
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_dead_agentgym_server_crashes_only_its_own_sessions():
    dead = bridge_spec(f"maze=http://127.0.0.1:{free_port()},name=dead-maze,timeout=5")
    async with scripted_server(maze_server()) as live:
        alive = bridge_spec(f"maze={live.url},name=live-maze")
        async with GymServer([dead, alive], port=0) as server, GymClient(server.url) as client:
            with pytest.raises(ProtocolError) as crashed:
                await client.open("dead-maze", split="all", index=0)
            assert crashed.value.code == ErrorCode.ENV_CRASHED
            assert "ClientConnectorError" in crashed.value.message
            session = await client.open("live-maze", split="all", index=0)
            result = await session.step("Action: move up")
            assert result.observation.text == MAZE_STEP["observation"]
            await session.close()


async def test_a_slow_agentgym_server_times_out_its_step_and_others_go_on():
    async with scripted_server(maze_server(delay_s=3.0)) as slow, scripted_server(maze_server()) as fast:
        slow_env = bridge_spec(f"maze={slow.url},name=slow-maze,timeout=1")
        fast_env = bridge_spec(f"maze={fast.url},name=fast-maze")
        async with GymServer([slow_env, fast_env], port=0) as server, GymClient(server.url, request_timeout=30) as client:
            # A request deadline shorter than the server's answer: the gymwire server answers TIMEOUT.
            slow_session = await client.open("slow-maze", split="all", index=0)
            with pytest.raises(ProtocolError) as timed_out:
                await slow_session.step("Action: move up", deadline_ms=200)
            assert timed_out.value.code == ErrorCode.TIMEOUT
            # No deadline: the bridge gives up after its own timeout=1 and the session is ENV_CRASHED.
            other = await client.open("slow-maze", split="all", index=0)
            with pytest.raises(ProtocolError) as crashed:
                await other.step("Action: move up")
            assert crashed.value.code == ErrorCode.ENV_CRASHED and "no answer within 1 s" in crashed.value.message
            fast_session = await client.open("fast-maze", split="all", index=0)
            assert (await fast_session.step("Action: move up")).observation.text == MAZE_STEP["observation"]


async def test_agentgym_error_answers_become_typed_errors():
    script = [
        ("POST", "create", None, {"id": 4}),
        ("POST", "reset", {"id": 4, "data_idx": 2}, {"error": "list index out of range"}),
        ("POST", "reset", {"id": 4, "data_idx": 1}, {"observation": "go", "reward": 0, "score": 0, "done": False}),
        ("POST", "step", {"id": 4, "action": "turn left"}, {"error": "The task with environment 4 has finished."}),
    ]
    async with scripted_server(ScriptedAgentGymServer(script=script, answer_any={"close": True})) as agentgym:
        env = bridge_spec(f"babyai={agentgym.url},tasks=3")
        async with GymServer([env], port=0) as server, GymClient(server.url) as client:
            with pytest.raises(ProtocolError) as invalid:
                await client.open("babyai", split="all", index=2)
            assert invalid.value.code == ErrorCode.INVALID_TASK and "list index out of range" in invalid.value.message
            # The failed open closed its AgentGym session; a new session creates again.
            assert ("POST", "close", {"id": 4}) in agentgym.received
            agentgym.script.insert(0, ("POST", "create", None, {"id": 4}))
            session = await client.open("babyai", split="all", index=1)
            with pytest.raises(ProtocolError) as crashed:
                await session.step("Action: turn left")
            assert crashed.value.code == ErrorCode.ENV_CRASHED and "has finished" in crashed.value.message


async def test_sessions_of_vanished_clients_are_closed_on_the_agentgym_side():
    limits = Limits(heartbeat_interval_ms=200, idle_timeout_ms=60_000, resume_grace_ms=300)
    async with scripted_server(maze_server()) as agentgym:
        env = bridge_spec(f"maze={agentgym.url}")
        async with GymServer([env], port=0, limits=limits) as server:
            async with GymClient(server.url, reconnect_attempts=0) as client:
                await client.open("maze", split="all", index=0)
                await client.open("maze", split="all", index=1)
                client._ws.transport.abort()  # vanishes without closing its sessions
            for _ in range(100):
                if sum(path == "close" for _, path, _ in agentgym.received) == 2:
                    break
                await asyncio.sleep(0.05)
            assert [body for _, path, body in agentgym.received if path == "close"] == [{"id": 0}, {"id": 0}]
            assert server.stats()["sessions"] == 0



class CountingBabyAI(ScriptedAgentGymServer):
    """BabyAI's API with real session ids (create counts up) and the set of sessions still open."""

    def __init__(self) -> None:
        super().__init__(answer_any={"reset": {"observation": "go", "reward": 0, "score": 0, "deleted": False, "done": False}})
        self.next_id = 0
        self.open: set[int] = set()

    async def handle(self, request):  # noqa: ANN001 - aiohttp's
        from aiohttp import web

        path = request.path.lstrip("/")
        if path == "create":
            self.open.add(self.next_id)
            self.next_id += 1
            return web.json_response({"id": self.next_id - 1})
        if path == "close":
            session = (await request.json())["id"]
            self.open.discard(session)
            return web.json_response(True)
        return await super().handle(request)


async def test_a_bridge_closes_every_session_it_opens_on_every_path():
    limits = Limits(heartbeat_interval_ms=200, idle_timeout_ms=60_000, resume_grace_ms=300)
    async with scripted_server(CountingBabyAI()) as agentgym:
        server = await GymServer([bridge_spec(f"babyai={agentgym.url}")], port=0, limits=limits).start()
        async with GymClient(server.url) as client:  # open and close
            for index in range(100):
                session = await client.open("babyai", split="all", index=index)
                await session.close()
        assert agentgym.next_id == 100 and agentgym.open == set()
        async with GymClient(server.url, reconnect_attempts=0) as client:  # a client that vanishes
            await client.open("babyai", split="all", index=0)
            client._ws.transport.abort()
        for _ in range(100):
            if not agentgym.open:
                break
            await asyncio.sleep(0.05)
        assert agentgym.next_id == 101 and agentgym.open == set()
        client = await GymClient(server.url, reconnect_attempts=0).connect()  # sessions open at the server's stop
        for index in range(3):
            await client.open("babyai", split="all", index=index)
        await server.stop(drain_timeout=0.2)
        await client.close()
        assert agentgym.next_id == 104 and agentgym.open == set()

def _post(url: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_facade_answers_like_agentgym_and_refuses_bad_requests():
    # As AgentGym's BabyAI client does it (agentenv/agentenv/envs/babyai.py): create without a body,
    # then reset/step with the id in the JSON body; errors are HTTP 200 with {"error": ...}.
    facade = AgentGymFacade([(GuessEnv, "babyai")], split="test")
    with facade.run_in_thread() as url:
        assert "gymwire" in _get(url + "/")
        created = _post(url + "/create")
        assert created == {"id": 0}
        reset = _post(url + "/reset", {"id": 0, "data_idx": 3})
        assert reset["observation"].startswith("I am thinking of a whole number") and reset["done"] is False
        assert reset["score"] == 0
        step = _post(url + "/step", {"id": 0, "action": "50"})
        assert set(step) == {"observation", "reward", "score", "done"}
        assert _get(url + "/observation?id=0") == step["observation"]
        assert "error" in _post(url + "/step", {"id": 9, "action": "50"})
        assert "error" in _post(url + "/step", {"action": "50"})
        assert "error" in _post(url + "/step", {"id": 0, "action": 50})
        assert "error" in _post(url + "/reset", {"id": 0, "data_idx": 100})  # the test split has 100 tasks
        assert "error" in _post(url + "/reset", {"id": 0, "data_idx": "x"})
        request = urllib.request.Request(url + "/step", data=b"{not json", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert "error" in json.loads(response.read())
        # Play to the end.
        low, high = 1, 100
        _post(url + "/reset", {"id": 0, "data_idx": 3})
        while True:
            guess = (low + high) // 2
            step = _post(url + "/step", {"id": 0, "action": str(guess)})
            if step["done"]:
                break
            low, high = (guess + 1, high) if "higher" in step["observation"] else (low, guess - 1)
        assert step["reward"] == 1.0 and step["score"] == 1.0
        # A step after the end is answered (AgentGym's clients read `observation` from every answer).
        after = _post(url + "/step", {"id": 0, "action": "1"})
        assert after == {"observation": AFTER_END, "reward": 0, "done": True, "score": 1.0}
        assert _post(url + "/close", {"id": 0}) is True
        assert "error" in _post(url + "/step", {"id": 0, "action": "1"})


def test_facade_passes_session_options_agentgym_textcraft_through_agentgyms_client_protocol():
    # As AgentGym's TextCraft client does it (agentenv/agentenv/envs/textcraft.py): /create answers
    # id and a first observation, /reset takes data_idx, the client sends the cleaned action.
    facade = AgentGymFacade([(resolve_env("textcraft"), None)], options={"profile": "agentgym"})
    with facade.run_in_thread() as url:
        created = _post(url + "/create", {"minecraft_dir": "agentenv_textcraft/", "commands": None, "goal": None})
        assert created["observation"].endswith("Goal: craft acacia planks.")  # AgentGym's data_idx 0
        _post(url + "/reset", {"id": created["id"], "data_idx": 0})
        assert _post(url + "/step", {"id": 0, "action": "get 1 acacia logs"})["observation"] == "Got 1 acacia logs"
        step = _post(url + "/step", {"id": 0, "action": "craft 4 acacia planks using 1 acacia logs"})
        assert step == {"observation": "Crafted 4 minecraft:acacia_planks", "reward": 1.0, "done": True}


def test_facade_serves_several_envs_under_their_names_and_speaks_webshop():
    # WebShop's client (agentenv/agentenv/envs/webshop.py): create answers a bare int, requests carry
    # env_idx, reset sends session_id and answers [text, null], step answers `state`.
    facade = AgentGymFacade([(GuessEnv, "webshop"), (resolve_env("textcraft"), None)], split="test")
    with facade.run_in_thread() as url:
        env_id = _post(url + "/guess/create")
        assert env_id == 0
        text, nothing = _post(url + "/guess/reset", {"env_idx": 0, "session_id": 3})
        assert text.startswith("I am thinking") and nothing is None
        assert set(_post(url + "/guess/step", {"env_idx": 0, "action": "50"})) == {"state", "reward", "done"}
        created = _post(url + "/textcraft/create", {"commands": None, "goal": None})
        assert created["id"] == 0 and "Goal: craft" in created["observation"]


async def test_facade_reaps_idle_sessions():
    facade = AgentGymFacade([(GuessEnv, None)], idle_timeout_s=0.2)
    async with facade:
        served = facade.served["guess"]
        await facade._create(served, {})
        assert len(served.sessions) == 1
        for _ in range(100):
            if not served.sessions:
                break
            await asyncio.sleep(0.05)
        assert served.sessions == {}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["serve", "agentgym:nosuch=http://127.0.0.1:1"], "unknown AgentGym environment"),
        (["serve", "agentgym:maze=http://127.0.0.1:1,tasks=-1"], "must be >= 1"),
        (["agentgym-serve", "nosuch"], "unknown environment"),
        (["agentgym-serve", "guess", "--split", "dev"], "no split 'dev'"),
        (["agentgym-serve", "guess", "--option", "profile"], "expected KEY=VALUE"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
