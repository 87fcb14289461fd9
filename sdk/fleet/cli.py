"""`gymwire fleet up|ls|scale|down|token`: a gym fleet in a running Ray cluster.

    gymwire fleet up fleet.yaml                 # groups from a file (see gymwire.sdk.fleet.spec)
    gymwire fleet up textcraft guess --replicas 4 --num-cpus 1
    gymwire fleet ls                            # replicas, their nodes, URLs and sessions
    gymwire fleet scale gym 8                   # resize a group, no restart
    gymwire fleet token                         # the bearer token clients need
    gymwire fleet down
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

SPEC_SUFFIXES = (".yaml", ".yml", ".toml", ".json")
DEFAULT_GROUP = "gym"


def register(sub: Any) -> None:
    fleet = sub.add_parser(
        "fleet",
        help="run replicas of environments across a Ray cluster (up, ls, scale, token, down)",
        description="A gym fleet on Ray: replicas placed by resources and labels, restarted on failure, "
        "scaled without a restart; clients connect by WebSocket (see GymPool / Fleet.pool()). Needs 'gymwire[ray]'.",
    )
    commands = fleet.add_subparsers(dest="fleet_command", metavar="COMMAND")
    commands.required = True

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--name", default=None, help="the fleet's name (default: the file's, else gymwire)")
        parser.add_argument("--address", default="auto", help="Ray cluster address (default: auto, the local node's cluster)")

    up = commands.add_parser("up", help="bring a fleet up from a file or environment names")
    up.add_argument("what", nargs="+", metavar="FILE|ENV", help="a fleet file (.yaml/.toml/.json), or environment names / module:Class paths")
    common(up)
    up.add_argument("--replicas", type=int, default=None, help="replicas in all, spread over the nodes (default 1)")
    up.add_argument("--per-node", type=int, default=None, help="replicas on every node that fits, instead")
    up.add_argument("--num-cpus", type=float, default=1.0, help="CPUs one replica holds (default 1)")
    up.add_argument("--memory-mb", type=int, default=None, help="memory one replica holds")
    up.add_argument("--resource", action="append", default=[], metavar="NAME=AMOUNT", help="a custom Ray resource one replica needs")
    up.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a node label replicas need")
    up.add_argument("--isolation", choices=("thread", "process"), default="thread")
    up.add_argument("--no-auth", action="store_true", help="no bearer token (only on a private network)")
    up.add_argument("--wait", type=float, default=300.0, metavar="S", help="seconds to wait for the replicas (default 300)")
    up.set_defaults(handler=_run, action=_up)

    ls = commands.add_parser("ls", help="list the fleet's replicas")
    common(ls)
    ls.add_argument("--json", action="store_true", help="print the status as JSON")
    ls.set_defaults(handler=_run, action=_ls)

    scale = commands.add_parser("scale", help="resize a group (per node, for a per_node group)")
    scale.add_argument("group")
    scale.add_argument("count", type=int)
    common(scale)
    scale.set_defaults(handler=_run, action=_scale)

    token = commands.add_parser("token", help="print the bearer token clients of the fleet need")
    common(token)
    token.set_defaults(handler=_run, action=_token)

    down = commands.add_parser("down", help="drain and remove every replica")
    common(down)
    down.add_argument("--drain", type=float, default=30.0, metavar="S", help="seconds open sessions may take to end (default 30)")
    down.set_defaults(handler=_run, action=_down)


def _run(args: argparse.Namespace) -> int:
    from . import FleetError, FleetSpecError

    try:
        return args.action(args)
    except (FleetError, FleetSpecError) as exc:
        print(f"gymwire fleet: {exc}", file=sys.stderr)
        return 2


def _connect(address: str) -> None:
    from . import MISSING_RAY, FleetError

    try:
        import ray
    except ImportError:
        raise FleetError(MISSING_RAY) from None
    if address != "auto":  # Ray itself would wait minutes for an address nothing answers at
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
        except (OSError, ValueError) as exc:
            raise FleetError(f"no Ray cluster answers at {address!r} ({exc}); give the head's HOST:PORT (ray start --head prints it)") from None
    try:
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    except ConnectionError as exc:
        raise FleetError(f"no Ray cluster at {address!r} ({exc}); start one with `ray start --head` or pass --address") from None


def _pairs(items: list[str], flag: str, number: bool) -> dict[str, Any]:
    from . import FleetSpecError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FleetSpecError(f"{flag} takes KEY=VALUE, got {item!r}")
        try:
            out[key] = float(value) if number else value
        except ValueError:
            raise FleetSpecError(f"{flag} {key}: an amount is a number, got {value!r}") from None
    return out


def _spec(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from . import FleetSpec, FleetSpecError, ReplicaGroup, load_fleet_spec

    if len(args.what) == 1 and args.what[0].endswith(SPEC_SUFFIXES):
        spec = load_fleet_spec(Path(args.what[0]))
        return replace(spec, name=args.name) if args.name else spec
    if any(Path(item).suffix in SPEC_SUFFIXES for item in args.what):
        raise FleetSpecError("give one fleet file, or environment names (not both)")
    if args.replicas is not None and args.per_node is not None:
        raise FleetSpecError("give --replicas or --per-node, not both")
    values: dict[str, Any] = {
        "name": DEFAULT_GROUP, "envs": list(args.what), "num_cpus": args.num_cpus, "memory_mb": args.memory_mb,
        "resources": _pairs(args.resource, "--resource", number=True), "labels": _pairs(args.label, "--label", number=False),
        "isolation": args.isolation,
    }
    if args.per_node is not None:
        values["per_node"] = args.per_node
    else:
        values["replicas"] = 1 if args.replicas is None else args.replicas
    return FleetSpec(groups=(ReplicaGroup.from_mapping(values),), name=args.name or "gymwire", auth=not args.no_auth)


def _up(args: argparse.Namespace) -> int:
    from . import Fleet

    spec = _spec(args)  # a bad file or flag is reported before Ray is touched
    _connect(args.address)
    fleet = Fleet.up(spec, wait_s=args.wait)
    print(_table(fleet.status()))
    print(f"\nfleet {spec.name!r} is up. Clients: Fleet.get({spec.name!r}).pool() inside the cluster, or GymPool(urls, token=...) "
          f"with the URLs above{' and `gymwire fleet token`' if spec.auth else ''}.")
    return 0


def _ls(args: argparse.Namespace) -> int:
    from . import Fleet

    _connect(args.address)
    status = Fleet.get(args.name or "gymwire").status()
    print(json.dumps(status, indent=2) if args.json else _table(status))
    return 0


def _scale(args: argparse.Namespace) -> int:
    from . import Fleet

    _connect(args.address)
    fleet = Fleet.get(args.name or "gymwire")
    fleet.scale(args.group, args.count)
    print(f"group {args.group!r} scaled to {args.count}; `gymwire fleet ls` shows the replicas as they come and go")
    return 0


def _token(args: argparse.Namespace) -> int:
    from . import Fleet

    _connect(args.address)
    token = Fleet.get(args.name or "gymwire").token
    print(token if token else "(this fleet runs without a token)")
    return 0


def _down(args: argparse.Namespace) -> int:
    from . import Fleet

    _connect(args.address)
    name = args.name or "gymwire"
    Fleet.get(name).down(drain_timeout_s=args.drain)
    print(f"fleet {name!r} is down")
    return 0


def _table(status: dict[str, Any]) -> str:
    rows = [("REPLICA", "GROUP", "STATE", "URL", "SESSIONS", "RESTARTS")]
    for r in status["replicas"]:
        rows.append((r["replica"], r["group"], r["state"], r["url"] or "-", str(r["sessions"]), str(r["restarts"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    groups = ", ".join(
        f"{name}: {', '.join(g['envs'])} x {g['per_node'] if g['per_node'] is not None else g['replicas']}"
        f"{' per node' if g['per_node'] is not None else ''}"
        for name, g in status["groups"].items()
    )
    return f"fleet {status['name']!r} ({groups}; auth {'on' if status['auth'] else 'off'})\n" + "\n".join(lines)
