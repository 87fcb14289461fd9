"""`gymwire collect`: play a policy on an environment's tasks and write its trajectories.

Policies: `expert` (the environment's scripted solver, trainers/learn/experts.py), a model (a
known model's name, a GGUF file or a checkpoint folder, through the transformers backend), or a
model behind an OpenAI-compatible endpoint (`--base-url`). Models play through the same episode
loop as `gymwire eval` (trainers/episodes.play_episode): a recording session, handed to that loop
in place of the client's, keeps every observation, reply, reward and step info, and lets a
labelling expert (`--label expert`: DAgger) say what it would have done in each state first.

Output: JSON lines of trajectories (trajectories.py), written as each episode ends; `--success-only`
and `--min-reward` keep only such episodes. A second run with the same output resumes: the tasks
already played (kept or not, listed in OUTPUT.done) are skipped.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

from .experts import Expert, ExpertError, make_expert
from .trajectories import Trajectory, TrajectoryTurn, append_trajectory

__all__ = ["CollectSettings", "collect", "ModelPlayer", "ExpertPlayer", "RecordingSession"]


@dataclass
class CollectSettings:
    env: str
    indices: Sequence[int]
    split: str = "train"
    samples: int = 1  # episodes per task (a sampling model plays each task this many times)
    options: dict[str, Any] = field(default_factory=dict)
    max_turns: int | None = None
    concurrency: int = 8
    reply_format: str = "Action: {action}"  # how a scripted action is written as the agent's reply
    label: str | None = None  # "expert": the expert labels every state the policy reaches
    success_only: bool = False
    min_reward: float | None = None
    step_timeout: float | None = 60.0
    progress: bool = True

    def keep(self, trajectory: Trajectory) -> bool:
        if trajectory.finish == "error" and all(turn.label is None for turn in trajectory.turns):
            return False  # nothing to learn from
        if self.success_only and not trajectory.success:
            return False
        if self.min_reward is not None and trajectory.reward < self.min_reward:
            return False
        return True


class RecordingSession:
    """A client session that records each step, and asks `labeller` for its action in each state
    before the step is sent. Everything else is the wrapped session's."""

    def __init__(self, session: Any, trajectory: Trajectory, labeller: Expert | None, reply_format: str) -> None:
        self._session = session
        self.trajectory = trajectory
        self.labeller = labeller
        self.reply_format = reply_format
        self.label_error: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    async def step(self, action: str, deadline_ms: int | None = None, reply: str | None = None) -> Any:
        label = None
        if self.labeller is not None and self.label_error is None:
            try:
                label = self.reply_format.format(action=await self.labeller.act(self.last_observation()))
            except ExpertError as exc:
                self.label_error = str(exc)  # no more labels in this episode; the policy plays on
        result = await self._session.step(action, deadline_ms=deadline_ms)
        self.trajectory.turns.append(
            TrajectoryTurn(reply=reply if reply is not None else action, action=action, observation=result.observation.text,
                           reward=result.reward, info=dict(result.info), label=label)
        )
        if self.labeller is not None and self.label_error is None:
            self.labeller.observe(result)
        return result

    def last_observation(self) -> str:
        turns = self.trajectory.turns
        return turns[-1].observation if turns else self.trajectory.observation


class _RecordingClient:
    """The client as the episode loop sees it: sessions it opens are RecordingSessions."""

    def __init__(self, client: Any, start: Callable[[Any], Awaitable[RecordingSession]]) -> None:
        self._client = client
        self._start = start
        self.recording: RecordingSession | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def open(self, *args: Any, **kwargs: Any) -> RecordingSession:
        self.recording = await self._start(await self._client.open(*args, **kwargs))
        return self.recording


class ExpertPlayer:
    """The environment's scripted solver plays."""

    name = "expert"

    async def play(self, client: Any, trajectory: Trajectory, settings: CollectSettings, instructions: str,
                   start: Callable[[Any], Awaitable[RecordingSession]]) -> None:
        session = await start(await client.open(settings.env, split=trajectory.split, index=trajectory.index,
                                                options=settings.options, max_turns=settings.max_turns))
        expert = make_expert(settings.env, trajectory.split, trajectory.index, settings.options)
        try:
            await expert.start(session.observation)
            result = None
            while result is None or not (result.terminated or result.truncated):
                action = await expert.act(session.last_observation())
                result = await session.step(action, reply=settings.reply_format.format(action=action))
                expert.observe(result)
            _finish(trajectory, result)
        except ExpertError as exc:
            trajectory.finish, trajectory.error = "error", str(exc)
        finally:
            expert.close()
            if session.id in client.sessions:
                await session.close()


class ModelPlayer:
    """A model plays, through eval's episode loop (token backends batch across episodes)."""

    def __init__(self, name: str, policy: Any, tokenizer: Any, sampling: Any, turn_tokens: int = 64,
                 episode_tokens: int = 4096, system: str | None = None) -> None:
        from gymwire.trainers.episodes import GenerationBatcher, PromptConfig

        self.name, self.policy, self.sampling = name, policy, sampling
        self.turn_tokens, self.episode_tokens = turn_tokens, episode_tokens
        self.prompt = PromptConfig(system=system)
        self.chat = self.batcher = None
        if policy.prompts == "tokens":
            from gymwire.trainers.chat import ChatFormat

            self.chat = ChatFormat(tokenizer, system=system)
            self.batcher = GenerationBatcher(policy, self.chat.stop_ids, sampling)

    async def play(self, client: Any, trajectory: Trajectory, settings: CollectSettings, instructions: str,
                   start: Callable[[Any], Awaitable[RecordingSession]]) -> None:
        from gymwire.trainers.episodes import play_episode
        from gymwire.trainers.rollout import EpisodeSpec, RolloutSettings

        rollout = RolloutSettings(env=settings.env, options=dict(settings.options), max_turns=settings.max_turns,
                                  turn_tokens=self.turn_tokens, episode_tokens=self.episode_tokens,
                                  sampling=self.sampling, step_timeout=settings.step_timeout)
        recorder = _RecordingClient(client, start)
        spec = EpisodeSpec(trajectory.split, trajectory.index, group=trajectory.sample)
        episode = await play_episode(recorder, self.policy, spec, rollout, self.prompt, instructions, self.chat, self.batcher)
        trajectory.success, trajectory.score, trajectory.finish, trajectory.error = (
            episode.success, episode.score, episode.finish, episode.error)
        if recorder.recording is not None and recorder.recording.label_error:
            trajectory.error = trajectory.error or f"labelling stopped: {recorder.recording.label_error}"


def _finish(trajectory: Trajectory, result: Any) -> None:
    if result.metrics is not None:
        trajectory.success, trajectory.score = result.metrics.success, result.metrics.score
    trajectory.finish = "terminated" if result.terminated else "truncated"


def _done_keys(path: Path) -> set[str]:
    marks = path.with_name(path.name + ".done")
    if not marks.exists():
        return set()
    return {line.strip() for line in marks.read_text(encoding="utf-8").splitlines() if line.strip()}


def _key(trajectory: Trajectory) -> str:
    return json.dumps([trajectory.split, trajectory.index, trajectory.sample])


async def collect(url: str, player: Any, settings: CollectSettings, output: str | Path, token: str | None = None) -> dict[str, Any]:
    """Play every (task, sample) not yet recorded in `output`; append the kept trajectories.
    Returns counts: played, kept, successes, errors, skipped (already done)."""
    from gymwire.sdk.client import GymClient

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = _done_keys(output)
    marks = output.with_name(output.name + ".done")
    counts = {"played": 0, "kept": 0, "successes": 0, "errors": 0, "skipped": 0}
    slots = asyncio.Semaphore(settings.concurrency)
    bar = _bar(settings, len(settings.indices) * settings.samples)
    async with GymClient(url, token=token) as client:
        info = await client.describe(settings.env)
        if settings.split not in info.splits:
            raise ValueError(f"{settings.env} has no split {settings.split!r}; it has {sorted(info.splits)}")

        async def one(index: int, sample: int) -> None:
            trajectory = Trajectory(env=settings.env, split=settings.split, index=index, instructions=info.instructions or "",
                                    observation="", options=dict(settings.options), policy=player.name,
                                    labeller=settings.label, sample=sample)
            if _key(trajectory) in done:
                counts["skipped"] += 1
                bar.update(1)
                return

            async def start(session: Any) -> RecordingSession:
                trajectory.observation = session.observation.text if session.observation else ""
                labeller = None
                if settings.label == "expert":
                    labeller = make_expert(settings.env, settings.split, index, settings.options)
                    await labeller.start(session.observation)
                return RecordingSession(session, trajectory, labeller, settings.reply_format)

            async with slots:
                try:
                    await player.play(client, trajectory, settings, info.instructions or "", start)
                except ExpertError as exc:
                    trajectory.finish, trajectory.error = "error", str(exc)
            counts["played"] += 1
            counts["successes"] += trajectory.success
            counts["errors"] += trajectory.finish == "error"
            if settings.keep(trajectory):
                append_trajectory(output, trajectory)
                counts["kept"] += 1
            with marks.open("a", encoding="utf-8") as out:
                out.write(_key(trajectory) + "\n")
            bar.update(1)
            bar.set_postfix(kept=counts["kept"], success=f"{counts['successes']}/{counts['played']}")

        jobs = [asyncio.create_task(one(i, s)) for i in settings.indices for s in range(settings.samples)]
        try:
            await asyncio.gather(*jobs)
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            bar.close()
    return counts


def _bar(settings: CollectSettings, total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"collect {settings.env}", disable=not settings.progress, dynamic_ncols=True)
