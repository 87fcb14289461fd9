"""`gymwire eval MODEL ENV...`: the command line of trainers/eval.py (a `gymwire.commands` plugin)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]

BACKENDS = ("transformers", "vllm", "openai")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model on environments: the paper's success table, every episode as JSONL",
        description=(
            "Evaluate MODEL on ENVs and print the paper's table (success %% with 95%% intervals). "
            "MODEL: a known model (smollm2), a .gguf file or a checkpoint folder (transformers, vllm), "
            "or the model name an OpenAI-compatible server knows (with --base-url). "
            "ENV: a built-in name (guess, babyai, textcraft), module:Class, a server URL ws://host:port "
            "(all its environments) or NAME@ws://host:port. See docs/eval.md."
        ),
    )
    parser.add_argument("model", nargs="?", help="model to evaluate (omit with --compare only)")
    parser.add_argument("envs", nargs="*", metavar="ENV")
    parser.add_argument("--backend", choices=BACKENDS, help="default: openai with --base-url, else transformers")
    parser.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key (default OPENAI_API_KEY)")
    parser.add_argument("--request-timeout", type=float, default=120.0, help="seconds per model request (default 120)")
    parser.add_argument("--retries", type=int, default=4, help="retries of a failed model request: connection, timeout, 429, 5xx (default 4)")
    parser.add_argument("--device", default="cpu", help="transformers: cpu, cuda or auto (default cpu)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--tasks", default="all", help="'all', N (a seeded sample of N tasks of the split) or ENV=N,ENV=N (default all)")
    parser.add_argument("--max-turns", help="turn limit: N for every environment, 'paper' for the paper's, or ENV=N,ENV=N (default: each environment's)")
    parser.add_argument("--concurrency", type=int, default=16, help="episodes played at once (default 16)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--turn-tokens", type=int, default=128, help="most tokens per reply (default 128)")
    parser.add_argument("--episode-tokens", type=int, default=4096, help="most tokens per conversation (default 4096)")
    parser.add_argument("--env-config", help="YAML: per environment {system, examples, action_pattern, instructions, options, max_turns}")
    parser.add_argument("--token", help="gym servers' bearer token (or GYMWIRE_TOKEN)")
    parser.add_argument("--step-timeout", type=float, default=60.0, help="seconds a gym server may take per step; a slower step ends its episode as an error (0: no limit; default 60)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the task sample and of sampling (default 0)")
    parser.add_argument("--name", help="model label in the table (default: from MODEL)")
    parser.add_argument("--output", help="output folder (default runs/eval/<name>); re-running resumes it")
    parser.add_argument("--compare", nargs="+", default=[], metavar="DIR", help="earlier eval folders to show side by side")
    parser.add_argument("--paper", action="store_true", help="add the paper's rows (AgentGym-RL) to the table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (one line per environment)")
    parser.set_defaults(handler=_eval)


class UsageError(ValueError):
    """A bad argument; the message says what to do."""


def _eval(args: argparse.Namespace) -> int:
    from .eval import load_results, results_table

    try:
        others = [load_results(folder) for folder in args.compare]
    except FileNotFoundError as exc:
        return _fail(str(exc))
    if args.model is None:
        if not others:
            return _fail("give MODEL and ENVs to evaluate, or --compare DIR... to show earlier runs")
        print(results_table(others, paper=args.paper))
        return 0
    if not args.envs:
        return _fail("name at least one environment after the model, e.g. gymwire eval smollm2 guess textcraft")
    try:
        return _run(args, others)
    except UsageError as exc:
        return _fail(str(exc))


def _fail(message: str) -> int:
    print(f"gymwire eval: {message}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace, others: list[dict[str, Any]]) -> int:
    from gymwire.protocol import ProtocolError
    from gymwire.sdk.registry import resolve_env

    from .episodes import PromptConfig
    from .eval import PAPER_TURNS, EnvTarget, EvalSettings, detail_table, failure_summary, results_table
    from .policy import Sampling

    backend = args.backend or ("openai" if args.base_url else "transformers")
    if backend == "openai" and not args.base_url:
        raise UsageError("the openai backend needs --base-url, e.g. http://127.0.0.1:8080/v1")
    task_counts = _per_env(args.tasks, "--tasks", allow="all")
    tasks = task_counts.get("*")
    for name, value in (("--concurrency", args.concurrency), ("--turn-tokens", args.turn_tokens)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1")
    if args.step_timeout < 0:
        raise UsageError("--step-timeout must be >= 0 seconds (0: no limit)")
    try:
        sampling = Sampling(args.temperature, args.top_p)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    env_config = _env_config(args.env_config)
    turn_limits = _per_env(args.max_turns, "--max-turns", allow="paper")

    # Environments: local classes go to one embedded server; URLs are used as they are.
    local: dict[str, type] = {}
    remote: list[tuple[str, str | None]] = []
    for spec in args.envs:
        if spec.startswith(("ws://", "wss://")) or "@ws" in spec:
            name, _, url = spec.rpartition("@") if "@ws" in spec else ("", "", spec)
            remote.append((url, name or None))
        else:
            try:
                cls = resolve_env(spec)
            except ValueError as exc:
                raise UsageError(str(exc)) from exc
            local[cls.name] = cls
    label = args.name or _label(args.model)
    output = Path(args.output or Path("runs", "eval", re.sub(r"[^\w.+-]+", "_", label)))

    with contextlib.ExitStack() as stack:
        names: list[tuple[str, str]] = []
        if local:
            from gymwire.sdk.server import GymServer

            url = stack.enter_context(GymServer(list(local.values()), port=0).run_in_thread())
            names += [(name, url) for name in local]
        token = args.token or os.environ.get("GYMWIRE_TOKEN") or None
        for url, name in remote:
            names += [(env, url) for env in ([name] if name else _server_envs(url, token))]
        targets = []
        for name, url in names:
            config = env_config.get(name, {})
            limit = turn_limits.get(name, turn_limits.get("*"))
            if limit == "paper":
                limit = PAPER_TURNS.get(name)
            try:
                prompt = PromptConfig(
                    system=config.get("system"),
                    examples=tuple(config.get("examples", ())),
                    action_pattern=config.get("action_pattern"),
                    instructions=config.get("instructions", True),
                )
            except ValueError as exc:
                raise UsageError(f"--env-config {name}: {exc}") from exc
            targets.append(
                EnvTarget(name, url, dict(config.get("options", {})), config.get("max_turns", limit), prompt, task_counts.get(name))
            )

        policy, tokenizer, run_info = _policy(args, backend)
        settings = EvalSettings(
            model=label,
            output=output,
            split=args.split,
            tasks=tasks,
            concurrency=args.concurrency,
            sampling=sampling,
            turn_tokens=args.turn_tokens,
            episode_tokens=args.episode_tokens,
            seed=args.seed,
            progress=not args.no_progress,
            token=token,
            step_timeout=args.step_timeout or None,
            run_info=run_info,
        )
        try:
            results = asyncio.run(_evaluate_and_close(policy, targets, settings, tokenizer))
        except KeyboardInterrupt:
            print(f"\ninterrupted: finished episodes are in {output}; run the same command again to resume", file=sys.stderr)
            return 130
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        except ProtocolError as exc:
            raise UsageError(f"the gym server answered {exc.code.name}: {exc.message}") from exc
        except OSError as exc:
            raise UsageError(f"cannot reach a gym server: {exc}") from exc
    print(results_table([results, *others], paper=args.paper))
    print()
    print(detail_table(results))
    for line in failure_summary(results):
        print(line)
    print(f"\nepisodes: {output}/episodes/*.jsonl; tables: {output}/results.md")
    return 0


async def _evaluate_and_close(policy: Any, targets: Any, settings: Any, tokenizer: Any) -> dict[str, Any]:
    from .eval import evaluate

    try:
        return await evaluate(policy, targets, settings, tokenizer)
    finally:
        await policy.close()


def _policy(args: argparse.Namespace, backend: str) -> tuple[Any, Any, dict[str, Any]]:
    if backend == "openai":
        from .openai_policy import OpenAIPolicy

        try:
            policy = OpenAIPolicy(args.base_url, args.model, args.api_key_env, args.request_timeout, args.retries, args.concurrency)
        except ImportError as exc:
            raise UsageError(str(exc)) from exc
        return policy, None, {"backend": "openai", "endpoint": args.base_url, "model_name": args.model}
    from .models import ModelError, load_model, resolve_model

    try:
        if backend == "vllm":
            from types import SimpleNamespace

            from transformers import AutoTokenizer

            from .vllm_policy import VLLMPolicy

            path = resolve_model(args.model)
            if path.suffix == ".gguf":
                raise UsageError(f"vLLM needs a checkpoint folder: gymwire model prepare {args.model} DIR, then evaluate DIR")
            tokenizer = AutoTokenizer.from_pretrained(path)
            policy = VLLMPolicy(SimpleNamespace(name_or_path=str(path)), tokenizer)
            return policy, tokenizer, {"backend": "vllm", "path": str(path)}
        import torch

        from .hf_policy import TransformersPolicy

        torch.manual_seed(args.seed)
        device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer, path = load_model(args.model, device)
    except (ModelError, ImportError) as exc:
        raise UsageError(str(exc)) from exc
    policy = TransformersPolicy(model, pad_id=tokenizer.pad_token_id, max_batch=args.concurrency)
    return policy, tokenizer, {"backend": "transformers", "path": str(path), "device": device}


def _server_envs(url: str, token: str | None) -> list[str]:
    from gymwire.sdk.client import GymClient

    async def names() -> list[str]:
        async with GymClient(url, token=token, reconnect_attempts=0) as client:
            return [env.name for env in await client.list_envs()]

    try:
        return asyncio.run(names())
    except OSError as exc:
        raise UsageError(f"cannot reach {url}: {exc}; is `gymwire serve` running there?") from exc


def _label(model: str) -> str:
    from .models import KNOWN_MODELS

    if model in KNOWN_MODELS:
        return KNOWN_MODELS[model].name
    path = Path(model)
    return path.stem if path.suffix == ".gguf" else (path.name or model)


def _positive(text: str, flag: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{flag} takes {what}, got {text!r}") from None
    if value < 1:
        raise UsageError(f"{flag} must be at least 1")
    return value


def _per_env(text: str | None, flag: str, allow: str) -> dict[str, Any]:
    """'12' -> {"*": 12}; the word `allow` ('paper' / 'all'); 'textcraft=20,babyai=10' per env.
    'all' means no number (None)."""
    what = f"N, '{allow}' or ENV=N,ENV=N"
    if not text:
        return {}
    if text == allow:
        return {"*": None if allow == "all" else allow}
    if "=" not in text:
        return {"*": _positive(text, flag, what)}
    values: dict[str, Any] = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        values[name.strip()] = _positive(value, flag, what)
    return values


def _env_config(path: str | None) -> dict[str, dict[str, Any]]:
    if not path:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--env-config {path}: {exc}") from exc
    known = {"system", "examples", "action_pattern", "instructions", "options", "max_turns"}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UsageError(f"--env-config {path}: expected a mapping ENV -> {{{', '.join(sorted(known))}}}")
    for name, config in data.items():
        unknown = set(config) - known
        if unknown:
            raise UsageError(f"--env-config {path}: {name} has unknown keys {sorted(unknown)}; known: {sorted(known)}")
    return data
