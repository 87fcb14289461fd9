"""`python -m gymwire.trainers.openrlhf.train [OpenRLHF train_ppo_ray flags]`

OpenRLHF's `openrlhf.cli.train_ppo_ray`, unchanged except that its PPO trainer publishes the
training step for the agents (publishing.py), and that the GYMWIRE_* variables reach every Ray
worker (vLLM actors read them). `gymwire openrlhf launch` builds this command line.

With GYMWIRE_FLEET_FILE (a fleet file, gymwire.sdk.fleet), the gym fleet comes up in this run's own
Ray cluster once Ray is initialised, with GYMWIRE_TOKEN, and is taken down when the run ends; the
agents find it by its name (GYMWIRE_FLEET) and follow its replicas.

`--train.agent_func_path agent_func.py` (or agent_func_multiturn.py), a bare name of one of this
package's agent files, is shipped to every Ray worker as the job's working directory: vLLM actors
on other nodes open the path in their own file system, where this node's install path may not
exist. Every other path the workers read must then be absolute (the launcher makes its own so).
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

GYMWIRE_VARIABLES = (
    "GYMWIRE_URLS", "GYMWIRE_FLEET", "GYMWIRE_TOKEN", "GYMWIRE_HORIZON", "GYMWIRE_STEP_SOURCE", "GYMWIRE_TURN_TOKENS", "GYMWIRE_TOKENIZER",
    "GYMWIRE_STEP_TIMEOUT",
)
# train_ppo_ray's own ray.init sets these; it is skipped when Ray is already initialised, so keep them.
OPENRLHF_DEFAULTS = {"TOKENIZERS_PARALLELISM": "true", "NCCL_DEBUG": "WARN", "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1"}


def worker_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, str]:
    env = {name: environ.get(name, default) for name, default in OPENRLHF_DEFAULTS.items()}
    env.update({name: environ[name] for name in GYMWIRE_VARIABLES if environ.get(name)})
    return env


AGENT_FILES = ("agent_func.py", "agent_func_multiturn.py")


def runtime_env(argv: Sequence[str], environ: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, Any]:
    """Ray's runtime_env for the job: the worker variables, and the adapter's agent files as the
    working directory when `--train.agent_func_path` names one of them."""
    env: dict[str, Any] = {"env_vars": worker_env(environ)}
    if "--train.agent_func_path" in argv:
        agent = argv[list(argv).index("--train.agent_func_path") + 1]
        if agent in AGENT_FILES:
            folder = Path(tempfile.mkdtemp(prefix="gymwire-agent-"))
            for name in AGENT_FILES:
                shutil.copy(Path(__file__).with_name(name), folder / name)
            env["working_dir"] = str(folder)
    return env


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--train.async_enable" in argv:
        print("gymwire: --train.async_enable is not supported: the asynchronous trainer generates ahead of "
              "training, so the turn limit of a rollout's step cannot be known when it starts", file=sys.stderr)
        return 2
    if not (os.environ.get("GYMWIRE_URLS") or os.environ.get("GYMWIRE_FLEET")):
        print("gymwire: set GYMWIRE_URLS or GYMWIRE_FLEET (or use `gymwire openrlhf launch CONFIG`)", file=sys.stderr)
        return 2
    if importlib.util.find_spec("ray") is None:
        from .launch import MISSING_RAY

        print(f"gymwire: {MISSING_RAY}", file=sys.stderr)
        return 2
    import ray

    from .ray_trainer import install

    install()
    if not ray.is_initialized():
        ray.init(runtime_env=runtime_env(argv))
    fleet = fleet_up(os.environ)
    try:
        sys.argv = ["openrlhf.cli.train_ppo_ray", *argv]
        runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="__main__", alter_sys=True)
    finally:
        if fleet is not None:
            fleet.down()
    return 0


def fleet_up(environ: dict[str, str] | os._Environ[str] = os.environ) -> Any:
    """The gym fleet of GYMWIRE_FLEET_FILE, up in the initialised Ray cluster (None without one).
    Its name must be GYMWIRE_FLEET's, which the agents look it up by."""
    if not environ.get("GYMWIRE_FLEET_FILE"):
        return None
    from dataclasses import replace

    from gymwire.sdk.fleet import Fleet, load_fleet_spec

    spec = load_fleet_spec(environ["GYMWIRE_FLEET_FILE"])
    spec = replace(spec, name=environ.get("GYMWIRE_FLEET") or spec.name)
    return Fleet.up(spec, token=environ.get("GYMWIRE_TOKEN") or None)


if __name__ == "__main__":
    sys.exit(main())
