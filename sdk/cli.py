"""The `gymwire` command line.

Sub-commands are plugins: a module registers itself under the `gymwire.commands` entry-point group
with a `register(subparsers)` function that adds its parser and sets `handler`. That keeps the
dependency direction: `gymwire train` lives in trainers/ and sdk/ never imports it.

Errors are reported here, once, for every command (plugins included): a bad argument, a
`UserError` raised anywhere below a handler, or a common failure of the outside world becomes one
line, `gymwire COMMAND: what is wrong; what to do`, and a non-zero exit status (sdk/errors.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Sequence

from gymwire.protocol import PROTOCOL_VERSION, SUBPROTOCOLS, error_table

from . import commands
from .errors import DEBUG_ENV_VAR, UsageError, describe
from .package_info import package_version


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line (no usage block): main prints them. Sub-parsers
    are made of the same class (argparse uses the parent's type)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgumentError(self.prog, f"{message}; see {self.prog} --help")


class _ArgumentError(UsageError):
    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


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
    parser = _Parser(prog="gymwire", description="Agent-environment protocol, gym servers and trainers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("version", help="print the package and protocol versions").set_defaults(handler=_version)
    sub.add_parser("spec", help="print the protocol version and where the spec and schemas are").set_defaults(
        handler=_spec
    )
    commands.register(sub)
    for entry in sorted(metadata.entry_points(group="gymwire.commands"), key=lambda e: e.name):
        try:
            entry.load()(sub)
        except ImportError as exc:
            # A plugin whose extra is not installed must not take the other commands down with it,
            # nor print anything before they run: the command says so, in one line, when it is used.
            _unavailable(sub, entry.name, exc)
    _name_commands(parser)
    return parser


def _unavailable(sub: Any, name: str, exc: ImportError) -> None:
    def fail(args: argparse.Namespace) -> int:
        raise exc

    parser = sub.add_parser(name, help=f"(unavailable: {exc})", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(handler=fail)


def _name_commands(parser: argparse.ArgumentParser, prog: str = "") -> None:
    """Every (sub-)command's parser records its own name ("gymwire model serve") for error lines."""
    parser.set_defaults(command_name=prog or parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _name_commands(child, child.prog)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure ends here as one line on stderr and a non-zero status."""
    args: argparse.Namespace | None = None
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = build_parser().parse_args(argv)
        args.argv = argv[1:]  # after the command's name: what a run records to be played again
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get(DEBUG_ENV_VAR):
            raise
        name = exc.prog if isinstance(exc, _ArgumentError) else getattr(args, "command_name", None) or "gymwire"
        message, code = describe(exc, name.split(" ")[1] if " " in name else None)
        print(f"{name}: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
