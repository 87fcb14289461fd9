"""The `gymwire` command line.

Sub-commands are plugins: a module registers itself under the `gymwire.commands` entry-point group
with a `register(subparsers)` function that adds its parser and sets `handler`. That keeps the
dependency direction: `gymwire train` lives in trainers/ and sdk/ never imports it.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata, resources
from pathlib import Path
from typing import Sequence

from gymwire.protocol import PROTOCOL_VERSION, SUBPROTOCOLS, error_table

from . import commands
from .package_info import package_version


def spec_dir() -> Path:
    """Where the spec is installed: package data of gymwire.spec (the checkout's spec/ when editable)."""
    return Path(str(resources.files("gymwire.spec")))


def _version(args: argparse.Namespace) -> int:
    print(f"gymwire {package_version()} (protocol {PROTOCOL_VERSION})")
    return 0


def _spec(args: argparse.Namespace) -> int:
    print(f"protocol version: {PROTOCOL_VERSION}")
    print(f"subprotocols:     {', '.join(SUBPROTOCOLS)}")
    print(f"spec:             {spec_dir() / 'PROTOCOL.md'}")
    print(f"schemas:          {spec_dir() / 'schemas'}")
    print("\nerror codes:")
    for row in error_table():
        print(f"  {row['code']:>3} {row['name']:<20} {'retryable' if row['retryable'] else '         '}  {row['meaning']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gymwire", description="Agent-environment protocol, gym servers and trainers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("version", help="print the package and protocol versions").set_defaults(handler=_version)
    sub.add_parser("spec", help="print the protocol version and where the spec and schemas are").set_defaults(
        handler=_spec
    )
    commands.register(sub)
    for entry in sorted(metadata.entry_points(group="gymwire.commands"), key=lambda e: e.name):
        try:
            register = entry.load()
        except ImportError as exc:
            # A plugin whose extra is not installed must not take the other commands down with it.
            print(f"gymwire: command {entry.name!r} unavailable ({exc}); reinstall gymwire with its extra", file=sys.stderr)
            continue
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
