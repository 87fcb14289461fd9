"""`gymwire collect`: play a policy on an environment's tasks and write its trajectories.

Policies: `expert` (the environment's scripted solver, trainers/learn/experts.py), a model (a
known model's name, a GGUF file or a checkpoint folder, through the transformers backend), or a
model behind an OpenAI-compatible endpoint (`--base-url`). Every player plays through the one
episode loop (trainers/play.play_episode) as an Actor: the expert as a ScriptedActor, a model as
eval's TokenActor or ChatActor. collect gives that loop the step it sends actions with, which
keeps each step's `info` and lets a labelling expert (`--label expert`: DAgger) say what it would
have done in each state first; the episode the loop returns, with those, is the Trajectory.

Output: JSON lines of trajectories (trajectories.py), written as each episode ends; `--success-only`
and `--min-reward` keep only such episodes. A second run with the same output resumes: the tasks
already played (kept or not, listed in OUTPUT.done) are skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

from gymwire.protocol import ProtocolError, StepResult
from gymwire.sdk.errors import first_line
from gymwire.trainers.episode import ERROR, EnvTask
from gymwire.trainers.play import Actor, ChatActor, GenerationBatcher, PlaySettings, PromptConfig, ScriptedActor, TokenActor, open_session, play_episode
from gymwire.trainers.policy import PolicyError, Sampling

from .experts import Expert, ExpertError, make_expert
from .trajectories import Trajectory, append_trajectory

__all__ = ["CollectSettings", "collect", "Player", "ModelPlayer", "ExpertPlayer", "EXPERT_REPLY"]

# How a scripted action is written as the agent's reply; the episode loop sends the action alone.
EXPERT_REPLY = "Action: {action}"
_EXPERT_ACTION = r"(?s)\AAction: (.*)\Z"


@dataclass
class CollectSettings:
    env: str
    indices: Sequence[int]
    split: str = "train"
    samples: int = 1  # episodes per task (a sampling model plays each task this many times)
    options: dict[str, Any] = field(default_factory=dict)
    max_turns: int | None = None
    concurrency: int = 8
    label: str | None = None  # "expert": the expert labels every state the policy reaches
    success_only: bool = False
    min_reward: float | None = None
    step_timeout: float | None = 60.0
    progress: bool = True

    def keep(self, trajectory: Trajectory) -> bool:
        if trajectory.finish == ERROR and all(turn.label is None for turn in trajectory.turns):
            return False  # nothing to learn from
        if self.success_only and not trajectory.success:
            return False
        if self.min_reward is not None and trajectory.reward < self.min_reward:
            return False
        return True


class Player(Protocol):
    """Who plays an episode: `name` goes into the trajectory; `play_settings` adds the player's own
    (prompt, token budgets, sampling) to collect's; `start` gives the episode's Actor, and the
    expert that must be told every step's result (None: none)."""

    name: str

    def play_settings(self, settings: PlaySettings) -> PlaySettings: ...

    async def start(self, task: EnvTask, first: Any, options: dict[str, Any]) -> tuple[Actor, Expert | None]: ...


async def _started_expert(task: EnvTask, first: Any, options: dict[str, Any]) -> Expert:
    expert = make_expert(task.env, task.split, task.index, options)
    try:
        await expert.start(first)
    except BaseException:
        expert.close()
        raise
    return expert


class ExpertPlayer:
    """The environment's scripted solver plays; its replies are EXPERT_REPLY."""

    name = "expert"

    def play_settings(self, settings: PlaySettings) -> PlaySettings:
        return dataclasses.replace(settings, prompt=PromptConfig(action_pattern=_EXPERT_ACTION))

    async def start(self, task: EnvTask, first: Any, options: dict[str, Any]) -> tuple[Actor, Expert]:
        expert = await _started_expert(task, first, options)

        async def act(recorder: Any) -> str:
            observation = recorder.last.observation.text if recorder.last is not None else first.text
            try:
                return EXPERT_REPLY.format(action=await expert.act(observation))
            except ExpertError as exc:  # the loop ends the episode as an error, with this message
                raise PolicyError("expert.stuck", str(exc)) from exc

        return ScriptedActor(act), expert


class ModelPlayer:
    """A model plays, as in `gymwire eval`: a token backend through a GenerationBatcher (replies of
    concurrent episodes generated in one batch), a chat endpoint through its messages."""

    def __init__(self, name: str, policy: Any, tokenizer: Any, sampling: Sampling, turn_tokens: int = 64,
                 episode_tokens: int = 4096, system: str | None = None) -> None:
        self.name = name
        self.prompt = PromptConfig(system=system)
        self.turn_tokens, self.episode_tokens, self.sampling = turn_tokens, episode_tokens, sampling
        if policy.prompts == "tokens":
            from gymwire.trainers.chat import ChatFormat

            chat = ChatFormat(tokenizer, system=system)
            self.actor: Actor = TokenActor(GenerationBatcher(policy, chat.stop_ids, sampling).generate, chat, policy.forget)
        else:
            self.actor = ChatActor(policy)

    def play_settings(self, settings: PlaySettings) -> PlaySettings:
        return dataclasses.replace(settings, turn_tokens=self.turn_tokens, episode_tokens=self.episode_tokens,
                                   sampling=self.sampling, prompt=self.prompt)

    async def start(self, task: EnvTask, first: Any, options: dict[str, Any]) -> tuple[Actor, None]:
        return self.actor, None


async def play_trajectory(client: Any, player: Player, task: EnvTask, settings: CollectSettings, play: PlaySettings,
                          instructions: str, sample: int = 0) -> Trajectory:
    """Open `task`, play it through the episode loop with `player`, close it; the Trajectory."""
    trajectory = Trajectory(env=task.env, split=task.split, index=task.index, instructions=instructions, observation="",
                            options=dict(settings.options), policy=player.name, labeller=settings.label, sample=sample)
    try:
        session = await open_session(client, task, play)
    except ProtocolError as exc:
        trajectory.finish, trajectory.error = ERROR, str(exc)
        return trajectory
    trajectory.observation = session.observation.text if session.observation else ""
    followers: list[Expert] = []  # experts told every step's result
    infos: list[dict[str, Any]] = []
    labels: list[str | None] = []
    label_error: str | None = None
    labeller: Expert | None = None
    last = trajectory.observation
    deadline = play.deadline_ms(client)

    async def step(action: str) -> StepResult:
        nonlocal label_error, last
        label = None
        if labeller is not None and label_error is None:
            try:
                label = EXPERT_REPLY.format(action=await labeller.act(last))
            except ExpertError as exc:
                label_error = str(exc)  # no more labels in this episode; the policy plays on
        result = await session.step(action, deadline_ms=deadline)
        infos.append(dict(result.info))
        labels.append(label)
        last = result.observation.text
        for expert in followers:
            if expert is not labeller or label_error is None:
                expert.observe(result)
        return result

    try:
        actor, played = await player.start(task, session.observation, settings.options)
        followers += [played] if played is not None else []
        if settings.label == "expert":
            labeller = await _started_expert(task, session.observation, settings.options)
            followers.append(labeller)
        episode = await play_episode(session, task, actor, play, instructions=instructions, step=step)
    except ExpertError as exc:  # an expert could not start on this task
        trajectory.finish, trajectory.error = ERROR, str(exc)
        return trajectory
    finally:
        for expert in followers:
            expert.close()
        if session.id in client.sessions:
            await session.close()
    trajectory.fill(episode, infos, labels)
    if label_error:
        trajectory.error = trajectory.error or f"labelling stopped: {label_error}"
    return trajectory


def _done_keys(path: Path) -> set[str]:
    marks = path.with_name(path.name + ".done")
    if not marks.exists():
        return set()
    return {line.strip() for line in marks.read_text(encoding="utf-8").splitlines() if line.strip()}


def _key(split: str, index: int, sample: int) -> str:
    return json.dumps([split, index, sample])


async def collect(url: str, player: Player, settings: CollectSettings, output: str | Path, token: str | None = None) -> dict[str, Any]:
    """Play every (task, sample) not yet recorded in `output`; append the kept trajectories.
    Returns counts: played, kept, successes, errors, skipped (already done), and the first error's
    message (`first_error`, None without errors)."""
    from gymwire.sdk.client import GymClient

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = _done_keys(output)
    marks = output.with_name(output.name + ".done")
    counts: dict[str, Any] = {"played": 0, "kept": 0, "successes": 0, "errors": 0, "skipped": 0, "first_error": None}
    slots = asyncio.Semaphore(settings.concurrency)
    bar = _bar(settings, len(settings.indices) * settings.samples)
    play = player.play_settings(PlaySettings(options=dict(settings.options), max_turns=settings.max_turns,
                                             step_timeout=settings.step_timeout))
    async with GymClient(url, token=token) as client:
        info = await client.describe(settings.env)
        if settings.split not in info.splits:
            raise ValueError(f"{settings.env} has no split {settings.split!r}; it has {sorted(info.splits)}")

        async def one(index: int, sample: int) -> None:
            key = _key(settings.split, index, sample)
            if key in done:
                counts["skipped"] += 1
                bar.update(1)
                return
            async with slots:
                trajectory = await play_trajectory(client, player, EnvTask(settings.env, settings.split, index), settings,
                                                   play, info.instructions or "", sample)
            counts["played"] += 1
            counts["successes"] += trajectory.success
            counts["errors"] += trajectory.finish == ERROR
            if trajectory.finish == ERROR and counts["first_error"] is None:
                counts["first_error"] = first_line(trajectory.error)
            if settings.keep(trajectory):
                append_trajectory(output, trajectory)
                counts["kept"] += 1
            if trajectory.finish != ERROR:  # an error is no result: the next run plays the task again
                with marks.open("a", encoding="utf-8") as out:
                    out.write(key + "\n")
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
