"""JSON Schemas of the protocol messages, generated from the pydantic models.

    python -m gymwire.protocol.schemas --write spec/schemas   # regenerate the committed files
    python -m gymwire.protocol.schemas --check spec/schemas   # exit 1 when they are stale

One file per message type, `<type>.json`. The schemas describe JSON frames (bytes as base64 text);
a msgpack frame holds the same map with bytes as msgpack bin. They describe what a receiver
accepts: fields with defaults are optional, and unknown fields are allowed (a minor version may
add optional fields).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .messages import MESSAGE_TYPES
from .version import PROTOCOL_MAJOR

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def message_schema(message_type: str) -> dict[str, Any]:
    model = MESSAGE_TYPES[message_type]
    schema = model.model_json_schema(mode="validation")
    # `type` has a default in the models (so code can build messages without naming it), but a frame
    # without it cannot be dispatched: on the wire it is required.
    required = schema.setdefault("required", [])
    if "type" not in required:
        required.insert(0, "type")
    schema["properties"]["type"].pop("default", None)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:gymwire:protocol:v{PROTOCOL_MAJOR}:{message_type}",
        **schema,
    }


def render(schema: dict[str, Any]) -> str:
    """The canonical text of a schema file: stable key order, so regenerating is diff-free."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """File name -> file text, for every message type."""
    return {f"{name}.json": render(message_schema(name)) for name in sorted(MESSAGE_TYPES)}


def write(directory: Path) -> list[str]:
    """Write every schema and delete stale `*.json` files; return the names written."""
    directory.mkdir(parents=True, exist_ok=True)
    files = generate()
    for stale in set(p.name for p in directory.glob("*.json")) - set(files):
        (directory / stale).unlink()
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return sorted(files)


def check(directory: Path) -> list[str]:
    """Problems that make the committed schemas differ from the models; empty when in sync."""
    files = generate()
    present = {p.name for p in directory.glob("*.json")} if directory.is_dir() else set()
    problems = [f"missing: {name}" for name in sorted(set(files) - present)]
    problems += [f"stale (no such message type): {name}" for name in sorted(present - set(files))]
    problems += [
        f"differs from the models: {name}"
        for name in sorted(present & set(files))
        if (directory / name).read_text(encoding="utf-8") != files[name]
    ]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gymwire.protocol.schemas", description="Generate or check the protocol's JSON Schemas."
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", metavar="DIR", type=Path, help="write one <type>.json per message type")
    action.add_argument("--check", metavar="DIR", type=Path, help="exit 1 when DIR differs from the models")
    args = parser.parse_args(argv)
    if args.write is not None:
        names = write(args.write)
        print(f"wrote {len(names)} schemas to {args.write}")
        return 0
    problems = check(args.check)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"regenerate with: python -m gymwire.protocol.schemas --write {args.check}", file=sys.stderr)
        return 1
    print(f"{len(generate())} schemas in {args.check} match the models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
