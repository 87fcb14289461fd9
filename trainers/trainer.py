"""The reference trainer: policy-gradient RL of a causal LM over gymwire environments, with torch
and transformers, on CPU or one CUDA GPU. Critic-free (GRPO, RLOO, REINFORCE++) or PPO with GAE,
whose critic is a value head on the policy's own trunk.

One training step: sample `tasks_per_step` tasks of the train split, play `group_size` episodes of
each with the current turn limit of the horizon schedule, compute advantages from the episode
rewards, then `epochs` x `minibatches` clipped policy-gradient updates. Everything random draws
from RNGs whose states are checkpointed, so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch

from gymwire.protocol import ErrorCode, ProtocolError
from gymwire.sdk.errors import UserError

from .advantages import compute_advantages, masked_whiten, place_rewards
from .chat import ChatFormat
from .config import ConfigError, TrainConfig
from .losses import (
    aggregation_units,
    apply_kl_to_rewards,
    kl_loss,
    kl_penalty,
    lm_head_logprobs,
    masked_mean,
    policy_loss,
    value_loss,
)
from .backends import make_policy
from .policy import Sampling
from .precision import autocast_for
from .episode import EnvTask, Episode, write_jsonl
from .play import PlaySettings, PromptConfig, RolloutClient

__all__ = ["Trainer", "ResumeError", "TrainingStopped", "ValueHead", "checkpoints", "latest_checkpoint"]

STATE_FILE = "trainer_state.pt"
# What a run writes into output_dir; `overwrite` deletes these and nothing else (the tiny model is
# often built inside output_dir, and output_dir may be a folder holding other things).
RUN_FILES = ("config.json", "metrics.jsonl", "tensorboard", "rollouts", "checkpoints")


class ResumeError(UserError, RuntimeError):
    """A checkpoint cannot continue this run."""


class TrainingStopped(RuntimeError):
    """Training stopped before `train.steps`: a signal, or the environment server went away. The
    last completed step is checkpointed (`checkpoint`, None when no step completed)."""

    def __init__(self, message: str, checkpoint: Path | None, exit_code: int):
        super().__init__(message)
        self.checkpoint = checkpoint
        self.exit_code = exit_code


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The complete checkpoints (their state file written) of a run, oldest step first."""
    found = [state.parent for state in Path(output_dir, "checkpoints").glob("step-*/" + STATE_FILE)]
    return sorted(found, key=_checkpoint_step)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def _checkpoint_step(path: Path) -> int:
    # By number: names sort wrongly past step-999999.
    return int(path.name.removeprefix("step-"))


class ValueHead(torch.nn.Module):
    """PPO's critic on the policy's trunk: one value per position from the last hidden state.
    It starts at zero, so the first advantages are the returns themselves."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1)


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
        self.device = _device(cfg.model.device)
        url = cfg.env.server
        # The name sessions are opened with: a `module:Class` env.name is served under its class's name.
        self.env_name = cfg.env.name
        if url == "builtin":
            from gymwire.sdk.registry import resolve_env
            from gymwire.sdk.server import GymServer

            try:
                env_class = resolve_env(cfg.env.name)
            except ValueError as exc:
                raise ConfigError(f"env.name: {exc}") from None
            self.env_name = env_class.info().name
            url = self._stack.enter_context(GymServer([env_class], port=0).run_in_thread())
        try:
            self.rollouts = self._stack.enter_context(RolloutClient(url, token=cfg.env.token))
        except OSError as exc:
            raise ConfigError(f"env.server {url}: cannot connect ({exc}); start it (gymwire serve ...) or set env.server: builtin") from None
        try:
            self.env_info = self.rollouts.run(self.rollouts.client.describe(self.env_name))
        except ProtocolError as exc:
            if exc.code is not ErrorCode.UNKNOWN_ENV:
                raise
            raise ConfigError(f"env.name: {exc.message}") from None
        self.horizon = cfg.schedule(self.env_info.default_max_turns)
        for split in (cfg.env.train_split, cfg.env.test_split):
            if split not in self.env_info.splits:
                raise ConfigError(
                    f"env: {cfg.env.name} has no split {split!r}; set env.train_split/test_split to one of "
                    f"{sorted(self.env_info.splits)}"
                )
        self.rollouts.run(_check_options(self.rollouts.client, self.env_name, cfg))

        model_path = Path(cfg.model.path)
        if cfg.model.tiny is not None:
            self._ensure_tiny_model(model_path)
        else:
            model_path = _checkpoint_folder(cfg.model.path)
        self.model, self.tokenizer = _load_model(resume_from or model_path, self.device)
        _check_logits_are_the_lm_head(self.model)
        if cfg.model.gradient_checkpointing:
            # Only in train mode, i.e. the update: generation keeps its KV cache. transformers 5.2x
            # renamed it and deprecated the old name; 4.57 has only the old one.
            if hasattr(self.model, "activation_checkpointing_enable"):
                self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.reference = None
        if cfg.algorithm.kl_coef > 0:
            self.reference, _ = _load_model(model_path, self.device)
            self.reference.requires_grad_(False).eval()
        self.policy = make_policy(cfg.model.backend, self.model, self.tokenizer)
        self.chat = ChatFormat(self.tokenizer, system=cfg.env.system)
        algorithm = cfg.algorithm
        groups = [{"params": list(self.model.parameters())}]
        self.value_head = None
        if algorithm.estimator == "gae":
            self.value_head = ValueHead(self.model.config.hidden_size).to(self.device)
            groups.append({"params": list(self.value_head.parameters())})
        for group, lr in zip(groups, self._learning_rates()):
            group["lr"] = lr
        self.trained_parameters = [p for group in groups for p in group["params"]]
        self.optimizer = torch.optim.AdamW(groups, lr=algorithm.lr, betas=algorithm.betas, weight_decay=algorithm.weight_decay)
        self.task_rng = random.Random(cfg.seed)
        torch.manual_seed(cfg.seed)
        if resume_from is not None:
            self._load_state(resume_from)
        self._rng_at_step = self._rng_states()

        from torch.utils.tensorboard import SummaryWriter

        for path in previous_run:  # --overwrite, once everything else is known to work
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
        self.writer = self._stack.enter_context(SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self.step + 1))

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
        previous = [self.output_dir / name for name in RUN_FILES if (self.output_dir / name).exists()]
        if previous and not train.overwrite:
            raise ConfigError(
                f"output_dir {self.output_dir} holds a previous run ({', '.join(p.name for p in previous)}): pass "
                "--resume to continue it, --overwrite to delete it and start over, or choose another --output-dir"
            )
        return None, previous

    def _ensure_tiny_model(self, path: Path) -> None:
        """Build the tiny model at `path` unless this run's recipe is already there."""
        from .tiny import TinyModelSpec, build_tiny_model, tiny_model_ready

        tiny = self.config.model.tiny
        spec = TinyModelSpec(
            n_layer=tiny.n_layer,
            n_head=tiny.n_head,
            n_embd=tiny.n_embd,
            n_positions=max(64, self.config.rollout.episode_tokens),
            numbers=tiny.numbers,
            init_std=tiny.init_std,
            seed=self.config.seed,
        )
        env = self.config.env
        recipe = {**dataclasses.asdict(spec), "corpus_episodes": tiny.corpus_episodes, "env": self.env_name,
                  "options": env.options, "split": env.train_split}
        inside_run = path.resolve().is_relative_to(self.output_dir.resolve())
        if tiny_model_ready(path, recipe, replace=self.config.train.overwrite and inside_run):
            return
        corpus = self.rollouts.run(
            _env_corpus(self.rollouts.client, self.config, self.env_name, self.env_info, tiny.numbers, tiny.corpus_episodes)
        )
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
            stop = stack.enter_context(_StopOnSignal())
            while self.step < cfg.steps:
                if stop.signal is not None:
                    path = self._checkpoint_before_exit()
                    raise TrainingStopped(
                        f"stopped by {stop.signal.name} after step {self.step}; {_resume_hint(path)}",
                        path,
                        128 + stop.signal.value,
                    )
                try:
                    record = self._step_and_log()
                except (ConnectionError, ProtocolError) as exc:
                    path = self._checkpoint_before_exit()
                    raise TrainingStopped(
                        f"step {self.step + 1} failed at the environment server: {exc}; {_resume_hint(path)}", path, 1
                    ) from exc
                if "eval/success" in record:
                    last_eval = record["eval/success"]
                if progress is None:
                    if "eval/success" in record or _due(self.step, log_every, cfg.steps):
                        print(_summary_line(record, last_eval), flush=True)
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
            if _due(self.step, cfg.eval_every, cfg.steps):
                record.update({f"eval/{k}": v for k, v in self.evaluate().items()})
        finally:  # the step is done even if its evaluation failed: its record goes with its checkpoint
            self._log(record)
        if _due(self.step, cfg.checkpoint_every, cfg.steps):
            self.save_checkpoint()
        return record

    def _checkpoint_before_exit(self) -> Path | None:
        """A checkpoint of the last completed step (None before the first step)."""
        if self.step == 0:
            return None
        latest = latest_checkpoint(self.output_dir)
        if latest is not None and _checkpoint_step(latest) == self.step:
            return latest
        return self.save_checkpoint()

    def train_step(self) -> dict[str, Any]:
        cfg = self.config
        step = self.step + 1
        turns = self.horizon.turns_at(step)
        started = time.perf_counter()
        split_size = self.env_info.splits[cfg.env.train_split]
        tasks, groups = [], []
        for group in range(cfg.rollout.tasks_per_step):
            index = self.task_rng.randrange(split_size)
            tasks += [EnvTask(self.env_name, cfg.env.train_split, index)] * cfg.rollout.group_size
            groups += [group] * cfg.rollout.group_size
        sampling = Sampling(cfg.rollout.temperature, cfg.rollout.top_p)
        episodes = self.rollouts.collect(self.policy, self.chat, tasks, self._settings(turns, sampling), groups)
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
            **{f"train/{k}": v for k, v in _episode_stats(episodes).items()},
            **{f"train/{k}": v for k, v in stats.items()},
            "train/tokens_per_s": sum(len(e.tokens) for e in episodes) / seconds,
            "train/rollout_s": rollout_seconds,
            "train/step_s": seconds,
        }

    def _settings(self, max_turns: int, sampling: Sampling) -> PlaySettings:
        cfg = self.config
        return PlaySettings(
            options=cfg.env.options,
            max_turns=max_turns,
            turn_tokens=cfg.rollout.turn_tokens,
            episode_tokens=cfg.rollout.episode_tokens,
            sampling=sampling,
            step_timeout=cfg.env.step_timeout,
            prompt=PromptConfig(system=cfg.env.system, instructions=cfg.env.instructions),
        )

    # ------------------------------------------------------------------ the update

    def update(self, episodes: list[Episode]) -> dict[str, float]:
        """Advantages from the episodes' rewards, then clipped policy-gradient steps."""
        algorithm = self.config.algorithm
        batch = _Batch(episodes, self.tokenizer.pad_token_id or 0, self.device)
        old_logprobs, old_values = self._score(self.model, batch, values=self.value_head is not None)
        ref_logprobs = self._score(self.reference, batch)[0] if self.reference is not None else None
        token_rewards = place_rewards(
            [[turn.end - 1 for turn in e.turns] for e in episodes],
            [[turn.reward for turn in e.turns] for e in episodes],
            batch.width - 1,
            action_mask=batch.action_mask.cpu(),
        )
        kl_in_reward = ref_logprobs is not None and algorithm.kl_in == "reward"
        if kl_in_reward:
            # The rollout policy's KL to the reference, per action token, taken off the reward.
            kl_tokens = kl_penalty(old_logprobs, ref_logprobs, algorithm.kl_kind, batch.action_mask)
            token_rewards = apply_kl_to_rewards(token_rewards, kl_tokens.cpu(), batch.action_mask.cpu(), algorithm.kl_coef)
        advantages, returns = compute_advantages(
            algorithm.estimator,
            token_rewards,
            batch.action_mask.cpu(),
            group_ids=[e.group for e in episodes],
            values=old_values.cpu() if old_values is not None else None,
            gamma=algorithm.gamma,
            lam=algorithm.lam,
        )
        if old_values is not None:
            advantages = masked_whiten(advantages, batch.action_mask.cpu())  # PPO's per-batch normalisation
        advantages, returns = advantages.to(self.device), returns.to(self.device)
        targets = _Targets(old_logprobs, ref_logprobs, advantages, returns, old_values, kl_in_reward)
        totals: dict[str, float] = {}
        updates = 0
        self.model.train()
        for _ in range(algorithm.epochs):
            order = torch.randperm(len(episodes))
            for rows in order.chunk(algorithm.minibatches):
                # A micro-batch's loss is weighted by its share of the minibatch's action tokens
                # (or sequences, as loss_agg averages): the accumulated gradient is the minibatch's.
                mask = batch.action_mask[rows.to(self.device)]
                tokens = max(1, int(aggregation_units(mask, "token-mean")))
                units = max(1, int(aggregation_units(mask, algorithm.loss_agg)))
                self.optimizer.zero_grad(set_to_none=True)
                stats: dict[str, float] = {}
                for micro_rows in self._micro_batches(rows, batch):
                    micro_stats = self._accumulate_gradients(batch, micro_rows.to(self.device), targets, tokens, units)
                    for key, value in micro_stats.items():
                        stats[key] = stats.get(key, 0.0) + value
                if algorithm.max_grad_norm:
                    stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.trained_parameters, algorithm.max_grad_norm))
                self.optimizer.step()
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value
                updates += 1
        stats = {key: value / updates for key, value in totals.items()}
        stats["advantage_abs"] = masked_mean(advantages.abs(), batch.action_mask).item()
        if kl_in_reward:
            stats["kl"] = masked_mean(kl_tokens, batch.action_mask).item()
        if old_values is not None:
            stats["explained_variance"] = _explained_variance(old_values, returns, batch.action_mask)
        return stats

    def _accumulate_gradients(self, batch: "_Batch", rows: torch.Tensor, targets: "_Targets", tokens: int, units: int) -> dict[str, float]:
        """Backward of one micro-batch's share of its minibatch's loss; its share of the stats.

        `tokens` and `units` are the minibatch's action tokens and aggregation units: losses
        aggregated per loss_agg weigh units(micro-batch) / units, token means tokens(micro) / tokens."""
        algorithm = self.config.algorithm
        mask = batch.action_mask[rows]
        token_share = int(aggregation_units(mask, "token-mean")) / tokens
        unit_share = int(aggregation_units(mask, algorithm.loss_agg)) / units
        (logprobs, entropies), values = self._forward(self.model, batch, rows, values=targets.old_values is not None)
        policy, policy_stats = policy_loss(
            logprobs,
            targets.old_logprobs[rows],
            targets.advantages[rows],
            mask,
            clip_low=algorithm.clip_low,
            clip_high=algorithm.clip_high,
            agg=algorithm.loss_agg,
        )
        loss = unit_share * policy
        stats = {key: token_share * value for key, value in policy_stats.items()}  # token means
        stats["pg_loss"] = unit_share * policy.item()
        entropy = masked_mean(entropies, mask)
        if algorithm.entropy_coef:
            loss = loss - algorithm.entropy_coef * token_share * entropy
        stats["entropy"] = token_share * entropy.item()
        if targets.ref_logprobs is None:
            stats["kl"] = stats["approx_kl"]
        elif not targets.kl_in_reward:  # else the KL is on the reward already
            kl = kl_loss(logprobs, targets.ref_logprobs[rows], mask, kind=algorithm.kl_kind, agg=algorithm.loss_agg)
            loss = loss + algorithm.kl_coef * unit_share * kl
            stats["kl"] = unit_share * kl.item()
        if values is not None:
            critic_loss, critic_stats = value_loss(
                values, targets.old_values[rows], targets.returns[rows], mask, clip=algorithm.value_clip, agg=algorithm.loss_agg
            )
            loss = loss + algorithm.vf_coef * unit_share * critic_loss
            stats.update({key: token_share * value for key, value in critic_stats.items()}, value_loss=unit_share * critic_loss.item())
        loss.backward()
        stats["loss"] = loss.item()
        return stats

    def _micro_batches(self, rows: torch.Tensor, batch: "_Batch", max_rows: int | None = None) -> list[torch.Tensor]:
        """`rows` (on the CPU) in micro-batches as algorithm.micro_batch_tokens/_rows allow (and at
        most `max_rows` rows)."""
        algorithm = self.config.algorithm
        limits = [n for n in (algorithm.micro_batch_rows, max_rows) if n is not None]
        groups = _pack_micro_batches(
            rows.tolist(), batch.lengths, max_tokens=algorithm.micro_batch_tokens, max_rows=min(limits) if limits else None
        )
        return [torch.tensor(group) for group in groups]

    @property
    def _temperature(self) -> float:
        # Log-probs of the distribution the episodes were sampled from, as the rollout recorded them.
        return self.config.rollout.temperature or 1.0

    def _forward(
        self, model: Any, batch: "_Batch", rows: torch.Tensor, values: bool = False
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """((log-probs, entropies), values) predicting positions 1.. of `rows`, each
        (len(rows), batch.width - 1): log-probs of the labels and the entropies of the policy at
        action positions (0 elsewhere), and the value head's values everywhere (None unless `values`).

        The model's trunk runs on the rows cut to their longest; the LM head only on the final
        hidden states at action positions (lm_head_logprobs, in chunks); values read the same
        hidden states, the LM head's input."""
        width = max(batch.lengths[row] for row in rows.tolist())
        ids, attention = batch.input_ids[rows, :width], batch.attention[rows, :width]
        where = batch.action_mask[rows, : width - 1] != 0
        with autocast_for(self.device):
            hidden = model.base_model(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state[:, :-1]
            logprobs, entropies = lm_head_logprobs(
                hidden[where], batch.labels[rows, : width - 1][where], model.get_output_embeddings(), self._temperature
            )
        padding = (0, batch.width - width)  # back to the batch's width
        scores = tuple(
            torch.nn.functional.pad(torch.zeros(where.shape, dtype=x.dtype, device=x.device).masked_scatter(where, x), padding)
            for x in (logprobs, entropies)
        )
        return scores, torch.nn.functional.pad(self.value_head(hidden), padding) if values else None

    @torch.no_grad()
    def _score(self, model: Any, batch: "_Batch", values: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs of the batch's tokens under `model`, and its values when `values`, in the
        update's micro-batches of at most 64 rows."""
        model.eval()
        shape = (len(batch.input_ids), batch.width - 1)
        logprobs = all_values = None
        for rows in self._micro_batches(torch.arange(shape[0]), batch, max_rows=64):
            rows = rows.to(self.device)
            (row_logprobs, _), row_values = self._forward(model, batch, rows, values)
            if logprobs is None:
                logprobs = row_logprobs.new_zeros(shape)
                all_values = row_values.new_zeros(shape) if values else None
            logprobs[rows] = row_logprobs
            if all_values is not None:
                all_values[rows] = row_values
        return logprobs, all_values

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> dict[str, float]:
        """Play the first `eval_tasks` tasks of the test split once each, at the schedule's
        largest turn limit. Draws on a forked RNG: training is the same with or without it."""
        cfg = self.config
        count = min(cfg.train.eval_tasks, self.env_info.splits[cfg.env.test_split])
        tasks = [EnvTask(self.env_name, cfg.env.test_split, index) for index in range(count)]
        settings = self._settings(self.horizon.max_turns, Sampling(cfg.train.eval_temperature))
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            episodes = self.rollouts.collect(self.policy, self.chat, tasks, settings)
        write_jsonl(episodes, self.output_dir / "rollouts" / f"eval-step-{self.step:06d}.jsonl")
        return _episode_stats(episodes)

    # ------------------------------------------------------------------ logging and checkpoints

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        for key, value in record.items():
            if key != "step":
                self.writer.add_scalar(key, value, record["step"])
        with (self.output_dir / "metrics.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")

    def save_checkpoint(self) -> Path:
        """Model, tokenizer, optimizer, RNG states and step counter under checkpoints/step-N."""
        path = self.output_dir / "checkpoints" / f"step-{self.step:06d}"
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            # As they were when the step completed: a step that failed half-way drew from them.
            **self._rng_at_step,
            "horizon": self.horizon.to_config(),
            "value_head": self.value_head.state_dict() if self.value_head is not None else None,
        }
        # Written last: a folder without it is an interrupted save and is never resumed from.
        torch.save(state, path / STATE_FILE)
        self.writer.flush()
        for old in checkpoints(self.output_dir)[: -self.config.train.keep_checkpoints]:
            shutil.rmtree(old)
        return path

    def _rng_states(self) -> dict[str, Any]:
        return {
            "task_rng": self.task_rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def _load_state(self, path: Path) -> None:
        state = torch.load(path / STATE_FILE, weights_only=False)
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
        # Records of steps after the checkpoint are replayed by the resumed run.
        metrics = self.output_dir / "metrics.jsonl"
        if metrics.exists():
            kept = [line for line in metrics.read_text().splitlines() if json.loads(line)["step"] <= self.step]
            metrics.write_text("".join(line + "\n" for line in kept))


class _Batch:
    """Episodes as right-padded tensors. Position t of `labels`/`action_mask` is token t+1 of the
    episode: the prompt and environment tokens are simply action-mask-0 positions."""

    def __init__(self, episodes: list[Episode], pad_id: int, device: torch.device):
        self.width = max(len(e.tokens) for e in episodes)
        ids = torch.full((len(episodes), self.width), pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        loss_mask = torch.zeros_like(ids)
        for row, e in enumerate(episodes):
            ids[row, : len(e.tokens)] = torch.tensor(e.tokens)
            attention[row, : len(e.tokens)] = 1
            loss_mask[row, : len(e.tokens)] = torch.tensor(e.loss_mask)
        self.lengths = [len(e.tokens) for e in episodes]
        self.input_ids = ids.to(device)
        self.attention = attention.to(device)
        self.labels = torch.where(attention[:, 1:] == 1, ids[:, 1:], -100).to(device)
        self.action_mask = loss_mask[:, 1:].to(device)


class _Targets(NamedTuple):
    """What the update's losses compare the policy with, per position of the batch."""

    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor | None
    advantages: torch.Tensor
    returns: torch.Tensor
    old_values: torch.Tensor | None
    kl_in_reward: bool


def _pack_micro_batches(rows: list[int], lengths: list[int], max_tokens: int | None, max_rows: int | None) -> list[list[int]]:
    """`rows` in groups of at most `max_rows` rows and `max_tokens` padded tokens (rows x the
    longest row's length), longest rows first so that rows of like length share a group. A row
    longer than `max_tokens` makes a group of its own. No limits: one group, in the given order."""
    if max_tokens is None and max_rows is None:
        return [list(rows)]
    groups: list[list[int]] = []
    group: list[int] = []
    for row in sorted(rows, key=lambda r: -lengths[r]):  # stable: equal lengths keep their order
        full = max_rows is not None and len(group) == max_rows
        if group and (full or (max_tokens is not None and (len(group) + 1) * lengths[group[0]] > max_tokens)):
            groups.append(group)
            group = []
        group.append(row)
    groups.append(group)
    return groups


def _episode_stats(episodes: list[Episode]) -> dict[str, float]:
    count = len(episodes)
    return {
        "success": sum(e.success for e in episodes) / count,
        "reward": sum(e.reward for e in episodes) / count,
        "turns": sum(len(e.turns) for e in episodes) / count,
        "generated_tokens": sum(e.generated_tokens for e in episodes) / count,
        "errors": sum(e.error is not None for e in episodes) / count,
    }


def _explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over action tokens: 1 is a perfect critic, 0 a constant one."""
    variance = masked_mean((returns - masked_mean(returns, mask)).square(), mask)
    residual = returns - values
    unexplained = masked_mean((residual - masked_mean(residual, mask)).square(), mask)
    return (1 - unexplained / variance).item() if variance > 0 else 0.0


def _summary_line(record: dict[str, Any], last_eval: float | None) -> str:
    if "eval/success" in record:
        evaluation = f"eval success {record['eval/success']:.3f}, "
    else:
        evaluation = "" if last_eval is None else f"(last eval success {last_eval:.3f}), "
    return (
        f"step {record['step']}: train success {record['train/success']:.3f} at {record['train/horizon']} turns, "
        f"{evaluation}loss {record['train/loss']:.4f}, "
        f"entropy {record['train/entropy']:.3f}, {record['train/tokens_per_s']:.0f} tokens/s"
    )


def _resume_hint(checkpoint: Path | None) -> str:
    if checkpoint is None:
        return "no step completed, so nothing was checkpointed"
    return f"checkpoint in {checkpoint}; continue with --resume"


class _StopOnSignal:
    """While training: SIGTERM or the first Ctrl-C asks to stop after the current step (`signal`
    says which); a second Ctrl-C interrupts at once. Signals can only be caught in the main thread:
    elsewhere this does nothing."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, number: int, frame: Any) -> None:
        if self.signal is signal.SIGINT and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(number)
        print(f"\n{self.signal.name}: stopping after this step and checkpointing it (Ctrl-C again to quit now)", flush=True)


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def _device(name: str) -> torch.device:
    from .devices import torch_device

    return torch_device(name, "model.device")


def _checkpoint_folder(spec: str) -> Path:
    """model.path as a checkpoint folder: a known model's name or a GGUF file is prepared once."""
    from .models import ModelError, checkpoint_folder

    try:
        return checkpoint_folder(spec)
    except ModelError as exc:
        raise ConfigError(f"model.path: {exc}") from None


def _load_model(path: str | Path, device: torch.device) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(path, "config.json").exists():
        raise ConfigError(
            f"no Hugging Face checkpoint at {path} (config.json missing); set model.path to a local "
            "checkpoint folder, or add model.tiny to build a tiny random model there"
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
    return model, tokenizer


def _check_logits_are_the_lm_head(model: Any) -> None:
    """The update applies the LM head itself, to the trunk's final hidden states at action
    positions only. A model whose forward changes its logits after the head (soft-capping,
    scaling) would be trained on other log-probs than it samples from: refuse it."""
    if model.get_output_embeddings() is None:
        raise ConfigError(f"model.path: {type(model).__name__} has no LM head (get_output_embeddings); the trainer needs a causal LM")
    probe = torch.arange(4, device=model.device).unsqueeze(0)
    with torch.no_grad():
        inputs = {"input_ids": probe, "attention_mask": torch.ones_like(probe), "use_cache": False}
        logits = model(**inputs).logits
        ours = model.get_output_embeddings()(model.base_model(**inputs).last_hidden_state)
    if not torch.allclose(logits, ours, rtol=1e-4, atol=1e-4):
        raise ConfigError(
            f"model.path: {type(model).__name__} changes its logits after the LM head (e.g. soft-capping or scaling); "
            "the trainer computes log-probs from the LM head's output and cannot train it"
        )


async def _check_options(client: Any, env: str, config: TrainConfig) -> None:
    """Open one session with env.options before anything loads: a bad option is one line now, not
    an error in every episode of every step."""
    for split in dict.fromkeys((config.env.train_split, config.env.test_split)):
        try:
            async with client.session(env, split=split, index=0, options=config.env.options, max_turns=1):
                pass
        except ProtocolError as exc:
            raise ConfigError(f"env.options {config.env.options}: {env} refuses them ({exc.code.name}: {exc.message})") from None


async def _env_corpus(client: Any, config: TrainConfig, env: str, info: Any, numbers: int, episodes: int) -> list[str]:
    """Texts of the environment for a tiny model's vocabulary: its instructions and what it says
    over a few episodes played with random whole numbers (and one non-number) as actions."""
    rng = random.Random(config.seed)
    texts = [info.instructions, info.description]
    for index in range(episodes):
        async with client.session(
            env, split=config.env.train_split, index=index, options=config.env.options, max_turns=8
        ) as session:
            texts.append(session.observation.text if session.observation else "")
            actions = ["hello"] + [str(rng.randrange(numbers)) for _ in range(7)]
            for action in actions:
                if session.done:
                    break
                texts.append((await session.step(action)).observation.text)
    return texts
