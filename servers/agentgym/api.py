"""AgentGym's HTTP environment API, one dialect per environment family, as plain data.

AgentGym (github.com/WooooDyy/AgentGym) serves each environment as its own HTTP/JSON service:
`POST /create`, `POST /reset`, `POST /step`, `GET /observation`, and on most servers `POST /close`.
The families agree on that shape and differ in the details this table records: whether requests
name the session `id` or `env_idx`, whether `/create` answers a bare integer or an object, which
field of `/reset` carries the task index, whether a step's text is `observation` or `state`, and
whether the episode end is `done` or `terminated`. Errors come back as HTTP 200 with
`{"error": "..."}`.

Both directions use this one table: the bridge that drives an AgentGym server as a gymwire
environment (`bridge.py`) and the facade that serves gymwire environments to AgentGym's clients
(`serve.py`, `gymwire agentgym-serve`); the readers of model replies are also the profiles'. Each dialect names the AgentGym client file it was
read from (`agentenv/agentenv/envs/<file>.py`); the server files read are cited in
docs/agentgym.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Dialect", "DIALECTS", "dialect", "extract_action", "line_action", "react_action", "AgentGymError", "ONE_ACTION_ONLY"]


class AgentGymError(Exception):
    """An AgentGym server answered `{"error": ...}` (it sends errors with HTTP 200)."""


@dataclass(frozen=True)
class Dialect:
    """How one AgentGym environment family speaks the common HTTP API."""

    name: str  # what `agentgym:<name>=URL` selects
    title: str  # AgentGym's own name for it (the client's `env_name`)
    client_file: str  # the AgentGym client this dialect was read from
    id_key: str = "id"  # the session field of every request after /create: "id" or "env_idx"
    create_answer: str = "object"  # "object": {id_key: n, ...}; "int": a bare integer
    create_body: dict[str, Any] | None = None  # JSON body /create expects (None: no body)
    create_resets: bool = False  # /create already answers the first observation (TextCraft)
    reset_key: str = "data_idx"  # field of /reset that carries the task index
    reset_extra: dict[str, Any] = field(default_factory=dict)  # constant fields /reset also sends
    reset_answer: str = "object"  # how the facade answers /reset: "object", "pair" ([obs, null]), "text"
    observation_key: str = "observation"  # where a step's (and reset's) text is: "observation" or "state"
    done_key: str = "done"  # "done" or "terminated"
    score_key: str | None = None  # a running score some families also send ("score")
    prefix_key: str | None = None  # reset field shown before the observation (SciWorld's task_description)
    actions_key: str | None = None  # field listing the valid actions, shown after the observation (ALFWorld)
    action_format: str = "label"  # how the client reads a reply: "line", "react", "label", "sql", "raw" (extract_action)
    has_close: bool = True  # the server has POST /close
    # How AgentGym's server reads an index past its data: "wrap" (modulo the number of tasks),
    # "list" (Python list indexing: negative counts from the end, past the end is an error), "plain".
    index_rule: str = "plain"
    reset_data: dict[str, str] = field(default_factory=dict)  # reset answer field -> observation data key
    reset_deleted: bool = False  # the reset answer carries `"deleted": false`
    reward_scale: int = 1  # AgentGym's reward unit per gymwire reward unit (SciWorld: score points)
    plays_after_end: bool = False  # AgentGym's server goes on playing steps after the episode's end
    default_split: str | None = None  # the split whose indices are AgentGym's (agentgym-serve's default)
    # Default number of task indices: the data size where known (TextCraft 544 goals, WebShop 12,087
    # instructions, WebArena 812 tasks, SearchQA 51,713 test items), else a round bound; `tasks=N` overrides.
    tasks: int = 10_000
    max_turns: int = 20  # default turn limit when served through gymwire
    instructions: str = ""


_TOOL_FIELDS: dict[str, Any] = dict(
    id_key="env_idx", create_answer="int", create_body={"id": 0}, reset_key="id", reset_answer="text",
    action_format="raw", tasks=100, max_turns=20,
    instructions="Answer `Thought: ...` then `Action: <tool name> with Action Input: <JSON arguments>`; "
    "finish with `Action: finish with Action Input: {\"answer\": ...}`.",
)

DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in [
        Dialect(
            "textcraft", "TextCraft", "agentenv/agentenv/envs/textcraft.py",
            create_body={"commands": None, "goal": None}, create_resets=True, tasks=544, max_turns=20,
            index_rule="wrap", plays_after_end=True, action_format="line",
            instructions="`get N item`, `craft N item using N a, N b`, or `inventory`, after `Action:`.",
        ),
        Dialect(
            "babyai", "BabyAI", "agentenv/agentenv/envs/babyai.py",
            score_key="score", reset_deleted=True, tasks=400, max_turns=20, action_format="line",
            instructions="One of the available actions listed in the observation, after `Action:`.",
        ),
        Dialect(
            "sciworld", "SciWorld", "agentenv/agentenv/envs/sciworld.py",
            score_key="score", prefix_key="task_description", tasks=4639, max_turns=30, index_rule="list",
            reset_data={"task_name": "task", "var_num": "variation"}, reset_deleted=True, reward_scale=100,
            default_split="agentgym", action_format="react",
            instructions="A ScienceWorld action (`look around`, `open OBJ`, `focus on OBJ`, ...), after `Action:`.",
        ),
        Dialect(
            "webshop", "WebShop", "agentenv/agentenv/envs/webshop.py",
            id_key="env_idx", create_answer="int", reset_key="session_id", reset_answer="pair",
            observation_key="state", tasks=12087, max_turns=10,
            instructions="`search[keywords]` or `click[value]`, after `Action:`.",
        ),
        Dialect(
            "alfworld", "AlfWorld", "agentenv/agentenv/envs/alfworld.py",
            reset_key="game", reset_extra={"world_type": "Text"}, actions_key="available_actions",
            tasks=4000, max_turns=30,
            instructions="One of the AVAILABLE ACTIONS, after `Action:`.",
        ),
        Dialect(
            "maze", "LMRL-Gym.maze", "agentenv/agentenv/envs/lmrlgym.py", reset_key="game", tasks=100, max_turns=20,
            instructions="`move up`, `move down`, `move left` or `move right`, after `Action:`.",
        ),
        Dialect(
            "wordle", "LMRL-Gym.wordle", "agentenv/agentenv/envs/lmrlgym.py", reset_key="seed", tasks=1000, max_turns=6,
            instructions="A five-letter word as space-separated letters (`s h i r e`), after `Action:`.",
        ),
        Dialect(
            "sqlgym", "SQLGym", "agentenv/agentenv/envs/sqlgym.py",
            id_key="env_idx", create_answer="int", reset_key="item_id", observation_key="state",
            action_format="sql", tasks=10_000, max_turns=5,
            instructions="One SQL statement in a ```sql block.",
        ),
        *[Dialect(name, title, f"agentenv/agentenv/envs/{name}.py", **_TOOL_FIELDS)
          for name, title in [("weather", "Weather"), ("movie", "Movie"), ("academia", "Academia"),
                              ("todo", "Todo"), ("sheet", "Sheet")]],
        Dialect(
            "searchqa", "SearchQA", "agentenv/agentenv/envs/searchqa.py (in the AgentGym forks that carry SearchQA)",
            id_key="env_idx", create_answer="int", create_body={"id": 0}, reset_key="id", reset_answer="text",
            action_format="raw", tasks=51_713, max_turns=10,
            instructions="`<search>query</search>` or `<answer>text</answer>`.",
        ),
        Dialect(
            "webarena", "Webarena", "agentenv/agentenv/envs/webarena.py",
            id_key="env_idx", create_answer="object", reset_key="idx", reset_extra={"seed": 0},
            done_key="terminated", action_format="raw", tasks=812, max_turns=15,
            instructions="One WebArena action in a ``` block (`click [id]`, `type [id] [text] [1]`, `stop [answer]`, ...).",
        ),
    ]
}


def dialect(name: str) -> Dialect:
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown AgentGym environment {name!r}; known: {', '.join(sorted(DIALECTS))}") from None


_SQL_BLOCK = re.compile(r"```sql\s*(.*?)(?:```|$)", re.DOTALL)
_ACTION_LINE = re.compile(r"Action:\s*(.*?)(?=\n|$)", re.DOTALL)
_NOT_KEPT = re.compile(r"[^A-Za-z0-9, ]+")
ONE_ACTION_ONLY = "Error: Only one 'Action' is allowed per response. Please adjust your response."


def line_action(reply: str) -> str | None:
    """What AgentGym's TextCraft and BabyAI clients send for a model's reply: the text after `Action:`
    up to the end of its line, characters other than letters, digits, commas and spaces dropped,
    spaces collapsed ("" without `Action:`); None when they refuse the reply (two `Action:` lines:
    the client answers ONE_ACTION_ONLY itself)."""
    found = _ACTION_LINE.findall(reply)
    if len(found) > 1:
        return None
    return " ".join(_NOT_KEPT.sub("", found[-1] if found else "").split())


def react_action(reply: str) -> str:
    """What AgentGym's ReAct reading (`BaseAdapter.parse_react`, after SciWorld's client cuts a
    trailing `</s>`) sends: the text after the last `Action:`, stripped; without one, "" (or all of
    it when it contains `search[` or `click[`)."""
    if reply.endswith("</s>"):
        reply = reply[:-5]  # AgentGym's client cuts five characters for a four-character marker
    _, sep, tail = reply.rpartition("Action:")
    if not sep:
        return reply.strip() if "search[" in reply or "click[" in reply else ""
    return tail.strip()


def extract_action(text: str, action_format: str) -> str | None:
    """The action an AgentGym client would send for an agent's raw reply; None when the client
    refuses the reply without asking the server (it then answers ONE_ACTION_ONLY).

    "line": TextCraft's and BabyAI's clients (`line_action`); "react": SciWorld's (`react_action`);
    "label": the text after the last `Action:` (all of it when there is none), stripped;
    "sql": the contents of the last ```sql block; "raw": unchanged."""
    if action_format == "raw":
        return text
    if action_format == "line":
        return line_action(text)
    if action_format == "react":
        return react_action(text)
    if action_format == "sql":
        blocks = _SQL_BLOCK.findall(text)
        return blocks[-1].strip() if blocks else text.strip()
    return text.rsplit("Action:", 1)[-1].strip()
