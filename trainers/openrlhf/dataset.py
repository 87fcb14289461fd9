"""`gymwire openrlhf prepare`: an environment's task split as OpenRLHF's prompt dataset.

One JSON line per task: `prompt` (the episode's first user message, the same text the agents show
the model) and `label` (the task: an EnvTask as a JSON string). Train with `--data.input_key prompt
--data.label_key label`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any, AsyncIterator

from gymwire.sdk.client import GymClient
from gymwire.sdk.errors import UserError

from ..episode import EnvTask
from ..play import first_message

__all__ = ["prepare_dataset", "collect_rows", "task_rows", "read_rows", "PrepareError"]


class PrepareError(UserError, ValueError):
    """The split or the range of tasks asked for does not exist."""


async def task_rows(
    client: GymClient, env: str, split: str, *, start: int = 0, limit: int | None = None, concurrency: int = 64
) -> list[dict[str, str]]:
    """Rows for tasks start .. start+limit-1 of `split` (all of it when limit is None), in order."""
    info = await client.describe(env)
    if split not in info.splits:
        raise PrepareError(f"{env} has no split {split!r}; its splits are {sorted(info.splits) or 'none (seeds only)'}")
    size = info.splits[split]
    stop = size if limit is None else min(size, start + limit)
    if not 0 <= start < stop:
        raise PrepareError(f"no tasks in {env}/{split} from index {start} (the split has {size})")
    gate = asyncio.Semaphore(concurrency)

    async def row(index: int) -> dict[str, str]:
        async with gate, client.session(env, split=split, index=index) as session:
            observation = session.observation.text if session.observation else ""
        return {"prompt": first_message(info.instructions, observation), "label": EnvTask(env, split, index).to_json()}

    return list(await asyncio.gather(*(row(i) for i in range(start, stop))))


@contextlib.asynccontextmanager
async def _served(url: str | None, env: str, token: str | None) -> AsyncIterator[tuple[str, str]]:
    """(server URL, the environment's name there). Served here, a `module:Class` is served under
    its class's name, as `gymwire serve module:Class` serves it: the labels must say that name."""
    if url:
        yield url, env
        return
    from gymwire.sdk.registry import resolve_env
    from gymwire.sdk.server import GymServer

    env_class = resolve_env(env)
    async with GymServer([env_class], port=0, token=token) as server:
        yield server.url, env_class.info().name


async def collect_rows(
    env: str,
    split: str,
    *,
    url: str | None = None,
    token: str | None = None,
    start: int = 0,
    limit: int | None = None,
) -> list[dict[str, str]]:
    """The dataset's rows. Without `url`, serves `env` (a built-in name or module:Class) in this
    process for the duration."""
    async with _served(url, env, token) as (server_url, name), GymClient(server_url, token=token, reconnect_attempts=2) as client:
        return await task_rows(client, name, split, start=start, limit=limit)


def prepare_dataset(env: str, split: str, out: str | Path, **kwargs: Any) -> int:
    """Write the dataset to `out` (JSON lines); returns the number of rows. `kwargs`: those of
    `collect_rows`."""
    rows = asyncio.run(collect_rows(env, split, **kwargs))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as handle:
        for item in rows:
            handle.write(json.dumps(item) + "\n")
    return len(rows)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
