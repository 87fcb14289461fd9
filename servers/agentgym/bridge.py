"""Drive a running AgentGym environment server as a gymwire environment.

`gymwire serve agentgym:webshop=http://127.0.0.1:36001` serves AgentGym's WebShop server over gymwire;
every family of `api.DIALECTS` works the same way. Options follow the URL,
comma-separated: `name=` (the served name, default the family), `tasks=` (number of task indices),
`timeout=` (seconds to wait for one HTTP answer, default 60), `max_turns=`. That text becomes an
`EnvSpec` of `AgentGymBridge` (`bridge_spec`), whose constructor takes the same configuration.

One gymwire session holds one AgentGym session: the first reset creates it (`/create`), each reset
sends the task index (`/reset`), close or reaping sends `/close` so nothing leaks on the AgentGym
side. All sessions of one served environment share one pooled HTTP client. A server that cannot be
reached, answers garbage or takes longer than `timeout` becomes ENV_CRASHED for that session only;
an `{"error": ...}` answer to a reset becomes INVALID_TASK.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from pydantic import PositiveFloat, PositiveInt

from gymwire.protocol import EnvInfo
from gymwire.sdk.env_spec import EnvSpec
from gymwire.sdk.environment import Environment, StepOutcome, Task, TaskError

from .api import ONE_ACTION_ONLY, AgentGymError, Dialect, dialect, extract_action

try:
    import aiohttp
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"{exc}; pip install 'gymwire[agentgym]'") from exc

__all__ = ["AgentGymBridge", "bridge_spec", "parse_bridge_spec"]

log = logging.getLogger("gymwire.agentgym")

DEFAULT_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 5.0


class AgentGymUnavailable(RuntimeError):
    """The AgentGym server could not be reached, timed out or answered something unreadable."""


class _HttpPool:
    """One pooled HTTP client per served environment, shared by its sessions on one event loop and
    closed when the last session closes (aiohttp clients belong to the loop that made them)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.client: aiohttp.ClientSession | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.users = 0

    def acquire(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self.client is None or self.client.closed or self.loop is not loop:
            self.loop = loop
            self.client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s, connect=CONNECT_TIMEOUT_S),
                connector=aiohttp.TCPConnector(limit=256),
            )
            self.users = 0
        self.users += 1
        return self.client

    async def release(self, client: aiohttp.ClientSession) -> None:
        if client is not self.client:
            return
        self.users -= 1
        if self.users <= 0 and not client.closed:
            await client.close()


_pools: dict[tuple[str, float], _HttpPool] = {}


def _checked_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"agentgym: the URL {url!r} must start with http:// or https://")
    return url.rstrip("/")


class AgentGymBridge(Environment):
    """One session of the AgentGym server of `family` (a dialect of `DIALECTS`) at `url`; `tasks`
    and `max_turns` default to the family's."""

    name = "agentgym"
    known_options: ClassVar[dict[str, str]] = {}  # AgentGym's servers take no per-session options

    @classmethod
    def info(cls, family: str, url: str, tasks: PositiveInt | None = None, max_turns: PositiveInt | None = None) -> EnvInfo:
        d = dialect(family)
        return super().info().model_copy(update={
            "description": f"AgentGym's {d.title} environment server at {_checked_url(url)}, bridged to gymwire.",
            "instructions": d.instructions,
            "splits": {"all": tasks or d.tasks},
            "default_max_turns": max_turns or d.max_turns,
        })

    def __init__(
        self, family: str, url: str, tasks: PositiveInt | None = None, timeout_s: PositiveFloat = DEFAULT_TIMEOUT_S,
        max_turns: PositiveInt | None = None,
    ) -> None:
        self.dialect: Dialect = dialect(family)
        self.base_url = _checked_url(url)
        self.splits = {"all": tasks or self.dialect.tasks}
        # One pooled HTTP client per server and timeout, shared by the sessions of this process.
        self.pool = _pools.setdefault((self.base_url, timeout_s), _HttpPool(timeout_s))
        self.client: aiohttp.ClientSession | None = None
        self.remote_id: Any = None

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        assert self.client is not None
        url = f"{self.base_url}/{path}"
        try:
            async with self.client.request(method, url, json=body, params=params or None) as response:
                if response.status != 200:
                    text = (await response.text())[:200]
                    raise AgentGymUnavailable(f"{method} {url} answered HTTP {response.status}: {text}")
                answer = await response.json(content_type=None)
        except asyncio.TimeoutError:
            raise AgentGymUnavailable(f"{method} {url}: no answer within {self.pool.timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise AgentGymUnavailable(f"{method} {url}: {type(exc).__name__}: {exc}") from None
        except ValueError as exc:  # not JSON
            raise AgentGymUnavailable(f"{method} {url}: answer is not JSON ({exc})") from None
        if isinstance(answer, dict) and "error" in answer:
            raise AgentGymError(f"AgentGym {self.dialect.title} server: {answer['error']}")
        return answer

    def _session_fields(self) -> dict[str, Any]:
        return {self.dialect.id_key: self.remote_id}

    async def _create(self) -> None:
        self.client = self.pool.acquire()
        try:
            answer = await self._call("POST", "create", self.dialect.create_body)
        except BaseException:
            await self.pool.release(self.client)
            self.client = None
            raise
        if self.dialect.create_answer == "int":
            self.remote_id = answer
        elif isinstance(answer, dict) and self.dialect.id_key in answer:
            self.remote_id = answer[self.dialect.id_key]
        else:
            await self.close()
            raise AgentGymUnavailable(f"/create answered {str(answer)[:200]}; expected an object with {self.dialect.id_key!r}")

    def _text(self, answer: Any) -> str | None:
        """The observation in an answer of /reset, /step or /observation, None when it has none."""
        d = self.dialect
        if isinstance(answer, str):
            return answer
        if isinstance(answer, list) and answer and isinstance(answer[0], str):
            return answer[0]
        if not isinstance(answer, dict) or d.observation_key not in answer:
            return None
        parts = [answer.get(d.prefix_key) if d.prefix_key else None, str(answer[d.observation_key])]
        text = "\n".join(part for part in parts if part)
        actions = answer.get(d.actions_key) if d.actions_key else None
        if actions:
            text += f"\nAVAILABLE ACTIONS: {','.join(map(str, actions))}"
        return text

    async def reset(self, task: Task) -> str:
        d = self.dialect
        _, index = self.task_index(task)
        if self.remote_id is None:
            await self._create()
        try:
            answer = await self._call("POST", "reset", {**self._session_fields(), d.reset_key: index, **d.reset_extra})
        except AgentGymError as exc:
            raise TaskError(f"task {index}: {exc}") from None
        text = self._text(answer)
        if text is None:  # some servers answer reset with bookkeeping only: ask for the observation
            text = self._text(await self._call("GET", "observation", **self._session_fields()))
        if text is None:
            raise AgentGymUnavailable(f"no observation after reset of task {index}")
        return text

    async def step(self, action: str) -> StepOutcome:
        d = self.dialect
        sent = extract_action(action, d.action_format)
        if sent is None:  # AgentGym's client answers this reply itself, without asking its server
            return StepOutcome(ONE_ACTION_ONLY)
        answer = await self._call("POST", "step", {**self._session_fields(), "action": sent})
        text = self._text(answer)
        if text is None or d.done_key not in answer:
            raise AgentGymUnavailable(f"/step answered {str(answer)[:200]}; expected {d.observation_key!r} and {d.done_key!r}")
        score = answer.get(d.score_key) if d.score_key else None
        return StepOutcome(
            text,
            reward=float(answer.get("reward") or 0.0) / d.reward_scale,
            terminated=bool(answer[d.done_key]),
            truncated=bool(answer.get("truncated", False)),
            score=float(score) if score is not None else None,
        )

    async def close(self) -> None:
        client = self.client
        if client is None:
            return
        try:
            if self.dialect.has_close and self.remote_id is not None:
                await self._call("POST", "close", self._session_fields())
        except (AgentGymUnavailable, AgentGymError) as exc:
            log.warning("AgentGym session %s at %s not closed: %s", self.remote_id, self.base_url, exc)
        finally:
            self.client = None
            await self.pool.release(client)


def parse_bridge_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """`webshop=http://127.0.0.1:36001,name=shop,tasks=100` -> (family, url, options)."""
    family, sep, rest = spec.partition("=")
    if not sep or not rest:
        raise ValueError(f"agentgym:{spec}: expected agentgym:FAMILY=URL[,name=N][,tasks=N][,timeout=S][,max_turns=N]")
    url, *pairs = rest.split(",")
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in {"name", "tasks", "timeout", "max_turns"}:
            raise ValueError(f"agentgym:{spec}: unknown option {pair!r}; options are name=, tasks=, timeout=, max_turns=")
        options[key] = value
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"agentgym:{spec}: the URL must start with http:// or https://")
    return family, url.rstrip("/"), options


def bridge_spec(spec: str) -> EnvSpec:
    """The spec of `agentgym:SPEC` (the `gymwire.env_shorthands` entry point)."""
    family, url, options = parse_bridge_spec(spec)
    d = dialect(family)
    try:
        tasks = int(options.get("tasks", d.tasks))
        timeout_s = float(options.get("timeout", DEFAULT_TIMEOUT_S))
        max_turns = int(options.get("max_turns", d.max_turns))
    except ValueError as exc:
        raise ValueError(f"agentgym:{spec}: {exc}") from None
    if tasks < 1 or timeout_s <= 0 or max_turns < 1:
        raise ValueError(f"agentgym:{spec}: tasks and max_turns must be >= 1 and timeout > 0")
    return EnvSpec.of(
        AgentGymBridge, name=options.get("name", family), family=family, url=url, tasks=tasks, timeout_s=timeout_s, max_turns=max_turns
    )
