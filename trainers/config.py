"""The reference trainer's configuration: a YAML file of six sections, every key optional but `env.name`.

    seed: 0
    output_dir: runs/guess-tiny            # metrics, TensorBoard logs, rollouts, checkpoints
    model:     {path, tiny, backend, device, threads, gradient_checkpointing}
    env:       {name, server, token, options, train_split, test_split, instructions, system}
    horizon:   3 | "staged:2,4@50" | {kind: staged, stages: [...], stage_steps: N}
    rollout:   {tasks_per_step, group_size, turn_tokens, episode_tokens, temperature, top_p}
    algorithm: {estimator, lr, ..., kl_coef, entropy_coef}
    train:     {steps, eval_every, eval_tasks, checkpoint_every, resume, ...}

Relative paths are relative to the current directory. Unknown keys are errors (a typo must not
silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from gymwire.sdk.errors import UserError

from .horizon import Horizon, HorizonConfigError, horizon_from_config
from .policy import POLICY_BACKENDS

__all__ = ["ConfigError", "TrainConfig", "load_config", "parse_assignments"]


class ConfigError(UserError, ValueError):
    """The training configuration cannot be used; the message names the key and what is valid."""


@dataclass
class TinyModel:
    """Build a randomly initialised GPT-2 at `model.path` when nothing is there yet."""

    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    numbers: int = 101  # whole numbers 0..numbers-1 get one token each
    # Std of the random weights. Larger than GPT-2's 0.02 so attention differs between contexts from
    # the start: with 0.02 the output hardly depends on the context and RL from scratch stalls.
    init_std: float = 0.08
    corpus_episodes: int = 16  # episodes played with random numbers to gather the env's words


@dataclass
class ModelSection:
    path: str = ""  # a local Hugging Face checkpoint folder, a known model's name (smollm2) or a .gguf file
    tiny: TinyModel | None = None
    backend: str = "transformers"
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:N
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    # Recompute each layer's activations in the backward pass instead of keeping them: less memory
    # for a longer update (transformers' gradient checkpointing).
    gradient_checkpointing: bool = False


@dataclass
class EnvSection:
    name: str = ""
    server: str = "builtin"  # "builtin": serve it in-process; or the URL of a running server
    token: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    test_split: str = "test"
    instructions: bool = True  # put the environment's instructions before the first observation
    system: str | None = None  # a system prompt
    # Seconds the server may take for one open or step (its deadline_ms); a step over it ends its
    # episode with a TIMEOUT error instead of stalling training. null: no limit.
    step_timeout: float | None = 60.0


@dataclass
class RolloutSection:
    tasks_per_step: int = 8
    group_size: int = 8  # episodes per task (the group of GRPO/RLOO)
    turn_tokens: int = 64
    episode_tokens: int = 2048
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass
class AlgorithmSection:
    estimator: str = "grpo"  # grpo, rloo, reinforce_pp, reinforce_pp_baseline, or gae (PPO with a value head)
    gamma: float = 1.0
    lam: float = 1.0  # GAE's lambda
    vf_coef: float = 0.5  # gae: weight of the value loss (the value head shares the policy's trunk)
    value_clip: float | None = 0.2  # gae: each update moves a value at most this far from the rollout's; null: no clip
    value_lr: float | None = None  # gae: learning rate of the value head; null: lr
    lr: float = 1e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    epochs: int = 1  # passes over each batch
    minibatches: int = 1  # optimizer steps per pass
    # A minibatch's forward and backward run in micro-batches of at most this many padded tokens
    # (episodes x the longest of them) and episodes, their gradients summed: the same optimizer
    # step in less memory. null: no limit (one micro-batch).
    micro_batch_tokens: int | None = None
    micro_batch_rows: int | None = None
    clip_low: float = 0.2
    clip_high: float = 0.2
    loss_agg: str = "token-mean"
    kl_coef: float = 0.0  # > 0 keeps a frozen copy of the initial model as the KL reference
    kl_kind: str = "low_var_kl"
    kl_in: str = "loss"  # "loss": a KL term in the loss; "reward": a per-token penalty on the reward
    entropy_coef: float = 0.0
    max_grad_norm: float | None = 1.0


@dataclass
class TrainSection:
    steps: int = 100
    eval_every: int = 0  # 0: only after the last step
    eval_tasks: int = 100  # first N tasks of the test split
    eval_temperature: float = 0.0  # 0: greedy
    checkpoint_every: int = 0  # 0: only after the last step
    keep_checkpoints: int = 2
    rollouts_every: int = 10  # write the step's episodes as JSONL every N steps (0: never)
    resume: bool = False  # continue from the latest checkpoint in output_dir
    overwrite: bool = False  # delete a previous run's files in output_dir and start over
    progress: bool = True  # tqdm bar
    # Without the bar: a summary line every N steps and at each evaluation. null: every eval_every
    # steps, or every 10 when eval_every is 0.
    log_every: int | None = None


@dataclass
class TrainConfig:
    env: EnvSection
    model: ModelSection = field(default_factory=ModelSection)
    horizon: Any = None  # see horizon.horizon_from_config; None: the environment's default_max_turns
    rollout: RolloutSection = field(default_factory=RolloutSection)
    algorithm: AlgorithmSection = field(default_factory=AlgorithmSection)
    train: TrainSection = field(default_factory=TrainSection)
    seed: int = 0
    output_dir: str = "runs/gymwire"

    def schedule(self, default_max_turns: int) -> Horizon:
        return horizon_from_config(self.horizon if self.horizon is not None else default_max_turns)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        config = _build(cls, data, "")
        _validate(config)
        return config


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`["algorithm.lr=1e-4", ...]` (the `--set` options) as overrides for load_config; values are YAML."""
    import yaml

    overrides: dict[str, Any] = {}
    for assignment in assignments:
        key, equals, value = assignment.partition("=")
        if not equals or not key.strip():
            raise ConfigError(f"--set needs KEY=VALUE (e.g. --set algorithm.lr=1e-4), got {assignment!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: the value is not valid YAML: {exc}") from None
    return overrides


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config; `overrides` maps dotted keys ("train.steps") to values set on top."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (env, model, ...), got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        node = data
        for depth, key in enumerate(parents):
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                where = ".".join(parents[: depth + 1])
                raise ConfigError(f"cannot set {dotted}: {where} is {node!r} in the config, not a section; set {where} itself")
        node[leaf] = value
    return TrainConfig.from_dict(data)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where.rstrip('.') or 'the config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where.rstrip('.') or 'the config'}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        kind = _SECTIONS.get((cls, name))
        if kind is not None and value is not None:
            value = _build(kind, value, f"{where}{name}.")
        else:
            value = _coerce(value, hints[name], f"{where}{name}")
        values[name] = value
    if cls is TrainConfig and "env" not in values:
        raise ConfigError("the config needs an env section with at least `name`, e.g. env: {name: guess}")
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check a scalar against its field's type. Numbers written like `1e-5`, which YAML 1.1 reads
    as strings, become floats."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    if float in allowed:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    if int in allowed and isinstance(value, int) and not isinstance(value, bool):
        return value
    if bool in allowed and isinstance(value, bool):
        return value
    if str in allowed and isinstance(value, str):
        return value
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(_coerce(v, t, key) for v, t in zip(value, typing.get_args(hint), strict=True))
    if origin is dict and isinstance(value, dict):
        return value
    if hint is Any:
        return value
    raise ConfigError(f"{key} must be {_describe(hint)}, got {value!r}")


def _describe(hint: Any) -> str:
    names = [getattr(t, "__name__", str(t)).replace("NoneType", "null") for t in typing.get_args(hint) or (hint,)]
    return " or ".join(names) if typing.get_origin(hint) is not tuple else f"a list of {len(names)} numbers"


_SECTIONS: dict[tuple[type, str], type] = {
    (TrainConfig, "env"): EnvSection,
    (TrainConfig, "model"): ModelSection,
    (TrainConfig, "rollout"): RolloutSection,
    (TrainConfig, "algorithm"): AlgorithmSection,
    (TrainConfig, "train"): TrainSection,
    (ModelSection, "tiny"): TinyModel,
}


def _validate(config: TrainConfig) -> None:
    from .advantages import ESTIMATORS
    from .losses import AGGREGATIONS, KL_KINDS

    if not config.env.name:
        raise ConfigError("env.name is required: a built-in environment (e.g. guess) or the name served at env.server")
    if config.env.server != "builtin" and not config.env.server.startswith(("ws://", "wss://")):
        raise ConfigError(f"env.server must be 'builtin' or a ws:// or wss:// URL, got {config.env.server!r}")
    if not config.model.path and config.model.tiny is not None:
        config.model.path = str(Path(config.output_dir) / "model")  # each run builds its own
    if not config.model.path:
        raise ConfigError(
            "model.path is required: a local Hugging Face checkpoint, a known model (smollm2), a .gguf file, or where model.tiny builds one"
        )
    if config.train.resume and config.train.overwrite:
        raise ConfigError("train.resume and train.overwrite exclude each other: continue the run in output_dir, or start it over")
    if config.env.step_timeout is not None and config.env.step_timeout <= 0:
        raise ConfigError(f"env.step_timeout must be > 0 seconds, or null for no limit; got {config.env.step_timeout}")
    if config.model.backend not in POLICY_BACKENDS:
        raise ConfigError(f"model.backend must be one of {POLICY_BACKENDS}, got {config.model.backend!r}")
    algorithm = config.algorithm
    if algorithm.estimator not in ESTIMATORS:
        raise ConfigError(f"algorithm.estimator must be one of {', '.join(ESTIMATORS)}, got {algorithm.estimator!r}")
    if not 0 < algorithm.gamma <= 1 or not 0 <= algorithm.lam <= 1:
        raise ConfigError(f"need 0 < algorithm.gamma <= 1 and 0 <= algorithm.lam <= 1, got {algorithm.gamma} and {algorithm.lam}")
    for name in ("vf_coef", "value_lr", "entropy_coef", "kl_coef"):
        value = getattr(algorithm, name)
        if value is not None and value < 0:
            raise ConfigError(f"algorithm.{name} must be >= 0, got {value}")
    if algorithm.value_clip is not None and algorithm.value_clip <= 0:
        raise ConfigError(f"algorithm.value_clip must be > 0 (a value may move that far per update) or null, got {algorithm.value_clip}")
    if algorithm.loss_agg not in AGGREGATIONS:
        raise ConfigError(f"algorithm.loss_agg must be one of {AGGREGATIONS}, got {algorithm.loss_agg!r}")
    if algorithm.kl_kind not in KL_KINDS:
        raise ConfigError(f"algorithm.kl_kind must be one of {KL_KINDS}, got {algorithm.kl_kind!r}")
    if algorithm.kl_in not in ("loss", "reward"):
        raise ConfigError(f"algorithm.kl_in must be 'loss' (a KL loss term) or 'reward' (a KL penalty), got {algorithm.kl_in!r}")
    rollout = config.rollout
    if rollout.group_size < 2 and algorithm.estimator in ("grpo", "rloo", "reinforce_pp_baseline"):
        raise ConfigError(f"rollout.group_size must be >= 2 for {algorithm.estimator} (it compares episodes of a task)")
    batch = rollout.tasks_per_step * rollout.group_size
    for name, value in (
        ("rollout.tasks_per_step", rollout.tasks_per_step),
        ("rollout.turn_tokens", rollout.turn_tokens),
        ("rollout.episode_tokens", rollout.episode_tokens),
        ("algorithm.epochs", algorithm.epochs),
        ("algorithm.minibatches", algorithm.minibatches),
        ("train.steps", config.train.steps),
    ):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
    for name in ("micro_batch_tokens", "micro_batch_rows"):
        value = getattr(algorithm, name)
        if value is not None and value < 1:
            raise ConfigError(f"algorithm.{name} must be a whole number >= 1, or null for no limit; got {value!r}")
    if config.train.log_every is not None and config.train.log_every < 1:
        raise ConfigError(f"train.log_every must be a whole number >= 1 or null, got {config.train.log_every!r}")
    if batch % algorithm.minibatches:
        raise ConfigError(
            f"algorithm.minibatches={algorithm.minibatches} must divide the batch of "
            f"tasks_per_step * group_size = {batch} episodes"
        )
    if config.horizon is not None:
        try:
            horizon_from_config(config.horizon)
        except HorizonConfigError as exc:
            raise ConfigError(f"horizon: {exc}") from None
