"""`gymwire openrlhf prepare` and `gymwire openrlhf launch` (entry point group gymwire.commands)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from gymwire.sdk.errors import SetupError, UsageError


def _prepare(args: argparse.Namespace) -> int:
    from .dataset import PrepareError, prepare_dataset

    token = args.token or os.environ.get("GYMWIRE_TOKEN") or None
    try:
        count = prepare_dataset(args.env, args.split, args.out, url=args.url, token=token, start=args.start, limit=args.limit)
    except (PrepareError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    except ConnectionError as exc:
        raise SetupError(f"cannot reach {args.url}: {exc}; is `gymwire serve` running there?") from None
    where = args.url or "an embedded server"
    print(f"wrote {count} tasks of {args.env}/{args.split} (from {where}) to {args.out}", file=sys.stderr)
    return 0


def _launch(args: argparse.Namespace) -> int:
    from gymwire.trainers.train.horizon import HorizonConfigError

    from .launch import LaunchConfigError, launch, load_config

    try:
        config = load_config(args.config)
    except FileNotFoundError:
        raise UsageError(f"{args.config} does not exist; give the path of a launch config (e.g. examples/openrlhf-textcraft.yaml)") from None
    except (LaunchConfigError, HorizonConfigError, ValueError) as exc:
        raise UsageError(f"{args.config}: {exc}") from None
    return launch(config, dry_run=args.dry_run)


def register(sub: Any) -> None:
    parser = sub.add_parser("openrlhf", help="train with OpenRLHF (multi-turn agents on gymwire environments)")
    commands = parser.add_subparsers(dest="openrlhf_command", metavar="COMMAND")
    commands.required = True

    prepare = commands.add_parser("prepare", help="write an environment's task split as OpenRLHF's prompt dataset")
    prepare.add_argument("env", help="environment name (a built-in name or module:Class without --url)")
    prepare.add_argument("--split", default="train")
    prepare.add_argument("--out", required=True, help="JSON lines file to write (prompt, label)")
    prepare.add_argument("--url", help="server to read tasks from (default: serve ENV in this process)")
    prepare.add_argument("--token", help="bearer token (or set GYMWIRE_TOKEN)")
    prepare.add_argument("--start", type=int, default=0, help="first task index (default 0)")
    prepare.add_argument("--limit", type=int, help="at most this many tasks (default: the whole split)")
    prepare.set_defaults(handler=_prepare)

    launch = commands.add_parser("launch", help="build the OpenRLHF command line for a config, print it and run it")
    launch.add_argument("config", help="YAML or JSON config (see gymwire.trainers.openrlhf.launch)")
    launch.add_argument("--dry-run", action="store_true", help="print the environment and command, do not run")
    launch.set_defaults(handler=_launch)
