"""`gymwire openrlhf launch CONFIG`: one config file -> the OpenRLHF command line and its environment.

A config (YAML or JSON):

    model: /models/Qwen2.5-1.5B-Instruct     # actor (and reference) checkpoint
    dataset: tasks.jsonl                     # from `gymwire openrlhf prepare`
    nodes: 1                                 # actor/reference/critic nodes
    gpus_per_node: 8
    vllm_engines: 8
    vllm_tensor_parallel: 1
    gym:
      urls: [ws://10.0.0.5:8765]             # servers already running, or:
      embedded: [guess]                      # `gymwire serve` these on this node for the run
      host: 10.0.0.4                         # address Ray workers reach this node at (embedded)
      port: 8765
      token: null
    estimator: group_norm                    # gae, reinforce, reinforce_baseline, rloo, group_norm, dr_grpo
    horizon: staged:6,13,20@100              # any form of trainers.horizon; unset: env defaults
    step_source: ray:gymwire-step            # or file:/shared/fs/step.json
    budget: {max_len: 8192, turn_tokens: 512}  # whole trajectory / one turn
    rollout: {batch_size: 64, n_samples_per_prompt: 8}
    checkpoints: {path: ./ckpt, save_steps: 20, resume: false}
    agent: tokens                            # tokens (agent_func.py) or multiturn (OpenRLHF's loop)
    extra_args: ["--actor.learning_rate", "1e-6"]   # passed to OpenRLHF as is
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from gymwire.trainers.horizon import horizon_from_config

__all__ = ["LaunchConfig", "LaunchConfigError", "load_config", "build_command", "ESTIMATORS"]

ESTIMATORS = ("gae", "reinforce", "reinforce_baseline", "rloo", "group_norm", "dr_grpo")
GROUP_ESTIMATORS = ("rloo", "reinforce_baseline", "group_norm", "dr_grpo")
AGENT_FILES = {"tokens": "agent_func.py", "multiturn": "agent_func_multiturn.py"}


class LaunchConfigError(ValueError):
    """The launch config is incomplete or inconsistent; the message says which key to fix."""


@dataclass
class LaunchConfig:
    model: str
    dataset: str
    nodes: int = 1
    gpus_per_node: int = 8
    vllm_engines: int = 1
    vllm_tensor_parallel: int = 1
    gym: dict[str, Any] = field(default_factory=dict)
    estimator: str = "group_norm"
    horizon: Any = None
    step_source: str = "ray:gymwire-step"
    budget: dict[str, int] = field(default_factory=lambda: {"max_len": 4096, "turn_tokens": 512})
    rollout: dict[str, int] = field(default_factory=lambda: {"batch_size": 64, "n_samples_per_prompt": 8})
    checkpoints: dict[str, Any] = field(default_factory=dict)
    agent: str = "tokens"
    extra_args: list[str] = field(default_factory=list)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "LaunchConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise LaunchConfigError(f"unknown config key(s) {sorted(unknown)}; known keys: {sorted(known)}")
        for key in ("model", "dataset"):
            if not raw.get(key):
                raise LaunchConfigError(f"the config needs `{key}`")
        config = cls(**raw)
        config.validate()
        return config

    def validate(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise LaunchConfigError(f"estimator {self.estimator!r} is not one of {ESTIMATORS}")
        n_samples = int(self.rollout.get("n_samples_per_prompt", 1))
        if self.estimator in GROUP_ESTIMATORS and n_samples < 2:
            raise LaunchConfigError(f"estimator {self.estimator} compares samples of one prompt: set rollout.n_samples_per_prompt >= 2")
        if self.agent not in AGENT_FILES:
            raise LaunchConfigError(f"agent {self.agent!r} is not one of {sorted(AGENT_FILES)}")
        urls, embedded = self.gym.get("urls") or [], self.gym.get("embedded") or []
        if bool(urls) == bool(embedded):
            raise LaunchConfigError("gym needs exactly one of `urls` (running servers) or `embedded` (env names to serve here)")
        if self.horizon is not None:
            horizon_from_config(self.horizon)  # raises HorizonConfigError with the valid forms
        if "--train.async_enable" in self.extra_args:
            raise LaunchConfigError(
                "--train.async_enable generates ahead of training, so the step a rollout belongs to is not "
                "known when it starts; gymwire's exact horizon needs the synchronous trainer"
            )
        if "max_len" not in self.budget:
            raise LaunchConfigError("budget.max_len (the whole trajectory's tokens) is required")

    def warnings(self) -> list[str]:
        out = []
        turn_tokens = self.budget.get("turn_tokens")
        if self.horizon is not None and turn_tokens:
            longest = horizon_from_config(self.horizon).max_turns
            if longest * int(turn_tokens) > int(self.budget["max_len"]):
                out.append(
                    f"budget.max_len {self.budget['max_len']} is below {longest} turns x {turn_tokens} tokens: "
                    "long episodes of the last stage will be cut by the token budget before the turn limit"
                )
        return out


def load_config(path: str | Path) -> LaunchConfig:
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        raw = yaml.safe_load(text)
    else:
        raw = json.loads(text)
    if not isinstance(raw, Mapping):
        raise LaunchConfigError(f"{path} must hold a mapping of config keys")
    return LaunchConfig.from_mapping(raw)


def embedded_urls(config: LaunchConfig) -> list[str]:
    host = config.gym.get("host") or socket.gethostbyname(socket.gethostname())
    return [f"ws://{host}:{int(config.gym.get('port', 8765))}"]


def build_command(config: LaunchConfig, urls: list[str]) -> tuple[list[str], dict[str, str]]:
    """(argv, environment variables) of the training run."""
    here = Path(__file__).resolve().parent
    env = {"GYMWIRE_URLS": ",".join(urls), "GYMWIRE_STEP_SOURCE": config.step_source}
    if config.gym.get("token"):
        env["GYMWIRE_TOKEN"] = str(config.gym["token"])
    if config.horizon is not None:
        env["GYMWIRE_HORIZON"] = str(horizon_from_config(config.horizon))
    if config.agent == "multiturn":
        env["GYMWIRE_TOKENIZER"] = config.model
    gpus = [str(config.nodes), str(config.gpus_per_node)]
    argv = [
        sys.executable, "-m", "gymwire.trainers.openrlhf.train",
        "--actor.model_name_or_path", config.model,
        "--actor.num_nodes", gpus[0], "--actor.num_gpus_per_node", gpus[1],
        "--ref.num_nodes", gpus[0], "--ref.num_gpus_per_node", gpus[1],
        "--vllm.num_engines", str(config.vllm_engines),
        "--vllm.tensor_parallel_size", str(config.vllm_tensor_parallel),
        "--train.colocate_all", "--vllm.enable_sleep", "--ds.enable_sleep",
        "--train.agent_func_path", str(here / AGENT_FILES[config.agent]),
        "--data.prompt_dataset", config.dataset, "--data.input_key", "prompt", "--data.label_key", "label",
        "--data.max_len", str(config.budget["max_len"]),
        "--algo.advantage.estimator", config.estimator,
        "--rollout.batch_size", str(config.rollout.get("batch_size", 64)),
        "--rollout.n_samples_per_prompt", str(config.rollout.get("n_samples_per_prompt", 1)),
    ]
    if config.estimator == "gae":
        argv += ["--critic.num_nodes", gpus[0], "--critic.num_gpus_per_node", gpus[1]]
    if config.budget.get("turn_tokens"):
        argv += ["--rollout.max_new_tokens", str(config.budget["turn_tokens"])]
    if config.agent == "multiturn":
        argv += ["--data.apply_chat_template"]
    ckpt = config.checkpoints
    if ckpt.get("path"):
        argv += ["--ckpt.path", str(ckpt["path"])]
    if ckpt.get("save_steps"):
        argv += ["--ckpt.save_steps", str(ckpt["save_steps"])]
    if ckpt.get("resume"):
        argv += ["--ckpt.load_enable"]
    return argv + list(config.extra_args), env


def render(argv: list[str], env: Mapping[str, str]) -> str:
    """A shell script: the exports, then the command with one flag and its value per line."""
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    lines: list[list[str]] = [[]]
    for arg in argv:
        if arg.startswith("--"):
            lines.append([])
        lines[-1].append(arg)
    return exports + " \\\n    ".join(" ".join(shlex.quote(a) for a in line) for line in lines)


def _wait_for_port(host: str, port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"`gymwire serve` exited with code {process.returncode}; see its log above")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"`gymwire serve` did not listen on {host}:{port} within {timeout:.0f}s")


def launch(config: LaunchConfig, *, dry_run: bool = False) -> int:
    embedded = config.gym.get("embedded") or []
    urls = embedded_urls(config) if embedded else list(config.gym["urls"])
    argv, env = build_command(config, urls)
    for warning in config.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    print(render(argv, env), flush=True)
    if dry_run:
        return 0
    server = None
    if embedded:
        port = int(config.gym.get("port", 8765))
        serve = [sys.executable, "-m", "gymwire.sdk.cli", "serve", *embedded, "--host", "0.0.0.0", "--port", str(port)]
        if config.gym.get("token"):
            serve += ["--token", str(config.gym["token"])]
        server = subprocess.Popen(serve)
        _wait_for_port("127.0.0.1", port, server)
    try:
        return subprocess.call(argv, env={**os.environ, **env})
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
