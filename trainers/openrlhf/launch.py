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
      embedded: [guess]                      # `gymwire serve` these on this node for the run, or:
      fleet: fleet.yaml                      # a gym fleet (gymwire.sdk.fleet) in the trainer's own Ray
                                             #   cluster, up for the run; agents follow its replicas
      host: 10.0.0.4                         # address Ray workers reach this node at (embedded;
                                             #   default: this node's address on its default route)
      port: 8765
      token: null                            # default: $GYMWIRE_TOKEN; embedded, fleet: a fresh one if unset
      step_timeout: 60                       # seconds a step may take before its episode ends ("none": no limit)
    estimator: group_norm                    # gae, reinforce, reinforce_baseline, rloo, group_norm, dr_grpo
    horizon: staged:6,13,20@100              # any form of trainers.horizon; unset: env defaults
    step_source: ray:gymwire-step            # or file:/shared/fs/step.json
    budget: {max_len: 8192, turn_tokens: 512}  # whole trajectory / one turn
    rollout: {batch_size: 64, n_samples_per_prompt: 8}
    checkpoints: {path: ./ckpt, save_steps: 20, resume: false}
    agent: tokens                            # tokens (agent_func.py) or multiturn (OpenRLHF's loop)
    extra_args: ["--actor.adam.lr", "1e-6"]   # passed to OpenRLHF as is (use absolute paths)

The whole command line is checked with openrlhf's own parser and argument checks (flags.py)
before anything starts, `--dry-run` included. Paths (model, dataset, checkpoints, a file: step
board) are made absolute here: Ray workers do not run in this directory. The agent file reaches
the workers through Ray's runtime_env (train.py), not as a path of this node.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from gymwire.sdk.errors import UserError
from gymwire.trainers.train.horizon import horizon_from_config

__all__ = ["LaunchConfig", "LaunchConfigError", "load_config", "build_command", "check_command", "OPENRLHF_ESTIMATORS"]

OPENRLHF_ESTIMATORS = ("gae", "reinforce", "reinforce_baseline", "rloo", "group_norm", "dr_grpo")
OPENRLHF_GROUP_ESTIMATORS = ("rloo", "reinforce_baseline", "group_norm", "dr_grpo")
AGENT_FILES = {"tokens": "agent_func.py", "multiturn": "agent_func_multiturn.py"}
GYM_KEYS = {"urls", "embedded", "fleet", "host", "port", "token", "step_timeout"}
# Dataset names with these endings are files; others may be Hugging Face Hub datasets.
DATASET_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".arrow")
MISSING_RAY = (
    "openrlhf launch needs Ray and OpenRLHF's GPU stack on this node: "
    "pip install 'openrlhf[vllm]==0.11.2' (installs ray, deepspeed and vllm)"
)


class LaunchConfigError(UserError, ValueError):
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
        if self.estimator not in OPENRLHF_ESTIMATORS:
            raise LaunchConfigError(f"estimator {self.estimator!r} is not one of {OPENRLHF_ESTIMATORS}")
        n_samples = int(self.rollout.get("n_samples_per_prompt", 1))
        if self.estimator in OPENRLHF_GROUP_ESTIMATORS and n_samples < 2:
            raise LaunchConfigError(f"estimator {self.estimator} compares samples of one prompt: set rollout.n_samples_per_prompt >= 2")
        if self.agent not in AGENT_FILES:
            raise LaunchConfigError(f"agent {self.agent!r} is not one of {sorted(AGENT_FILES)}")
        given = [key for key in ("urls", "embedded", "fleet") if self.gym.get(key)]
        if len(given) != 1:
            raise LaunchConfigError(
                "gym needs exactly one of `urls` (running servers), `embedded` (env names to serve here) "
                "or `fleet` (a fleet file, brought up in the trainer's Ray cluster)"
            )
        if self.gym.get("fleet"):
            from gymwire.sdk.fleet import FleetSpecError, load_fleet_spec

            try:
                load_fleet_spec(self.gym["fleet"])
            except FleetSpecError as exc:
                raise LaunchConfigError(f"gym.fleet: {exc}") from None
        unknown = set(self.gym) - GYM_KEYS
        if unknown:
            raise LaunchConfigError(f"unknown gym key(s) {sorted(unknown)}; known: {sorted(GYM_KEYS)}")
        step_timeout = self.gym.get("step_timeout")
        if step_timeout is not None and str(step_timeout).lower() != "none":
            try:
                ok = float(step_timeout) > 0
            except ValueError:
                ok = False
            if not ok:
                raise LaunchConfigError(f"gym.step_timeout must be seconds > 0 or none, got {step_timeout!r}")
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


def node_address() -> str:
    """This node's address on its default route, as other nodes see it. Connecting a UDP socket
    sends nothing; it only asks the kernel which interface it would use."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return probe.getsockname()[0]
        except OSError:  # no route at all: a machine on its own
            return "127.0.0.1"


def embedded_host(config: LaunchConfig) -> str:
    """The address the embedded server binds and Ray workers connect to."""
    host = config.gym.get("host") or node_address()
    try:
        loopback = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        raise LaunchConfigError(f"gym.host {host!r} does not resolve to an address") from None
    if loopback and config.nodes > 1:
        raise LaunchConfigError(
            f"the embedded server's address {host} is loopback, which the other {config.nodes - 1} node(s) cannot reach: "
            "set gym.host to this node's address on the cluster network"
        )
    return host


def embedded_urls(config: LaunchConfig) -> list[str]:
    return [f"ws://{embedded_host(config)}:{int(config.gym.get('port', 8765))}"]


def gym_token(config: LaunchConfig) -> str | None:
    """gym.token, else $GYMWIRE_TOKEN; an embedded server that would run without one gets a fresh
    one, since it listens on an address other machines reach."""
    token = config.gym.get("token") or os.environ.get("GYMWIRE_TOKEN") or None
    if token is None and (config.gym.get("embedded") or config.gym.get("fleet")):
        token = secrets.token_urlsafe(24)
    return None if token is None else str(token)


def _is_local(path: str, file_suffixes: tuple[str, ...] = ()) -> bool:
    """Whether `path` names something on this machine rather than a Hugging Face Hub name."""
    return Path(path).expanduser().exists() or path.startswith((".", "/", "~")) or path.endswith(file_suffixes)


def _absolute(path: str, file_suffixes: tuple[str, ...] = (), *, output: bool = False) -> str:
    """A local path made absolute (Ray workers do not run in this directory); an input that may be
    a Hub name (a model, a dataset) stays as it is unless it is local. Outputs are always local."""
    return str(Path(path).expanduser().resolve()) if output or _is_local(path, file_suffixes) else path


def build_command(config: LaunchConfig, urls: list[str], token: str | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv, environment variables) of the training run."""
    step_source = config.step_source
    if step_source.startswith("file:"):
        step_source = "file:" + str(Path(step_source[len("file:"):]).expanduser().resolve())
    env = {"GYMWIRE_STEP_SOURCE": step_source}
    if urls:
        env["GYMWIRE_URLS"] = ",".join(urls)
    if config.gym.get("fleet"):
        from gymwire.sdk.fleet import load_fleet_spec

        fleet_file = Path(config.gym["fleet"]).expanduser().resolve()
        env["GYMWIRE_FLEET_FILE"] = str(fleet_file)  # train.py brings it up once Ray is initialised
        env["GYMWIRE_FLEET"] = load_fleet_spec(fleet_file).name
    if token:
        env["GYMWIRE_TOKEN"] = token
    if config.horizon is not None:
        env["GYMWIRE_HORIZON"] = str(horizon_from_config(config.horizon))
    if config.gym.get("step_timeout") is not None:
        env["GYMWIRE_STEP_TIMEOUT"] = str(config.gym["step_timeout"])
    model = _absolute(config.model)
    if config.agent == "multiturn":
        env["GYMWIRE_TOKENIZER"] = model
    gpus = [str(config.nodes), str(config.gpus_per_node)]
    # The driver runs here, so this node's interpreter; the agent file is named, not located: the
    # driver ships it to every Ray worker (train.py), where it runs in the worker's own Python.
    argv = [
        sys.executable, "-m", "gymwire.trainers.openrlhf.train",
        "--actor.model_name_or_path", model,
        "--actor.num_nodes", gpus[0], "--actor.num_gpus_per_node", gpus[1],
        "--ref.num_nodes", gpus[0], "--ref.num_gpus_per_node", gpus[1],
        "--vllm.num_engines", str(config.vllm_engines),
        "--vllm.tensor_parallel_size", str(config.vllm_tensor_parallel),
        "--train.colocate_all", "--vllm.enable_sleep", "--ds.enable_sleep",
        "--train.agent_func_path", AGENT_FILES[config.agent],
        "--data.prompt_dataset", _absolute(config.dataset, DATASET_FILE_SUFFIXES), "--data.input_key", "prompt", "--data.label_key", "label",
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
    return _absolute_paths(argv + list(config.extra_args)), env


# OpenRLHF's relative defaults, which its Ray workers would resolve in the job's working directory.
RELATIVE_DEFAULTS = {"--ckpt.path": "./ckpt/checkpoints_ppo_ray", "--ckpt.output_dir": "./ckpt"}


def _absolute_paths(argv: list[str]) -> list[str]:
    """Every local path among the flags' values made absolute (extra_args included), and
    OpenRLHF's relative output defaults spelled out as absolute paths."""
    out = list(argv)
    for position, flag in enumerate(out[:-1]):
        if not flag.startswith("--") or flag == "--train.agent_func_path":
            continue
        value = out[position + 1]
        if flag.endswith(("_dir", ".path")):  # where OpenRLHF writes
            out[position + 1] = _absolute(value, output=True)
        elif flag.endswith(("_path", "dataset")):  # what it reads: local files, or Hub names
            out[position + 1] = ",".join(_absolute(part, DATASET_FILE_SUFFIXES) for part in value.split(","))
    for flag, default in RELATIVE_DEFAULTS.items():
        if flag not in out:
            out += [flag, _absolute(default, output=True)]
    return out


def check_command(argv: list[str]) -> list[str]:
    """Check the OpenRLHF flags of `argv` with openrlhf's own parser and checks; returns openrlhf's
    warnings, raises LaunchConfigError with its refusal."""
    from .flags import OpenRLHFArgumentError, check_openrlhf_args

    try:
        return check_openrlhf_args(argv[3:])
    except OpenRLHFArgumentError as exc:
        raise LaunchConfigError(f"openrlhf {_openrlhf_version()} refuses the command: {exc}") from None


def _openrlhf_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("openrlhf")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def check_dataset(config: LaunchConfig) -> None:
    """The dataset must exist before Ray starts: a local file, or a Hub name (not checked here)."""
    if _is_local(config.dataset, DATASET_FILE_SUFFIXES) and not Path(config.dataset).expanduser().exists():
        raise LaunchConfigError(
            f"dataset {config.dataset} does not exist; write it with `gymwire openrlhf prepare ENV --out {config.dataset}`"
        )


def render(argv: list[str], env: Mapping[str, str]) -> str:
    """A shell script: the exports, then the command with one flag and its value per line. The
    token is not printed: logs and terminals are no place for it."""
    exports = "".join(
        f"# {k} is set (not shown)\n" if k == "GYMWIRE_TOKEN" else f"export {k}={shlex.quote(v)}\n"
        for k, v in sorted(env.items())
    )
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
    """Check everything (LaunchConfigError), print the command, then serve and run it."""
    embedded = config.gym.get("embedded") or []
    host = embedded_host(config) if embedded else None
    urls = [f"ws://{host}:{int(config.gym.get('port', 8765))}"] if embedded else list(config.gym.get("urls") or [])
    token = gym_token(config)
    argv, env = build_command(config, urls, token)
    check_dataset(config)
    warnings = config.warnings() + check_command(argv)
    if not dry_run and importlib.util.find_spec("ray") is None:
        raise LaunchConfigError(MISSING_RAY)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(render(argv, env), flush=True)
    if dry_run:
        return 0
    server = None
    if embedded:
        port = int(config.gym.get("port", 8765))
        # The token goes through the environment: a command line is visible to every user of the node.
        serve = [sys.executable, "-m", "gymwire.sdk.cli", "serve", *embedded, "--host", str(host), "--port", str(port)]
        server = subprocess.Popen(serve, env={**os.environ, "GYMWIRE_TOKEN": token or ""})
        _wait_for_port(str(host), port, server)
    try:
        return subprocess.call(argv, env={**os.environ, **env})
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
