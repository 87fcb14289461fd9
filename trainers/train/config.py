"""The reference trainer's configuration: a YAML file of six sections, every key optional but `env.name`.

    seed: 0
    output_dir: runs/guess-tiny            # metrics, TensorBoard logs, rollouts, checkpoints
    model:     {path, tiny, backend, device, threads, gradient_checkpointing}
    env:       {name, server, token, options, train_split, test_split, instructions, system}
    horizon:   3 | "staged:2,4@50" | {kind: staged, stages: [...], stage_steps: N}
    rollout:   {tasks_per_step, group_size, turn_tokens, episode_tokens, temperature, top_p}
    algorithm: {estimator, lr, ..., kl_coef, entropy_coef}
    train:     {steps, eval_every, eval_tasks, checkpoint_every, resume, ...}

Relative paths are relative to the current directory. The sections are pydantic models
(trainers/train/validation.py): the whole config is checked before anything loads, unknown keys are
errors (a typo must not silently fall back to a default), and every problem is reported at once,
each with its key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pydantic import Field

from gymwire.sdk.errors import UserError

from ..policy import POLICY_BACKENDS
from .horizon import Horizon, HorizonConfigError, horizon_from_config
from .validation import Strict, validated, yaml_problem

__all__ = ["TrainConfigError", "TrainConfig", "load_config", "parse_assignments"]


class TrainConfigError(UserError, ValueError):
    """The training configuration cannot be used; the message names the key and what is valid."""


class TinyModel(Strict):
    """Build a randomly initialised GPT-2 at `model.path` when nothing is there yet."""

    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    numbers: int = 101  # whole numbers 0..numbers-1 get one token each
    # Std of the random weights. Larger than GPT-2's 0.02 so attention differs between contexts from
    # the start: with 0.02 the output hardly depends on the context and RL from scratch stalls.
    init_std: float = 0.08
    corpus_episodes: int = 16  # episodes played with random numbers to gather the env's words


class ModelSection(Strict):
    path: str = ""  # a local Hugging Face checkpoint folder, a known model's name (smollm2) or a .gguf file
    tiny: TinyModel | None = None
    backend: str = "transformers"
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:N
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    # Recompute each layer's activations in the backward pass instead of keeping them: less memory
    # for a longer update (transformers' gradient checkpointing).
    gradient_checkpointing: bool = False


class EnvSection(Strict):
    name: str = ""
    server: str = "builtin"  # "builtin": serve it in-process; or the URL of a running server
    token: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    train_split: str = "train"
    test_split: str = "test"
    instructions: bool = True  # put the environment's instructions before the first observation
    system: str | None = None  # a system prompt
    # Seconds the server may take for one open or step (its deadline_ms); a step over it ends its
    # episode with a TIMEOUT error instead of stalling training. null: no limit.
    step_timeout: float | None = 60.0


class RolloutSection(Strict):
    tasks_per_step: int = 8
    group_size: int = 8  # episodes per task (the group of GRPO/RLOO)
    turn_tokens: int = 64
    episode_tokens: int = 2048
    temperature: float = 1.0
    top_p: float = 1.0


class AlgorithmSection(Strict):
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


class TrainSection(Strict):
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


class TrainConfig(Strict):
    env: EnvSection
    model: ModelSection = Field(default_factory=ModelSection)
    horizon: Any = None  # see horizon.horizon_from_config; None: the environment's default_max_turns
    rollout: RolloutSection = Field(default_factory=RolloutSection)
    algorithm: AlgorithmSection = Field(default_factory=AlgorithmSection)
    train: TrainSection = Field(default_factory=TrainSection)
    seed: int = 0
    output_dir: str = "runs/gymwire"

    def schedule(self, default_max_turns: int) -> Horizon:
        return horizon_from_config(self.horizon if self.horizon is not None else default_max_turns)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        if not isinstance(data, Mapping):
            raise TrainConfigError(f"the config must be a mapping of sections (env, model, ...), got {data!r}")
        if "env" not in data:
            raise TrainConfigError("the config needs an env section with at least `name`, e.g. env: {name: guess}")
        config = validated(cls, dict(data), "config", TrainConfigError)
        problems = _problems(config)
        if problems:
            raise TrainConfigError("config: " + "; ".join(problems))
        return config


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`["algorithm.lr=1e-4", ...]` (the `--set` options) as overrides for load_config; values are YAML."""
    import yaml

    overrides: dict[str, Any] = {}
    for assignment in assignments:
        key, equals, value = assignment.partition("=")
        if not equals or not key.strip():
            raise TrainConfigError(f"--set needs KEY=VALUE (e.g. --set algorithm.lr=1e-4), got {assignment!r}")
        try:
            overrides[key.strip()] = _joined_pairs(yaml.safe_load(value))
        except yaml.YAMLError as exc:
            raise TrainConfigError(f"--set {key}: the value is not valid YAML: {exc}") from None
    return overrides


def _joined_pairs(value: Any) -> Any:
    """On a command line one writes `{low:9,high:2}`, which YAML reads as the keys `low:9` and
    `high:2` without values (a flow mapping wants a space after the colon): read those as
    `{low: 9, high: 2}`."""
    import yaml

    if isinstance(value, dict):
        pairs = {}
        for key, item in value.items():
            if item is None and isinstance(key, str) and ":" in key and not key.startswith(":"):
                key, _, text = key.partition(":")
                item = yaml.safe_load(text)
            pairs[key] = _joined_pairs(item)
        return pairs
    if isinstance(value, list):
        return [_joined_pairs(item) for item in value]
    return value


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config; `overrides` maps dotted keys ("train.steps") to values set on top."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise TrainConfigError(f"config file {path} does not exist; check the path (e.g. examples/guess-tiny.yaml)") from None
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"{path} is not valid YAML ({yaml_problem(exc)}); fix the file") from None
    if not isinstance(data, dict):
        raise TrainConfigError(f"{path} must hold a mapping of sections (env, model, ...), got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        node = data
        for depth, key in enumerate(parents):
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                where = ".".join(parents[: depth + 1])
                raise TrainConfigError(f"cannot set {dotted}: {where} is {node!r} in the config, not a section; set {where} itself")
        node[leaf] = value
    return TrainConfig.from_dict(data)


def _problems(config: TrainConfig) -> list[str]:
    """What is wrong with a config whose values have the right types: every problem, with its key.
    Fills in what follows from other keys (a tiny model's path)."""
    from .advantages import ESTIMATORS, GROUP_ESTIMATORS
    from .losses import AGGREGATIONS, KL_KINDS

    problems: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    env, model, algorithm, rollout, train = config.env, config.model, config.algorithm, config.rollout, config.train
    check(bool(env.name), "env.name is required: a built-in environment (e.g. guess) or the name served at env.server")
    check(env.server == "builtin" or env.server.startswith(("ws://", "wss://")),
          f"env.server must be 'builtin' or a ws:// or wss:// URL, got {env.server!r}")
    if not model.path and model.tiny is not None:
        model.path = str(Path(config.output_dir) / "model")  # each run builds its own
    check(bool(model.path), "model.path is required: a local Hugging Face checkpoint, a known model (smollm2), a .gguf file, "
                            "or leave it out with model.tiny (built in output_dir/model)")
    check(not (train.resume and train.overwrite),
          "train.resume and train.overwrite exclude each other: continue the run in output_dir, or start it over")
    check(env.step_timeout is None or env.step_timeout > 0,
          f"env.step_timeout must be > 0 seconds, or null for no limit; got {env.step_timeout}")
    check(model.backend in POLICY_BACKENDS, f"model.backend must be one of {', '.join(POLICY_BACKENDS)}, got {model.backend!r}")
    check(algorithm.estimator in ESTIMATORS, f"algorithm.estimator must be one of {', '.join(ESTIMATORS)}, got {algorithm.estimator!r}")
    check(0 < algorithm.gamma <= 1 and 0 <= algorithm.lam <= 1,
          f"need 0 < algorithm.gamma <= 1 and 0 <= algorithm.lam <= 1, got {algorithm.gamma} and {algorithm.lam}")
    for name in ("vf_coef", "value_lr", "entropy_coef", "kl_coef"):
        value = getattr(algorithm, name)
        check(value is None or value >= 0, f"algorithm.{name} must be >= 0, got {value}")
    check(algorithm.value_clip is None or algorithm.value_clip > 0,
          f"algorithm.value_clip must be > 0 (a value may move that far per update) or null, got {algorithm.value_clip}")
    check(algorithm.loss_agg in AGGREGATIONS, f"algorithm.loss_agg must be one of {', '.join(AGGREGATIONS)}, got {algorithm.loss_agg!r}")
    check(algorithm.kl_kind in KL_KINDS, f"algorithm.kl_kind must be one of {', '.join(KL_KINDS)}, got {algorithm.kl_kind!r}")
    check(algorithm.kl_in in ("loss", "reward"),
          f"algorithm.kl_in must be 'loss' (a KL loss term) or 'reward' (a KL penalty), got {algorithm.kl_in!r}")
    check(rollout.group_size >= 2 or algorithm.estimator not in GROUP_ESTIMATORS,
          f"rollout.group_size must be >= 2 for {algorithm.estimator} (it compares episodes of a task)")
    check(0 <= rollout.temperature and 0 < rollout.top_p <= 1 and 0 <= train.eval_temperature,
          "rollout.temperature and train.eval_temperature must be >= 0 and rollout.top_p in (0, 1]")
    for name, value in (
        ("rollout.tasks_per_step", rollout.tasks_per_step),
        ("rollout.group_size", rollout.group_size),
        ("rollout.turn_tokens", rollout.turn_tokens),
        ("rollout.episode_tokens", rollout.episode_tokens),
        ("algorithm.epochs", algorithm.epochs),
        ("algorithm.minibatches", algorithm.minibatches),
        ("train.steps", train.steps),
        ("train.eval_tasks", train.eval_tasks),
        ("train.keep_checkpoints", train.keep_checkpoints),
    ):
        check(value >= 1, f"{name} must be a whole number >= 1, got {value!r}")
    for name in ("eval_every", "checkpoint_every", "rollouts_every"):
        check(getattr(train, name) >= 0, f"train.{name} must be a whole number >= 0 (0: see docs/training.md), got {getattr(train, name)!r}")
    for name in ("micro_batch_tokens", "micro_batch_rows"):
        value = getattr(algorithm, name)
        check(value is None or value >= 1, f"algorithm.{name} must be a whole number >= 1, or null for no limit; got {value!r}")
    check(train.log_every is None or train.log_every >= 1, f"train.log_every must be a whole number >= 1 or null, got {train.log_every!r}")
    check(model.threads is None or model.threads >= 1, f"model.threads must be a whole number >= 1 or null, got {model.threads!r}")
    batch = rollout.tasks_per_step * rollout.group_size
    check(algorithm.minibatches < 1 or batch % algorithm.minibatches == 0,
          f"algorithm.minibatches={algorithm.minibatches} must divide the batch of tasks_per_step * group_size = {batch} episodes")
    if config.horizon is not None:
        try:
            horizon_from_config(config.horizon)
        except HorizonConfigError as exc:
            problems.append(f"horizon: {exc}")
    return problems
