"""`gymwire eval MODEL ENV...`: the command line of trainers/eval/evaluate.py (a `gymwire.commands` plugin)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from gymwire.sdk.errors import SetupError, UsageError, check_not_all_failed

from ..models.backends import BACKENDS

__all__ = ["register"]


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
    parser.add_argument("--tasks", default="all", help="'all', N (a seeded sample of N tasks of the split), A-B (the tasks of those indices, e.g. "
                             "TextCraft's depth-1 test goals 0-31) or ENV=N,ENV=A-B (default all)")
    parser.add_argument("--max-turns", help="turn limit: N for every environment, 'paper' for the paper's, or ENV=N,ENV=N (default: each environment's)")
    parser.add_argument("--concurrency", type=int, default=16, help="episodes played at once (default 16)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--turn-tokens", type=int, default=128, help="most tokens per reply (default 128)")
    parser.add_argument("--episode-tokens", type=int,
                        help="most tokens per conversation (default: 4096, more where an environment's turn limit needs it, e.g. sciworld)")
    parser.add_argument("--env-config", help="YAML: per environment {system, examples, action_pattern, instructions, options, max_turns}")
    parser.add_argument("--token", help="gym servers' bearer token (or GYMWIRE_TOKEN)")
    parser.add_argument("--step-timeout", type=float, default=60.0, help="seconds a gym server may take per step; a slower step ends its episode as an error (0: no limit; default 60)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the task sample and of sampling (default 0)")
    parser.add_argument("--name", help="model label in the table (default: from MODEL)")
    parser.add_argument("--output", help="output folder (default runs/eval/<name>); re-running resumes it")
    parser.add_argument("--compare", nargs="+", default=[], metavar="DIR", help="earlier eval folders to show side by side")
    parser.add_argument("--paper", action="store_true", help="add the paper's rows (AgentGym-RL) to the table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (one line per environment)")
    parser.add_argument("--standard-params-only", action="store_true",
                        help="openai: send only the OpenAI API's own sampling fields (for hosted APIs that refuse "
                             "top_k, min_p, repeat_penalty); the server's defaults then apply to those, as run.json records")
    parser.add_argument("--overwrite", action="store_true", help="start over in an --output holding a run with other settings")
    parser.add_argument("--rerun", metavar="DIR", help="play the run recorded in DIR/run.json again (into --output, default DIR-rerun)")
    parser.set_defaults(handler=_eval)
    global _PARSER
    _PARSER = parser


_PARSER: argparse.ArgumentParser | None = None


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import load_results, results_table
    from .run import command_line, recorded_command

    if args.rerun:
        output = args.output or f"{args.rerun.rstrip('/')}-rerun"
        recorded = recorded_command(args.rerun)
        assert _PARSER is not None
        args = _PARSER.parse_args([*recorded, "--output", output, *(["--no-progress"] if args.no_progress else [])])
        args.argv = recorded
        print(f"gymwire eval {shlex.join(recorded)} --output {output}", file=sys.stderr)
    try:
        others = [load_results(folder) for folder in args.compare]
    except FileNotFoundError as exc:
        raise UsageError(f"{exc}; give folders written by gymwire eval to --compare") from None
    if args.model is None:
        if not others:
            raise UsageError("give MODEL and ENVs to evaluate, or --compare DIR... to show earlier runs")
        print(results_table(others, paper=args.paper))
        return 0
    if not args.envs:
        raise UsageError("name at least one environment after the model, e.g. gymwire eval smollm2 guess textcraft")
    args.argv = command_line(getattr(args, "argv", None) or [])
    return _run(args, others)


def _run(args: argparse.Namespace, others: list[dict[str, Any]]) -> int:
    """Everything is checked before the model loads: arguments, --env-config, the output folder,
    the gym servers, each environment's options (one session opened with them) and the endpoint."""
    from gymwire.sdk.registry import resolve_env

    from ..play import PromptConfig
    from ..policy import Sampling
    from .evaluate import PAPER_TURNS, EnvTarget, EvalSettings, detail_table, failure_summary, results_table
    from .run import check_output, run_record

    backend = args.backend or ("openai" if args.base_url else "transformers")
    if backend == "openai" and not args.base_url:
        raise UsageError("the openai backend needs --base-url, e.g. http://127.0.0.1:8080/v1")
    task_counts = _per_env(args.tasks, "--tasks", allow="all", parse=_task_choice, forms="N, A-B")
    tasks = task_counts.get("*")
    for name, value in (("--concurrency", args.concurrency), ("--turn-tokens", args.turn_tokens), ("--retries", args.retries + 1)):
        if value < 1:
            raise UsageError(f"{name} must be at least {1 if name != '--retries' else 0}")
    if args.episode_tokens is not None and args.episode_tokens < 2:
        raise UsageError("--episode-tokens must be at least 2")
    if args.step_timeout < 0 or args.request_timeout <= 0:
        raise UsageError("--step-timeout must be >= 0 seconds (0: no limit) and --request-timeout > 0")
    try:
        sampling = Sampling(args.temperature, args.top_p, seed=args.seed)
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
    unknown = sorted(set(env_config) - set(local) - {name for _, name in remote if name})
    if unknown and not any(name is None for _, name in remote):
        raise UsageError(f"--env-config names {', '.join(unknown)}, which this run does not evaluate ({', '.join(args.envs)})")
    label = args.name or _label(args.model)
    output = Path(args.output or Path("runs", "eval", re.sub(r"[^\w.+-]+", "_", label)))

    with contextlib.ExitStack() as stack:
        names: list[tuple[str, str]] = []
        if local:
            from gymwire.sdk.server import GymServer

            url = stack.enter_context(GymServer.private(list(local.values())).run_in_thread())
            names += [(name, url) for name in local]
        token = args.token or os.environ.get("GYMWIRE_TOKEN") or None
        for url, name in remote:
            names += [(env, url) for env in ([name] if name else _server_envs(url, token))]
        targets = []
        for name, url in names:
            config = env_config.get(name)
            limit = turn_limits.get(name, turn_limits.get("*"))
            if limit == "paper":
                limit = PAPER_TURNS.get(name)
            prompt = PromptConfig()
            if config is not None:
                try:
                    prompt = PromptConfig(system=config.system, examples=tuple(config.examples),
                                          action_pattern=config.action_pattern, instructions=config.instructions)
                except ValueError as exc:
                    raise UsageError(f"--env-config {name}: {exc}") from exc
            options = dict(config.options) if config else {}
            max_turns = config.max_turns if config and config.max_turns else limit
            targets.append(EnvTarget(name, url, options, max_turns, prompt, task_counts.get(name)))
        asyncio.run(_check_targets(targets, args.split, token))
        run_info = {"command": ["eval", *args.argv], **_backend_info(args, backend, sampling)}
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
        check_output(output, run_record(settings), {t.name: t.options for t in targets}, args.overwrite)
        policy, tokenizer = _policy(args, backend)
        try:
            results = asyncio.run(_evaluate_and_close(policy, targets, settings, tokenizer))
        except KeyboardInterrupt:
            print(f"\ninterrupted: finished episodes are in {output}; run the same command again to resume", file=sys.stderr)
            return 130
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    print(results_table([results, *others], paper=args.paper))
    print()
    print(detail_table(results))
    for line in failure_summary(results):
        print(line)
    print(f"\nepisodes: {output}/episodes/*.jsonl; tables: {output}/results.md")
    _check_all_failed(results, output)
    return 0


def _check_all_failed(results: dict[str, Any], output: Path) -> None:
    from .evaluate import _episodes_path, _recorded

    for env, figures in results["envs"].items():
        played = figures["episodes"]
        if played and figures["errors"]["mean"] == 1.0:
            errors = [e.error for e in _recorded(_episodes_path(output, env)).values() if e.error]
            check_not_all_failed(env, played, played, errors[0] if errors else None)


async def _check_targets(targets: list[Any], split: str, token: str | None) -> None:
    """Open one session of every target with its options: a bad option, split or server is one
    line now, not an error per episode later."""
    from gymwire.protocol import ProtocolError
    from gymwire.sdk.client import GymClient

    clients: dict[str, Any] = {}
    try:
        for target in targets:
            if target.server not in clients:
                clients[target.server] = await GymClient(target.server, token=token, reconnect_attempts=0).__aenter__()
            client = clients[target.server]
            info = await client.describe(target.name)
            if split not in info.splits:
                raise UsageError(f"{target.name} has no split {split!r}; choose one of {', '.join(sorted(info.splits))} with --split")
            try:
                async with client.session(target.name, split=split, index=0, options=target.options, max_turns=1):
                    pass
            except ProtocolError as exc:
                raise UsageError(f"{target.name} refuses its options {target.options} ({exc.code.name}: {exc.message}); fix them in --env-config") from None
    finally:
        for client in clients.values():
            await client.__aexit__(None, None, None)


async def _evaluate_and_close(policy: Any, targets: Any, settings: Any, tokenizer: Any) -> dict[str, Any]:
    from .evaluate import evaluate

    try:
        return await evaluate(policy, targets, settings, tokenizer)
    finally:
        await policy.close()


def _backend_info(args: argparse.Namespace, backend: str, sampling: Any) -> dict[str, Any]:
    """What run.json says about the backend: enough to reproduce the row (see eval_run)."""
    from .run import describe_versions, file_digest

    info: dict[str, Any] = {"backend": backend, "versions": describe_versions()}
    if backend == "openai":
        from gymwire.sdk.environment import require_modules

        require_modules(["openai"], "eval", "the openai backend")
        from ..models.openai_policy import request_parameters

        info.update(endpoint=args.base_url, model_name=args.model, served_models=_served_models(args.base_url, args.api_key_env))
        info["request"] = request_parameters(sampling, args.turn_tokens, args.standard_params_only)
        return info
    from ..models.local import resolve_model

    path = resolve_model(args.model)
    info.update(path=str(path.resolve()), sha256=file_digest(path))
    if backend == "transformers":
        info["device"] = _device(args.device)
    return info


def _served_models(base_url: str, api_key_env: str) -> list[str]:
    """The model ids the endpoint lists (GET /models): a wrong --base-url fails here, at once."""
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(base_url.rstrip("/") + "/models")
    key = os.environ.get(api_key_env)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            listed = json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SetupError(
            f"cannot reach the model endpoint --base-url {base_url} ({reason}); is the model server running "
            "(e.g. gymwire model serve smollm2 --port 8080)?"
        ) from None
    return [str(entry.get("id")) for entry in listed.get("data", []) if isinstance(entry, dict)]


def _device(name: str) -> str:
    from ..models.devices import torch_device

    return str(torch_device(name, "--device"))


def _policy(args: argparse.Namespace, backend: str) -> tuple[Any, Any]:
    from ..models.backends import load_model, load_tokenizer, make_policy

    if backend == "openai":
        policy = make_policy(
            "openai", args.model, base_url=args.base_url, api_key_env=args.api_key_env, timeout=args.request_timeout,
            max_retries=args.retries, concurrency=args.concurrency, standard_only=args.standard_params_only,
        )
        return policy, None
    if backend == "vllm":
        tokenizer, folder = load_tokenizer(args.model)
        return make_policy("vllm", folder, tokenizer), tokenizer
    import torch

    torch.manual_seed(args.seed)
    model, tokenizer, _ = load_model(args.model, _device(args.device))
    return make_policy("transformers", model, tokenizer, max_batch=args.concurrency), tokenizer


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
    from ..models.local import KNOWN_MODELS

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


def _task_choice(text: str, flag: str, what: str) -> int | range:
    """'40' -> 40 (a seeded sample); '0-31' -> range(0, 32) (those indices)."""
    first, dash, last = text.partition("-")
    if not dash:
        return _positive(text, flag, what)
    try:
        start, stop = int(first), int(last) + 1
    except ValueError:
        raise UsageError(f"{flag} takes {what}, got {text!r}") from None
    if start < 0 or stop <= start:
        raise UsageError(f"{flag} {text}: a range A-B needs 0 <= A <= B")
    return range(start, stop)


def _per_env(text: str | None, flag: str, allow: str, parse: Any = _positive, forms: str = "N") -> dict[str, Any]:
    """'12' -> {"*": 12}; the word `allow` ('paper' / 'all'); 'textcraft=20,babyai=10' per env;
    each value read by `parse`, which takes the `forms` named in its error. 'all' means no number (None)."""
    what = f"{forms}, '{allow}' or ENV=N,ENV=N"
    if not text:
        return {}
    if text == allow:
        return {"*": None if allow == "all" else allow}
    if "=" not in text:
        return {"*": parse(text, flag, what)}
    values: dict[str, Any] = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        values[name.strip()] = parse(value, flag, what)
    return values


def _env_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import yaml

    from ..train.validation import env_configs, yaml_problem

    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"--env-config {path} is not valid YAML ({yaml_problem(exc)}); fix the file") from None
    return env_configs(data, f"--env-config {path}")
