"""Gymnasium over gymwire: `GymnasiumEnv` is a `gymnasium.Env` whose observations and actions are
text, each episode one session on a gymwire server. Needs the extra: pip install 'gymwire[gymnasium]'.

    env = GymnasiumEnv("ws://127.0.0.1:8765", "textcraft", split="test")
    obs, info = env.reset(seed=5)            # test task 5
    obs, reward, terminated, truncated, info = env.step("Action: inventory")

Which task `reset(seed=None, options=None)` plays, `split` being options["split"] or the constructor's:
- options["index"] = i (with a split): task i of the split;
- seed = n, with a split: task n of the split (n modulo the split's size), so a seeded evaluation
  on split="test" plays test tasks;
- no seed and no index, with a split: the split's next task in order (after task i comes i + 1);
- seed = n without a split: the environment's own task for seed n; neither: the environment's choice.
Other options go to the environment (e.g. guess's `low`, `high`). `info["task"]` says what was played.

Importing this module registers `gymwire/<name>` with gymnasium for every installed gymwire
environment, so `gymnasium.make("gymwire/guess", url=...)` works (or, without the import,
`gymnasium.make("gymwire.sdk.gym_env:gymwire/guess", url=...)`); `register_env(name)` registers
another environment a server offers.
"""

from __future__ import annotations

from typing import Any

from .environment import require_modules
from .registry import builtin_envs
from .sync import SyncGymClient, SyncSession

require_modules(["gymnasium"], "gymnasium", "gymwire.sdk.gym_env (GymnasiumEnv)")

import gymnasium  # noqa: E402  (after the check, which names the pip line to run)
from gymnasium import spaces  # noqa: E402

__all__ = ["GymnasiumEnv", "AnyText", "register_env"]


class AnyText(spaces.Text):
    """Text of any characters up to `max_length`. gymnasium's Text admits only the characters it
    samples from (alphanumerics), and environments speak in sentences; samples stay alphanumeric."""

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length


class GymnasiumEnv(gymnasium.Env[str, str]):
    """A gymwire environment as a `gymnasium.Env` (see the module docstring for the task rules).

    `step` returns (observation text, reward, terminated, truncated, info); info["observation"] is
    the full Observation (structured data, images) and, at the episode's end, info["metrics"] the
    server's episode metrics (info["episode"] is left to gymnasium's RecordEpisodeStatistics). `client_kwargs` go to the client (token=..., encoding=...)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        url: str,
        env: str,
        *,
        split: str | None = None,
        max_turns: int | None = None,
        render_mode: str | None = None,
        **client_kwargs: Any,
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"GymnasiumEnv renders nothing (render_modes []), got render_mode={render_mode!r}")
        self._client = SyncGymClient(url, **client_kwargs)
        try:
            self.env_info = self._client.describe(env)
            if split is not None and split not in self.env_info.splits:
                raise ValueError(f"{env} has no split {split!r}; its splits are {sorted(self.env_info.splits)}")
        except BaseException:
            self._client.close()
            raise
        self.env_name = env
        self.split = split
        self.max_turns = max_turns
        self.render_mode = None
        limits = self._client.limits
        self.observation_space = AnyText(max_length=limits.max_frame_bytes)
        self.action_space = AnyText(max_length=limits.max_action_bytes)
        self._session: SyncSession | None = None
        self._next_index: dict[str, int] = {}

    def _task(self, seed: int | None, options: dict[str, Any]) -> dict[str, Any]:
        split = options.pop("split", self.split)
        index = options.pop("index", None)
        if split is None:
            if index is not None:
                raise ValueError("options['index'] needs a split: GymnasiumEnv(..., split=...) or options['split']")
            return {"seed": seed}
        size = self.env_info.splits.get(split)
        if size is None:
            raise ValueError(f"{self.env_name} has no split {split!r}; its splits are {sorted(self.env_info.splits)}")
        if index is None:
            index = seed % size if seed is not None else self._next_index.get(split, 0)
        self._next_index[split] = (index + 1) % size
        return {"split": split, "index": index}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        task = self._task(seed, options)
        if self._session is not None:
            self._session.close()
            self._session = None
        self._session = self._client.open(self.env_name, **task, options=options, max_turns=self.max_turns)
        observation = self._session.observation
        assert observation is not None  # the open resets
        played = {k: v for k, v in task.items() if v is not None}
        return observation.text, {"observation": observation, "session": self._session.session.id, "task": played}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._session is None:
            raise RuntimeError("call reset() before step()")
        result = self._session.step(action)
        info = dict(result.info)
        info["observation"] = result.observation
        if result.metrics is not None:
            info["metrics"] = result.metrics.model_dump()
        return result.observation.text, result.reward, result.terminated, result.truncated, info

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        self._client.close()


def register_env(name: str) -> str:
    """Register `gymwire/<name>` with gymnasium; `gymnasium.make(id, url=...)` then builds a
    GymnasiumEnv of that environment. Returns the id."""
    env_id = f"gymwire/{name}"
    if env_id not in gymnasium.registry:
        gymnasium.register(env_id, entry_point=GymnasiumEnv, kwargs={"env": name}, disable_env_checker=False)
    return env_id


for _name in builtin_envs():
    register_env(_name)
