"""The bridge's adapter table against one constructed exchange per AgentGym environment family.

Each exchange is written by hand from AgentGym's published client and server for that family
(WooooDyy/AgentGym; the file is named per case): the requests a client sends (paths, the session
field `id` or `env_idx`, the task field of /reset, constant fields) and answers shaped as that
server answers (bare integer or object from /create, `observation` or `state`, `done` or
`terminated`, a [text, null] pair or a bare string from /reset). The scripted loopback server
refuses any request that differs, so a wrong table entry fails here.
"""

from __future__ import annotations

import pytest
from agentgym_fakes import ScriptedAgentGymServer, scripted_server

from gymwire.sdk.environment import Task
from gymwire.servers.agentgym import bridge_spec
from gymwire.servers.agentgym.api import DIALECTS

REPLY = "Thought: I should act.\n\nAction: {}"

# family -> (file read, script, agent's reply, expected first observation, expected step result)
CASES = {
    "textcraft": (
        "agentenv/agentenv/envs/textcraft.py, agentenv-textcraft/agentenv_textcraft/server.py + env_wrapper.py",
        [
            ("POST", "create", {"commands": None, "goal": None}, {"id": 0, "observation": "Goal: craft stick.", "done": False, "reward": 0}),
            ("POST", "reset", {"id": 0, "data_idx": 3}, {"id": 0, "observation": "Crafting commands:\ncraft 4 stick using 2 planks\n\nGoal: craft stick.", "done": False, "reward": 0}),
            ("POST", "step", {"id": 0, "action": "get 2 oak planks"}, {"observation": "Got 2 oak planks", "reward": 0, "done": False}),
            ("POST", "close", {"id": 0}, {"closed": True}),
        ],
        REPLY.format("get 2 oak planks"),
        "Crafting commands:\ncraft 4 stick using 2 planks\n\nGoal: craft stick.",
        ("Got 2 oak planks", 0.0, False, None),
    ),
    "babyai": (
        "agentenv/agentenv/envs/babyai.py, agentenv-babyai/agentenv_babyai/server.py + environment.py (/close since Sept 2025)",
        [
            ("POST", "create", None, {"id": 0}),
            ("POST", "reset", {"id": 0, "data_idx": 3}, {"observation": "Your goal: go to the red ball\nYou see a red ball 1.", "reward": 0, "score": 0, "deleted": False, "done": False}),
            ("POST", "step", {"id": 0, "action": "go to red ball 1"}, {"observation": "You are at the red ball.\n The task is completed.", "reward": 0.9, "score": 0.9, "done": True}),
            ("POST", "close", {"id": 0}, True),
        ],
        REPLY.format("go to red ball 1"),
        "Your goal: go to the red ball\nYou see a red ball 1.",
        ("You are at the red ball.\n The task is completed.", 0.9, True, 0.9),
    ),
    "sciworld": (
        "agentenv/agentenv/envs/sciworld.py (reset shows task_description, then observation)",
        [
            ("POST", "create", None, {"id": 0}),
            ("POST", "reset", {"id": 0, "data_idx": 3}, {"id": 0, "observation": "This room is called the kitchen.", "task_description": "Your task is to boil water.", "reward": 0, "score": 0, "done": False}),
            ("POST", "step", {"id": 0, "action": "look around"}, {"observation": "This room is called the kitchen. In it, you see a stove.", "reward": 0, "score": 5, "done": False}),
            ("POST", "close", {"id": 0}, {"closed": True}),
        ],
        REPLY.format("look around"),
        "Your task is to boil water.\nThis room is called the kitchen.",
        ("This room is called the kitchen. In it, you see a stove.", 0.0, False, 5.0),
    ),
    "webshop": (
        "agentenv/agentenv/envs/webshop.py, agentenv-webshop/agentenv_webshop/server.py (create -> int, reset -> [text, null], step -> state)",
        [
            ("POST", "create", None, 0),
            ("POST", "reset", {"env_idx": 0, "session_id": 3}, ["WebShop [SEP] Instruction: [SEP] i need red shoes [SEP] Search", None]),
            ("POST", "step", {"env_idx": 0, "action": "search[red shoes]"}, {"state": "[SEP] Back to Search [SEP] B0001 [SEP] Red Shoe", "reward": 0.0, "done": False, "info": None}),
            ("POST", "close", {"env_idx": 0}, {"closed": True}),
        ],
        REPLY.format("search[red shoes]"),
        "WebShop [SEP] Instruction: [SEP] i need red shoes [SEP] Search",
        ("[SEP] Back to Search [SEP] B0001 [SEP] Red Shoe", 0.0, False, None),
    ),
    "alfworld": (
        "agentenv/agentenv/envs/alfworld.py (reset sends game and world_type; observation + AVAILABLE ACTIONS)",
        [
            ("POST", "create", None, {"id": 0}),
            ("POST", "reset", {"id": 0, "game": 3, "world_type": "Text"}, {"observation": "You are in the middle of a room.", "available_actions": ["go to desk 1", "inventory"]}),
            ("POST", "step", {"id": 0, "action": "go to desk 1"}, {"observation": "You arrive at desk 1.", "available_actions": ["take pen 1 from desk 1"], "reward": 0, "done": False}),
            ("POST", "close", {"id": 0}, {"closed": True}),
        ],
        REPLY.format("go to desk 1"),
        "You are in the middle of a room.\nAVAILABLE ACTIONS: go to desk 1,inventory",
        ("You arrive at desk 1.\nAVAILABLE ACTIONS: take pen 1 from desk 1", 0.0, False, None),
    ),
    "maze": (
        "agentenv/agentenv/envs/lmrlgym.py (MazeEnvClient: reset sends game)",
        [
            ("POST", "create", None, {"id": 0}),
            ("POST", "reset", {"id": 0, "game": 3}, {"observation": "The goal is at position 8, 6. Your current position is at position 5, 6.", "reward": 0, "done": False}),
            ("POST", "step", {"id": 0, "action": "move down"}, {"observation": "Success", "reward": 1, "done": True}),
            ("POST", "close", {"id": 0}, {"closed": True}),
        ],
        REPLY.format("move down"),
        "The goal is at position 8, 6. Your current position is at position 5, 6.",
        ("Success", 1.0, True, None),
    ),
    "wordle": (
        "agentenv/agentenv/envs/lmrlgym.py (WordleEnvClient: reset sends seed; the text is read afterwards)",
        [
            ("POST", "create", None, {"id": 0}),
            ("POST", "reset", {"id": 0, "seed": 3}, {"id": 0}),
            ("GET", "observation", {"id": "0"}, "Guess a hidden 5 letter word."),
            ("POST", "step", {"id": 0, "action": "s h i r e"}, {"observation": "b y g b b", "reward": -1, "done": False}),
            ("POST", "close", {"id": 0}, {"closed": True}),
        ],
        REPLY.format("s h i r e"),
        "Guess a hidden 5 letter word.",
        ("b y g b b", -1.0, False, None),
    ),
    "sqlgym": (
        "agentenv/agentenv/envs/sqlgym.py (env_idx, reset sends item_id, the action is the ```sql block, step -> state)",
        [
            ("POST", "create", None, 0),
            ("POST", "reset", {"env_idx": 0, "item_id": 3}, {"env_idx": 0}),
            ("GET", "observation", {"env_idx": "0"}, "How many singers are there? Tables: singer(id, name)"),
            ("POST", "step", {"env_idx": 0, "action": "SELECT count(*) FROM singer;"}, {"state": "[(6,)]", "reward": 1, "done": True}),
            ("POST", "close", {"env_idx": 0}, {"closed": True}),
        ],
        "Thought: count them.\n\nAction: ```sql\nSELECT count(*) FROM singer;\n```",
        "How many singers are there? Tables: singer(id, name)",
        ("[(6,)]", 1.0, True, None),
    ),
    **{
        tool: (
            f"agentenv/agentenv/envs/{tool}.py (create sends {{'id': 0}} -> int; reset sends id; the raw reply is the action)",
            [
                ("POST", "create", {"id": 0}, 0),
                ("POST", "reset", {"env_idx": 0, "id": 3}, None),
                ("GET", "observation", {"env_idx": "0"}, f"Goal: a {tool} question"),
                ("POST", "step", {"env_idx": 0, "action": "Thought: look.\n\nAction: check_valid_actions with Action Input: {}"}, {"observation": "['finish']", "reward": 0, "done": False}),
                ("POST", "close", {"env_idx": 0}, {"closed": True}),
            ],
            "Thought: look.\n\nAction: check_valid_actions with Action Input: {}",
            f"Goal: a {tool} question",
            ("['finish']", 0.0, False, None),
        )
        for tool in ["weather", "movie", "academia", "todo", "sheet"]
    },
    "searchqa": (
        "agentenv/agentenv/envs/searchqa.py as in SixPlusSeven67/AgentGym, and its searchqa README's server API "
        "(create sends {'id': 0} -> int; reset sends id and answers the text)",
        [
            ("POST", "create", {"id": 0}, 0),
            ("POST", "reset", {"env_idx": 0, "id": 3}, "Question: who wrote Hamlet?"),
            ("POST", "step", {"env_idx": 0, "action": "<answer>Shakespeare</answer>"}, {"observation": "Your answer is correct.", "reward": 1.0, "done": True, "info": None}),
            ("POST", "close", {"env_idx": 0}, {"closed": True}),
        ],
        "<answer>Shakespeare</answer>",
        "Question: who wrote Hamlet?",
        ("Your answer is correct.", 1.0, True, None),
    ),
    "webarena": (
        "agentenv/agentenv/envs/webarena.py (create -> {'env_idx'}, reset sends seed 0 and idx, step -> terminated)",
        [
            ("POST", "create", None, {"env_idx": 0}),
            ("POST", "reset", {"env_idx": 0, "seed": 0, "idx": 3}, {"env_idx": 0}),
            ("GET", "observation", {"env_idx": "0"}, "Objective: find the top product\n[1] RootWebArea 'Shop'"),
            ("POST", "step", {"env_idx": 0, "action": "In summary, the next action I will perform is ```stop [N/A]```"}, {"observation": "", "reward": 0.0, "terminated": True, "truncated": False, "info": None}),
            ("POST", "close", {"env_idx": 0}, {"closed": True}),
        ],
        "In summary, the next action I will perform is ```stop [N/A]```",
        "Objective: find the top product\n[1] RootWebArea 'Shop'",
        ("", 0.0, True, None),
    ),
}


def test_every_dialect_has_an_exchange():
    assert set(CASES) == set(DIALECTS)


@pytest.mark.parametrize("family", sorted(CASES))
async def test_adapter_speaks_the_family_api(family):
    source, script, reply, first_observation, (text, reward, done, score) = CASES[family]
    async with scripted_server(ScriptedAgentGymServer(script=list(script))) as server:
        env = bridge_spec(f"{family}={server.url}").make()
        assert await env.reset(Task(split="all", index=3)) == first_observation, source
        result = await env.step(reply)
        await env.close()
        assert (result.observation, result.reward, result.terminated, result.score) == (text, reward, done, score), source
        assert server.script == [], f"requests not made: {server.script} ({source})"
        assert [(m, p) for m, p, _ in server.received] == [(m, p) for m, p, _, _ in script], source


async def test_a_seed_picks_a_task_index_and_a_second_reset_reuses_the_session():
    script = [
        ("POST", "create", None, {"id": 0}),
        ("POST", "reset", {"id": 0, "data_idx": 7}, {"observation": "a", "reward": 0, "score": 0, "done": False}),
        ("POST", "reset", {"id": 0, "data_idx": 1}, {"observation": "b", "reward": 0, "score": 0, "done": False}),
    ]
    async with scripted_server(ScriptedAgentGymServer(script=script)) as server:
        env = bridge_spec(f"babyai={server.url},tasks=10").make()
        assert await env.reset(Task(seed=17)) == "a"
        assert await env.reset(Task(split="all", index=1)) == "b"
        await env.close()
    assert server.script == []


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nosuch=http://127.0.0.1:1", "unknown AgentGym environment"),
        ("webshop", "expected agentgym:FAMILY=URL"),
        ("webshop=127.0.0.1:36001", "must start with http"),
        ("webshop=http://127.0.0.1:1,colour=red", "unknown option"),
        ("webshop=http://127.0.0.1:1,tasks=many", "invalid literal"),
        ("webshop=http://127.0.0.1:1,timeout=0", "timeout > 0"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        bridge_spec(spec)


def test_spec_options_set_the_metadata():
    spec = bridge_spec("webshop=http://127.0.0.1:36001/,name=shop,tasks=50,max_turns=12")
    info = spec.info()
    assert (info.name, info.splits, info.default_max_turns) == ("shop", {"all": 50}, 12)
    assert spec.make().base_url == "http://127.0.0.1:36001"
