"""`gymwire conformance URL`: run the suite from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

EXIT_CONFORMANT, EXIT_FAILURES, EXIT_SETUP = 0, 1, 2


def _json_map(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"images\": true}'")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", type=_server_url, help="the server: ws://host:port, wss://host:port or host:port")
    parser.add_argument("--token", help="the server's bearer token (or set GYMWIRE_TOKEN); also enables the auth checks")
    parser.add_argument("--env", help="the environment to drive (default: the first the server lists)")
    parser.add_argument("--action", default="noop",
                        help="the text the checks play as an action; it must not end an episode by itself (default 'noop')")
    parser.add_argument("--options", type=_json_map, default={}, metavar="JSON",
                        help="options for every open, as a JSON object, e.g. '{\"images\": true}'")
    parser.add_argument("--level", choices=["core", "full"], default="full",
                        help="core: handshake, environments, sessions, steps, errors; full: also batch, resume, "
                             "cancel, deadlines, heartbeat, auth, limits (default full)")
    parser.add_argument("--json", metavar="REPORT", help="also write the report as JSON to this file")
    parser.add_argument("--expected-failures", metavar="FILE",
                        help="file of requirement ids or check names (one a line, # comments) allowed to fail")
    parser.add_argument("--max-wait", type=float, default=10.0, metavar="SECONDS",
                        help="longest wait for a server timer (heartbeat, resume grace); checks needing more skip (default 10)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="how long to wait for each answer (default 5)")
    parser.add_argument("--slow-action", metavar="TEXT",
                        help="an action of --env that keeps the environment busy for at least --slow-ms; enables the "
                             "concurrency, cancel, deadline and max_inflight checks on a running step")
    parser.add_argument("--slow-ms", type=int, default=500, metavar="MS", help="how long --slow-action takes at least (default 500)")
    parser.add_argument("--crash-action", metavar="TEXT", help="an action that makes --env raise; enables the ENV_CRASHED check")
    parser.add_argument("--check", action="append", metavar="NAME", help="run only this check (repeatable)")


def _server_url(text: str) -> str:
    """A bare host:port gets ws://, as `gymwire play` and `envs` take it. (The suite keeps its own
    reading: it imports nothing of the implementation it checks.)"""
    if "://" not in text:
        return f"ws://{text}"
    if text.startswith(("ws://", "wss://")):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a server address: give ws://host:port, wss://host:port or host:port")


def main(args: argparse.Namespace) -> int:
    from .runner import ConformanceSetupError, read_expected_failures, run_conformance

    try:
        expected = read_expected_failures(args.expected_failures) if args.expected_failures else frozenset()
    except OSError as exc:
        print(f"gymwire conformance: cannot read --expected-failures: {exc}", file=sys.stderr)
        return EXIT_SETUP
    try:
        report = asyncio.run(
            run_conformance(
                args.url,
                token=args.token or os.environ.get("GYMWIRE_TOKEN") or None,
                env=args.env,
                action=args.action,
                options=args.options,
                level=args.level,
                max_wait=args.max_wait,
                reply_timeout=args.timeout,
                slow_action=args.slow_action,
                slow_ms=args.slow_ms,
                crash_action=args.crash_action,
                expected_failures=expected,
                checks=args.check,
            )
        )
    except (ConformanceSetupError, ValueError) as exc:
        print(f"gymwire conformance: {exc}", file=sys.stderr)
        return EXIT_SETUP
    print(report.summary())
    if args.json:
        report.write_json(args.json)
        print(f"JSON report written to {args.json}")
    return EXIT_CONFORMANT if report.ok else EXIT_FAILURES
