"""The environments' scripted solvers as policies that `gymwire collect` plays and that label
states a learner reached (DAgger).

An expert is made per episode, once the session is open: `start(observation)` with the first
observation, then `act()` gives the next action and `observe(result)` tells it what the step did.
Experts that keep a private copy of the episode (BabyAI) follow any actions, not only their own,
so they can label the states another policy reaches; the others plan once and say so
(`follows_others = False`).
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["Expert", "ExpertError", "make_expert", "EXPERTS", "shutdown"]


class ExpertError(RuntimeError):
    """The expert has no action for this state (its solver is stuck, or the task is not one it solves)."""


class Expert:
    follows_others = False

    def __init__(self, split: str | None, index: int | None, options: dict[str, Any]) -> None:
        self.split, self.index, self.options = split, index, options

    async def start(self, observation: Any) -> None:
        """`observation`: the session's first Observation (text and data)."""

    async def act(self, observation: str) -> str:
        raise NotImplementedError

    def observe(self, result: Any) -> None:
        """`result`: the StepResult of the action just taken (by anyone)."""

    def close(self) -> None:
        pass


class BabyAIExpert(Expert):
    """minigrid's BabyAI bot, with gymwire's gap-fillers (servers/babyai/expert.py). Follows any
    actions: it replays the primitives every step reports."""

    follows_others = True

    async def start(self, observation: Any) -> None:
        from gymwire.servers.babyai.expert import BabyAIExpert as Bot

        if self.options.get("profile"):
            raise ExpertError("the BabyAI expert plays gymwire's own text, not profile " + repr(self.options["profile"]))
        self.bot = Bot(self.split or "train", self.index or 0, macros=True)

    async def act(self, observation: str) -> str:
        from gymwire.servers.babyai.expert import ExpertStuck

        try:
            return self.bot.act()
        except (ExpertStuck, AssertionError) as exc:
            raise ExpertError(f"BabyAI expert: {exc}") from exc

    def observe(self, result: Any) -> None:
        self.bot.observe(result.info)


class TextCraftExpert(Expert):
    """Plans the whole recipe tree from the first observation's goal (servers/textcraft/solver.py)."""

    async def start(self, observation: Any) -> None:
        from gymwire.servers.textcraft.recipes import load_book
        from gymwire.servers.textcraft.solver import PlanError, plan

        if self.options.get("profile"):
            raise ExpertError("the TextCraft expert plays gymwire's own text, not profile " + repr(self.options["profile"]))
        try:
            self.plan = plan(load_book(), observation.data["goal"])
        except (PlanError, KeyError) as exc:
            raise ExpertError(f"TextCraft expert: {exc}") from exc

    async def act(self, observation: str) -> str:
        if not self.plan:
            raise ExpertError("TextCraft expert: the plan is done but the episode is not")
        return self.plan.pop(0)


class SciWorldExpert(Expert):
    """ScienceWorld's gold action sequence for the task, from a simulator of the expert's own
    (servers/sciworld/solver.py); one JVM is shared by every SciWorld expert of the process."""

    _pool: Any = None

    async def start(self, observation: Any) -> None:
        from gymwire.servers.sciworld import tasks
        from gymwire.servers.sciworld.jvm import JavaPool
        from gymwire.servers.sciworld.solver import gold_actions

        if SciWorldExpert._pool is None:
            SciWorldExpert._pool = JavaPool(processes=1, sessions_per_process=8, heap_mb=1024, call_timeout_s=300)
        self.plan = list(await gold_actions(SciWorldExpert._pool, tasks.task_at(self.split or "train", self.index or 0)))

    async def act(self, observation: str) -> str:
        if not self.plan:
            raise ExpertError("SciWorld expert: the gold path is done but the episode is not")
        return self.plan.pop(0)

    @classmethod
    def shutdown(cls) -> None:
        if cls._pool is not None:
            cls._pool.shutdown()
            cls._pool = None


class DeepSearchExpert(Expert):
    """Searches for each gold evidence passage by its title (then title and question), then
    answers with the first gold answer: servers/deepsearch/solver.py's strategy, turn by turn.
    It knows the built-in questions (their evidence is what it searches for)."""

    _questions: dict[str, list[Any]] | None = None

    async def start(self, observation: Any) -> None:
        from gymwire.servers.deepsearch.corpus import builtin_questions_dir, load_questions

        if DeepSearchExpert._questions is None:
            DeepSearchExpert._questions = load_questions(builtin_questions_dir())
        question = DeepSearchExpert._questions[self.split or "train"][self.index or 0]
        self.titles = [passage["title"] for passage in question.metadata.get("evidence") or []]
        if not self.titles:
            raise ExpertError(f"DeepSearch expert: question {question.id} has no evidence to search for")
        self.question, self.answer = question.question, question.golden_answers[0]
        self.tries = 0  # searches for the current title

    async def act(self, observation: str) -> str:
        if self.tries and self.titles and f"(Title: {self.titles[0]})" in observation:
            self.titles.pop(0)
            self.tries = 0
        if not self.titles:
            return f"<answer>{self.answer}</answer>"
        if self.tries == 2:
            raise ExpertError(f"DeepSearch expert: no search found the passage {self.titles[0]!r}")
        self.tries += 1
        query = self.titles[0] if self.tries == 1 else f"{self.titles[0]} {self.question}"
        return f"<search>{query}</search>"


class MiniWoBExpert(Expert):
    """The scripted MiniWoB++ solver of the task's type (servers/web/solvers.py)."""

    async def start(self, observation: Any) -> None:
        from gymwire.servers.web.solvers import MiniWoBSolver

        try:
            self.solver = MiniWoBSolver(observation.data["task_type"])
        except (KeyError, ValueError) as exc:
            raise ExpertError(f"MiniWoB expert: {exc}") from exc

    async def act(self, observation: str) -> str:
        from gymwire.servers.web.solvers import SolverStuck

        try:
            return self.solver.act(observation)
        except SolverStuck as exc:
            raise ExpertError(f"MiniWoB expert: {exc}") from exc


EXPERTS: dict[str, Callable[[str | None, int | None, dict[str, Any]], Expert]] = {
    "babyai": BabyAIExpert,
    "textcraft": TextCraftExpert,
    "sciworld": SciWorldExpert,
    "deepsearch": DeepSearchExpert,
    "miniwob": MiniWoBExpert,
}


def shutdown() -> None:
    """Stop what experts started for the whole process (SciWorld's JVM)."""
    SciWorldExpert.shutdown()


def make_expert(env: str, split: str | None, index: int | None, options: dict[str, Any]) -> Expert:
    try:
        kind = EXPERTS[env]
    except KeyError:
        raise ExpertError(f"no expert for {env!r}; experts: {', '.join(sorted(EXPERTS))}") from None
    return kind(split, index, options)
