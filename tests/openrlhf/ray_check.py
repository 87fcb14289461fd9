"""Check the Ray side of the OpenRLHF adapter, which CI (no Ray) cannot: run it on the GPU node
before a real training, or anywhere with `pip install ray==2.55.0` beside openrlhf 0.11.2.

    python tests/openrlhf/ray_check.py

Not collected by pytest (no test_ prefix): CI has no Ray.

1. RayStepBoard across processes: an async Ray actor (as vLLM's rollout actor) reads what a
   trainer actor published, and is told clearly when nothing was published.
2. `ray_trainer.install()` makes `from openrlhf.trainer.ppo_trainer import PPOTrainer` (what
   train_ppo_ray's `train()` runs) give the step-publishing trainer, with openrlhf's own
   PPOTrainer behind the mixin.
3. openrlhf's real `PPOTrainer.fit` and `init_checkpoint_states`, with the mixin, through a run,
   a crash after step 3 and a resume from its checkpoint: every rollout batch (two per step, as
   dynamic filtering draws) and every evaluation reads the step it belongs to from the Ray board.
   Only what needs GPUs is replaced: the update inside train_step, checkpoint writing, evaluation's
   generation. Modules openrlhf imports that are not installed (vllm, deepspeed, datasets... on a
   CPU box) are stubbed; on the GPU node the real ones load.

Prints what it saw; exits 1 when a check fails.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import tempfile
import time
from types import SimpleNamespace
from unittest import mock

GPU_STACK = (
    "vllm", "deepspeed", "datasets", "flash_attn", "peft", "bitsandbytes", "optimum", "wandb", "torchdata",
    "torchmetrics", "einops", "loralib", "accelerate", "jsonlines", "transformers_stream_generator", "liger_kernel",
)


class _StubMissing(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty stand-ins for GPU-stack packages that are not installed; installed ones load as usual."""

    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if top in GPU_STACK and importlib.machinery.PathFinder.find_spec(top) is None:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = mock.MagicMock(name=spec.name)
        module.__path__, module.__spec__, module.__version__ = [], spec, "0.19.6"
        return module

    def exec_module(self, module):
        pass


failures: list[str] = []


def check(what: str, ok: bool, detail: object = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what} {detail}")
    if not ok:
        failures.append(what)


def main() -> int:
    sys.meta_path.insert(0, _StubMissing())
    import ray

    from gymwire.trainers.train.horizon import horizon_from_config
    from gymwire.trainers.openrlhf.publishing import StepPublishingMixin, unwrap_actor_class
    from gymwire.trainers.openrlhf.steps import RayStepBoard, StepNotPublished
    from gymwire.trainers.openrlhf.train import runtime_env

    started = time.monotonic()
    # As train.py starts the job: the agent files as the job's working directory (check 4).
    job_env = runtime_env(["--train.agent_func_path", "agent_func.py"], {})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=job_env)
    print(f"ray {ray.__version__} up in {time.monotonic() - started:.1f}s")
    board_name = f"check-{os.getpid()}"

    # 1. the board across processes
    @ray.remote
    class Reader:
        async def read(self, name):
            try:
                return await RayStepBoard(name).current_step()
            except StepNotPublished:
                return None

    @ray.remote
    class Publisher:
        def publish(self, name, step):
            RayStepBoard(name).publish(step)

    reader = Reader.remote()
    check("nothing published: the reader is told", ray.get(reader.read.remote(board_name)) is None)
    ray.get(Publisher.remote().publish.remote(board_name, 42))
    check("an async actor reads what another actor published", ray.get(reader.read.remote(board_name)) == 42)

    # 2. install()
    from openrlhf.trainer import ppo_trainer

    original = ppo_trainer.PPOTrainer
    from gymwire.trainers.openrlhf import ray_trainer

    ray_trainer.install()
    from openrlhf.trainer.ppo_trainer import PPOTrainer

    behind = unwrap_actor_class(PPOTrainer)
    check("install() replaces openrlhf's PPOTrainer", PPOTrainer is not original and behind is ray_trainer.StepPublishingPPOTrainer)
    check("openrlhf's PPOTrainer is behind the mixin", behind.__mro__[2] is unwrap_actor_class(original),
          [c.__name__ for c in behind.__mro__[:4]])

    # 3. the real fit through a crash and a resume
    horizon = horizon_from_config("staged:2,4,6@2")
    board = RayStepBoard(board_name)
    seen: list[tuple[str, int, int]] = []

    def board_step() -> int:
        return asyncio.run(RayStepBoard(board_name).current_step())

    class Crash(Exception):
        pass

    class GpuFree(unwrap_actor_class(original)):  # type: ignore[misc]
        def train_step(self, rollout_samples, global_step):
            return {"timing/update": 0.0}, global_step + 1

        def save_logs_and_checkpoints(self, global_step, logs_dict=None, client_states=None):
            self.saved = dict(client_states)
            if global_step == self.crash_at:
                raise Crash

        def evaluate(self, global_step, **kwargs):
            seen.append(("eval", global_step, board_step()))
            return {}

        def save_best_checkpoint(self, *args, **kwargs):
            pass

        def broadcast_to_vllm(self):
            pass

    class Trainer(StepPublishingMixin, GpuFree):
        def step_board(self):
            return board

    class Loader:
        def __len__(self):
            return 6

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    def trainer(ckpt_dir: str, saved: dict | None = None, crash_at: int | None = None) -> Trainer:
        t = object.__new__(Trainer)  # the real __init__ builds models and datasets on GPUs
        t.crash_at, t.saved = crash_at, None
        t.args = SimpleNamespace(
            train=SimpleNamespace(num_episodes=1),
            eval=SimpleNamespace(steps=3, temperature=1.0, n_samples_per_prompt=1),
            algo=SimpleNamespace(dynamic_filtering_enable=True),
            ckpt=SimpleNamespace(path=ckpt_dir, load_enable=saved is not None),
        )
        t.generate_kwargs, t.eval_dataloader, t.prompts_dataloader = {}, [object()], Loader()
        t.best_eval_metric_key, t.best_eval_metric_value, t._latest_eval_metric_value = "", float("-inf"), None
        t.wandb_logger = t.tensorboard_logger = None
        collected = {"steps": (saved or {}).get("global_step", 0)}

        def generate_samples(**kwargs):
            for _ in range(2):  # dynamic filtering draws a second round of prompts for the same step
                seen.append(("train", collected["steps"] + 1, board_step()))
            collected["steps"] += 1
            return ["sample"], 1.0, 1, collected["steps"] >= 6

        t.samples_generator = SimpleNamespace(generate_samples=generate_samples)
        if saved is not None:  # the real init_checkpoint_states asks the actor group over Ray
            os.makedirs(os.path.join(ckpt_dir, "_actor"), exist_ok=True)
            t.actor_model_group = SimpleNamespace(async_run_method=lambda method_name: [ray.put(saved)])
        return t

    with tempfile.TemporaryDirectory() as ckpt:
        trainer(ckpt).fit()
        straight = list(seen)
        seen.clear()
        first = trainer(ckpt, crash_at=3)
        try:
            first.fit()
        except Crash:
            pass
        board.publish(1)  # a stale value must not reach the resumed run
        trainer(ckpt, saved=first.saved).fit()
        resumed = list(seen)

    print("uninterrupted (kind, step collected, step on the board):", straight)
    wrong = [e for e in straight + resumed if e[2] != (e[1] if e[0] == "train" else e[1] + 1)]
    check("every batch and evaluation reads its own step", not wrong, wrong)
    train = [e for e in straight if e[0] == "train"]
    check("the resumed run's training rollouts equal the uninterrupted run's",
          [e for e in resumed if e[0] == "train"] == train)
    check("turn limits by step", [horizon.turns_at(e[2]) for e in train[::2]] == [2, 2, 4, 4, 6, 6],
          [horizon.turns_at(e[2]) for e in train[::2]])
    check_agent_in_a_ray_actor(board, board_name, horizon)
    ray.kill(ray.get_actor(board_name, namespace="gymwire"))
    ray.shutdown()
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


def check_agent_in_a_ray_actor(board, board_name: str, horizon) -> None:
    """4. The agent file loaded by openrlhf's own `_load_agent_executor` inside an async Ray actor
    in the job's working directory (holding the agent file, named relatively as the launcher names
    it), as train.py starts the job, with its GYMWIRE_* variables from its runtime_env, playing
    episodes on a gymwire server with a fake engine (tests/openrlhf/openrlhf_fakes.py)."""
    import ray

    from gymwire.sdk.server import GymServer
    from gymwire.servers.guess import GuessEnv
    from gymwire.trainers.openrlhf.train import worker_env

    fakes_dir = os.path.dirname(os.path.abspath(__file__))  # openrlhf_fakes.py sits beside this script

    @ray.remote
    class Rollout:
        async def play(self, agent_path: str, fakes: str, step_limit_pairs: int):
            sys.path.insert(0, fakes)
            sys.meta_path.insert(0, _StubMissing())  # a fresh worker process: vllm is stubbed here too on a CPU box
            from openrlhf.trainer.ray.vllm_engine import _load_agent_executor
            from openrlhf_fakes import GUESS_CORPUS, FakeEngine, FakeSamplingParams

            from gymwire.trainers.episode import EnvTask
            from gymwire.trainers.models.tiny import build_tokenizer

            executor = _load_agent_executor(agent_path)
            tokenizer = build_tokenizer(GUESS_CORPUS, numbers=101)
            results = await asyncio.gather(*(
                executor.execute("p", EnvTask("guess", "test", i).to_json(), FakeSamplingParams(), 4096,
                                 tokenizer, FakeEngine(tokenizer, fixed_guess=0))
                for i in range(step_limit_pairs)
            ))
            return [(r["extra_logs"]["step"], r["extra_logs"]["turn_limit"], r["extra_logs"]["turns"]) for r in results]

    with GymServer([GuessEnv], port=0).run_in_thread() as url:
        settings = {"GYMWIRE_URLS": url, "GYMWIRE_HORIZON": str(horizon), "GYMWIRE_STEP_SOURCE": f"ray:{board_name}"}
        actor = Rollout.options(runtime_env={"env_vars": worker_env(settings)}).remote()
        outcomes = []
        for step in (2, 3, 5):
            board.publish(step)
            outcomes += ray.get(actor.play.remote("agent_func.py", fakes_dir, 20))
    expected = [(float(s), float(horizon.turns_at(s)), float(horizon.turns_at(s))) for s in (2, 3, 5) for _ in range(20)]
    check("agent_func.py in a Ray actor: 60 episodes at the published steps' limits", outcomes == expected,
          sorted(set(outcomes)))


if __name__ == "__main__":
    sys.exit(main())
