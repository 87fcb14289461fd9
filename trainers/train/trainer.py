"""The reference trainer: policy-gradient RL of a causal LM over gymwire environments, with torch
and transformers, on CPU or one CUDA GPU. Critic-free (GRPO, RLOO, REINFORCE++) or PPO with GAE,
whose critic is a value head on the policy's own trunk.

One training step is four stages, each a module of its own:
    rollout      trainers/train/rollout.py     draw `tasks_per_step` tasks of the train split and play
                                         `group_size` episodes of each at the horizon's turn limit
    scoring      trainers/train/scoring.py     the episodes as a TrainBatch: the policy's, the critic's and
                                         the reference's scores, advantages and returns
    update       trainers/train/update.py      `epochs` x `minibatches` clipped policy-gradient steps
    bookkeeping  trainers/train/bookkeeping.py evaluation and checkpoint cadence, metrics, resume, signals
This class sets the run up and passes each stage's result to the next. Everything random draws
from RNGs whose states are checkpointed, so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from gymwire.protocol import ErrorCode, ProtocolError

from ..chat import ChatFormat
from ..episode import EnvTask, Episode, write_jsonl
from ..models.backends import ModelError, load_model, make_policy
from ..models.devices import torch_device
from ..play import RolloutClient
from ..policy import Sampling
from .bookkeeping import (
    MetricsLog,
    ResumeError,
    StopOnSignal,
    TrainingStopped,
    checkpoint_step,
    due,
    latest_checkpoint,
    load_state,
    previous_run_files,
    resume_hint,
    save_checkpoint,
    summary_line,
)
from .config import TrainConfig, TrainConfigError
from .rollout import draw_tasks, episode_stats, play_settings
from .scoring import LMHeadError, Scorer, ValueHead, check_lm_head, score_episodes
from .update import update_policy

__all__ = ["Trainer"]


class Trainer:
    """`with Trainer(config) as trainer: trainer.train()`. Entering starts the embedded server
    (or connects to `env.server`), builds the tiny model if asked, loads the model and resumes."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.step = 0  # completed training steps; the next one is step + 1
        self.history: list[dict[str, Any]] = []
        self._stack = contextlib.ExitStack()

    # ------------------------------------------------------------------ setup

    def __enter__(self) -> "Trainer":
        try:
            self._setup()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def _setup(self) -> None:
        from transformers.utils import logging as transformers_logging

        cfg = self.config
        resume_from, previous_run = self._check_output_dir()
        transformers_logging.disable_progress_bar()  # its bars per saved checkpoint would break up the trainer's own
        if cfg.model.threads:
            torch.set_num_threads(cfg.model.threads)
        self.device = torch_device(cfg.model.device, "model.device")
        self._connect()
        if cfg.model.tiny is not None:
            self._ensure_tiny_model(Path(cfg.model.path))
        self.model, self.tokenizer = _load_model(resume_from or cfg.model.path, self.device)
        try:
            check_lm_head(self.model)
        except LMHeadError as exc:
            raise TrainConfigError(f"model.path: {exc}") from None
        if cfg.model.gradient_checkpointing:
            # Only in train mode, i.e. the update: generation keeps its KV cache. transformers 5.2x
            # renamed it and deprecated the old name; 4.57 has only the old one.
            if hasattr(self.model, "activation_checkpointing_enable"):
                self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        reference = None
        if cfg.algorithm.kl_coef > 0:
            reference, _ = _load_model(cfg.model.path, self.device)
            reference.requires_grad_(False).eval()
        self.policy = make_policy(cfg.model.backend, self.model, self.tokenizer)
        self.chat = ChatFormat(self.tokenizer, system=cfg.env.system)
        algorithm = cfg.algorithm
        groups = [{"params": list(self.model.parameters())}]
        value_head = None
        if algorithm.estimator == "gae":
            value_head = ValueHead(self.model.config.hidden_size).to(self.device)
            groups.append({"params": list(value_head.parameters())})
        for group, lr in zip(groups, self._learning_rates()):
            group["lr"] = lr
        self.trained_parameters = [p for group in groups for p in group["params"]]
        self.optimizer = torch.optim.AdamW(groups, lr=algorithm.lr, betas=algorithm.betas, weight_decay=algorithm.weight_decay)
        # Log-probs of the distribution the episodes were sampled from, as the rollout recorded them.
        self.scorer = Scorer(self.model, value_head, reference, algorithm, cfg.rollout.temperature or 1.0, self.device)
        self.task_rng = random.Random(cfg.seed)
        torch.manual_seed(cfg.seed)
        if resume_from is not None:
            self._load_state(resume_from)
        self._rng_at_step = self._rng_states()

        for path in previous_run:  # --overwrite, once everything else is known to work
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
        self.metrics = MetricsLog(self.output_dir, self.step)
        self._stack.callback(self.metrics.close)

    @property
    def value_head(self) -> ValueHead | None:
        return self.scorer.value_head

    @property
    def reference(self) -> Any:
        return self.scorer.reference

    def _connect(self) -> None:
        """The environment server (started here for env.server: builtin) and its description."""
        cfg = self.config
        url = cfg.env.server
        # The name sessions are opened with: a `module:Class` env.name is served under its class's name.
        self.env_name = cfg.env.name
        if url == "builtin":
            from gymwire.sdk.registry import resolve_env
            from gymwire.sdk.server import GymServer

            try:
                env_class = resolve_env(cfg.env.name)
            except ValueError as exc:
                raise TrainConfigError(f"env.name: {exc}") from None
            self.env_name = env_class.info().name
            url = self._stack.enter_context(GymServer.private([env_class]).run_in_thread())
        try:
            self.rollouts = self._stack.enter_context(RolloutClient(url, token=cfg.env.token))
        except OSError as exc:
            raise TrainConfigError(f"env.server {url}: cannot connect ({exc}); start it (gymwire serve ...) or set env.server: builtin") from None
        try:
            self.env_info = self.rollouts.run(self.rollouts.client.describe(self.env_name))
        except ProtocolError as exc:
            if exc.code is not ErrorCode.UNKNOWN_ENV:
                raise
            raise TrainConfigError(f"env.name: {exc.message}") from None
        self.horizon = cfg.schedule(self.env_info.default_max_turns)
        for split in (cfg.env.train_split, cfg.env.test_split):
            if split not in self.env_info.splits:
                raise TrainConfigError(
                    f"env: {cfg.env.name} has no split {split!r}; set env.train_split/test_split to one of "
                    f"{sorted(self.env_info.splits)}"
                )
        self.rollouts.run(_check_options(self.rollouts.client, self.env_name, cfg))

    def _check_output_dir(self) -> tuple[Path | None, list[Path]]:
        """(the checkpoint to resume from, a previous run's files to delete). A new run never mixes
        into a previous one's files: metrics would interleave and a later --resume could continue
        the wrong run."""
        train = self.config.train
        if train.resume:
            found = latest_checkpoint(self.output_dir)
            if found is None:
                raise ResumeError(
                    f"nothing to resume: {self.output_dir / 'checkpoints'} holds no complete checkpoint; "
                    "drop --resume to start a new run (add --overwrite if output_dir holds an unfinished one)"
                )
            return found, []
        previous = previous_run_files(self.output_dir)
        if previous and not train.overwrite:
            raise TrainConfigError(
                f"output_dir {self.output_dir} holds a previous run ({', '.join(p.name for p in previous)}): pass "
                "--resume to continue it, --overwrite to delete it and start over, or choose another --output-dir"
            )
        return None, previous

    def _ensure_tiny_model(self, path: Path) -> None:
        """Build the tiny model at `path` unless this run's recipe is already there."""
        from ..models.tiny import TinyModelSpec, build_tiny_model, env_corpus, tiny_model_ready

        tiny, cfg = self.config.model.tiny, self.config
        spec = TinyModelSpec(
            n_layer=tiny.n_layer,
            n_head=tiny.n_head,
            n_embd=tiny.n_embd,
            n_positions=max(64, cfg.rollout.episode_tokens),
            numbers=tiny.numbers,
            init_std=tiny.init_std,
            seed=cfg.seed,
        )
        env = cfg.env
        recipe = {**dataclasses.asdict(spec), "corpus_episodes": tiny.corpus_episodes, "env": self.env_name,
                  "options": env.options, "split": env.train_split}
        inside_run = path.resolve().is_relative_to(self.output_dir.resolve())
        if tiny_model_ready(path, recipe, replace=cfg.train.overwrite and inside_run):
            return
        corpus = self.rollouts.run(env_corpus(
            self.rollouts.client, self.env_name, self.env_info, env.train_split, env.options, cfg.seed,
            tiny.numbers, tiny.corpus_episodes,
        ))
        build_tiny_model(path, corpus, spec, recipe)

    def _learning_rates(self) -> list[float]:
        """Per optimizer group: the model's, then the value head's."""
        algorithm = self.config.algorithm
        return [algorithm.lr, algorithm.lr if algorithm.value_lr is None else algorithm.value_lr]

    # ------------------------------------------------------------------ the loop

    def train(self) -> list[dict[str, Any]]:
        """Run until `train.steps`; returns one record per step (also in metrics.jsonl).

        SIGTERM or Ctrl-C (in the main thread) finishes the current step, checkpoints it and raises
        TrainingStopped; a second Ctrl-C quits at once. A lost environment server also checkpoints
        the last completed step before TrainingStopped."""
        cfg = self.config.train
        progress = None
        if cfg.progress:
            from tqdm.auto import tqdm

            # mininterval=0: a step takes long enough to draw each one; tqdm would skip fast ones.
            progress = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True, mininterval=0)
        last_eval: float | None = None
        log_every = cfg.log_every or cfg.eval_every or 10
        with contextlib.ExitStack() as stack:
            if progress is not None:
                stack.callback(progress.close)
            stop = stack.enter_context(StopOnSignal())
            while self.step < cfg.steps:
                if stop.signal is not None:
                    path = self._checkpoint_before_exit()
                    raise TrainingStopped(
                        f"stopped by {stop.signal.name} after step {self.step}; {resume_hint(path)}",
                        path,
                        128 + stop.signal.value,
                    )
                try:
                    record = self._step_and_log()
                except (ConnectionError, ProtocolError) as exc:
                    path = self._checkpoint_before_exit()
                    raise TrainingStopped(
                        f"step {self.step + 1} failed at the environment server: {exc}; {resume_hint(path)}", path, 1
                    ) from exc
                if "eval/success" in record:
                    last_eval = record["eval/success"]
                if progress is None:
                    if "eval/success" in record or due(self.step, log_every, cfg.steps):
                        print(summary_line(record, last_eval), flush=True)
                else:
                    postfix = {"success": f"{record['train/success']:.2f}", "turns": record["train/horizon"]}
                    if last_eval is not None:  # the latest evaluation stays on the bar until the next
                        postfix["eval"] = f"{last_eval:.2f}"
                    progress.set_postfix(postfix, refresh=False)
                    progress.update(1)
        return self.history

    def _step_and_log(self) -> dict[str, Any]:
        cfg = self.config.train
        record = self.train_step()
        try:
            if due(self.step, cfg.eval_every, cfg.steps):
                record.update({f"eval/{k}": v for k, v in self.evaluate().items()})
        finally:  # the step is done even if its evaluation failed: its record goes with its checkpoint
            self.history.append(record)
            self.metrics.write(record)
        if due(self.step, cfg.checkpoint_every, cfg.steps):
            self.save_checkpoint()
        return record

    def _checkpoint_before_exit(self) -> Path | None:
        """A checkpoint of the last completed step (None before the first step)."""
        if self.step == 0:
            return None
        latest = latest_checkpoint(self.output_dir)
        if latest is not None and checkpoint_step(latest) == self.step:
            return latest
        return self.save_checkpoint()

    def train_step(self) -> dict[str, Any]:
        """rollout -> scoring -> update; the step's record."""
        cfg = self.config
        step = self.step + 1
        turns = self.horizon.turns_at(step)
        started = time.perf_counter()
        tasks, groups = draw_tasks(
            self.task_rng, self.env_name, cfg.env.train_split, self.env_info.splits[cfg.env.train_split],
            cfg.rollout.tasks_per_step, cfg.rollout.group_size,
        )
        sampling = Sampling(cfg.rollout.temperature, cfg.rollout.top_p)
        episodes = self.rollouts.collect(self.policy, self.chat, tasks, play_settings(cfg, turns, sampling), groups)
        rollout_seconds = time.perf_counter() - started
        stats = self.update(episodes)
        self.policy.load_weights(self.model)
        self.step = step
        self._rng_at_step = self._rng_states()
        seconds = time.perf_counter() - started
        if cfg.train.rollouts_every and step % cfg.train.rollouts_every == 0:
            write_jsonl(episodes, self.output_dir / "rollouts" / f"step-{step:06d}.jsonl")
        return {
            "step": step,
            "train/horizon": turns,
            **{f"train/{k}": v for k, v in episode_stats(episodes).items()},
            **{f"train/{k}": v for k, v in stats.items()},
            "train/tokens_per_s": sum(len(e.tokens) for e in episodes) / seconds,
            "train/rollout_s": rollout_seconds,
            "train/step_s": seconds,
        }

    def update(self, episodes: list[Episode]) -> dict[str, float]:
        """Scoring, then the update's steps; the update's statistics."""
        batch = score_episodes(episodes, self.scorer, self.tokenizer.pad_token_id or 0)
        return update_policy(batch, self.scorer, self.optimizer, self.trained_parameters)

    def evaluate(self) -> dict[str, float]:
        """Play the first `eval_tasks` tasks of the test split once each, at the schedule's
        largest turn limit. Draws on a forked RNG: training is the same with or without it."""
        cfg = self.config
        count = min(cfg.train.eval_tasks, self.env_info.splits[cfg.env.test_split])
        tasks = [EnvTask(self.env_name, cfg.env.test_split, index) for index in range(count)]
        settings = play_settings(cfg, self.horizon.max_turns, Sampling(cfg.train.eval_temperature))
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            episodes = self.rollouts.collect(self.policy, self.chat, tasks, settings)
        write_jsonl(episodes, self.output_dir / "rollouts" / f"eval-step-{self.step:06d}.jsonl")
        return episode_stats(episodes)

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path:
        """Model, tokenizer, optimizer, RNG states and step counter under checkpoints/step-N."""
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            # As they were when the step completed: a step that failed half-way drew from them.
            **self._rng_at_step,
            "horizon": self.horizon.to_config(),
            "value_head": self.value_head.state_dict() if self.value_head is not None else None,
        }
        path = save_checkpoint(self.output_dir, self.step, self.model, self.tokenizer, state, self.config.train.keep_checkpoints)
        self.metrics.flush()
        return path

    def _rng_states(self) -> dict[str, Any]:
        return {
            "task_rng": self.task_rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def _load_state(self, path: Path) -> None:
        state = load_state(path)
        if state["horizon"] != self.horizon.to_config():
            raise ResumeError(
                f"{path} was trained with horizon {state['horizon']}, the config now says {self.horizon.to_config()}; "
                "resume with the same schedule or start a new output_dir"
            )
        if (state.get("value_head") is None) != (self.value_head is None):
            trained = "with" if state.get("value_head") is not None else "without"
            raise ResumeError(
                f"{path} was trained {trained} a value head (estimator gae), the config now says "
                f"{self.config.algorithm.estimator}; resume with the same estimator or start a new output_dir"
            )
        if self.value_head is not None:
            self.value_head.load_state_dict(state["value_head"])
        self.step = state["step"]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, lr in zip(self.optimizer.param_groups, self._learning_rates()):
            group["lr"] = lr  # the config's, should it have changed since the checkpoint
        self.task_rng.setstate(state["task_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


async def _check_options(client: Any, env: str, config: TrainConfig) -> None:
    """Open one session with env.options before anything loads: a bad option is one line now, not
    an error in every episode of every step."""
    for split in dict.fromkeys((config.env.train_split, config.env.test_split)):
        try:
            async with client.session(env, split=split, index=0, options=config.env.options, max_turns=1):
                pass
        except ProtocolError as exc:
            raise TrainConfigError(f"env.options {config.env.options}: {env} refuses them ({exc.code.name}: {exc.message})") from None


def _load_model(spec: str | Path, device: torch.device) -> tuple[Any, Any]:
    try:
        model, tokenizer, _ = load_model(spec, device)
    except ModelError as exc:
        hint = "" if Path(spec).suffix == ".gguf" else "; or add model.tiny to build a tiny random model there"
        raise TrainConfigError(f"model.path: {exc}{hint}") from None
    return model, tokenizer
