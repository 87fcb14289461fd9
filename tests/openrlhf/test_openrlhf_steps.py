"""The training step reaches the agents exactly: step boards, and the publishing trainer through
a start, dynamic filtering, evaluation, a crash and a resume."""

import ast
import asyncio
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
from openrlhf_fakes import FakeEngine, FakeSamplingParams

from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv
from gymwire.trainers.train.horizon import horizon_from_config
from gymwire.trainers.openrlhf.agent import AgentSettings, GymwireAgentExecutor
from gymwire.trainers.episode import EnvTask
from gymwire.trainers.openrlhf.pool import close_pools
from gymwire.trainers.openrlhf.publishing import StepPublishingMixin, unwrap_actor_class
from gymwire.trainers.openrlhf.steps import (
    FileStepBoard,
    MemoryStepBoard,
    RayStepBoard,
    StepBoardConfigError,
    StepNotPublished,
    step_board_from_spec,
)

HORIZON = horizon_from_config("staged:2,4,6@2")


# ------------------------------------------------------------------ boards


async def test_file_board_round_trip_and_errors(tmp_path):
    board = FileStepBoard(tmp_path / "run" / "step.json")
    with pytest.raises(StepNotPublished, match="publishes it"):
        await board.current_step()
    board.publish(3)
    board.publish(4)
    assert await board.current_step() == 4
    assert await FileStepBoard(tmp_path / "run" / "step.json").current_step() == 4  # another reader
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["step.json"]  # no temporary files left
    (tmp_path / "run" / "step.json").write_text("garbage")
    with pytest.raises(StepBoardConfigError, match="not a gymwire step file"):
        await board.current_step()


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "3"])
def test_boards_refuse_steps_that_are_not_1_based_ints(bad, tmp_path):
    for board in (MemoryStepBoard(), FileStepBoard(tmp_path / "s.json")):
        with pytest.raises(ValueError, match="1-based"):
            board.publish(bad)


def test_board_specs(tmp_path):
    assert isinstance(step_board_from_spec("memory"), MemoryStepBoard)
    assert step_board_from_spec(f"file:{tmp_path}/s.json").path == tmp_path / "s.json"
    ray_board = step_board_from_spec("ray:run-7")
    assert isinstance(ray_board, RayStepBoard) and ray_board.name == "run-7"
    for bad in ("file:", "redis:x", "memory:x", ""):
        with pytest.raises(StepBoardConfigError, match="ray:NAME"):
            step_board_from_spec(bad)


def test_unwrap_actor_class_finds_the_plain_class():
    class Plain:
        pass

    modified = type("Class", (Plain,), {"__ray_actor_class__": Plain})
    actor_class = SimpleNamespace(__ray_metadata__=SimpleNamespace(modified_class=modified))
    assert unwrap_actor_class(actor_class) is Plain
    assert unwrap_actor_class(Plain) is Plain
    with pytest.raises(TypeError, match="ray 2.55"):
        unwrap_actor_class(SimpleNamespace(__ray_metadata__=SimpleNamespace()))


# ------------------------------------------------------------------ the trainer's hook points


def _openrlhf_source(relative: str) -> ast.Module:
    # Importing openrlhf.trainer.ppo_trainer needs ray and deepspeed; its source is enough here.
    root = Path(importlib.util.find_spec("openrlhf").submodule_search_locations[0])
    return ast.parse((root / relative).read_text())


def _method(tree: ast.Module, cls: str, name: str) -> ast.FunctionDef:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == name:
                    return item
    raise AssertionError(f"{cls}.{name} not found")


def test_hook_points_match_openrlhf_source():
    """The mixin relies on these facts of openrlhf 0.11.2's synchronous PPOTrainer; a new version
    that changes them fails here rather than silently desynchronising the horizon."""
    tree = _openrlhf_source("trainer/ppo_trainer.py")
    assert [a.arg for a in _method(tree, "PPOTrainer", "fit").args.args] == ["self", "global_step"]
    assert [a.arg for a in _method(tree, "BasePPOTrainer", "train_step").args.args] == ["self", "rollout_samples", "global_step"]
    assert [a.arg for a in _method(tree, "BasePPOTrainer", "init_checkpoint_states").args.args] == ["self"]
    train_step = _method(tree, "BasePPOTrainer", "train_step")
    returned = [ast.unparse(n.value) for n in ast.walk(train_step) if isinstance(n, ast.Return)]
    assert returned == ["(status, global_step + 1)"]
    fit = ast.unparse(_method(tree, "PPOTrainer", "fit"))
    order = [fit.index(s) for s in (
        "self.init_checkpoint_states()",
        "global_step = checkpoint_states['global_step']",
        "self.samples_generator.generate_samples(",
        "self.train_step(rollout_samples, global_step)",
        "self.evaluate(global_step",
    )]
    assert order == sorted(order)


# ------------------------------------------------------------------ the publishing trainer


class Crash(Exception):
    pass


class FakePPOTrainer:
    """The control flow of openrlhf 0.11.2's PPOTrainer.fit that the mixin hooks into (pinned to
    the real source above): restore, then per step draw prompts (dynamic filtering may draw
    several rounds), train, checkpoint, evaluate every `eval_steps`."""

    def __init__(self, collect, *, checkpoint=None, last_step=6, eval_steps=3, filter_rounds=2, crash_after=None):
        self.collect, self.checkpoint = collect, checkpoint
        self.last_step, self.eval_steps, self.filter_rounds, self.crash_after = last_step, eval_steps, filter_rounds, crash_after

    def init_checkpoint_states(self):
        return dict(self.checkpoint or {"global_step": 0, "episode": 0})

    def train_step(self, rollout_samples, global_step):
        return {}, global_step + 1

    def fit(self, global_step=0):
        states = self.init_checkpoint_states()
        if states["global_step"] > 0:
            global_step = states["global_step"]
        while global_step < self.last_step:
            samples = [self.collect("train", global_step + 1) for _ in range(self.filter_rounds)]
            _, global_step = self.train_step(samples, global_step)
            self.checkpoint = {"global_step": global_step, "episode": 0}
            if global_step % self.eval_steps == 0:
                self.collect("eval", global_step)
            if global_step == self.crash_after:
                raise Crash


class PublishingTrainer(StepPublishingMixin, FakePPOTrainer):
    def __init__(self, board, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.board = board

    def step_board(self):
        return self.board


@pytest.fixture
def server_url():
    with GymServer([GuessEnv], port=0).run_in_thread() as url:
        yield url


def collector(url, board, tokenizer, log):
    """Runs real episodes (a policy that never wins, so each runs to its turn limit) and logs
    (kind, step the trainer is at, step and turn limit the episode saw, turns played)."""
    executor = GymwireAgentExecutor(AgentSettings(urls=(url,), horizon=HORIZON, step_board=board))

    async def batch():
        engine = FakeEngine(tokenizer, fixed_guess=0)
        results = await asyncio.gather(*(
            executor.execute("p", EnvTask("guess", "train", i).to_json(), FakeSamplingParams(), 4096, tokenizer, engine)
            for i in range(3)
        ))
        await close_pools()
        return [r["extra_logs"] for r in results]

    def collect(kind, trainer_step):
        for logs in asyncio.run(batch()):
            log.append((kind, trainer_step, int(logs["step"]), int(logs["turn_limit"]), int(logs["turns"])))

    return collect


def test_every_rollout_gets_its_steps_limit_across_a_crash_and_resume(server_url, tokenizer, tmp_path):
    straight: list = []
    board = FileStepBoard(tmp_path / "a.json")
    PublishingTrainer(board, collector(server_url, board, tokenizer, straight)).fit()

    resumed: list = []
    board = FileStepBoard(tmp_path / "b.json")
    first = PublishingTrainer(board, collector(server_url, board, tokenizer, resumed), crash_after=3)
    with pytest.raises(Crash):
        first.fit()
    board.publish(1)  # a stale value (e.g. a reused board) must not leak into the resumed run
    PublishingTrainer(board, collector(server_url, board, tokenizer, resumed), checkpoint=first.checkpoint).fit()

    assert resumed == straight
    train = [entry for entry in straight if entry[0] == "train"]
    assert [entry[1] for entry in train] == [s for s in range(1, 7) for _ in range(6)]  # 2 filter rounds x 3
    for kind, trainer_step, seen_step, limit, turns in straight:
        # Training rollouts of step s play under turns_at(s); evaluation after update s under s + 1.
        expected = trainer_step if kind == "train" else trainer_step + 1
        assert seen_step == expected and limit == HORIZON.turns_at(expected) == turns
    assert {e[3] for e in train} == {2, 4, 6}


def test_resume_from_fits_argument_when_no_checkpoint(tmp_path):
    board = MemoryStepBoard()
    seen = []

    async def read():
        return await board.current_step()

    trainer = PublishingTrainer(board, lambda kind, step: seen.append(asyncio.run(read())), last_step=5)
    trainer.fit(global_step=3)
    assert seen == [4, 4, 5, 5]
