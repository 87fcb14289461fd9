"""`gymwire serve`, `gymwire envs` and `gymwire play`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

from gymwire.protocol import Limits, ProtocolError

from .client import GymClient
from .env_spec import EnvSpec
from .errors import SetupError, port_number
from .registry import builtin_envs, read_serve_file, resolve_env


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of each record, not the stream of the moment
    logging was set up: `gymwire serve` run in-process (tests, notebooks) may swap it and close it."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(level: str, fmt: str) -> None:
    handler = _StderrHandler()
    handler.setFormatter(_JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("gymwire")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _limit_args(parser: argparse.ArgumentParser) -> None:
    defaults = Limits()
    group = parser.add_argument_group("limits (announced to clients in the welcome)")
    for name, value in defaults.model_dump().items():
        group.add_argument(f"--{name.replace('_', '-')}", type=int, default=value, metavar="N", help=f"default {value}")


# The one place environment variables configure environments: defaults of `gymwire serve` for the
# built-in environments' constructor arguments (documented in docs/environments.md). An option
# given on the command line or in a serve file wins; Python code and other commands never read them.
ENV_VAR_DEFAULTS: dict[str, dict[str, str]] = {
    "gymwire.servers.textcraft.env:TextCraftEnv": {
        "recipes_dir": "GYMWIRE_TEXTCRAFT_RECIPES", "agentgym_order": "GYMWIRE_AGENTGYM_TEXTCRAFT_ORDER",
    },
    "gymwire.servers.deepsearch.env:DeepSearchEnv": {
        "corpus": "GYMWIRE_DEEPSEARCH_CORPUS", "questions": "GYMWIRE_DEEPSEARCH_QUESTIONS", "encoder": "GYMWIRE_DEEPSEARCH_ENCODER",
    },
    "gymwire.servers.sciworld.env:SciWorldEnv": {
        "jvms": "GYMWIRE_SCIWORLD_JVMS", "sessions_per_jvm": "GYMWIRE_SCIWORLD_SESSIONS_PER_JVM",
        "jvm_heap_mb": "GYMWIRE_SCIWORLD_JVM_HEAP_MB", "call_timeout_s": "GYMWIRE_SCIWORLD_CALL_TIMEOUT_S",
    },
    "gymwire.servers.web.webarena:WebArenaEnv": {"tasks": "GYMWIRE_WEBARENA_TASKS", "sites": "GYMWIRE_WEBARENA_SITES"},
}


def env_var_defaults(cls: type) -> dict[str, str]:
    """The constructor arguments of `cls` that environment variables set (ENV_VAR_DEFAULTS)."""
    variables = ENV_VAR_DEFAULTS.get(f"{cls.__module__}:{cls.__qualname__}", {})
    return {option: os.environ[variable] for option, variable in variables.items() if os.environ.get(variable)}


def serve_specs(envs: list[str], config: str | None) -> list[EnvSpec]:
    """The environments `gymwire serve` is given: on the command line, then those of --config."""
    if not envs and not config:
        raise ValueError("name at least one environment (e.g. gymwire serve guess), or a serve file with --config")
    specs = [resolve_env(text, defaults=env_var_defaults) for text in envs]
    return specs + (read_serve_file(config, defaults=env_var_defaults) if config else [])


def _serve(args: argparse.Namespace) -> int:
    from .server import GymServer

    setup_logging(args.log_level, args.log_format)
    try:
        specs = serve_specs(args.envs, args.config)
        limits = Limits(**{name: getattr(args, name) for name in Limits.model_fields})
        server = GymServer(
            specs,
            host=args.host,
            port=args.port,
            token=args.token or os.environ.get("GYMWIRE_TOKEN") or None,
            limits=limits,
            isolation=args.isolation,
            metrics_port=args.metrics_port,
            allowed_origins=args.allow_origin,
            transport=args.transport,
        )
    # ValueError also covers an environment whose data (a corpus, a recipe directory) cannot load.
    except (ValueError, ImportError) as exc:  # an unknown or unusable class, a missing extra, a bad limit
        print(f"gymwire serve: {exc}", file=sys.stderr)
        return 2

    def banner(server: GymServer) -> None:
        if args.log_format == "json":
            return  # the server logs where it listens, as JSON: stderr holds JSON lines only
        metrics = f", metrics on {server.metrics_url}" if server.metrics_url else ""
        names = ", ".join(sorted(server.envs))
        print(f"gymwire: serving {names} on {server.url}{metrics} (Ctrl-C or SIGTERM drains and stops)", file=sys.stderr)

    try:
        server.run(on_listening=banner)
    except OSError as exc:  # ListenError: says which option to change
        print(f"gymwire serve: {exc}", file=sys.stderr)
        return 1
    return 0


def server_url(text: str) -> str:
    """`ws://host:port` or `wss://...` as given; a bare `host:port` gets `ws://`. Else ValueError."""
    from urllib.parse import urlsplit

    url = text if "://" in text else f"ws://{text}"
    if not url.startswith(("ws://", "wss://")):
        raise ValueError(f"{text!r} is not a server address: give ws://host:port, wss://host:port or host:port")
    try:
        urlsplit(url).port
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a number from 1 to 65535; give ws://host:port") from None
    return url


def _client_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"token": args.token or os.environ.get("GYMWIRE_TOKEN") or None}


async def _envs_async(args: argparse.Namespace) -> int:
    async with GymClient(args.url, reconnect_attempts=0, **_client_args(args)) as client:
        envs = await client.list_envs()
    if args.json:
        print(json.dumps([e.model_dump() for e in envs], indent=2))
        return 0
    for env in envs:
        splits = ", ".join(f"{k}={v}" for k, v in env.splits.items()) or "seeds only"
        print(f"{env.name} {env.version}  (splits: {splits}; default max turns {env.default_max_turns})")
        if env.description:
            print(f"    {env.description}")
        if env.instructions:
            print(f"    actions: {env.instructions.splitlines()[0]}")
    return 0


def _envs(args: argparse.Namespace) -> int:
    return _run_client_command(args, _envs_async)


def _run_client_command(args: argparse.Namespace, command: Any) -> int:
    try:
        args.url = server_url(args.url)
    except ValueError as exc:
        print(f"gymwire {args.command}: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(command(args))
    except ProtocolError:
        raise  # gymwire's main says it in one line, with what to do
    except OSError as exc:
        raise SetupError(f"cannot reach the server at {args.url}: {exc}; is `gymwire serve` running there?") from None


async def _play_async(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    async with GymClient(args.url, **_client_args(args)) as client:
        info = await client.describe(args.env)
        if info.instructions:
            print(f"[{info.name}] {info.instructions}\n")
        session = await client.open(
            args.env, split=args.split, index=args.index, seed=args.seed, max_turns=args.max_turns
        )
        print(session.observation.text if session.observation else "")
        total = 0.0
        while not session.done:
            try:
                action = await loop.run_in_executor(None, input, "\naction> ")
            except EOFError:
                print("\n(end of input: closing the session)")
                break
            if not action.strip():
                continue
            result = await session.step(action)
            total += result.reward
            print(result.observation.text)
            print(f"  reward {result.reward:g}  (total {total:g}, turn {session.turns}/{session.max_turns})")
            if result.metrics is not None:
                end = "terminated" if result.terminated else "truncated (turn limit)"
                m = result.metrics
                print(f"\nEpisode {end}: success={m.success} score={m.score:g} turns={m.turns}")
        await session.close()
    return 0


def _play(args: argparse.Namespace) -> int:
    if args.index is not None and args.split is None:
        print("gymwire play: --index needs --split (e.g. --split test --index 3); --seed N picks a task by seed", file=sys.stderr)
        return 2
    if args.split is not None and args.index is None:
        args.index = 0
    return _run_client_command(args, _play_async)


def register(sub: Any) -> None:
    known = ", ".join(sorted(builtin_envs())) or "none installed"
    variables = "; ".join(
        f"{path.rpartition(':')[2]}: " + ", ".join(f"{option}=${variable}" for option, variable in options.items())
        for path, options in ENV_VAR_DEFAULTS.items()
    )
    serve = sub.add_parser(
        "serve",
        help="serve environments over gymwire v1",
        description=(
            f"Serve environments: built-in names ({known}), import paths like mypkg.myenv:MyEnv or files like "
            "./myenv.py:MyEnv, each optionally configured with its constructor's keyword arguments: "
            "textcraft:recipes_dir=my/recipes, mypkg.myenv:MyEnv:size=3,name=big (name= sets the served name; "
            "JSON for values that start with { or [). AgentGym servers: agentgym:FAMILY=URL[,name=N,...]."
        ),
        epilog=f"Environment variables give defaults of built-in environments' arguments: {variables}.",
    )
    serve.add_argument("envs", nargs="*", metavar="ENV[:KEY=VALUE,...]")
    serve.add_argument("--config", metavar="FILE",
                       help="a serve file (TOML, or YAML named .yaml) listing environments: [[envs]] env=..., name=..., kwargs={...}")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=8765, help="port (default 8765; 0 picks a free one)")
    serve.add_argument("--token", help="require this bearer token in hello (or set GYMWIRE_TOKEN)")
    serve.add_argument("--isolation", choices=["thread", "process"], default="thread",
                       help="run sync environments in a thread pool, or one process per session")
    serve.add_argument("--metrics-port", type=port_number, help="expose Prometheus metrics on this HTTP port")
    serve.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                       help="let web pages of this origin (e.g. https://lab.example:8443, or '*' for any) open "
                            "sessions; handshakes from browsers are refused otherwise (repeatable)")
    serve.add_argument("--transport", choices=["websockets", "picows"], default="websockets",
                       help="the WebSocket implementation: websockets (default) or picows on uvloop, the same frames "
                            "with less CPU each (pip install 'gymwire[fast]'); clients of either talk to either")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", default="text", choices=["text", "json"])
    _limit_args(serve)
    serve.set_defaults(handler=_serve)

    envs = sub.add_parser("envs", help="list what a server offers")
    envs.add_argument("url", help="ws://host:port (or host:port)")
    envs.add_argument("--token", help="the server's bearer token (default: $GYMWIRE_TOKEN)")
    envs.add_argument("--json", action="store_true", help="print the environment descriptions as JSON")
    envs.set_defaults(handler=_envs)

    play = sub.add_parser("play", help="play an environment yourself in the terminal")
    play.add_argument("url", help="ws://host:port (or host:port)")
    play.add_argument("env")
    play.add_argument("--split", help="task split; plays its task --index (default 0)")
    play.add_argument("--index", type=int, help="task index in --split (needs --split)")
    play.add_argument("--seed", type=int, help="let the environment pick a task from this seed")
    play.add_argument("--max-turns", type=int)
    play.add_argument("--token", help="the server's bearer token (default: $GYMWIRE_TOKEN)")
    play.set_defaults(handler=_play)

    from .conformance.cli import add_arguments as conformance_args  # argparse only; the suite loads when run

    conformance = sub.add_parser("conformance", help="check a server against the protocol spec (spec/CONFORMANCE.md)")
    conformance_args(conformance)
    conformance.set_defaults(handler=_conformance)


def _conformance(args: argparse.Namespace) -> int:
    from .conformance.cli import main

    return main(args)
