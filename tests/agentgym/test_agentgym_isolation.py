"""The AgentGym bridge with one process per session plays what it plays in-process: its URL and
dialect travel in its EnvSpec to the child, which rebuilds the bridge (a class made at run time
could not be imported there, and every open was ENV_CRASHED)."""

from __future__ import annotations

from agentgym_fakes import ScriptedAgentGymServer, scripted_server

from gymwire.sdk.client import GymClient
from gymwire.sdk.env_spec import EnvSpec
from gymwire.sdk.server import GymServer
from gymwire.servers.agentgym import bridge_spec
from gymwire.servers.agentgym.serve import AgentGymFacade
from gymwire.servers.textcraft import TextCraftEnv
from gymwire.servers.textcraft.recipes import load_book
from gymwire.servers.textcraft.solver import plan


async def play(spec: EnvSpec, isolation: str, actions: list[str], index: int) -> list[tuple]:
    async with GymServer([spec], port=0, isolation=isolation) as server, GymClient(server.url, request_timeout=60) as client:
        session = await client.open(spec.name, split="all", index=index, max_turns=len(actions) + 1)
        seen: list[tuple] = [(session.observation.text,)]
        for action in actions:
            if session.done:
                break
            result = await session.step(action)
            seen.append((result.observation.text, result.reward, result.terminated))
        await session.close()
    return seen


async def test_a_bridged_textcraft_episode_is_the_same_in_a_process_of_its_own():
    book = load_book()
    goal = book.splits["test"][12]
    actions = ["Action: craft 1 nothing using 1 air", *(f"Thought: next.\nAction: {step}" for step in plan(book, goal))]
    facade = AgentGymFacade([(TextCraftEnv, "textcraft")], split="test")
    with facade.run_in_thread() as facade_url:
        spec = bridge_spec(f"textcraft={facade_url},name=bridged,tasks=100,timeout=30")
        in_process = await play(spec, "thread", actions, 12)
        isolated = await play(spec, "process", actions, 12)
    assert isolated == in_process
    assert goal in in_process[0][0] and in_process[-1][1:] == (1.0, True)


async def test_a_scripted_agentgym_server_answers_sessions_in_their_own_processes():
    reset = {"observation": "The goal is at position 8, 6.", "reward": 0, "done": False}
    step = {"observation": "There is a wall above you.", "reward": 0, "done": False}
    fake = ScriptedAgentGymServer(answer_any={"create": {"id": 0}, "reset": reset, "step": step, "close": {"closed": True}})
    async with scripted_server(fake) as agentgym:
        spec = bridge_spec(f"maze={agentgym.url},tasks=5")
        in_process = await play(spec, "thread", ["Action: move up"], 2)
        isolated = await play(spec, "process", ["Action: move up"], 2)
    assert isolated == in_process == [(reset["observation"],), (step["observation"], 0.0, False)]
    assert [path for _, path, _ in fake.received].count("create") == 2
